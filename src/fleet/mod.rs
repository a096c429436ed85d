//! Fleets: many hosts renewing the same certificates with one paid call per
//! certificate, coordinated through etcd (the lock, the shared journal, the
//! issued material with its key sealed under the fleet's sealing key).
//!
//! [`FleetSpec`] (the `fleet:` settings), [`seal`] (AES-256-GCM) and [`layout`]
//! (the keys under the prefix and the records stored there) are in every build;
//! the etcd client ([`etcd`]) only with the `fleet` cargo feature.

pub mod layout;
pub mod seal;

#[cfg(feature = "fleet")]
pub mod etcd;

use std::path::PathBuf;
use std::time::Duration;

pub use seal::{SEALING_KEY_LEN, SealingKey};

/// The `fleet:` settings, validated (see `config::fleet`).
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// etcd client URLs (`http://` or `https://`, all alike).
    pub endpoints: Vec<String>,
    /// Every key of this fleet lives under it: absolute, no trailing `/`.
    pub prefix: String,
    pub ca_file: Option<PathBuf>,
    /// The client certificate and its key (given together).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// The lock's lease: a host that stops answering loses its locks after it.
    pub lease_ttl: Duration,
    pub sealing_key: SealingKey,
    /// This host's name in etcd (`hosts/<host_name>/...`, the lock's holder).
    pub host_name: String,
}

/// What the fleet's coordination reports to the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetEvent<'a> {
    /// etcd answered (or did not) a request of this host.
    EtcdUp(bool),
    /// This host took or released the lock of `cert`.
    LockHeld { cert: &'a str, held: bool },
    /// The fleet's version of `cert` this host has installed.
    InstalledVersion { cert: &'a str, version: u64 },
}

/// The shortest `lease_ttl`: below it a busy host's keepalives could miss.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(5);

/// What went wrong with the fleet's shared state. The messages never carry a
/// key, sealed or not.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("etcd ({endpoints}): {detail}")]
    Etcd { endpoints: String, detail: String },
    #[error(
        "certificate {cert}: the fleet lock is no longer ours (held by {holder}, or its lease expired); nothing is paid, the step is left to the lock's holder"
    )]
    LostLock { cert: String, holder: String },
    #[error(
        "certificate {cert}: the fleet lease is not known to be alive (last keepalive answer {age} ago, lease_ttl {ttl}); no paid call is made"
    )]
    LeaseUncertain {
        cert: String,
        age: String,
        ttl: String,
    },
    #[error(
        "certificate {cert}: the shared journal changed under us (another host wrote it); nothing is paid, the next pass starts from what it says"
    )]
    Conflict { cert: String },
    #[error(
        "certificate {cert}: the fleet's sealed key for version {version} does not open with this host's sealing_key_file (a different key than the other hosts', or the data was changed); nothing installed"
    )]
    Unseal { cert: String, version: String },
    #[error(
        "this host's sealing_key_file is not the fleet's: the check value under {key} does not open with it; copy the key the other hosts use"
    )]
    WrongSealingKey { key: String },
    #[error("certificate {cert}: sealing failed")]
    Seal { cert: String },
    #[error("{key}: {detail}")]
    BadRecord { key: String, detail: String },
    #[error(
        "certificate {cert}: a step that can spend needs the fleet lock, and this host does not hold it"
    )]
    NotLocked { cert: String },
    #[error("certificate {cert}: the lock is held by {holder}; waited {waited}, no paid call made")]
    Busy {
        cert: String,
        holder: String,
        waited: String,
    },
}
