//! The client-side rate limit: per action, at most so many calls in any window
//! of about a second, shared by every client of the process.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The limits CAS documents, per user and action (calls per second); the other
/// actions cas-renewd calls have none documented.
const DOCUMENTED: [(&str, f64); 2] = [
    ("ListUserCertificateOrder", 10.0),
    ("GetUserCertificateDetail", 100.0),
];

/// The share of a documented limit the client uses by default. The limiter never
/// puts more than ⌈rate⌉ calls into any one second, however the server's windows
/// are aligned, so the margin is left for other tools of the account (the limit is
/// per user) and for network jitter between our sends and CAS's count. It is a
/// margin on the average: at 9.5/s a second can still hold all 10 calls the limit
/// allows (a burst of ⌈rate⌉), leaving no room in it for another tool.
pub const SAFETY_MARGIN: f64 = 0.95;

/// The most calls one window may hold, so the record of sends stays small. The
/// configuration caps rates at 1,000/s, so only a direct caller with a higher rate
/// gets a shorter window (and up to twice its rate in one second).
const MAX_WINDOW_CALLS: usize = 1_000;

/// The longest window: a rate below one call an hour is held to one call an hour
/// (a window of a larger span does not fit tokio's clock for absurd rates).
const MAX_WINDOW: Duration = Duration::from_secs(3_600);

/// Client-side rate limits, one window per action (CAS limits each action
/// separately: ListUserCertificateOrder 10/s, most others 100/s). Shared by every
/// client of the process. An action without its own rate gets the default rate,
/// capped at [`SAFETY_MARGIN`] of its documented limit. Callers reserve a send
/// time and wait for it, so waiters are served in order.
#[derive(Debug)]
pub struct RateLimiter {
    default_rate: f64,
    rates: HashMap<String, f64>,
    windows: Mutex<HashMap<String, Arc<SlidingWindow>>>,
}

/// At most `calls` sends in any span of `window` (`calls / window` = the rate):
/// the same count a server makes per one-second window, but for every placement
/// of that window. A token bucket of one second's burst at rate r lets up to 2r
/// calls into one server second (its full bucket, then r more as it refills),
/// which CAS answers with Throttling.User; a bucket small enough never to do that
/// can use only about r - 1 of the limit.
#[derive(Debug)]
struct SlidingWindow {
    calls: usize,
    window: Duration,
    /// The send times reserved for the last `calls` calls, oldest first (tokio's
    /// clock, so that paused-time tests see the window move).
    sent: Mutex<VecDeque<tokio::time::Instant>>,
}

impl SlidingWindow {
    fn new(rate: f64) -> Self {
        // `ceil` keeps a fractional rate's window at least a second long: 9.5/s is
        // 10 calls in every 1.05 s, never 10 in less than a second.
        let calls = if rate.is_finite() && rate > 0.0 {
            (rate.ceil() as usize).clamp(1, MAX_WINDOW_CALLS)
        } else {
            1
        };
        // No rate (0, NaN: the configuration refuses both) means one call a second.
        let window = if rate.is_finite() && rate > 0.0 {
            Duration::try_from_secs_f64(calls as f64 / rate)
                .map_or(MAX_WINDOW, |w| w.min(MAX_WINDOW))
        } else {
            Duration::from_secs(1)
        };
        SlidingWindow {
            calls,
            window,
            sent: Mutex::new(VecDeque::with_capacity(calls)),
        }
    }

    async fn acquire(&self) {
        let (at, now) = {
            let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
            let now = tokio::time::Instant::now();
            // Reservations never go backwards, so the oldest of the last `calls`
            // is the one the new send must stay a window away from.
            let at = match sent.front() {
                Some(oldest) if sent.len() >= self.calls => now.max(*oldest + self.window),
                _ => now,
            };
            sent.push_back(at);
            while sent.len() > self.calls {
                sent.pop_front();
            }
            (at, now)
        };
        // A call that fits now goes out now, not at the timer's next tick.
        if at > now {
            tokio::time::sleep_until(at).await;
        }
    }
}

impl RateLimiter {
    /// `default_rate` calls per second for every action without its own rate.
    pub fn new(default_rate: f64) -> Self {
        RateLimiter {
            default_rate,
            rates: Default::default(),
            windows: Mutex::new(Default::default()),
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

    /// Waits until a call of `action` fits its window, and counts it.
    pub async fn acquire(&self, action: &str) {
        let window = {
            let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            w.entry(action.to_owned())
                .or_insert_with(|| Arc::new(SlidingWindow::new(self.rate_for(action))))
                .clone()
        };
        window.acquire().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The send times of `n` calls of `action`, from the first.
    async fn send_times(l: &RateLimiter, action: &str, n: usize) -> Vec<Duration> {
        let start = tokio::time::Instant::now();
        let mut at = Vec::with_capacity(n);
        for _ in 0..n {
            l.acquire(action).await;
            at.push(start.elapsed());
        }
        at
    }

    /// The most of `times` that fall into one server window `[k + phase, k + 1 +
    /// phase)`, over every whole second `k` and every phase in steps of 1 ms: how
    /// a server that counts calls per second sees them, however it is aligned.
    fn most_in_one_server_second(times: &[Duration]) -> usize {
        let ms: Vec<u64> = times.iter().map(|t| t.as_millis() as u64).collect();
        let end = ms.last().copied().unwrap_or(0) + 1_000;
        (0..1_000u64)
            .flat_map(|phase| (0..=end / 1_000).map(move |k| k * 1_000 + phase))
            .map(|from| {
                ms.iter()
                    .filter(|t| (from..from + 1_000).contains(t))
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limiter_spaces_calls() {
        let l = RateLimiter::new(4.0).with_action("Fast", 1000.0);
        let start = tokio::time::Instant::now();
        for _ in 0..12 {
            l.acquire("Slow").await;
            // Another action has its own window and does not slow this one down.
            l.acquire("Fast").await;
        }
        // 4 calls at once, then 4 more a second later, then the last 4: 2 s of
        // (virtual) time.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(1990), "{took:?}");
        assert!(took <= Duration::from_millis(2010), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn documented_limits_cap_the_default_rate_but_not_an_explicit_one() {
        let l = RateLimiter::new(95.0).with_action("GetUserCertificateDetail", 150.0);
        let at = send_times(&l, "ListUserCertificateOrder", 27).await;
        // 10/s documented, 9.5/s used: 10 calls in every 1.053 s.
        let took = at[26];
        assert!(took >= Duration::from_millis(2100), "{took:?}");
        assert!(took <= Duration::from_millis(2110), "{took:?}");
        assert_eq!(l.rate_for("ListUserCertificateOrder"), 9.5);
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

    /// A listing of 110 pages at the default rate: no server second, whatever its
    /// alignment, sees more than the documented 10 calls, and the listing takes
    /// 10.5 s, where the token bucket this replaced (9/s, a burst of 9) put up to
    /// 18 calls into the first second (CAS throttled one page of 11 each second)
    /// and, kept to 10 in a second, could use only 9 a second (12.1 s).
    #[tokio::test(start_paused = true)]
    async fn no_server_second_sees_more_than_the_documented_limit() {
        let l = RateLimiter::new(95.0);
        let at = send_times(&l, "ListUserCertificateOrder", 110).await;
        assert_eq!(most_in_one_server_second(&at), 10);
        let took = at[109];
        assert!(took >= Duration::from_millis(10_520), "{took:?}");
        assert!(took <= Duration::from_millis(10_540), "{took:?}");
    }

    /// Waiters go in the order they asked: a certificate that asked first is
    /// never overtaken by one that asked later.
    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_the_order_they_asked() {
        let l = Arc::new(RateLimiter::new(2.0));
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::new();
        for i in 0..9u32 {
            let l = l.clone();
            tasks.push(tokio::spawn(async move {
                l.acquire("X").await;
                (i, start.elapsed())
            }));
            // Let task i ask before task i + 1 exists.
            tokio::task::yield_now().await;
        }
        let mut done = Vec::new();
        for t in tasks {
            done.push(t.await.expect("task"));
        }
        for pair in done.windows(2) {
            assert!(pair[0].1 <= pair[1].1, "{done:?}");
        }
        // 2 calls a second: the 9th goes out in the 5th window.
        assert_eq!(done[8].1, Duration::from_secs(4));
    }

    /// Callers that arrive while others wait (the concurrent polls of a pass) keep
    /// to the same count, and a fractional or tiny rate still gets whole calls.
    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_and_odd_rates_keep_to_the_limit() {
        let l = Arc::new(RateLimiter::new(47.5).with_action("Rare", 0.5));
        let start = tokio::time::Instant::now();
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let l = l.clone();
                tokio::spawn(async move {
                    l.acquire("DescribeCertificateState").await;
                    start.elapsed()
                })
            })
            .collect();
        let mut at = Vec::new();
        for t in tasks {
            at.push(t.await.expect("task"));
        }
        at.sort();
        assert_eq!(most_in_one_server_second(&at), 48);
        // 200 calls at 47.5/s: the 200th is the 8th of the 5th window of 1.0105 s.
        assert!(at[199] >= Duration::from_millis(4040), "{:?}", at[199]);
        assert!(at[199] <= Duration::from_millis(4050), "{:?}", at[199]);
        let rare = send_times(&l, "Rare", 3).await;
        assert_eq!(rare[1] - rare[0], Duration::from_secs(2));
        assert_eq!(rare[2] - rare[1], Duration::from_secs(2));
    }
}
