//! `cas-renewd doctor`: a read-only check of a real setup, one line per check (ok,
//! warn or fail, with the fix). It never makes a paid call and never writes: the
//! API is asked only read-only questions, and the host is only looked at (in a
//! fleet, an etcd lease that lapses by itself is the one thing it creates).
//!
//! Files: `network` (endpoint reachability and clock skew), `api` (each API
//! permission and the inventory), `host` (secret files, output directories, hooks,
//! `verify.connect`, the state directory and its lock), `fleet` (with `fleet:` and
//! the `fleet` feature: etcd, a lease, the sealing key), [`record`] (`--record`).

mod api;
#[cfg(feature = "fleet")]
mod fleet;
mod host;
mod network;
pub mod record;

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::cas::credentials::{CredentialsProvider, Environment};
use crate::domain::ControlsEscaped;
use crate::settings::Config;

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One line of the report (`--json`: one object of the array).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub check: String,
    pub status: Status,
    /// What was found and, when not ok, what to do about it.
    pub message: String,
}

impl Check {
    pub fn new(check: impl Into<String>, status: Status, message: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            status,
            message: message.into(),
        }
    }

    fn ok(check: impl Into<String>, message: impl Into<String>) -> Check {
        Check::new(check, Status::Ok, message)
    }

    fn warn(check: impl Into<String>, message: impl Into<String>) -> Check {
        Check::new(check, Status::Warn, message)
    }

    fn fail(check: impl Into<String>, message: impl Into<String>) -> Check {
        Check::new(check, Status::Fail, message)
    }
}

/// True when no check failed (`doctor` exits 0).
pub fn passed(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Fail)
}

/// The report as text: one line per check.
pub fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        out.push_str(&format!(
            "{:<4}  {}: {}\n",
            c.status.as_str(),
            ControlsEscaped(&c.check),
            ControlsEscaped(&c.message)
        ));
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warned = checks.iter().filter(|c| c.status == Status::Warn).count();
    out.push_str(&format!(
        "{} checks: {failed} failed, {warned} warnings\n",
        checks.len()
    ));
    out
}

/// Every check, in order. `loaded` is what loading the configuration at
/// `config_path` gave (the caller loads it: reading the YAML is `config`'s job, above
/// this module); one that did not load ends the report there. Credentials that cannot
/// be found skip the API checks. With `record`, every API answer is saved there
/// (secrets removed).
///
/// Longer than the usual ~80 lines on purpose: it is the report's table of contents,
/// one call per check in the order printed, and reads best in one place.
pub async fn run(
    config_path: &Path,
    loaded: Result<Config, impl std::fmt::Display>,
    env: &Environment,
    record: Option<&Path>,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let cfg = match loaded {
        Ok(c) => {
            checks.push(Check::ok(
                "config",
                format!(
                    "{}: valid ({} certificate(s){})",
                    config_path.display(),
                    c.certificates.len(),
                    if c.discover.is_some() {
                        ", discover on"
                    } else {
                        ""
                    }
                ),
            ));
            c
        }
        Err(e) => {
            checks.push(Check::fail(
                "config",
                format!("{e}; fix the file (`cas-renewd check-config` says the same)"),
            ));
            return checks;
        }
    };
    for w in &cfg.warnings {
        checks.push(Check::warn("config", w.clone()));
    }
    checks.extend(host::secret_files(&cfg, config_path));
    let creds = credentials(&cfg, env, &mut checks).await;
    let reachable = network::endpoints(&cfg, &mut checks).await;
    let recording = match record.map(record::RecordDir::create).transpose() {
        Ok(r) => r,
        Err(e) => {
            checks.push(Check::fail(
                "record",
                format!("{e}; choose another --record directory"),
            ));
            None
        }
    };
    match (creds, reachable) {
        (Some(creds), true) => {
            let recorder = recording.as_ref().map(|r| r.recorder());
            api::checks(&cfg, creds, recorder, &mut checks).await;
        }
        (None, _) => checks.push(Check::warn(
            "permissions",
            "not checked: no usable credentials (see above)",
        )),
        (_, false) => checks.push(Check::warn(
            "permissions",
            "not checked: the API endpoint is unreachable (see above)",
        )),
    }
    if let Some(r) = &recording {
        let (written, errors) = r.summary();
        checks.push(if errors.is_empty() {
            Check::ok(
                "record",
                format!(
                    "{written} answer(s) saved in {} (secrets and private keys removed, request ids kept); `cas-renewd sim --recording {}` replays them",
                    r.dir().display(),
                    r.dir().display()
                ),
            )
        } else {
            Check::fail("record", format!("could not save every answer: {}", errors.join("; ")))
        });
    }
    checks.extend(host::outputs(&cfg));
    checks.extend(host::hooks(&cfg));
    checks.extend(network::verify_targets(&cfg).await);
    checks.extend(host::state_dir(&cfg));
    // A build without the feature refuses `fleet:` when loading, so never gets here.
    #[cfg(feature = "fleet")]
    if let Some(spec) = &cfg.fleet {
        checks.extend(fleet::checks(spec).await);
    }
    checks
}

/// Where the AccessKey comes from, proven by getting one (an ECS role asks the
/// metadata service; nothing is sent to CAS).
async fn credentials(
    cfg: &Config,
    env: &Environment,
    checks: &mut Vec<Check>,
) -> Option<Arc<CredentialsProvider>> {
    let p = match CredentialsProvider::resolve(cfg.credentials.as_ref(), env) {
        Ok(p) => p,
        Err(e) => {
            checks.push(Check::fail(
                "credentials",
                format!("{e}; set `credentials` in the configuration, ALIBABA_CLOUD_ACCESS_KEY_ID/SECRET, a profile in ~/.aliyun/config.json, or an ECS RAM role"),
            ));
            return None;
        }
    };
    match p.get().await {
        Ok(c) => {
            checks.push(Check::ok(
                "credentials",
                format!(
                    "AccessKey {} from {}",
                    api::key_hint(&c.access_key_id),
                    p.origin()
                ),
            ));
            Some(Arc::new(p))
        }
        Err(e) => {
            checks.push(Check::fail(
                "credentials",
                format!("from {}: {e}", p.origin()),
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_passes_unless_a_check_failed() {
        let mut checks = vec![
            Check::ok("config", "valid"),
            Check::warn("permissions", "not proven"),
        ];
        assert!(passed(&checks));
        let text = render(&checks);
        assert!(text.contains("ok    config: valid\n"), "{text}");
        assert!(text.contains("2 checks: 0 failed, 1 warnings"), "{text}");
        checks.push(Check::fail("endpoint", "unreachable\x1b[31m"));
        assert!(!passed(&checks));
        let text = render(&checks);
        assert!(!text.contains('\x1b'), "control characters escaped: {text}");
        let json = serde_json::to_value(&checks).expect("json");
        assert_eq!(json[2]["status"], "fail");
        assert_eq!(json[2]["check"], "endpoint");
    }
}
