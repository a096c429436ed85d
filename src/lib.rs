//! cas-renewd: keeps TLS certificates bought through Alibaba Cloud Certificate
//! Management Service (CAS) renewed, installed and served.
//!
//! # Layout
//!
//! Bottom up; a module uses only modules above it in this list (the names in
//! brackets are every module it uses). `scripts/module_cycles.py --edges` prints the
//! real edges and every import circle (`--within=config` one level down); keep this
//! list in step.
//!
//! Leaves, which use no other module of the crate:
//! - [`secret`]: the redacting wrapper for every secret value.
//! - [`accounts`]: user and group names to ids.
//! - [`ids`]: identifiers CAS hands out (`OrderId`).
//! - [`domain`]: checked domain names, how ownership of one is proven
//!   (`ValidationSpec`), safe display of outside text.
//! - [`hooks`]: reload hooks (`HookSpec`) run as argv with a timeout.
//! - [`verify`]: the TLS handshake that shows which certificate a server serves.
//!
//! Services (take their settings as plain types defined here, not the configuration):
//! - [`logfmt`] (`domain`): the text log's escaping field formatter.
//! - [`cas`] (`secret`): [`cas::sign`] request signatures (pure);
//!   [`cas::credentials`] where the AccessKey comes from (`CredentialsSpec`);
//!   [`cas::client`] HTTP transport, retries, rate limit, error classification;
//!   [`cas::api`], [`cas::api_apply`], [`cas::dns`] typed operations; `cas::ApiSettings`.
//! - [`pki`] (`secret`): keys (`KeyAlgorithm`, `KeySpec`), CSRs, chain checks.
//! - [`store`] (`accounts`, `ids`, `pki`, `secret`): every file write, the output layout
//!   (`OutputSpec`), the journal, start-up repair (`store::repair::RepairTarget`).
//! - [`notify`] (`secret`, `store`): notification channels (webhook, DingTalk,
//!   Feishu/Lark, WeCom, SMTP), their signing, the daily sent-record, the sender.
//! - [`fleet`] (`secret`): many hosts through etcd: the `fleet:` settings
//!   (`FleetSpec`), the sealing of keys (AES-256-GCM), the layout under the
//!   prefix, and (cargo feature `fleet`) the etcd client: lease, lock, fenced writes.
//!
//! The validated settings:
//! - [`settings`] (`cas`, `domain`, `fleet`, `hooks`, `notify`, `pki`, `store`): `Config`,
//!   `CertificateConfig` and the other types the configuration produces, with the
//!   services' settings re-exported under their configuration names
//!   (`settings::OutputConfig` is `store::OutputSpec`). Plain data: no YAML, no
//!   validation.
//!
//! The engine and what reports on it (none of them imports `config`):
//! - [`listing`] (`cas`, `domain`): `cas-renewd list` rendering.
//! - [`renew`] (`cas`, `domain`, `fleet`, `hooks`, `ids`, `pki`, `secret`, `settings`, `store`, `verify`):
//!   the renewal engine; it reports through its own `PassObserver` trait.
//! - [`metrics`] (`cas`, `fleet`, `renew`, `settings`): Prometheus metrics, the engine's
//!   observer.
//! - [`status`] (`domain`, `fleet`, `ids`, `pki`, `renew`, `settings`, `store`): `cas-renewd status`,
//!   its Nagios health and the last pass's record.
//! - [`announce`] (`cas`, `fleet`, `notify`, `renew`, `settings`): the observer that turns
//!   passes into notification events, wrapping the metrics.
//! - [`doctor`] (`accounts`, `cas`, `domain`, `fleet`, `renew`, `settings`, `store`):
//!   `cas-renewd doctor`, the read-only check of a setup; the caller loads the
//!   configuration and hands it over.
//!
//! The top, beside the binary (only these and the binary import `config`):
//! - [`config`] (`accounts`, `cas`, `domain`, `fleet`, `notify`, `secret`, `settings`, `store`):
//!   the YAML configuration: reads, validates and fills the [`settings`] types,
//!   re-exported under the same names (`config::Config` is `settings::Config`).
//! - [`daemon`] (`announce`, `cas`, `config`, `fleet`, `metrics`, `pki`, `renew`, `secret`, `status`, `store`):
//!   `cas-renewd run`.
//!
//! Test machinery lives outside this library: the simulator is the workspace
//! crate `cas-sim` (used by tests and by the binary's `sim` feature), request
//! signing the crate `cas-sign` that both use, and the fuzz entry points the fuzz
//! crate's own library.

pub mod accounts;
pub mod announce;
pub mod cas;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod domain;
pub mod fleet;
pub mod hooks;
pub mod ids;
pub mod listing;
pub mod logfmt;
pub mod metrics;
pub mod notify;
pub mod pki;
pub mod renew;
pub mod secret;
pub mod settings;
pub mod status;
pub mod store;
pub mod verify;
