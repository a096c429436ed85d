//! The server's wait hints: how long Alibaba asks a client to wait before the next
//! attempt, read from the answer's headers.

use std::time::Duration;

use reqwest::header::HeaderMap;

/// Reads `TimeLeft:<ms>` from the `x-ratelimit-user-api` / `x-ratelimit-user`
/// headers (format `Limit:1,Remain:0,TimeLeft:2000,Reset:1234`), taking the larger.
/// The unit is not documented; milliseconds matches the values seen.
pub fn ratelimit_time_left(headers: &HeaderMap) -> Option<Duration> {
    ["x-ratelimit-user-api", "x-ratelimit-user"]
        .iter()
        .filter_map(|h| headers.get(*h)?.to_str().ok())
        .filter_map(|v| {
            v.split(',').find_map(|part| {
                let (k, n) = part.split_once(':')?;
                (k.trim() == "TimeLeft").then(|| n.trim().parse::<u64>().ok())?
            })
        })
        .max()
        .map(Duration::from_millis)
}

/// Reads `x-acs-retry-after`, the wait in milliseconds that the current official
/// SDK honours (alibabacloud_tea_openapi `get_throttling_time_left`); only a
/// positive integer counts.
pub fn acs_retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get("x-acs-retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
}

/// The server's wait hint: `x-acs-retry-after` first (what the current SDK reads),
/// then the older `x-ratelimit-*` TimeLeft, then `Retry-After`.
pub fn server_wait_hint(headers: &HeaderMap) -> Option<Duration> {
    acs_retry_after(headers)
        .or_else(|| ratelimit_time_left(headers))
        .or_else(|| retry_after_header(headers))
}

/// Reads `Retry-After` in seconds; an HTTP date or junk is ignored.
pub fn retry_after_header(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_hints_are_parsed() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-ratelimit-user-api",
            "Limit:1,Remain:0,TimeLeft:2000,Reset:1234"
                .parse()
                .expect("hv"),
        );
        h.insert(
            "x-ratelimit-user",
            "Limit:10,Remain:0,TimeLeft:500,Reset:1"
                .parse()
                .expect("hv"),
        );
        assert_eq!(ratelimit_time_left(&h), Some(Duration::from_millis(2000)));
        h.insert("retry-after", "7".parse().expect("hv"));
        assert_eq!(retry_after_header(&h), Some(Duration::from_secs(7)));
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().expect("hv"),
        );
        assert_eq!(retry_after_header(&h), None);
        h.insert("x-ratelimit-user-api", "garbage".parse().expect("hv"));
        assert_eq!(ratelimit_time_left(&h), Some(Duration::from_millis(500)));
    }

    #[test]
    fn x_acs_retry_after_is_read_first_in_milliseconds() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "7".parse().expect("hv"));
        assert_eq!(server_wait_hint(&h), Some(Duration::from_secs(7)));
        h.insert(
            "x-ratelimit-user-api",
            "Limit:1,Remain:0,TimeLeft:2000,Reset:1"
                .parse()
                .expect("hv"),
        );
        assert_eq!(server_wait_hint(&h), Some(Duration::from_millis(2000)));
        h.insert("x-acs-retry-after", "1500".parse().expect("hv"));
        assert_eq!(server_wait_hint(&h), Some(Duration::from_millis(1500)));
        // As in the SDK, only a positive integer counts.
        for junk in ["0", "-5", "1.5", "soon", ""] {
            h.insert("x-acs-retry-after", junk.parse().expect("hv"));
            assert_eq!(acs_retry_after(&h), None, "{junk:?}");
            assert_eq!(server_wait_hint(&h), Some(Duration::from_millis(2000)));
        }
    }
}
