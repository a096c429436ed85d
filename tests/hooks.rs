//! Hooks as certbot users know them, through the real binary against the
//! simulator: `per_certificate: true` runs a hook once per certificate with single
//! values, and `hooks_dir` runs every program of a directory after an install, once
//! per certificate, in name order, after the named hooks.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use common::{Cert, TestEnv, show};

const WWW_API: &str = "orders:\n  - { domain: www.example.com, expires_in: 20d }\n  - { domain: api.example.com, expires_in: 10d }\nissuance: { polls_before_issued: 1 }\n";

fn program(dir: &Path, name: &str, body: &str, mode: u32) {
    let p = dir.join(name);
    std::fs::write(&p, body).expect("write program");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// `deploy.d` (0755) in the test's directory, and the log file its programs append to.
fn deploy_dir(w: &TestEnv) -> (PathBuf, PathBuf) {
    let deploy = w.path("deploy.d");
    std::fs::create_dir(&deploy).expect("mkdir");
    std::fs::set_permissions(&deploy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (deploy, w.path("log"))
}

/// The lines of `log` (each hook appends one), sorted where the order between
/// certificates is not part of the contract.
fn lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn per_certificate_hooks_and_the_hooks_dir_run_once_per_certificate() {
    let w = TestEnv::builder(WWW_API)
        .extra(concat!(
            "hooks:\n",
            "  merged: { command: [\"/bin/sh\", \"-c\", \"echo merged $CAS_RENEWD_CERT_NAME >> {d}/log\"] }\n",
            "  single: { per_certificate: true, command: [\"/bin/sh\", \"-c\", \"echo single $CAS_RENEWD_CERT_NAME $CAS_RENEWD_DOMAIN >> {d}/log\"] }\n",
            "hooks_dir: {d}/deploy.d\n",
            "defaults: { reload: [merged, single] }\n",
        ))
        .certs([
            Cert::new("www", "www.example.com"),
            Cert::new("api", "api.example.com"),
        ])
        .start()
        .await;
    let (deploy, log) = deploy_dir(&w);
    let append = |tag: &str| {
        format!(
            "#!/bin/sh\necho {tag} $CAS_RENEWD_CERT_NAME $CAS_RENEWD_FULLCHAIN_PATH >> {}\n",
            log.display()
        )
    };
    program(&deploy, "20-second", &append("dir-20"), 0o755);
    program(&deploy, "10-first", &append("dir-10"), 0o700);
    program(&deploy, "README", "not a program", 0o644);

    let o = w.once().await;
    assert!(o.status.success(), "{}", show(&o));
    let got = lines(&log);
    // The merged hook once for both, comma-joined (the order of names follows the
    // configuration); the per-certificate hook and each program once per name.
    assert_eq!(
        got.iter().filter(|l| l.starts_with("merged ")).count(),
        1,
        "{got:?}"
    );
    assert!(got.contains(&"merged www,api".to_owned()), "{got:?}");
    for (name, domain) in [("www", "www.example.com"), ("api", "api.example.com")] {
        assert!(got.contains(&format!("single {name} {domain}")), "{got:?}");
        let fullchain = w.path(&format!("out/{name}/fullchain.pem"));
        let mine: Vec<&String> = got
            .iter()
            .filter(|l| l.starts_with("dir-") && l.contains(&format!(" {name} ")))
            .collect();
        assert_eq!(
            mine,
            [
                &format!("dir-10 {name} {}", fullchain.display()),
                &format!("dir-20 {name} {}", fullchain.display())
            ],
            "{got:?}"
        );
    }
    // The directory comes after the named hooks.
    let first_dir = got.iter().position(|l| l.starts_with("dir-"));
    let last_named = got.iter().rposition(|l| !l.starts_with("dir-"));
    assert!(first_dir > last_named, "{got:?}");
    assert_eq!(got.len(), 1 + 2 + 4, "README is not run: {got:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("hooks_dir entry skipped") && err.contains("not executable"),
        "{err}"
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("hook single (www): ok"), "{out}");
    assert!(out.contains("hook (hooks_dir) (api): ok"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unsafe_or_failing_hooks_dir_is_retried_without_renewing_again() {
    let w = TestEnv::builder(WWW_API)
        .extra("hooks_dir: {d}/deploy.d\n")
        .certs([Cert::new("www", "www.example.com")])
        .start()
        .await;
    let (deploy, log) = deploy_dir(&w);
    program(
        &deploy,
        "10-open",
        &format!("#!/bin/sh\necho ran >> {}\n", log.display()),
        0o777,
    );

    let o = w.once().await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("writable by group or others (mode 0777)") && out.contains("chmod go-w"),
        "{}",
        show(&o)
    );
    assert!(lines(&log).is_empty(), "an unsafe program never runs");
    assert!(w.installed("www").is_some(), "installed before the hooks");

    std::fs::set_permissions(
        deploy.join("10-open"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    let o = w.once().await;
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(lines(&log), ["ran"]);
    assert_eq!(w.renew_calls(), serde_json::json!({ "100001": 1 }));
}
