//! The real binary and what a configuration says about this host: `check-config`
//! refuses unknown accounts, and `run` logs configuration warnings again on SIGHUP,
//! where an operator checks a fix.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cas-renewd");
const WARNING: &str = "holds a secret and is readable by group or others";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Collects log lines until one contains `want` (bounded); returns them.
fn lines_until(rx: &mpsc::Receiver<String>, want: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let hit = line.contains(want);
                seen.push(line);
                if hit {
                    return;
                }
            }
            Err(_) => break,
        }
    }
    panic!(
        "no log line with {want:?} within 30 s; got:\n{}",
        seen.join("\n")
    );
}

#[test]
fn configuration_warnings_are_logged_again_after_sighup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "api: {{ endpoint: \"http://127.0.0.1:9\", dns_endpoint: \"http://127.0.0.1:9\" }}\ncredentials: {{ access_key_id: k, access_key_secret: inline-secret }}\nstate_dir: {0}/state\nschedule: {{ cron: \"0 17 3 * * *\", run_at_start: false }}\ncertificates:\n  - {{ name: www, domain: www.example.com, output: {{ dir: {0}/out/www }} }}\nmetrics: {{ listen: \"127.0.0.1:{port}\" }}\n",
            dir.path().display()
        ),
    )
    .expect("config");
    // Readable by others, with the secret inline: the warning's case.
    std::fs::set_permissions(&cfg, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod");

    let mut child = Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("daemon starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let signal = |sig: &str| {
        let st = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(st.success());
    };

    let mut seen = Vec::new();
    lines_until(&rx, "scheduled", &mut seen);
    let at_start = seen.iter().filter(|l| l.contains(WARNING)).count();
    signal("-HUP");
    lines_until(&rx, "configuration reloaded", &mut seen);
    let after_reload = seen.iter().filter(|l| l.contains(WARNING)).count();
    signal("-TERM");
    let status = child.wait().expect("daemon exits");
    assert_eq!(at_start, 1, "{}", seen.join("\n"));
    assert_eq!(
        after_reload,
        2,
        "the reload repeats the warning:\n{}",
        seen.join("\n")
    );
    assert!(status.success(), "{status}");
}

#[test]
fn check_config_refuses_an_unknown_group_or_owner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        "certificates:\n  - name: www\n    domain: www.example.com\n    output:\n      owner: root\n      group: no-such-group-cas-renewd\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .arg("--config")
        .arg(&cfg)
        .arg("check-config")
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let header = format!("{}:6:14: certificates[0].output.group: ", cfg.display());
    assert!(stderr.starts_with(&header), "{stderr}");
    assert!(
        stderr.contains("unknown group \"no-such-group-cas-renewd\" (not in /etc/group)"),
        "{stderr}"
    );
}
