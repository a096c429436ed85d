//! The only code that writes files: atomic, durable replacement (temp file in the
//! same directory, fsync, rename, fsync of the directory). Submodules: the output
//! layout with its history ([`install`]), the journal and state directory
//! ([`journal`]), safe reads and directory creation ([`safe_fs`]), the repair
//! of what a crash left behind ([`repair`]) and the pruning of finished attempts
//! ([`prune`]).

pub mod faults;
mod install;
mod journal;
pub mod prune;
pub mod repair;
pub mod safe_fs;

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use crate::accounts::{self, AccountError, Kind};

pub use install::{
    CERT_FILE, CHAIN_FILE, CertificateFiles, FULLCHAIN_FILE, HISTORY_DIR, KEY_FILE, OutputSpec,
    check_output_dir, install,
};
pub use journal::{
    Attempt, Following, Issued, Journal, KeyFile, PaidCall, Phase, PhaseName, Publication,
    Rejected, RenewRequested, Stage, StateDir, new_attempt_id,
};
pub use safe_fs::{
    LastLink, MAX_OUTPUT_FILE_BYTES, read_file, read_output_text, read_regular, resolve_under,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The fleet's shared store (etcd) failed or refused a read or write.
    #[error("{0}")]
    Shared(String),
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
    #[error("{path}: is {kind}, not a regular file; refusing to read it")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{path}: more than {max} bytes; refusing to read it")]
    TooLarge { path: PathBuf, size: u64, max: u64 },
    #[error("{path}: is {kind}, not a directory")]
    NotADirectory { path: PathBuf, kind: &'static str },
    #[error(
        "{path}: {why}, so another user could replace the certificate or key; fix: `{fix}` (or set output.allow_insecure_dir: true to accept the risk)"
    )]
    InsecureDir {
        path: PathBuf,
        why: String,
        fix: String,
    },
    #[error("{path}: leads to {target}, outside the directory it must stay in; remove the link")]
    Escapes { path: PathBuf, target: PathBuf },
    #[error(
        "{path}: cert.pem and privkey.pem do not match, and neither the journal, the interrupted install nor .history holds a matching set; install a matching pair by hand"
    )]
    Unrepairable { path: PathBuf },
}

pub(crate) fn io<'a>(
    path: &'a Path,
    op: &'static str,
) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
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
/// never torn; the set as a whole is switched within a few microseconds, and a
/// kill inside that burst is made whole at the next start ([`repair::at_start`]).
///
/// The disk work runs off the async runtime (see [`off_the_runtime`]), so writes
/// of different certificates proceed in parallel.
pub fn atomic_write(files: &[FileWrite<'_>]) -> Result<(), StoreError> {
    off_the_runtime(|| atomic_write_crashing(files, None))
}

/// Runs blocking disk work (writes, fsyncs) without holding up the async runtime:
/// on a multi-thread runtime the calling worker hands its other tasks to a new
/// worker for the duration, so as many writes and fsyncs proceed at once as
/// certificates are being worked on (`renewal.concurrency`), instead of at most one
/// per worker thread. Without a multi-thread runtime it just runs `f`.
pub fn off_the_runtime<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The temporary name [`atomic_write`] writes `name` to before the rename.
fn temp_name(name: &str) -> String {
    format!(".{name}.tmp-{:016x}", rand::random::<u64>())
}

/// Whether `name` is one of [`temp_name`]'s names: what a crash can leave behind.
pub(crate) fn is_temp_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    let Some((base, hex)) = rest.rsplit_once(".tmp-") else {
        return false;
    };
    !base.is_empty()
        && hex.len() == 16
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// [`atomic_write`] with a crash point (see [`faults::crash_point`]) after the first rename.
fn atomic_write_crashing(
    files: &[FileWrite<'_>],
    between_renames: Option<faults::CrashPoint>,
) -> Result<(), StoreError> {
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
            let tmp = dir.join(temp_name(&name));
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(f.spec.mode)
                .custom_flags(libc::O_NOFOLLOW)
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
            faults::slow_fsync();
            file.sync_all().map_err(io(&tmp, "fsync"))?;
        }
        for (i, (tmp, target)) in temps.iter().enumerate() {
            fs::rename(tmp, target).map_err(io(target, "rename into place"))?;
            if i == 0
                && temps.len() > 1
                && let Some(point) = between_renames
            {
                faults::crash_point(point);
            }
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

/// A write that fault injection fails (see [`faults::write_fails`]) fails with
/// ENOSPC, as on a full disk, before anything is written.
fn injected_fault(files: &[FileWrite<'_>]) -> Result<(), StoreError> {
    match files.iter().find(|f| faults::write_fails(&f.path)) {
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

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    faults::slow_fsync();
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "fsync directory"))
}

/// Removes a file and makes the removal durable; a missing file is fine.
pub fn remove_file(path: &Path) -> Result<(), StoreError> {
    off_the_runtime(|| match fs::remove_file(path) {
        Ok(()) => sync_dir(path.parent().unwrap_or(Path::new("/"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path, "remove")(e)),
    })
}

/// Creates `dir` with `mode` (missing parents with 0755, whatever the umask) and
/// sets the mode of an existing `dir` too.
pub fn ensure_dir(dir: &Path, mode: u32) -> Result<(), StoreError> {
    if !fs::metadata(dir).is_ok_and(|m| m.is_dir()) {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            safe_fs::create_dir_tree(parent, 0o755)?;
        }
        safe_fs::make_dir(dir, mode)?;
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(io(dir, "set mode"))
}

/// Looks a user or group up in `/etc/passwd` or `/etc/group`; numeric ids pass.
fn lookup_id(name: &str, kind: Kind) -> Result<u32, StoreError> {
    accounts::lookup(name, kind).map_err(|e| match e {
        AccountError::Unknown { kind, name } => StoreError::UnknownId {
            kind: kind.as_str(),
            name,
            file: kind.file(),
        },
        AccountError::Read { path, source } => io(&path, "read")(source),
    })
}

/// The numeric owner and group an output block asks for.
pub fn output_ids(out: &OutputSpec) -> Result<(Option<u32>, Option<u32>), StoreError> {
    Ok((
        out.owner
            .as_deref()
            .map(|o| lookup_id(o, Kind::User))
            .transpose()?,
        out.group
            .as_deref()
            .map(|g| lookup_id(g, Kind::Group))
            .transpose()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

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

    /// With one worker thread, disk work that blocks must not stop the other tasks:
    /// the write waits for a task that can only run if the worker was handed off.
    #[test]
    fn disk_work_lets_the_runtime_run_other_tasks() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let got = rt.block_on(async move {
            let blocked = tokio::spawn(async move {
                off_the_runtime(|| rx.recv_timeout(std::time::Duration::from_secs(5)))
            });
            // Give the first task the only worker before the second is spawned.
            tokio::task::yield_now().await;
            tokio::spawn(async move { tx.send(()) });
            blocked.await.expect("task")
        });
        assert!(
            got.is_ok(),
            "the other task never ran while the disk work blocked"
        );
        // Outside a runtime it runs in place.
        assert_eq!(off_the_runtime(|| 7), 7);
    }

    #[test]
    fn temp_names_are_recognised_exactly() {
        let n = temp_name("privkey.pem");
        assert!(is_temp_name(&n), "{n}");
        for other in [
            "privkey.pem",
            ".privkey.pem.tmp-123",
            ".privkey.pem.tmp-0123456789abcdeF",
            "privkey.pem.tmp-0123456789abcdef",
            "..tmp-0123456789abcdef",
            ".x.tmp-0123456789abcdef0",
        ] {
            assert!(!is_temp_name(other), "{other}");
        }
    }
}
