//! The renewal journal of each certificate and the state directory that holds
//! journals, keys and issued chains, with its lock.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::{FileSpec, StoreError, ensure_dir, io, remove_file, write_file};

/// Where a renewal stands, written before and after every step that matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum JournalPhase {
    /// Nothing in flight.
    #[default]
    Idle,
    /// The new key is on disk; no renew call was made yet.
    KeyReady,
    /// The renew call is being made; its outcome may be unknown.
    RenewRequested,
    /// The renew call returned the new order.
    OrderCreated,
    /// The new order sat in `payed` (pending application); the application call for
    /// it is being made. Never made twice: its outcome shows in the order's state.
    ApplicationRequested,
    /// The application was accepted; the order is followed as after `OrderCreated`.
    ApplicationSubmitted,
    /// The issued certificate passed its checks and is saved under the state dir.
    Issued,
    /// The output files are in place; the reload is pending.
    Installed,
    /// Issued but refused by the checks; needs an operator (`renew --force`).
    Rejected,
}

impl JournalPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            JournalPhase::Idle => "idle",
            JournalPhase::KeyReady => "key-ready",
            JournalPhase::RenewRequested => "renew-requested",
            JournalPhase::OrderCreated => "order-created",
            JournalPhase::ApplicationRequested => "application-requested",
            JournalPhase::ApplicationSubmitted => "application-submitted",
            JournalPhase::Issued => "issued",
            JournalPhase::Installed => "installed",
            JournalPhase::Rejected => "rejected",
        }
    }
}

/// Which paid call a renewal attempt makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PaidCall {
    /// RenewCertificateOrderForPackageRequest on the source order.
    #[default]
    Renew,
    /// CreateCertificateForPackageRequest: a new certificate for a kind CAS does not
    /// renew (`renewal.mode: reapply`).
    Create,
}

impl PaidCall {
    pub fn action(self) -> &'static str {
        match self {
            PaidCall::Renew => "RenewCertificateOrderForPackageRequest",
            PaidCall::Create => "CreateCertificateForPackageRequest",
        }
    }
}

/// The journal of one certificate (`state_dir/journal/<name>.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Journal {
    pub cert: String,
    pub phase: JournalPhase,
    /// Random id of the current renewal attempt; names its key and files.
    pub attempt: Option<String>,
    pub source_order_id: Option<i64>,
    pub new_order_id: Option<i64>,
    /// When the renew call was (about to be) made, UTC RFC 3339.
    pub requested_at: Option<String>,
    /// The paid call of this attempt, and for `create` its ProductCode.
    pub paid_call: PaidCall,
    pub product_code: Option<String>,
    /// Every OrderId the account showed before the paid call: an unclear call's
    /// order is one not in this list.
    pub known_order_ids: Vec<i64>,
    /// When an unclear paid call's grace period ended without its order showing.
    pub unclear_since: Option<String>,
    /// The order was taken over from elsewhere (console, another host), not made here.
    pub adopted: bool,
    /// What the operator must do for an order stuck in `payed` (pending application)
    /// that cas-renewd cannot submit itself.
    pub pending_application: Option<String>,
    pub key_path: Option<PathBuf>,
    /// SHA-256 of the key's SubjectPublicKeyInfo, hex.
    pub key_spki_sha256: Option<String>,
    pub csr_sha256: Option<String>,
    /// Certificate chain saved after the checks passed.
    pub issued_path: Option<PathBuf>,
    /// A DNS validation record to delete (zone, record id).
    pub dns_record: Option<(String, String)>,
    /// A validation file to delete.
    pub validation_file: Option<PathBuf>,
    /// The validation instruction the operator was last given for this order, so
    /// it is logged once rather than at every poll.
    pub validation_told: Option<String>,
    /// Hooks still to run for the installed certificate.
    pub reload_pending: Vec<String>,
    /// Orders whose certificate cannot be installed here (renewed elsewhere with a
    /// key this host does not have); never adopted or installed again.
    pub unusable_orders: Vec<i64>,
    /// SHA-256 of the installed leaf (DER), hex.
    pub installed_sha256: Option<String>,
    /// SHA-256 of the leaf `verify.connect` served at the last check, upper-case hex.
    pub served_sha256: Option<String>,
    pub served_checked_at: Option<String>,
    pub last_error: Option<String>,
    pub last_success: Option<String>,
    pub updated_at: Option<String>,
}

/// A journal is a few hundred bytes; anything far larger is not one.
const MAX_JOURNAL_BYTES: u64 = 1024 * 1024;

/// Paths under the state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Creates the layout (mode 0700) if missing.
    pub fn open(root: &Path) -> Result<StateDir, StoreError> {
        ensure_dir(root, 0o700)?;
        for sub in ["journal", "keys", "issued"] {
            let d = root.join(sub);
            if !d.exists() {
                ensure_dir(&d, 0o700)?;
            }
        }
        Ok(StateDir {
            root: root.to_owned(),
        })
    }

    /// A handle on an existing state directory that creates nothing (dry runs,
    /// `status`).
    pub fn at(root: &Path) -> StateDir {
        StateDir {
            root: root.to_owned(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn journal_path(&self, cert: &str) -> PathBuf {
        self.root.join("journal").join(format!("{cert}.json"))
    }

    pub fn key_path(&self, cert: &str, attempt: &str) -> PathBuf {
        self.root.join("keys").join(format!("{cert}-{attempt}.key"))
    }

    pub fn issued_path(&self, cert: &str, attempt: &str) -> PathBuf {
        self.root
            .join("issued")
            .join(format!("{cert}-{attempt}.pem"))
    }

    /// The journal of `cert`, or a fresh one.
    pub fn load_journal(&self, cert: &str) -> Result<Journal, StoreError> {
        let path = self.journal_path(cert);
        match super::safe_fs::read_regular(&path, MAX_JOURNAL_BYTES)? {
            Some(data) => serde_json::from_slice(&data).map_err(|e| StoreError::CorruptJournal {
                path,
                detail: e.to_string(),
            }),
            None => Ok(Journal {
                cert: cert.to_owned(),
                ..Journal::default()
            }),
        }
    }

    /// One atomic, durable journal transition.
    pub fn save_journal(&self, j: &mut Journal) -> Result<(), StoreError> {
        j.updated_at = Some(Utc::now().to_rfc3339());
        let data = serde_json::to_vec_pretty(j).map_err(|e| StoreError::CorruptJournal {
            path: self.journal_path(&j.cert),
            detail: e.to_string(),
        })?;
        write_file(&self.journal_path(&j.cert), &data, FileSpec::private())
    }

    /// Takes the state directory's lock for the life of the returned file.
    pub fn lock(&self) -> Result<File, StoreError> {
        let path = self.root.join("lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path, "open lock"))?;
        match f.try_lock() {
            Ok(()) => Ok(f),
            Err(fs::TryLockError::WouldBlock) => Err(StoreError::Locked(self.root.clone())),
            Err(fs::TryLockError::Error(e)) => Err(io(&path, "lock")(e)),
        }
    }

    /// Removes key and issued files of attempts other than `keep`.
    pub fn prune_attempts(&self, cert: &str, keep: Option<&str>) -> Result<(), StoreError> {
        for sub in ["keys", "issued"] {
            let dir = self.root.join(sub);
            let entries = fs::read_dir(&dir).map_err(io(&dir, "list"))?;
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(rest) = name.strip_prefix(&format!("{cert}-")) else {
                    continue;
                };
                let attempt = rest.split('.').next().unwrap_or_default();
                if Some(attempt) != keep && !attempt.contains('-') {
                    remove_file(&e.path())?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn journal_round_trips_and_state_dir_is_private() {
        let d = tempfile::tempdir().expect("tempdir");
        let sd = StateDir::open(&d.path().join("state")).expect("open");
        assert_eq!(fs::metadata(sd.root()).expect("m").mode() & 0o777, 0o700);
        let mut j = sd.load_journal("www").expect("fresh");
        assert_eq!(j.phase, JournalPhase::Idle);
        j.phase = JournalPhase::OrderCreated;
        j.new_order_id = Some(7);
        sd.save_journal(&mut j).expect("save");
        let back = sd.load_journal("www").expect("load");
        assert_eq!(back, j);
        assert_eq!(
            fs::metadata(sd.journal_path("www")).expect("m").mode() & 0o777,
            0o600
        );
        fs::write(sd.journal_path("bad"), "{").expect("write");
        assert!(matches!(
            sd.load_journal("bad"),
            Err(StoreError::CorruptJournal { .. })
        ));
    }

    #[test]
    fn second_lock_is_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        let sd = StateDir::open(d.path()).expect("open");
        let _held = sd.lock().expect("first");
        let err = sd.lock().expect_err("second");
        assert!(
            err.to_string().contains("another cas-renewd is running"),
            "{err}"
        );
    }
}
