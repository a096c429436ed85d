//! Tests of running one hook: environment, failures, timeouts, output tails.

use super::*;

fn hook(cmd: &[&str], timeout_ms: u64) -> HookSpec {
    HookSpec {
        command: cmd.iter().map(|s| (*s).to_owned()).collect(),
        timeout: Duration::from_millis(timeout_ms),
        per_certificate: false,
    }
}

fn ctx() -> HookContext {
    HookContext {
        cert_name: "www".into(),
        domain: "www.example.com".into(),
        sha256: "AB".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn hooks_get_only_the_documented_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dump = dir.path().join("env");
    let script = format!("env > {}", dump.display());
    run("dump", &hook(&["/bin/sh", "-c", &script], 5000), &ctx())
        .await
        .expect("runs");
    let env = std::fs::read_to_string(&dump).expect("dump");
    assert!(env.contains("CAS_RENEWD_CERT_NAME=www\n"), "{env}");
    assert!(env.contains("CAS_RENEWD_DOMAIN=www.example.com\n"));
    for line in env.lines() {
        let name = line.split('=').next().unwrap_or_default();
        assert!(
            name.starts_with("CAS_RENEWD_") || ["PATH", "PWD", "SHLVL", "_"].contains(&name),
            "unexpected variable {line}"
        );
        assert!(!name.starts_with("ALIBABA_CLOUD_"));
    }
}

#[tokio::test]
async fn failures_and_timeouts_are_reported_with_output() {
    let err = run(
        "bad",
        &hook(&["/bin/sh", "-c", "echo broken config >&2; exit 3"], 5000),
        &ctx(),
    )
    .await
    .expect_err("fails");
    let shown = err.to_string();
    assert!(
        shown.contains("exit status: 3") && shown.contains("broken config"),
        "{shown}"
    );
    let err = run("slow", &hook(&["/bin/sleep", "5"], 200), &ctx())
        .await
        .expect_err("times out");
    assert!(matches!(err, HookError::Timeout { .. }), "{err}");
    let err = run("missing", &hook(&["/nonexistent/program"], 200), &ctx())
        .await
        .expect_err("spawn");
    assert!(matches!(err, HookError::Spawn { .. }), "{err}");
}

/// Whether `pid` names a live process (a zombie is dead: it only waits to be
/// reaped by whoever adopted it).
fn alive(pid: &str) -> bool {
    let probed = std::process::Command::new("kill")
        .args(["-0", pid])
        .stderr(Stdio::null())
        .status()
        .expect("run kill -0");
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = state
        .rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X'));
    probed.success() && !zombie
}

#[tokio::test]
async fn timeout_kills_the_hooks_whole_process_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("pid");
    let script = format!("sleep 300 & echo $! > {}; sleep 300", pidfile.display());
    let err = run("tree", &hook(&["/bin/sh", "-c", &script], 500), &ctx())
        .await
        .expect_err("times out");
    assert!(matches!(err, HookError::Timeout { .. }), "{err}");
    let pid = std::fs::read_to_string(&pidfile).expect("pid written");
    let pid = pid.trim();
    // SIGKILL is delivered at once; the orphan is reaped by init shortly after.
    let mut gone = false;
    for _ in 0..50 {
        if !alive(pid) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !gone {
        let _ = std::process::Command::new("kill")
            .args(["-9", pid])
            .status();
    }
    assert!(
        gone,
        "the hook's background child {pid} outlived the timeout"
    );
}

#[tokio::test]
async fn cancelling_a_running_hook_kills_its_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("pid");
    let script = format!("sleep 300 & echo $! > {}; sleep 300", pidfile.display());
    let task = tokio::spawn(async move {
        let _ = run("tree", &hook(&["/bin/sh", "-c", &script], 600_000), &ctx()).await;
    });
    let mut pid = String::new();
    for _ in 0..50 {
        pid = std::fs::read_to_string(&pidfile).unwrap_or_default();
        if pid.ends_with('\n') {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = pid.trim().to_owned();
    assert!(!pid.is_empty(), "the hook never wrote its child's pid");
    // What a daemon stop does to a running pass.
    task.abort();
    let _ = task.await;
    let mut gone = false;
    for _ in 0..50 {
        if !alive(&pid) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !gone {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid])
            .status();
    }
    assert!(gone, "the cancelled hook's child {pid} lives on");
}

#[tokio::test]
async fn a_hook_flooding_stderr_then_exiting_0_succeeds() {
    let ran = run_captured(
        "noisy",
        &hook(
            &[
                "/bin/sh",
                "-c",
                "head -c 10000000 /dev/zero | tr '\\0' e >&2; echo fine",
            ],
            20_000,
        ),
        &ctx(),
    )
    .await
    .expect("a chatty hook that exits 0 succeeds");
    assert_eq!(ran.stdout_tail, b"fine\n");
    assert_eq!(ran.stderr_tail.len(), OUTPUT_TAIL_BYTES);
    assert!(ran.stderr_tail.iter().all(|b| *b == b'e'));
}

#[tokio::test]
async fn a_background_child_holding_stdout_does_not_hold_the_hook() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("pid");
    let script = format!("sleep 60 & echo $! > {}; echo reloaded", pidfile.display());
    let result = run_captured("bg", &hook(&["/bin/sh", "-c", &script], 10_000), &ctx()).await;
    let pid = std::fs::read_to_string(&pidfile).expect("pid written");
    // A successful hook's children are its business; this test cleans up its own.
    let _ = std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .status();
    let ran = result.expect("exits 0 while its child still holds stdout");
    assert_eq!(ran.stdout_tail, b"reloaded\n");
}

#[tokio::test]
async fn a_flood_of_output_keeps_only_a_bounded_tail() {
    let ran = run_captured(
        "flood",
        &hook(
            &[
                "/bin/sh",
                "-c",
                "head -c 300000000 /dev/zero; printf 'last line'",
            ],
            120_000,
        ),
        &ctx(),
    )
    .await
    .expect("runs");
    assert_eq!(ran.stdout_tail.len(), OUTPUT_TAIL_BYTES);
    assert!(ran.stdout_tail.ends_with(b"\0last line"));
}

#[test]
fn tail_keeps_the_last_bytes_across_chunks() {
    let mut t = Tail::new(4);
    t.push(b"ab");
    t.push(b"cde");
    assert_eq!(t.buf, b"bcde");
    t.push(b"0123456789");
    assert_eq!(t.buf, b"6789");
    t.push(b"x");
    assert_eq!(t.buf, b"789x");
    assert_eq!(t.total, 16);
}

#[test]
fn merged_context_lists_every_certificate() {
    let mut b = ctx();
    b.cert_name = "api".into();
    assert_eq!(HookContext::merge(&[ctx(), b]).cert_name, "www,api");
}
