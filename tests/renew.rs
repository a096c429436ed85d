//! The renewal engine end to end: the real binary against the simulator, with
//! every validation method, crashes at each journal phase, refused certificates,
//! failing hooks, renewals made elsewhere and dry runs.

mod common;

use std::os::unix::fs::MetadataExt as _;

use cas_renewd::pki::{self, Key};
use common::{Cert, RENEWAL_CRASH_POINTS, TestEnv, show};

/// A simulator with `scenario` and a configuration for `certs`, with up to six
/// attempts per call and `extra` top-level YAML.
async fn world(scenario: &str, certs: &[Cert], extra: &str) -> TestEnv {
    TestEnv::builder(scenario)
        .api(", max_attempts: 6")
        .extra(extra)
        .certs(certs.iter().cloned())
        .start()
        .await
}

/// The installed pair: the leaf and whether the key matches it.
fn installed(w: &TestEnv, name: &str) -> (pki::CertInfo, bool) {
    let i = w.installed(name).expect("cert.pem");
    assert!(
        i.fullchain_starts_with_leaf,
        "fullchain starts with the leaf"
    );
    (i.leaf, i.key_matches)
}

fn days_left(leaf: &pki::CertInfo) -> i64 {
    (leaf.not_after - chrono::Utc::now().timestamp()) / 86_400
}

const WWW_API: &str = "orders:\n  - { domain: www.example.com, expires_in: 20d }\n  - { domain: api.example.com, expires_in: 10d }\n";

async fn full_renewal(issuance: &str, extra_cert: &str) -> TestEnv {
    let w = world(
        &format!("{WWW_API}issuance: {{ polls_before_issued: 2, validation: {issuance} }}\n"),
        &[
            Cert::new("www", "www.example.com").extra(extra_cert),
            Cert::new("api", "api.example.com")
                .extra(&format!(", key: {{ algorithm: rsa-2048 }}{extra_cert}")),
        ],
        "",
    )
    .await;
    let o = w.once().await;
    assert!(o.status.success(), "{}", show(&o));
    // The plan is logged as people read it, not as Rust Debug text.
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(log.contains("action=renew (order 100001)"), "{log}");
    assert!(!log.contains("Renew {"), "{log}");
    for name in ["www", "api"] {
        let (leaf, matches) = installed(&w, name);
        assert!(matches, "{name}: key matches certificate");
        assert!(
            days_left(&leaf) >= 364,
            "{name}: renewed for a year, {} days left",
            days_left(&leaf)
        );
        let dir = w.path(&format!("out/{name}"));
        assert_eq!(
            std::fs::metadata(dir.join("privkey.pem"))
                .expect("m")
                .mode()
                & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(dir.join("cert.pem")).expect("m").mode() & 0o777,
            0o644
        );
        assert!(
            dir.join(".history").exists(),
            "the first installed version went to history"
        );
    }
    assert_eq!(
        w.renew_calls(),
        serde_json::json!({ "100001": 1, "100002": 1 })
    );
    let www_key = std::fs::read_to_string(w.path("out/www/privkey.pem")).expect("key");
    let api_key = std::fs::read_to_string(w.path("out/api/privkey.pem")).expect("key");
    assert!(Key::from_pem(&www_key).is_ok() && Key::from_pem(&api_key).is_ok());
    // ECDSA for www (default), RSA for api.
    assert!(
        pki::read_leaf(&std::fs::read_to_string(w.path("out/api/cert.pem")).expect("c")).is_ok()
    );
    let o = w.once().await;
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(
        w.renew_calls(),
        serde_json::json!({ "100001": 1, "100002": 1 }),
        "a second pass spends nothing"
    );
    w
}

#[tokio::test(flavor = "multi_thread")]
async fn full_renewal_without_validation() {
    let w = full_renewal("none", "").await;
    let state = std::fs::read_to_string(w.path("state/journal/www.json")).expect("journal");
    assert!(state.contains("\"phase\": \"idle\""), "{state}");
}

#[tokio::test(flavor = "multi_thread")]
async fn full_renewal_with_dns_validation_cleans_up_the_record() {
    let w = full_renewal("dns", ", validation: { method: dns }").await;
    let state = w.sim.state();
    assert_eq!(state["calls"]["AddDomainRecord"], 2);
    assert_eq!(
        state["dns_records"].as_array().map(Vec::len),
        Some(0),
        "records deleted after issuance"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn full_renewal_with_file_validation_cleans_up_the_file() {
    let webroot = tempfile::tempdir().expect("webroot");
    let wr = webroot.path().display().to_string();
    let w = world(
        &format!(
            "{WWW_API}issuance: {{ polls_before_issued: 1, validation: file, webroot: {wr} }}\n"
        ),
        &[Cert::new("www", "www.example.com")
            .extra(&format!(", validation: {{ method: file, webroot: {wr} }}"))],
        "",
    )
    .await;
    let o = w.once().await;
    assert!(o.status.success(), "{}", show(&o));
    assert!(installed(&w, "www").1);
    assert!(
        !webroot
            .path()
            .join(".well-known/pki-validation/fileauth.txt")
            .exists(),
        "validation file removed"
    );
    assert_eq!(w.renew_calls(), serde_json::json!({ "100001": 1 }));
}

/// SIGKILL at every crash point of the journal, then a restart: one renew call per
/// source order, the installed key matches the installed certificate, and it is new.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_at_any_phase_resumes_without_spending_twice() {
    for point in RENEWAL_CRASH_POINTS.into_iter().chain(["after-reload"]) {
        let w = world(
            "orders:\n  - { domain: www.example.com, expires_in: 20d }\nissuance: { polls_before_issued: 2 }\n",
            &[Cert::new("www", "www.example.com")],
            "hooks: { mark: { command: [\"/bin/sh\", \"-c\", \"echo x >> $(dirname $CAS_RENEWD_CERT_PATH)/../reloads\"] } }\ndefaults: { reload: [mark] }\n",
        )
        .await;
        w.once_crashing_at(point).await;
        if let Ok(pair) = std::panic::catch_unwind(|| installed(&w, "www")) {
            assert!(
                pair.1,
                "{point}: whatever is on disk after the crash is a matching pair"
            );
        }
        if point == "after-renew-requested" {
            // The intent is journaled but nobody can know whether the call left:
            // an unclear outcome. No order shows, so nothing is paid again before
            // renewal.unclear_retry_after (24 h) unless the operator forces it.
            let o = w.once().await;
            assert_eq!(o.status.code(), Some(1), "{point}: restart\n{}", show(&o));
            assert!(
                String::from_utf8_lossy(&o.stdout).contains("unclear outcome"),
                "{point}: {}",
                show(&o)
            );
            assert_eq!(w.renew_calls(), serde_json::json!({}), "{point}: not paid");
            let o = w.run(&["renew", "--cert", "www", "--force"]).await;
            assert!(o.status.success(), "{point}: forced\n{}", show(&o));
        } else {
            let o = w.once().await;
            assert!(o.status.success(), "{point}: restart\n{}", show(&o));
        }
        let (leaf, matches) = installed(&w, "www");
        assert!(matches, "{point}: key matches certificate");
        assert!(
            days_left(&leaf) >= 364,
            "{point}: new certificate installed"
        );
        assert_eq!(
            w.renew_calls(),
            serde_json::json!({ "100001": 1 }),
            "{point}: exactly one renew call"
        );
        let j = std::fs::read_to_string(w.path("state/journal/www.json")).expect("journal");
        assert!(
            j.contains("\"phase\": \"idle\"") && j.contains("\"reload_pending\": []"),
            "{point}: {j}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_certificate_is_refused_and_the_old_files_stay() {
    for twist in ["wrong_key", "wrong_name", "expired"] {
        let w = world(
            &format!("orders:\n  - {{ domain: www.example.com, expires_in: 20d, issue: {twist} }}\nissuance: {{ polls_before_issued: 0 }}\n"),
            &[Cert::new("www", "www.example.com")],
            "",
        )
        .await;
        let o = w.once().await;
        assert_eq!(o.status.code(), Some(1), "{twist}: {}", show(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("refused"), "{twist}: {out}");
        let (leaf, matches) = installed(&w, "www");
        assert!(matches, "{twist}: the old pair stays");
        assert!(
            days_left(&leaf) <= 20,
            "{twist}: old certificate still installed"
        );
        let again = w.once().await;
        assert_eq!(again.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&again.stdout).contains("--force"),
            "{twist}: {}",
            show(&again)
        );
        assert_eq!(
            w.renew_calls(),
            serde_json::json!({ "100001": 1 }),
            "{twist}: no automatic re-order"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_hook_is_retried_next_pass_without_renewing_again() {
    let w = world(
        "orders:\n  - { domain: www.example.com, expires_in: 20d }\nissuance: { polls_before_issued: 1 }\n",
        &[Cert::new("www", "www.example.com")],
        "",
    )
    .await;
    let flag = w.path("hook-ok");
    let cfg = std::fs::read_to_string(w.config_path()).expect("cfg");
    std::fs::write(
        w.config_path(),
        format!("{cfg}hooks:\n  reload: {{ command: [\"/bin/sh\", \"-c\", \"test -f {} || {{ echo nginx: config broken >&2; exit 1; }}\"] }}\ndefaults: {{ reload: [reload] }}\n", flag.display()),
    )
    .expect("cfg");
    let o = w.once().await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("nginx: config broken"),
        "{}",
        show(&o)
    );
    assert!(
        installed(&w, "www").1,
        "installed despite the failed reload"
    );
    let o = w.once().await;
    assert_eq!(o.status.code(), Some(1), "still failing");
    std::fs::write(&flag, "").expect("flag");
    let o = w.once().await;
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("hook reload (www): ok"),
        "{}",
        show(&o)
    );
    assert_eq!(w.renew_calls(), serde_json::json!({ "100001": 1 }));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renewal_made_in_the_console_is_adopted_not_repeated() {
    let w = world(
        "orders:\n  - { domain: www.example.com, expires_in: 20d, algorithm: ECC }\nissuance: { polls_before_issued: 2 }\n",
        &[Cert::new("www", "www.example.com")],
        "",
    )
    .await;
    // An operator renews in the console first (no CSR: CAS makes the key).
    let console = w.console_renew(100_001).await;
    let o = w.once().await;
    assert!(o.status.success(), "{}", show(&o));
    let (leaf, matches) = installed(&w, "www");
    assert!(
        matches && days_left(&leaf) >= 364,
        "the console's certificate with CAS's key is installed"
    );
    assert_eq!(
        w.renew_calls(),
        serde_json::json!({ "100001": 1 }),
        "only the console's call"
    );
    let j = std::fs::read_to_string(w.path("state/journal/www.json")).expect("journal");
    // Installed and idle: the journal's last order is the adopted one.
    assert!(j.contains(&format!("\"last_order_id\": {console}")), "{j}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_prints_the_plan_and_changes_nothing() {
    let w = world(
        WWW_API,
        &[
            Cert::new("www", "www.example.com"),
            Cert::new("gone", "gone.example.com"),
        ],
        "",
    )
    .await;
    let o = w.run(&["once", "--dry-run"]).await;
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("www")
            && out.contains("install (order 100001)")
            && out.contains("no certificate on disk"),
        "{}",
        show(&o)
    );
    assert!(
        out.contains("gone")
            && out.contains("blocked")
            && out.contains("no order for gone.example.com"),
        "{out}"
    );
    assert_eq!(o.status.code(), Some(1), "gone is blocked: {}", show(&o));
    assert!(!w.path("state").exists(), "no state directory created");
    assert!(!w.path("out").exists(), "no output written");
    only_reads(&w);
}

/// The read calls a dry run may make: the listings (orders and V2.0 instances), the
/// order's certificate (to see whether its key is here) and the resource plans.
const DRY_RUN_READS: [&str; 4] = [
    "ListUserCertificateOrder",
    "ListInstances",
    "DescribeCertificateState",
    "DescribePackageState",
];

/// Asserts the simulator received no call but the dry run's reads.
fn only_reads(w: &TestEnv) {
    let calls = w.sim.state()["calls"].clone();
    let names: Vec<String> = calls
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    assert!(
        names.iter().all(|n| DRY_RUN_READS.contains(&n.as_str())),
        "a dry run makes read calls only: {names:?}"
    );
}

/// Every file and directory under the test's directory, with its size and
/// modification time: what a dry run must leave as it was.
fn tree(w: &TestEnv) -> Vec<(std::path::PathBuf, u64, std::time::SystemTime)> {
    fn walk(
        dir: &std::path::Path,
        out: &mut Vec<(std::path::PathBuf, u64, std::time::SystemTime)>,
    ) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            out.push((
                e.path(),
                m.len(),
                m.modified().expect("mtime on this platform"),
            ));
            if m.is_dir() {
                walk(&e.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(w.dir(), &mut out);
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_of_a_first_run_shows_install_then_renew_as_once_does() {
    let w = world(WWW_API, &[Cert::new("www", "www.example.com")], "").await;
    let before = tree(&w);
    let o = w.run(&["once", "--dry-run"]).await;
    assert!(o.status.success(), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("install (order 100001) -> renew (order 100001)")
            && out.contains("no certificate on disk")
            && out.contains("then: order 100001 is WILLEXPIRED"),
        "{}",
        show(&o)
    );
    only_reads(&w);
    assert_eq!(tree(&w), before, "the dry run changed nothing on disk");
    // The real pass takes the same steps: the install, then one paid renewal.
    let o = w.once().await;
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(w.renew_calls(), serde_json::json!({ "100001": 1 }));
    assert!(w.installed("www").is_some_and(|i| i.days_left() >= 364));
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_blocks_and_exits_1_where_once_does_for_an_order_renewed_elsewhere() {
    let w = world(WWW_API, &[Cert::new("www", "www.example.com")], "").await;
    // Another host renews with its own key: CAS holds no key for the new order.
    let theirs = Key::generate(pki::KeyAlgorithm::EcdsaP256).expect("key");
    let csr = theirs
        .csr_pem("www.example.com", &["www.example.com".to_owned()])
        .expect("csr");
    let console = w.console();
    let id = console
        .renew_certificate_order(100_001, Some(&csr), &[])
        .await
        .expect("renew elsewhere")
        .body
        .order_id;
    let mut issued = false;
    for _ in 0..10 {
        let s = console.describe_certificate_state(id).await.expect("state");
        if s.body.state == cas_renewd::cas::api::CertificateState::Certificate {
            issued = true;
            break;
        }
    }
    assert!(issued, "order {id} issued");
    let before = tree(&w);
    let calls_before = w.renew_calls();
    let o = w.run(&["once", "--dry-run"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("install (order {id}) -> blocked"))
            && out.contains("private key is not available here"),
        "{}",
        show(&o)
    );
    assert_eq!(tree(&w), before, "the dry run changed nothing on disk");
    assert_eq!(w.renew_calls(), calls_before, "no paid call");
    assert_eq!(w.calls("ApplyCertificate"), 0);
    // The real pass blocks the same way, and exits 1 as well.
    let o = w.once().await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("BLOCKED") && out.contains("private key is not available here"),
        "{}",
        show(&o)
    );
    assert_eq!(
        w.renew_calls(),
        calls_before,
        "only the other host's renewal"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_blocks_where_the_quota_guard_would_and_exits_1() {
    let w = world(
        "orders:\n  - { domain: www.example.com, expires_in: 20d }\n  - { domain: api.example.com, expires_in: 20d }\npackages: { geotrust-dv-1-starter: 1 }\n",
        &[
            Cert::new("www", "www.example.com"),
            Cert::new("api", "api.example.com"),
        ],
        "",
    )
    .await;
    let before = tree(&w);
    let o = w.run(&["once", "--dry-run"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let blocked = |s: &str| {
        s.lines()
            .filter(|l| l.contains("-> renew (order") && l.contains("-> blocked"))
            .count()
    };
    assert_eq!(blocked(&out), 1, "one unit, one renewal: {}", show(&o));
    assert!(
        out.contains("no units left in plan geotrust-dv-1-starter"),
        "{out}"
    );
    only_reads(&w);
    assert_eq!(tree(&w), before, "the dry run changed nothing on disk");
    // The real pass spends the one unit and blocks the other certificate.
    let o = w.once().await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert_eq!(w.calls("RenewCertificateOrderForPackageRequest"), 1);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout)
            .matches("BLOCKED")
            .count(),
        1,
        "{}",
        show(&o)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn renew_force_and_status_report_clearly() {
    let w = world(
        "orders:\n  - { domain: api.example.com, expires_in: 200d }\n",
        &[Cert::new("api", "api.example.com")],
        "",
    )
    .await;
    let o = w.once().await;
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("installed"),
        "{}",
        show(&o)
    );
    let o = w.run(&["renew", "--cert", "api", "--force"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("InvalidOrderStatus"),
        "{}",
        show(&o)
    );
    let o = w.run(&["renew", "--cert", "nope"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no certificate named \"nope\""),
        "{}",
        show(&o)
    );
    // The refused `renew --force` is the last error: WARNING (exit 1).
    let o = w.run(&["status", "--json"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(rows[0]["name"], "api");
    assert_eq!(rows[0]["health"], "warning", "{rows}");
    assert_eq!(rows[0]["phase"], "idle");
    assert_eq!(rows[0]["next_action"], "nothing");
    assert!(
        rows[0]["days_left"]
            .as_i64()
            .is_some_and(|d| (198..=200).contains(&d)),
        "{rows}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn key_reuse_keeps_the_installed_key() {
    let w = world(
        "orders:\n  - { domain: www.example.com, expires_in: 40d, algorithm: ECC }\nissuance: { polls_before_issued: 1 }\n",
        &[Cert::new("www", "www.example.com").extra(", key: { algorithm: ecdsa-p256, reuse: true }")],
        "",
    )
    .await;
    let o = w.once().await;
    assert!(o.status.success(), "{}", show(&o));
    let before = std::fs::read_to_string(w.path("out/www/privkey.pem")).expect("key");
    w.sim.advance(std::time::Duration::from_secs(15 * 86_400));
    let o = w.once().await;
    assert!(o.status.success(), "{}", show(&o));
    let (leaf, matches) = installed(&w, "www");
    assert!(matches && days_left(&leaf) >= 364, "renewed");
    let after = std::fs::read_to_string(w.path("out/www/privkey.pem")).expect("key");
    assert_eq!(
        Key::from_pem(&before).expect("before").spki_sha256(),
        Key::from_pem(&after).expect("after").spki_sha256(),
        "the same key was used for the renewal"
    );
    assert_eq!(w.renew_calls(), serde_json::json!({ "100001": 1 }));
}

/// Issue 18: without a reload hook, the keys and chains of finished attempts stayed
/// in the state directory forever. After two renewals only the current attempt's
/// key and chain remain, and they are the installed key's.
#[tokio::test]
async fn old_keys_and_chains_are_pruned_without_a_reload_hook() {
    let w = world(
        "orders:\n  - { domain: www.example.com, expires_in: 20d, algorithm: ECC }\nissuance: { polls_before_issued: 1 }\n",
        &[Cert::new("www", "www.example.com")],
        "",
    )
    .await;
    let files = |sub: &str| -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(w.path(&format!("state/{sub}")))
            .expect("state subdirectory")
            .flatten()
            .map(|e| e.path())
            .collect();
        v.sort();
        v
    };
    for round in 0..2 {
        let o = w.once().await;
        assert!(o.status.success(), "round {round}: {}", show(&o));
        // The next renewal is due 340 days later.
        w.sim.advance(std::time::Duration::from_secs(340 * 86_400));
    }
    assert_eq!(w.calls("RenewCertificateOrderForPackageRequest"), 2);
    // An idle journal names no attempt: every finished key and chain is gone
    // from the state directory; the installed pair lives in the output directory.
    let (keys, issued) = (files("keys"), files("issued"));
    assert!(keys.is_empty(), "{keys:?}");
    assert!(issued.is_empty(), "{issued:?}");
    let installed = std::fs::read_to_string(w.path("out/www/privkey.pem")).expect("key");
    Key::from_pem(&installed).expect("the installed key is intact");
    let history: Vec<_> = std::fs::read_dir(w.path("out/www/.history"))
        .expect("history")
        .flatten()
        .collect();
    assert!(!history.is_empty(), "the previous pair is kept in .history");
}
