//! The client-side rate limit: one token bucket per action, shared by every client
//! of the process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The limits CAS documents, per user and action (calls per second); the other
/// actions cas-renewd calls have none documented.
const DOCUMENTED: [(&str, f64); 2] = [
    ("ListUserCertificateOrder", 10.0),
    ("GetUserCertificateDetail", 100.0),
];

/// The share of a documented limit the client uses by default: the limit is per
/// user, so other tools of the account and the server's one-second windows (which
/// do not line up with the client's) need room.
pub const SAFETY_MARGIN: f64 = 0.9;

/// Client-side rate limits, one token bucket per action (CAS limits each action
/// separately: ListUserCertificateOrder 10/s, most others 100/s). Shared by every
/// client of the process. An action without its own rate gets the default rate,
/// capped at [`SAFETY_MARGIN`] of its documented limit. Each bucket allows bursts
/// of one second's worth; callers reserve a token and wait for its time, so
/// waiters are served in order.
#[derive(Debug)]
pub struct RateLimiter {
    default_rate: f64,
    rates: HashMap<String, f64>,
    buckets: Mutex<HashMap<String, Arc<TokenBucket>>>,
}

#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    capacity: f64,
    // tokio's clock, so that paused-time tests see the bucket refill.
    state: Mutex<(f64, tokio::time::Instant)>,
}

impl TokenBucket {
    fn new(rate: f64) -> Self {
        let capacity = rate.max(1.0);
        TokenBucket {
            rate,
            capacity,
            state: Mutex::new((capacity, tokio::time::Instant::now())),
        }
    }

    async fn acquire(&self) {
        let wait = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = tokio::time::Instant::now();
            let refill = now.duration_since(st.1).as_secs_f64() * self.rate;
            st.0 = (st.0 + refill).min(self.capacity) - 1.0;
            st.1 = now;
            if st.0 >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-st.0 / self.rate)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

impl RateLimiter {
    /// `default_rate` calls per second for every action without its own rate.
    pub fn new(default_rate: f64) -> Self {
        RateLimiter {
            default_rate,
            rates: Default::default(),
            buckets: Mutex::new(Default::default()),
        }
    }

    /// `default_rate` for every action, and each entry of `rates` (action to calls
    /// per second) for its action: the limiter `api.rate_limit_per_second` and
    /// `api.rate_limits` describe.
    pub fn from_rates(default_rate: f64, rates: &BTreeMap<String, f64>) -> Self {
        rates
            .iter()
            .fold(RateLimiter::new(default_rate), |l, (action, rate)| {
                l.with_action(action, *rate)
            })
    }

    /// Gives `action` its own rate.
    pub fn with_action(mut self, action: &str, rate: f64) -> Self {
        self.rates.insert(action.to_owned(), rate);
        self
    }

    /// The rate `action` is held to: its own, else the default capped by the
    /// documented limit with the safety margin.
    pub fn rate_for(&self, action: &str) -> f64 {
        self.rates.get(action).copied().unwrap_or_else(|| {
            DOCUMENTED
                .iter()
                .find(|(a, _)| *a == action)
                .map_or(self.default_rate, |(_, limit)| {
                    self.default_rate.min(limit * SAFETY_MARGIN)
                })
        })
    }

    /// Takes one token of `action`'s bucket, waiting until it is available.
    pub async fn acquire(&self, action: &str) {
        let bucket = {
            let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
            b.entry(action.to_owned())
                .or_insert_with(|| Arc::new(TokenBucket::new(self.rate_for(action))))
                .clone()
        };
        bucket.acquire().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rate_limiter_spaces_calls() {
        let l = RateLimiter::new(4.0).with_action("Fast", 1000.0);
        let start = tokio::time::Instant::now();
        for _ in 0..12 {
            l.acquire("Slow").await;
            // Another action has its own bucket and does not slow this one down.
            l.acquire("Fast").await;
        }
        // 4 tokens of burst, then 8 more at 4 per second: about 2 s of (virtual) time.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(1900), "{took:?}");
        assert!(took <= Duration::from_millis(2100), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn documented_limits_cap_the_default_rate_but_not_an_explicit_one() {
        let l = RateLimiter::new(95.0).with_action("GetUserCertificateDetail", 150.0);
        let start = tokio::time::Instant::now();
        for _ in 0..27 {
            l.acquire("ListUserCertificateOrder").await;
        }
        // 10/s documented, 9/s used: 9 tokens of burst, then 18 more at 9 per second.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(1900), "{took:?}");
        assert!(took <= Duration::from_millis(2100), "{took:?}");
        assert_eq!(l.rate_for("ListUserCertificateOrder"), 9.0);
        assert_eq!(
            l.rate_for("DescribeCertificateState"),
            95.0,
            "no documented limit"
        );
        assert_eq!(
            l.rate_for("GetUserCertificateDetail"),
            150.0,
            "the operator's rate"
        );
        assert_eq!(
            RateLimiter::new(8.0).rate_for("ListUserCertificateOrder"),
            8.0
        );
    }
}
