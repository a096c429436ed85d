//! Quota awareness (issue 17, item 1), real binary vs simulator: the resource plan
//! is read once per pass, a paid call for a plan with no unit left is not made (the
//! certificate is blocked and stays so until the plan has units), and a plan that
//! cannot be read does not block.

mod common;

use common::{Cert, TestEnv, show};

const RENEW: &str = "RenewCertificateOrderForPackageRequest";
const PLAN: &str = "geotrust-dv-1-starter";

/// Two certificates of one product, both due, with `units` in their plan.
async fn two_due(units: u32, faults: &str) -> TestEnv {
    TestEnv::builder(&format!(
        "orders:\n  - {{ domain: www.example.com, expires_in: 20d }}\n  - {{ domain: api.example.com, expires_in: 20d }}\npackages: {{ {PLAN}: {units} }}\n{faults}"
    ))
    .api(", max_attempts: 2")
    .certs([
        Cert::new("www", "www.example.com"),
        Cert::new("api", "api.example.com"),
    ])
    .start()
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_last_unit_is_spent_once_and_the_other_certificate_waits_for_more() {
    let w = two_due(1, "").await;
    let o = w.once().await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(w.calls(RENEW), 1, "one unit, one paid call:\n{}", show(&o));
    assert!(
        out.contains(&format!("no units left in plan {PLAN}: 0 of 1 used")),
        "{out}"
    );
    assert_eq!(
        w.calls("DescribePackageState"),
        1,
        "the plan is read once per pass"
    );
    // Not retried while the plan is empty.
    for _ in 0..2 {
        let o = w.once().await;
        assert_eq!(o.status.code(), Some(1), "{}", show(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("no units left in plan"),
            "{}",
            show(&o)
        );
    }
    assert_eq!(w.calls(RENEW), 1, "no paid call into an empty plan");
    // The operator buys more: the next pass renews the waiting certificate.
    w.sim.set_package_units(PLAN, 3);
    let o = w.once().await;
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(w.calls(RENEW), 2);
    assert!(w.installed("www").is_some_and(|i| i.days_left() > 300));
    assert!(w.installed("api").is_some_and(|i| i.days_left() > 300));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plan_that_cannot_be_read_does_not_block() {
    let w = two_due(
        1_000,
        "faults: { refuse_first: { DescribePackageState: 10 } }\n",
    )
    .await;
    let o = w.once().await;
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(w.calls(RENEW), 2);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot read the resource plan"),
        "{}",
        show(&o)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_prints_the_plans_and_the_metrics_carry_them() {
    let w = two_due(1, "").await;
    let o = w.run(&["quota"]).await;
    assert!(o.status.success(), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(PLAN), "{out}");
    assert!(
        out.contains(&format!(
            "2 certificate(s) due but 1 unit(s) left in plan {PLAN}"
        )),
        "{out}"
    );
    let o = w.run(&["quota", "--json"]).await;
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(rows[0]["product_code"], PLAN);
    assert_eq!(rows[0]["total"], 1);
    assert_eq!(rows[0]["left"], 1);
    assert_eq!(rows[0]["due"], 2);
    assert_eq!(w.calls(RENEW), 0, "quota spends nothing");

    let engine = w.engine();
    let _ = engine
        .pass(&cas_renewd::renew::PassOptions::default())
        .await
        .expect("pass");
    let text = engine.metrics().render();
    for line in [
        format!("cas_renewd_package_units{{product_code=\"{PLAN}\"}} 1"),
        format!("cas_renewd_package_used_units{{product_code=\"{PLAN}\"}} 0"),
        format!("cas_renewd_package_due_certificates{{product_code=\"{PLAN}\"}} 2"),
        format!("cas_renewd_package_read_ok{{product_code=\"{PLAN}\"}} 1"),
    ] {
        assert!(text.contains(&line), "{line} missing:\n{text}");
    }
}
