//! The shipped operations files: the systemd unit passes `systemd-analyze verify`
//! with an exposure of at most 2.5, and the alert rules pass `promtool check rules`
//! and their unit tests. Skipped with a reason when the tools are missing, unless
//! CAS_RENEWD_E2E=1.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `tool`, or reports it missing (a failure under CAS_RENEWD_E2E=1).
fn run(tool: &str, args: &[&str], dir: &Path) -> Option<Output> {
    match Command::new(tool).args(args).current_dir(dir).output() {
        Ok(o) => Some(o),
        Err(_) if std::env::var("CAS_RENEWD_E2E").as_deref() == Ok("1") => {
            panic!("CAS_RENEWD_E2E=1 but {tool} is missing; run scripts/test.sh")
        }
        Err(_) => {
            eprintln!("skipped: {tool} is not installed (scripts/test.sh installs it)");
            None
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn systemd_unit_verifies_and_is_hardened() {
    let dir = tempfile::tempdir().expect("tempdir");
    // verify wants the ExecStart binary to exist: point it at the one cargo built.
    let unit = std::fs::read_to_string(root().join("systemd/cas-renewd.service"))
        .expect("unit")
        .replace(
            "/usr/local/bin/cas-renewd",
            env!("CARGO_BIN_EXE_cas-renewd"),
        );
    std::fs::write(dir.path().join("cas-renewd.service"), unit).expect("write unit");
    let Some(v) = run(
        "systemd-analyze",
        &["verify", "cas-renewd.service"],
        dir.path(),
    ) else {
        return;
    };
    assert!(
        v.status.success() && text(&v).trim().is_empty(),
        "systemd-analyze verify:\n{}",
        text(&v)
    );
    let Some(s) = run(
        "systemd-analyze",
        &["security", "--offline=true", "cas-renewd.service"],
        dir.path(),
    ) else {
        return;
    };
    let out = text(&s);
    let exposure: f64 = out
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for cas-renewd.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure line in:\n{out}"));
    println!("systemd-analyze security exposure: {exposure}");
    assert!(exposure <= 2.5, "exposure {exposure} > 2.5:\n{out}");
}

#[test]
fn an_invalid_configuration_ends_systemd_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "state_dir: relative/path\n").expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cas-renewd"))
        .arg("--config")
        .arg(&config)
        .arg("run")
        .output()
        .expect("binary runs");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let unit = std::fs::read_to_string(root().join("systemd/cas-renewd.service")).expect("unit");
    assert!(
        unit.lines()
            .any(|l| l.trim() == "RestartPreventExitStatus=2"),
        "the unit must not restart on exit 2 (invalid configuration)"
    );
}

#[test]
fn alert_rules_check_and_pass_their_unit_tests() {
    let dir = root().join("prometheus");
    let Some(c) = run(
        "promtool",
        &["check", "rules", "cas-renewd.rules.yml"],
        &dir,
    ) else {
        return;
    };
    assert!(c.status.success(), "promtool check rules:\n{}", text(&c));
    assert!(text(&c).contains("SUCCESS: 18 rules found"), "{}", text(&c));
    let rules = std::fs::read_to_string(dir.join("cas-renewd.rules.yml")).expect("rules");
    let tests = std::fs::read_to_string(dir.join("cas-renewd.rules.test.yml")).expect("tests");
    let (fires, silent) = alert_cases(&tests);
    for name in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            fires.contains(name),
            "alert {name} has no promtool unit test where it fires"
        );
        assert!(
            silent.contains(name),
            "alert {name} has no promtool unit test where it stays silent (exp_alerts: [])"
        );
    }
    let Some(t) = run(
        "promtool",
        &["test", "rules", "cas-renewd.rules.test.yml"],
        &dir,
    ) else {
        return;
    };
    assert!(t.status.success(), "promtool test rules:\n{}", text(&t));
}

/// The alert names of the promtool tests: those with an evaluation that expects
/// the alert to fire, and those with one that expects it silent.
fn alert_cases(tests: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let doc: serde_json::Value = serde_saphyr::from_str(tests).expect("the promtool tests parse");
    let (mut fires, mut silent) = (BTreeSet::new(), BTreeSet::new());
    let cases = doc["tests"].as_array().expect("a tests list");
    for eval in cases.iter().flat_map(|t| {
        t["alert_rule_test"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
    }) {
        let name = eval["alertname"].as_str().expect("alertname").to_owned();
        match eval["exp_alerts"].as_array() {
            Some(a) if !a.is_empty() => fires.insert(name),
            _ => silent.insert(name),
        };
    }
    (fires, silent)
}

#[test]
fn alert_cases_tell_firing_from_silent_evaluations() {
    let (fires, silent) = alert_cases(
        "tests:\n  - alert_rule_test:\n      - alertname: A\n        exp_alerts: []\n      - alertname: B\n        exp_alerts:\n          - exp_labels: { severity: warning }\n",
    );
    assert_eq!(fires.into_iter().collect::<Vec<_>>(), ["B"]);
    assert_eq!(silent.into_iter().collect::<Vec<_>>(), ["A"]);
}
