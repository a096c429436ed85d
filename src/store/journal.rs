//! The renewal journal of each certificate and the state directory that holds
//! journals, keys and issued chains, with its lock.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
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
    /// When the renew call was (about to be) made.
    #[serde(with = "stamp")]
    pub requested_at: Option<DateTime<Utc>>,
    /// The paid call of this attempt, and for `create` its ProductCode.
    pub paid_call: PaidCall,
    pub product_code: Option<String>,
    /// Every OrderId the account showed before the paid call: an unclear call's
    /// order is one not in this list.
    pub known_order_ids: Vec<i64>,
    /// When an unclear paid call's grace period ended without its order showing.
    #[serde(with = "stamp")]
    pub unclear_since: Option<DateTime<Utc>>,
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
    #[serde(with = "stamp")]
    pub served_checked_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    #[serde(with = "stamp")]
    pub last_success: Option<DateTime<Utc>>,
    #[serde(with = "stamp")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// Journal times on disk: RFC 3339 text, as every version wrote them. A stamp
/// that does not parse (edited by hand) reads as absent: the journal stays
/// readable and the renewal in it is not lost over a timestamp.
mod stamp {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&t.to_rfc3339()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        Ok(text
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc)))
    }
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

    /// Every journal in the state directory with the certificate name its file
    /// bears, whichever certificate (configured, discovered or since removed)
    /// wrote it; unreadable ones are left out.
    pub fn journals(&self) -> Vec<(String, Journal)> {
        let Ok(entries) = std::fs::read_dir(self.root.join("journal")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let cert = name.to_str()?.strip_suffix(".json")?.to_owned();
                let journal = self.load_journal(&cert).ok()?;
                Some((cert, journal))
            })
            .collect()
    }

    /// One atomic, durable journal transition.
    pub fn save_journal(&self, j: &mut Journal) -> Result<(), StoreError> {
        j.updated_at = Some(Utc::now());
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
    fn every_journal_is_listed_with_its_file_name() {
        let d = tempfile::tempdir().expect("tempdir");
        let sd = StateDir::open(&d.path().join("state")).expect("open");
        assert!(sd.journals().is_empty());
        for (name, order) in [("www", 7), ("api", 8)] {
            let mut j = sd.load_journal(name).expect("fresh");
            j.new_order_id = Some(order);
            sd.save_journal(&mut j).expect("save");
        }
        fs::write(sd.journal_path("bad"), "{").expect("write");
        fs::write(
            sd.root().join("journal/.www.json.tmp-00000000deadbeef"),
            "{",
        )
        .expect("tmp");
        let mut all: Vec<(String, Option<i64>)> = sd
            .journals()
            .into_iter()
            .map(|(n, j)| (n, j.new_order_id))
            .collect();
        all.sort();
        assert_eq!(
            all,
            vec![("api".to_owned(), Some(8)), ("www".to_owned(), Some(7))]
        );
    }

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

    /// Journals as the versions before this one wrote them (every phase, both paid
    /// calls, an adopted order, the first format without the later fields, and the
    /// fuzz corpus's minimal one) still load, keep what they say, and survive a
    /// save and a load unchanged.
    #[test]
    fn journals_written_by_earlier_versions_load() {
        let fixtures: [(&str, &str, JournalPhase); 13] = [
            (
                "idle",
                include_str!("fixtures/journal-idle.json"),
                JournalPhase::Idle,
            ),
            (
                "key-ready",
                include_str!("fixtures/journal-key-ready.json"),
                JournalPhase::KeyReady,
            ),
            (
                "renew-requested",
                include_str!("fixtures/journal-renew-requested.json"),
                JournalPhase::RenewRequested,
            ),
            (
                "order-created",
                include_str!("fixtures/journal-order-created.json"),
                JournalPhase::OrderCreated,
            ),
            (
                "create",
                include_str!("fixtures/journal-order-created-create.json"),
                JournalPhase::OrderCreated,
            ),
            (
                "adopted",
                include_str!("fixtures/journal-order-created-adopted.json"),
                JournalPhase::OrderCreated,
            ),
            (
                "application-requested",
                include_str!("fixtures/journal-application-requested.json"),
                JournalPhase::ApplicationRequested,
            ),
            (
                "application-submitted",
                include_str!("fixtures/journal-application-submitted.json"),
                JournalPhase::ApplicationSubmitted,
            ),
            (
                "issued",
                include_str!("fixtures/journal-issued.json"),
                JournalPhase::Issued,
            ),
            (
                "installed",
                include_str!("fixtures/journal-installed.json"),
                JournalPhase::Installed,
            ),
            (
                "rejected",
                include_str!("fixtures/journal-rejected.json"),
                JournalPhase::Rejected,
            ),
            (
                "v1",
                include_str!("fixtures/journal-v1-order-created.json"),
                JournalPhase::OrderCreated,
            ),
            (
                "minimal",
                include_str!("fixtures/journal-minimal.json"),
                JournalPhase::OrderCreated,
            ),
        ];
        let d = tempfile::tempdir().expect("tempdir");
        for (name, text, phase) in fixtures {
            // Each under its own state directory: a journal is saved under its `cert`.
            let sd = StateDir::open(&d.path().join(name)).expect("open");
            fs::write(sd.journal_path("www"), text).expect("write fixture");
            let j = sd
                .load_journal("www")
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(j.phase, phase, "{name}");
            assert_eq!(j.cert, "www", "{name}");
            let raw: serde_json::Value = serde_json::from_str(text).expect("fixture is JSON");
            // Every time stamp written as text comes back as the same instant.
            for field in [
                "requested_at",
                "unclear_since",
                "served_checked_at",
                "last_success",
            ] {
                let want = raw[field].as_str().map(|t| {
                    DateTime::parse_from_rfc3339(t)
                        .expect("fixture stamp")
                        .with_timezone(&Utc)
                });
                let got = match field {
                    "requested_at" => j.requested_at,
                    "unclear_since" => j.unclear_since,
                    "served_checked_at" => j.served_checked_at,
                    _ => j.last_success,
                };
                assert_eq!(got, want, "{name}.{field}");
            }
            assert_eq!(j.new_order_id, raw["new_order_id"].as_i64(), "{name}");
            assert_eq!(j.source_order_id, raw["source_order_id"].as_i64(), "{name}");
            assert_eq!(j.attempt.as_deref(), raw["attempt"].as_str(), "{name}");
            let mut again = j.clone();
            sd.save_journal(&mut again).expect("save");
            let back = sd.load_journal("www").expect("reload");
            assert_eq!(back, again, "{name}");
        }
        let v1 = StateDir::at(&d.path().join("v1"))
            .load_journal("www")
            .expect("v1");
        assert_eq!(v1.paid_call, PaidCall::Renew);
        assert_eq!(v1.dns_record, Some(("example.com".into(), "rec-5".into())));
        assert!(v1.known_order_ids.is_empty() && !v1.adopted);
        let create = StateDir::at(&d.path().join("create"))
            .load_journal("www")
            .expect("create");
        assert_eq!(create.paid_call, PaidCall::Create);
        assert_eq!(create.product_code.as_deref(), Some("digicert-free-1-free"));
        let installed = StateDir::at(&d.path().join("installed"))
            .load_journal("www")
            .expect("installed");
        assert_eq!(installed.reload_pending, ["nginx", "haproxy"]);
        assert_eq!(installed.unusable_orders, [990]);
    }

    #[test]
    fn a_stamp_edited_into_nonsense_reads_as_absent() {
        let d = tempfile::tempdir().expect("tempdir");
        let sd = StateDir::open(d.path()).expect("open");
        fs::write(
            sd.journal_path("www"),
            r#"{"cert":"www","phase":"order-created","new_order_id":7,"requested_at":"yesterday"}"#,
        )
        .expect("write");
        let j = sd.load_journal("www").expect("still loads");
        assert_eq!(j.phase, JournalPhase::OrderCreated);
        assert_eq!(j.new_order_id, Some(7));
        assert_eq!(j.requested_at, None);
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
