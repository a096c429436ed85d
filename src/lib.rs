//! cas-renewd: keeps TLS certificates bought through Alibaba Cloud Certificate
//! Management Service (CAS) renewed, installed and served.
//!
//! # Layout
//!
//! Bottom up; a module only calls the ones above it in this list.
//!
//! - [`secret`]: the redacting wrapper for every secret value.
//! - [`accounts`]: user and group names to ids.
//! - [`cas::sign`]: ACS3-HMAC-SHA256 and HMAC-SHA1 request signatures (pure).
//! - [`cas::credentials`]: where the AccessKey comes from (config, env, profile, ECS role).
//! - [`cas::client`]: HTTP transport, retries, rate limit, error classification.
//! - [`cas::api`]: typed CAS operations.
//! - [`config`]: the YAML configuration and its validation.

pub mod accounts;
pub mod cas;
pub mod config;
pub mod daemon;
pub mod domain;
pub mod hooks;
pub mod listing;
pub mod logfmt;
pub mod metrics;
pub mod pki;
pub mod renew;
pub mod secret;
pub mod status;
pub mod store;
pub mod verify;
