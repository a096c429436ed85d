//! The API client against a local fake endpoint: signing, retry policy, error
//! classification, paging, limits and redaction.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use cas_renewd::cas::api::{Cas, OrderFilter, Tag};
use cas_renewd::cas::client::ApiError;
use common::{Fake, Reply, cas_for, throttled};

fn cas(fake: &Fake) -> Cas {
    cas_for(
        fake,
        common::ACCESS_KEY_SECRET,
        None,
        6,
        Duration::from_secs(5),
    )
}

const STATE_OK: &str = r#"{"RequestId":"OK-1","Type":"process"}"#;

#[tokio::test]
async fn throttling_is_retried_with_fresh_signatures_until_success() {
    let fake = Fake::start().await;
    fake.script(
        "DescribeCertificateState",
        [
            throttled(),
            throttled(),
            throttled(),
            Reply::json(200, STATE_OK),
        ],
    );
    let resp = cas(&fake)
        .describe_certificate_state(42)
        .await
        .expect("succeeds on the 4th attempt");
    assert_eq!(resp.attempts, 4);
    assert_eq!(resp.request_id, "OK-1");
    let got = fake.received();
    assert_eq!(got.len(), 4);
    assert!(
        got.iter()
            .all(|r| r.signature_ok && r.method == "POST" && r.body_len == 0)
    );
    assert!(got.iter().all(|r| r.param("OrderId") == Some("42")));
    let nonces: HashSet<&str> = got
        .iter()
        .map(|r| r.headers["x-acs-signature-nonce"].as_str())
        .collect();
    assert_eq!(nonces.len(), 4, "every attempt has its own nonce");
    let auths: HashSet<&str> = got
        .iter()
        .map(|r| r.headers["authorization"].as_str())
        .collect();
    assert_eq!(auths.len(), 4, "every attempt is signed afresh");
    for r in &got {
        assert_eq!(r.headers["x-acs-action"], "DescribeCertificateState");
        assert_eq!(r.headers["x-acs-version"], "2020-04-07");
        assert_eq!(
            r.headers["x-acs-content-sha256"],
            cas_renewd::cas::sign::EMPTY_PAYLOAD_SHA256
        );
        assert!(r.headers["authorization"].contains(
            "SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,"
        ));
    }
}

#[tokio::test]
async fn client_errors_fail_at_once_with_code_message_and_request_id() {
    let fake = Fake::start().await;
    fake.script(
        "DescribeCertificateState",
        [Reply::error(
            400,
            "InvalidParameter",
            "The specified parameter OrderId is not valid.",
        )],
    );
    let err = cas(&fake)
        .describe_certificate_state(1)
        .await
        .expect_err("fails");
    assert_eq!(fake.count("DescribeCertificateState"), 1, "not retried");
    let shown = err.to_string();
    assert!(shown.contains("InvalidParameter"), "{shown}");
    assert!(shown.contains("OrderId is not valid"), "{shown}");
    assert!(shown.contains("REQ-InvalidParameter"), "{shown}");
    assert_eq!(err.code(), Some("InvalidParameter"));
}

#[tokio::test]
async fn server_errors_are_retried_until_attempts_run_out() {
    let fake = Fake::start().await;
    fake.fallback(|_| Reply::error(503, "ServiceUnavailable", "try later"));
    let c = cas_for(
        &fake,
        common::ACCESS_KEY_SECRET,
        None,
        3,
        Duration::from_secs(5),
    );
    let err = c
        .describe_certificate_state(1)
        .await
        .expect_err("exhausted");
    assert!(
        matches!(err, ApiError::Exhausted { attempts: 3, .. }),
        "{err}"
    );
    assert_eq!(err.code(), Some("ServiceUnavailable"));
    assert_eq!(fake.count("DescribeCertificateState"), 3);
}

#[tokio::test]
async fn wrong_secret_is_signature_does_not_match_and_not_retried() {
    let fake = Fake::start().await;
    fake.fallback(|_| Reply::json(200, STATE_OK));
    let c = cas_for(&fake, "not-the-secret", None, 6, Duration::from_secs(5));
    let err = c.describe_certificate_state(1).await.expect_err("rejected");
    assert_eq!(err.code(), Some("SignatureDoesNotMatch"));
    assert_eq!(fake.received().len(), 1);
}

#[tokio::test]
async fn non_json_and_truncated_bodies_are_clear_errors() {
    let fake = Fake::start().await;
    fake.script(
        "DescribeCertificateState",
        [
            Reply::json(200, "<html>gateway</html>"),
            Reply::json(200, r#"{"RequestId":"x","Ty"#),
        ],
    );
    let c = cas_for(
        &fake,
        common::ACCESS_KEY_SECRET,
        None,
        2,
        Duration::from_secs(5),
    );
    let err = c
        .describe_certificate_state(1)
        .await
        .expect_err("malformed");
    let shown = err.to_string();
    assert!(shown.contains("malformed response"), "{shown}");
    assert!(shown.contains("not JSON"), "{shown}");
    assert_eq!(fake.received().len(), 2, "reads retry a malformed answer");
}

#[tokio::test]
async fn missing_required_fields_are_schema_errors() {
    let fake = Fake::start().await;
    fake.script(
        "ListUserCertificateOrder",
        [Reply::json(
            200,
            r#"{"RequestId":"R-9","CertificateOrderList":[]}"#,
        )],
    );
    let err = cas(&fake)
        .list_all_orders(OrderFilter::default(), 50)
        .await
        .expect_err("TotalCount missing");
    assert!(matches!(err, ApiError::Schema { .. }), "{err}");
    let shown = err.to_string();
    assert!(
        shown.contains("TotalCount") && shown.contains("R-9"),
        "{shown}"
    );
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let fake = Fake::start().await;
    let big = format!(
        r#"{{"RequestId":"R","Type":"process","Pad":"{}"}}"#,
        "x".repeat(11 * 1024 * 1024)
    );
    fake.fallback(move |_| Reply::json(200, big.clone()));
    let c = cas_for(
        &fake,
        common::ACCESS_KEY_SECRET,
        None,
        1,
        Duration::from_secs(20),
    );
    let err = c
        .describe_certificate_state(1)
        .await
        .expect_err("too large");
    assert!(err.to_string().contains("larger than"), "{err}");
}

#[tokio::test]
async fn paging_walks_every_page_until_total_count() {
    let fake = Fake::start().await;
    fake.fallback(common::orders_fallback(120));
    let all = cas(&fake)
        .list_all_orders(OrderFilter::default(), 50)
        .await
        .expect("lists");
    assert_eq!(all.len(), 120);
    let pages: Vec<String> = fake
        .received()
        .iter()
        .filter_map(|r| r.param("CurrentPage").map(str::to_owned))
        .collect();
    assert_eq!(pages, ["1", "2", "3"]);
    assert_eq!(all[119].domain.as_deref(), Some("host-119.example.com"));
}

#[tokio::test]
async fn renew_timeout_is_ambiguous_and_sent_once() {
    let fake = Fake::start().await;
    fake.fallback(|_| {
        Reply::json(200, r#"{"RequestId":"R","OrderId":9}"#).delayed(Duration::from_secs(3))
    });
    let c = cas_for(
        &fake,
        common::ACCESS_KEY_SECRET,
        None,
        6,
        Duration::from_millis(500),
    );
    let err = c
        .renew_certificate_order(7, Some("CSR"), &[])
        .await
        .expect_err("times out");
    assert!(matches!(err, ApiError::Ambiguous { .. }), "{err}");
    assert!(err.to_string().contains("may have taken effect"), "{err}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        fake.count("RenewCertificateOrderForPackageRequest"),
        1,
        "a paid call is never repeated blindly"
    );
}

#[tokio::test]
async fn renew_internal_error_is_ambiguous_but_throttling_is_retried() {
    let fake = Fake::start().await;
    fake.script(
        "RenewCertificateOrderForPackageRequest",
        [Reply::error(500, "InternalError", "boom")],
    );
    let err = cas(&fake)
        .renew_certificate_order(7, None, &[])
        .await
        .expect_err("ambiguous");
    assert!(matches!(err, ApiError::Ambiguous { .. }), "{err}");
    assert_eq!(fake.count("RenewCertificateOrderForPackageRequest"), 1);

    let fake = Fake::start().await;
    fake.script(
        "RenewCertificateOrderForPackageRequest",
        [
            throttled(),
            Reply::json(200, r#"{"RequestId":"R","OrderId":"123"}"#),
        ],
    );
    let tags = [Tag {
        key: "cas-renewd".into(),
        value: "www".into(),
    }];
    let resp = cas(&fake)
        .renew_certificate_order(
            7,
            Some("-----BEGIN CERTIFICATE REQUEST-----\nAB+/=\n"),
            &tags,
        )
        .await
        .expect("renewed");
    assert_eq!(resp.body.order_id, 123);
    let got = fake.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].param("Tags.1.Key"), Some("cas-renewd"));
    assert_eq!(got[1].param("Tags.1.Value"), Some("www"));
    assert_eq!(
        got[1].param("Csr"),
        Some("-----BEGIN CERTIFICATE REQUEST-----\nAB+/=\n")
    );
}

#[tokio::test]
async fn sts_token_is_sent_and_signed() {
    let fake = Fake::start().await;
    fake.fallback(|_| Reply::json(200, STATE_OK));
    let c = cas_for(
        &fake,
        common::ACCESS_KEY_SECRET,
        Some("sts-token-xyz"),
        1,
        Duration::from_secs(5),
    );
    c.describe_certificate_state(1).await.expect("ok");
    let r = &fake.received()[0];
    assert!(r.signature_ok);
    assert_eq!(r.headers["x-acs-security-token"], "sts-token-xyz");
    assert!(r.headers["authorization"].contains("x-acs-security-token"));
}
