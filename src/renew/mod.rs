//! The renewal engine: inventory, plan, and the crash-safe state machine that
//! carries a plan out (key, renew, follow, check, install, reload, verify).
//!
//! Every step that matters is written to the certificate's journal before the
//! next one starts, so a crash at any moment resumes at the right step and never
//! spends quota twice: a renew call whose outcome is unknown is reconciled by
//! looking for the order it may have created before anything is called again.

//!
//! Files: [`engine`] (the pass), `steps` (a certificate's journal transitions),
//! `follow` (an order until issued, its validation, the issued checks), `apply`
//! (the paid call and the application), `import` (an order's certificate with the
//! operator's key), [`quota`] (the resource plans), `reload` (hooks), `served` (the
//! served-certificate check), `permit` (concurrency permits lent while waiting),
//! `dry` (the dry run), [`report`] (outcomes and the observer), [`plan`],
//! [`discover`], [`validation`] and [`ports`] (the seams: certificate source, DNS,
//! journal store, clock).
//!
//! The engine reads the wall clock only through its [`ports::Clock`] and waits
//! with tokio's clock (clippy.toml's `disallowed-methods`, denied here).
#![deny(clippy::disallowed_methods)]

mod apply;
pub mod discover;
mod dry;
mod engine;
mod fleet;
#[cfg(feature = "fleet")]
mod fleet_store;
mod follow;
mod import;
mod permit;
pub mod plan;
pub mod ports;
pub mod quota;
mod reconcile;
mod reload;
pub mod report;
mod served;
mod steps;
pub mod validation;

use std::time::Duration;

use crate::cas::client::ApiError;
use crate::hooks;
use crate::ids::OrderId;
use crate::pki::{self, CertInfo, PkiError};
use crate::settings::OutputConfig;
use crate::store::{self, StoreError};
pub use discover::{BlockedTarget, Targets, child_dir, discovered_names, installed_discovered};
pub use engine::{Engine, Plans, Ports};
pub use report::{CertReport, HookReport, NoObserver, Outcome, PassObserver, PassReport};

/// How long after an unclear renew call the account must show no new order before
/// the call is made again (at least; twice the poll interval when that is longer).
const RECONCILE_GRACE: Duration = Duration::from_secs(10);
/// Tag put on renewal orders so an operator can tell them apart in the console.
const TAG_KEY: &str = "cas-renewd";

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Validation(#[from] validation::ValidationError),
    #[error(transparent)]
    Hook(#[from] hooks::HookError),
    #[error("credentials: {0}")]
    Credentials(#[from] crate::cas::credentials::CredentialsError),
    #[error("no certificate named {name:?} (configured or discovered)")]
    NoSuchCertificate { name: String },
    #[error("order {order} is {state} and holds no certificate yet")]
    NotIssued { order: OrderId, state: &'static str },
    #[error("order {order} is issued but the answer has no Certificate")]
    NoCertificate { order: OrderId },
    #[error(
        "order {order} not issued after {} (state {state}); its validation record or file is removed; it stays in the journal and is followed again next pass",
        humantime::format_duration(*.after)
    )]
    IssuanceTimeout {
        order: OrderId,
        after: Duration,
        state: &'static str,
    },
    #[error(
        "order {order} failed the CA's review (verify_fail); CAS suggests deleting the order (DeleteCertificateRequest returns the quota) and applying again"
    )]
    CaRejected { order: OrderId },
    #[error(
        "order {order} was issued for a key this host does not have (renewed elsewhere with its own CSR); not installed"
    )]
    ForeignKey { order: OrderId },
    #[error(
        "the key does not match the certificate of order {order} (another public key); give the private key the order's CSR was made with"
    )]
    ImportKeyMismatch { order: OrderId },
    #[error("certificate of order {order} refused: {source}; the installed files are unchanged")]
    CertificateRefused {
        order: OrderId,
        #[source]
        source: PkiError,
    },
    #[error("key generation task failed: {0}")]
    KeyTask(#[source] tokio::task::JoinError),
    #[error("saved certificate does not match the saved key")]
    SavedPairMismatch,
    /// Needs the operator before anything more is spent (the message says what to do).
    #[error("{0}")]
    Blocked(String),
}

#[derive(Debug, Clone, Default)]
pub struct PassOptions {
    pub dry_run: bool,
    /// Only this certificate.
    pub only: Option<String>,
    /// Renew even when not due, and past a rejection.
    pub force: bool,
    /// How long a pass follows an unissued order before it reports `Waiting` and
    /// moves on (the daemon); `None` follows until `issuance_timeout` (`once`).
    pub follow_budget: Option<Duration>,
}

/// Reads the installed leaf of `out`, if there is one that parses.
pub fn installed_leaf(out: &OutputConfig) -> Option<CertInfo> {
    let pem = store::read_output_text(&out.dir.join(store::CERT_FILE)).ok()??;
    pki::read_leaf(&pem).ok()
}
