//! `cas-renewd doctor` (issue 17, item 2), real binary vs simulator: a healthy
//! setup passes with no paid call, a RAM policy that denies each read action in
//! turn fails that permission with the statement to add, a skewed clock and an
//! unreachable endpoint fail with their fix, and `--json` keeps its contract.

mod common;

use common::{Cert, TestEnv, show};
use serde_json::Value;

const ORDERS: &str = "orders:\n  - { domain: www.example.com, expires_in: 200d }\n  - { domain: api.example.com, expires_in: 200d }\n";

/// One certificate validated by DNS (so the Alidns checks run), one by nothing.
async fn setup(scenario_extra: &str) -> TestEnv {
    TestEnv::builder(&format!("{ORDERS}{scenario_extra}"))
        .api(", max_attempts: 2, timeout: 5s")
        .config_mode(0o600)
        .certs([
            Cert::new("www", "www.example.com").extra(", validation: { method: dns }"),
            Cert::new("api", "api.example.com"),
        ])
        .start()
        .await
}

/// Runs `doctor --json`: the exit code and the checks.
async fn doctor(w: &TestEnv) -> (Option<i32>, Vec<Value>, String) {
    let o = w.run(&["doctor", "--json"]).await;
    let checks: Vec<Value> =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&o)));
    for c in &checks {
        assert!(c["check"].is_string() && c["message"].is_string(), "{c}");
        assert!(
            ["ok", "warn", "fail"].contains(&c["status"].as_str().unwrap_or("")),
            "{c}"
        );
    }
    (o.status.code(), checks, show(&o))
}

fn find<'a>(checks: &'a [Value], name: &str) -> &'a Value {
    checks
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {checks:#?}"))
}

fn failed(checks: &[Value]) -> Vec<&str> {
    checks
        .iter()
        .filter(|c| c["status"] == "fail")
        .filter_map(|c| c["check"].as_str())
        .collect()
}

/// Every path under `dir` with its size and modification time.
fn tree(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let m = e.metadata().expect("metadata");
            if m.is_dir() {
                todo.push(e.path());
            }
            out.push((e.path(), m.len(), m.modified().expect("mtime")));
        }
    }
    out.sort();
    out
}

fn paid_calls(w: &TestEnv) -> u64 {
    w.calls("RenewCertificateOrderForPackageRequest")
        + w.calls("CreateCertificateForPackageRequest")
        + w.calls("ApplyCertificate")
        + w.calls("UpdateInstance")
        + w.calls("AddDomainRecord")
        + w.calls("DeleteDomainRecord")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_setup_passes_and_nothing_is_spent_or_written() {
    let w = setup("").await;
    // A first pass installs both (nothing is due: no paid call).
    let o = w.once().await;
    assert!(o.status.success(), "{}", show(&o));
    let before = tree(w.dir());
    let (code, checks, out) = doctor(&w).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(failed(&checks).is_empty(), "{out}");
    for name in [
        "config",
        "credentials",
        "endpoint",
        "clock (endpoint)",
        "dns endpoint",
        "permission yundun-cert:ListUserCertificateOrder",
        "permission yundun-cert:DescribeCertificateState",
        "permission yundun-cert:GetUserCertificateDetail",
        "permission yundun-cert:ListInstances",
        "permission yundun-cert:DescribePackageState",
        "permission alidns:DescribeDomains",
        "permission alidns:DescribeDomainRecords",
        "inventory (www)",
        "inventory (api)",
        "output (www)",
        "output (api)",
        "state dir",
        "state lock",
    ] {
        assert_eq!(find(&checks, name)["status"], "ok", "{name}: {out}");
    }
    assert!(
        find(&checks, "credentials")["message"]
            .as_str()
            .is_some_and(|m| m.contains("config file")),
        "{out}"
    );
    let unproven = find(&checks, "permissions not proven")["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        unproven.contains("yundun-cert:RenewCertificateOrderForPackageRequest")
            && unproven.contains("alidns:AddDomainRecord"),
        "{unproven}"
    );
    assert!(
        find(&checks, "inventory (www)")["message"]
            .as_str()
            .is_some_and(|m| m.contains("next pass: nothing")),
        "{out}"
    );
    assert_eq!(paid_calls(&w), 0, "doctor never spends or changes");
    assert_eq!(tree(w.dir()), before, "doctor writes nothing");
    assert!(!out.contains(common::SECRET), "no secret in the report");
    // The text report: one line per check, and the same exit status.
    let o = w.run(&["doctor"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("ok    endpoint: "), "{text}");
    assert_eq!(text.lines().count(), checks.len() + 1, "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_that_denies_each_action_in_turn_fails_that_permission_with_its_statement() {
    for (service, action) in [
        ("yundun-cert", "ListUserCertificateOrder"),
        ("yundun-cert", "DescribeCertificateState"),
        ("yundun-cert", "GetUserCertificateDetail"),
        ("yundun-cert", "ListInstances"),
        ("yundun-cert", "DescribePackageState"),
        ("alidns", "DescribeDomains"),
        ("alidns", "DescribeDomainRecords"),
    ] {
        let w = setup(&format!("faults: {{ deny: [{action}] }}\n")).await;
        let (code, checks, out) = doctor(&w).await;
        assert_eq!(code, Some(1), "{action}: {out}");
        let name = format!("permission {service}:{action}");
        let c = find(&checks, &name);
        assert_eq!(c["status"], "fail", "{action}: {out}");
        let m = c["message"].as_str().unwrap_or_default();
        assert!(m.contains("Forbidden.RAM"), "{m}");
        assert!(
            m.contains(&format!(
                r#"{{"Effect": "Allow", "Action": ["{service}:{action}"], "Resource": "*"}}"#
            )),
            "{m}"
        );
        // Only the denied action fails (the inventory needs the listing).
        let mut expected = vec![name.as_str()];
        if action == "ListUserCertificateOrder" {
            expected.extend(["inventory (www)", "inventory (api)"]);
        }
        assert_eq!(failed(&checks), expected, "{action}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_skewed_clock_is_measured_from_the_date_header() {
    // Two minutes: a warning, still passing.
    let w = setup("faults: { clock_offset_seconds: 120 }\n").await;
    let (code, checks, out) = doctor(&w).await;
    assert_eq!(code, Some(0), "{out}");
    let c = find(&checks, "clock (endpoint)");
    assert_eq!(c["status"], "warn", "{out}");
    // Twenty minutes: Alibaba refuses every request; the clock check says why.
    let w = setup("faults: { clock_offset_seconds: -1200 }\n").await;
    let (code, checks, out) = doctor(&w).await;
    assert_eq!(code, Some(1), "{out}");
    let c = find(&checks, "clock (endpoint)");
    assert_eq!(c["status"], "fail", "{out}");
    let m = c["message"].as_str().unwrap_or_default();
    assert!(m.contains("1200 s off") && m.contains("timedatectl"), "{m}");
    let p = find(&checks, "permission yundun-cert:ListUserCertificateOrder");
    assert!(
        p["message"]
            .as_str()
            .is_some_and(|m| m.contains("InvalidTimeStamp.Expired")),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_endpoint_fails_with_the_fix_and_skips_the_api_checks() {
    let w = setup("").await;
    // Port 9 (discard) on loopback: nothing listens there in the test environment.
    let dead = "http://127.0.0.1:9";
    std::fs::write(w.config_path(), w.config_text().replace(&w.sim.url(), dead)).expect("config");
    let (code, checks, out) = doctor(&w).await;
    assert_eq!(code, Some(1), "{out}");
    let c = find(&checks, "endpoint");
    assert_eq!(c["status"], "fail", "{out}");
    assert!(
        c["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot connect") && m.contains("api.endpoint")),
        "{out}"
    );
    assert_eq!(find(&checks, "permissions")["status"], "warn", "{out}");
    assert_eq!(w.calls("ListUserCertificateOrder"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn host_problems_are_named_with_their_fix() {
    let w = TestEnv::builder(ORDERS)
        .config_mode(0o600)
        .certs([Cert::new("www", "www.example.com")
            .extra(", reload: [nginx], verify: { connect: \"127.0.0.1:9\" }")])
        .extra("hooks:\n  nginx: { command: [/nonexistent/nginx, -s, reload] }\n")
        .start()
        .await;
    let (code, checks, out) = doctor(&w).await;
    assert_eq!(code, Some(1), "{out}");
    let hook = find(&checks, "hook (nginx)");
    assert_eq!(hook["status"], "fail", "{out}");
    assert_eq!(find(&checks, "verify (www)")["status"], "fail", "{out}");
    // An open state directory is a failure; a broken configuration ends the report.
    std::fs::create_dir_all(w.path("state")).expect("state");
    std::fs::set_permissions(
        w.path("state"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let (_, checks, out) = doctor(&w).await;
    assert_eq!(find(&checks, "state dir")["status"], "fail", "{out}");
    std::fs::write(w.config_path(), "certificates: [").expect("config");
    let (code, checks, out) = doctor(&w).await;
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(checks.len(), 1, "{out}");
    assert_eq!(checks[0]["check"], "config");
    assert_eq!(checks[0]["status"], "fail");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recording_keeps_request_ids_drops_secrets_and_replays_in_the_simulator() {
    let w = setup("").await;
    let o = w.once().await;
    assert!(o.status.success(), "{}", show(&o));
    let rec = w.path("rec");
    let o = w
        .run(&["doctor", "--json", "--record", rec.to_str().expect("utf-8")])
        .await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let checks: Vec<Value> = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(find(&checks, "record")["status"], "ok", "{}", show(&o));
    let inventory = find(&checks, "inventory (www)")["message"].clone();
    let files: Vec<_> = std::fs::read_dir(&rec)
        .expect("recording")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(files.len() >= 7, "{files:?}");
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        assert!(text.contains("\"RequestId\""), "{}: {text}", f.display());
        assert!(!text.contains(common::SECRET), "{}", f.display());
        assert!(!text.contains("PRIVATE KEY"), "{}", f.display());
    }
    // A simulator with no orders of its own answers with the recorded ones.
    let mut scenario = cas_sim::Scenario::parse(
        &format!(
            "access_key: {{ id: {}, secret: {} }}\n",
            common::KEY_ID,
            common::SECRET
        ),
        std::path::Path::new("replay"),
    )
    .expect("scenario");
    scenario.recording = Some(cas_sim::recording::Recording::load(&rec).expect("loads"));
    let replay = cas_sim::Simulator::start(&scenario, "127.0.0.1:0")
        .await
        .expect("sim");
    std::fs::write(
        w.config_path(),
        w.config_text().replace(&w.sim.url(), &replay.url()),
    )
    .expect("config");
    let (code, checks, out) = doctor(&w).await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        find(&checks, "inventory (www)")["message"],
        inventory,
        "{out}"
    );
}
