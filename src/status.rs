//! `cas-renewd status`: every managed certificate with its on-disk expiry, order,
//! journal phase, next action, last error and health. It works from disk and the
//! journals alone ([`offline`]); [`online`] also asks CAS for each plan. The exit
//! code is the Nagios code of the worst row ([`health`]).
//!
//! Files: [`health`] (states, thresholds, exit codes), [`last_pass`] (the outcome
//! of the last pass as a whole, kept for offline use), [`fleet`] (the lock and
//! the hosts' versions from etcd, with `fleet:`).

pub mod fleet;
pub mod health;
pub mod last_pass;

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;

use crate::domain::{ControlsEscaped, Escaped};
use crate::pki::CertInfo;
use crate::renew::plan::Plan;
use crate::renew::{
    BlockedTarget, Engine, PassOptions, Plans, installed_discovered, installed_leaf,
};
use crate::settings::CertificateConfig;
use crate::store::{Journal, Phase, StateDir};
pub use health::{Health, Thresholds};
pub use last_pass::LastPass;

/// One managed certificate. Field order is the JSON key order; keep it stable
/// (new fields go at the end).
#[derive(Debug, Clone, Serialize)]
pub struct StatusRow {
    pub name: String,
    pub domain: String,
    pub dir: String,
    /// Expiry of `cert.pem`, RFC 3339; `None` when nothing is installed.
    pub not_after: Option<String>,
    pub days_left: Option<i64>,
    pub serial: Option<String>,
    /// SHA-256 of the installed leaf, upper-case hex.
    pub sha256: Option<String>,
    /// Whether the last `verify.connect` check saw the installed certificate.
    pub served_matches_disk: Option<bool>,
    pub order_id: Option<crate::ids::OrderId>,
    pub phase: String,
    pub reload_pending: Vec<String>,
    pub next_action: String,
    pub reason: String,
    pub last_success: Option<String>,
    pub last_error: Option<String>,
    /// `ok`, `warning`, `critical` or `unknown`.
    pub health: Health,
    /// Why the health is not `ok`; empty when it is.
    pub problem: String,
    /// Where `next_action` comes from: `cas` (asked this time) or `disk` (the
    /// journal and installed files only).
    pub source: &'static str,
    /// With `fleet:`: the lock's holder and each host's installed version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<fleet::FleetRow>,
}

/// What the rows and the last pass say as a whole.
#[derive(Debug, Clone)]
pub struct Report {
    pub rows: Vec<StatusRow>,
    pub last_pass: Option<LastPass>,
    /// `--online` only: why CAS could not be asked, and whether it refused the
    /// credentials (as opposed to not being reachable).
    pub cas_error: Option<CasError>,
}

#[derive(Debug, Clone)]
pub struct CasError {
    pub message: String,
    pub auth: bool,
}

/// From disk and the journals alone: no credentials, no network.
pub fn offline(
    certs: &[CertificateConfig],
    state_dir: &Path,
    renew_before: Duration,
    t: Thresholds,
) -> Report {
    let sd = StateDir::at(state_dir);
    let last = last_pass::read(state_dir);
    let rows = certs
        .iter()
        .map(|c| {
            let j = sd.load_journal(&c.name).unwrap_or_default();
            let leaf = installed_leaf(&c.output);
            let days_left = leaf
                .as_ref()
                .map(|l| whole_days(l.not_after - Utc::now().timestamp()));
            let (action, reason) = match last.as_ref().and_then(|l| l.blocked_reason(&c.name)) {
                Some(why) => ("blocked".to_owned(), why.to_owned()),
                None => offline_plan(&j, days_left, renew_before),
            };
            cert_row(c, &j, leaf, action, reason, "disk", t)
        })
        .collect::<Vec<_>>();
    // Blocked discovered domains have no configuration and no journal: the last
    // pass is all that knows them.
    let unlisted: Vec<StatusRow> = last
        .iter()
        .flat_map(|l| &l.blocked)
        .filter(|b| !rows.iter().any(|r| r.name == b.name))
        .map(|b| {
            let mut row = blocked_row(BlockedTarget {
                name: b.name.clone(),
                domain: b.domain.clone(),
                dir: b.dir.clone().into(),
                reason: b.reason.clone(),
            });
            row.source = "disk";
            row
        })
        .collect();
    Report {
        rows: rows.into_iter().chain(unlisted).collect(),
        last_pass: last,
        cas_error: None,
    }
}

/// What the next pass would do, judged from the journal and the installed
/// certificate only (the planner proper needs the orders from CAS).
fn offline_plan(j: &Journal, days_left: Option<i64>, renew_before: Duration) -> (String, String) {
    let due_days = i64::try_from(renew_before.as_secs() / 86_400).unwrap_or(i64::MAX);
    let order = j
        .phase
        .new_order_id()
        .map(|o| format!(" (order {o})"))
        .unwrap_or_default();
    let phase = j.phase.name();
    match &j.phase {
        Phase::Rejected(_) => (
            "blocked".into(),
            format!(
                "the last renewal was refused: {}; check it, then run `cas-renewd renew --cert {} --force`",
                j.last_error.as_deref().unwrap_or("no reason recorded"),
                j.cert
            ),
        ),
        Phase::Idle | Phase::Installed => match days_left {
            None => ("install".into(), "nothing is installed yet".into()),
            Some(d) if d <= due_days => (
                "renew".into(),
                format!("{d} day(s) left, within renewal.renew_before"),
            ),
            Some(_) if !j.reload_pending.is_empty() => (
                "rerun-reload".into(),
                format!(
                    "the installed certificate still needs its reload ({})",
                    j.reload_pending.join(", ")
                ),
            ),
            Some(d) => ("nothing".into(), format!("{d} day(s) left")),
        },
        p if p.pending_application().is_some() => (
            "blocked".into(),
            format!(
                "a renewal at phase {}{order} waits for its application: {}",
                phase.as_str(),
                p.pending_application().unwrap_or_default()
            ),
        ),
        p if p.unclear_since().is_some() => (
            "blocked".into(),
            format!(
                "a paid call at phase {}{order} has an unclear outcome: check the CAS console, see last_error",
                phase.as_str()
            ),
        ),
        _ => (
            "resume".into(),
            format!("a renewal is in flight at phase {}{order}", phase.as_str()),
        ),
    }
}

/// Reads disk and journals and asks CAS for the plan; when CAS cannot be asked
/// the rows are those of [`offline`] and `cas_error` says why.
pub async fn online(engine: &Engine, t: Thresholds) -> Report {
    let cfg = engine.config();
    let (
        Plans {
            certs: plans,
            blocked,
        },
        cas_error,
    ) = plans_or_error(engine).await;
    if let Some(err) = cas_error {
        let mut certs = cfg.certificates.clone();
        certs.extend(installed_discovered(cfg));
        return Report {
            cas_error: Some(err),
            ..offline(&certs, &cfg.state_dir, cfg.renewal.renew_before, t)
        };
    }
    let sd = StateDir::at(&cfg.state_dir);
    let mut certs: Vec<_> = plans.iter().map(|(c, _)| c.clone()).collect();
    if certs.is_empty() {
        certs = cfg.certificates.clone();
    }
    let rows = certs
        .iter()
        .map(|c| {
            let j = sd.load_journal(&c.name).unwrap_or_default();
            let plan = plans
                .iter()
                .find(|(pc, _)| pc.name == c.name)
                .map(|(_, p)| p);
            let (action, reason) = plan.map_or_else(
                || ("unknown".into(), "not in this pass's plan".into()),
                |p| (action_name(p), p.reason.clone()),
            );
            cert_row(c, &j, installed_leaf(&c.output), action, reason, "cas", t)
        })
        .chain(blocked.into_iter().map(blocked_row))
        .collect();
    Report {
        rows,
        last_pass: last_pass::read(&cfg.state_dir),
        cas_error: None,
    }
}

/// This pass's plans, or none and why CAS could not be asked.
async fn plans_or_error(engine: &Engine) -> (Plans, Option<CasError>) {
    let err = |e: crate::renew::EngineError| CasError {
        auth: last_pass::is_auth_failure(&e),
        message: e.to_string(),
    };
    match engine.inventory().await {
        Ok(orders) => match engine.plans(&orders, &PassOptions::default()) {
            Ok(p) => (p, None),
            Err(e) => (Plans::default(), Some(err(e))),
        },
        Err(e) => (Plans::default(), Some(err(e.into()))),
    }
}

fn action_name(p: &Plan) -> String {
    serde_json::to_value(&p.action)
        .ok()
        .and_then(|v| v["action"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Whole days in `secs` (rounded down, so a certificate with 23 hours left has 0).
fn whole_days(secs: i64) -> i64 {
    secs.div_euclid(86_400)
}

/// The row of a managed certificate: its installed leaf and journal, and the
/// next action with its reason.
fn cert_row(
    c: &CertificateConfig,
    j: &Journal,
    leaf: Option<CertInfo>,
    next_action: String,
    reason: String,
    source: &'static str,
    t: Thresholds,
) -> StatusRow {
    let now = Utc::now().timestamp();
    let mut row = StatusRow {
        name: c.name.clone(),
        domain: c.domain.clone(),
        dir: c.output.dir.display().to_string(),
        not_after: leaf.as_ref().map(|l| l.not_after_rfc3339()),
        days_left: leaf.as_ref().map(|l| whole_days(l.not_after - now)),
        serial: leaf.as_ref().map(|l| l.serial_hex.clone()),
        sha256: leaf.as_ref().map(|l| l.sha256.clone()),
        served_matches_disk: c
            .verify
            .as_ref()
            .and(j.served_sha256.as_ref())
            .map(|served| leaf.as_ref().is_some_and(|l| &l.sha256 == served)),
        order_id: j.order_id(),
        phase: j.phase.name().as_str().to_owned(),
        reload_pending: j.reload_pending.clone(),
        next_action,
        reason,
        last_success: j.last_success.map(|t| t.to_rfc3339()),
        last_error: j.last_error.clone(),
        health: Health::Ok,
        problem: String::new(),
        source,
        fleet: None,
    };
    (row.health, row.problem) = health::of_row(&row, leaf.map(|l| l.not_after), now, t);
    row
}

/// The row of a discovered domain that is blocked: nothing installed, no journal.
fn blocked_row(b: BlockedTarget) -> StatusRow {
    StatusRow {
        name: b.name,
        domain: b.domain,
        dir: b.dir.display().to_string(),
        not_after: None,
        days_left: None,
        serial: None,
        sha256: None,
        served_matches_disk: None,
        order_id: None,
        phase: "-".into(),
        reload_pending: vec![],
        next_action: "blocked".into(),
        reason: b.reason,
        last_success: None,
        last_error: None,
        health: Health::Critical,
        problem: "blocked: needs the operator (see NEXT)".into(),
        source: "cas",
        fleet: None,
    }
}

impl Report {
    /// The health of the whole: the worst row, the last pass, and CAS.
    pub fn health(&self) -> (Health, Vec<String>) {
        let mut worst = Health::Ok;
        let mut why = Vec::new();
        for r in &self.rows {
            if r.health > Health::Ok {
                why.push(format!("{}: {}", Escaped(&r.name), r.problem));
            }
            worst = worst.max(r.health);
        }
        if let Some(lp) = &self.last_pass
            && let Some(e) = &lp.error
        {
            let label = if lp.auth_failure {
                "the last pass failed: authentication"
            } else {
                "the last pass failed"
            };
            why.push(format!("{label} ({})", ControlsEscaped(e)));
            worst = worst.max(Health::Warning);
        }
        if let Some(c) = &self.cas_error {
            if c.auth {
                why.push(format!(
                    "authentication failed (AccessKey and secret, clock skew, STS token or RAM policy): {}",
                    ControlsEscaped(&c.message)
                ));
                worst = worst.max(Health::Warning);
            } else {
                why.push(format!(
                    "CAS not reachable: {}",
                    ControlsEscaped(&c.message)
                ));
                worst = worst.max(Health::Unknown);
            }
        }
        (worst, why)
    }

    /// The first line, as a Nagios plugin prints it, then one line per reason.
    pub fn summary(&self) -> String {
        let (h, why) = self.health();
        let n = self.rows.len();
        let mut s = format!(
            "cas-renewd {}: {n} certificate{}{}\n",
            h.as_str(),
            if n == 1 { "" } else { "s" },
            if why.is_empty() {
                ", all in order".to_owned()
            } else {
                format!("; {}", why.len())
                    + if why.len() == 1 {
                        " problem"
                    } else {
                        " problems"
                    }
            }
        );
        for w in why {
            s.push_str(&format!("  {w}\n"));
        }
        if let Some(lp) = &self.last_pass {
            s.push_str(&format!(
                "  last pass {} {}\n",
                lp.finished_at,
                if lp.ok { "ok" } else { "not ok" }
            ));
        }
        s
    }
}

/// One line per certificate: text that may come from CAS or a hook (the reason)
/// is escaped so that it cannot break the layout.
pub fn table(rows: &[StatusRow]) -> String {
    let mut s = String::new();
    let w = rows
        .iter()
        .map(|r| Escaped(&r.name).to_string().chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    s.push_str(&format!(
        "{:<w$}  {:<8}  {:<22}  {:<10}  {:<9}  {:<15}  {}\n",
        "NAME", "HEALTH", "EXPIRES (UTC)", "DAYS LEFT", "ORDER", "PHASE", "NEXT"
    ));
    for r in rows {
        s.push_str(&format!(
            "{:<w$}  {:<8}  {:<22}  {:<10}  {:<9}  {:<15}  {}: {}\n",
            Escaped(&r.name).to_string(),
            r.health.as_str(),
            r.not_after.as_deref().unwrap_or("-"),
            r.days_left.map_or("-".into(), |d| d.to_string()),
            r.order_id.map_or("-".into(), |o| o.to_string()),
            r.phase,
            r.next_action,
            ControlsEscaped(&r.reason)
        ));
        // The last error often quotes CAS: escaped, on a line of its own.
        if let Some(e) = &r.last_error {
            s.push_str(&format!("{:<w$}  last error: {}\n", "", ControlsEscaped(e)));
        }
        if let Some(f) = &r.fleet {
            s.push_str(&format!("{:<w$}  {}\n", "", ControlsEscaped(&f.line())));
        }
    }
    s
}

#[cfg(test)]
mod tests;
