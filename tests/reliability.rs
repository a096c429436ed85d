//! Reliability and security figures: a fault soak over 200 certificates, a SIGKILL
//! campaign, secrets in every output, file modes, full disks, and the lock. Each
//! test prints one `figures:` line; the README's "Reliability" section quotes them.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cas_renewd::config::Config;
use cas_renewd::pki::{self, Key};
use cas_renewd::renew::{Outcome, PassOptions};
use common::process::BIN;
use common::{Cert, DaemonProcess, EnvBuilder, TestEnv};
use rand::{Rng, SeedableRng};

/// The account `k`/`s` holding `scenario`, `renewal: { <renewal> }`, and every
/// order under `discover: { keyword: example.com, output_root: <tmp>/out }`;
/// `CAS_RENEWD_LOG` unset (the configuration decides).
fn discovering(scenario: &str, renewal: &str) -> EnvBuilder {
    TestEnv::builder(scenario)
        .key("k", "s")
        .renewal(Some(renewal))
        .extra("discover: { keyword: example.com, output_root: {d}/out }\n")
        .log_env(None)
}

/// Every installed pair under `root`: (directories seen, pairs whose key does not
/// match their certificate, pairs cut between their renames). A set cut between
/// its renames by a kill (see [`install_cut`]) is the one window the design
/// leaves, completed at the next start
/// (`security_fs::a_kill_between_renames_is_repaired_at_start`; the campaign checks
/// every pair after its last run).
fn check_pairs_cut(root: &Path) -> (usize, usize, usize) {
    let (mut seen, mut bad, mut cut) = (0, 0, 0);
    let Ok(entries) = std::fs::read_dir(root) else {
        return (0, 0, 0);
    };
    for e in entries.flatten() {
        let (Ok(cert), Ok(key)) = (
            std::fs::read_to_string(e.path().join("cert.pem")),
            std::fs::read_to_string(e.path().join("privkey.pem")),
        ) else {
            continue;
        };
        seen += 1;
        let leaf = pki::read_leaf(&cert).ok();
        let ok = match (&leaf, Key::from_pem(&key)) {
            (Some(l), Ok(k)) => l.spki_sha256 == k.spki_sha256(),
            _ => false,
        };
        if !ok {
            if leaf.is_some_and(|l| install_cut(&e.path(), &l.spki_sha256)) {
                cut += 1;
            } else {
                bad += 1;
            }
        }
    }
    (seen, bad, cut)
}

/// [`check_pairs_cut`] without the cut sets: (directories seen, mismatched pairs).
fn check_pairs(root: &Path) -> (usize, usize) {
    let (seen, bad, _) = check_pairs_cut(root);
    (seen, bad)
}

/// Whether an install in `dir` was cut between its renames: the new certificate is
/// in place and a temporary key file holding its key waits beside it (the key
/// is renamed last).
fn install_cut(dir: &Path, leaf_spki: &str) -> bool {
    std::fs::read_dir(dir).is_ok_and(|d| {
        d.flatten().any(|f| {
            f.file_name()
                .to_string_lossy()
                .starts_with(".privkey.pem.tmp-")
                && std::fs::read_to_string(f.path())
                    .ok()
                    .and_then(|pem| Key::from_pem(&pem).ok())
                    .is_some_and(|k| k.spki_sha256() == leaf_spki)
        })
    })
}

fn renewed_count(root: &Path) -> usize {
    std::fs::read_dir(root)
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_to_string(e.path().join("cert.pem"))
                        .ok()
                        .and_then(|c| pki::read_leaf(&c).ok())
                        .is_some_and(|l| {
                            (l.not_after - chrono::Utc::now().timestamp()) / 86_400 >= 364
                        })
                })
                .count()
        })
        .unwrap_or(0)
}

fn renew_call_figures(state: &serde_json::Value) -> (u64, u64, usize) {
    let calls = state["renew_calls"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let total: u64 = calls.values().filter_map(|v| v.as_u64()).sum();
    let dups: u64 = calls
        .values()
        .filter_map(|v| v.as_u64())
        .map(|n| n.saturating_sub(1))
        .sum();
    (total, dups, calls.len())
}

#[tokio::test(flavor = "multi_thread")]
async fn fault_soak_renews_200_certificates_spending_once_each() {
    let w = discovering(
        "seed: 42\ngenerate: { count: 200, expiring_fraction: 1.0, domain: \"host-{n}.example.com\", algorithm: ECC }\nissuance: { polls_before_issued: 2 }\nrate_limits: { ListUserCertificateOrder: 1000, default: 1000 }\nfaults: { throttle: 0.3, server_error: 0.1, timeout: 0.05, malformed: 0.02, hold: 1500ms }\n",
        // An unclear renew whose order never shows is paid again after the 10 s
        // grace (the ceiling is below it); a duplicate would show in renew_calls.
        "poll_interval: 50ms, poll_max_interval: 100ms, concurrency: 16, unclear_retry_after: 1s",
    )
    .api(", timeout: 1s, max_attempts: 10, rate_limit_per_second: 500")
    .start()
    .await;
    let engine = w.engine();
    let started = Instant::now();
    let mut passes = 0;
    let out = w.path("out");
    while renewed_count(&out) < 200 && passes < 5 {
        passes += 1;
        let r = engine.pass(&PassOptions::default()).await.expect("pass");
        let failed = r
            .certs
            .iter()
            .filter(|c| c.outcome == Outcome::Failed)
            .count();
        println!(
            "pass {passes}: {} certificates, {failed} failed this pass",
            r.certs.len()
        );
    }
    let wall = started.elapsed();
    let state = w.sim_state();
    let (renew_total, dups, sources) = renew_call_figures(&state);
    let (pairs, mismatched) = check_pairs(&out);
    let renewed = renewed_count(&out);
    let metrics = engine.metrics().render();
    let (mut attempts, mut retries) = (0u64, 0u64);
    for l in metrics
        .lines()
        .filter(|l| l.starts_with("cas_renewd_api_requests_total{"))
    {
        let n: u64 = l
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        attempts += n;
        if !l.contains("code=\"OK\"") {
            retries += n;
        }
    }
    println!(
        "figures: fault soak: {renewed}/200 renewed in {passes} pass(es), {:.1} s wall; {attempts} API attempts, {retries} failed attempts retried or reconciled; faults injected {}; renew calls {renew_total} for {sources} source orders, {dups} duplicate; {mismatched} mismatched key/certificate pairs of {pairs}",
        wall.as_secs_f64(),
        state["faults"]
    );
    assert_eq!(renewed, 200);
    assert_eq!(
        dups, 0,
        "exactly one renew call per source order: {}",
        state["renew_calls"]
    );
    assert_eq!(sources, 200);
    assert_eq!(mismatched, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_campaign_loses_nothing_and_spends_once() {
    let w = discovering(
        // Slow issuance (10 polls) and 40 ms per call, so that passes take seconds
        // and the kills land in the middle of real work.
        "generate: { count: 20, expiring_fraction: 1.0, domain: \"c{n}.example.com\", algorithm: ECC }\nissuance: { polls_before_issued: 10 }\nrate_limits: { ListUserCertificateOrder: 1000, default: 1000 }\nfaults: { latency: 40ms }\n",
        // A kill between the journaled intent and the call is an unclear
        // outcome: paid again after the grace, never while its order may exist.
        "poll_interval: 100ms, poll_max_interval: 100ms, concurrency: 4, unclear_retry_after: 1s",
    )
    .log_env(Some("warn"))
    .start()
    .await;
    let once_cmd = || {
        let mut c = w.command(&["once"]);
        c.stdout(Stdio::null()).stderr(Stdio::null());
        c
    };
    let out = w.path("out");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let started = Instant::now();
    let (mut kills, mut mismatch_observations, mut observations, mut cut) = (0, 0, 0, 0);
    let mut runs = 0;
    while kills < 50 {
        runs += 1;
        assert!(
            runs < 500,
            "the campaign should not need {runs} runs for 50 kills"
        );
        let mut child = once_cmd().spawn().expect("spawn");
        let delay = Duration::from_millis(rng.random_range(100..900));
        tokio::time::sleep(delay).await;
        if child.try_wait().expect("poll").is_none() {
            child.kill().expect("SIGKILL");
            kills += 1;
        }
        let _ = child.wait();
        let (seen, bad, cut_now) = check_pairs_cut(&out);
        cut += cut_now;
        observations += seen;
        mismatch_observations += bad;
    }
    let mut finishing_runs = 0;
    loop {
        finishing_runs += 1;
        let o = w.output(once_cmd()).await;
        if o.status.success() && renewed_count(&out) == 20 {
            break;
        }
        assert!(finishing_runs < 10, "not finished after 10 runs");
    }
    let state = w.sim_state();
    let (renew_total, dups, sources) = renew_call_figures(&state);
    let (_, final_bad, final_cut) = check_pairs_cut(&out);
    let lost_keys = (0..20)
        .filter(|n| {
            let j = w.journal_text(&format!("c{n}_example_com"));
            j.contains("key this host does not have") || j.contains("\"phase\": \"rejected\"")
        })
        .count();
    println!(
        "figures: crash campaign: {kills} SIGKILLs at random moments (seed 7) in {runs} runs, then {finishing_runs} clean run(s), {:.1} s; renew calls {renew_total} for {sources} source orders, {dups} duplicate; {lost_keys} lost keys; {mismatch_observations} mismatched pairs in {observations} observations after kills ({cut} installs cut between their renames, completed at the next start); {}/20 renewed",
        started.elapsed().as_secs_f64(),
        renewed_count(&out)
    );
    assert_eq!(dups, 0, "{}", state["renew_calls"]);
    assert_eq!(lost_keys, 0);
    assert_eq!(mismatch_observations, 0);
    assert_eq!(
        (final_bad, final_cut),
        (0, 0),
        "every pair matches at the end"
    );
    assert_eq!(renewed_count(&out), 20);
}

fn text_of(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Middle lines of a PEM body: enough to recognise the key anywhere.
fn pem_fragments(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 40)
        .map(|l| l[8..40].to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_reach_no_log_metric_hook_or_debug_output() {
    let mut findings = Vec::new();
    let mut scanned = 0usize;
    for format in ["text", "json"] {
        // A fresh account per run: the first run's renewals would block the second.
        let w = TestEnv::builder(
            "orders:\n  - { domain: www.example.com, expires_in: 20d }\n  - { domain: api.example.com, expires_in: 10d }\nissuance: { polls_before_issued: 1 }\n",
        )
        .key("k", "sim-secret-value-Q7")
        .credentials_extra(", security_token: sts-token-value-Z9")
        .renewal(Some("poll_interval: 100ms, poll_max_interval: 100ms"))
        .extra("schedule: { cron: \"0 17 3 * * *\", jitter: 0s }\nhooks: { dump: { command: [\"/bin/sh\", \"-c\", \"env > {d}/hook-env\"] } }\ndefaults: { reload: [dump] }\n")
        .extra(&format!("log: {{ format: {format}, level: trace }}\n"))
        .cert(Cert::new(&format!("{format}-www"), "www.example.com").dir("www"))
        .cert(
            Cert::new(&format!("{format}-api"), "api.example.com")
                .dir("api")
                .extra(", key: { algorithm: rsa-2048 }"),
        )
        .metrics()
        .config_mode(0o600)
        .log_env(None)
        .start()
        .await;
        let config = w.config_path();
        // The daemon, at trace level, with secrets in its own environment too.
        let mut daemon = DaemonProcess::spawn(
            &w,
            &[("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "env-secret-value-W3")],
        );
        let metrics = if daemon.wait_ready(200, Duration::from_millis(100)).await {
            daemon.scrape().await
        } else {
            String::new()
        };
        daemon.stop();
        let logs = daemon.log();
        assert!(
            metrics.contains("cas_renewd_renew_orders_total"),
            "scrape happened: {metrics}"
        );
        let hook_env = std::fs::read_to_string(w.path("hook-env"))
            .expect("hook ran and dumped its environment");
        let loaded = Config::load(config).expect("config loads");
        let debug = format!("{loaded:?}");
        let mut secrets: Vec<String> = vec![
            "sim-secret-value-Q7".into(),
            "sts-token-value-Z9".into(),
            "env-secret-value-W3".into(),
        ];
        for sig in w.sim_state()["recent_signatures"]
            .as_array()
            .expect("signatures")
            .iter()
        {
            secrets.push(sig.as_str().expect("sig").to_owned());
        }
        for name in ["www", "api"] {
            let key =
                std::fs::read_to_string(w.path(&format!("out/{name}/privkey.pem"))).expect("key");
            secrets.extend(pem_fragments(&key));
        }
        assert!(
            logs.len() > 10_000,
            "trace logs were written ({} bytes)",
            logs.len()
        );
        for (what, haystack) in [
            ("logs", &logs),
            ("metrics", &metrics),
            ("hook environment", &hook_env),
            ("config Debug", &debug),
        ] {
            scanned += haystack.len();
            for s in &secrets {
                if haystack.contains(s.as_str()) {
                    findings.push(format!("{format}: {what} contains {s:?}"));
                }
            }
            if what != "config Debug" && haystack.to_ascii_lowercase().contains("authorization") {
                findings.push(format!("{format}: {what} mentions an Authorization header"));
            }
        }
        assert!(
            !hook_env.contains("ALIBABA_CLOUD_"),
            "hook environment: {hook_env}"
        );
        println!(
            "figures: secrets ({format}): scanned {} bytes of trace logs, {} of metrics, {} of hook environment, {} of config Debug for {} secret strings",
            logs.len(),
            metrics.len(),
            hook_env.len(),
            debug.len(),
            secrets.len()
        );
    }
    println!(
        "figures: secrets: {scanned} bytes scanned, {} findings",
        findings.len()
    );
    assert!(findings.is_empty(), "{findings:#?}");
}

#[test]
fn key_files_never_exist_with_a_wider_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_owned();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let root = root.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut looks, mut wide) = (0u64, 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
                    if let Ok(m) = e.metadata() {
                        looks += 1;
                        if m.permissions().mode() & 0o077 != 0 {
                            wide += 1;
                        }
                    }
                }
            }
            (looks, wide)
        })
    };
    for i in 0..2000 {
        cas_renewd::store::write_file(
            &root.join(format!("k{}.key", i % 7)),
            b"-----BEGIN PRIVATE KEY-----\n",
            cas_renewd::store::FileSpec::private(),
        )
        .expect("write");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (looks, wide) = watcher.join().expect("watcher");
    println!(
        "figures: key modes: 2000 key writes, {looks} observations of files in flight, {wide} with a mode wider than 0600"
    );
    assert_eq!(wide, 0);
    assert!(looks > 0);
}

#[test]
fn a_config_holding_a_readable_secret_gets_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("c.yaml");
    std::fs::write(&cfg, "credentials: { access_key_id: a, access_key_secret: b }\ncertificates: [ { name: www, domain: www.example.com } ]\n").expect("write");
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let check = || {
        Command::new(BIN)
            .arg("--config")
            .arg(&cfg)
            .arg("check-config")
            .output()
            .expect("runs")
    };
    let o = check();
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("warning:") && err.contains("readable by group or others (mode 0644)"),
        "{err}"
    );
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let o = check();
    assert!(!String::from_utf8_lossy(&o.stderr).contains("warning"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_keeps_the_previous_files_and_the_journal_consistent() {
    let w = discovering(
        "orders:\n  - { domain: www.example.com, expires_in: 40d }\nissuance: { polls_before_issued: 1 }\n",
        "poll_interval: 100ms, poll_max_interval: 100ms",
    )
    .start()
    .await;
    let first = w.once().await;
    assert!(first.status.success(), "{}", text_of(&first));
    let out = w.path("out/www.example.com");
    let before: Vec<Vec<u8>> = ["cert.pem", "privkey.pem", "fullchain.pem"]
        .iter()
        .map(|f| std::fs::read(out.join(f)).expect("old"))
        .collect();
    w.sim.advance(Duration::from_secs(15 * 86_400));
    // The disk is "full" for the output's key file: the install fails as a whole.
    let failed = w
        .run_with_env(&["once"], &[("CAS_RENEWD_FAULT_WRITE", "privkey.pem")])
        .await;
    assert_eq!(failed.status.code(), Some(1), "{}", text_of(&failed));
    assert!(
        text_of(&failed).contains("os error 28"),
        "{}",
        text_of(&failed)
    );
    let after: Vec<Vec<u8>> = ["cert.pem", "privkey.pem", "fullchain.pem"]
        .iter()
        .map(|f| std::fs::read(out.join(f)).expect("still there"))
        .collect();
    assert_eq!(before, after, "previous files untouched");
    let journal = w.journal_text("www_example_com");
    assert!(
        journal.contains("\"phase\": \"issued\""),
        "resumes at install: {journal}"
    );
    // The journal itself cannot be written: the renewal stops before spending.
    let ok = w.once().await;
    assert!(ok.status.success(), "{}", text_of(&ok));
    assert_eq!(check_pairs(&w.path("out")), (1, 0));
    assert_eq!(renewed_count(&w.path("out")), 1);
    assert_eq!(w.renew_calls(), serde_json::json!({ "100001": 1 }));
    println!(
        "figures: full disk: install refused with ENOSPC, 3/3 previous files byte-identical, journal at issued, resumed with 1 renew call in total"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_journal_that_cannot_be_written_stops_before_spending() {
    let w = discovering(
        "orders:\n  - { domain: www.example.com, expires_in: 20d }\n",
        "poll_interval: 100ms",
    )
    .start()
    .await;
    let o = w
        .run_with_env(&["once"], &[("CAS_RENEWD_FAULT_WRITE", "/journal/")])
        .await;
    assert_eq!(o.status.code(), Some(1), "{}", text_of(&o));
    assert!(
        common::no_renew_calls(&w.sim_state()),
        "no renew call without a journal"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_instance_on_the_same_state_dir_refuses_to_start() {
    let w = discovering(
        "orders:\n  - { domain: www.example.com, expires_in: 200d }\n",
        "poll_interval: 100ms",
    )
    .metrics()
    .start()
    .await;
    let mut daemon = DaemonProcess::spawn(&w, &[]);
    daemon.wait_listening(100, Duration::from_millis(50)).await;
    let second = w.once().await;
    daemon.stop();
    assert_eq!(second.status.code(), Some(1), "{}", text_of(&second));
    assert!(
        text_of(&second).contains("another cas-renewd is running on state directory"),
        "{}",
        text_of(&second)
    );
}
