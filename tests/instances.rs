//! SSL Certificate Management V2.0 instances: the typed client against the
//! simulator (paging, detail, application, task, certificate, faults), and `list`
//! through the binary showing V1 orders and V2.0 instances together.

mod common;

use std::time::Duration;

use cas_renewd::cas::api::{
    Cas, CertificateStatus, DomainValidation, Instance, InstanceFilter, InstanceStatus,
    TASK_TYPE_APPLY, TaskStatus, validation_state,
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
    key_and_csr(domain).1
}

/// The listed instance of `domain`.
fn by_domain<'a>(all: &'a [Instance], domain: &str) -> &'a Instance {
    all.iter()
        .find(|i| i.domain.as_deref() == Some(domain))
        .unwrap_or_else(|| panic!("{domain} is listed"))
}

/// A key made here and a CSR of it for `domain`.
fn key_and_csr(domain: &str) -> (KeyPair, String) {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(vec![domain.to_owned()]).expect("params");
    p.distinguished_name.push(DnType::CommonName, domain);
    let csr = p.serialize_request(&key).expect("csr").pem().expect("pem");
    (key, csr)
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
    let new = by_domain(&all, "new.example.com");
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

/// UpdateInstance with our CSR and `validation` (`DNS`, `HTTP`), then
/// ApplyCertificate; the validation CAS asks for, from the first GetInstanceDetail.
async fn apply_for_validation(cas: &Cas, validation: &str) -> Vec<DomainValidation> {
    cas.update_instance_with(&InstanceApplication {
        validation_method: Some(validation.into()),
        ..application("shop.example.com")
    })
    .await
    .expect("update");
    cas.apply_certificate(SHOP).await.expect("apply");
    let d = cas.get_instance_detail(SHOP).await.expect("detail").body;
    assert_eq!(d.instance.status, Some(InstanceStatus::Pending));
    d.domain_validation_list
}

/// GetInstanceDetail until the instance is no longer pending.
async fn follow_until_issued(cas: &Cas, what: &str) -> cas_renewd::cas::api::InstanceDetail {
    for _ in 0..10 {
        let d = cas.get_instance_detail(SHOP).await.expect("detail").body;
        if d.instance.status != Some(InstanceStatus::Pending) {
            return d;
        }
    }
    panic!("{what}: not issued within 10 polls");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_apply_task_is_found_and_the_instance_followed_under_either_task_id_reading() {
    for (reading, task_calls) in [("instance_id", 2), ("request_id", 4)] {
        let sim = start_sim(
            KEY_ID,
            SECRET,
            &format!("{MIXED}v2: {{ task_id: {reading}, polls_before_issued: 0 }}\n"),
        )
        .await;
        let cas = cas(&sim);
        cas.update_instance_with(&application("shop.example.com"))
            .await
            .expect("update");
        let apply = cas.apply_certificate(SHOP).await.expect("apply");
        let first = cas
            .apply_task(SHOP, Some(&apply.request_id))
            .await
            .unwrap_or_else(|e| panic!("{reading}: {e}"));
        assert_eq!(first.body.task_status, TaskStatus::Processing, "{reading}");
        let second = cas
            .apply_task(SHOP, Some(&apply.request_id))
            .await
            .unwrap_or_else(|e| panic!("{reading}: {e}"));
        assert_eq!(second.body.task_status, TaskStatus::Success, "{reading}");
        // Without the RequestId only the InstanceId reading finds the task; the
        // refusal of the other is an error, not a status.
        let bare = cas.apply_task(SHOP, None).await;
        assert_eq!(
            bare.is_ok(),
            reading == "instance_id",
            "{reading}: {bare:?}"
        );
        let d = cas.get_instance_detail(SHOP).await.expect("detail").body;
        assert_eq!(
            d.instance.certificate_status,
            Some(CertificateStatus::Issued)
        );
        let state = sim.state();
        assert_eq!(
            state["calls"]["GetTaskAttribute"].as_u64(),
            Some(task_calls + 1),
            "{reading}: the RequestId is asked only after a refusal"
        );
        assert_eq!(state["v2"]["apply_certificate_calls"][SHOP], 1, "{reading}");
        assert_eq!(
            state["v2"]["instances"][0]["certificates"], 2,
            "{reading}: re-issued"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_in_the_v1_listing_is_listed_once_and_never_renewed_as_an_order() {
    use cas_renewd::cas::inventory::{Inventory, Kind};
    // Both certificates are due (20 days left).
    let due = "orders:\n  - { domain: www.example.com, expires_in: 20d }\ninstances:\n  - { domain: shop.example.com, service_period: 730d, certificate_expires_in: 20d, certificate_validity: 90d }\n";
    for reading in ["false", "true"] {
        let scenario = format!("{due}v2: {{ listed_in_orders: {reading} }}\n");
        let env = TestEnv::builder(&scenario)
            .cert(Cert::new("www", "www.example.com"))
            .cert(Cert::new("shop", "shop.example.com"))
            .start()
            .await;
        let inv = Inventory::fetch(
            &env.console(),
            Some(Default::default()),
            Some(&InstanceFilter::default()),
            100,
        )
        .await
        .expect("inventory");
        assert_eq!(inv.orders.len(), 1, "{reading}: only the V1 order");
        let shop = inv.for_domain("shop.example.com");
        assert_eq!(shop.len(), 1, "{reading}");
        assert_eq!(shop[0].kind(), Kind::Instance, "{reading}");

        let j = env.run(&["list", "--json"]).await;
        let v: serde_json::Value = serde_json::from_slice(&j.stdout).expect("json");
        let rows: Vec<&serde_json::Value> = v
            .as_array()
            .expect("array")
            .iter()
            .filter(|r| r["domain"] == "shop.example.com")
            .collect();
        assert_eq!(rows.len(), 1, "{reading}: {v}");
        assert_eq!(rows[0]["kind"], "instance", "{reading}");

        // A pass with both certificates configured and both due: the order is
        // renewed, the instance never through the V1 operations.
        let o = env.run(&["once"]).await;
        let state = env.sim_state();
        assert_eq!(
            state["v2"]["v1_order_calls"],
            serde_json::json!({}),
            "{reading}: {}",
            show(&o)
        );
        let renewed: Vec<&String> = state["renew_calls"]
            .as_object()
            .expect("map")
            .keys()
            .collect();
        assert_eq!(
            renewed.len(),
            1,
            "{reading}: www's order only: {}",
            show(&o)
        );
        assert!(
            renewed[0].parse::<i64>().is_ok_and(|id| id < 900_000),
            "{reading}: {renewed:?}"
        );
    }
}

/// A DNS client of the simulated account.
fn dns(sim: &Simulator) -> cas_renewd::cas::dns::Dns {
    use cas_renewd::cas::client::{ApiClient, ClientSettings, RateLimiter};
    use cas_renewd::cas::credentials::{Credential, CredentialsProvider};
    let creds = CredentialsProvider::fixed(Credential {
        access_key_id: KEY_ID.into(),
        access_key_secret: cas_renewd::secret::Secret::new(SECRET),
        security_token: None,
        expiration: None,
    });
    let settings = ClientSettings {
        endpoint: reqwest::Url::parse(&sim.url()).expect("url"),
        version: cas_renewd::cas::dns::DNS_VERSION,
        timeout: Duration::from_secs(10),
        max_attempts: 3,
    };
    let limiter = std::sync::Arc::new(RateLimiter::new(100.0));
    let client = ApiClient::new(settings, std::sync::Arc::new(creds), limiter).expect("client");
    cas_renewd::cas::dns::Dns::new(client)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_domain_validation_form_is_published_where_cas_looks_and_issues() {
    use cas_renewd::renew::validation::{Published, publish, unpublish};
    use cas_renewd::settings::{ValidationConfig, ValidationMethod};
    let one = "instances:\n  - { domain: shop.example.com, service_period: 730d, certificate_expires_in: 20d }\n";
    let webroot = tempfile::tempdir().expect("webroot");
    let dns_forms = [
        "{}",
        "{ validation_key: relative_to_domain }",
        "{ validation_key: fqdn }",
        "{ validation_key: fqdn_dot, validation_value: quoted }",
        "{ validation_value: quoted }",
    ];
    let file_forms = [
        "{}",
        "{ file_key: url }",
        "{ file_key: relative_path }",
        "{ file_key: file_name }",
        "{ file_key: url, file_value: multi_line }",
    ];
    let cases = dns_forms
        .iter()
        .map(|f| ("DNS", *f))
        .chain(file_forms.iter().map(|f| ("HTTP", *f)));
    for (method, form) in cases {
        let (issuance, config) = if method == "DNS" {
            (
                "validation: dns".to_owned(),
                ValidationConfig {
                    method: ValidationMethod::Dns,
                    webroot: None,
                },
            )
        } else {
            (
                format!("validation: file, webroot: {}", webroot.path().display()),
                ValidationConfig {
                    method: ValidationMethod::File,
                    webroot: Some(webroot.path().to_owned()),
                },
            )
        };
        let sim = start_sim(
            KEY_ID,
            SECRET,
            &format!("{one}issuance: {{ polls_before_issued: 0, {issuance} }}\nv2: {form}\n"),
        )
        .await;
        let cas = cas(&sim);
        let dns = dns(&sim);
        let list = apply_for_validation(&cas, method).await;
        let state = validation_state(&list, "shop.example.com").expect("an entry");
        let published = publish(&dns, &config, "shop.example.com", 0, &state, None)
            .await
            .unwrap_or_else(|e| panic!("{method} {form}: {e}"));
        let d = follow_until_issued(&cas, &format!("{method} {form}")).await;
        assert_eq!(
            d.instance.certificate_status,
            Some(CertificateStatus::Issued),
            "{method} {form}"
        );
        let where_ = match &published {
            Published::Dns { .. } => {
                let records = sim.state()["dns_records"].clone();
                assert!(
                    records.to_string().contains("_dnsauth.shop"),
                    "{method} {form}: {records}"
                );
                "dns"
            }
            Published::File(p) => {
                assert_eq!(
                    p,
                    &webroot
                        .path()
                        .join(".well-known/pki-validation/fileauth.txt"),
                    "{method} {form}"
                );
                "file"
            }
            other => panic!("{method} {form}: {other:?}"),
        };
        assert_eq!(where_, if method == "DNS" { "dns" } else { "file" });
        unpublish(&dns, &published).await;
        assert!(
            !webroot
                .path()
                .join(".well-known/pki-validation/fileauth.txt")
                .exists(),
            "{method} {form}: removed"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn managed_reissue_key_and_will_expire_readings_as_the_client_sees_them() {
    // `shop` is managed by CAS (AutoReissue), `plain` is not; both have 20 days.
    let two = "instances:\n  - { domain: shop.example.com, service_period: 730d, certificate_expires_in: 20d, auto_reissue: true }\n  - { domain: plain.example.com, service_period: 730d, certificate_expires_in: 20d }\n";
    for (v2, plain_status, reissued, cas_key) in [
        ("{}", CertificateStatus::WillExpire, true, true),
        (
            "{ auto_reissue_key: last_csr }",
            CertificateStatus::WillExpire,
            true,
            false,
        ),
        (
            "{ will_expire_days: 10 }",
            CertificateStatus::Issued,
            false,
            true,
        ),
    ] {
        let sim = start_sim(KEY_ID, SECRET, &format!("{two}v2: {v2}\n")).await;
        let cas = cas(&sim);
        let (key, our_csr) = key_and_csr("shop.example.com");
        cas.update_instance_with(&InstanceApplication {
            instance_id: SHOP.into(),
            csr: Some(our_csr),
            ..Default::default()
        })
        .await
        .expect("update");
        let all = cas
            .list_all_instances(&InstanceFilter::default(), 10)
            .await
            .expect("list");
        let plain = by_domain(&all, "plain.example.com");
        assert_eq!(plain.certificate_status, Some(plain_status), "{v2}");
        let state = sim.state();
        assert_eq!(
            state["v2"]["auto_reissues"][SHOP].as_u64() == Some(1),
            reissued,
            "{v2}"
        );
        if !reissued {
            continue;
        }
        let d = cas.get_instance_detail(SHOP).await.expect("detail").body;
        let cert = cas
            .get_user_certificate_detail(d.instance.certificate_id.expect("id"), false)
            .await
            .expect("certificate")
            .body;
        assert_eq!(cert.key.is_some(), cas_key, "{v2}: Key sent");
        let leaf = cas_renewd::pki::read_leaf(cert.cert.as_deref().expect("cert")).expect("leaf");
        let ours = cas_renewd::pki::Key::from_pem(&key.serialize_pem()).expect("key");
        assert_eq!(
            leaf.spki_sha256 == ours.spki_sha256(),
            !cas_key,
            "{v2}: whose key"
        );
    }
}
