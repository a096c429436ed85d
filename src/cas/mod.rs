//! Everything that speaks to Alibaba Cloud: signing, credentials, transport and typed operations.

pub mod api;
pub mod api_apply;
pub mod client;
pub mod credentials;
pub mod dns;
pub mod inventory;
// Its own crate so the simulator (crates/cas-sim) verifies with the same code without
// depending on this one.
pub use cas_sign as sign;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How cas-renewd talks to the Alibaba APIs (the configuration's `api` section).
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub endpoint: reqwest::Url,
    pub dns_endpoint: reqwest::Url,
    pub timeout: Duration,
    pub max_attempts: u32,
    /// `ShowSize` of every ListUserCertificateOrder page.
    pub page_size: u32,
    /// Calls per second for each action without its own entry in `rate_limits`.
    pub rate_limit_per_second: f64,
    /// Per-action calls per second (CAS documents its limits per action).
    pub rate_limits: BTreeMap<String, f64>,
}

impl ApiSettings {
    /// The client-side limiter these settings describe.
    pub fn limiter(&self) -> client::RateLimiter {
        client::RateLimiter::from_rates(self.rate_limit_per_second, &self.rate_limits)
    }
}

impl Default for ApiSettings {
    /// The public CAS and DNS endpoints, with limits below what CAS documents.
    fn default() -> Self {
        ApiSettings {
            endpoint: reqwest::Url::parse("https://cas.aliyuncs.com")
                .expect("a literal, valid URL"),
            dns_endpoint: reqwest::Url::parse("https://alidns.aliyuncs.com")
                .expect("a literal, valid URL"),
            timeout: Duration::from_secs(30),
            max_attempts: 6,
            page_size: api::DEFAULT_PAGE_SIZE,
            rate_limit_per_second: 8.0,
            rate_limits: BTreeMap::new(),
        }
    }
}

/// A CAS client for the configured endpoint, sharing `limiter` with any other
/// client of the process so the rate limit holds across all of them.
pub fn cas_client(
    api: &ApiSettings,
    credentials: Arc<credentials::CredentialsProvider>,
    limiter: Arc<client::RateLimiter>,
    observer: Option<client::Observer>,
) -> Result<api::Cas, client::ApiError> {
    let settings = client::ClientSettings {
        endpoint: api.endpoint.clone(),
        version: api::CAS_VERSION,
        timeout: api.timeout,
        max_attempts: api.max_attempts,
    };
    let mut c = client::ApiClient::new(settings, credentials, limiter)?;
    if let Some(o) = observer {
        c = c.with_observer(o);
    }
    Ok(api::Cas::new(c))
}

/// An Alibaba Cloud DNS client for `api.dns_endpoint`, sharing `limiter`.
pub fn dns_client(
    api: &ApiSettings,
    credentials: Arc<credentials::CredentialsProvider>,
    limiter: Arc<client::RateLimiter>,
    observer: Option<client::Observer>,
) -> Result<dns::Dns, client::ApiError> {
    let settings = client::ClientSettings {
        endpoint: api.dns_endpoint.clone(),
        version: dns::DNS_VERSION,
        timeout: api.timeout,
        max_attempts: api.max_attempts,
    };
    let mut c = client::ApiClient::new(settings, credentials, limiter)?;
    if let Some(o) = observer {
        c = c.with_observer(o);
    }
    Ok(dns::Dns::new(c))
}
