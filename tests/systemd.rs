//! What the shipped unit promises beyond `systemd-analyze` (tests/ops_files.rs):
//! `ExecReload=` (`cas-renewd reload --pid $MAINPID`) fails when the daemon refuses
//! the new configuration, and `nginx -t` in a hook works inside the unit's
//! sandbox, checked with a real nginx under the same read-only mounts and
//! capability bounding set (unshare + bind mounts + setpriv).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::process::BIN;
use common::{Cert, DaemonProcess, TestEnv, show};

fn unit() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/cas-renewd.service"),
    )
    .expect("unit")
}

/// Every value of `key=` in the unit, split on white space (as systemd does for
/// list settings), later lines after earlier ones.
fn unit_values(key: &str) -> Vec<String> {
    unit()
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .flat_map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

fn reload(pid: u32, runtime: &Path) -> Output {
    Command::new(BIN)
        .args(["reload", "--pid", &pid.to_string(), "--timeout", "20s"])
        .env("RUNTIME_DIRECTORY", runtime)
        .output()
        .expect("runs")
}

#[tokio::test(flavor = "multi_thread")]
async fn systemctl_reload_fails_when_the_new_configuration_is_refused() {
    let exec_reload = unit_values("ExecReload").join(" ");
    assert_eq!(
        exec_reload, "/usr/local/bin/cas-renewd reload --pid $MAINPID",
        "the unit's ExecReload= is the waiting reload"
    );
    let w = TestEnv::builder("orders:\n  - { domain: www.example.com, expires_in: 200d }\n")
        .extra("schedule: { cron: \"0 17 3 * * *\", jitter: 0s, run_at_start: false }\n")
        .cert(Cert::new("www", "www.example.com"))
        .metrics()
        .log_env(None)
        .start()
        .await;
    let runtime = w.path("run");
    std::fs::create_dir(&runtime).expect("mkdir");
    let rt = runtime.display().to_string();
    let mut child = DaemonProcess::spawn(&w, &[("RUNTIME_DIRECTORY", &rt)]);
    child.wait_log("metrics");
    let pid = child.id();
    let good = w.config_text();

    let o = tokio::task::spawn_blocking({
        let runtime = runtime.clone();
        move || reload(pid, &runtime)
    })
    .await
    .expect("join");
    assert!(o.status.success(), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("configuration reloaded"));

    std::fs::write(
        w.config_path(),
        format!("{good}renewal: {{ renew_befor: 30d }}\n"),
    )
    .expect("write");
    let o = tokio::task::spawn_blocking({
        let runtime = runtime.clone();
        move || reload(pid, &runtime)
    })
    .await
    .expect("join");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        err.contains("reload refused") && err.contains("renew_befor"),
        "{err}"
    );

    // Fixed again: the next reload succeeds, so an old refusal is never reread.
    std::fs::write(w.config_path(), &good).expect("write");
    let o = tokio::task::spawn_blocking(move || reload(pid, &runtime))
        .await
        .expect("join");
    assert!(o.status.success(), "{}", show(&o));
    assert!(child.stop().success());
}

/// Why the sandbox cannot be rebuilt here, or `None` when it can.
fn sandbox_unavailable() -> Option<String> {
    for tool in ["nginx", "unshare", "setpriv"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    let probe = Command::new("unshare")
        .args(["-m", "--propagation", "private", "true"])
        .output();
    match probe {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "unshare -m is not permitted here: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("unshare: {e}")),
    }
}

/// A shell script that rebuilds the unit's file-system view in a new mount
/// namespace (ProtectSystem=strict: every mount read-only but /proc, /sys and
/// /dev; ReadWritePaths= bound read-write, "-" ones only when present), then runs
/// `cmd` with the unit's capability bounding set.
fn sandbox_script(read_write: &[String], caps: &[String], cmd: &str) -> String {
    let rw: Vec<&str> = read_write
        .iter()
        .map(|p| p.trim_start_matches('-'))
        .collect();
    let caps: Vec<String> = caps
        .iter()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    format!(
        r#"set -e
rw="{rw}"
awk '{{print $2}}' /proc/self/mounts | sort -u | while read -r m; do
  case "$m" in /proc*|/sys*|/dev*) continue;; esac
  mount -o remount,bind,ro "$m" 2>/dev/null || true
done
for p in $rw; do
  [ -e "$p" ] || continue
  mount --bind "$p" "$p"
  mount -o remount,bind,rw "$p"
done
if touch /etc/.cas-renewd-sandbox-probe 2>/dev/null; then
  rm -f /etc/.cas-renewd-sandbox-probe; echo "sandbox: / is still writable" >&2; exit 97
fi
exec setpriv --bounding-set=-all,{caps} --inh-caps=-all {cmd}
"#,
        rw = rw.join(" "),
        caps = caps.join(","),
    )
}

fn in_sandbox(read_write: &[String], caps: &[String], cmd: &str) -> Output {
    Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(sandbox_script(read_write, caps, cmd))
        .output()
        .expect("unshare runs")
}

/// nginx as the Debian package sets it up: its pid file exists while it runs.
struct PidFile(Option<PathBuf>);

impl PidFile {
    fn ensure(path: &str) -> PidFile {
        let p = PathBuf::from(path);
        if p.exists() {
            PidFile(None)
        } else {
            std::fs::write(&p, "").expect("pid file");
            PidFile(Some(p))
        }
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[test]
fn nginx_t_works_from_a_hook_in_the_shipped_sandbox() {
    if let Some(why) = sandbox_unavailable() {
        assert!(
            std::env::var_os("CAS_RENEWD_E2E").is_none(),
            "CAS_RENEWD_E2E=1 but {why}"
        );
        eprintln!("skipped: {why}");
        return;
    }
    if !Path::new("/etc/nginx/nginx.conf").exists() {
        eprintln!("skipped: no /etc/nginx/nginx.conf (Debian package nginx)");
        return;
    }
    let read_write = unit_values("ReadWritePaths");
    let caps = unit_values("CapabilityBoundingSet");
    // As while nginx runs (nginx -t opens its pid file); removed after if made here.
    let _pid = PidFile::ensure("/run/nginx.pid");
    let o = in_sandbox(&read_write, &caps, "nginx -t");
    assert!(
        o.status.success(),
        "nginx -t in the unit's sandbox ({read_write:?}, {caps:?}): {}",
        show(&o)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("test is successful"));

    // The same check fails under the unit before this change (output root only,
    // CAP_CHOWN only), so the sandbox above is real and the test can fail.
    let o = in_sandbox(
        &["/etc/ssl/cas-renewd".to_owned()],
        &["CAP_CHOWN".to_owned()],
        "nginx -t",
    );
    assert!(!o.status.success(), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Read-only file system"),
        "{}",
        show(&o)
    );
}
