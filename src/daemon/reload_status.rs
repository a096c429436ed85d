//! The outcome of each SIGHUP reload, written where `cas-renewd reload` (the
//! unit's `ExecReload=`) waits for it, so that `systemctl reload` fails when the
//! new configuration is refused.
//!
//! A file rather than a socket: `reload` must work when the new configuration
//! cannot be read at all (so it cannot learn a socket or state directory from
//! it), and systemd already gives both processes of the unit the same
//! `$RUNTIME_DIRECTORY` (`RuntimeDirectory=cas-renewd`). Each outcome carries the
//! daemon's pid and a counter, so a waiter cannot mistake an older one for its own.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::store::{self, FileSpec};

/// The file in the runtime directory.
pub const FILE: &str = "reload.json";
/// The runtime directory when `$RUNTIME_DIRECTORY` is not set (systemd sets it).
pub const DEFAULT_DIR: &str = "/run/cas-renewd";

/// One reload's outcome as the daemon wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadStatus {
    pub pid: u32,
    /// 1 for the daemon's first reload, then one more each time.
    pub generation: u64,
    pub ok: bool,
    /// "configuration reloaded", or why the configuration was refused.
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(
        "{0}: no such directory; the daemon writes its reload outcome there only under the shipped unit (RuntimeDirectory=cas-renewd) or with $RUNTIME_DIRECTORY set"
    )]
    NoDirectory(PathBuf),
    #[error("cannot signal process {pid}: {source}")]
    Signal {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("process {pid} gave no reload outcome within {waited:?}; see its log")]
    Timeout { pid: u32, waited: Duration },
}

/// The runtime directory: `$RUNTIME_DIRECTORY` (its first entry), else [`DEFAULT_DIR`].
pub fn runtime_dir() -> PathBuf {
    std::env::var("RUNTIME_DIRECTORY")
        .ok()
        .and_then(|v| v.split(':').next().map(PathBuf::from))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR))
}

/// The daemon's side: counts reloads and writes each outcome.
#[derive(Debug)]
pub struct Recorder {
    dir: PathBuf,
    generation: u64,
}

impl Recorder {
    pub fn new(dir: PathBuf) -> Self {
        Recorder { dir, generation: 0 }
    }

    /// Writes the outcome (0600: a refusal quotes the configuration file). Without
    /// the directory nobody waits (not under the unit), so nothing is written.
    pub fn record(&mut self, outcome: &Result<(), String>) {
        self.generation += 1;
        if !self.dir.is_dir() {
            return;
        }
        let status = ReloadStatus {
            pid: std::process::id(),
            generation: self.generation,
            ok: outcome.is_ok(),
            message: match outcome {
                Ok(()) => "configuration reloaded".into(),
                Err(e) => e.clone(),
            },
        };
        let written = serde_json::to_vec_pretty(&status)
            .map_err(|e| e.to_string())
            .and_then(|data| {
                store::write_file(&self.dir.join(FILE), &data, FileSpec::private())
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot record the reload outcome; `cas-renewd reload` will time out");
        }
    }
}

/// The last outcome in `dir`, if there is a readable one.
pub fn read(dir: &Path) -> Option<ReloadStatus> {
    let data = store::safe_fs::read_regular(&dir.join(FILE), 64 * 1024).ok()??;
    serde_json::from_slice(&data).ok()
}

/// `cas-renewd reload`: sends SIGHUP to `pid` and waits up to `timeout` for the
/// outcome of that reload.
pub async fn request(pid: u32, dir: &Path, timeout: Duration) -> Result<ReloadStatus, ReloadError> {
    if !dir.is_dir() {
        return Err(ReloadError::NoDirectory(dir.to_owned()));
    }
    let before = read(dir)
        .filter(|s| s.pid == pid)
        .map_or(0, |s| s.generation);
    let target = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| ReloadError::Signal {
            pid,
            source: std::io::Error::other("not a process id"),
        })?;
    rustix::process::kill_process(target, rustix::process::Signal::HUP).map_err(|e| {
        ReloadError::Signal {
            pid,
            source: e.into(),
        }
    })?;
    poll_until(timeout, || {
        read(dir).filter(|s| s.pid == pid && s.generation > before)
    })
    .await
    .ok_or(ReloadError::Timeout {
        pid,
        waited: timeout,
    })
}

/// Calls `f` every 100 ms until it gives a value or `limit` has passed (a
/// command waiting for the daemon's answer in a file).
pub(super) async fn poll_until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if started.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_numbered_and_written_only_where_someone_waits() {
        let d = tempfile::tempdir().expect("tempdir");
        let mut r = Recorder::new(d.path().to_owned());
        r.record(&Ok(()));
        r.record(&Err("config.yaml:3:1: bad".into()));
        let s = read(d.path()).expect("written");
        assert_eq!(
            s,
            ReloadStatus {
                pid: std::process::id(),
                generation: 2,
                ok: false,
                message: "config.yaml:3:1: bad".into()
            }
        );
        let mut nowhere = Recorder::new(d.path().join("absent"));
        nowhere.record(&Ok(()));
        assert!(!d.path().join("absent").exists());
    }

    #[tokio::test]
    async fn a_missing_directory_or_process_fails_at_once() {
        let d = tempfile::tempdir().expect("tempdir");
        let err = request(1, &d.path().join("absent"), Duration::from_secs(5))
            .await
            .expect_err("no directory");
        assert!(matches!(err, ReloadError::NoDirectory(_)), "{err}");
        let err = request(i32::MAX as u32, d.path(), Duration::from_secs(5))
            .await
            .expect_err("no such process");
        assert!(matches!(err, ReloadError::Signal { .. }), "{err}");
    }
}
