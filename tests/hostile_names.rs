//! Names CAS reports must never steer the daemon: the real binary against the
//! simulator with look-alike, colliding, path-like and control-character domains
//! under `discover`, and what `list`, `status`, the hooks and the text log show.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use cas_renewd::pki;
use cas_renewd::renew::{Outcome, PassOptions};
use common::{TestEnv, show};

/// A simulator holding one order (expiring in 200 days) per domain, and a
/// configuration with `discover: { keyword, output_root: <tmp>/out }`, a hook
/// that records what it is told, and `rest` (e.g. `certificates:`).
async fn world(domains: &[&str], keyword: &str, rest: &str) -> TestEnv {
    let mut scenario = String::from("orders:\n");
    for d in domains {
        // JSON strings are YAML double-quoted scalars: any byte gets through.
        let quoted = serde_json::to_string(d).expect("json string");
        scenario.push_str(&format!("  - {{ domain: {quoted}, expires_in: 200d }}\n"));
    }
    let keyword = serde_json::to_string(keyword).expect("json string");
    TestEnv::builder(&scenario)
        .key("k", "s")
        .extra(&format!("discover: {{ keyword: {keyword}, output_root: {{d}}/out }}\nhooks: {{ rec: {{ command: [\"/bin/sh\", \"-c\", \"printf '%s\\\\n%s\\\\n' \\\"$CAS_RENEWD_DOMAIN\\\" \\\"$CAS_RENEWD_CERT_PATH\\\" >> {{d}}/hook-env\"] }} }}\ndefaults: {{ reload: [rec] }}\n{rest}"))
        .start()
        .await
}

fn status_rows(o: &Output) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status JSON");
    v.as_array().cloned().expect("array")
}

/// The leaf installed in `out/<dir>`.
fn leaf(w: &TestEnv, dir: &str) -> pki::CertInfo {
    let pem = std::fs::read_to_string(w.path(&format!("out/{dir}/cert.pem")))
        .unwrap_or_else(|e| panic!("out/{dir}/cert.pem: {e}"));
    pki::read_leaf(&pem).expect("leaf")
}

/// Entries directly in `out/`.
fn out_entries(w: &TestEnv) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(w.path("out"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// What the hook was told, one value a line (domain, cert path, ...).
fn hook_env(w: &TestEnv) -> Vec<String> {
    std::fs::read_to_string(w.path("hook-env"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Every file and directory under `root`, relative to it.
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_owned()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).expect("under root").to_owned());
            if e.file_type().expect("file type").is_dir() {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Item 3: an account domain `www example.com` used to take the name
/// `www_example_com` first, and the real `www.example.com` silently stopped being
/// managed (one WARN, exit 0, absent from `status`).
#[tokio::test(flavor = "multi_thread")]
async fn a_look_alike_domain_cannot_displace_the_real_one() {
    let w = world(&["www example.com", "www.example.com"], "example.com", "").await;
    let o = w.run(&["once"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("domain=www example.com") && stderr.contains("is not a valid domain name"),
        "the invalid domain is reported: {}",
        show(&o)
    );
    assert_eq!(out_entries(&w), ["www.example.com"], "{}", show(&o));
    assert!(
        leaf(&w, "www.example.com")
            .dns_names
            .contains(&"www.example.com".to_owned())
    );
    assert_eq!(
        hook_env(&w),
        [
            "www.example.com".to_owned(),
            w.path("out/www.example.com/cert.pem").display().to_string()
        ],
        "only the checked domain reaches the hook"
    );
    let st = w.run(&["status", "--json"]).await;
    assert_eq!(st.status.code(), Some(0), "{}", show(&st));
    let rows = status_rows(&st);
    let names: Vec<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["www_example_com"], "{}", show(&st));
    assert_eq!(rows[0]["domain"], "www.example.com");
}

/// Item 3: two valid domains with one name (`*.example.com` and
/// `wildcard.example.com`), a discovered domain with a configured certificate's
/// name, and one with a configured certificate's directory are all blocked:
/// visible in `once` (exit 1), `status` and the metrics; the others are managed.
#[tokio::test(flavor = "multi_thread")]
async fn domains_that_collide_after_naming_are_blocked_visibly() {
    let domains = [
        "*.example.com",
        "wildcard.example.com",
        "www.example.com",
        "mail.example.com",
        "api.example.com",
        "shop.example.com",
        "ok.example.com",
    ];
    // The configuration needs the temporary directory's path: write it after.
    let w = world(&domains, "example.com", "").await;
    let d = w.dir().display();
    let text = std::fs::read_to_string(w.config_path()).expect("config");
    std::fs::write(
        w.config_path(),
        format!(
            "{text}certificates:\n  - {{ name: www_example_com, domain: api.example.com, output: {{ dir: {d}/api }} }}\n  - {{ name: shop, domain: shop.example.com, output: {{ dir: {d}/out/mail.example.com }} }}\n"
        ),
    )
    .expect("config");

    let o = w.run(&["once"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    for blocked in [
        "discovered:*.example.com",
        "discovered:wildcard.example.com",
        "discovered:www.example.com",
        "discovered:mail.example.com",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(blocked) && l.contains("BLOCKED")),
            "{blocked}: {}",
            show(&o)
        );
    }
    // Nothing was installed for a blocked domain; the others are in place.
    assert_eq!(
        out_entries(&w),
        ["mail.example.com", "ok.example.com"],
        "{}",
        show(&o)
    );
    assert!(
        leaf(&w, "mail.example.com")
            .dns_names
            .contains(&"shop.example.com".to_owned()),
        "the configured certificate keeps its directory"
    );
    let api = std::fs::read_to_string(w.path("api/cert.pem")).expect("api installed");
    assert!(
        pki::read_leaf(&api)
            .expect("leaf")
            .dns_names
            .contains(&"api.example.com".to_owned())
    );

    // Blocked discovered domains are known from CAS's list only: `--online`.
    let st = w.run(&["status", "--online", "--json"]).await;
    assert_eq!(
        st.status.code(),
        Some(2),
        "blocked is CRITICAL: {}",
        show(&st)
    );
    let rows = status_rows(&st);
    let blocked: Vec<&str> = rows
        .iter()
        .filter(|r| r["next_action"] == "blocked")
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(
        blocked,
        [
            "discovered:*.example.com",
            "discovered:mail.example.com",
            "discovered:wildcard.example.com",
            "discovered:www.example.com"
        ],
        "{}",
        show(&st)
    );
    let wild = rows
        .iter()
        .find(|r| r["name"] == "discovered:*.example.com")
        .expect("row");
    let reason = wild["reason"].as_str().expect("reason");
    assert!(
        reason.contains("wildcard.example.com") && reason.contains("wildcard_example_com"),
        "{reason}"
    );
    // Offline, the last pass remembers them: the same blocked rows, CRITICAL.
    let off = w.run(&["status", "--json"]).await;
    assert_eq!(off.status.code(), Some(2), "{}", show(&off));
    let off_blocked: Vec<String> = status_rows(&off)
        .iter()
        .filter(|r| r["next_action"] == "blocked")
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(off_blocked, blocked, "{}", show(&off));
    // One table line per row (and one per last error) after the header, whatever
    // the names and reasons hold.
    let table = w.run(&["status", "--online"]).await;
    let text = String::from_utf8_lossy(&table.stdout);
    let header = text
        .lines()
        .position(|l| l.starts_with("NAME "))
        .expect("table header");
    let errors = rows.iter().filter(|r| !r["last_error"].is_null()).count();
    assert_eq!(
        text.lines().count() - header - 1,
        rows.len() + errors,
        "{}",
        show(&table)
    );

    // The same pass in-process, for the metrics the daemon would serve.
    let engine = w.engine();
    let report = engine.pass(&PassOptions::default()).await.expect("pass");
    assert!(!report.ok());
    let outcome = |name: &str| {
        report
            .certs
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.outcome)
    };
    assert_eq!(
        outcome("discovered:wildcard.example.com"),
        Some(Outcome::Blocked)
    );
    assert_eq!(outcome("ok_example_com"), Some(Outcome::Unchanged));
    let m = engine.metrics().render();
    for line in [
        "cas_renewd_renewals_total{cert=\"discovered:wildcard.example.com\",result=\"blocked\"} 1",
        "cas_renewd_certificate_ready{cert=\"discovered:wildcard.example.com\"} 0",
        "cas_renewd_certificate_ready{cert=\"ok_example_com\"} 1",
    ] {
        assert!(m.lines().any(|l| l == line), "{line}\n{m}");
    }
    // Each renew was for a managed certificate only; nothing was spent.
    assert_eq!(w.sim.state()["renew_calls"], serde_json::json!({}));
}

/// Item 4: `..`, `.` and path-like domains used to become output directories
/// (`..` wrote the PEM files into the parent of `output_root`). Whatever the
/// keyword, nothing lands outside `output_root/<valid domain>` and the state.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_domains_never_become_paths() {
    let long = format!("{}.example", "a".repeat(292));
    assert_eq!(long.len(), 300);
    let domains = [
        "..",
        ".",
        "a/../../etc",
        "foo/bar",
        "foo/bar.example",
        "",
        "-x.com",
        &long,
        "nul\0.example.com",
        "new\nline.example.com",
        "www example.com",
        "bücher.example",
        "xn--bcher-kva.example",
        "ok.example.com",
    ];
    for keyword in [".", "/"] {
        let w = world(&domains, keyword, "").await;
        let o = w.run(&["once"]).await;
        let expected: &[&str] = match keyword {
            "." => &["ok.example.com", "xn--bcher-kva.example"],
            _ => &[],
        };
        for p in walk(w.dir()) {
            let mut parts = p.components().map(|c| c.as_os_str().to_string_lossy());
            let top = parts.next().unwrap_or_default();
            let ok = match top.as_ref() {
                "config.yaml" | "hook-env" | "state" => true,
                "out" => parts
                    .next()
                    .is_none_or(|child| expected.contains(&child.as_ref())),
                _ => false,
            };
            assert!(ok, "keyword {keyword:?}: unexpected {}", p.display());
        }
        assert_eq!(
            out_entries(&w),
            expected,
            "keyword {keyword:?}: {}",
            show(&o)
        );
        assert_eq!(
            o.status.code(),
            Some(0),
            "keyword {keyword:?}: {}",
            show(&o)
        );
        // The hook saw checked domains and paths under `out` only.
        for line in hook_env(&w) {
            for v in line.split(',') {
                assert!(
                    expected.contains(&v)
                        || expected.iter().any(
                            |e| v == w.path(&format!("out/{e}/cert.pem")).display().to_string()
                        ),
                    "keyword {keyword:?}: hook told {v:?}"
                );
            }
        }
        let stderr = String::from_utf8_lossy(&o.stderr);
        if keyword == "." {
            for shown in [
                "domain=..",
                "domain=new\\nline.example.com",
                "domain=nul\\x00",
            ] {
                assert!(
                    stderr
                        .lines()
                        .any(|l| l.contains(shown) && l.contains("WARN")),
                    "{shown}: {}",
                    show(&o)
                );
            }
        }
    }
}

/// Item 12: `list` printed domains raw, so an ESC sequence reached the terminal
/// and a newline forged a row.
#[tokio::test(flavor = "multi_thread")]
async fn list_escapes_control_characters_in_domains() {
    // Lower-case: the simulator stores domains as CAS reports them, lower-cased.
    let evil = "evil\x1b[2j\x1b]0;owned\x07\nforged.example.com  1  issued";
    let w = world(
        &[evil, "ok.example.com", "bidi\u{202e}moc.example"],
        "example",
        "",
    )
    .await;
    let o = w.run(&["list"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(!o.stdout.contains(&0x1b), "{}", show(&o));
    assert!(!o.stdout.contains(&0x07), "{}", show(&o));
    let stdout = String::from_utf8(o.stdout.clone()).expect("utf8");
    assert!(stdout.is_ascii(), "{stdout}");
    assert_eq!(stdout.lines().count(), 4, "header and three rows: {stdout}");
    assert!(
        stdout.contains("evil\\x1b[2j\\x1b]0;owned\\x07\\nforged.example.com  1  issued  "),
        "{stdout}"
    );
    assert!(stdout.contains("bidi\\u{202e}moc.example"), "{stdout}");
    // JSON keeps the exact names.
    let j = w.run(&["list", "--json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).expect("json");
    assert!(
        v.as_array()
            .expect("array")
            .iter()
            .any(|r| r["domain"] == evil)
    );
}

/// Item 12: a domain with a newline used to start a forged line in the text log.
#[tokio::test(flavor = "multi_thread")]
async fn a_newline_in_a_domain_cannot_forge_a_log_line() {
    // Lower-case: the simulator lower-cases domains.
    let forged = "2030-01-01t00:00:00.000000z error cas_renewd: forged";
    let evil = format!("x.example.com\n{forged}");
    let w = world(&[&evil, "ok.example.com"], "example.com", "").await;
    let o = w.run(&["once"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(&format!("x.example.com\\n{forged}")),
        "{}",
        show(&o)
    );
    assert!(
        !stderr.lines().any(|l| l.starts_with("2030-01-01")),
        "a forged line: {}",
        show(&o)
    );
    assert!(!stderr.contains('\x1b'));
    assert_eq!(out_entries(&w), ["ok.example.com"], "{}", show(&o));
}
