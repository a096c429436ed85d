//! End to end with a real nginx: the renewed certificate is what nginx serves.
//! Each test starts its own nginx (own prefix, config, pid file, a free loopback
//! port) and stops it whatever happens. Skipped with a reason when nginx is not
//! installed, unless CAS_RENEWD_E2E=1.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use cas_renewd::pki;
use common::nginx::{
    Nginx, Site, nginx_available, on_disk, reload_hook, served, served_settled, start_on,
};
use common::{Cert, DaemonProcess, TestEnv, free_port, show};

/// Orders expiring in 40 days (installed by the first pass, not yet renewed), an
/// nginx reload hook and a metrics listener.
async fn setup(certs: &[(&str, &str, &str)], verify_port: Option<u16>, hook: &str) -> TestEnv {
    setup_with_sim(certs, verify_port, hook, "", "").await
}

/// As `setup`; `order_extra` is added to every order of the scenario and
/// `issuance_extra` to its `issuance`.
async fn setup_with_sim(
    certs: &[(&str, &str, &str)],
    verify_port: Option<u16>,
    hook: &str,
    order_extra: &str,
    issuance_extra: &str,
) -> TestEnv {
    let mut scenario = String::from("orders:\n");
    for (_, domain, _) in certs {
        scenario.push_str(&format!(
            "  - {{ domain: {domain}, expires_in: 40d{order_extra} }}\n"
        ));
    }
    scenario.push_str(&format!(
        "issuance: {{ polls_before_issued: 1{issuance_extra} }}\n"
    ));
    let verify = verify_port
        .map(|p| format!(", verify: {{ connect: \"127.0.0.1:{p}\" }}"))
        .unwrap_or_default();
    TestEnv::builder(&scenario)
        .key("k", "s")
        .renewal(Some("poll_interval: 100ms, poll_max_interval: 200ms"))
        .extra(&format!("hooks:\n  nginx: {{ command: {hook}, timeout: 20s }}\ndefaults: {{ reload: [nginx] }}\nschedule: {{ cron: \"0 17 3 * * *\", jitter: 0s }}\n"))
        .certs(
            certs
                .iter()
                .map(|(name, domain, extra)| Cert::new(name, domain).extra(&format!("{verify}{extra}"))),
        )
        .metrics()
        .log_env(None)
        .start()
        .await
}

fn out(s: &TestEnv, name: &str) -> PathBuf {
    s.path("out").join(name)
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_serves_the_renewed_certificate() {
    if !nginx_available() {
        return;
    }
    let nginx_dir = tempfile::tempdir().expect("tempdir");
    let prefix = nginx_dir.path().to_owned();
    let port = free_port();
    // The hook and verify need nginx's paths and port before nginx exists; fix them now.
    let s = setup(
        &[("www", "www.example.com", "")],
        Some(port),
        &reload_hook(&prefix, &prefix.join("nginx.conf")),
    )
    .await;
    // The first pass installs the current certificate (nginx is not up yet, so its
    // reload fails; that is the next test's subject).
    let _ = s.run(&["once"]).await;
    let old = on_disk(&out(&s, "www"));
    assert!((old.not_after - chrono::Utc::now().timestamp()) / 86_400 <= 40);

    let nginx = start_on(
        &prefix,
        port,
        &[Site {
            server_name: "www.example.com",
            dir: out(&s, "www"),
        }],
    );
    assert_eq!(
        served(&nginx.addr(), "www.example.com").await.serial_hex,
        old.serial_hex,
        "nginx starts with the old certificate"
    );

    // 15 days on, the order is WILLEXPIRED: the pass renews, reloads nginx, checks.
    s.sim.advance(Duration::from_secs(15 * 86_400));
    let o = s.run(&["once"]).await;
    assert!(o.status.success(), "{}", show(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("renewed") && stdout.contains("served certificate matches the one on disk"),
        "{stdout}"
    );
    let new = on_disk(&out(&s, "www"));
    let live = served_settled(&nginx.addr(), "www.example.com", &new.serial_hex).await;
    assert_ne!(new.serial_hex, old.serial_hex);
    assert_eq!(
        live.serial_hex, new.serial_hex,
        "nginx serves the new serial"
    );
    assert_eq!(live.not_after, new.not_after, "and the new expiry");
    assert!((live.not_after - chrono::Utc::now().timestamp()) / 86_400 >= 364);

    // status --json says the same.
    let st = s.run(&["status", "--json"]).await;
    let rows: serde_json::Value = serde_json::from_slice(&st.stdout).expect("json");
    assert_eq!(rows[0]["serial"], new.serial_hex.as_str());
    assert_eq!(rows[0]["served_matches_disk"], true, "{rows}");

    // And the daemon's metrics: one pass at start, then a scrape.
    let mut daemon = DaemonProcess::spawn(&s, &[]);
    let text = if daemon.wait_ready(100, Duration::from_millis(100)).await {
        daemon.scrape().await
    } else {
        String::new()
    };
    daemon.stop();
    assert!(
        text.contains("cas_renewd_served_matches_disk{cert=\"www\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "cas_renewd_certificate_not_after_timestamp_seconds{{cert=\"www\"}} {}",
            new.not_after
        )),
        "{text}"
    );
    assert_eq!(
        s.sim_state()["renew_calls"],
        serde_json::json!({ "100001": 1 })
    );
}

/// Starts nginx on a port chosen before the configuration was written.

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_nginx_reload_is_detected_and_retried() {
    if !nginx_available() {
        return;
    }
    let nginx_dir = tempfile::tempdir().expect("tempdir");
    let prefix = nginx_dir.path().to_owned();
    let port = free_port();
    // The hook signals the master as `systemctl reload` would: the signal is
    // delivered (exit 0) whatever nginx then makes of its configuration.
    let hook = format!(
        "[\"/bin/sh\", \"-c\", \"kill -HUP $(cat {}/nginx.pid)\"]",
        prefix.display()
    );
    let s = setup(&[("www", "www.example.com", "")], Some(port), &hook).await;
    // The first pass installs the current certificate; nginx is not up yet, so its
    // reload and check fail, which is not what this test is about.
    let _ = s.run(&["once"]).await;
    let old = on_disk(&out(&s, "www"));
    let sites = [Site {
        server_name: "www.example.com",
        dir: out(&s, "www"),
    }];
    let nginx = start_on(&prefix, port, &sites);

    nginx.rewrite(&sites, true);
    s.sim.advance(Duration::from_secs(15 * 86_400));
    let o = s.run(&["once"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("served certificate DIFFERS")
            && stdout.contains("the reload did not take effect"),
        "{stdout}"
    );
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("served certificate differs from the one on disk"),
        "logged: {}",
        show(&o)
    );
    assert_eq!(
        served(&nginx.addr(), "www.example.com").await.serial_hex,
        old.serial_hex,
        "nginx kept the old certificate"
    );
    let st = s.run(&["status", "--json"]).await;
    let rows: serde_json::Value = serde_json::from_slice(&st.stdout).expect("json");
    assert_eq!(rows[0]["served_matches_disk"], false);
    assert_eq!(
        rows[0]["reload_pending"],
        serde_json::json!(["nginx"]),
        "{rows}"
    );

    // Next pass with nginx still broken: reload retried, still failing, no new order.
    let o = s.run(&["once"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    // The operator fixes nginx; the next pass reloads and succeeds without renewing.
    nginx.rewrite(&sites, false);
    let o = s.run(&["once"]).await;
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("served certificate matches"),
        "{}",
        show(&o)
    );
    let new = on_disk(&out(&s, "www"));
    assert_eq!(
        served_settled(&nginx.addr(), "www.example.com", &new.serial_hex)
            .await
            .serial_hex,
        new.serial_hex
    );
    assert_eq!(
        s.sim_state()["renew_calls"],
        serde_json::json!({ "100001": 1 }),
        "no second renew call"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rsa_and_ecdsa_certificates_on_one_nginx_with_one_reload() {
    if !nginx_available() {
        return;
    }
    let nginx_dir = tempfile::tempdir().expect("tempdir");
    let prefix = nginx_dir.path().to_owned();
    let port = free_port();
    let count = prefix.join("reloads");
    let hook = format!(
        "[\"/bin/sh\", \"-c\", \"echo $CAS_RENEWD_CERT_NAME >> {} && nginx -p {} -c {}/nginx.conf -s reload\"]",
        count.display(),
        prefix.display(),
        prefix.display()
    );
    let s = setup(
        &[
            ("rsa", "rsa.example.com", ", key: { algorithm: rsa-2048 }"),
            (
                "ecdsa",
                "ecdsa.example.com",
                ", key: { algorithm: ecdsa-p384 }",
            ),
        ],
        Some(port),
        &hook,
    )
    .await;
    let _ = s.run(&["once"]).await;
    let sites = [
        Site {
            server_name: "rsa.example.com",
            dir: out(&s, "rsa"),
        },
        Site {
            server_name: "ecdsa.example.com",
            dir: out(&s, "ecdsa"),
        },
    ];
    let nginx = start_on(&prefix, port, &sites);
    std::fs::write(&count, "").expect("reset count");
    s.sim.advance(Duration::from_secs(15 * 86_400));
    let o = s.run(&["once"]).await;
    assert!(o.status.success(), "{}", show(&o));
    let reloads = std::fs::read_to_string(&count).expect("count");
    assert_eq!(
        reloads.lines().collect::<Vec<_>>(),
        ["rsa,ecdsa"],
        "one reload for both certificates"
    );
    for (name, sni, key_type) in [
        ("rsa", "rsa.example.com", "RSA"),
        ("ecdsa", "ecdsa.example.com", "EC"),
    ] {
        let disk = on_disk(&out(&s, name));
        let live = served_settled(&nginx.addr(), sni, &disk.serial_hex).await;
        assert_eq!(live.serial_hex, disk.serial_hex, "{name}: served");
        assert!(live.dns_names.contains(&sni.to_owned()));
        let key = std::fs::read_to_string(out(&s, name).join("privkey.pem")).expect("key");
        let k = pki::Key::from_pem(&key).expect("key");
        assert_eq!(
            k.spki_sha256(),
            live.spki_sha256,
            "{name}: nginx uses our key"
        );
        assert_eq!(live.key_type, key_type, "{name}");
    }
    assert_eq!(
        s.sim_state()["renew_calls"],
        serde_json::json!({ "100001": 1, "100002": 1 })
    );
    drop(nginx);
}

/// The first install of an existing order takes the key CAS made. CAS documents
/// PKCS#1 / SEC1 keys (`BEGIN RSA PRIVATE KEY`, `BEGIN EC PRIVATE KEY`); nginx
/// refuses such DER under a `PRIVATE KEY` label, so whatever form comes in,
/// privkey.pem must be PKCS#8 that nginx loads and serves with.
#[tokio::test(flavor = "multi_thread")]
async fn nginx_loads_the_key_cas_made_in_every_form() {
    if !nginx_available() {
        return;
    }
    let forms = [
        (
            "rsa-pkcs1",
            "RSA",
            "pkcs1",
            "-----BEGIN RSA PRIVATE KEY-----",
        ),
        ("ec-sec1", "ECC", "pkcs1", "-----BEGIN EC PRIVATE KEY-----"),
        (
            "ec-params",
            "ECC",
            "sec1_with_params",
            "-----BEGIN EC PARAMETERS-----",
        ),
        (
            "rsa-one-line",
            "RSA",
            "one_line",
            "-----BEGIN RSA PRIVATE KEY----- MII",
        ),
        (
            "ec-crlf",
            "ECC",
            "crlf",
            "-----BEGIN EC PRIVATE KEY-----\r\n",
        ),
        ("rsa-pkcs8", "RSA", "pkcs8", "-----BEGIN PRIVATE KEY-----"),
        ("ec-pkcs8", "ECC", "pkcs8", "-----BEGIN PRIVATE KEY-----"),
    ];
    let mut setups = Vec::new();
    for (name, algorithm, format, sent) in forms {
        let domain = format!("{name}.example.com");
        let s = setup_with_sim(
            &[(name, &domain, "")],
            None,
            "[\"/bin/true\"]",
            &format!(", algorithm: {algorithm}"),
            &format!(", key_format: {format}"),
        )
        .await;
        // What the simulator hands out is the form under test.
        let (status, state) = common::Raw::new("DescribeCertificateState", "k", "s")
            .param("OrderId", "100001")
            .send(&s.sim.url())
            .await;
        assert_eq!(status, 200, "{state}");
        let given = state["PrivateKey"].as_str().expect("CAS made the key");
        assert!(given.starts_with(sent), "{name}: sent as {given:.40}");
        let o = s.run(&["once"]).await;
        assert!(o.status.success(), "{name}: {}", show(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("installed"),
            "{name}: {}",
            show(&o)
        );
        let key = std::fs::read_to_string(out(&s, name).join("privkey.pem")).expect("key");
        assert!(
            key.starts_with("-----BEGIN PRIVATE KEY-----\n")
                && key.ends_with("-----END PRIVATE KEY-----\n"),
            "{name}: privkey.pem is PKCS#8 PEM"
        );
        setups.push((name, domain, sent, s));
    }
    let nginx_dir = tempfile::tempdir().expect("tempdir");
    let prefix = nginx_dir.path().to_owned();
    let port = free_port();
    let sites: Vec<Site<'_>> = setups
        .iter()
        .map(|(name, domain, _, s)| Site {
            server_name: domain,
            dir: out(s, name),
        })
        .collect();
    std::fs::create_dir_all(prefix.join("tmp")).expect("prefix");
    let conf = prefix.join("nginx.conf");
    std::fs::write(&conf, Nginx::conf_text(&prefix, port, &sites, false)).expect("conf");
    let test = Command::new("nginx")
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf)
        .arg("-t")
        .output()
        .expect("nginx -t");
    assert!(
        test.status.success(),
        "nginx -t refuses a written key: {}",
        String::from_utf8_lossy(&test.stderr)
    );
    let nginx = start_on(&prefix, port, &sites);
    for (name, domain, _, s) in &setups {
        let disk = on_disk(&out(s, name));
        let live = served(&nginx.addr(), domain).await;
        assert_eq!(live.serial_hex, disk.serial_hex, "{name}: served");
        let key = std::fs::read_to_string(out(s, name).join("privkey.pem")).expect("key");
        assert_eq!(
            pki::Key::from_pem(&key).expect("key").spki_sha256(),
            live.spki_sha256,
            "{name}: nginx serves with the key CAS made"
        );
    }
    drop(nginx);
}
