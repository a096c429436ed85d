//! Everything that speaks to Alibaba Cloud: signing, credentials, transport and typed operations.

pub mod api;
pub mod api_apply;
pub mod client;
pub mod credentials;
pub mod dns;
// Its own crate so the simulator (crates/cas-sim) verifies with the same code without
// depending on this one.
pub use cas_sign as sign;

use std::sync::Arc;

use crate::config::ApiConfig;

/// A CAS client for the configured endpoint, sharing `limiter` with any other
/// client of the process so the rate limit holds across all of them.
pub fn cas_client(
    api: &ApiConfig,
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
    api: &ApiConfig,
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
