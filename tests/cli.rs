//! The real binary: `check-config` exit codes and messages, `list` against a fake endpoint.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::process::BIN;
use common::{Fake, Reply, bin_command};

/// The binary with an environment that can never reach a real credential source
/// or the ECS metadata address.
fn cmd(config: &Path) -> Command {
    let mut c = bin_command(config, &[], None);
    c.env("HOME", config.parent().expect("dir"));
    c
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn check_config_accepts_the_shipped_example() {
    // The example gives keys to Debian's ssl-cert group; loading checks it exists.
    if cas_renewd::accounts::lookup("ssl-cert", cas_renewd::accounts::Kind::Group).is_err()
        && std::env::var_os("CAS_RENEWD_E2E").is_none()
    {
        eprintln!(
            "skipped: no ssl-cert group here (Debian package ssl-cert; scripts/test.sh installs it)"
        );
        return;
    }
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/cas-renewd.example.yaml");
    // check-config reads the secret: here from a credential directory, as the unit
    // hands it over, since /etc/cas-renewd/access-key-secret does not exist here.
    let creds = tempfile::tempdir().expect("tempdir");
    std::fs::write(creds.path().join("access-key-secret"), "s\n").expect("secret");
    let out = cmd(&example)
        .env("CREDENTIALS_DIRECTORY", creds.path())
        .arg("check-config")
        .output()
        .expect("runs");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("valid (2 certificates)"), "{stdout}");
}

#[test]
fn check_config_rejects_with_exit_2_and_a_located_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        "certificates:\n  - name: www\n    domain: www.example.com\n    output:\n      key_mode: 0640\n",
    )
    .expect("write");
    let out = cmd(&cfg).arg("check-config").output().expect("runs");
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let header = format!("{}:5:17: certificates[0].output.key_mode: ", cfg.display());
    assert!(stderr.starts_with(&header), "{stderr}");
    assert!(stderr.contains("not quoted"), "{stderr}");

    let out = cmd(&dir.path().join("absent.yaml"))
        .arg("check-config")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("cannot read configuration"));
}

fn write_config(dir: &Path, endpoint: &str) -> std::path::PathBuf {
    let secret = dir.join("secret");
    std::fs::write(&secret, format!("{}\n", common::ACCESS_KEY_SECRET)).expect("secret");
    let cfg = dir.join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "api:\n  endpoint: {endpoint}\n  max_attempts: 3\ncredentials:\n  access_key_id: {}\n  access_key_secret_file: {}\ncertificates:\n  - name: www\n    domain: www.example.com\n",
            common::ACCESS_KEY_ID,
            secret.display()
        ),
    )
    .expect("config");
    cfg
}

#[tokio::test(flavor = "multi_thread")]
async fn list_prints_an_aligned_table_and_stable_json() {
    let fake = Fake::start().await;
    fake.fallback(common::orders_fallback(3));
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), &fake.url());

    let out = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        move || {
            cmd(&cfg)
                .args(["list", "--status", "issued"])
                .output()
                .expect("runs")
        }
    })
    .await
    .expect("join");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(lines[0].starts_with("DOMAIN"), "{stdout}");
    assert!(lines[1].starts_with("host-0.example.com  1000"), "{stdout}");
    assert!(lines.iter().skip(1).all(|l| l.contains("ISSUED")));
    let r = &fake.received()[0];
    assert_eq!(r.param("Status"), Some("ISSUED"));
    assert_eq!(r.param("OrderType"), Some("CPACK"));
    assert!(
        r.signature_ok,
        "the binary signs with the secret from the file"
    );

    let out = tokio::task::spawn_blocking(move || {
        cmd(&cfg).args(["list", "--json"]).output().expect("runs")
    })
    .await
    .expect("join");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let rows = v.as_array().expect("array");
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["domain"], "host-0.example.com");
    assert_eq!(rows[0]["order_id"], 1000);
    assert_eq!(rows[0]["status"], "ISSUED");
    assert_eq!(rows[0]["not_after"], "2030-03-17T17:46:40Z");
    assert!(stdout.starts_with("[\n  {\n    \"domain\""), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn list_reports_api_errors_with_exit_1() {
    let fake = Fake::start().await;
    fake.fallback(|_| {
        Reply::error(
            403,
            "Forbidden.RAM",
            "User not authorized to operate on the specified resource.",
        )
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), &fake.url());
    let out = tokio::task::spawn_blocking(move || cmd(&cfg).arg("list").output().expect("runs"))
        .await
        .expect("join");
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Forbidden.RAM"), "{stderr}");
    assert!(stderr.contains("REQ-Forbidden.RAM"), "{stderr}");
    assert!(!stderr.contains(common::ACCESS_KEY_SECRET));
}

/// The README's sandbox instructions: start `sim` with the example scenario, read
/// its "listening on" line, point `list` at it.
#[test]
fn sim_command_serves_the_example_scenario_to_list() {
    use std::io::{BufRead, BufReader};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sim = Command::new(BIN)
        .args(["sim", "--listen", "127.0.0.1:0", "--scenario"])
        .arg(root.join("config/sim-scenario.example.yaml"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("sim starts");
    let mut line = String::new();
    BufReader::new(sim.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "api: {{ endpoint: {url} }}\ncredentials: {{ access_key_id: sim-access-key-id, access_key_secret: sim-access-key-secret }}\ncertificates:\n  - {{ name: www, domain: www.example.com }}\n"
        ),
    )
    .expect("config");
    let out = cmd(&cfg)
        .args(["list", "--json"])
        .output()
        .expect("list runs");
    let _ = sim.kill();
    let _ = sim.wait();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let rows: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let domains: Vec<&str> = rows
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["domain"].as_str())
        .collect();
    assert_eq!(
        domains,
        ["shop.example.com", "www.example.com", "api.example.com"]
    );
    assert_eq!(rows[0]["status"], "WILLEXPIRED");
}
