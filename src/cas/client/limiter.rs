//! The client-side rate limit: one token bucket per action, shared by every client
//! of the process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Client-side rate limits, one token bucket per action (CAS limits each action
/// separately: ListUserCertificateOrder 10/s, most others 100/s). Shared by every
/// client of the process. Each bucket allows bursts of one second's worth; callers
/// reserve a token and wait for its time, so waiters are served in order.
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

    /// Takes one token of `action`'s bucket, waiting until it is available.
    pub async fn acquire(&self, action: &str) {
        let bucket = {
            let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
            b.entry(action.to_owned())
                .or_insert_with(|| {
                    Arc::new(TokenBucket::new(
                        self.rates.get(action).copied().unwrap_or(self.default_rate),
                    ))
                })
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
}
