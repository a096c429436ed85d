//! The simulator through its HTTP interface: operations, signature checks, order
//! lifecycle, validation, rate limits and every fault switch.

mod common;

use std::time::{Duration, Instant};

use cas_renewd::cas::api::{
    Cas, CertificateOrder, CertificateState, CertificateStateResponse, OrderFilter, OrderStatus,
    OrderType,
};
use cas_renewd::cas::client::ApiError;
use common::{KEY_ID, Raw, SECRET, Simulator, start_sim};
use rcgen::{CertificateParams, DnType, KeyPair, PublicKeyData};
use x509_parser::prelude::*;

const TWO_ORDERS: &str = "orders:\n  - { domain: www.example.com, expires_in: 20d }\n  - { domain: api.example.com, expires_in: 200d, sans: [api2.example.com] }\n";

async fn start(extra: &str) -> Simulator {
    start_sim(KEY_ID, SECRET, extra).await
}

/// A simulator for `extra` and a client of its account.
async fn start_with_client(extra: &str) -> (Simulator, Cas) {
    let sim = start(extra).await;
    let cas = cas(&sim);
    (sim, cas)
}

fn client(sim: &Simulator, attempts: u32, timeout: Duration) -> Cas {
    let fake = common::Fake::at(sim.url());
    common::cas_with_key(&fake, KEY_ID, SECRET, None, attempts, timeout)
}

fn cas(sim: &Simulator) -> Cas {
    client(sim, 6, Duration::from_secs(10))
}

fn csr_for(domain: &str, key: &KeyPair) -> String {
    let mut p = CertificateParams::new(vec![domain.to_owned()]).expect("params");
    p.distinguished_name.push(DnType::CommonName, domain);
    p.serialize_request(key).expect("csr").pem().expect("pem")
}

async fn order_id(cas: &Cas, domain: &str) -> i64 {
    let all = cas
        .list_all_orders(OrderFilter::default(), 50)
        .await
        .expect("list");
    all.iter()
        .find(|o| o.domain.as_deref() == Some(domain))
        .and_then(|o| o.order_id)
        .expect("order exists")
}

/// Every order in `status`, listed `page` at a time.
async fn list_by_status(cas: &Cas, status: OrderStatus, page: u32) -> Vec<CertificateOrder> {
    cas.list_all_orders(
        OrderFilter {
            status: Some(status),
            ..Default::default()
        },
        page,
    )
    .await
    .expect("list")
}

/// Renews order `id` (with `csr`, or letting CAS make the key), then describes the
/// new order once: its id and state.
async fn renew_and_describe(
    cas: &Cas,
    id: i64,
    csr: Option<&str>,
) -> (i64, CertificateStateResponse) {
    let new_id = cas
        .renew_certificate_order(id, csr, &[])
        .await
        .expect("renew")
        .body
        .order_id;
    let s = cas
        .describe_certificate_state(new_id)
        .await
        .expect("describe")
        .body;
    (new_id, s)
}

/// The state of order `id` now.
async fn state_of(cas: &Cas, id: i64) -> CertificateState {
    cas.describe_certificate_state(id)
        .await
        .expect("describe")
        .body
        .state
}

/// Polls DescribeCertificateState until the order is issued (bounded).
async fn poll_until_issued(cas: &Cas, id: i64) -> Vec<CertificateState> {
    let mut seen = Vec::new();
    for _ in 0..20 {
        let s = cas
            .describe_certificate_state(id)
            .await
            .expect("describe")
            .body;
        seen.push(s.state);
        if s.state == CertificateState::Certificate {
            return seen;
        }
    }
    panic!("not issued after 20 polls: {seen:?}");
}

#[tokio::test]
async fn full_renewal_with_a_csr_issues_a_real_certificate_for_our_key() {
    let (sim, cas) = start_with_client(TWO_ORDERS).await;
    let orders = cas
        .list_all_orders(OrderFilter::default(), 50)
        .await
        .expect("list");
    assert_eq!(orders.len(), 2);
    let www = orders
        .iter()
        .find(|o| o.domain.as_deref() == Some("www.example.com"))
        .expect("www");
    assert_eq!(www.status, Some(OrderStatus::Willexpired));
    let api = orders
        .iter()
        .find(|o| o.domain.as_deref() == Some("api.example.com"))
        .expect("api");
    assert_eq!(api.status, Some(OrderStatus::Issued));
    let left_days =
        (www.cert_end_time.expect("end") - chrono::Utc::now().timestamp_millis()) / 86_400_000;
    assert!((19..=20).contains(&left_days), "{left_days}");

    let key = KeyPair::generate().expect("key");
    let renewed = cas
        .renew_certificate_order(
            www.order_id.expect("id"),
            Some(&csr_for("www.example.com", &key)),
            &[],
        )
        .await
        .expect("renew");
    let new_id = renewed.body.order_id;
    assert_ne!(Some(new_id), www.order_id);
    let states = poll_until_issued(&cas, new_id).await;
    assert_eq!(
        states,
        [
            CertificateState::Payed,
            CertificateState::Process,
            CertificateState::Certificate
        ]
    );
    let issued = cas
        .describe_certificate_state(new_id)
        .await
        .expect("describe")
        .body;
    assert!(
        issued.private_key.is_none(),
        "we sent a CSR, so no key comes back"
    );
    let pem = issued.certificate.expect("certificate");
    let certs: Vec<_> = Pem::iter_from_buffer(pem.as_bytes())
        .map(|p| p.expect("pem"))
        .collect();
    assert_eq!(certs.len(), 2, "leaf and intermediate");
    let leaf = certs[0].parse_x509().expect("leaf");
    assert_eq!(
        leaf.public_key().raw,
        key.subject_public_key_info().as_slice()
    );
    assert!(leaf.validity().is_valid());
    let days = leaf
        .validity()
        .time_to_expiration()
        .expect("valid")
        .whole_days();
    assert!((364..=365).contains(&days), "{days}");
    let inter = certs[1].parse_x509().expect("intermediate");
    leaf.verify_signature(Some(inter.public_key()))
        .expect("chain");

    let state = sim.state();
    assert_eq!(
        state["renew_calls"][www.order_id.expect("id").to_string()],
        1
    );
    assert_eq!(state["calls"]["RenewCertificateOrderForPackageRequest"], 1);
    // The renewed order is listed as issued; the old one stays until it expires.
    let again = cas
        .list_all_orders(OrderFilter::default(), 50)
        .await
        .expect("list");
    assert_eq!(again.len(), 3);
    let cert_id = issued
        .cert_id
        .expect("cert id")
        .parse::<i64>()
        .expect("numeric");
    let detail = cas
        .get_user_certificate_detail(cert_id, false)
        .await
        .expect("detail")
        .body;
    assert_eq!(detail.order_id, Some(new_id));
    assert!(detail.cert.expect("cert").contains("BEGIN CERTIFICATE"));
    assert!(detail.key.is_none());
}

#[tokio::test]
async fn renewal_without_csr_returns_a_matching_private_key() {
    let (_sim, cas) = start_with_client("orders:\n  - { domain: ecc.example.com, expires_in: 5d, algorithm: ECC }\nissuance: { polls_before_issued: 0 }\n").await;
    let id = order_id(&cas, "ecc.example.com").await;
    let (_, s) = renew_and_describe(&cas, id, None).await;
    assert_eq!(s.state, CertificateState::Certificate);
    let key = KeyPair::from_pem(s.private_key.expect("key").expose()).expect("key parses");
    let pem = s.certificate.expect("cert");
    let (_, p) = parse_x509_pem(pem.as_bytes()).expect("pem");
    assert_eq!(
        p.parse_x509().expect("x509").public_key().raw,
        key.subject_public_key_info().as_slice()
    );
}

#[tokio::test]
async fn renew_is_refused_unless_the_order_is_about_to_expire() {
    let (sim, cas) = start_with_client(TWO_ORDERS).await;
    let id = order_id(&cas, "api.example.com").await;
    let err = cas
        .renew_certificate_order(id, None, &[])
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Some("InvalidOrderStatus"), "{err}");
    let err = cas
        .describe_certificate_state(999)
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), Some("InvalidOrderId.NotFound"));
    // A CSR for another domain is refused too.
    let www = order_id(&cas, "www.example.com").await;
    let key = KeyPair::generate().expect("key");
    let err = cas
        .renew_certificate_order(www, Some(&csr_for("other.example.com", &key)), &[])
        .await
        .expect_err("wrong CN");
    assert_eq!(err.code(), Some("InvalidParameter"), "{err}");
    assert!(common::no_renew_calls(&sim.state()));
}

#[tokio::test]
async fn the_simulated_clock_moves_orders_through_their_states() {
    let (sim, cas) = start_with_client(TWO_ORDERS).await;
    let status = |orders: &[cas_renewd::cas::api::CertificateOrder], d: &str| {
        orders
            .iter()
            .find(|o| o.domain.as_deref() == Some(d))
            .and_then(|o| o.status)
    };
    sim.advance(Duration::from_secs(175 * 86_400));
    let o = cas
        .list_all_orders(OrderFilter::default(), 50)
        .await
        .expect("list");
    assert_eq!(
        status(&o, "api.example.com"),
        Some(OrderStatus::Willexpired)
    );
    assert_eq!(status(&o, "www.example.com"), Some(OrderStatus::Expired));
    // Through HTTP as well.
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/clock?advance=30d", sim.url()))
        .send()
        .await
        .expect("clock");
    assert_eq!(r.status(), 200);
    let o = list_by_status(&cas, OrderStatus::Expired, 50).await;
    assert_eq!(o.len(), 2);
}

#[tokio::test]
async fn listing_pages_filters_and_certificates() {
    let (sim, cas) = start_with_client("generate: { count: 250, expiring_fraction: 0.2, domain: \"host-{n}.example.com\" }\nrate_limits: { ListUserCertificateOrder: 1000 }\n",).await;
    let all = cas
        .list_all_orders(OrderFilter::default(), 100)
        .await
        .expect("list");
    assert_eq!(all.len(), 250);
    let expiring = list_by_status(&cas, OrderStatus::Willexpired, 100).await;
    assert_eq!(expiring.len(), 50);
    let one = cas
        .list_all_orders(
            OrderFilter {
                keyword: Some("host-17.example".into()),
                ..Default::default()
            },
            100,
        )
        .await
        .expect("list");
    assert_eq!(one.len(), 1);
    let certs = cas
        .list_all_orders(
            OrderFilter {
                order_type: Some(OrderType::Cert),
                ..Default::default()
            },
            100,
        )
        .await
        .expect("list");
    assert_eq!(certs.len(), 250);
    assert!(
        certs[0].certificate_id.is_some()
            && certs[0].common_name.is_some()
            && certs[0].end_date.is_some()
    );
    let page = cas
        .list_orders_page(&OrderFilter::default(), 3, 100)
        .await
        .expect("page")
        .body;
    assert_eq!(
        (page.total_count, page.certificate_order_list.len()),
        (250, 50)
    );
    let err = cas
        .list_orders_page(&OrderFilter::default(), 1, 101)
        .await
        .expect_err("too big");
    assert_eq!(err.code(), Some("InvalidParameter"));
    // 3 + 1 + 1 + 3 pages, one page, one refused: every call counted once.
    assert_eq!(sim.state()["calls"]["ListUserCertificateOrder"], 10);
}

#[tokio::test]
async fn dns_validation_waits_for_the_txt_record() {
    let (sim, cas) = start_with_client(&format!(
        "{TWO_ORDERS}issuance: {{ polls_before_issued: 1, validation: dns }}\n"
    ))
    .await;
    let id = order_id(&cas, "www.example.com").await;
    let key = KeyPair::generate().expect("key");
    let (new_id, s) = renew_and_describe(&cas, id, Some(&csr_for("www.example.com", &key))).await;
    assert_eq!(s.state, CertificateState::Payed);
    let s = cas
        .describe_certificate_state(new_id)
        .await
        .expect("d")
        .body;
    assert_eq!(s.state, CertificateState::DomainVerify);
    assert_eq!(s.validate_type.as_deref(), Some("DNS"));
    assert_eq!(s.record_domain.as_deref(), Some("_dnsauth"));
    assert_eq!(s.record_type.as_deref(), Some("TXT"));
    let value = s.record_value.expect("value");
    // Still waiting without the record.
    assert_eq!(state_of(&cas, new_id).await, CertificateState::DomainVerify);

    let dns = |action: &'static str| Raw {
        version: "2015-01-09",
        ..Raw::new(action, KEY_ID, SECRET)
    };
    let add = || {
        dns("AddDomainRecord")
            .param("DomainName", "example.com")
            .param("RR", "_dnsauth.www")
            .param("Type", "TXT")
            .param("Value", &value)
    };
    let (st, added) = add().send(&sim.url()).await;
    assert_eq!(st, 200, "{added}");
    let record_id = added["RecordId"].as_str().expect("string id").to_owned();
    let (_, dup) = add().send(&sim.url()).await;
    assert_eq!(dup["Code"], "DomainRecordDuplicate");
    let (_, sub) = dns("DescribeSubDomainRecords")
        .param("SubDomain", "_dnsauth.www.example.com")
        .param("Type", "TXT")
        .send(&sim.url())
        .await;
    assert_eq!(sub["TotalCount"], 1);
    assert_eq!(
        sub["DomainRecords"]["Record"][0]["RecordId"],
        record_id.as_str()
    );
    let (_, zone) = dns("DescribeDomainRecords")
        .param("DomainName", "example.com")
        .send(&sim.url())
        .await;
    assert_eq!(zone["TotalCount"], 1);
    let (_, nozone) = dns("DescribeDomainRecords")
        .param("DomainName", "elsewhere.org")
        .send(&sim.url())
        .await;
    assert_eq!(nozone["Code"], "InvalidDomainName.NoExist");

    assert_eq!(state_of(&cas, new_id).await, CertificateState::Certificate);
    let (st, _) = dns("DeleteDomainRecord")
        .param("RecordId", &record_id)
        .send(&sim.url())
        .await;
    assert_eq!(st, 200);
    let (_, gone) = dns("DeleteDomainRecord")
        .param("RecordId", &record_id)
        .send(&sim.url())
        .await;
    assert_eq!(gone["Code"], "DomainRecordNotBelongToUser");
}

#[tokio::test]
async fn file_validation_waits_for_the_file_under_the_webroot() {
    let root = tempfile::tempdir().expect("tempdir");
    let (_sim, cas) = start_with_client(&format!(
        "{TWO_ORDERS}issuance: {{ polls_before_issued: 0, validation: file, webroot: {} }}\n",
        root.path().display()
    ))
    .await;
    let id = order_id(&cas, "www.example.com").await;
    let (new_id, s) = renew_and_describe(&cas, id, None).await;
    assert_eq!(s.state, CertificateState::DomainVerify);
    assert_eq!(s.validate_type.as_deref(), Some("FILE"));
    assert_eq!(
        s.uri.as_deref(),
        Some("/.well-known/pki-validation/fileauth.txt")
    );
    let path = root.path().join(".well-known/pki-validation/fileauth.txt");
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, "wrong").expect("write");
    assert_eq!(state_of(&cas, new_id).await, CertificateState::DomainVerify);
    std::fs::write(&path, s.content.expect("content")).expect("write");
    assert_eq!(state_of(&cas, new_id).await, CertificateState::Certificate);
}

#[tokio::test]
async fn signature_errors_are_reported_like_alibaba() {
    let sim = start(TWO_ORDERS).await;
    let url = sim.url();
    let (st, ok) = Raw::new("ListUserCertificateOrder", KEY_ID, SECRET)
        .send(&url)
        .await;
    assert_eq!(st, 200, "{ok}");
    assert_eq!(ok["TotalCount"], 2);

    let (st, bad) = Raw::new("ListUserCertificateOrder", KEY_ID, "wrong")
        .send(&url)
        .await;
    assert_eq!(
        (st, bad["Code"].as_str()),
        (403, Some("SignatureDoesNotMatch"))
    );
    assert!(
        bad["Message"]
            .as_str()
            .expect("msg")
            .contains("server string to sign is:ACS3-HMAC-SHA256\n")
    );
    for k in ["RequestId", "HostId", "Recommend"] {
        assert!(bad[k].is_string(), "{k} missing: {bad}");
    }

    let (_, unknown) = Raw::new("ListUserCertificateOrder", "nobody", SECRET)
        .send(&url)
        .await;
    assert_eq!(unknown["Code"], "InvalidAccessKeyId.NotFound");

    let old = (chrono::Utc::now() - chrono::Duration::minutes(16))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let (_, skew) = Raw {
        date: old,
        ..Raw::new("ListUserCertificateOrder", KEY_ID, SECRET)
    }
    .send(&url)
    .await;
    assert_eq!(skew["Code"], "InvalidTimeStamp.Expired");

    let first = Raw::new("ListUserCertificateOrder", KEY_ID, SECRET);
    let nonce = first.nonce.clone();
    assert_eq!(first.send(&url).await.0, 200);
    let (_, reused) = Raw {
        nonce,
        ..Raw::new("ListUserCertificateOrder", KEY_ID, SECRET)
    }
    .send(&url)
    .await;
    assert_eq!(reused["Code"], "SignatureNonceUsed");

    // The older HMAC-SHA1 signature of V2 SDKs, sent as GET.
    let (st, v2) = Raw::new("ListUserCertificateOrder", KEY_ID, SECRET)
        .param("ShowSize", "1")
        .send_v2(&url)
        .await;
    assert_eq!(st, 200, "{v2}");
    assert_eq!(v2["CertificateOrderList"].as_array().map(Vec::len), Some(1));
    let (_, v2bad) = Raw::new("ListUserCertificateOrder", KEY_ID, "wrong")
        .send_v2(&url)
        .await;
    assert_eq!(v2bad["Code"], "SignatureDoesNotMatch");
    assert!(
        v2bad["Message"]
            .as_str()
            .expect("msg")
            .contains("server string to sign is:GET&%2F&AccessKeyId")
    );

    assert_eq!(sim.state()["signature_failures"], 2);
}

#[tokio::test]
async fn protocol_errors_have_their_codes() {
    let sim = start(TWO_ORDERS).await;
    let url = sim.url();
    let (st, e) = Raw::new("DeleteEverything", KEY_ID, SECRET)
        .send(&url)
        .await;
    assert_eq!(
        (st, e["Code"].as_str()),
        (404, Some("InvalidAction.NotFound"))
    );
    let (_, e) = Raw::new("DescribeCertificateState", KEY_ID, SECRET)
        .send(&url)
        .await;
    assert_eq!(e["Code"], "MissingParameter");
    assert!(e["Message"].as_str().expect("msg").contains("OrderId"));
    let (_, e) = Raw {
        version: "2018-07-13",
        ..Raw::new("ListUserCertificateOrder", KEY_ID, SECRET)
    }
    .send(&url)
    .await;
    assert_eq!(e["Code"], "InvalidVersion");
    let (_, e) = Raw {
        version: "2020-04-07",
        ..Raw::new("AddDomainRecord", KEY_ID, SECRET)
    }
    .send(&url)
    .await;
    assert_eq!(
        e["Code"], "InvalidVersion",
        "DNS actions are version 2015-01-09"
    );
    let plain = reqwest::get(format!("{url}/?Action=ListUserCertificateOrder"))
        .await
        .expect("get");
    assert_eq!(plain.status(), 400);
}

#[tokio::test]
async fn per_action_rate_limits_answer_throttling_with_a_header() {
    let sim = start(&format!(
        "{TWO_ORDERS}rate_limits: {{ DescribeCertificateState: 2 }}\n"
    ))
    .await;
    let url = sim.url();
    // Sent together, so that a slow machine cannot refill the bucket between them.
    let sends = (0..6).map(|_| {
        let url = url.clone();
        tokio::spawn(async move {
            Raw::new("DescribeCertificateState", KEY_ID, SECRET)
                .param("OrderId", "100001")
                .send(&url)
                .await
        })
    });
    let mut throttled = 0;
    for send in sends.collect::<Vec<_>>() {
        let (st, body) = send.await.expect("request task");
        if body["Code"] == "Throttling.User" {
            assert_eq!(st, 400);
            throttled += 1;
        }
    }
    assert!(throttled >= 2, "{throttled}");
    // The header carries TimeLeft, which the client honours.
    let cas = client(&sim, 8, Duration::from_secs(5));
    for _ in 0..6 {
        cas.describe_certificate_state(100_001)
            .await
            .expect("retried through the limit");
    }
    assert!(sim.state()["throttled"].as_u64().expect("n") >= 2);
}

async fn one_fault(kind: &str) -> (Simulator, Result<i64, ApiError>, Duration) {
    let sim = start(&format!(
        "{TWO_ORDERS}faults: {{ {kind}: 1.0, hold: 2s }}\n"
    ))
    .await;
    let cas = client(&sim, 2, Duration::from_millis(700));
    let started = Instant::now();
    let r = cas
        .renew_certificate_order(100_001, None, &[])
        .await
        .map(|r| r.body.order_id);
    (sim, r, started.elapsed())
}

#[tokio::test]
async fn fault_throttle() {
    let (sim, r, _) = one_fault("throttle").await;
    let err = r.expect_err("throttled");
    assert_eq!(err.code(), Some("Throttling.User"));
    assert!(
        matches!(err, ApiError::Exhausted { attempts: 2, .. }),
        "{err}"
    );
    assert_eq!(sim.state()["faults"]["throttle"], 2);
    assert!(common::no_renew_calls(&sim.state()));
}

#[tokio::test]
async fn fault_server_error() {
    let (sim, r, _) = one_fault("server_error").await;
    let err = r.expect_err("5xx");
    assert!(
        matches!(err.code(), Some("ServiceUnavailable" | "InternalError")),
        "{err}"
    );
    assert!(common::no_renew_calls(&sim.state()), "a 5xx fault acts not");
}

#[tokio::test]
async fn fault_timeout_acts_then_holds_the_answer() {
    let (sim, r, _) = one_fault("timeout").await;
    let err = r.expect_err("timed out");
    assert!(matches!(err, ApiError::Ambiguous { .. }), "{err}");
    assert_eq!(
        sim.state()["renew_calls"]["100001"],
        1,
        "the renew took effect"
    );
}

#[tokio::test]
async fn fault_malformed_acts_then_garbles_the_answer() {
    let (sim, r, _) = one_fault("malformed").await;
    let err = r.expect_err("garbled");
    assert!(matches!(err, ApiError::Ambiguous { .. }), "{err}");
    assert!(err.to_string().contains("malformed"), "{err}");
    assert_eq!(sim.state()["faults"]["malformed"], 1);
}

#[tokio::test]
async fn fault_latency_delays_every_answer() {
    let (_sim, cas) =
        start_with_client(&format!("{TWO_ORDERS}faults: {{ latency: 300ms }}\n")).await;
    let started = Instant::now();
    cas.describe_certificate_state(100_002).await.expect("ok");
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn faults_are_reproducible_from_the_seed() {
    async fn outcomes(seed: u64) -> Vec<bool> {
        let sim = start(&format!(
            "{TWO_ORDERS}seed: {seed}\nfaults: {{ server_error: 0.5 }}\nrate_limits: {{ ListUserCertificateOrder: 1000 }}\n"
        ))
        .await;
        let mut v = Vec::new();
        for _ in 0..20 {
            let (st, _) = Raw::new("ListUserCertificateOrder", KEY_ID, SECRET)
                .send(&sim.url())
                .await;
            v.push(st == 200);
        }
        v
    }
    let a = outcomes(7).await;
    assert_eq!(a, outcomes(7).await);
    assert!(a.contains(&true) && a.contains(&false), "{a:?}");
}

#[tokio::test]
async fn bad_certificates_on_request() {
    let (_sim, cas) = start_with_client("orders:\n  - { domain: a.example.com, expires_in: 5d, issue: wrong_name }\n  - { domain: b.example.com, expires_in: 5d, issue: verify_fail }\nissuance: { polls_before_issued: 0 }\n",).await;
    let (_, s) = renew_and_describe(&cas, 100_001, None).await;
    let pem = s.certificate.expect("cert");
    let (_, p) = parse_x509_pem(pem.as_bytes()).expect("pem");
    let cert = p.parse_x509().expect("x509");
    assert!(cert.subject().to_string().contains("wrong-name.invalid"));
    let (_, s) = renew_and_describe(&cas, 100_002, None).await;
    assert_eq!(s.state, CertificateState::VerifyFail);
}
