//! The renewal journal of each certificate and the state directory that holds
//! journals, keys and issued chains, with its lock.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{FileSpec, StoreError, ensure_dir, io, write_file};

mod legacy;
mod phase;

pub use phase::{
    Attempt, Following, InstanceRef, Issued, KeyFile, PaidCall, Phase, PhaseName, Publication,
    Rejected, RenewRequested, Stage,
};

use crate::ids::{InstanceId, OrderId};

/// The journal of one certificate (`state_dir/journal/<name>.json`): where its
/// renewal stands ([`Phase`], with that phase's data) and the facts about the
/// certificate that outlive an attempt.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Journal {
    /// The on-disk form: always 2 here, and required; a journal without it is the
    /// flat form of earlier versions, converted on read ([`Journal::from_json`]).
    pub version: FormatVersion,
    pub cert: String,
    #[serde(flatten)]
    pub phase: Phase,
    /// Hooks still to run for the installed certificate. Outlives the attempt: a
    /// renewal started while a reload is still due keeps it due.
    #[serde(default)]
    pub reload_pending: Vec<String>,
    /// Orders whose certificate cannot be installed here (renewed elsewhere with a
    /// key this host does not have); never adopted or installed again.
    #[serde(default)]
    pub unusable_orders: Vec<OrderId>,
    /// The order the journal last named (the installed certificate's, once the
    /// attempt is over), for `status` and the hooks' environment.
    #[serde(default)]
    pub last_order_id: Option<OrderId>,
    /// The V2.0 instance the journal last named (as `last_order_id` for an order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_instance_id: Option<InstanceId>,
    /// SHA-256 of the installed leaf (DER), hex.
    #[serde(default)]
    pub installed_sha256: Option<String>,
    /// SHA-256 of the leaf `verify.connect` served at the last check, upper-case hex.
    #[serde(default)]
    pub served_sha256: Option<String>,
    #[serde(default, with = "stamp")]
    pub served_checked_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default, with = "stamp")]
    pub last_success: Option<DateTime<Utc>>,
    #[serde(default, with = "stamp")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// The `"version": 2` marker; reading any other number is an error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FormatVersion;

const FORMAT_VERSION: u64 = 2;

impl Serialize for FormatVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(FORMAT_VERSION)
    }
}

impl<'de> Deserialize<'de> for FormatVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<FormatVersion, D::Error> {
        match u64::deserialize(d)? {
            FORMAT_VERSION => Ok(FormatVersion),
            v => Err(serde::de::Error::custom(format!(
                "journal version {v} is not one this cas-renewd reads (it reads {FORMAT_VERSION} and the unversioned form)"
            ))),
        }
    }
}

impl Journal {
    /// A journal with nothing in flight.
    pub fn new(cert: &str) -> Journal {
        Journal {
            cert: cert.to_owned(),
            ..Journal::default()
        }
    }

    /// Reads a journal in either form: with `"version"` the current one, without
    /// it the flat form every earlier version wrote, converted.
    pub fn from_json(data: &[u8]) -> Result<Journal, serde_json::Error> {
        let value: serde_json::Value = serde_json::from_slice(data)?;
        if value.get("version").is_some() {
            serde_json::from_value(value)
        } else {
            serde_json::from_value::<legacy::LegacyJournal>(value).map(Journal::from)
        }
    }

    /// Moves to `next`, remembering the order the journal named, for `status` and
    /// hooks once the attempt is over. The caller saves.
    pub fn set_phase(&mut self, next: Phase) {
        if let Some(order) = next.order_id().or(self.phase.order_id()) {
            self.last_order_id = Some(order);
        }
        if let Some(i) = next.instance().or(self.phase.instance()) {
            self.last_instance_id = Some(i.instance_id.clone());
        }
        self.phase = next;
    }

    /// The order this certificate's journal is about: the attempt's, or the last one.
    pub fn order_id(&self) -> Option<OrderId> {
        self.phase.order_id().or(self.last_order_id)
    }
}

/// A fresh random attempt id (12 hex digits, no `-`: `store::prune` relies on it).
pub fn new_attempt_id() -> String {
    hex::encode(rand::random::<[u8; 6]>())
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
        Ok(text.as_deref().and_then(parse))
    }

    pub fn parse(t: &str) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(t)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// A stamp a phase needs (when its paid call was made). One that is missing or
    /// does not parse reads as the moment of reading: every wait measured from it
    /// (the unclear call's grace and retry ceiling, the issuance timeout) starts
    /// again, so nothing is paid again or given up early over a timestamp.
    pub mod or_now {
        use chrono::{DateTime, Utc};
        use serde::{Deserialize as _, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&t.to_rfc3339())
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
            let text: Option<String> = Option::deserialize(d)?;
            Ok(text
                .as_deref()
                .and_then(super::parse)
                .unwrap_or_else(Utc::now))
        }
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
            Some(data) => Journal::from_json(&data).map_err(|e| StoreError::CorruptJournal {
                path,
                detail: e.to_string(),
            }),
            None => Ok(Journal::new(cert)),
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    fn following(order: i64) -> Following {
        Following::adopted(new_attempt_id(), OrderId::new(order), Utc::now())
    }

    #[test]
    fn every_journal_is_listed_with_its_file_name() {
        let d = tempfile::tempdir().expect("tempdir");
        let sd = StateDir::open(&d.path().join("state")).expect("open");
        assert!(sd.journals().is_empty());
        for (name, order) in [("www", 7), ("api", 8)] {
            let mut j = sd.load_journal(name).expect("fresh");
            j.set_phase(Phase::OrderCreated(following(order)));
            sd.save_journal(&mut j).expect("save");
        }
        fs::write(sd.journal_path("bad"), "{").expect("write");
        fs::write(
            sd.root().join("journal/.www.json.tmp-00000000deadbeef"),
            "{",
        )
        .expect("tmp");
        let mut all: Vec<(String, Option<OrderId>)> = sd
            .journals()
            .into_iter()
            .map(|(n, j)| (n, j.phase.new_order_id()))
            .collect();
        all.sort();
        assert_eq!(
            all,
            vec![
                ("api".to_owned(), Some(OrderId::new(8))),
                ("www".to_owned(), Some(OrderId::new(7)))
            ]
        );
    }

    #[test]
    fn journal_round_trips_and_state_dir_is_private() {
        let d = tempfile::tempdir().expect("tempdir");
        let sd = StateDir::open(&d.path().join("state")).expect("open");
        assert_eq!(fs::metadata(sd.root()).expect("m").mode() & 0o777, 0o700);
        let mut j = sd.load_journal("www").expect("fresh");
        assert_eq!(j.phase, Phase::Idle);
        j.set_phase(Phase::OrderCreated(following(7)));
        j.reload_pending = vec!["nginx".into()];
        sd.save_journal(&mut j).expect("save");
        let back = sd.load_journal("www").expect("load");
        assert_eq!(back, j);
        assert_eq!(back.last_order_id, Some(OrderId::new(7)));
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

    /// The current form says so, names its phase the way earlier versions did, and
    /// keeps the names of the fields operators and tools read.
    #[test]
    fn the_current_form_is_versioned_and_flat_on_disk() {
        let mut j = Journal::new("www");
        j.set_phase(Phase::OrderCreated(following(1002)));
        let v = serde_json::to_value(&j).expect("json");
        assert_eq!(v["version"], 2);
        assert_eq!(v["phase"], "order-created");
        assert_eq!(v["new_order_id"], 1002);
        assert!(v["dns_record"].is_null() && v["reload_pending"].is_array());
        let idle = serde_json::to_value(Journal::new("www")).expect("json");
        assert_eq!(idle["phase"], "idle");
        assert!(idle.get("new_order_id").is_none());
    }

    #[test]
    fn an_unknown_version_or_phase_is_refused_with_its_reason() {
        // Only `from_json` converts the flat form; serde alone wants the version.
        let flat = br#"{"cert":"www","phase":"idle"}"#;
        assert!(serde_json::from_slice::<Journal>(flat).is_err());
        assert_eq!(Journal::from_json(flat).expect("flat"), Journal::new("www"));
        let e = Journal::from_json(br#"{"version":3,"cert":"www","phase":"idle"}"#)
            .expect_err("version 3");
        assert!(e.to_string().contains("journal version 3"), "{e}");
        // A phase without its data is an error in the current form, not a guess.
        let e = Journal::from_json(br#"{"version":2,"cert":"www","phase":"issued"}"#)
            .expect_err("issued without its data");
        assert!(e.to_string().contains("missing field"), "{e}");
        assert!(Journal::from_json(br#"{"version":2,"cert":"www","phase":"done"}"#).is_err());
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
