//! What a pass reports: each certificate's outcome, each hook's result, the
//! human rendering, and the observer trait through which the engine reports to
//! whatever records it (the Prometheus metrics), so the engine names no recorder.

use std::any::Any;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::discover::BlockedTarget;
use super::plan::{Action, Plan};
use crate::domain::ControlsEscaped;
use crate::settings::CertificateConfig;

/// Receives what the engine does as it does it. Every method has a default that
/// ignores the event, so a test observer implements only what it checks.
pub trait PassObserver: Send + Sync + 'static {
    /// One API request finished (`code` is the error code, or "OK").
    fn api_call(&self, _action: &str, _code: &str, _took: Duration) {}
    /// A paid call (renew or new application) was made for `cert`.
    fn paid_call(&self, _cert: &str) {}
    /// Whether `cert` has a paid call whose outcome is unclear.
    fn unclear_paid_call(&self, _cert: &str, _on: bool) {}
    /// Whether `cert`'s order waits for an application cas-renewd cannot submit.
    fn pending_application(&self, _cert: &str, _on: bool) {}
    /// The state CAS last reported for `cert`'s followed order.
    fn order_state(&self, _cert: &str, _state: &str) {}
    /// The resource plan of `product_code` as this pass read it (`None`: the read
    /// failed), and how many managed certificates are due to spend from it.
    fn package_state(
        &self,
        _product_code: &str,
        _state: Option<&crate::cas::api_apply::PackageState>,
        _due: u32,
    ) {
    }
    /// A discovered domain the engine cannot act on.
    fn blocked(&self, _cert: &str) {}
    /// `cert` comes from a V2.0 instance whose service period ends at `service_end`
    /// (Unix seconds, if CAS gives it) and whose re-issue CAS makes (`auto_reissue`).
    fn instance_service(&self, _cert: &str, _service_end: Option<i64>, _auto_reissue: bool) {}
    /// DescribePackageState answered for `product_code` while acting on `cert`.
    fn package_seen(
        &self,
        _cert: &str,
        _product_code: &str,
        _total: Option<i64>,
        _used: Option<i64>,
    ) {
    }
    /// A pass failed as a whole (no report): the inventory or the state directory.
    fn pass_failed(&self, _error: &str) {}
    /// A pass ended: `certs` were acted on, `report` says how.
    fn pass_done(&self, _certs: &[CertificateConfig], _report: &PassReport) {}
    /// What the fleet's coordination saw (etcd reachable, a lock, an install).
    fn fleet(&self, _event: &crate::fleet::FleetEvent<'_>) {}
    /// For a caller that knows the concrete recorder (`Engine::metrics`).
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

/// An observer that records nothing.
#[derive(Debug, Default)]
pub struct NoObserver;

impl PassObserver for NoObserver {
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

/// How one certificate's pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Nothing needed doing.
    Unchanged,
    /// A renewed certificate was installed (and reloaded, where hooks are configured).
    Renewed,
    /// An existing order's certificate was installed (first install, or a renewal
    /// made elsewhere).
    Installed,
    /// An installed certificate's reload was re-run and succeeded.
    Reloaded,
    /// A step failed; the journal says where to resume.
    Failed,
    /// Needs the operator (see the message).
    Blocked,
    /// Dry run: only planned.
    Planned,
    /// An order is still being processed; the daemon follows it again soon.
    Waiting,
}

#[derive(Debug, Clone, Serialize)]
pub struct CertReport {
    pub name: String,
    pub domain: String,
    pub plan: Plan,
    pub outcome: Outcome,
    pub message: String,
    pub order_id: Option<crate::ids::OrderId>,
    /// Expiry of the certificate on disk after the pass, RFC 3339.
    pub not_after: Option<String>,
    pub previous_not_after: Option<String>,
    pub files: Vec<PathBuf>,
    /// Paid renew calls made for this certificate in this pass.
    pub renew_calls: u32,
    /// Whether the served certificate matched the one on disk (when `verify` is set).
    pub served_matches_disk: Option<bool>,
    /// Dry run: every step the real pass would take, the plan first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Plan>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HookReport {
    pub hook: String,
    pub certs: Vec<String>,
    pub ok: bool,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct PassReport {
    pub certs: Vec<CertReport>,
    pub hooks: Vec<HookReport>,
}

impl PassReport {
    /// True when no certificate failed or is blocked and every hook ran.
    pub fn ok(&self) -> bool {
        self.certs
            .iter()
            .all(|c| !matches!(c.outcome, Outcome::Failed | Outcome::Blocked))
            && self.hooks.iter().all(|h| h.ok)
    }

    /// Where `name`'s report is: a pass reports its certificates in the order of
    /// the pass's list, so at `i`; otherwise (an import's report) found by name. A
    /// search per certificate would be quadratic over a pass of 10,000.
    pub(super) fn index_of(&self, i: usize, name: &str) -> Option<usize> {
        if self.certs.get(i).is_some_and(|r| r.name == name) {
            Some(i)
        } else {
            self.certs.iter().position(|r| r.name == name)
        }
    }
}

impl PassReport {
    /// The certificates whose order CAS has not issued yet.
    pub fn in_progress(&self) -> impl Iterator<Item = &CertReport> {
        self.certs.iter().filter(|c| c.outcome == Outcome::Waiting)
    }

    /// For a command that returns while orders are in progress (`once --wait`):
    /// which ones, and how their renewal continues. `None` when there are none.
    pub fn in_progress_note(&self, waited: Duration) -> Option<String> {
        let waiting: Vec<&CertReport> = self.in_progress().collect();
        if waiting.is_empty() {
            return None;
        }
        let mut s = format!(
            "\n{} certificate(s) still in progress after waiting {}:\n",
            waiting.len(),
            humantime::format_duration(waited)
        );
        for c in waiting {
            s.push_str(&format!(
                "  {}: {}\n",
                crate::domain::Escaped(&c.name),
                ControlsEscaped(&c.message)
            ));
        }
        s.push_str(
            "Nothing is lost and nothing is paid again: the journal holds each order. \
             The running daemon (`cas-renewd run`) follows them on its own; without it, \
             run `cas-renewd once` again later (`--wait` to follow longer).\n",
        );
        Some(s)
    }
}

/// The report line of a blocked discovered domain (a dry run reports it blocked
/// as well: the real pass would).
pub(super) fn blocked_report(b: &BlockedTarget) -> CertReport {
    CertReport {
        name: b.name.clone(),
        domain: b.domain.clone(),
        plan: Plan {
            cert: b.name.clone(),
            action: Action::Blocked,
            reason: b.reason.clone(),
        },
        outcome: Outcome::Blocked,
        message: b.reason.clone(),
        order_id: None,
        not_after: None,
        previous_not_after: None,
        files: vec![],
        renew_calls: 0,
        served_matches_disk: None,
        steps: vec![],
    }
}

/// A dry run's steps as people read them: `install (order 1) -> renew (order 1)`,
/// ending in `FAILED` when the real pass would fail.
fn chain_words(c: &CertReport) -> String {
    let mut s = if c.steps.is_empty() {
        c.plan.action.to_string()
    } else {
        c.steps
            .iter()
            .map(|p| p.action.to_string())
            .collect::<Vec<_>>()
            .join(" -> ")
    };
    if c.outcome == Outcome::Failed {
        s.push_str(" -> FAILED");
    }
    s
}

impl PassReport {
    /// One line per certificate and hook, for people.
    pub fn render(&self, dry_run: bool) -> String {
        let width = self
            .certs
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let mut s = String::new();
        for c in &self.certs {
            let what = if dry_run {
                chain_words(c)
            } else {
                match c.outcome {
                    Outcome::Unchanged => "unchanged",
                    Outcome::Renewed => "renewed",
                    Outcome::Installed => "installed",
                    Outcome::Reloaded => "reloaded",
                    Outcome::Failed => "FAILED",
                    Outcome::Blocked => "BLOCKED",
                    Outcome::Planned => "planned",
                    Outcome::Waiting => "waiting",
                }
                .to_owned()
            };
            // A message may quote CAS or a hook: one line per certificate regardless.
            s.push_str(&format!(
                "{:<width$}  {:<22}  {}\n",
                c.name,
                what,
                ControlsEscaped(&c.message)
            ));
            match c.served_matches_disk {
                Some(true) => s.push_str(&format!(
                    "{:<width$}  served certificate matches the one on disk\n",
                    ""
                )),
                Some(false) => s.push_str(&format!(
                    "{:<width$}  served certificate DIFFERS from the one on disk\n",
                    ""
                )),
                None => {}
            }
        }
        for h in &self.hooks {
            s.push_str(&format!(
                "hook {} ({}): {}\n",
                h.hook,
                h.certs.join(", "),
                if h.ok {
                    "ok".to_owned()
                } else {
                    format!("FAILED: {}", crate::domain::ControlsEscaped(&h.message))
                }
            ));
        }
        s
    }
}
