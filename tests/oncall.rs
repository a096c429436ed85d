//! What on-call reads (issue 16 items 5 and 6): `once --wait` returns with the
//! orders still in progress named and how they continue; `status` works from disk
//! and journal, shows the last error, keeps hostile CAS text off the terminal,
//! tells an authentication failure from an unreachable CAS, and exits with Nagios
//! codes.

mod common;

use common::{Cert, TestEnv, show};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Item 5: an order CAS takes long to issue. `once --wait 1s` returns after about
/// a second (not after issuance_timeout), exits 75, names the order and says how
/// it continues; a second `once` follows the same order and pays nothing more.
#[tokio::test(flavor = "multi_thread")]
async fn once_returns_after_its_wait_naming_the_orders_in_progress() {
    let w = TestEnv::builder(
        "orders:\n  - { domain: www.example.com, expires_in: 20d }\nissuance: { polls_before_issued: 100000 }\n",
    )
    .renewal(Some(
        "poll_interval: 100ms, poll_max_interval: 200ms, issuance_timeout: 1h",
    ))
    .cert(Cert::new("www", "www.example.com"))
    .start()
    .await;
    let started = std::time::Instant::now();
    let o = w.run(&["once", "--wait", "1s"]).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{}",
        show(&o)
    );
    assert_eq!(o.status.code(), Some(75), "{}", show(&o));
    let out = stdout(&o);
    assert!(
        out.contains("1 certificate(s) still in progress after waiting 1s:"),
        "{out}"
    );
    assert!(out.contains("  www: order 100002 is "), "{out}");
    assert!(out.contains("run `cas-renewd once` again later"), "{out}");
    assert_eq!(w.renew_calls(), serde_json::json!({ "100001": 1 }));

    let o = w.run(&["once", "--wait", "500ms"]).await;
    assert_eq!(o.status.code(), Some(75), "{}", show(&o));
    assert!(
        stdout(&o).contains("  www: order 100002 is "),
        "{}",
        show(&o)
    );
    assert_eq!(
        w.renew_calls(),
        serde_json::json!({ "100001": 1 }),
        "the second once follows the same order"
    );
    // status from the journal alone: the renewal in flight, and the expiry (20
    // days, inside the 21-day warning) makes it WARNING.
    let o = w.run(&["status"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with("cas-renewd WARNING: 1 certificate; 1 problem\n"),
        "{out}"
    );
    assert!(
        out.contains("resume: a renewal is in flight at phase"),
        "{out}"
    );
    assert!(out.contains("(order 100002)"), "{out}");
}

/// Item 6: `status` needs neither CAS nor the credentials; `--online` does, and
/// a refused secret is an authentication failure, with the hostile Message CAS
/// sent escaped; a pass that failed on it shows offline as the last error.
#[tokio::test(flavor = "multi_thread")]
async fn status_works_offline_labels_authentication_and_escapes_cas_text() {
    let hostile = "\u{1b}[2J\u{1b}]0;owned\u{7}line one\nfake: OK\r\u{202e}";
    let scenario = format!(
        "orders:\n  - {{ domain: www.example.com, expires_in: 200d }}\nfaults: {{ error_message: {} }}\n",
        serde_json::to_string(hostile).expect("json")
    );
    let w = TestEnv::builder(&scenario)
        .cert(Cert::new("www", "www.example.com"))
        .start()
        .await;
    let o = w.once().await;
    assert!(o.status.success(), "{}", show(&o));

    // A wrong secret: status offline is still OK (exit 0) without asking CAS.
    let good = w.config_text();
    let bad = good.replace("access_key_secret: s", "access_key_secret: wrong");
    assert_ne!(good, bad);
    std::fs::write(w.config_path(), &bad).expect("config");
    let lists = w.calls("ListUserCertificateOrder");
    let o = w.run(&["status"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        stdout(&o).starts_with("cas-renewd OK: 1 certificate, all in order\n"),
        "{}",
        show(&o)
    );
    assert_eq!(
        w.calls("ListUserCertificateOrder"),
        lists,
        "offline asks nothing"
    );

    // --online: CAS refuses the signature; WARNING, called what it is.
    let o = w.run(&["status", "--online"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let out = stdout(&o);
    assert!(out.contains("authentication failed ("), "{out}");
    assert!(!out.contains("not reachable"), "{out}");
    assert!(
        out.contains("\\x1b[2J\\x1b]0;owned\\x07line one\\nfake: OK\\r"),
        "{out}"
    );
    assert!(
        !out.contains(['\u{1b}', '\r', '\u{7}', '\u{202e}']),
        "{out:?}"
    );

    // The pass fails on it; offline status shows it as the last pass's error.
    let o = w.once().await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let o = w.run(&["status"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let out = stdout(&o);
    assert!(
        out.contains("the last pass failed: authentication ("),
        "{out}"
    );
    assert!(out.contains("\\x1b]0;owned"), "{out}");
    assert!(
        !out.contains(['\u{1b}', '\r', '\u{7}', '\u{202e}']),
        "{out:?}"
    );
    let json = w.run(&["status", "--json"]).await;
    assert_eq!(json.status.code(), Some(1), "{}", show(&json));
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(rows[0]["health"], "ok", "{rows}");
    assert_eq!(rows[0]["source"], "disk", "{rows}");
}

/// Item 6: the thresholds, an unreachable CAS (UNKNOWN, not an authentication
/// failure), a certificate never installed (CRITICAL) and a configuration that
/// cannot be read (UNKNOWN, 3, not the other commands' 2).
#[tokio::test(flavor = "multi_thread")]
async fn status_exit_codes_are_nagios_codes() {
    let w = TestEnv::builder(
        "orders:\n  - { domain: www.example.com, expires_in: 200d }\n  - { domain: api.example.com, expires_in: 200d }\n",
    )
    .cert(Cert::new("www", "www.example.com"))
    .start()
    .await;
    let o = w.once().await;
    assert!(o.status.success(), "{}", show(&o));
    let code = |args: &'static [&'static str]| {
        let w = &w;
        async move {
            let o = w.run(args).await;
            (o.status.code(), stdout(&o))
        }
    };
    assert_eq!(code(&["status"]).await.0, Some(0));
    let (c, out) = code(&["status", "--warning", "300d", "--critical", "10d"]).await;
    assert_eq!(c, Some(1), "{out}");
    // 200 days less the seconds since the simulator started: 199 or 200 whole days
    // depending on when the day boundary falls.
    assert!(
        out.contains("www: expires in 199 day") || out.contains("www: expires in 200 day"),
        "{out}"
    );
    let (c, out) = code(&["status", "--warning", "400d", "--critical", "300d"]).await;
    assert_eq!(c, Some(2), "{out}");
    assert!(out.starts_with("cas-renewd CRITICAL"), "{out}");

    // CAS at a port nobody listens on: UNKNOWN, and said so.
    let text = w.config_text();
    let port = common::free_port();
    let unreachable = text
        .lines()
        .map(|l| {
            if l.starts_with("api:") {
                format!("api: {{ endpoint: \"http://127.0.0.1:{port}/\", dns_endpoint: \"http://127.0.0.1:{port}/\", max_attempts: 1 }}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(w.config_path(), &unreachable).expect("config");
    let (c, out) = code(&["status", "--online"]).await;
    assert_eq!(c, Some(3), "{out}");
    assert!(out.contains("CAS not reachable: "), "{out}");
    assert!(!out.contains("authentication failed"), "{out}");

    // A second certificate that was never installed.
    std::fs::write(
        w.config_path(),
        format!(
            "{text}  - {{ name: api, domain: api.example.com, output: {{ dir: {}/out/api }} }}\n",
            w.dir().display()
        ),
    )
    .expect("config");
    let (c, out) = code(&["status"]).await;
    assert_eq!(c, Some(2), "{out}");
    assert!(out.contains("api: no certificate installed"), "{out}");

    std::fs::write(w.config_path(), "certificates: [\n").expect("config");
    let o = w.run(&["status"]).await;
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
}
