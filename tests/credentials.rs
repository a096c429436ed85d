//! Credentials through the real binary: `check-config` reads the secret as the
//! running user (missing, unreadable and empty files are exit 2 and name the key),
//! finds it in `$CREDENTIALS_DIRECTORY` under systemd, names another source when
//! the config has none, and `check-config --online` makes one read-only call and
//! reports the clock skew from the endpoint's `Date` header.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use common::{bin_command, show, start_sim};

const CERTS: &str = "certificates:\n  - { name: www, domain: www.example.com }\n";

fn config(dir: &Path, body: &str) -> std::path::PathBuf {
    let p = dir.join("config.yaml");
    std::fs::write(&p, format!("{body}{CERTS}")).expect("config");
    p
}

fn check(cfg: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c: Command = bin_command(cfg, args, None);
    c.env("HOME", cfg.parent().expect("dir"));
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("runs")
}

#[test]
fn check_config_reads_the_secret_file_and_names_what_is_wrong() {
    let d = tempfile::tempdir().expect("tempdir");
    let secret = d.path().join("access-key-secret");
    let cfg = config(
        d.path(),
        &format!(
            "credentials: {{ access_key_id: LTAIid, access_key_secret_file: {} }}\n",
            secret.display()
        ),
    );
    // Missing.
    let o = check(&cfg, &["check-config"], &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        err.contains("credentials.access_key_secret_file")
            && err.contains(&secret.display().to_string()),
        "{err}"
    );
    // Empty.
    std::fs::write(&secret, "\n").expect("write");
    let o = check(&cfg, &["check-config"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is empty"));
    // Present.
    std::fs::write(&secret, "the-secret\n").expect("write");
    let o = check(&cfg, &["check-config"], &[]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("credentials: config file"));
    // Unreadable by the running user: root reads anything, so only as another user.
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let as_nobody = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
        .status();
    if as_nobody.is_ok_and(|s| s.success()) && is_root() {
        // The directory must be passable for nobody to reach the file at all.
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let o = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(common::process::BIN)
            .arg("--config")
            .arg(&cfg)
            .arg("check-config")
            .env_clear()
            .env("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
            .output()
            .expect("runs");
        assert_eq!(o.status.code(), Some(2), "{}", show(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("Permission denied"),
            "{}",
            show(&o)
        );
    } else {
        eprintln!("unreadable case skipped: not root or no setpriv");
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

#[test]
fn check_config_uses_the_credential_systemd_hands_over() {
    let d = tempfile::tempdir().expect("tempdir");
    let creds = tempfile::tempdir().expect("tempdir");
    // The file named in the config is not there (LoadCredentialEncrypted=, or a
    // host where only systemd can read it); the credential of that name is.
    let cfg = config(
        d.path(),
        "credentials: { access_key_id: LTAIid, access_key_secret_file: /nonexistent/cas-renewd/access-key-secret }\n",
    );
    std::fs::write(creds.path().join("access-key-secret"), "s\n").expect("write");
    let dir = creds.path().display().to_string();
    let o = check(&cfg, &["check-config"], &[("CREDENTIALS_DIRECTORY", &dir)]);
    assert!(o.status.success(), "{}", show(&o));
    let o = check(&cfg, &["check-config"], &[]);
    assert_eq!(o.status.code(), Some(2), "from a shell: {}", show(&o));
}

#[test]
fn check_config_names_the_source_when_the_config_has_none() {
    let d = tempfile::tempdir().expect("tempdir");
    let cfg = config(d.path(), "");
    let o = check(
        &cfg,
        &["check-config"],
        &[
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIenv"),
            ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "env-secret"),
        ],
    );
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("credentials: environment"),
        "{}",
        show(&o)
    );
    // Nothing anywhere (metadata service off): exit 2 and what was looked at.
    let o = check(&cfg, &["check-config"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no credentials found"));
}

#[tokio::test(flavor = "multi_thread")]
async fn check_config_online_makes_one_read_only_call_and_reports_the_skew() {
    let sim = start_sim(
        "kid",
        "ksecret",
        "orders:\n  - { domain: www.example.com, expires_in: 20d }\n",
    )
    .await;
    let d = tempfile::tempdir().expect("tempdir");
    let good = format!(
        "api: {{ endpoint: \"{}\" }}\ncredentials: {{ access_key_id: kid, access_key_secret: ksecret }}\n",
        sim.url()
    );
    let cfg = config(d.path(), &good);
    let o = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        move || check(&cfg, &["check-config", "--online"], &[])
    })
    .await
    .expect("join");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        out.contains("ListUserCertificateOrder answered: the credentials work (1 orders"),
        "{out}"
    );
    assert!(
        out.contains("clock: this host is 0s ahead of") || out.contains("clock: this host is 1s"),
        "{out}"
    );
    let state = sim.state();
    assert_eq!(state["calls"]["ListUserCertificateOrder"], 1, "{state}");

    // A wrong secret: exit 1 with CAS's answer.
    let cfg = config(d.path(), &good.replace("ksecret", "wrong"));
    let o = tokio::task::spawn_blocking(move || check(&cfg, &["check-config", "--online"], &[]))
        .await
        .expect("join");
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("the read-only call failed"),
        "{}",
        show(&o)
    );
}

/// An endpoint whose clock is `behind` this host's: every answer carries its
/// `Date`, and every request gets an empty order listing.
async fn skewed_endpoint(behind: chrono::TimeDelta) -> String {
    let app = axum::Router::new().fallback(move || async move {
        let date = (chrono::Utc::now() - behind)
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        (
            [("date", date), ("content-type", "application/json".to_owned())],
            r#"{"RequestId":"r1","TotalCount":0,"ShowSize":1,"CurrentPage":1,"CertificateOrderList":[]}"#,
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread")]
async fn check_config_online_reports_a_clock_cas_would_refuse() {
    let url = skewed_endpoint(chrono::TimeDelta::minutes(20)).await;
    let d = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        d.path(),
        &format!(
            "api: {{ endpoint: \"{url}\" }}\ncredentials: {{ access_key_id: k, access_key_secret: s }}\n"
        ),
    );
    let o = tokio::task::spawn_blocking(move || check(&cfg, &["check-config", "--online"], &[]))
        .await
        .expect("join");
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        ["1199s", "1200s", "1201s"]
            .iter()
            .any(|s| out.contains(&format!("clock: this host is {s} ahead of"))),
        "{out}"
    );
    assert!(out.contains("fix the clock"), "{out}");
    assert!(out.contains("the credentials work"), "{out}");
}
