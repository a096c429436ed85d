//! The log an operator reads, from the real binary against the simulator: a
//! retried failure is one WARN line per retry, the failure a call ends with one
//! ERROR line, a normal miss (a zone probe) DEBUG; a refused key says what to
//! check, a connection failure names the endpoint, and no field prints Rust syntax.

mod common;

use std::process::Output;

use common::{Cert, SECRET, TestEnv, free_port, show};

const WWW: &str = "orders:\n  - { domain: www.example.com, expires_in: 20d }\n";

/// The lines of stderr at `level` (` ERROR `, ` WARN `...) that contain `text`.
fn lines<'a>(o: &'a Output, level: &str, text: &str) -> Vec<&'a str> {
    std::str::from_utf8(&o.stderr)
        .expect("utf8 log")
        .lines()
        .filter(|l| l.contains(level) && l.contains(text))
        .collect()
}

/// No line of stderr at `level` contains `text`.
fn assert_none(o: &Output, level: &str, text: &str) {
    let found = lines(o, level, text);
    assert!(found.is_empty(), "{level}{text:?} logged:\n{}", show(o));
}

/// No field printed as Rust `Debug` text (`Some(..)`, quoted strings, lists).
fn assert_plain(o: &Output) {
    let log = String::from_utf8_lossy(&o.stderr);
    for debug_text in ["Some(", "None", "=\"", "=[", " { "] {
        assert!(!log.contains(debug_text), "{debug_text:?} in\n{log}");
    }
}

/// An environment for `www`, whose configuration is then changed by `edit`.
async fn env_with(scenario: &str, api: &str, edit: impl Fn(&str) -> String) -> TestEnv {
    let env = TestEnv::builder(scenario)
        .api(api)
        .cert(Cert::new("www", "www.example.com"))
        .config_mode(0o600)
        .start()
        .await;
    std::fs::write(env.config_path(), edit(&env.config_text())).expect("config");
    env
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_secret_is_one_error_that_lists_the_likely_causes() {
    let env = env_with(WWW, ", max_attempts: 3", |c| {
        c.replace(SECRET, "not-the-secret")
    })
    .await;
    let o = env.once().await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let errors = lines(&o, " ERROR ", "call failed");
    assert_eq!(errors.len(), 1, "one ERROR line for the call\n{}", show(&o));
    let e = errors[0];
    for want in [
        "action=ListUserCertificateOrder",
        "code=SignatureDoesNotMatch",
        "likely causes: (1) the AccessKey secret does not belong to the AccessKey id",
    ] {
        assert!(e.contains(want), "{want:?} missing in {e}");
    }
    // A refused signature is not tried again, so nothing warns of a retry.
    assert_none(&o, " WARN ", "trying again");
    assert_none(&o, " INFO ", "call failed");
    assert!(!e.contains("not-the-secret"), "{e}");
    assert_plain(&o);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_endpoint_is_named_in_each_retry_and_in_one_error() {
    let host = format!("127.0.0.1:{}", free_port());
    let env = env_with(WWW, ", max_attempts: 3", |c| {
        let url = c
            .split("endpoint: \"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("endpoint in the config")
            .to_owned();
        c.replace(&url, &format!("http://{host}"))
    })
    .await;
    let o = env.once().await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let connect = format!("cannot connect to {host}");
    let retries = lines(&o, " WARN ", "call failed; trying again");
    assert_eq!(retries.len(), 2, "attempts 1 and 2 warn\n{}", show(&o));
    for r in &retries {
        assert!(r.contains(&connect) && r.contains("code=transport"), "{r}");
        // No answer, no RequestId: the field is left out rather than empty.
        assert!(!r.contains("request_id="), "{r}");
    }
    let errors = lines(&o, " ERROR ", "call failed");
    assert_eq!(errors.len(), 1, "{}", show(&o));
    assert!(
        errors[0].contains(&connect) && errors[0].contains("attempts=3"),
        "{}",
        errors[0]
    );
    assert!(errors[0].contains("api.endpoint"), "{}", errors[0]);
    assert_plain(&o);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_throttled_call_warns_then_succeeds_without_an_error() {
    let env = env_with(
        &format!("{WWW}rate_limits: {{ DescribeCertificateState: 1 }}\n"),
        ", max_attempts: 6",
        str::to_owned,
    )
    .await;
    let o = env.once().await;
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        env.sim_state()["throttled"].as_u64() > Some(0),
        "the simulator throttled nothing: the test proves nothing\n{}",
        show(&o)
    );
    let warned = lines(&o, " WARN ", "call failed; trying again");
    assert!(
        !warned.is_empty()
            && warned
                .iter()
                .all(|l| l.contains("action=DescribeCertificateState")
                    && l.contains("code=Throttling")),
        "{}",
        show(&o)
    );
    assert!(
        !lines(&o, " INFO ", "call ok action=DescribeCertificateState").is_empty(),
        "{}",
        show(&o)
    );
    assert_none(&o, " ERROR ", "");
    assert_plain(&o);
}

#[tokio::test(flavor = "multi_thread")]
async fn zone_probes_that_miss_are_debug_lines_not_failed_calls() {
    let env = TestEnv::builder(&format!(
        "{WWW}issuance: {{ polls_before_issued: 2, validation: dns }}\n"
    ))
    .api(", max_attempts: 3")
    .cert(Cert::new("www", "www.example.com").extra(", validation: { method: dns }"))
    .config_mode(0o600)
    .log_env(Some("info,cas_renewd::cas=debug"))
    .start()
    .await;
    let o = env.once().await;
    assert!(o.status.success(), "{}", show(&o));
    let probes = lines(&o, " DEBUG ", "action=DescribeDomainRecords");
    assert!(
        probes
            .iter()
            .any(|l| l.contains("call answered an outcome the caller handles")),
        "the misses before example.com are told at debug level\n{}",
        show(&o)
    );
    assert_none(&o, " ERROR ", "DescribeDomainRecords");
    assert_none(&o, " WARN ", "DescribeDomainRecords");
    assert_none(&o, " INFO ", "call failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_reports_a_denied_permission_as_a_check_not_as_an_error_line() {
    let env = TestEnv::builder(&format!(
        "{WWW}faults: {{ deny: [ListUserCertificateOrder] }}\n"
    ))
    .cert(Cert::new("www", "www.example.com"))
    .config_mode(0o600)
    .log_env(None)
    .start()
    .await;
    let o = env.run(&["doctor"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("Forbidden.RAM"),
        "the report names it\n{}",
        show(&o)
    );
    assert_none(&o, " ERROR ", "");
}
