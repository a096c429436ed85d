//! The API client against a local fake endpoint: signing, retry policy, error
//! classification, paging, limits and redaction.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use cas_renewd::cas::api::{Cas, OrderFilter, Tag};
use cas_renewd::cas::client::ApiError;
use common::{Fake, Reply, cas_for, throttled};

/// A client with the fake's own secret, `attempts` tries and `timeout`.
fn client(fake: &Fake, attempts: u32, timeout: Duration) -> Cas {
    cas_for(fake, common::ACCESS_KEY_SECRET, None, attempts, timeout)
}

fn cas(fake: &Fake) -> Cas {
    client(fake, 6, Duration::from_secs(5))
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
    let c = client(&fake, 3, Duration::from_secs(5));
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
    let c = client(&fake, 2, Duration::from_secs(5));
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
    let c = client(&fake, 1, Duration::from_secs(20));
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
    let c = client(&fake, 6, Duration::from_millis(500));
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

#[tokio::test]
async fn redirects_are_not_followed_and_name_their_target() {
    // The place a redirect points at must see nothing: not the signed query, not
    // the STS token.
    let elsewhere = Fake::start().await;
    elsewhere.fallback(|_| Reply::json(200, STATE_OK));
    let fake = Fake::start().await;
    let target = format!("{}/steal", elsewhere.url());
    for status in [302, 307] {
        let location = target.clone();
        fake.script(
            "DescribeCertificateState",
            [Reply::json(status, "").with_header("location", &location)],
        );
    }
    let c = cas_for(
        &fake,
        common::ACCESS_KEY_SECRET,
        Some("sts-token-xyz"),
        6,
        Duration::from_secs(5),
    );
    for status in [302, 307] {
        let err = c
            .describe_certificate_state(1)
            .await
            .expect_err("a redirect is an error");
        assert!(matches!(err, ApiError::Redirect { .. }), "{err}");
        let shown = err.to_string();
        assert!(
            shown.contains(&format!("HTTP {status}")) && shown.contains(&target),
            "{shown}"
        );
        assert!(!shown.contains("sts-token-xyz"), "{shown}");
    }
    assert_eq!(fake.count("DescribeCertificateState"), 2, "never retried");
    assert!(
        elsewhere.received().is_empty(),
        "the redirect target received {:?}",
        elsewhere.received()
    );
}

#[tokio::test]
async fn renew_redirect_is_a_plain_refusal_sent_once() {
    let fake = Fake::start().await;
    fake.fallback(|_| Reply::json(301, "").with_header("location", "http://127.0.0.1:9/"));
    let err = cas(&fake)
        .renew_certificate_order(7, None, &[])
        .await
        .expect_err("redirected");
    assert!(matches!(err, ApiError::Redirect { .. }), "{err}");
    assert_eq!(fake.count("RenewCertificateOrderForPackageRequest"), 1);
}

#[tokio::test]
async fn x_acs_retry_after_sets_the_wait_before_the_retry() {
    let fake = Fake::start().await;
    fake.script(
        "DescribeCertificateState",
        [
            Reply::error(400, "Throttling.User", "flow control")
                .with_header("x-acs-retry-after", "1500"),
            Reply::json(200, STATE_OK),
        ],
    );
    let started = std::time::Instant::now();
    let resp = cas(&fake)
        .describe_certificate_state(1)
        .await
        .expect("succeeds on the retry");
    assert_eq!(resp.attempts, 2);
    // Our own first backoff is at most 250 ms; only the header explains more.
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1500), "{waited:?}");
}

#[tokio::test]
async fn any_5xx_is_retried_for_reads() {
    let fake = Fake::start().await;
    fake.script(
        "DescribeCertificateState",
        [
            Reply::error(502, "UnknownError", "bad gateway"),
            Reply::error(500, "InternalServerError", "oops"),
            Reply::json(200, STATE_OK),
        ],
    );
    let resp = cas(&fake)
        .describe_certificate_state(1)
        .await
        .expect("a server error is transient for a read");
    assert_eq!(resp.attempts, 3);
}

#[tokio::test]
async fn renew_with_any_5xx_is_ambiguous_and_sent_once() {
    let fake = Fake::start().await;
    fake.fallback(|_| Reply::error(500, "UnknownError", "The request processing has failed."));
    let err = cas(&fake)
        .renew_certificate_order(7, None, &[])
        .await
        .expect_err("outcome unknown");
    assert!(matches!(err, ApiError::Ambiguous { .. }), "{err}");
    assert_eq!(err.code(), Some("UnknownError"));
    assert_eq!(fake.count("RenewCertificateOrderForPackageRequest"), 1);
}

#[tokio::test]
async fn alidns_last_operation_not_finished_is_retried() {
    use cas_renewd::cas::client::{ApiClient, ClientSettings, RateLimiter};
    use cas_renewd::cas::credentials::{Credential, CredentialsProvider};
    use cas_renewd::cas::dns::{DNS_VERSION, Dns};
    let fake = Fake::start().await;
    fake.script(
        "AddDomainRecord",
        [
            Reply::error(
                400,
                "LastOperationNotFinished",
                "Last operation is not finished, please try again later.",
            ),
            Reply::json(200, r#"{"RequestId":"R","RecordId":"rec-1"}"#),
        ],
    );
    let creds = CredentialsProvider::fixed(Credential {
        access_key_id: common::ACCESS_KEY_ID.into(),
        access_key_secret: cas_renewd::secret::Secret::new(common::ACCESS_KEY_SECRET),
        security_token: None,
        expiration: None,
    });
    let client = ApiClient::new(
        ClientSettings {
            endpoint: reqwest::Url::parse(&fake.url()).expect("url"),
            version: DNS_VERSION,
            timeout: Duration::from_secs(5),
            max_attempts: 6,
        },
        std::sync::Arc::new(creds),
        std::sync::Arc::new(RateLimiter::new(100.0)),
    )
    .expect("client");
    let id = Dns::new(client)
        .add_record("example.com", "_dnsauth.www", "TXT", "token")
        .await
        .expect("retried after the earlier change finished");
    assert_eq!(id, "rec-1");
    assert_eq!(fake.count("AddDomainRecord"), 2);
}

#[tokio::test]
async fn the_engine_pages_with_the_configured_page_size() {
    use cas_renewd::cas::credentials::{Credential, CredentialsProvider};
    let fake = Fake::start().await;
    fake.fallback(common::orders_fallback(120));
    let creds = std::sync::Arc::new(CredentialsProvider::fixed(Credential {
        access_key_id: common::ACCESS_KEY_ID.into(),
        access_key_secret: cas_renewd::secret::Secret::new(common::ACCESS_KEY_SECRET),
        security_token: None,
        expiration: None,
    }));
    for (setting, want) in [("", "50"), ("page_size: 40, ", "40")] {
        let cfg = cas_renewd::config::Config::parse(
            &format!(
                "api: {{ {setting}endpoint: \"{}\" }}\ncertificates:\n  - {{ name: www, domain: www.example.com }}\n",
                fake.url()
            ),
            std::path::Path::new("test.yaml"),
        )
        .expect("config");
        let before = fake.received().len();
        let orders = cas_renewd::renew::Engine::new(cfg, creds.clone())
            .expect("engine")
            .inventory()
            .await
            .expect("inventory");
        assert_eq!(orders.len(), 120);
        let sizes: Vec<String> = fake.received()[before..]
            .iter()
            .filter_map(|r| r.param("ShowSize").map(str::to_owned))
            .collect();
        assert!(
            !sizes.is_empty() && sizes.iter().all(|s| s == want),
            "{setting}: {sizes:?}"
        );
    }
}
