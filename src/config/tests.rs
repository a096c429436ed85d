//! Configuration tests: the example, defaults, and one case per rejected input class.

use std::net::SocketAddr;
use std::time::Duration;

use super::*;

const MINIMAL: &str = "certificates:\n  - name: www\n    domain: www.example.com\n";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/cas-renewd/test.yaml"))
}

/// Parses `text`, expects exactly one problem, and returns it.
fn one_problem(text: &str) -> Problem {
    match parse(text) {
        Ok(_) => panic!("accepted invalid config:\n{text}"),
        Err(e) => {
            let p = e.problems();
            assert_eq!(p.len(), 1, "expected one problem, got: {e}");
            p[0].clone()
        }
    }
}

#[test]
fn example_config_is_valid() {
    // The example gives keys to Debian's ssl-cert group; loading checks it exists.
    if crate::accounts::lookup("ssl-cert", crate::accounts::Kind::Group).is_err()
        && std::env::var_os("CAS_RENEWD_E2E").is_none()
    {
        eprintln!(
            "skipped: no ssl-cert group here (Debian package ssl-cert; scripts/test.sh installs it)"
        );
        return;
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/cas-renewd.example.yaml");
    let cfg = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.certificates.len(), 2);
    let www = cfg.certificate("www").expect("www is configured");
    assert_eq!(www.output.key_mode, 0o640);
    assert_eq!(www.reload, vec!["nginx".to_owned()]);
    assert_eq!(
        cfg.certificate("api").map(|c| c.key.algorithm),
        Some(KeyAlgorithm::Rsa2048)
    );
    assert_eq!(cfg.renewal.renew_before, Duration::from_secs(30 * 86_400));
    assert!(matches!(
        cfg.credentials,
        Some(CredentialsConfig::AccessKey {
            secret: SecretSource::File(_),
            ..
        })
    ));
}

#[test]
fn minimal_config_gets_the_documented_defaults() {
    let cfg = parse(MINIMAL).unwrap_or_else(|e| panic!("{e}"));
    let c = &cfg.certificates[0];
    assert_eq!(c.output.dir, Path::new("/etc/ssl/cas-renewd/www"));
    assert_eq!(
        (c.output.key_mode, c.output.cert_mode, c.output.keep),
        (0o600, 0o644, 5)
    );
    assert_eq!(c.key.algorithm, KeyAlgorithm::EcdsaP256);
    assert_eq!(c.validation.method, ValidationMethod::None);
    assert_eq!(cfg.state_dir, Path::new(DEFAULT_STATE_DIR));
    assert_eq!(cfg.api.endpoint.as_str(), "https://cas.aliyuncs.com/");
    assert_eq!(cfg.api.max_attempts, 6);
    assert_eq!(cfg.schedule.cron, "0 17 3 * * *");
    assert_eq!(
        (cfg.schedule.retry_after, cfg.schedule.retry_max),
        (Duration::from_secs(15 * 60), Duration::from_secs(4 * 3600))
    );
    assert_eq!(cfg.metrics.listen, SocketAddr::from(([127, 0, 0, 1], 9797)));
    assert_eq!(cfg.log.format, LogFormat::Text);
}

/// One row per class of bad input: the YAML, the key the message must name, the
/// line and column it must point at, and a phrase of the message.
#[test]
fn each_bad_input_class_is_rejected_with_a_located_message() {
    let cases: &[(&str, &str, &str, u64, u64, &str)] = &[
        (
            "unknown top-level key",
            "renewal:\n  renew_befor: 30d\ncertificates:\n  - name: www\n    domain: www.example.com\n",
            "renewal.renew_befor",
            2,
            3,
            "unknown field `renew_befor`",
        ),
        (
            "unknown nested key",
            "certificates:\n  - name: www\n    domain: www.example.com\n    output:\n      mode: \"0600\"\n",
            "certificates[0].output.mode",
            5,
            7,
            "unknown field `mode`",
        ),
        (
            "bad duration",
            "renewal:\n  renew_before: 30 days please\ncertificates:\n  - name: www\n    domain: www.example.com\n",
            "renewal.renew_before",
            2,
            17,
            "invalid duration",
        ),
        (
            "duration without unit",
            "api:\n  timeout: 30\ncertificates:\n  - name: www\n    domain: www.example.com\n",
            "api.timeout",
            2,
            12,
            "needs a unit",
        ),
        (
            "unquoted file mode",
            "certificates:\n  - name: www\n    domain: www.example.com\n    output:\n      key_mode: 0640\n",
            "certificates[0].output.key_mode",
            5,
            17,
            "not quoted",
        ),
        (
            "invalid file mode digits",
            "certificates:\n  - name: www\n    domain: www.example.com\n    output:\n      key_mode: \"0948\"\n",
            "certificates[0].output.key_mode",
            5,
            17,
            "invalid file mode",
        ),
        (
            "file mode with special bits",
            "certificates:\n  - name: www\n    domain: www.example.com\n    output:\n      cert_mode: \"01777\"\n",
            "certificates[0].output.cert_mode",
            5,
            18,
            "only permission bits",
        ),
        (
            "relative path",
            "state_dir: var/lib/cas-renewd\ncertificates:\n  - name: www\n    domain: www.example.com\n",
            "state_dir",
            1,
            12,
            "is relative",
        ),
        (
            "path with ..",
            "certificates:\n  - name: www\n    domain: www.example.com\n    output:\n      dir: /etc/ssl/../../root\n",
            "certificates[0].output.dir",
            5,
            12,
            "contains `..`",
        ),
        (
            "duplicate certificate name",
            "certificates:\n  - name: www\n    domain: www.example.com\n  - name: www\n    domain: www2.example.com\n",
            "certificates[1].name",
            4,
            11,
            "duplicate certificate name \"www\" (first used at line 2)",
        ),
        (
            "duplicate output directory",
            "certificates:\n  - name: a\n    domain: a.example.com\n    output: { dir: /etc/ssl/x }\n  - name: b\n    domain: b.example.com\n    output: { dir: /etc/ssl/x/ }\n",
            "certificates[1].output.dir",
            7,
            20,
            "also used by certificate \"a\"",
        ),
        (
            "renew_before of zero",
            "renewal:\n  renew_before: 0s\ncertificates:\n  - name: www\n    domain: www.example.com\n",
            "renewal.renew_before",
            2,
            17,
            "greater than 0",
        ),
        (
            "no certificates and no discover",
            "certificates: []\n",
            "certificates",
            1,
            15,
            "nothing to manage",
        ),
        (
            "http endpoint that is not loopback",
            "api:\n  endpoint: http://cas.aliyuncs.com\ncertificates:\n  - name: www\n    domain: www.example.com\n",
            "api.endpoint",
            2,
            13,
            "not loopback",
        ),
        (
            "invalid certificate name",
            "certificates:\n  - name: WWW site\n    domain: www.example.com\n",
            "certificates[0].name",
            2,
            11,
            "must match [a-z0-9_-]+",
        ),
        (
            "reload names an undefined hook",
            "certificates:\n  - name: www\n    domain: www.example.com\n    reload: [apache]\n",
            "certificates[0].reload[0]",
            4,
            14,
            "not defined under `hooks`",
        ),
        (
            "file validation without webroot",
            "certificates:\n  - name: www\n    domain: www.example.com\n    validation: { method: file }\n",
            "certificates[0].validation.webroot",
            4,
            17,
            "needs `webroot`",
        ),
        (
            "unknown key algorithm",
            "defaults:\n  key: { algorithm: rsa-1024 }\ncertificates:\n  - name: www\n    domain: www.example.com\n",
            "defaults.key.algorithm",
            2,
            21,
            "rsa-1024",
        ),
        (
            "bad cron",
            "schedule:\n  cron: \"0 3 * * *\"\ncertificates:\n  - name: www\n    domain: www.example.com\n",
            "schedule.cron",
            2,
            9,
            "has 5 fields",
        ),
        (
            "cron field out of range",
            "schedule:\n  cron: \"0 61 3 * * *\"\ncertificates:\n  - name: www\n    domain: www.example.com\n",
            "schedule.cron",
            2,
            9,
            "is invalid",
        ),
        (
            "bad metrics address",
            "metrics:\n  listen: localhost\ncertificates:\n  - name: www\n    domain: www.example.com\n",
            "metrics.listen",
            2,
            11,
            "not an address:port",
        ),
        (
            "two kinds of credentials",
            "credentials:\n  access_key_id: a\n  access_key_secret: b\n  profile: p\ncertificates:\n  - name: www\n    domain: www.example.com\n",
            "credentials",
            2,
            3,
            "one kind of credentials",
        ),
        (
            "retry backoff capped below its start",
            "schedule:\n  retry_after: 1h\n  retry_max: 30m\ncertificates:\n  - name: www\n    domain: www.example.com\n",
            "schedule.retry_max",
            3,
            14,
            "shorter than schedule.retry_after",
        ),
        (
            "zero retry wait",
            "schedule:\n  retry_after: 0s\ncertificates:\n  - name: www\n    domain: www.example.com\n",
            "schedule.retry_after",
            2,
            16,
            "greater than 0",
        ),
        (
            "poll interval longer than its maximum",
            "renewal:\n  poll_interval: 10m\n  poll_max_interval: 1m\ncertificates:\n  - name: www\n    domain: www.example.com\n",
            "renewal.poll_max_interval",
            3,
            22,
            "shorter than renewal.poll_interval",
        ),
        (
            "wrong type",
            "api:\n  max_attempts: many\ncertificates:\n  - name: www\n    domain: www.example.com\n",
            "api.max_attempts",
            2,
            17,
            "invalid",
        ),
        (
            "YAML syntax error",
            "certificates:\n  - name: www\n   domain: [\n",
            "",
            0,
            0,
            "",
        ),
    ];
    for (class, yaml, key, line, column, phrase) in cases {
        let p = one_problem(yaml);
        let shown = p.to_string();
        assert!(
            shown.starts_with("/etc/cas-renewd/test.yaml:"),
            "{class}: message does not name the file: {shown}"
        );
        if !key.is_empty() {
            assert_eq!(p.key, *key, "{class}: wrong key in: {shown}");
            assert_eq!(
                (p.line, p.column),
                (*line, *column),
                "{class}: wrong place in: {shown}"
            );
            assert!(
                shown.contains(phrase),
                "{class}: {phrase:?} missing from: {shown}"
            );
            assert!(
                shown.contains(&format!(":{line}:{column}: {key}: ")),
                "{class}: header not file:line:column: key: {shown}"
            );
        }
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let yaml = "renewal:\n  renew_before: 0s\ncertificates:\n  - name: www\n    domain: www.example.com\n  - name: www\n    domain: w.example.com\n";
    let err = parse(yaml).expect_err("two problems");
    assert_eq!(err.problems().len(), 2, "{err}");
}

#[test]
fn loopback_http_endpoints_are_allowed() {
    for ep in [
        "http://127.0.0.1:8080",
        "http://[::1]:1",
        "http://localhost:9",
    ] {
        let yaml = format!("api:\n  endpoint: {ep}\n{MINIMAL}");
        parse(&yaml).unwrap_or_else(|e| panic!("{ep}: {e}"));
    }
}

#[test]
fn quoted_modes_are_read_as_octal() {
    for (text, mode) in [
        ("\"0640\"", 0o640),
        ("\"600\"", 0o600),
        ("\"0o600\"", 0o600),
        ("\"0777\"", 0o777),
    ] {
        let yaml = format!("{MINIMAL}    output: {{ key_mode: {text} }}\n");
        let cfg = parse(&yaml).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(cfg.certificates[0].output.key_mode, mode, "{text}");
    }
    for text in ["600", "0600", "0o600", "\"\"", "\"-1\"", "\"07777\""] {
        let yaml = format!("{MINIMAL}    output: {{ key_mode: {text} }}\n");
        assert!(parse(&yaml).is_err(), "{text} accepted");
    }
}

#[test]
fn discover_alone_is_enough() {
    let cfg = parse("discover:\n  keyword: example.com\n  output_root: /etc/ssl/cas-renewd\n")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(cfg.certificates.is_empty());
    assert_eq!(
        cfg.discover.map(|d| d.keyword),
        Some("example.com".to_owned())
    );
}

#[test]
fn alias_bombs_are_refused() {
    let mut yaml = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
    for i in 1..9 {
        let prev = format!("*a{}", i - 1);
        yaml.push_str(&format!(
            "a{i}: &a{i} [{}]\n",
            [prev.as_str(); 9].join(", ")
        ));
    }
    yaml.push_str(MINIMAL);
    let started = std::time::Instant::now();
    assert!(parse(&yaml).is_err());
    // Not a timing assertion on speed, only a guard that parsing did not expand 9^9 nodes.
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn secrets_do_not_show_in_debug_output() {
    let yaml = format!(
        "credentials:\n  access_key_id: LTAIexample\n  access_key_secret: s3cr3t-value-xyz\n  security_token: sts-token-abc\n{MINIMAL}"
    );
    let cfg = parse(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let dbg = format!("{cfg:?}");
    assert!(!dbg.contains("s3cr3t-value-xyz"), "{dbg}");
    assert!(!dbg.contains("sts-token-abc"), "{dbg}");
    assert!(dbg.contains("LTAIexample"));
}

#[test]
fn empty_and_oversized_files_are_refused() {
    assert!(parse("").is_err());
    assert!(parse("   \n# only a comment\n").is_err());
    let dir = tempfile::tempdir().expect("temp dir");
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, vec![b'#'; (MAX_CONFIG_BYTES + 1) as usize]).expect("write");
    assert!(matches!(
        Config::load(&big),
        Err(ConfigError::TooLarge { .. })
    ));
    assert!(matches!(
        Config::load(&dir.path().join("missing.yaml")),
        Err(ConfigError::Read { .. })
    ));
}

#[test]
fn cron_next_fires_are_computed() {
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-28T00:00:00Z")
        .expect("date")
        .with_timezone(&chrono::Utc);
    let next = next_fires("0 17 3 * * *", start, 2);
    assert_eq!(
        next.iter().map(|d| d.to_rfc3339()).collect::<Vec<_>>(),
        ["2026-11-28T03:17:00+00:00", "2026-11-29T03:17:00+00:00"]
    );
}

#[test]
fn configured_domains_get_the_same_check_as_discovered_ones() {
    for (domain, why) in [
        ("\"bücher.example\"", "punycode"),
        ("\"a/../b.example\"", "holds the character '/'"),
        ("\"www example.com\"", "holds the character ' '"),
        ("\"-x.example\"", "starts or ends with a hyphen"),
        ("\"example.com.\"", "trailing dot"),
    ] {
        let p = one_problem(&format!(
            "certificates:\n  - name: www\n    domain: {domain}\n"
        ));
        assert_eq!(p.key, "certificates[0].domain", "{domain}");
        assert!(p.message.contains(why), "{domain}: {}", p.message);
        assert!(
            p.message.contains("is not a valid domain name"),
            "{}",
            p.message
        );
    }
    let cfg = parse("certificates:\n  - name: www\n    domain: xn--bcher-kva.Example\n")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.certificates[0].domain, "xn--bcher-kva.example");
}

#[test]
fn loading_refuses_an_owner_or_group_this_host_does_not_have() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("c.yaml");
    let text = "certificates:\n  - name: www\n    domain: www.example.com\n    output:\n      owner: no-such-user-cas-renewd\n      group: no-such-group-cas-renewd\n";
    std::fs::write(&path, text).expect("write");
    let err = Config::load(&path).expect_err("unknown accounts are refused");
    let problems = err.problems();
    assert_eq!(problems.len(), 2, "{err}");
    assert_eq!(problems[0].key, "certificates[0].output.owner");
    assert_eq!(problems[0].line, 5);
    assert!(
        problems[0]
            .message
            .contains("unknown user \"no-such-user-cas-renewd\""),
        "{err}"
    );
    assert_eq!(problems[1].key, "certificates[0].output.group");
    assert_eq!(problems[1].line, 6);
    assert!(problems[1].message.contains("not in /etc/group"), "{err}");
    // The text alone is valid: `parse` does not look at the host.
    assert!(parse(text).is_ok());

    // root (uid and gid 0) exists everywhere; numeric ids are taken as they are.
    std::fs::write(
        &path,
        "certificates:\n  - name: www\n    domain: www.example.com\n    output: { owner: root, group: \"4242\" }\n",
    )
    .expect("write");
    let cfg = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.certificates[0].output.group.as_deref(), Some("4242"));
}

#[test]
fn api_page_size_defaults_to_50_and_is_bounded() {
    let cfg = parse(MINIMAL).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.api.page_size, 50);
    let cfg =
        parse(&format!("api: {{ page_size: 100 }}\n{MINIMAL}")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.api.page_size, 100);
    for bad in ["0", "101"] {
        let p = one_problem(&format!("api:\n  page_size: {bad}\n{MINIMAL}"));
        assert_eq!(p.key, "api.page_size");
        assert_eq!(p.line, 2);
        assert!(p.message.contains("between 1 and 100"), "{}", p.message);
    }
}

#[test]
fn renewal_mode_is_per_certificate_with_a_default() {
    let cfg = parse(MINIMAL).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.certificates[0].mode, RenewalMode::Renew);
    assert_eq!(cfg.renewal.unclear_retry_after, Duration::from_secs(86_400));
    let text = "renewal: { unclear_retry_after: 2h }\ndefaults: { renewal: { mode: reapply } }\ncertificates:\n  - { name: a, domain: a.example.com }\n  - { name: b, domain: b.example.com, renewal: { mode: renew } }\n";
    let cfg = parse(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.defaults.mode, RenewalMode::Reapply);
    assert_eq!(
        cfg.certificate("a").map(|c| c.mode),
        Some(RenewalMode::Reapply)
    );
    assert_eq!(
        cfg.certificate("b").map(|c| c.mode),
        Some(RenewalMode::Renew)
    );
    assert_eq!(cfg.renewal.unclear_retry_after, Duration::from_secs(7200));
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/cas-renewd.example.yaml");
    let cfg = Config::load(&example).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.defaults.mode, RenewalMode::Renew);
    assert_eq!(cfg.renewal.unclear_retry_after, Duration::from_secs(86_400));
    assert!(
        parse("certificates:\n  - { name: a, domain: a.example.com, renewal: { mode: rebuy } }\n")
            .is_err()
    );
    let p = one_problem(
        "renewal: { unclear_retry_after: 0s }\ncertificates:\n  - { name: a, domain: a.example.com }\n",
    );
    assert_eq!(p.key, "renewal.unclear_retry_after");
}

#[test]
fn type_errors_in_different_sections_are_all_reported() {
    let yaml = "api:\n  timeout: 30\nrenewal:\n  renew_befor: 30d\ncertificates:\n  - name: www\n    domain: www.example.com\n    output:\n      key_mode: 0640\n";
    let err = parse(yaml).expect_err("three problems");
    let found: Vec<(&str, u64, u64)> = err
        .problems()
        .iter()
        .map(|p| (p.key.as_str(), p.line, p.column))
        .collect();
    assert_eq!(
        found,
        [
            ("api.timeout", 2, 12),
            ("renewal.renew_befor", 4, 3),
            ("certificates[0].output.key_mode", 9, 17),
        ],
        "{err}"
    );
    assert!(!err.to_string().contains("not checked"), "{err}");
}

#[test]
fn where_reading_cannot_go_on_the_message_says_so() {
    // An error outside any top-level key: nothing can be cut away to read on.
    let p = one_problem("- name: www\n- name: mail\n");
    assert!(
        p.message
            .ends_with("(the rest of the file was not checked: the YAML cannot be read past it)"),
        "{p}"
    );
    // Anchors: cutting a section could break an alias elsewhere, so reading stops.
    let p = one_problem(
        "api:\n  timeout: &t 30\nrenewal:\n  renew_befor: 30d\ncertificates:\n  - name: www\n    domain: www.example.com\n",
    );
    assert_eq!(p.key, "api.timeout");
    assert!(
        p.message.ends_with(
            "(the rest of the file was not checked: the file uses YAML anchors and aliases)"
        ),
        "{p}"
    );
    // The last error of a file is not followed by such a note.
    let p = one_problem(
        "certificates:\n  - name: www\n    domain: www.example.com\n    output:\n      key_mode: 0640\n",
    );
    assert!(!p.message.contains("not checked"), "{p}");
}

#[test]
fn parser_errors_never_quote_an_inline_secret() {
    // The parser's snippet shows the lines around the error: a secret on the line
    // of (or beside) a mistake must not reach check-config, reload.json or the log.
    let cases = [
        // the wrong type on the secret's own line
        "credentials:\n  access_key_id: LTAIexample\n  access_key_secret: [s3cr3t-value-xyz]\n",
        // an unknown key right under the secret
        "credentials:\n  access_key_id: LTAIexample\n  access_key_secret: s3cr3t-value-xyz\n  security_token: sts-token-abc\n  bogus: 1\n",
        // a syntax error on the secret's line
        "credentials:\n  access_key_id: LTAIexample\n  access_key_secret: \"s3cr3t-value-xyz\n  security_token: sts-token-abc\n",
    ];
    for case in cases {
        let yaml = format!("{case}{MINIMAL}");
        let e = parse(&yaml).expect_err("invalid config accepted");
        let shown = e.to_string();
        assert!(!shown.contains("s3cr3t-value-xyz"), "{shown}");
        assert!(!shown.contains("sts-token-abc"), "{shown}");
        assert!(!format!("{e:?}").contains("s3cr3t-value-xyz"), "{e:?}");
    }
}
