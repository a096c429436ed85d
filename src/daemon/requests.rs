//! Work a command hands to the running daemon, because the daemon holds the state
//! lock: `renew --cert NAME [--force]` and `import --cert NAME --key FILE`.
//!
//! The command writes `state_dir/requests/<cert>.json` (atomic write, 0600) and
//! sends SIGUSR1 to the daemon, whose pid it reads from `state_dir/daemon.pid`
//! (written by the daemon once it holds the lock) or takes from `--pid`. On
//! SIGUSR1 the daemon claims each request by removing its file, runs it after
//! the pass in progress as a pass of that certificate only, and writes
//! `requests/<cert>.outcome.json` with the request's id, which the command waits
//! for. Removing the file is the one claim: a request the daemon has not claimed
//! when the command stops waiting is withdrawn by the command removing it, so a
//! request runs once or not at all, and a forced renewal pays at most once.
//!
//! The state directory rather than `$RUNTIME_DIRECTORY`: a command run from a
//! shell finds it in the configuration, and it is the directory the lock guards.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::reload_status::poll_until;
use crate::secret::Secret;
use crate::store::{self, FileSpec, StoreError, safe_fs};

/// The daemon's pid file in the state directory.
pub const PID_FILE: &str = "daemon.pid";
/// The requests directory in the state directory.
pub const DIR: &str = "requests";
/// A request larger than this is not one a command wrote.
const MAX_BYTES: u64 = 256 * 1024;
/// How long the daemon has to claim a request before the command withdraws it.
const CLAIM_WITHIN: Duration = Duration::from_secs(30);
/// A request older than this when claimed was left by a command that is gone.
const STALE_AFTER_SECS: i64 = 600;

/// What a request asks for.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "what", rename_all = "kebab-case")]
pub enum What {
    /// `renew --cert NAME [--force]`, following the new order for `wait_secs`.
    Renew { force: bool, wait_secs: u64 },
    /// `import --cert NAME --key FILE`: the key as the command read it.
    Import { key_pem: Secret },
}

/// One request as the command wrote it.
#[derive(Debug, Clone, Deserialize)]
pub struct Request {
    /// Ties the outcome to this request (a random hex id).
    pub id: String,
    pub cert: String,
    /// Unix seconds.
    pub requested_at: i64,
    #[serde(flatten)]
    pub what: What,
}

impl Request {
    pub fn new(cert: &str, what: What) -> Request {
        Request {
            id: store::new_attempt_id(),
            cert: cert.to_owned(),
            requested_at: chrono::Utc::now().timestamp(),
            what,
        }
    }

    /// The file's text. Written by hand because the key is a [`Secret`], which
    /// serializes nowhere else; the file is 0600 under the 0700 state directory,
    /// as the keys of renewals are.
    fn encode(&self) -> Vec<u8> {
        let mut v = serde_json::json!({
            "id": self.id,
            "cert": self.cert,
            "requested_at": self.requested_at,
        });
        let extra = match &self.what {
            What::Renew { force, wait_secs } => {
                serde_json::json!({ "what": "renew", "force": force, "wait_secs": wait_secs })
            }
            What::Import { key_pem } => {
                serde_json::json!({ "what": "import", "key_pem": key_pem.expose() })
            }
        };
        if let (Some(v), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
            v.extend(e);
        }
        v.to_string().into_bytes()
    }
}

/// What the daemon made of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub id: String,
    /// The report as `renew` or `import` prints it.
    pub text: String,
    /// Why the request failed as a whole (no report).
    pub error: Option<String>,
    /// A certificate failed or was blocked (exit 1).
    pub failed: bool,
    /// Nothing failed but the order is still in progress (exit 75).
    pub in_progress: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(
        "another cas-renewd holds the state lock of {0}, but {0}/{PID_FILE} names no running process; give the daemon's pid with --pid"
    )]
    NoPid(PathBuf),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot signal the daemon (pid {pid}): {source}")]
    Signal {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the daemon (pid {pid}) did not take the request within {}; it is withdrawn and nothing was done",
        humantime::format_duration(*.waited)
    )]
    NotTaken { pid: u32, waited: Duration },
    #[error(
        "the daemon (pid {pid}) took the request but gave no outcome within {}; it carries on: see its log and `cas-renewd status`",
        humantime::format_duration(*.waited)
    )]
    NoOutcome { pid: u32, waited: Duration },
    #[error(
        "process {pid} is not cas-renewd (a pid file left by a daemon that was killed, and the number reused?); nothing was sent: give the daemon's pid with --pid"
    )]
    NotTheDaemon { pid: u32 },
}

/// The command name the kernel gives the daemon (the binary's file name).
const DAEMON_COMM: &str = "cas-renewd";

/// Whether `pid` runs this program. A pid file left by a daemon that was killed
/// can name a process that reused the number, and SIGUSR1 ends most programs.
fn runs_cas_renewd(pid: u32) -> bool {
    // /proc is the kernel's, not a file anyone can plant.
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == DAEMON_COMM)
}

fn request_path(state_dir: &Path, cert: &str) -> PathBuf {
    state_dir.join(DIR).join(format!("{cert}.json"))
}

fn outcome_path(state_dir: &Path, cert: &str) -> PathBuf {
    state_dir.join(DIR).join(format!("{cert}.outcome.json"))
}

/// The daemon's side, once it holds the lock: where commands find it.
pub fn write_pid(state_dir: &Path) -> Result<(), StoreError> {
    let pid = std::process::id().to_string();
    store::write_file(
        &state_dir.join(PID_FILE),
        pid.as_bytes(),
        FileSpec::private(),
    )
}

/// The daemon's side, when it stops.
pub fn remove_pid(state_dir: &Path) {
    if let Err(e) = store::remove_file(&state_dir.join(PID_FILE)) {
        tracing::warn!(error = %e, "cannot remove the pid file");
    }
}

/// The pid the daemon wrote, if it names a process.
pub fn read_pid(state_dir: &Path) -> Option<u32> {
    let data = safe_fs::read_regular(&state_dir.join(PID_FILE), 64).ok()??;
    let pid: u32 = std::str::from_utf8(&data).ok()?.trim().parse().ok()?;
    let alive = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .is_some_and(|p| rustix::process::test_kill_process(p).is_ok());
    (alive && runs_cas_renewd(pid)).then_some(pid)
}

/// The daemon's side, on SIGUSR1: every request waiting, each claimed by
/// removing its file (one a command withdrew meanwhile is skipped).
pub fn claim_all(state_dir: &Path) -> Vec<Request> {
    let dir = state_dir.join(DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".json") || name.ends_with(".outcome.json") {
            continue;
        }
        let read = safe_fs::read_regular(&path, MAX_BYTES);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot claim a request; left alone");
                continue;
            }
        }
        let parsed = read
            .map_err(|e| e.to_string())
            .and_then(|d| d.ok_or_else(|| "vanished".to_owned()))
            .and_then(|d| serde_json::from_slice::<Request>(&d).map_err(|e| e.to_string()));
        match parsed {
            Ok(r) if chrono::Utc::now().timestamp() - r.requested_at > STALE_AFTER_SECS => {
                tracing::warn!(cert = %r.cert, "a request older than 10 minutes was left behind; dropped");
            }
            Ok(r) if format!("{}.json", r.cert) != name => {
                tracing::warn!(path = %path.display(), "a request names another certificate than its file; dropped");
            }
            Ok(r) => out.push(r),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "not a request; removed");
            }
        }
    }
    out
}

/// The daemon's side: the outcome where the command waits for it.
pub fn record(state_dir: &Path, cert: &str, outcome: &Outcome) {
    let written = serde_json::to_vec_pretty(outcome)
        .map_err(|e| e.to_string())
        .and_then(|d| {
            store::write_file(&outcome_path(state_dir, cert), &d, FileSpec::private())
                .map_err(|e| e.to_string())
        });
    if let Err(e) = written {
        tracing::warn!(cert, error = %e, "cannot record a request's outcome; the command will time out");
    }
}

fn read_outcome(state_dir: &Path, cert: &str, id: &str) -> Option<Outcome> {
    let data = safe_fs::read_regular(&outcome_path(state_dir, cert), MAX_BYTES).ok()??;
    serde_json::from_slice::<Outcome>(&data)
        .ok()
        .filter(|o| o.id == id)
}

/// The command's side: hands `req` to the daemon `pid` and waits up to `timeout`
/// for its outcome.
pub async fn submit(
    state_dir: &Path,
    pid: u32,
    req: &Request,
    timeout: Duration,
) -> Result<Outcome, RequestError> {
    if !runs_cas_renewd(pid) {
        return Err(RequestError::NotTheDaemon { pid });
    }
    safe_fs::make_dir(&state_dir.join(DIR), 0o700)?;
    let path = request_path(state_dir, &req.cert);
    store::write_file(&path, &req.encode(), FileSpec::private())?;
    let signalled = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| std::io::Error::other("not a process id"))
        .and_then(|p| {
            rustix::process::kill_process(p, rustix::process::Signal::USR1).map_err(Into::into)
        });
    if let Err(source) = signalled {
        store::remove_file(&path)?;
        return Err(RequestError::Signal { pid, source });
    }
    let claim_within = CLAIM_WITHIN.min(timeout);
    let first = poll_until(claim_within, || {
        read_outcome(state_dir, &req.cert, &req.id)
            .map(Some)
            .or_else(|| (!path.exists()).then_some(None))
    })
    .await;
    match first {
        Some(Some(done)) => return Ok(done),
        Some(None) => {}
        // Removed here, it cannot be claimed after: the request never runs. When
        // the removal fails the daemon claimed it just now.
        None => {
            if std::fs::remove_file(&path).is_ok() {
                return Err(RequestError::NotTaken {
                    pid,
                    waited: claim_within,
                });
            }
        }
    }
    poll_until(timeout, || read_outcome(state_dir, &req.cert, &req.id))
        .await
        .ok_or(RequestError::NoOutcome {
            pid,
            waited: timeout,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reads_back_as_written_and_is_claimed_once() {
        let d = tempfile::tempdir().expect("tempdir");
        safe_fs::make_dir(&d.path().join(DIR), 0o700).expect("dir");
        let r = Request::new(
            "www",
            What::Renew {
                force: true,
                wait_secs: 60,
            },
        );
        store::write_file(
            &request_path(d.path(), "www"),
            &r.encode(),
            FileSpec::private(),
        )
        .expect("write");
        let claimed = claim_all(d.path());
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].id, r.id);
        assert!(matches!(
            claimed[0].what,
            What::Renew {
                force: true,
                wait_secs: 60
            }
        ));
        assert!(claim_all(d.path()).is_empty(), "claimed once");
    }

    #[test]
    fn stale_misnamed_and_broken_requests_are_dropped() {
        let d = tempfile::tempdir().expect("tempdir");
        safe_fs::make_dir(&d.path().join(DIR), 0o700).expect("dir");
        let mut old = Request::new(
            "old",
            What::Renew {
                force: true,
                wait_secs: 1,
            },
        );
        old.requested_at -= STALE_AFTER_SECS + 1;
        let other = Request::new(
            "other",
            What::Renew {
                force: true,
                wait_secs: 1,
            },
        );
        for (file, data) in [
            ("old", old.encode()),
            ("misnamed", other.encode()),
            ("broken", b"{".to_vec()),
        ] {
            store::write_file(&request_path(d.path(), file), &data, FileSpec::private())
                .expect("write");
        }
        assert!(claim_all(d.path()).is_empty());
        assert_eq!(
            std::fs::read_dir(d.path().join(DIR)).expect("dir").count(),
            0
        );
    }

    #[test]
    fn an_import_request_keeps_its_key_out_of_debug_text() {
        let r = Request::new(
            "www",
            What::Import {
                key_pem: Secret::new("-----BEGIN PRIVATE KEY-----\nAAAA"),
            },
        );
        assert!(!format!("{r:?}").contains("AAAA"));
        let back: Request = serde_json::from_slice(&r.encode()).expect("parse");
        let What::Import { key_pem } = back.what else {
            panic!("an import");
        };
        assert!(key_pem.expose().ends_with("AAAA"));
    }

    #[tokio::test]
    async fn a_request_nobody_claims_is_withdrawn_and_never_runs() {
        let d = tempfile::tempdir().expect("tempdir");
        // A process named cas-renewd (the kernel names it after the link it was
        // started through) that takes SIGUSR1 and does nothing with it.
        let shell = d.path().join(DAEMON_COMM);
        std::os::unix::fs::symlink("/bin/sh", &shell).expect("link");
        let mut deaf = std::process::Command::new(&shell)
            .args(["-c", "trap '' USR1; sleep 10"])
            .spawn()
            .expect("sh");
        std::thread::sleep(Duration::from_millis(200));
        let r = Request::new(
            "www",
            What::Renew {
                force: true,
                wait_secs: 1,
            },
        );
        let err = submit(d.path(), deaf.id(), &r, Duration::from_secs(1))
            .await
            .expect_err("not claimed");
        let _ = deaf.kill();
        let _ = deaf.wait();
        assert!(matches!(err, RequestError::NotTaken { .. }), "{err}");
        assert!(!request_path(d.path(), "www").exists(), "withdrawn");
        assert!(claim_all(d.path()).is_empty(), "nothing left to run");
    }

    #[tokio::test]
    async fn a_request_to_a_process_that_is_gone_is_withdrawn() {
        let d = tempfile::tempdir().expect("tempdir");
        let r = Request::new(
            "www",
            What::Renew {
                force: true,
                wait_secs: 1,
            },
        );
        let err = submit(d.path(), i32::MAX as u32, &r, Duration::from_secs(1))
            .await
            .expect_err("no such process");
        assert!(matches!(err, RequestError::NotTheDaemon { .. }), "{err}");
        assert!(!request_path(d.path(), "www").exists(), "withdrawn");
    }

    /// A stale pid file naming a process that reused the number: that process is
    /// never signalled (SIGUSR1 would end it) and nothing is left to run.
    #[tokio::test]
    async fn another_program_behind_a_stale_pid_is_never_signalled() {
        let d = tempfile::tempdir().expect("tempdir");
        let mut other = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .expect("sleep");
        store::write_file(
            &d.path().join(PID_FILE),
            other.id().to_string().as_bytes(),
            FileSpec::private(),
        )
        .expect("pid file");
        assert_eq!(read_pid(d.path()), None, "not a cas-renewd pid");
        let r = Request::new(
            "www",
            What::Renew {
                force: true,
                wait_secs: 1,
            },
        );
        let err = submit(d.path(), other.id(), &r, Duration::from_secs(1))
            .await
            .expect_err("not the daemon");
        assert!(matches!(err, RequestError::NotTheDaemon { .. }), "{err}");
        assert!(
            other.try_wait().expect("wait").is_none(),
            "the other program still runs"
        );
        let _ = other.kill();
        let _ = other.wait();
        assert!(claim_all(d.path()).is_empty(), "nothing left to run");
    }
}
