//! The real binary and what a configuration says about this host: `check-config`
//! refuses unknown accounts, and `run` logs configuration warnings again on SIGHUP,
//! where an operator checks a fix.

mod common;

use common::{DaemonProcess, bin_command, free_port};

const WARNING: &str = "holds a secret and is readable by group or others";

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

    let mut child = DaemonProcess::start(
        bin_command(&cfg, &["run"], None),
        dir.path().join("run.log"),
    );
    let at_start = child
        .wait_log("scheduled")
        .lines()
        .filter(|l| l.contains(WARNING))
        .count();
    child.signal("-HUP");
    let seen = child.wait_log("configuration reloaded");
    let after_reload = seen.lines().filter(|l| l.contains(WARNING)).count();
    let status = child.stop();
    assert_eq!(at_start, 1, "{}", seen);
    assert_eq!(after_reload, 2, "the reload repeats the warning:\n{}", seen);
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
    let out = bin_command(&cfg, &["check-config"], None)
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
