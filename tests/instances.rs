//! SSL Certificate Management V2.0 instances: the typed client against the
//! simulator (paging, detail, application, task, certificate, faults), and `list`
//! through the binary showing V1 orders and V2.0 instances together.

mod common;

use std::time::Duration;

use cas_renewd::cas::api::{
    Cas, CertificateStatus, InstanceFilter, InstanceStatus, TASK_TYPE_APPLY, TaskStatus,
};
use cas_renewd::cas::api_apply::InstanceApplication;
use cas_renewd::cas::client::ApiError;
use common::{Cert, KEY_ID, SECRET, Simulator, TestEnv, show, start_sim};
use rcgen::{CertificateParams, DnType, KeyPair};

const MIXED: &str = "orders:\n  - { domain: www.example.com, expires_in: 20d }\ninstances:\n  - { domain: shop.example.com, service_period: 730d, service_used: 30d, certificate_expires_in: 60d, certificate_validity: 90d }\n  - { domain: new.example.com, service_period: 365d }\n  - { domain: auto.example.com, service_period: 730d, certificate_expires_in: 200d, auto_reissue: true }\n";
const SHOP: &str = "cas-ivauto-000001";

fn cas(sim: &Simulator) -> Cas {
    let fake = common::Fake::at(sim.url());
    common::cas_with_key(&fake, KEY_ID, SECRET, None, 3, Duration::from_secs(10))
}

fn csr(domain: &str) -> String {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(vec![domain.to_owned()]).expect("params");
    p.distinguished_name.push(DnType::CommonName, domain);
    p.serialize_request(&key).expect("csr").pem().expect("pem")
}

fn application(domain: &str) -> InstanceApplication {
    InstanceApplication {
        instance_id: SHOP.into(),
        csr: Some(csr(domain)),
        domain: Some(domain.into()),
        validation_method: Some("DNS".into()),
        key_algorithm: Some("ECC_256".into()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn client_pages_instances_and_follows_a_reissue_to_its_certificate() {
    let sim = start_sim(KEY_ID, SECRET, MIXED).await;
    let cas = cas(&sim);
    let all = cas
        .list_all_instances(&InstanceFilter::default(), 1)
        .await
        .expect("list");
    assert_eq!(all.len(), 3);
    assert_eq!(sim.state()["calls"]["ListInstances"], 3, "one page each");
    let shop = all
        .iter()
        .find(|i| i.instance_id.as_deref() == Some(SHOP))
        .expect("shop");
    assert_eq!(shop.status, Some(InstanceStatus::Normal));
    assert_eq!(shop.certificate_status, Some(CertificateStatus::Issued));
    let days = (shop.service_end().expect("end") - chrono::Utc::now()).num_days();
    assert!(
        (698..=700).contains(&days),
        "seconds read as seconds: {days}"
    );
    let page = cas
        .list_instances_page(&InstanceFilter::default(), 1, 500)
        .await
        .expect("a page size over 100 is held to 100");
    assert_eq!(page.body.show_size, Some(100));

    cas.update_instance_with(&application("shop.example.com"))
        .await
        .expect("update");
    cas.apply_certificate(SHOP).await.expect("apply");
    let task = cas
        .get_task_attribute(SHOP, Some(TASK_TYPE_APPLY))
        .await
        .expect("task");
    assert_eq!(task.body.task_status, TaskStatus::Processing);
    let mut detail = None;
    for _ in 0..10 {
        let d = cas.get_instance_detail(SHOP).await.expect("detail").body;
        if d.instance.status != Some(InstanceStatus::Pending) {
            detail = Some(d);
            break;
        }
    }
    let d = detail.expect("issued within 10 polls");
    assert_ne!(
        d.instance.certificate_id, shop.certificate_id,
        "a new certificate"
    );
    let cert = cas
        .get_user_certificate_detail(d.instance.certificate_id.expect("id"), false)
        .await
        .expect("certificate")
        .body;
    assert!(
        cert.cert
            .as_deref()
            .is_some_and(|c| c.contains("BEGIN CERTIFICATE"))
    );
    assert!(cert.key.is_none(), "our CSR: CAS holds no key");
    assert_eq!(cert.instance_id.as_deref(), Some(SHOP));
    assert_eq!(sim.state()["v2"]["apply_certificate_calls"][SHOP], 1);
    let refused = cas
        .update_instance_with(&InstanceApplication {
            csr: Some(csr("other.example.com")),
            ..application("shop.example.com")
        })
        .await
        .expect_err("a CSR for another domain");
    assert!(refused.to_string().contains("Csr"), "{refused}");
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_certificate_faults_are_unclear_and_counted_only_when_acted() {
    let faults = "faults: { refuse_first: { ApplyCertificate: 1 }, act_then_fail_first: { GetInstanceDetail: 1 } }\n";
    let sim = start_sim(KEY_ID, SECRET, &format!("{MIXED}{faults}")).await;
    let cas = cas(&sim);
    cas.update_instance_with(&application("shop.example.com"))
        .await
        .expect("update");
    let err = cas.apply_certificate(SHOP).await.expect_err("503");
    assert!(matches!(err, ApiError::Ambiguous { .. }), "{err:?}");
    assert!(
        sim.state()["v2"]["apply_certificate_calls"]
            .get(SHOP)
            .is_none(),
        "the refused call did nothing, and was not repeated"
    );
    cas.apply_certificate(SHOP).await.expect("apply");
    // An idempotent read retried through a 500.
    let d = cas.get_instance_detail(SHOP).await.expect("detail retried");
    assert_eq!(d.body.instance.status, Some(InstanceStatus::Pending));
    assert_eq!(sim.state()["v2"]["apply_certificate_calls"][SHOP], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_strings_in_instance_answers_are_absent() {
    let sim = start_sim(
        KEY_ID,
        SECRET,
        &format!("{MIXED}responses: {{ empty_strings: true }}\n"),
    )
    .await;
    let cas = cas(&sim);
    let all = cas
        .list_all_instances(&InstanceFilter::default(), 100)
        .await
        .expect("\"\" parses as absent");
    let new = all
        .iter()
        .find(|i| i.domain.as_deref() == Some("new.example.com"))
        .expect("new");
    assert_eq!(new.status, Some(InstanceStatus::Inactive));
    assert!(new.certificate_id.is_none() && new.certificate_not_after.is_none());
    assert!(new.certificate_status.is_none() && new.pending_result.is_none());
    let id = new.instance_id.as_deref().expect("id");
    let d = cas.get_instance_detail(id).await.expect("detail").body;
    assert!(d.csr.is_none() && d.instance.certificate_id.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_throttled_instance_listing_waits_and_completes() {
    let sim = start_sim(
        KEY_ID,
        SECRET,
        &format!("{MIXED}rate_limits: {{ ListInstances: 1 }}\n"),
    )
    .await;
    let all = cas(&sim)
        .list_all_instances(&InstanceFilter::default(), 1)
        .await
        .expect("list despite throttling");
    assert_eq!(all.len(), 3);
    let state = sim.state();
    assert!(
        state["throttled"].as_u64() > Some(0),
        "{}",
        state["throttled"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn list_shows_orders_and_instances_with_kind_and_service_end() {
    let env = TestEnv::builder(MIXED)
        .api(", page_size: 2")
        .cert(Cert::new("www", "www.example.com"))
        .start()
        .await;
    let o = env.run(&["list"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "header, one order, three instances: {text}");
    assert!(
        lines[0].starts_with("DOMAIN") && lines[0].contains("KIND"),
        "{text}"
    );
    assert!(lines[0].ends_with("SERVICE END (UTC)"), "{text}");
    assert!(
        lines[1].starts_with("www.example.com") && lines[1].contains("  order  "),
        "{text}"
    );
    assert!(
        lines[2].starts_with("shop.example.com  cas-ivauto-000001  normal  ")
            && lines[2].contains("  instance  "),
        "{text}"
    );
    assert!(
        lines[4].starts_with("new.example.com") && lines[4].contains("inactive"),
        "{text}"
    );
    assert_eq!(env.calls("ListInstances"), 2, "paged by api.page_size");

    let j = env.run(&["list", "--json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).expect("json");
    let rows = v.as_array().expect("array");
    let shop = rows
        .iter()
        .find(|r| r["domain"] == "shop.example.com")
        .expect("shop row");
    assert_eq!(shop["kind"], "instance");
    assert_eq!(shop["instance_id"], SHOP);
    assert_eq!(shop["days_left"], 59);
    let end = chrono::DateTime::parse_from_rfc3339(shop["service_end"].as_str().expect("end"))
        .expect("rfc3339");
    assert_eq!(
        (end.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_days(),
        699
    );
    assert_eq!(rows.iter().filter(|r| r["kind"] == "order").count(), 1);

    let only = env.run(&["list", "--type", "instance", "--json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&only.stdout).expect("json");
    assert!(
        v.as_array()
            .expect("array")
            .iter()
            .all(|r| r["kind"] == "instance"),
        "{v}"
    );
    let status = env
        .run(&["list", "--status", "willexpired", "--json"])
        .await;
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(
        v.as_array().map(Vec::len),
        Some(1),
        "V1 statuses filter orders only: {v}"
    );
    let bad = env
        .run(&["list", "--type", "instance", "--status", "issued"])
        .await;
    assert_ne!(bad.status.code(), Some(0), "{}", show(&bad));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--status"),
        "{}",
        show(&bad)
    );
}
