//! Unit tests of `status`: the table, the offline plan, row health, the summary.

use super::*;
use crate::store::PhaseName;

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
        health: Health::Ok,
        problem: String::new(),
        source: "disk",
        fleet: None,
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

#[test]
fn the_last_error_shows_escaped_on_a_line_of_its_own() {
    let mut r = row("www", "ok");
    r.last_error = Some("InvalidParameter: \x1b]0;owned\x07\nforged line\u{202e}".into());
    let t = table(&[r]);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines.len(), 3, "{t}");
    assert!(!t.chars().any(|c| c.is_control() && c != '\n'), "{t:?}");
    assert!(!t.contains('\u{202e}'), "{t:?}");
    assert!(
        lines[2]
            .trim_start()
            .starts_with("last error: InvalidParameter: \\x1b]0;owned\\x07\\nforged line"),
        "{t}"
    );
}

fn journal(phase: PhaseName) -> Journal {
    Journal {
        cert: "www".into(),
        phase: Phase::example(phase, crate::ids::OrderId::new(42)),
        ..Journal::default()
    }
}

#[test]
fn offline_the_next_action_comes_from_the_journal_and_the_expiry() {
    let month = Duration::from_secs(30 * 86_400);
    let idle = journal(PhaseName::Idle);
    assert_eq!(offline_plan(&idle, Some(200), month).0, "nothing");
    assert_eq!(offline_plan(&idle, Some(20), month).0, "renew");
    assert_eq!(offline_plan(&idle, None, month).0, "install");
    let (a, why) = offline_plan(&journal(PhaseName::OrderCreated), Some(20), month);
    assert_eq!(a, "resume");
    assert!(why.contains("order-created (order 42)"), "{why}");
    let mut pending = journal(PhaseName::ApplicationRequested);
    if let Phase::ApplicationRequested(o) = &mut pending.phase {
        o.pending_application = Some("submit it in the console".into());
    }
    assert_eq!(offline_plan(&pending, Some(20), month).0, "blocked");
    let mut rejected = journal(PhaseName::Rejected);
    rejected.last_error = Some("wrong key".into());
    let (a, why) = offline_plan(&rejected, Some(20), month);
    assert_eq!(a, "blocked");
    assert!(why.contains("wrong key"), "{why}");
}

#[test]
fn each_row_gets_its_nagios_health() {
    let t = Thresholds::default();
    let now = 1_800_000_000;
    let day = 86_400;
    let ok = row("www", "ok");
    assert_eq!(
        health::of_row(&ok, Some(now + 60 * day), now, t).0,
        Health::Ok
    );
    assert_eq!(
        health::of_row(&ok, Some(now + 15 * day), now, t).0,
        Health::Warning
    );
    assert_eq!(
        health::of_row(&ok, Some(now + 3 * day), now, t).0,
        Health::Critical
    );
    assert_eq!(
        health::of_row(&ok, Some(now - day), now, t).0,
        Health::Critical
    );
    assert_eq!(health::of_row(&ok, None, now, t).0, Health::Critical);
    let mut failed = row("www", "ok");
    failed.last_error = Some("boom".into());
    let (h, why) = health::of_row(&failed, Some(now + 60 * day), now, t);
    assert_eq!(
        (h, why.as_str()),
        (
            Health::Warning,
            "the last attempt failed (retried automatically)"
        )
    );
    let mut blocked = row("www", "ok");
    blocked.next_action = "blocked".into();
    assert_eq!(
        health::of_row(&blocked, Some(now + 60 * day), now, t).0,
        Health::Critical
    );
}

#[test]
fn an_authentication_failure_is_not_called_unreachable() {
    let report = |auth| Report {
        rows: vec![row("www", "ok")],
        last_pass: None,
        cas_error: Some(CasError {
            message: "ListUserCertificateOrder: InvalidAccessKeyId.NotFound: \x1b[31mno".into(),
            auth,
        }),
    };
    let (h, why) = report(true).health();
    assert_eq!(h, Health::Warning);
    assert!(why[0].starts_with("authentication failed"), "{why:?}");
    assert!(!why[0].contains('\x1b'), "{why:?}");
    let (h, why) = report(false).health();
    assert_eq!(h, Health::Unknown);
    assert!(why[0].starts_with("CAS not reachable"), "{why:?}");
    let summary = report(true).summary();
    assert!(
        summary.starts_with("cas-renewd WARNING: 1 certificate; 1 problem\n"),
        "{summary}"
    );
}
