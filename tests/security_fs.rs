//! Issue 15, the file-system part, through the real binary: planted FIFOs and
//! symlinks, insecure or symlinked output directories, umask 000, a SIGKILL between
//! the renames of one install, and a configuration path that is not a file.

mod common;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _, symlink};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cas_renewd::pki::{self, Key};
use common::process::BIN;
use common::{DaemonProcess, TestEnv, show};

/// A simulator with `scenario` and a config whose `certificates:` list is `certs`
/// (`{d}` stands for the scratch directory).
async fn world(scenario: &str, extra: &str, certs: &str) -> TestEnv {
    TestEnv::builder(scenario)
        .key("k", "s")
        .api(", max_attempts: 3")
        .renewal(Some(
            "poll_interval: 100ms, poll_max_interval: 200ms, issuance_timeout: 20s",
        ))
        .extra("metrics: { listen: \"127.0.0.1:0\" }\n")
        .extra(extra)
        .certs_yaml(certs)
        .start()
        .await
}

fn mkfifo(p: &Path) {
    let st = Command::new("mkfifo").arg(p).status().expect("mkfifo");
    assert!(st.success());
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .mode()
        & 0o7777
}

/// The installed set agrees: the key fits cert.pem, and fullchain starts with it.
fn pair_matches(dir: &Path) -> bool {
    let read = |n: &str| std::fs::read_to_string(dir.join(n)).ok();
    let (Some(cert), Some(key), Some(full)) =
        (read("cert.pem"), read("privkey.pem"), read("fullchain.pem"))
    else {
        return false;
    };
    let leaf = pki::read_leaf(&cert).expect("leaf");
    let key = Key::from_pem(&key).expect("key parses");
    full.starts_with(&cert) && key.spki_sha256() == leaf.spki_sha256
}

fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("ls")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

const ONE_ORDER: &str = "orders:\n  - { domain: www.example.com, expires_in: 20d }\nissuance: { polls_before_issued: 1 }\n";
const WWW: &str = "  - { name: www, domain: www.example.com, output: { dir: \"{d}/out/www\" } }\n";
const NO_START_PASS: &str =
    "schedule: { cron: \"0 17 3 1 1 *\", jitter: 0s, run_at_start: false }\n";

/// Item 1: a FIFO named cert.pem wedged `run` at start, and SIGTERM was then
/// caught but never acted on.
#[tokio::test(flavor = "multi_thread")]
async fn a_fifo_cert_pem_neither_wedges_start_nor_blocks_sigterm() {
    let w = world(ONE_ORDER, NO_START_PASS, WWW).await;
    let out = w.path("out/www");
    std::fs::create_dir_all(&out).expect("mkdir");
    mkfifo(&out.join("cert.pem"));
    let mut child = DaemonProcess::spawn(&w, &[]);
    child.wait_log("scheduled");
    child.signal("-TERM");
    let st = child.wait_exit(Duration::from_secs(10), "run after SIGTERM");
    assert!(st.success(), "{st:?}");

    // SIGTERM straight after the start, whatever the daemon is doing by then.
    let mut child = DaemonProcess::spawn(&w, &[]);
    std::thread::sleep(Duration::from_millis(30));
    child.signal("-TERM");
    child.wait_exit(Duration::from_secs(10), "run after an early SIGTERM");
}

/// Item 1: `once` and `status` read cert.pem and privkey.pem through the safe
/// reader: a FIFO or a symlink to another file is refused, never blocked on or read.
#[tokio::test(flavor = "multi_thread")]
async fn status_and_once_do_not_block_on_or_follow_planted_files() {
    let w = world(
        ONE_ORDER,
        "",
        "  - { name: www, domain: www.example.com, output: { dir: \"{d}/out/www\" }, key: { reuse: true } }\n",
    )
    .await;
    let out = w.path("out/www");
    std::fs::create_dir_all(&out).expect("mkdir");
    mkfifo(&out.join("cert.pem"));
    mkfifo(&out.join("privkey.pem"));
    let mut child = DaemonProcess::start(w.command(&["status"]), w.path("status.log"));
    child.wait_exit(Duration::from_secs(20), "status with a FIFO cert.pem");

    let mut child = DaemonProcess::start(w.command(&["once"]), w.path("once.log"));
    let st = child.wait_exit(Duration::from_secs(40), "once with FIFOs in place");
    assert!(st.success(), "{st:?}");
    assert!(pair_matches(&out), "the FIFOs were replaced by a whole set");
}

/// Items 1 and 9: an output directory others can write to, or that is a link to
/// such a place, is refused with the fix; the other certificate is still served.
#[tokio::test(flavor = "multi_thread")]
async fn insecure_or_linked_output_dirs_are_refused_and_others_still_served() {
    let w = world(
        "orders:\n  - { domain: www.example.com, expires_in: 200d }\n  - { domain: api.example.com, expires_in: 200d }\n  - { domain: cdn.example.com, expires_in: 200d }\n",
        "",
        "  - { name: www, domain: www.example.com, output: { dir: \"{d}/out/www\" } }\n  - { name: api, domain: api.example.com, output: { dir: \"{d}/out/api\" } }\n  - { name: cdn, domain: cdn.example.com, output: { dir: \"{d}/out/cdn\" } }\n",
    )
    .await;
    std::fs::create_dir_all(w.path("out/api")).expect("mkdir");
    std::fs::set_permissions(w.path("out/api"), std::fs::Permissions::from_mode(0o777))
        .expect("chmod");
    let elsewhere = w.path("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    std::os::unix::fs::chown(&elsewhere, Some(65534), None).expect("chown");
    symlink(&elsewhere, w.path("out/cdn")).expect("symlink");

    let o = w.output(w.command(&["once"])).await;
    let text = show(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(pair_matches(&w.path("out/www")), "{text}");
    assert!(
        text.contains(&format!("chmod go-w {}", w.path("out/api").display())),
        "{text}"
    );
    assert!(
        text.contains(&format!("chown root {}", elsewhere.display())),
        "{text}"
    );
    assert!(!w.path("out/api/cert.pem").exists());
    assert_eq!(std::fs::read_dir(&elsewhere).expect("ls").count(), 0);

    // The operator accepts the risk for `api` explicitly.
    let cfg = std::fs::read_to_string(w.config_path()).expect("config");
    let api_dir = format!("dir: \"{}\"", w.path("out/api").display());
    assert!(cfg.contains(&api_dir), "{cfg}");
    let cfg = cfg.replace(&api_dir, &format!("{api_dir}, allow_insecure_dir: true"));
    std::fs::write(w.config_path(), cfg).expect("config");
    let o = w.output(w.command(&["once"])).await;
    assert!(pair_matches(&w.path("out/api")), "{}", show(&o));
    assert_eq!(std::fs::read_dir(&elsewhere).expect("ls").count(), 0);
}

/// One `once` for www.example.com whose order CAS validates by FILE under
/// `webroot`; the output of the run.
async fn once_with_file_validation(webroot: &Path) -> String {
    let wr = webroot.display();
    let w = world(
        &format!(
            "orders:\n  - {{ domain: www.example.com, expires_in: 20d }}\nissuance: {{ polls_before_issued: 1, validation: file, webroot: {wr} }}\n"
        ),
        "",
        &format!(
            "  - {{ name: www, domain: www.example.com, output: {{ dir: \"{{d}}/out/www\" }}, validation: {{ method: file, webroot: {wr} }} }}\n"
        ),
    )
    .await;
    let o = w.output(w.command(&["once"])).await;
    show(&o)
}

/// Item 9: a `.well-known` link out of the web root does not lead the validation
/// file outside it.
#[tokio::test(flavor = "multi_thread")]
async fn a_web_root_link_cannot_lead_the_validation_file_outside() {
    let d = tempfile::tempdir().expect("tempdir");
    let webroot = d.path().join("www");
    let outside = d.path().join("outside");
    std::fs::create_dir_all(&webroot).expect("mkdir");
    std::fs::create_dir_all(&outside).expect("mkdir");
    symlink(&outside, webroot.join(".well-known")).expect("symlink");
    let text = once_with_file_validation(&webroot).await;
    assert_eq!(
        std::fs::read_dir(&outside).expect("ls").count(),
        0,
        "nothing written outside the web root\n{text}"
    );
    assert!(
        text.contains("outside the directory it must stay in"),
        "{text}"
    );
}

/// A file already at the validation Uri with other content is someone else's:
/// it is neither overwritten nor deleted afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn a_validation_file_someone_else_wrote_is_left_alone() {
    let d = tempfile::tempdir().expect("tempdir");
    let webroot = d.path().join("www");
    let dcv = webroot.join(".well-known/pki-validation");
    std::fs::create_dir_all(&dcv).expect("mkdir");
    std::fs::write(dcv.join("fileauth.txt"), "the operator's file\n").expect("write");
    let text = once_with_file_validation(&webroot).await;
    assert_eq!(
        std::fs::read_to_string(dcv.join("fileauth.txt")).expect("still there"),
        "the operator's file\n",
        "{text}"
    );
    assert!(text.contains("already exists with other content"), "{text}");
}

/// Item 10: under umask 000 every directory cas-renewd makes has its own mode.
#[tokio::test(flavor = "multi_thread")]
async fn directories_made_under_umask_000_are_not_world_writable() {
    let w = world(
        ONE_ORDER,
        "",
        "  - { name: www, domain: www.example.com, output: { dir: \"{d}/out/nested/www\" } }\n",
    )
    .await;
    // The state directory and its parent are made by cas-renewd too.
    let cfg = std::fs::read_to_string(w.config_path()).expect("config");
    let cfg = cfg.replace("/state\n", "/var/lib/state\n");
    std::fs::write(w.config_path(), cfg).expect("config");
    let o = w
        .output({
            let mut c = Command::new("/bin/sh");
            c.env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
                .args(["-c", "umask 000; exec \"$0\" --config \"$1\" once", BIN])
                .arg(w.config_path());
            c
        })
        .await;
    assert!(o.status.success(), "{}", show(&o));
    let out = w.path("out/nested/www");
    assert!(out.join(".history").is_dir(), "a renewal replaced a set");
    for (p, want) in [
        (w.path("out"), 0o755),
        (w.path("out/nested"), 0o755),
        (out.clone(), 0o755),
        (out.join(".history"), 0o700),
        (w.path("var"), 0o755),
        (w.path("var/lib"), 0o755),
        (w.path("var/lib/state"), 0o700),
        (w.path("var/lib/state/journal"), 0o700),
    ] {
        assert_eq!(mode(&p), want, "{}", p.display());
    }
    for v in std::fs::read_dir(out.join(".history"))
        .expect("ls")
        .flatten()
    {
        assert_eq!(mode(&v.path()), 0o700, "{}", v.path().display());
    }
}

/// Item 11: SIGKILL between the renames of one install, then `run` (no pass at
/// start): the set is whole again before any pass, and no temporary is left. Once
/// in the first install (the key exists only in a temporary), once in a renewal's
/// (the journal holds the issued certificate).
#[tokio::test(flavor = "multi_thread")]
async fn a_kill_between_renames_is_repaired_at_start() {
    for first_install in [true, false] {
        let w = world(ONE_ORDER, NO_START_PASS, WWW).await;
        let out = w.path("out/www");
        if !first_install {
            // Install the order's certificate, then stop as the renewal starts.
            let o = w
                .run_with_env(&["once"], &[("CAS_RENEWD_CRASH_AT", "after-key-ready")])
                .await;
            assert!(pair_matches(&out), "{}", show(&o));
        }
        w.once_crashing_at("between-install-renames").await;
        assert!(!pair_matches(&out), "the kill tore the set");
        assert!(
            !temporaries(&out).is_empty(),
            "the new key is in a temporary"
        );

        let mut child = DaemonProcess::spawn(&w, &[]);
        let text = child.wait_log("scheduled");
        child.signal("-TERM");
        child.wait_exit(Duration::from_secs(10), "run after SIGTERM");
        let how = if first_install {
            "repaired=from the interrupted install's temporary files"
        } else {
            "repaired=from the journal"
        };
        assert!(text.contains("repaired") && text.contains(how), "{text}");
        assert!(pair_matches(&out), "{text}");
        assert_eq!(temporaries(&out), Vec::<String>::new(), "{text}");
        for sub in ["state", "state/journal", "state/keys", "state/issued"] {
            assert_eq!(temporaries(&w.path(sub)), Vec::<String>::new(), "{sub}");
        }
    }
}

/// Item 13: `--config /dev/zero` or a FIFO is refused at once, naming the path.
#[test]
fn a_config_that_is_not_a_regular_file_is_refused_promptly() {
    let d = tempfile::tempdir().expect("tempdir");
    let fifo = d.path().join("config.yaml");
    mkfifo(&fifo);
    let link = d.path().join("link.yaml");
    symlink(&fifo, &link).expect("symlink");
    for path in [Path::new("/dev/zero"), fifo.as_path(), link.as_path()] {
        let mut c = Command::new(BIN);
        c.arg("--config").arg(path).arg("check-config");
        let mut child = DaemonProcess::start(c, d.path().join("check.log"));
        let st = child.wait_exit(Duration::from_secs(10), "check-config");
        let err = child.log();
        assert_eq!(st.code(), Some(2), "{}: {err}", path.display());
        assert!(
            err.contains(&*path.to_string_lossy()) && err.contains("not a regular file"),
            "{err}"
        );
    }
    // A symlink to a real configuration is still fine (configuration management).
    let real = d.path().join("real.yaml");
    std::fs::write(
        &real,
        "credentials: { access_key_id: k, access_key_secret: s }\ncertificates:\n  - { name: www, domain: www.example.com }\n",
    )
    .expect("write");
    let link = d.path().join("real-link.yaml");
    symlink(&real, &link).expect("symlink");
    let o = Command::new(BIN)
        .arg("--config")
        .arg(&link)
        .arg("check-config")
        .output()
        .expect("check-config");
    assert!(o.status.success(), "{}", show(&o));
}
