//! `cas-renewd status`: every managed certificate with its on-disk expiry, order,
//! journal phase and next action.

use chrono::Utc;
use serde::Serialize;

use crate::config::CertificateConfig;
use crate::domain::{ControlsEscaped, Escaped};
use crate::renew::plan::Plan;
use crate::renew::{BlockedTarget, Engine, PassOptions, Plans, installed_leaf};
use crate::store::StateDir;

/// One managed certificate. Field order is the JSON key order; keep it stable.
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
}

/// Reads disk and journals; asks CAS for the plan, and says so when it cannot.
pub async fn collect(engine: &Engine) -> Vec<StatusRow> {
    let cfg = engine.config();
    let (
        Plans {
            certs: plans,
            blocked,
        },
        api_error,
    ) = plans_or_error(engine).await;
    let mut certs: Vec<_> = plans.iter().map(|(c, _)| c.clone()).collect();
    if certs.is_empty() {
        certs = cfg.certificates.clone();
    }
    let sd = StateDir::at(&cfg.state_dir);
    certs
        .iter()
        .map(|c| {
            let plan = plans
                .iter()
                .find(|(pc, _)| pc.name == c.name)
                .map(|(_, p)| p);
            cert_row(c, &sd, plan, api_error.as_deref())
        })
        .chain(blocked.into_iter().map(blocked_row))
        .collect()
}

/// This pass's plans, or none and why CAS could not be asked.
async fn plans_or_error(engine: &Engine) -> (Plans, Option<String>) {
    match engine.inventory().await {
        Ok(orders) => match engine.plans(&orders, &PassOptions::default()) {
            Ok(p) => (p, None),
            Err(e) => (Plans::default(), Some(e.to_string())),
        },
        Err(e) => (Plans::default(), Some(e.to_string())),
    }
}

/// The row of a managed certificate: its installed leaf and journal, and its
/// `plan` when CAS could be asked (else `api_error` is the reason).
fn cert_row(
    c: &CertificateConfig,
    sd: &StateDir,
    plan: Option<&Plan>,
    api_error: Option<&str>,
) -> StatusRow {
    let leaf = installed_leaf(&c.output);
    let j = sd.load_journal(&c.name).unwrap_or_default();
    StatusRow {
        name: c.name.clone(),
        domain: c.domain.clone(),
        dir: c.output.dir.display().to_string(),
        not_after: leaf.as_ref().map(|l| l.not_after_rfc3339()),
        days_left: leaf
            .as_ref()
            .map(|l| (l.not_after - Utc::now().timestamp()).div_euclid(86_400)),
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
        next_action: plan
            .map(|p| {
                serde_json::to_value(&p.action)
                    .ok()
                    .and_then(|v| v["action"].as_str().map(str::to_owned))
                    .unwrap_or_default()
            })
            .unwrap_or_else(|| "unknown".into()),
        reason: plan
            .map(|p| p.reason.clone())
            .unwrap_or_else(|| format!("CAS not reachable: {}", api_error.unwrap_or_default())),
        last_success: j.last_success.map(|t| t.to_rfc3339()),
        last_error: j.last_error.clone(),
    }
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
        "{:<w$}  {:<22}  {:<10}  {:<9}  {:<15}  {}\n",
        "NAME", "EXPIRES (UTC)", "DAYS LEFT", "ORDER", "PHASE", "NEXT"
    ));
    for r in rows {
        s.push_str(&format!(
            "{:<w$}  {:<22}  {:<10}  {:<9}  {:<15}  {}: {}\n",
            Escaped(&r.name).to_string(),
            r.not_after.as_deref().unwrap_or("-"),
            r.days_left.map_or("-".into(), |d| d.to_string()),
            r.order_id.map_or("-".into(), |o| o.to_string()),
            r.phase,
            r.next_action,
            ControlsEscaped(&r.reason)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, reason: &str) -> StatusRow {
        StatusRow {
            name: name.into(),
            domain: "www.example.com".into(),
            dir: "/out".into(),
            not_after: None,
            days_left: None,
            serial: None,
            sha256: None,
            served_matches_disk: None,
            order_id: Some(crate::ids::OrderId::new(7)),
            phase: "idle".into(),
            reload_pending: vec![],
            next_action: "nothing".into(),
            reason: reason.into(),
            last_success: None,
            last_error: None,
        }
    }

    #[test]
    fn a_multi_line_reason_keeps_one_line_per_certificate() {
        let t = table(&[
            row("www", "CAS said:\nline two\r\x1b[2Jcleared"),
            row("discovered:*.example.com", "ok"),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(!t.contains('\x1b') && !t.contains('\r'), "{t:?}");
        assert!(
            lines[1].ends_with("nothing: CAS said:\\nline two\\r\\x1b[2Jcleared"),
            "{t}"
        );
        let col = lines[0].find("EXPIRES").expect("header");
        assert!(lines[1..].iter().all(|l| l[col..].starts_with("- ")), "{t}");
    }
}
