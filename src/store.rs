//! The only code that writes files: atomic, durable replacement (temp file in the
//! same directory, fsync, rename, fsync of the directory), the output layout with
//! its history, the renewal journal, keys under the state directory, and the lock.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::config::OutputConfig;
use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: journal is not valid JSON ({detail}); move it aside to start over")]
    CorruptJournal { path: PathBuf, detail: String },
    #[error("unknown {kind} {name:?} (not in /etc/{file})")]
    UnknownId {
        kind: &'static str,
        name: String,
        file: &'static str,
    },
    #[error(
        "another cas-renewd is running on state directory {0} (it holds {0}/lock); stop it first"
    )]
    Locked(PathBuf),
}

fn io<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        path: path.to_owned(),
        op,
        source,
    }
}

/// Mode and ownership of a file to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSpec {
    pub mode: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl FileSpec {
    pub const fn private() -> Self {
        FileSpec {
            mode: 0o600,
            uid: None,
            gid: None,
        }
    }
}

/// One file of an atomic write.
pub struct FileWrite<'a> {
    pub path: PathBuf,
    pub data: &'a [u8],
    pub spec: FileSpec,
}

/// Replaces every file of `files` (all in directories that exist) atomically and
/// durably. Each file is written in full to a temporary file created with its final
/// mode (never wider), fsynced, then all are renamed over their targets in a
/// burst, then each directory is fsynced. A crash leaves each file old or new,
/// never torn; the set as a whole is switched within a few microseconds.
pub fn atomic_write(files: &[FileWrite<'_>]) -> Result<(), StoreError> {
    injected_fault(files)?;
    let mut temps: Vec<(PathBuf, &Path)> = Vec::with_capacity(files.len());
    let result = (|| {
        for f in files {
            let dir = f.path.parent().unwrap_or(Path::new("/"));
            let name = f
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let tmp = dir.join(format!(".{name}.tmp-{:016x}", rand::random::<u64>()));
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(f.spec.mode)
                .custom_flags(libc_o_nofollow())
                .open(&tmp)
                .map_err(io(&tmp, "create temporary file"))?;
            temps.push((tmp.clone(), &f.path));
            // The umask may have narrowed the mode at creation; set it exactly.
            file.set_permissions(fs::Permissions::from_mode(f.spec.mode))
                .map_err(io(&tmp, "set mode"))?;
            if f.spec.uid.is_some() || f.spec.gid.is_some() {
                std::os::unix::fs::fchown(&file, f.spec.uid, f.spec.gid)
                    .map_err(io(&tmp, "set owner"))?;
            }
            file.write_all(f.data).map_err(io(&tmp, "write"))?;
            file.sync_all().map_err(io(&tmp, "fsync"))?;
        }
        for (tmp, target) in &temps {
            fs::rename(tmp, target).map_err(io(target, "rename into place"))?;
        }
        let mut dirs: Vec<&Path> = files
            .iter()
            .map(|f| f.path.parent().unwrap_or(Path::new("/")))
            .collect();
        dirs.sort();
        dirs.dedup();
        for d in dirs {
            sync_dir(d)?;
        }
        Ok(())
    })();
    if result.is_err() {
        for (tmp, _) in &temps {
            let _ = fs::remove_file(tmp);
        }
    }
    result
}

/// `CAS_RENEWD_FAULT_WRITE=<text>` makes every write to a path containing `<text>`
/// fail with ENOSPC, as on a full disk. Test harnesses use it; nothing else should.
fn injected_fault(files: &[FileWrite<'_>]) -> Result<(), StoreError> {
    static FAULT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let Some(pattern) = FAULT
        .get_or_init(|| {
            std::env::var("CAS_RENEWD_FAULT_WRITE")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .as_deref()
    else {
        return Ok(());
    };
    match files
        .iter()
        .find(|f| f.path.to_string_lossy().contains(pattern))
    {
        Some(f) => Err(StoreError::Io {
            path: f.path.clone(),
            op: "write",
            source: std::io::Error::from_raw_os_error(28),
        }),
        None => Ok(()),
    }
}

/// Writes one file atomically (see [`atomic_write`]).
pub fn write_file(path: &Path, data: &[u8], spec: FileSpec) -> Result<(), StoreError> {
    atomic_write(&[FileWrite {
        path: path.to_owned(),
        data,
        spec,
    }])
}

/// `O_NOFOLLOW`: a temporary name that is a planted symlink is refused. Linux value.
const fn libc_o_nofollow() -> i32 {
    0o400000
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "fsync directory"))
}

/// Removes a file and makes the removal durable; a missing file is fine.
pub fn remove_file(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(path.parent().unwrap_or(Path::new("/"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path, "remove")(e)),
    }
}

/// Creates `dir` (and parents) and sets its mode.
pub fn ensure_dir(dir: &Path, mode: u32) -> Result<(), StoreError> {
    fs::create_dir_all(dir).map_err(io(dir, "create directory"))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(io(dir, "set mode"))
}

/// Looks a user or group up in `/etc/passwd` or `/etc/group`; numeric ids pass.
fn lookup_id(name: &str, file: &'static str, kind: &'static str) -> Result<u32, StoreError> {
    if let Ok(n) = name.parse() {
        return Ok(n);
    }
    let path = Path::new("/etc").join(file);
    let text = fs::read_to_string(&path).map_err(io(&path, "read"))?;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let n = f.next()?;
            let id = f.nth(1)?;
            (n == name).then(|| id.parse().ok())?
        })
        .next()
        .ok_or_else(|| StoreError::UnknownId {
            kind,
            name: name.to_owned(),
            file,
        })
}

/// The numeric owner and group an output block asks for.
pub fn output_ids(out: &OutputConfig) -> Result<(Option<u32>, Option<u32>), StoreError> {
    Ok((
        out.owner
            .as_deref()
            .map(|o| lookup_id(o, "passwd", "user"))
            .transpose()?,
        out.group
            .as_deref()
            .map(|g| lookup_id(g, "group", "group"))
            .transpose()?,
    ))
}

/// The four PEM files of an installed certificate.
#[derive(Debug, Clone)]
pub struct CertificateFiles {
    pub cert_pem: String,
    pub chain_pem: String,
    pub fullchain_pem: String,
    pub key_pem: Secret,
}

pub const CERT_FILE: &str = "cert.pem";
pub const CHAIN_FILE: &str = "chain.pem";
pub const FULLCHAIN_FILE: &str = "fullchain.pem";
pub const KEY_FILE: &str = "privkey.pem";
pub const HISTORY_DIR: &str = ".history";

/// Installs `files` in `out.dir`: the current set is first copied to
/// `.history/<time>/` (keeping `out.keep` versions), then the four files are
/// replaced in one atomic write. Returns the paths written.
pub fn install(out: &OutputConfig, files: &CertificateFiles) -> Result<Vec<PathBuf>, StoreError> {
    let (uid, gid) = output_ids(out)?;
    if !out.dir.exists() {
        ensure_dir(&out.dir, 0o755)?;
    }
    let cert_spec = FileSpec {
        mode: out.cert_mode,
        uid,
        gid,
    };
    let key_spec = FileSpec {
        mode: out.key_mode,
        uid,
        gid,
    };
    let names = [
        (CERT_FILE, cert_spec),
        (CHAIN_FILE, cert_spec),
        (FULLCHAIN_FILE, cert_spec),
        (KEY_FILE, key_spec),
    ];
    if out.keep > 0 && out.dir.join(CERT_FILE).exists() {
        let hist = out
            .dir
            .join(HISTORY_DIR)
            .join(Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string());
        ensure_dir(&hist, 0o700)?;
        let mut old = Vec::new();
        for (name, spec) in names {
            match fs::read(out.dir.join(name)) {
                Ok(data) => old.push((hist.join(name), data, spec)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&out.dir.join(name), "read for history")(e)),
            }
        }
        let writes: Vec<FileWrite<'_>> = old
            .iter()
            .map(|(p, d, s)| FileWrite {
                path: p.clone(),
                data: d,
                spec: *s,
            })
            .collect();
        atomic_write(&writes)?;
        prune_history(&out.dir.join(HISTORY_DIR), out.keep as usize)?;
    }
    let contents: [&[u8]; 4] = [
        files.cert_pem.as_bytes(),
        files.chain_pem.as_bytes(),
        files.fullchain_pem.as_bytes(),
        files.key_pem.expose().as_bytes(),
    ];
    let writes: Vec<FileWrite<'_>> = names
        .iter()
        .zip(contents)
        .map(|((name, spec), data)| FileWrite {
            path: out.dir.join(name),
            data,
            spec: *spec,
        })
        .collect();
    atomic_write(&writes)?;
    Ok(writes.into_iter().map(|w| w.path).collect())
}

fn prune_history(hist: &Path, keep: usize) -> Result<(), StoreError> {
    let mut versions: Vec<PathBuf> = fs::read_dir(hist)
        .map_err(io(hist, "list"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    versions.sort();
    while versions.len() > keep {
        let v = versions.remove(0);
        fs::remove_dir_all(&v).map_err(io(&v, "remove old version"))?;
    }
    sync_dir(hist)
}

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
        match fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data).map_err(|e| StoreError::CorruptJournal {
                path,
                detail: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Journal {
                cert: cert.to_owned(),
                ..Journal::default()
            }),
            Err(e) => Err(io(&path, "read journal")(e)),
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

    fn out(dir: &Path, keep: u32) -> OutputConfig {
        OutputConfig {
            dir: dir.to_owned(),
            owner: None,
            group: None,
            key_mode: 0o640,
            cert_mode: 0o644,
            keep,
        }
    }

    fn files(tag: &str) -> CertificateFiles {
        CertificateFiles {
            cert_pem: format!("cert {tag}"),
            chain_pem: format!("chain {tag}"),
            fullchain_pem: format!("fullchain {tag}"),
            key_pem: Secret::new(format!("key {tag}")),
        }
    }

    #[test]
    fn atomic_write_sets_exact_modes_and_leaves_no_temporaries() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("f");
        write_file(
            &p,
            b"one",
            FileSpec {
                mode: 0o640,
                uid: None,
                gid: None,
            },
        )
        .expect("write");
        write_file(
            &p,
            b"two",
            FileSpec {
                mode: 0o600,
                uid: None,
                gid: None,
            },
        )
        .expect("rewrite");
        assert_eq!(fs::read(&p).expect("read"), b"two");
        assert_eq!(fs::metadata(&p).expect("meta").mode() & 0o777, 0o600);
        let names: Vec<_> = fs::read_dir(d.path())
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn failed_write_keeps_the_old_file_and_cleans_up() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("f");
        write_file(&p, b"old", FileSpec::private()).expect("write");
        // The second target's directory does not exist: the whole set fails, and the
        // first file, already written to its temporary, is not renamed.
        let err = atomic_write(&[
            FileWrite {
                path: p.clone(),
                data: b"new",
                spec: FileSpec::private(),
            },
            FileWrite {
                path: d.path().join("missing/g"),
                data: b"x",
                spec: FileSpec::private(),
            },
        ])
        .expect_err("fails");
        assert!(err.to_string().contains("missing/"), "{err}");
        assert_eq!(fs::read(&p).expect("read"), b"old");
        assert_eq!(fs::read_dir(d.path()).expect("ls").count(), 1);
    }

    #[test]
    fn install_writes_four_files_and_keeps_history() {
        let d = tempfile::tempdir().expect("tempdir");
        let o = out(&d.path().join("www"), 2);
        for i in 0..4 {
            install(&o, &files(&i.to_string())).expect("install");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(
            fs::read_to_string(o.dir.join(CERT_FILE)).expect("cert"),
            "cert 3"
        );
        assert_eq!(
            fs::read_to_string(o.dir.join(KEY_FILE)).expect("key"),
            "key 3"
        );
        assert_eq!(
            fs::metadata(o.dir.join(KEY_FILE)).expect("m").mode() & 0o777,
            0o640
        );
        assert_eq!(
            fs::metadata(o.dir.join(FULLCHAIN_FILE)).expect("m").mode() & 0o777,
            0o644
        );
        let hist: Vec<_> = fs::read_dir(o.dir.join(HISTORY_DIR))
            .expect("ls")
            .flatten()
            .collect();
        assert_eq!(hist.len(), 2, "keep 2 versions");
        let mut versions: Vec<String> = hist
            .iter()
            .map(|e| fs::read_to_string(e.path().join(CERT_FILE)).expect("old cert"))
            .collect();
        versions.sort();
        assert_eq!(versions, ["cert 1", "cert 2"]);
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
