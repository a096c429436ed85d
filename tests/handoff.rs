//! No dead ends (issue 16 item 7): a certificate renewed on another host is
//! installed with that host's key (`import`), and `renew` / `import` work while
//! the daemon runs (handed to it through the state directory and SIGUSR1).

mod common;

use cas_renewd::pki::{Key, KeyAlgorithm};
use common::{Cert, DaemonProcess, TestEnv, show};

const RENEW: &str = "RenewCertificateOrderForPackageRequest";

/// The daemon's own passes come at 03:17 only: what it does in a test is the
/// requests'.
const NO_SCHEDULED_PASS: &str =
    "schedule: { cron: \"0 17 3 * * *\", jitter: 0s, run_at_start: false }\n";

/// Order 100001 for www, 20 days left (WILLEXPIRED), with `extra` configuration.
async fn www(extra: &str) -> TestEnv {
    TestEnv::builder(
        "orders:\n  - { domain: www.example.com, expires_in: 20d }\nissuance: { polls_before_issued: 1 }\n",
    )
        .api(", max_attempts: 6")
        // Not due here (20 days left): only the other host renews.
        .renewal(Some(
            "poll_interval: 100ms, poll_max_interval: 200ms, renew_before: 10d",
        ))
        .extra(extra)
        .metrics()
        .cert(Cert::new("www", "www.example.com"))
        .start()
        .await
}

/// Order 100001 renewed on "another host" with its own key (written to
/// `other.pem`), then a pass here: it installs 100001, follows the new order and
/// finds it issued for a key it lacks. Returns the new order's id.
async fn renewed_elsewhere(w: &TestEnv) -> i64 {
    let other = Key::generate(KeyAlgorithm::EcdsaP256).expect("key");
    let csr = other
        .csr_pem("www.example.com", &["www.example.com".into()])
        .expect("csr");
    std::fs::write(w.path("other.pem"), other.pem().expose()).expect("write key");
    let order = w
        .console()
        .renew_certificate_order(100_001, Some(&csr), &[])
        .await
        .expect("renewed on the other host")
        .body
        .order_id;
    let o = w.once().await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        stdout(&o).contains("issued for a key this host does not have"),
        "{}",
        show(&o)
    );
    order
}

/// `import --cert www --key <tmp>/<file>`.
async fn import(w: &TestEnv, file: &str) -> std::process::Output {
    let key = w.path(file).display().to_string();
    w.run(&["import", "--cert", "www", "--key", &key]).await
}

/// `run`, once it listens (its pid file is written before).
async fn daemon(w: &TestEnv) -> DaemonProcess {
    let d = DaemonProcess::spawn(w, &[]);
    let up = d
        .wait_listening(100, std::time::Duration::from_millis(100))
        .await;
    assert!(up, "{}", d.log());
    d
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_renewed_elsewhere_is_imported_with_that_hosts_key() {
    let w = www("").await;
    let order = renewed_elsewhere(&w).await;
    // Blocked, with the two commands that get past it.
    let o = w.once().await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let out = stdout(&o);
    assert!(
        out.contains("cas-renewd import --cert www --key FILE")
            && out.contains("cas-renewd renew --cert www --force")
            && !out.contains("by hand"),
        "{}",
        show(&o)
    );
    let before = w.installed("www").expect("installed").leaf;
    // `--force` gets past the block to CAS, which renews only WILLEXPIRED orders.
    let o = w.run(&["renew", "--cert", "www", "--force"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stdout(&o).contains("InvalidOrderStatus"), "{}", show(&o));
    assert_eq!(w.calls(RENEW), 2, "the other host's call and one refused");

    // Refused: another key, an unknown name, a missing file, a symlink.
    let wrong = Key::generate(KeyAlgorithm::EcdsaP256).expect("key");
    std::fs::write(w.path("wrong.pem"), wrong.pem().expose()).expect("write");
    let o = import(&w, "wrong.pem").await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        stderr(&o).contains(&format!(
            "the key does not match the certificate of order {order}"
        )),
        "{}",
        show(&o)
    );
    let key = w.path("other.pem").display().to_string();
    let o = w.run(&["import", "--cert", "nope", "--key", &key]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        stderr(&o).contains("no certificate named \"nope\""),
        "{}",
        show(&o)
    );
    let o = import(&w, "absent.pem").await;
    assert!(
        stderr(&o).contains("absent.pem: no such file"),
        "{}",
        show(&o)
    );
    std::os::unix::fs::symlink(w.path("other.pem"), w.path("link.pem")).expect("symlink");
    let o = import(&w, "link.pem").await;
    assert!(stderr(&o).contains("symbolic link"), "{}", show(&o));
    assert_eq!(
        w.installed("www").expect("installed").leaf.sha256,
        before.sha256
    );

    // The right key: installed through the usual checks, the order usable again.
    let o = import(&w, "other.pem").await;
    assert!(o.status.success(), "{}", show(&o));
    assert!(stdout(&o).contains("installed"), "{}", show(&o));
    let now = w.installed("www").expect("installed");
    assert!(now.key_matches && now.leaf.not_after > before.not_after);
    let j = w.journal_text("www");
    assert!(j.contains(&format!("\"last_order_id\": {order}")), "{j}");
    assert!(
        !j.contains(&format!("    {order}\n")),
        "left unusable_orders: {j}"
    );
    let o = w.once().await;
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(w.calls(RENEW), 2, "nothing paid since");
}

#[tokio::test(flavor = "multi_thread")]
async fn renew_and_import_are_handed_to_the_running_daemon() {
    let w = www(NO_SCHEDULED_PASS).await;
    let order = renewed_elsewhere(&w).await;
    let mut daemon = daemon(&w).await;
    // The daemon holds the lock; a pass of its own would not start before 03:17.
    let o = w.once().await;
    assert!(
        stderr(&o).contains("another cas-renewd is running"),
        "{}",
        show(&o)
    );

    let o = import(&w, "other.pem").await;
    assert!(o.status.success(), "{}\n{}", show(&o), daemon.log());
    assert!(stderr(&o).contains("handing www to it"), "{}", show(&o));
    assert!(stdout(&o).contains("installed"), "{}", show(&o));
    let j = w.journal_text("www");
    assert!(j.contains(&format!("\"last_order_id\": {order}")), "{j}");

    // A name the daemon does not manage: its error, exit 1.
    let o = w.run(&["renew", "--cert", "nope", "--force"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        stderr(&o).contains("no certificate named \"nope\""),
        "{}",
        show(&o)
    );

    // Not due: nothing; forced: the daemon's answer (CAS renews only WILLEXPIRED
    // orders, so the simulator refuses), paid at most once.
    let o = w.run(&["renew", "--cert", "www"]).await;
    assert!(o.status.success(), "{}", show(&o));
    assert!(stdout(&o).contains("www"), "{}", show(&o));
    let o = w.run(&["renew", "--cert", "www", "--force"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stdout(&o).contains("InvalidOrderStatus"), "{}", show(&o));
    assert_eq!(w.calls(RENEW), 2, "the other host's call and one refused");
    assert!(!w.path("state/requests/www.json").exists(), "claimed");
    daemon.signal("-TERM");
    let st = daemon.wait_exit(std::time::Duration::from_secs(30), "daemon");
    assert_eq!(st.code(), Some(0), "{}", daemon.log());
    assert!(!w.path("state/daemon.pid").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forced_renewal_through_the_daemon_installs_and_pays_once() {
    let w = www(NO_SCHEDULED_PASS).await;
    let mut daemon = daemon(&w).await;
    let o = w.run(&["renew", "--cert", "www", "--force"]).await;
    assert!(o.status.success(), "{}\n{}", show(&o), daemon.log());
    let i = w.installed("www").expect("installed");
    assert!(i.key_matches && (i.leaf.not_after - chrono::Utc::now().timestamp()) / 86_400 >= 364);
    assert_eq!(w.renew_calls(), serde_json::json!({ "100001": 1 }));
    daemon.signal("-TERM");
    daemon.wait_exit(std::time::Duration::from_secs(30), "daemon");
}
