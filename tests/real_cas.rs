//! What Alibaba documents about renewing, end to end (real binary vs simulator):
//! kinds CAS does not renew (free, multi-domain, uploaded) are blocked or applied
//! for again (`renewal.mode: reapply`), a renewal order left pending application is
//! applied for once, and an unclear paid call is never paid again blindly.

mod common;

use common::{Cert, RENEWAL_CRASH_POINTS, TestEnv, show};
use serde_json::json;

/// A simulator with `scenario` and a configuration for `certs` (name, domain,
/// extra YAML of the entry), up to three attempts per call, fast polling with
/// `renewal` appended (a 1 min issuance timeout unless it sets one), and `extra`
/// top-level YAML.
async fn world(
    scenario: &str,
    certs: &[(&str, &str, &str)],
    renewal: &str,
    extra: &str,
) -> TestEnv {
    let timeout = if renewal.contains("issuance_timeout") {
        ""
    } else {
        ", issuance_timeout: 1m"
    };
    TestEnv::builder(scenario)
        .api(", max_attempts: 3")
        .renewal(Some(&format!(
            "poll_interval: 100ms, poll_max_interval: 200ms{timeout}{renewal}"
        )))
        .extra(extra)
        .certs(certs.iter().map(|(n, d, e)| Cert::new(n, d).extra(e)))
        .start()
        .await
}

/// `world` with the one certificate `www` for www.example.com.
async fn www(scenario: &str, renewal: &str) -> TestEnv {
    world(scenario, &[("www", "www.example.com", "")], renewal, "").await
}

/// Days left on the installed certificate, with its key checked against it.
fn installed_days(w: &TestEnv, name: &str) -> Option<i64> {
    let i = w.installed(name)?;
    assert!(i.key_matches, "{name}: pair matches");
    Some(i.days_left())
}

const RENEW: &str = "RenewCertificateOrderForPackageRequest";
const CREATE: &str = "CreateCertificateForPackageRequest";

#[tokio::test(flavor = "multi_thread")]
async fn a_free_order_without_reapply_is_blocked_and_never_renewed() {
    let w = www(
        "orders:\n  - { domain: www.example.com, expires_in: 20d, cert_type: FREE }\n",
        "",
    )
    .await;
    for pass in 0..2 {
        let o = w.once().await;
        assert_eq!(o.status.code(), Some(1), "pass {pass}: {}", show(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains("BLOCKED") && out.contains("mode: reapply"),
            "{}",
            show(&o)
        );
    }
    assert_eq!(w.calls(RENEW), 0, "no renew call, ever");
    assert_eq!(w.calls(CREATE), 0);
    let s = w.run(&["status"]).await;
    let text = String::from_utf8_lossy(&s.stdout);
    assert!(
        text.contains("free personal test certificate") && text.contains("mode: reapply"),
        "{}",
        show(&s)
    );
    // The existing certificate was still installed (first install).
    assert!(installed_days(&w, "www").is_some_and(|d| d < 30));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_free_order_with_reapply_gets_one_new_certificate() {
    let w = world(
        "orders:\n  - { domain: www.example.com, expires_in: 20d, product_code: digicert-free-1-free }\nissuance: { polls_before_issued: 2, validation: dns }\n",
        &[(
            "www",
            "www.example.com",
            ", renewal: { mode: reapply }, validation: { method: dns }",
        )],
        "",
        "",
    )
    .await;
    let o = w.once().await;
    assert!(o.status.success(), "{}", show(&o));
    let days = installed_days(&w, "www").expect("installed");
    assert!(
        (85..=90).contains(&days),
        "a 3-month free certificate: {days}"
    );
    let again = w.once().await;
    assert!(again.status.success(), "{}", show(&again));
    let st = w.sim_state();
    assert_eq!(
        st["packages"]["create_calls"],
        json!({ "www.example.com": 1 })
    );
    assert_eq!(w.calls(CREATE), 1, "exactly one paid call");
    assert_eq!(w.calls(RENEW), 0);
    assert_eq!(st["packages"]["free_used"], json!(1));
    assert!(
        w.calls("DescribePackageState") >= 1,
        "the quota was looked at first"
    );
    assert_eq!(st["dns_records"], json!([]), "validation record removed");
}

#[tokio::test(flavor = "multi_thread")]
async fn mixed_domain_and_uploaded_orders_are_reapplied_or_blocked() {
    let scenario = "orders:\n  - { domain: mix.example.com, expires_in: 20d, sans: [mix.example.org], product_code: geotrust-ov-1-personal, domain_type: MIX }\n  - { domain: up.example.com, expires_in: 20d, source_type: upload }\n";
    let certs = [("mix", "mix.example.com", ""), ("up", "up.example.com", "")];
    // Without reapply: both blocked, nothing paid.
    let w = world(scenario, &certs, "", "").await;
    let o = w.once().await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("multi-domain certificate (DomainType MIX)"),
        "{out}"
    );
    assert!(out.contains("an uploaded certificate"), "{out}");
    assert_eq!((w.calls(RENEW), w.calls(CREATE)), (0, 0));
    // With reapply for all: the mixed one gets a new certificate of its product;
    // the uploaded one has no ProductCode to apply for and stays blocked.
    let w = world(
        scenario,
        &certs,
        "",
        "defaults: { renewal: { mode: reapply } }\n",
    )
    .await;
    let o = w.once().await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("no ProductCode"), "{out}");
    assert!(installed_days(&w, "mix").is_some_and(|d| d >= 364), "{out}");
    assert_eq!(
        w.sim_state()["packages"]["create_calls"],
        json!({ "mix.example.com": 1 })
    );
    assert_eq!(w.calls(RENEW), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renew_refused_by_cas_is_not_retried_blindly() {
    // No unit of the product left: the simulator refuses the renew.
    let w = www("orders:\n  - { domain: www.example.com, expires_in: 20d }\npackages: { geotrust-dv-1-starter: 0 }\n", "")
    .await;
    for pass in 0..3 {
        let o = w.once().await;
        assert_eq!(o.status.code(), Some(1), "pass {pass}: {}", show(&o));
    }
    assert_eq!(w.calls(RENEW), 1, "refused once, never repeated");
    assert!(w.journal_text("www").contains("\"phase\": \"rejected\""));
    let o = w.once().await;
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("--force"),
        "{}",
        show(&o)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pending_application_is_submitted_once_and_only_when_needed() {
    for needs in [false, true] {
        let w = www(&format!(
                "orders:\n  - {{ domain: www.example.com, expires_in: 20d }}\nissuance: {{ polls_before_issued: 2, renewal_needs_application: {needs} }}\n"
            ), "")
        .await;
        let o = w.once().await;
        assert!(o.status.success(), "needs={needs}: {}", show(&o));
        assert!(installed_days(&w, "www").is_some_and(|d| d >= 364));
        let st = w.sim_state();
        assert_eq!(w.calls(RENEW), 1);
        if needs {
            assert_eq!(w.calls("ApplyCertificate"), 1, "one application");
            assert_eq!(st["packages"]["applications"], json!({ "100002": 1 }));
            assert_eq!(w.calls("UpdateInstance"), 1);
        } else {
            assert_eq!(w.calls("ApplyCertificate"), 0, "CAS took it up itself");
            assert_eq!(w.calls("UpdateInstance"), 0);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_the_application_resumes_without_applying_twice() {
    let w = www("orders:\n  - { domain: www.example.com, expires_in: 20d }\nissuance: { polls_before_issued: 2, renewal_needs_application: true }\n", "")
    .await;
    w.once_crashing_at("after-application-submitted").await;
    assert!(w.journal_text("www").contains("application-submitted"));
    let o = w.once().await;
    assert!(o.status.success(), "{}", show(&o));
    assert!(installed_days(&w, "www").is_some_and(|d| d >= 364));
    assert_eq!((w.calls(RENEW), w.calls("ApplyCertificate")), (1, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unclear_renew_is_not_paid_again_until_the_ceiling_or_force() {
    // 503 without acting: unclear to the client, and no order appears.
    let scenario = "orders:\n  - { domain: www.example.com, expires_in: 20d }\nfaults: { refuse_first: { RenewCertificateOrderForPackageRequest: 1 } }\n";
    let w = world(scenario, &[("www", "www.example.com", "")], "", "").await;
    for pass in 0..2 {
        let o = w.once().await;
        assert_eq!(o.status.code(), Some(1), "pass {pass}: {}", show(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains("unclear outcome") && out.contains("--force"),
            "{out}"
        );
    }
    assert_eq!(w.calls(RENEW), 1, "no second paid call before the ceiling");
    let o = w.run(&["renew", "--cert", "www", "--force"]).await;
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(w.calls(RENEW), 2);
    assert_eq!(w.sim_state()["renew_calls"], json!({ "100001": 1 }));
    assert!(installed_days(&w, "www").is_some_and(|d| d >= 364));

    // Past the ceiling (here shorter than the 10 s grace), it pays again by itself.
    let w = www(scenario, ", unclear_retry_after: 1s").await;
    let o = w.once().await;
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("decision: no order appeared"),
        "{}",
        show(&o)
    );
    assert_eq!(w.calls(RENEW), 2);
    assert_eq!(w.sim_state()["renew_calls"], json!({ "100001": 1 }));

    // Acted, then an error: the order is found and followed; nothing paid twice.
    let w = www("orders:\n  - { domain: www.example.com, expires_in: 20d }\nfaults: { act_then_fail_first: { RenewCertificateOrderForPackageRequest: 1 } }\n", ", unclear_retry_after: 1s")
    .await;
    let o = w.once().await;
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(w.calls(RENEW), 1);
    assert!(installed_days(&w, "www").is_some_and(|d| d >= 364));
}

/// `renew --force` allows one more paid call, not one per grace period: a forced
/// call whose outcome is unclear again blocks like any other.
#[tokio::test(flavor = "multi_thread")]
async fn a_forced_renew_pays_at_most_once_per_run() {
    let w = www(
        "orders:\n  - { domain: www.example.com, expires_in: 20d }\nfaults: { refuse_first: { RenewCertificateOrderForPackageRequest: 3 } }\n",
        "",
    )
    .await;
    let o = w.run(&["renew", "--cert", "www", "--force"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert_eq!(w.calls(RENEW), 1, "one paid call per forced run");
    let o = w.run(&["renew", "--cert", "www", "--force"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert_eq!(w.calls(RENEW), 2, "the next forced run may pay once more");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unclear_create_is_not_paid_again_blindly() {
    let w = world(
        "orders:\n  - { domain: www.example.com, expires_in: 20d, cert_type: FREE }\nfaults: { refuse_first: { CreateCertificateForPackageRequest: 1 } }\n",
        &[("www", "www.example.com", ", renewal: { mode: reapply }")],
        "",
        "",
    )
    .await;
    let o = w.once().await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let o = w.once().await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert_eq!(w.calls(CREATE), 1);
    let o = w.run(&["renew", "--cert", "www", "--force"]).await;
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(w.calls(CREATE), 2);
    assert_eq!(
        w.sim_state()["packages"]["create_calls"],
        json!({ "www.example.com": 1 })
    );
}

/// SIGKILL at every step of the reapply path, then a restart: one paid
/// application per certificate and a matching new pair installed.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_at_any_step_of_reapply_applies_once() {
    for point in RENEWAL_CRASH_POINTS {
        // A crash after the intent is journaled looks like an unclear call: the
        // restart pays again only past the ceiling (1 s here; the grace is 10 s).
        let w = world(
            "orders:\n  - { domain: www.example.com, expires_in: 20d, cert_type: FREE }\n",
            &[("www", "www.example.com", ", renewal: { mode: reapply }")],
            ", unclear_retry_after: 1s",
            "",
        )
        .await;
        w.once_crashing_at(point).await;
        let o = w.once().await;
        assert!(o.status.success(), "{point}: {}", show(&o));
        let days = installed_days(&w, "www").expect("installed");
        assert!(days >= 85, "{point}: new certificate, {days} days");
        assert_eq!(
            w.sim_state()["packages"]["create_calls"],
            json!({ "www.example.com": 1 }),
            "{point}: one application"
        );
        assert_eq!(w.calls(RENEW), 0, "{point}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unclear_renew_finds_its_order_even_with_an_empty_domain() {
    // The documented PAYED sample order has "Domain": "": the order an unclear call
    // made must be found by fields that hold then. Past the ceiling (1 s, below the
    // 10 s grace) a miss would pay again and show as a second call.
    let w = www("orders:\n  - { domain: www.example.com, expires_in: 20d }\nissuance: { polls_before_issued: 3, new_orders_domain_empty: true }\nfaults: { act_then_fail_first: { RenewCertificateOrderForPackageRequest: 1 } }\n", ", unclear_retry_after: 1s")
    .await;
    let o = w.once().await;
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(w.calls(RENEW), 1, "found, not paid again");
    assert_eq!(w.sim_state()["renew_calls"], json!({ "100001": 1 }));
    assert!(installed_days(&w, "www").is_some_and(|d| d >= 364));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_console_order_never_applied_for_is_given_up_not_followed_forever() {
    // Renewed in the console but never applied for: it stays PAYED.
    let w = www("orders:\n  - { domain: www.example.com, expires_in: 20d }\nissuance: { polls_before_issued: 2, renewal_needs_application: true }\n", ", issuance_timeout: 3s")
    .await;
    let console = w.console_renew(100_001).await;
    let o = w.once().await;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "order {console} (made elsewhere) is pending application"
        )) && err.contains("gives it up"),
        "{}",
        show(&o)
    );
    assert!(
        w.journal_text("www")
            .contains(&format!("\"unusable_orders\": [\n    {console}"))
    );
    // The next pass renews the expiring order itself and applies for its own order.
    let o = w.once().await;
    assert!(o.status.success(), "{}", show(&o));
    assert!(installed_days(&w, "www").is_some_and(|d| d >= 364));
    assert_eq!(w.sim_state()["renew_calls"], json!({ "100001": 2 }));
    assert_eq!(w.calls("ApplyCertificate"), 1, "only for its own order");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_between_the_application_intent_and_the_call_never_applies_twice() {
    let w = www("orders:\n  - { domain: www.example.com, expires_in: 20d }\nissuance: { polls_before_issued: 2, renewal_needs_application: true }\n", ", issuance_timeout: 3s")
    .await;
    w.once_crashing_at("after-application-requested").await;
    // Whether the call left is unknown: no second ApplyCertificate, the operator is told.
    let o = w.once().await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("it is not submitted twice"),
        "{}",
        show(&o)
    );
    assert_eq!(w.calls("ApplyCertificate"), 0);
    let s = w.run(&["status"]).await;
    assert!(
        String::from_utf8_lossy(&s.stdout).contains("submit the application in the CAS console"),
        "{}",
        show(&s)
    );
}

/// The two new gauges, read from an in-process engine's registry.
#[tokio::test(flavor = "multi_thread")]
async fn pending_application_and_unclear_call_gauges_are_set() {
    use cas_renewd::renew::{Engine, PassOptions};
    use std::sync::Arc;

    async fn engine_for(scenario: &str, renewal: &str) -> (TestEnv, Arc<Engine>) {
        let w = TestEnv::builder(scenario)
            .api(", max_attempts: 2")
            .renewal(Some(&format!(
                "poll_interval: 100ms, poll_max_interval: 100ms{renewal}"
            )))
            .cert(Cert::new("www", "www.example.com"))
            .start()
            .await;
        let engine = w.engine();
        (w, engine)
    }

    // A console renewal never applied for, followed with the daemon's budget.
    let (w, engine) = engine_for(
        "orders:\n  - { domain: www.example.com, expires_in: 20d }\nissuance: { renewal_needs_application: true }\n",
        "",
    )
    .await;
    w.console_renew(100_001).await;
    let opts = PassOptions {
        follow_budget: Some(std::time::Duration::from_secs(2)),
        ..PassOptions::default()
    };
    engine.pass(&opts).await.expect("pass");
    let m = engine.metrics().render();
    assert!(
        m.contains("cas_renewd_pending_application{cert=\"www\"} 1"),
        "{m}"
    );

    // An unclear renew whose order never shows.
    let (_w, engine) = engine_for(
        "orders:\n  - { domain: www.example.com, expires_in: 20d }\nfaults: { refuse_first: { RenewCertificateOrderForPackageRequest: 1 } }\n",
        "",
    )
    .await;
    let r = engine.pass(&PassOptions::default()).await.expect("pass");
    assert_eq!(r.certs[0].outcome, cas_renewd::renew::Outcome::Blocked);
    let m = engine.metrics().render();
    assert!(
        m.contains("cas_renewd_unclear_paid_call{cert=\"www\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unclear_call_never_takes_the_order_another_certificate_follows() {
    // Two certificates pay in the same pass; the first renew call to arrive gets a
    // 503 without effect. The other's new order is listed with an empty Domain while
    // it is processed (slowly): it must not be taken for the lost one.
    let w = world(
        "orders:\n  - { domain: a.example.com, expires_in: 20d }\n  - { domain: b.example.com, expires_in: 20d }\nissuance: { polls_before_issued: 30, new_orders_domain_empty: true }\nfaults: { refuse_first: { RenewCertificateOrderForPackageRequest: 1 } }\n",
        &[("a", "a.example.com", ""), ("b", "b.example.com", "")],
        ", concurrency: 2",
        "",
    )
    .await;
    let o = w.once().await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let (ja, jb) = (w.journal_text("a"), w.journal_text("b"));
    let (lost, other) = if ja.contains("\"phase\": \"renew-requested\"") {
        ("a", jb)
    } else {
        ("b", ja)
    };
    let j = w.journal_text(lost);
    assert!(
        j.contains("\"phase\": \"renew-requested\"") && !j.contains("\"new_order_id\""),
        "{lost} keeps looking for its own order: {j}\n{}",
        show(&o)
    );
    assert!(other.contains("\"phase\": \"idle\""), "{other}");
    assert_eq!(w.calls(RENEW), 2, "one per certificate, none repeated");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pending_order_without_instance_id_tells_the_operator_what_to_do() {
    let w = www("orders:\n  - { domain: www.example.com, expires_in: 20d }\nissuance: { polls_before_issued: 2, renewal_needs_application: true, instance_ids: false }\n", ", issuance_timeout: 3s")
    .await;
    let o = w.once().await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("gives it no InstanceId"),
        "{}",
        show(&o)
    );
    assert_eq!(
        (w.calls("UpdateInstance"), w.calls("ApplyCertificate")),
        (0, 0)
    );
    let s = w.run(&["status"]).await;
    assert!(
        String::from_utf8_lossy(&s.stdout)
            .contains("in the CAS console, submit the application of order 100002"),
        "{}",
        show(&s)
    );
    assert_eq!(w.calls(RENEW), 1, "following, not paying again");
}
