//! Plans for a certificate whose source is a V2.0 instance.

use std::time::Duration;

use super::super::tests::{NOW, disk};
use super::super::{Action, CertInfo, PlanInput, RenewalMode, plan};
use super::*;
use crate::cas::api::CertificateOrder;
use crate::store::Journal;

const ID: &str = "cas-ivauto-www1";

fn instance(service_days: i64, cert_days: Option<i64>, status: &str, auto: bool) -> Instance {
    serde_json::from_value(serde_json::json!({
        "InstanceId": ID,
        "Domain": "www.example.com",
        "Status": status,
        "AutoReissue": if auto { "enable" } else { "disable" },
        "InstanceEndTime": (NOW + service_days * DAY_MS) / 1000,
        "CertificateId": cert_days.map(|_| 77),
        "CertificateNotAfter": cert_days.map(|d| (NOW + d * DAY_MS) / 1000),
    }))
    .expect("an instance")
}

fn run(instances: &[Instance], orders: &[CertificateOrder], d: Option<&CertInfo>) -> Plan {
    let j = Journal::new("www");
    plan(&PlanInput {
        cert: "www",
        domain: "www.example.com",
        orders,
        instances,
        journal: &j,
        disk: d,
        now_ms: NOW,
        renew_before: Duration::from_secs(30 * 86_400),
        force: false,
        mode: RenewalMode::Renew,
    })
}

#[test]
fn a_due_certificate_with_room_in_the_service_period_is_reissued() {
    let p = run(
        &[instance(700, Some(20), "normal", false)],
        &[],
        Some(&disk(20)),
    );
    assert_eq!(
        p.action,
        Action::Reissue {
            instance_id: InstanceId::new(ID),
            certificate_id: Some(77)
        },
        "{}",
        p.reason
    );
    assert!(p.reason.contains("service period ends"), "{}", p.reason);
}

#[test]
fn a_certificate_not_due_waits_and_says_when() {
    let p = run(
        &[instance(700, Some(60), "normal", false)],
        &[],
        Some(&disk(60)),
    );
    assert_eq!(p.action, Action::Nothing);
    assert!(p.reason.contains("due from"), "{}", p.reason);
}

#[test]
fn will_expire_makes_it_due_before_renew_before() {
    let mut i = instance(700, Some(60), "normal", false);
    i.certificate_status = Some(CertificateStatus::WillExpire);
    let p = run(&[i], &[], Some(&disk(60)));
    assert!(matches!(p.action, Action::Reissue { .. }), "{}", p.reason);
}

#[test]
fn will_expire_of_a_listed_certificate_older_than_the_installed_one_is_not_due() {
    // A stale listing: the installed certificate (from another host, or CAS's
    // AutoReissue) is newer than the one flagged willExpire.
    let mut i = instance(700, Some(20), "normal", false);
    i.certificate_status = Some(CertificateStatus::WillExpire);
    let p = run(&[i], &[], Some(&disk(80)));
    assert_eq!(p.action, Action::Nothing, "{}", p.reason);
    assert!(p.reason.contains("due from"), "{}", p.reason);
}

#[test]
fn a_service_period_over_or_too_short_blocks_with_the_renewal_hint() {
    for (service, why) in [(-1, "ended"), (25, "too soon"), (26, "too soon")] {
        let p = run(
            &[instance(service, Some(20), "normal", false)],
            &[],
            Some(&disk(20)),
        );
        assert_eq!(p.action, Action::Blocked, "{service}: {}", p.reason);
        assert!(
            p.reason
                .contains(&format!("buy a renewal of instance {ID}"))
                && p.reason.contains(why),
            "{service}: {}",
            p.reason
        );
    }
    // Exactly the margin past the certificate: room enough.
    let p = run(
        &[instance(27, Some(20), "normal", false)],
        &[],
        Some(&disk(20)),
    );
    assert!(matches!(p.action, Action::Reissue { .. }), "{}", p.reason);
}

#[test]
fn autoreissue_is_never_reissued_but_its_newer_certificate_installed() {
    let p = run(
        &[instance(700, Some(20), "normal", true)],
        &[],
        Some(&disk(20)),
    );
    assert_eq!(p.action, Action::Nothing, "{}", p.reason);
    assert!(
        p.reason.contains("managed by CAS (AutoReissue)"),
        "{}",
        p.reason
    );
    let p = run(
        &[instance(700, Some(90), "normal", true)],
        &[],
        Some(&disk(20)),
    );
    assert_eq!(
        p.action,
        Action::InstallInstance {
            instance_id: InstanceId::new(ID),
            certificate_id: 77
        }
    );
    assert!(
        p.reason.starts_with("managed by CAS (AutoReissue)"),
        "{}",
        p.reason
    );
}

#[test]
fn an_application_under_review_is_adopted() {
    let p = run(
        &[instance(700, Some(20), "pending", false)],
        &[],
        Some(&disk(20)),
    );
    assert!(
        matches!(p.action, Action::AdoptInstance { .. }),
        "{}",
        p.reason
    );
}

#[test]
fn nothing_on_disk_installs_the_instance_certificate_first() {
    let p = run(&[instance(700, Some(20), "normal", false)], &[], None);
    assert!(
        matches!(p.action, Action::InstallInstance { .. }),
        "{}",
        p.reason
    );
}

#[test]
fn a_refunded_instance_leaves_the_orders_in_charge() {
    let order: CertificateOrder = serde_json::from_value(serde_json::json!({
        "OrderId": 5, "Domain": "www.example.com", "Status": "ISSUED",
        "CertEndTime": NOW + 200 * DAY_MS
    }))
    .expect("order");
    let p = run(
        &[instance(700, Some(20), "refund", false)],
        &[order],
        Some(&disk(200)),
    );
    assert_eq!(p.action, Action::Nothing, "{}", p.reason);
    assert!(!p.reason.contains(ID), "{}", p.reason);
    let p = run(
        &[instance(700, Some(20), "refund", false)],
        &[],
        Some(&disk(20)),
    );
    assert_eq!(p.action, Action::Blocked);
    assert!(p.reason.contains("buy a renewal"), "{}", p.reason);
}
