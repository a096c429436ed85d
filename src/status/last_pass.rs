//! The outcome of the last pass as a whole, kept in the state directory
//! (`last-pass.json`), so that `status` can show offline a pass that failed before
//! it reached any certificate (wrong secret, CAS unreachable), which no journal
//! records.

use std::path::{Path, PathBuf};

use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::renew::{EngineError, Outcome, PassReport};
use crate::store::{self, FileSpec, safe_fs};

const FILE: &str = "last-pass.json";
/// Far more than the record ever takes; a larger file is not ours.
const MAX_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LastPass {
    /// RFC 3339, UTC.
    pub finished_at: String,
    /// The pass ran over every certificate and none failed (a failed certificate
    /// has its own error in its journal).
    pub ok: bool,
    /// Why the pass as a whole failed.
    pub error: Option<String>,
    /// The failure was CAS refusing the credentials or the RAM policy.
    pub auth_failure: bool,
    /// The certificates the pass left blocked (a journal cannot tell blocked
    /// from failed, and a blocked discovered domain has no journal).
    #[serde(default)]
    pub blocked: Vec<BlockedCert>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlockedCert {
    pub name: String,
    pub domain: String,
    pub dir: String,
    pub reason: String,
}

impl LastPass {
    pub fn of(result: Result<&PassReport, &EngineError>) -> LastPass {
        let (ok, error, auth_failure) = match result {
            Ok(r) => (r.ok(), None, false),
            Err(e) => (false, Some(e.to_string()), is_auth_failure(e)),
        };
        let blocked = result
            .map(|r| {
                r.certs
                    .iter()
                    .filter(|c| c.outcome == Outcome::Blocked)
                    .map(|c| BlockedCert {
                        name: c.name.clone(),
                        domain: c.domain.clone(),
                        dir: c
                            .files
                            .first()
                            .and_then(|f| f.parent())
                            .map(|d| d.display().to_string())
                            .unwrap_or_default(),
                        reason: c.message.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        LastPass {
            finished_at: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
            ok,
            error,
            auth_failure,
            blocked,
        }
    }

    /// Why the last pass left `cert` blocked, if it did.
    pub fn blocked_reason(&self, cert: &str) -> Option<&str> {
        self.blocked
            .iter()
            .find(|b| b.name == cert)
            .map(|b| b.reason.as_str())
    }
}

/// Whether `e` is CAS refusing who we are or what we may do, as opposed to CAS
/// not being reachable.
pub fn is_auth_failure(e: &EngineError) -> bool {
    match e {
        EngineError::Api(a) => a.is_auth_failure(),
        EngineError::Credentials(_) => true,
        _ => false,
    }
}

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// Records `last`; a failure to write is logged, never fatal (the pass is done).
pub fn record(state_dir: &Path, last: &LastPass) {
    let written = serde_json::to_vec_pretty(last)
        .map_err(|e| e.to_string())
        .and_then(|data| {
            store::write_file(&path(state_dir), &data, FileSpec::private())
                .map_err(|e| e.to_string())
        });
    if let Err(e) = written {
        warn!(error = %e, path = %path(state_dir).display(), "cannot record the last pass");
    }
}

/// The recorded last pass; `None` when there is none or it cannot be read.
pub fn read(state_dir: &Path) -> Option<LastPass> {
    let data = safe_fs::read_regular(&path(state_dir), MAX_BYTES).ok()??;
    serde_json::from_slice(&data).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_pass_reads_back_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read(dir.path()), None);
        let e = EngineError::Blocked("x".into());
        let last = LastPass::of(Err(&e));
        record(dir.path(), &last);
        assert_eq!(read(dir.path()), Some(last.clone()));
        assert!(!last.ok && !last.auth_failure);
        std::fs::write(path(dir.path()), b"{not json").expect("write");
        assert_eq!(read(dir.path()), None);
    }
}
