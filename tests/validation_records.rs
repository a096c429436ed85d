//! Domain validation as CAS and Alidns answer it, end to end with the real binary:
//! the method from the answer, every `RecordDomain` reading, refused record types
//! and names, cleanup at every exit, busy and delegated Alidns zones, and `""` for
//! every absent field.

mod common;

use std::process::Output;
use std::sync::Arc;

use common::{Cert, FAST, KEY_ID, SECRET, TestEnv, show, start_sim};

/// A simulator with `scenario` and a configuration (mode 0600, up to six
/// attempts per call, `renewal: { <renewal> }`) for `certs` (name, domain, extra
/// YAML after the output block).
async fn world(scenario: &str, renewal: &str, certs: &[(&str, &str, &str)]) -> TestEnv {
    TestEnv::builder(scenario)
        .api(", max_attempts: 6")
        .renewal(Some(renewal))
        .certs(certs.iter().map(|(n, d, e)| Cert::new(n, d).extra(e)))
        .config_mode(0o600)
        .start()
        .await
}

/// `world` with fast polling and the one certificate `www` for www.example.com,
/// validated by DNS.
async fn dns_www(scenario: &str) -> TestEnv {
    world(
        scenario,
        FAST,
        &[("www", "www.example.com", ", validation: { method: dns }")],
    )
    .await
}

fn records(w: &TestEnv) -> Vec<serde_json::Value> {
    w.sim_state()["dns_records"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Days the installed certificate has left, after checking the key fits it.
fn installed_days(w: &TestEnv, name: &str) -> i64 {
    let i = w.installed(name).expect("cert.pem");
    assert!(i.key_matches, "{name}: key fits");
    i.days_left()
}

fn journal(w: &TestEnv, name: &str) -> serde_json::Value {
    let text =
        std::fs::read_to_string(w.path(&format!("state/journal/{name}.json"))).expect("journal");
    serde_json::from_str(&text).expect("journal is JSON")
}

fn log(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn warnings(o: &Output) -> Vec<String> {
    log(o)
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_strings_neither_fail_nor_warn_in_a_renewal_and_a_first_install() {
    let w = dns_www("orders:\n  - { domain: www.example.com, expires_in: 20d }\nissuance: { polls_before_issued: 2, validation: dns }\nresponses: { empty_strings: true }\n")
    .await;
    // First pass: install the order CAS made (its key comes with it), then renew.
    let o = w.once().await;
    assert!(o.status.success(), "{}", show(&o));
    assert!(warnings(&o).is_empty(), "no warning: {:?}", warnings(&o));
    assert!(installed_days(&w, "www") >= 364);
    assert_eq!(
        w.sim.state()["renew_calls"],
        serde_json::json!({ "100001": 1 })
    );
    // The renewed order carries `"PrivateKey": ""` (it was made from our CSR). With
    // the certificate gone from disk, installing it again must fall back to the
    // installed key, not fail on an empty key.
    std::fs::remove_file(w.path("out/www/cert.pem")).expect("rm cert");
    let o = w.once().await;
    assert!(o.status.success(), "{}", show(&o));
    assert!(warnings(&o).is_empty(), "no warning: {:?}", warnings(&o));
    assert!(
        log(&o).contains("100002"),
        "installed order 100002: {}",
        show(&o)
    );
    assert!(installed_days(&w, "www") >= 364);
    assert_eq!(
        w.sim.state()["renew_calls"],
        serde_json::json!({ "100001": 1 }),
        "nothing spent again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_record_domain_reading_issues_apex_subdomain_and_wildcard() {
    for form in ["relative_to_domain", "relative_to_zone", "fqdn"] {
        let w = world(
            &format!(
                "orders:\n  - {{ domain: example.com, expires_in: 10d }}\n  - {{ domain: www.example.com, expires_in: 10d }}\n  - {{ domain: \"*.example.com\", expires_in: 10d }}\n  - {{ domain: a.sub.example.com, expires_in: 10d }}\ndns_zones: [example.com, sub.example.com]\nissuance: {{ polls_before_issued: 2, validation: dns, record_domain: {form} }}\n"
            ),
            FAST,
            &[
                ("apex", "example.com", ", validation: { method: dns }"),
                ("www", "www.example.com", ", validation: { method: dns }"),
                ("wild", "*.example.com", ", validation: { method: dns }"),
                ("delegated", "a.sub.example.com", ", validation: { method: dns }"),
            ],
        )
        .await;
        let o = w.once().await;
        assert!(o.status.success(), "{form}: {}", show(&o));
        for name in ["apex", "www", "wild", "delegated"] {
            assert!(installed_days(&w, name) >= 364, "{form}: {name} renewed");
        }
        assert_eq!(w.calls("AddDomainRecord"), 4, "{form}");
        assert!(
            records(&w).is_empty(),
            "{form}: records removed: {:?}",
            records(&w)
        );
        let text = log(&o);
        for fqdn in [
            "_dnsauth.example.com",
            "_dnsauth.www.example.com",
            "_dnsauth.a.sub.example.com",
        ] {
            assert!(
                text.contains(&format!("fqdn={fqdn} ")),
                "{form}: published {fqdn}: {text}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_records_publish_nothing_and_say_why() {
    for (kind, says) in [
        ("ns", "RecordType \"NS\""),
        ("outside_domain", "lies outside www.example.com"),
        ("absolute", "lies outside www.example.com"),
    ] {
        let w = dns_www(&format!(
                "orders:\n  - {{ domain: www.example.com, expires_in: 10d }}\nissuance: {{ polls_before_issued: 1, validation: dns, hostile_record: {kind} }}\n"
            ))
        .await;
        let o = w.once().await;
        assert!(!o.status.success(), "{kind}: {}", show(&o));
        let text = log(&o);
        assert!(
            text.contains("DNS validation refused") && text.contains(says),
            "{kind}: clear error: {text}"
        );
        assert_eq!(w.calls("AddDomainRecord"), 0, "{kind}: nothing added");
        assert!(records(&w).is_empty(), "{kind}: {:?}", records(&w));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_method_the_configuration_does_not_allow_is_told_once() {
    let webroot = tempfile::tempdir().expect("webroot");
    let w = world(
        "orders:\n  - { domain: www.example.com, expires_in: 10d }\nissuance: { polls_before_issued: 1, validation: dns }\n",
        "poll_interval: 100ms, poll_max_interval: 100ms, issuance_timeout: 2s",
        &[(
            "www",
            "www.example.com",
            &format!(
                ", validation: {{ method: file, webroot: {} }}",
                webroot.path().display()
            ),
        )],
    )
    .await;
    let told = |o: &Output| {
        log(o)
            .lines()
            .filter(|l| l.contains("create the TXT record _dnsauth.www.example.com with value"))
            .count()
    };
    let o = w.once().await;
    assert!(!o.status.success(), "not issued: {}", show(&o));
    assert_eq!(
        told(&o),
        1,
        "told once in a pass of many polls: {}",
        show(&o)
    );
    assert!(
        log(&o).contains("by DNS"),
        "names the method the answer asks for: {}",
        show(&o)
    );
    assert_eq!(
        w.calls("AddDomainRecord"),
        0,
        "file allows no DNS publishing"
    );
    assert_eq!(
        std::fs::read_dir(webroot.path()).expect("webroot").count(),
        0,
        "no file written for a DNS answer"
    );
    let o = w.once().await;
    assert_eq!(told(&o), 0, "not told again in the next pass: {}", show(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_fail_removes_the_record() {
    let w = dns_www("orders:\n  - { domain: www.example.com, expires_in: 10d, issue: verify_fail }\nissuance: { polls_before_issued: 2, validation: dns }\n")
    .await;
    let o = w.once().await;
    assert!(log(&o).contains("verify_fail"), "{}", show(&o));
    assert_eq!(w.calls("AddDomainRecord"), 1);
    assert!(records(&w).is_empty(), "{:?}", records(&w));
    assert!(journal(&w, "www")["dns_record"].is_null());
}

#[tokio::test(flavor = "multi_thread")]
async fn issuance_timeout_removes_the_record() {
    let w = world(
        "orders:\n  - { domain: www.example.com, expires_in: 10d }\nissuance: { polls_before_issued: 100000, validation: dns }\n",
        "poll_interval: 100ms, poll_max_interval: 100ms, issuance_timeout: 1s",
        &[("www", "www.example.com", ", validation: { method: dns }")],
    )
    .await;
    let o = w.once().await;
    assert!(log(&o).contains("not issued after"), "{}", show(&o));
    assert_eq!(w.calls("AddDomainRecord"), 1);
    assert!(records(&w).is_empty(), "{:?}", records(&w));
    let j = journal(&w, "www");
    assert!(j["dns_record"].is_null(), "{j}");
    assert_eq!(j["phase"], "order-created", "the order is still followed");
}

#[tokio::test(flavor = "multi_thread")]
async fn renew_force_removes_what_the_abandoned_order_left() {
    // A record the journal says the last order published (id 700001: the first one
    // the simulator hands out).
    let w = world(
        "orders:\n  - { domain: www.example.com, expires_in: 10d }\nissuance: { polls_before_issued: 1, validation: none }\ndns: { records: [ { zone: example.com, rr: _dnsauth.www, value: left-behind } ] }\n",
        FAST,
        &[("www", "www.example.com", "")],
    )
    .await;
    let o = w.once().await;
    assert!(o.status.success(), "{}", show(&o));
    let mut j = journal(&w, "www");
    j["phase"] = "rejected".into();
    j["dns_record"] = serde_json::json!(["example.com", "700001"]);
    std::fs::write(
        w.path("state/journal/www.json"),
        serde_json::to_vec_pretty(&j).expect("json"),
    )
    .expect("journal");
    assert_eq!(records(&w).len(), 1);
    // The installed certificate nears its end, so CAS lets it be renewed again.
    w.sim.advance(std::time::Duration::from_secs(340 * 86_400));
    let o = w.run(&["renew", "--cert", "www", "--force"]).await;
    assert!(o.status.success(), "{}", show(&o));
    assert!(records(&w).is_empty(), "{:?}", records(&w));
    assert!(journal(&w, "www")["dns_record"].is_null());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_alidns_zone_is_waited_for() {
    let w = dns_www("orders:\n  - { domain: www.example.com, expires_in: 10d }\nissuance: { polls_before_issued: 1, validation: dns }\ndns: { busy: 2 }\n")
    .await;
    let o = w.once().await;
    assert!(o.status.success(), "{}", show(&o));
    assert!(installed_days(&w, "www") >= 364);
    assert_eq!(w.sim.state()["faults"]["LastOperationNotFinished"], 2);
    assert!(records(&w).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn another_record_in_a_delegated_zone_is_a_named_error() {
    // `sub.example.com` is its own zone; a CNAME sits where the TXT must go. Alidns
    // finds it only when asked with DomainName.
    let w = world(
        "orders:\n  - { domain: www.sub.example.com, expires_in: 10d }\ndns_zones: [example.com, sub.example.com]\nissuance: { polls_before_issued: 1, validation: dns }\ndns: { records: [ { zone: sub.example.com, rr: _dnsauth.www, type: CNAME, value: elsewhere.example.net } ] }\n",
        FAST,
        &[("www", "www.sub.example.com", ", validation: { method: dns }")],
    )
    .await;
    let o = w.once().await;
    assert!(!o.status.success(), "{}", show(&o));
    let text = log(&o);
    assert!(
        text.contains("_dnsauth.www.sub.example.com already has a CNAME record (id 700001)"),
        "{text}"
    );
    assert!(!text.contains("DomainRecordDuplicate"), "{text}");
    assert_eq!(w.calls("AddDomainRecord"), 0);
    assert_eq!(records(&w).len(), 1, "the other record is left alone");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_txt_record_stays_and_ours_is_added_beside_it() {
    let w = dns_www("orders:\n  - { domain: www.example.com, expires_in: 10d }\nissuance: { polls_before_issued: 1, validation: dns }\ndns: { records: [ { zone: example.com, rr: _dnsauth.www, value: last-year } ] }\n")
    .await;
    let o = w.once().await;
    assert!(o.status.success(), "{}", show(&o));
    assert!(installed_days(&w, "www") >= 364);
    let left = records(&w);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["Value"], "last-year", "only our record was removed");
}

/// The DNS client itself against the simulator: a record in a delegated sub-zone
/// is found (and so reused, not added twice) because DomainName goes with the lookup.
#[tokio::test(flavor = "multi_thread")]
async fn the_dns_client_finds_records_in_a_delegated_zone() {
    let sim = start_sim(
        KEY_ID,
        SECRET,
        "dns_zones: [example.com, sub.example.com]\n",
    )
    .await;
    let dns = dns_client_for(&sim.url(), KEY_ID, SECRET);
    let fqdn = "_dnsauth.www.sub.example.com";
    let zone = dns.find_zone(fqdn).await.expect("zone");
    assert_eq!(zone.as_deref(), Some("sub.example.com"));
    let id = dns
        .add_record("sub.example.com", "_dnsauth.www", "TXT", "v1")
        .await
        .expect("add");
    let found = dns
        .records_at(fqdn, "sub.example.com", Some("TXT"))
        .await
        .expect("lookup");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].record_id, id);
    assert_eq!(found[0].value, "v1");
    // Split at the parent zone, the same name holds nothing.
    let parent = dns
        .records_at(fqdn, "example.com", None)
        .await
        .expect("lookup");
    assert!(parent.is_empty());
}

fn dns_client_for(url: &str, key_id: &str, secret: &str) -> cas_renewd::cas::dns::Dns {
    use cas_renewd::cas::credentials::{Credential, CredentialsProvider};
    let url = reqwest::Url::parse(url).expect("url");
    let api = cas_renewd::config::ApiConfig {
        endpoint: url.clone(),
        dns_endpoint: url,
        ..Default::default()
    };
    let creds = CredentialsProvider::fixed(Credential {
        access_key_id: key_id.into(),
        access_key_secret: cas_renewd::secret::Secret::new(secret),
        security_token: None,
        expiration: None,
    });
    cas_renewd::cas::dns_client(&api, Arc::new(creds), Arc::new(api.limiter()), None)
        .expect("client")
}

/// AddDomainRecord repeated after a lost answer meets its own first try
/// (DomainRecordDuplicate): the record found there is used, no error.
#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_answer_to_a_repeated_add_reuses_the_record() {
    use cas_renewd::cas::api::CertificateStateResponse;
    use cas_renewd::config::{ValidationConfig, ValidationMethod};
    use cas_renewd::renew::validation::{self, Published};
    use common::{Fake, Reply};
    let fake = Fake::start().await;
    fake.fallback(|r| match (r.action.as_str(), r.param("DomainName")) {
        ("DescribeDomainRecords", Some("example.com")) => Reply::json(
            200,
            r#"{"RequestId":"R","TotalCount":0,"DomainRecords":{"Record":[]}}"#,
        ),
        ("DescribeDomainRecords", _) => Reply::error(400, "InvalidDomainName.NoExist", "no"),
        _ => Reply::error(400, "Unexpected", "unexpected call"),
    });
    let record = r#"{"RecordId":"42","DomainName":"example.com","RR":"_dnsauth.www","Type":"TXT","Value":"tok"}"#;
    fake.script(
        "DescribeSubDomainRecords",
        [
            Reply::json(200, r#"{"RequestId":"R","DomainRecords":{"Record":[]}}"#),
            Reply::json(
                200,
                format!(r#"{{"RequestId":"R","DomainRecords":{{"Record":[{record}]}}}}"#),
            ),
        ],
    );
    fake.script(
        "AddDomainRecord",
        [Reply::error(
            400,
            "DomainRecordDuplicate",
            "The DNS record already exists.",
        )],
    );
    let dns = dns_client_for(
        &fake.url(),
        common::ACCESS_KEY_ID,
        common::ACCESS_KEY_SECRET,
    );
    let state: CertificateStateResponse = serde_json::from_str(
        r#"{"Type":"domain_verify","ValidateType":"DNS","RecordDomain":"_dnsauth","RecordType":"TXT","RecordValue":"tok"}"#,
    )
    .expect("parses");
    let cfg = ValidationConfig {
        method: ValidationMethod::Dns,
        webroot: None,
    };
    let published = validation::publish(&dns, &cfg, "www.example.com", 1, &state, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        published,
        Published::Dns {
            zone: "example.com".into(),
            record_id: "42".into()
        }
    );
    assert_eq!(fake.count("AddDomainRecord"), 1);
    let lookups: Vec<_> = fake
        .received()
        .into_iter()
        .filter(|r| r.action == "DescribeSubDomainRecords")
        .collect();
    assert!(
        lookups
            .iter()
            .all(|r| r.param("DomainName") == Some("example.com")),
        "DomainName goes with every lookup"
    );
}
