//! V2.0 instance re-issues through the real binary and the simulator: a SIGKILL
//! at every step of a re-issue, a mixed account in one pass, and the acceptance
//! run of issue 12 (an instance with a 2-year service period and 90-day
//! certificates re-issued on schedule on the simulated clock, a real nginx
//! serving each new certificate, then blocked when the service period ends).
//!
//! The binary's clock keeps time with the simulator's through
//! `CAS_RENEWD_CLOCK_OFFSET_FILE` (the `fault-injection` feature), rewritten as
//! the test moves `/_sim/clock`.

mod common;

use std::process::Output;
use std::time::Duration;

use common::nginx::{Site, nginx_available, on_disk, reload_hook, served_settled, start_on};
use common::{Cert, TestEnv, free_port, show};
use serde_json::Value;

const INSTANCE: &str = "cas-ivauto-000001";
const DAY: u64 = 86_400;
const CLOCK_FILE: &str = "clock-offset-ms";
/// The actions of a re-issue, as the closing note counts them.
const ACTIONS: [&str; 7] = [
    "ListUserCertificateOrder",
    "ListInstances",
    "UpdateInstance",
    "ApplyCertificate",
    "GetInstanceDetail",
    "GetUserCertificateDetail",
    "GetTaskAttribute",
];

/// The simulator and the binary's clock, moved together.
struct Clock {
    offset: Duration,
}

impl Clock {
    fn start(w: &TestEnv) -> Clock {
        std::fs::write(w.path(CLOCK_FILE), "0").expect("clock file");
        Clock {
            offset: Duration::ZERO,
        }
    }

    fn advance(&mut self, w: &TestEnv, by: Duration) {
        w.sim.advance(by);
        self.offset += by;
        std::fs::write(w.path(CLOCK_FILE), self.offset.as_millis().to_string())
            .expect("clock file");
    }
}

async fn once(w: &TestEnv) -> Output {
    let clock = w.path(CLOCK_FILE).display().to_string();
    w.run_with_env(&["once"], &[("CAS_RENEWD_CLOCK_OFFSET_FILE", &clock)])
        .await
}

async fn once_crashing_at(w: &TestEnv, point: &str) -> Output {
    let clock = w.path(CLOCK_FILE).display().to_string();
    let o = w
        .run_with_env(
            &["once"],
            &[
                ("CAS_RENEWD_CLOCK_OFFSET_FILE", &clock),
                ("CAS_RENEWD_CRASH_AT", point),
            ],
        )
        .await;
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&format!("crash point {point}")),
        "{point}: {}",
        show(&o)
    );
    o
}

fn calls(w: &TestEnv) -> Vec<u64> {
    ACTIONS.iter().map(|a| w.calls(a)).collect()
}

fn applied(w: &TestEnv, id: &str) -> u64 {
    w.sim_state()["v2"]["apply_certificate_calls"][id]
        .as_u64()
        .unwrap_or(0)
}

/// What a pass called, by action, from the counts before and after it.
fn words(before: &[u64], after: &[u64]) -> String {
    ACTIONS
        .iter()
        .zip(before.iter().zip(after))
        .filter(|(_, (b, a))| a > b)
        .map(|(n, (b, a))| format!("{n}={}", a - b))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The crash points a re-issue passes, from its key to the reload.
const REISSUE_CRASH_POINTS: [&str; 9] = [
    "after-key-ready",
    "after-application-requested",
    "after-application-submitted",
    "after-issued",
    "before-install",
    "between-install-renames",
    "after-install-files",
    "after-installed",
    "after-reload",
];

/// SIGKILL at every step of a re-issue (the instance's certificate installed
/// before), then a restart: one ApplyCertificate per instance in `/_sim/state`,
/// the new pair installed and matching, the journal idle, the hook run.
#[tokio::test(flavor = "multi_thread")]
async fn a_sigkill_at_every_step_of_a_reissue_resumes_with_one_application() {
    let started = std::time::Instant::now();
    for point in REISSUE_CRASH_POINTS {
        let w = TestEnv::builder(
            "instances:\n  - { domain: www.example.com, service_period: 730d, certificate_expires_in: 60d, certificate_validity: 90d }\nv2: { polls_before_issued: 1 }\n",
        )
        .certs([Cert::new("www", "www.example.com")])
        .extra("hooks: { mark: { command: [\"/bin/sh\", \"-c\", \"echo x >> $(dirname $CAS_RENEWD_CERT_PATH)/../reloads\"] } }\ndefaults: { reload: [mark] }\n")
        // A kill after the journal's application-requested leaves no call behind:
        // it is made again after the unclear-call ceiling, within the timeout.
        .renewal(Some(format!("{}, unclear_retry_after: 10s", common::FAST).as_str()))
        .start()
        .await;
        let mut clock = Clock::start(&w);
        let o = once(&w).await;
        assert!(o.status.success(), "{point}: first install\n{}", show(&o));
        let first = on_disk(&w.path("out/www"));
        clock.advance(&w, Duration::from_secs(35 * DAY));
        once_crashing_at(&w, point).await;
        let o = once(&w).await;
        assert!(o.status.success(), "{point}: restart\n{}", show(&o));
        let i = w.installed("www").expect("installed");
        assert!(i.key_matches, "{point}: the key matches the certificate");
        assert_ne!(i.leaf.serial_hex, first.serial_hex, "{point}: re-issued");
        assert_eq!(applied(&w, INSTANCE), 1, "{point}: one ApplyCertificate");
        let j = w.journal_text("www");
        assert!(
            j.contains("\"phase\": \"idle\"") && j.contains("\"reload_pending\": []"),
            "{point}: {j}"
        );
        let reloads = std::fs::read_to_string(w.path("out/reloads")).unwrap_or_default();
        assert!(
            reloads.lines().count() >= 2,
            "{point}: the hook ran after the re-issue"
        );
    }
    println!(
        "figures: {} SIGKILL-and-restart runs over an instance re-issue in {:.1} s, one ApplyCertificate each",
        REISSUE_CRASH_POINTS.len(),
        started.elapsed().as_secs_f64()
    );
}

/// One pass over a V1 order and a V2.0 instance: the order renewed (one paid
/// call), the instance re-issued (one ApplyCertificate).
#[tokio::test(flavor = "multi_thread")]
async fn a_mixed_account_is_handled_in_one_pass() {
    let w = TestEnv::builder(
        "orders:\n  - { domain: www.example.com, expires_in: 20d }\ninstances:\n  - { domain: shop.example.com, service_period: 730d, certificate_expires_in: 20d, certificate_validity: 90d }\nv2: { polls_before_issued: 1 }\n",
    )
    .certs([
        Cert::new("www", "www.example.com"),
        Cert::new("shop", "shop.example.com"),
    ])
    .start()
    .await;
    Clock::start(&w);
    let o = once(&w).await;
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(w.renew_calls(), serde_json::json!({ "100001": 1 }));
    assert_eq!(applied(&w, INSTANCE), 1);
    assert_eq!(w.calls("ListInstances"), 1, "one listing of each kind");
    for name in ["www", "shop"] {
        let i = w.installed(name).expect("installed");
        assert!(
            i.key_matches && i.days_left() > 80,
            "{name}: {}",
            i.days_left()
        );
    }
    let status = w.status_json().await;
    let kinds: Vec<(&str, &str)> = status
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or(""),
                r["kind"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(kinds.contains(&("shop", "instance")), "{status}");
}

/// A re-issue whose application waits for domain validation, through the
/// simulator's DomainValidationList: DNS (a TXT record published through Alibaba
/// Cloud DNS, removed once issued) and file (written under the web root, removed).
#[tokio::test(flavor = "multi_thread")]
async fn a_reissue_publishes_its_validation_through_the_same_step_as_orders() {
    for method in ["dns", "file"] {
        let webroot = tempfile::tempdir().expect("webroot");
        let wr = webroot.path().display().to_string();
        let w = TestEnv::builder(&format!(
            "instances:\n  - {{ domain: www.example.com, service_period: 730d, certificate_expires_in: 20d, certificate_validity: 90d }}\nissuance: {{ polls_before_issued: 1, validation: {method}, webroot: {wr} }}\n"
        ))
        .certs([Cert::new("www", "www.example.com").extra(&format!(
            ", validation: {{ method: {method}, webroot: {wr} }}"
        ))])
        .start()
        .await;
        Clock::start(&w);
        let o = once(&w).await;
        assert!(o.status.success(), "{method}: {}", show(&o));
        let i = w.installed("www").expect("installed");
        assert!(i.key_matches && i.days_left() > 80, "{method}: re-issued");
        assert_eq!(applied(&w, INSTANCE), 1, "{method}");
        let state = w.sim_state();
        if method == "dns" {
            assert_eq!(state["calls"]["AddDomainRecord"], 1, "{method}");
            assert_eq!(state["dns_records"].as_array().map(Vec::len), Some(0));
        } else {
            let file = webroot
                .path()
                .join(".well-known/pki-validation/fileauth.txt");
            assert!(!file.exists(), "validation file removed");
        }
    }
}

/// Issue 12's "done when": a 2-year instance with 90-day certificates, the
/// clock moved 40 days at a time: left alone while its certificate has more than
/// `renew_before` (30 days) left, re-issued once it has less, nginx serving each new certificate, and
/// blocked with "buy a renewal of instance ID" once the service period is over.
#[tokio::test(flavor = "multi_thread")]
async fn an_instance_is_reissued_on_schedule_until_its_service_period_ends() {
    if !nginx_available() {
        return;
    }
    let nginx_dir = tempfile::tempdir().expect("tempdir");
    let prefix = nginx_dir.path().to_owned();
    let port = free_port();
    let hook = reload_hook(&prefix, &prefix.join("nginx.conf"));
    let w = TestEnv::builder(
        "instances:\n  - { domain: www.example.com, service_period: 730d, certificate_expires_in: 90d, certificate_validity: 90d }\nv2: { polls_before_issued: 1 }\n",
    )
    .certs([Cert::new("www", "www.example.com").extra(&format!(
        ", verify: {{ connect: \"127.0.0.1:{port}\" }}"
    ))])
    .extra(&format!(
        "hooks:\n  nginx: {{ command: {hook}, timeout: 20s }}\ndefaults: {{ reload: [nginx] }}\n"
    ))
    .log_env(None)
    .start()
    .await;
    let mut clock = Clock::start(&w);
    // The first pass installs the instance's current certificate; nginx is not up
    // yet, so that reload fails (and is run again by the next pass).
    let _ = once(&w).await;
    let out = w.path("out/www");
    let server = start_on(
        &prefix,
        port,
        &[Site {
            server_name: "www.example.com",
            dir: out.clone(),
        }],
    );
    let addr = server.addr();
    let o = once(&w).await;
    assert!(o.status.success(), "the reload run again: {}", show(&o));
    let mut serial = on_disk(&out).serial_hex;
    assert_eq!(
        served_settled(&addr, "www.example.com", &serial)
            .await
            .serial_hex,
        serial
    );
    let mut reissues = 0;
    let mut blocked = None;
    for round in 1..=20 {
        clock.advance(&w, Duration::from_secs(40 * DAY));
        let before = calls(&w);
        let o = once(&w).await;
        let stdout = String::from_utf8_lossy(&o.stdout).to_string();
        if stdout.contains("buy a renewal of instance") {
            blocked = Some((round, stdout, words(&before, &calls(&w))));
            break;
        }
        assert!(o.status.success(), "round {round}: {}", show(&o));
        let leaf = on_disk(&out);
        if leaf.serial_hex != serial {
            reissues += 1;
            serial = leaf.serial_hex.clone();
            let days = (leaf.not_after
                - (chrono::Utc::now().timestamp() + clock.offset.as_secs() as i64))
                / 86_400;
            println!(
                "day {:>3}: re-issue {reissues} (certificate valid {days} days): {}",
                clock.offset.as_secs() / DAY,
                words(&before, &calls(&w))
            );
            let live = served_settled(&addr, "www.example.com", &serial).await;
            assert_eq!(
                live.serial_hex, serial,
                "round {round}: nginx serves the re-issued certificate"
            );
            assert!(
                stdout.contains("served certificate matches the one on disk"),
                "{stdout}"
            );
        } else {
            assert!(
                stdout.contains("due from"),
                "round {round}: not due yet: {stdout}"
            );
            println!(
                "day {:>3}: not due: {}",
                clock.offset.as_secs() / DAY,
                words(&before, &calls(&w))
            );
        }
        assert_eq!(
            applied(&w, INSTANCE),
            reissues,
            "round {round}: one ApplyCertificate per re-issue"
        );
    }
    drop(server);
    let (round, stdout, called) = blocked.expect("blocked once the service period ended");
    println!("day {:>3}: blocked: {called}", round * 40);
    assert!(reissues >= 3, "re-issued {reissues} times");
    assert!(
        stdout.contains(&format!("buy a renewal of instance {INSTANCE}")),
        "{stdout}"
    );
    for a in ["UpdateInstance", "ApplyCertificate", "GetInstanceDetail"] {
        assert!(!called.contains(a), "no {a} once blocked: {called}");
    }
    let clock_path = w.path(CLOCK_FILE).display().to_string();
    let o = w
        .run_with_env(
            &["status", "--json", "--online"],
            &[("CAS_RENEWD_CLOCK_OFFSET_FILE", &clock_path)],
        )
        .await;
    let status: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&o)));
    assert_eq!(status[0]["kind"], "instance", "{status}");
    assert_eq!(status[0]["instance_id"], INSTANCE, "{status}");
    assert!(status[0]["service_end"].is_string(), "{status}");
    println!(
        "figures: {reissues} re-issues, {} ApplyCertificate calls",
        applied(&w, INSTANCE)
    );
}
