//! Issuance outside the world's lock: what a request is about to issue is known
//! beforehand, and the certificate made outside the lock is the one answered.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use super::World;
use crate::scenario::Scenario;

fn world(polls: u32) -> World {
    let text = format!(
        "access_key: {{ id: k, secret: s }}\norders:\n  - {{ domain: a.example.com, expires_in: 10d, algorithm: ECC }}\nissuance: {{ polls_before_issued: {polls} }}\n"
    );
    World::new(&Scenario::parse(&text, Path::new("t")).expect("scenario")).expect("world")
}

fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Does what the server does around a call: the issuance ahead outside the lock,
/// then the call. Returns the answer and the leaf made outside, if any.
fn call_prepared(
    w: &mut World,
    action: &str,
    p: &HashMap<String, String>,
) -> (Value, Option<String>) {
    let leaf = w.issuance_ahead(action, p).map(|(order, job, ca)| {
        let issued = ca.issue_job(&job).expect("issued outside the lock");
        let leaf = issued.leaf_pem.clone();
        w.offer(order, job, issued);
        leaf
    });
    (w.call(action, p).expect("call"), leaf)
}

#[test]
fn an_original_orders_certificate_is_made_outside_the_lock_and_answered() {
    let mut w = world(1);
    let id = *w.orders.keys().next().expect("one order");
    let p = params(&[("OrderId", &id.to_string())]);
    let (answer, leaf) = call_prepared(&mut w, "DescribeCertificateState", &p);
    let leaf = leaf.expect("the first describe issues the order's certificate");
    let cert = answer["Certificate"].as_str().expect("certificate");
    assert!(
        cert.starts_with(&leaf),
        "the prepared leaf is the one answered"
    );
    assert!(w.prepared.is_empty(), "the prepared certificate was used");
    // Issued now: nothing more to make.
    assert!(w.issuance_ahead("DescribeCertificateState", &p).is_none());
}

#[test]
fn a_renewals_issuance_is_foreseen_exactly_and_its_key_is_new() {
    let mut w = world(2);
    let id = *w.orders.keys().next().expect("one order");
    let source = params(&[("OrderId", &id.to_string())]);
    let (original, _) = call_prepared(&mut w, "DescribeCertificateState", &source);
    let renewed = w
        .call("RenewCertificateOrderForPackageRequest", &source)
        .expect("renew");
    let new_id = renewed["OrderId"].as_i64().expect("order id").to_string();
    let p = params(&[("OrderId", &new_id)]);
    let mut issued_at = None;
    for poll in 0..6 {
        let (answer, leaf) = call_prepared(&mut w, "DescribeCertificateState", &p);
        let issued_now = answer["Type"] == "certificate" && issued_at.is_none();
        assert_eq!(leaf.is_some(), issued_now, "poll {poll}: {answer}");
        if let Some(leaf) = leaf {
            let cert = answer["Certificate"].as_str().expect("certificate");
            assert!(cert.starts_with(&leaf));
            assert_ne!(
                answer["PrivateKey"], original["PrivateKey"],
                "CAS makes a new key for a renewal"
            );
            issued_at = Some(poll);
        }
    }
    assert!(issued_at.is_some(), "the renewal was issued");
}

#[test]
fn a_certificate_prepared_for_another_moment_is_not_used() {
    let mut w = world(1);
    let id = *w.orders.keys().next().expect("one order");
    let p = params(&[("OrderId", &id.to_string())]);
    let (order, mut job, ca) = w
        .issuance_ahead("DescribeCertificateState", &p)
        .expect("issuance ahead");
    job.not_after_ms += 86_400_000;
    let stale = ca.issue_job(&job).expect("issued");
    w.offer(order, job, stale.clone());
    let answer = w.call("DescribeCertificateState", &p).expect("call");
    let cert = answer["Certificate"].as_str().expect("certificate");
    assert!(!cert.starts_with(&stale.leaf_pem));
}
