//! The V2.0 instance lifecycle on the simulated clock, driven through
//! `World::call` as the server does.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use rcgen::{CertificateParams, DnType, KeyPair};
use serde_json::Value;

use super::super::World;
use crate::scenario::Scenario;

const DAY: Duration = Duration::from_secs(86_400);

fn world(extra: &str) -> World {
    world_with("validation: none", extra)
}

fn world_with(validation: &str, extra: &str) -> World {
    let text = format!(
        "access_key: {{ id: a, secret: b }}\nissuance: {{ polls_before_issued: 1, validity: 90d, {validation} }}\n{extra}"
    );
    let s = Scenario::parse(&text, Path::new("s.yaml")).unwrap_or_else(|e| panic!("{e}"));
    World::new(&s).expect("world")
}

fn call(w: &mut World, action: &str, params: &[(&str, &str)]) -> Result<Value, super::SimError> {
    let p: HashMap<String, String> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    w.call(action, &p)
}

fn ok(w: &mut World, action: &str, params: &[(&str, &str)]) -> Value {
    call(w, action, params).unwrap_or_else(|e| panic!("{action}: {e:?}"))
}

fn csr(domain: &str) -> String {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(vec![domain.to_owned()]).expect("params");
    p.distinguished_name.push(DnType::CommonName, domain);
    p.serialize_request(&key).expect("csr").pem().expect("pem")
}

const ONE: &str = "instances:\n  - { domain: shop.example.com, service_period: 730d, certificate_expires_in: 20d, certificate_validity: 90d }\n";
const ID: &str = "cas-ivauto-000001";

/// UpdateInstance with our CSR, then ApplyCertificate.
fn reissue(w: &mut World) {
    let c = csr("shop.example.com");
    ok(
        w,
        "UpdateInstance",
        &[
            ("InstanceId", ID),
            ("GenerateCsrMethod", "upload"),
            ("Csr", &c),
            ("Domain", "shop.example.com"),
            ("ValidationMethod", "DNS"),
            ("KeyAlgorithm", "ECC_256"),
        ],
    );
    ok(w, "ApplyCertificate", &[("InstanceId", ID)]);
}

/// GetInstanceDetail until the instance is no longer pending.
fn poll_until_issued(w: &mut World) -> Value {
    for _ in 0..10 {
        let d = ok(w, "GetInstanceDetail", &[("InstanceId", ID)]);
        if d["Status"] != "pending" {
            return d;
        }
    }
    panic!("not issued after 10 polls");
}

#[test]
fn list_reports_statuses_in_seconds_and_pages_to_100() {
    let mut w = world(concat!(
        "instances:\n",
        "  - { domain: a.example.com, service_period: 365d, certificate_expires_in: 20d }\n",
        "  - { domain: b.example.com, service_period: 365d, service_used: 350d, certificate_expires_in: 10d }\n",
        "  - { domain: c.example.com, service_period: 365d }\n",
        "  - { domain: d.example.com, service_period: 365d, status: refund }\n",
    ));
    let page = ok(&mut w, "ListInstances", &[("ShowSize", "100")]);
    assert_eq!(page["TotalCount"], 4);
    let list = page["InstanceList"].as_array().expect("list");
    let status: Vec<(&str, &str)> = list
        .iter()
        .map(|i| {
            (
                i["Status"].as_str().unwrap_or("?"),
                i["CertificateStatus"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        status,
        vec![
            ("normal", "willExpire"),
            ("willExpire", "willExpire"),
            ("inactive", "-"),
            ("refund", "-")
        ]
    );
    let end = list[0]["InstanceEndTime"].as_i64().expect("seconds");
    assert!(end < 100_000_000_000, "seconds, not milliseconds: {end}");
    let err = call(&mut w, "ListInstances", &[("ShowSize", "101")]).expect_err("over 100");
    assert_eq!(err.code, "InvalidParameter");
    let second = ok(
        &mut w,
        "ListInstances",
        &[("ShowSize", "3"), ("CurrentPage", "2")],
    );
    assert_eq!(second["InstanceList"].as_array().map(Vec::len), Some(1));
    w.advance(30 * DAY);
    let page = ok(&mut w, "ListInstances", &[("Status", "expired")]);
    assert_eq!(page["TotalCount"], 1, "b's service period is over");
}

#[test]
fn reissue_goes_through_task_validation_and_detail() {
    let mut w = world_with("validation: dns", ONE);
    reissue(&mut w);
    assert_eq!(
        ok(&mut w, "GetTaskAttribute", &[("TaskId", ID)])["TaskStatus"],
        "processing"
    );
    assert_eq!(
        ok(
            &mut w,
            "GetTaskAttribute",
            &[("TaskId", ID), ("TaskType", "ApplyCertificate")]
        )["TaskStatus"],
        "success"
    );
    let d = ok(&mut w, "GetInstanceDetail", &[("InstanceId", ID)]);
    assert_eq!(d["Status"], "pending");
    let v = &d["DomainValidationList"][0];
    assert_eq!(
        (
            v["ValidationType"].as_str(),
            v["ValidationKey"].as_str(),
            v["RootDomain"].as_str()
        ),
        (Some("TXT"), Some("_dnsauth.shop"), Some("example.com"))
    );
    let token = v["ValidationValue"].as_str().expect("token").to_owned();
    // Without the record it stays pending; a second application is refused.
    assert_eq!(poll_once(&mut w)["Status"], "pending");
    let err = call(&mut w, "ApplyCertificate", &[("InstanceId", ID)]).expect_err("under review");
    assert_eq!(err.code, "InvalidStatus");
    ok(
        &mut w,
        "AddDomainRecord",
        &[
            ("DomainName", "example.com"),
            ("RR", "_dnsauth.shop"),
            ("Type", "TXT"),
            ("Value", &token),
        ],
    );
    let d = poll_until_issued(&mut w);
    assert_eq!(
        (d["Status"].as_str(), d["CertificateStatus"].as_str()),
        (Some("normal"), Some("issued"))
    );
    let cert_id = d["CertificateId"].as_i64().expect("id").to_string();
    let detail = ok(&mut w, "GetUserCertificateDetail", &[("CertId", &cert_id)]);
    assert!(
        detail["Cert"]
            .as_str()
            .is_some_and(|c| c.contains("BEGIN CERTIFICATE"))
    );
    assert!(detail.get("Key").is_none(), "our CSR: CAS holds no key");
    assert_eq!(detail["InstanceId"], ID);
    let state = w.snapshot();
    assert_eq!(state["v2"]["apply_certificate_calls"][ID], 1);
}

fn poll_once(w: &mut World) -> Value {
    ok(w, "GetInstanceDetail", &[("InstanceId", ID)])
}

#[test]
fn certificates_stop_at_the_service_end_and_an_expired_instance_is_refused() {
    let mut w = world(
        "instances:\n  - { domain: shop.example.com, service_period: 60d, certificate_expires_in: 10d, certificate_validity: 90d }\n",
    );
    w.advance(5 * DAY);
    reissue(&mut w);
    let d = poll_until_issued(&mut w);
    let (cert_end, service_end) = (
        d["CertificateNotAfter"].as_i64(),
        d["InstanceEndTime"].as_i64(),
    );
    assert_eq!(cert_end, service_end, "capped at the service end");
    w.advance(56 * DAY);
    let d = poll_once(&mut w);
    assert_eq!(
        (d["Status"].as_str(), d["CertificateStatus"].as_str()),
        (Some("expired"), Some("expired"))
    );
    for action in ["UpdateInstance", "ApplyCertificate"] {
        let err = call(&mut w, action, &[("InstanceId", ID)]).expect_err(action);
        assert_eq!(err.code, "InvalidStatus", "{action}");
    }
    let mut w2 = world(
        "instances:\n  - { domain: shop.example.com, service_period: 60d, certificate_expires_in: 10d, certificate_validity: 90d }\nv2: { cert_within_service: false }\n",
    );
    reissue(&mut w2);
    let d = poll_until_issued(&mut w2);
    assert!(
        d["CertificateNotAfter"].as_i64() > d["InstanceEndTime"].as_i64(),
        "full validity past the end"
    );
}

#[test]
fn auto_reissue_issues_with_cas_key_when_will_expire() {
    let mut w = world(
        "instances:\n  - { domain: shop.example.com, service_period: 730d, certificate_expires_in: 40d, auto_reissue: true }\n",
    );
    let first = poll_once(&mut w)["CertificateId"].as_i64();
    w.advance(11 * DAY);
    let d = poll_once(&mut w);
    assert_ne!(
        d["CertificateId"].as_i64(),
        first,
        "re-issued once willExpire"
    );
    assert_eq!(d["CertificateStatus"], "issued");
    let id = d["CertificateId"].as_i64().expect("id").to_string();
    let detail = ok(&mut w, "GetUserCertificateDetail", &[("CertId", &id)]);
    assert!(
        detail["Key"]
            .as_str()
            .is_some_and(|k| k.contains("PRIVATE KEY")),
        "CAS's key"
    );
    assert_eq!(w.snapshot()["v2"]["auto_reissues"][ID], 1);
    assert!(
        w.snapshot()["v2"]["apply_certificate_calls"]
            .get(ID)
            .is_none()
    );
}

#[test]
fn bad_applications_are_refused_with_clear_errors() {
    let mut w = world(ONE);
    let wrong = csr("other.example.com");
    for (params, code) in [
        (
            vec![("InstanceId", "cas-ivauto-999")],
            "InvalidInstanceId.NotFound",
        ),
        (
            vec![("InstanceId", ID), ("GenerateCsrMethod", "upload")],
            "MissingParameter",
        ),
        (
            vec![
                ("InstanceId", ID),
                ("GenerateCsrMethod", "upload"),
                ("Csr", wrong.as_str()),
            ],
            "InvalidParameter",
        ),
        (
            vec![("InstanceId", ID), ("Domain", "other.example.com")],
            "InvalidParameter",
        ),
        (
            vec![("InstanceId", ID), ("ValidationMethod", "EMAIL")],
            "InvalidParameter",
        ),
        (
            vec![("InstanceId", ID), ("KeyAlgorithm", "DSA")],
            "InvalidParameter",
        ),
    ] {
        let err = call(&mut w, "UpdateInstance", &params).expect_err("refused");
        assert_eq!(err.code, code, "{params:?}");
    }
    let err = call(&mut w, "GetTaskAttribute", &[("TaskId", ID)]).expect_err("no task yet");
    assert_eq!(err.code, "InvalidTaskId.NotFound");
    let err = call(
        &mut w,
        "GetTaskAttribute",
        &[("TaskId", ID), ("TaskType", "Other")],
    )
    .expect_err("type");
    assert_eq!(err.code, "InvalidParameter");
}

#[test]
fn a_refused_application_is_a_failed_task() {
    let mut w = world(
        "instances:\n  - { domain: shop.example.com, service_period: 730d, certificate_expires_in: 20d, issue: verify_fail }\nv2: { task_processing_polls: 0 }\n",
    );
    reissue(&mut w);
    let t = ok(&mut w, "GetTaskAttribute", &[("TaskId", ID)]);
    assert_eq!(t["TaskStatus"], "failed");
    assert!(t["TaskMessage"].as_str().is_some_and(|m| !m.is_empty()));
    let d = poll_once(&mut w);
    assert_eq!(d["Status"], "normal");
    assert!(d["PendingResult"].as_str().is_some());
}

#[test]
fn http_validation_reads_the_file_under_the_webroot() {
    // No tempfile crate here: a directory of this process, removed at the end.
    let root = std::env::temp_dir().join(format!("cas-sim-http-{}", std::process::id()));
    let mut w = world_with(
        &format!("validation: file, webroot: {}", root.display()),
        ONE,
    );
    let c = csr("shop.example.com");
    ok(
        &mut w,
        "UpdateInstance",
        &[
            ("InstanceId", ID),
            ("GenerateCsrMethod", "upload"),
            ("Csr", &c),
            ("ValidationMethod", "HTTP"),
        ],
    );
    ok(&mut w, "ApplyCertificate", &[("InstanceId", ID)]);
    let d = poll_once(&mut w);
    let v = &d["DomainValidationList"][0];
    assert_eq!(
        (v["ValidationType"].as_str(), v["ValidationKey"].as_str()),
        (Some("HTTP"), Some(crate::v2::FILE_VALIDATION_URI))
    );
    assert_eq!(poll_once(&mut w)["Status"], "pending", "no file yet");
    let file = root.join(crate::v2::FILE_VALIDATION_URI.trim_start_matches('/'));
    std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
    std::fs::write(&file, v["ValidationValue"].as_str().expect("token")).expect("write");
    let issued = poll_until_issued(&mut w);
    let _ = std::fs::remove_dir_all(&root);
    assert_eq!(issued["CertificateStatus"], "issued");
}

#[path = "instance_switch_tests.rs"]
mod switches;
