//! The scenario switches of the V2.0 readings the docs leave open: the TaskId of
//! an ApplyCertificate, instances in the V1 listing, and the validation forms.

use super::*;

#[test]
fn task_id_is_the_instance_id_or_the_request_id_as_switched() {
    let mut w = world(&format!("{ONE}v2: {{ task_processing_polls: 0 }}\n"));
    reissue(&mut w);
    assert_eq!(
        ok(&mut w, "GetTaskAttribute", &[("TaskId", ID)])["TaskStatus"],
        "success"
    );

    let mut w = world(&format!(
        "{ONE}v2: {{ task_processing_polls: 0, task_id: request_id }}\n"
    ));
    upload_csr(&mut w, &[]);
    let answer = ok(&mut w, "ApplyCertificate", &[("InstanceId", ID)]);
    let rid = answer["RequestId"]
        .as_str()
        .expect("the task's id")
        .to_owned();
    assert_eq!(rid.len(), 36, "{rid}");
    let err = call(&mut w, "GetTaskAttribute", &[("TaskId", ID)]).expect_err("not the id");
    assert_eq!(err.code, "InvalidTaskId.NotFound");
    assert_eq!(
        ok(&mut w, "GetTaskAttribute", &[("TaskId", &rid)])["TaskStatus"],
        "success"
    );
    // The instance itself is followed the same way under both readings.
    assert_eq!(poll_until_issued(&mut w)["CertificateStatus"], "issued");
}

/// UpdateInstance with our CSR for the instance's domain and `extra` fields.
fn upload_csr(w: &mut World, extra: &[(&str, &str)]) {
    let c = csr("shop.example.com");
    let mut p = vec![
        ("InstanceId", ID),
        ("GenerateCsrMethod", "upload"),
        ("Csr", c.as_str()),
    ];
    p.extend_from_slice(extra);
    ok(w, "UpdateInstance", &p);
}

fn listing(w: &mut World, params: &[(&str, &str)]) -> Vec<Value> {
    ok(w, "ListUserCertificateOrder", params)["CertificateOrderList"]
        .as_array()
        .expect("list")
        .clone()
}

#[test]
fn instances_show_in_the_v1_listing_only_when_switched_and_v1_calls_are_refused() {
    let both = "orders:\n  - { domain: www.example.com, expires_in: 20d }\n";
    let mut w = world(&format!("{both}{ONE}"));
    assert_eq!(listing(&mut w, &[]).len(), 1, "not listed by default");

    let mut w = world(&format!("{both}{ONE}v2: {{ listed_in_orders: true }}\n"));
    let all = listing(&mut w, &[("ShowSize", "1"), ("CurrentPage", "2")]);
    assert_eq!(all.len(), 1, "paged after the orders");
    let e = &all[0];
    assert_eq!(e["InstanceId"], ID);
    assert_eq!(e["Status"], "WILLEXPIRED");
    assert_eq!(e["Domain"], "shop.example.com");
    let cert_id = poll_once(&mut w)["CertificateId"].clone();
    assert_eq!(e["CertificateId"], cert_id, "the instance's certificate");
    let certs = listing(&mut w, &[("OrderType", "CERT"), ("Keyword", "shop")]);
    assert_eq!(certs.len(), 1);
    assert_eq!(
        (&certs[0]["CertificateId"], &certs[0]["InstanceId"]),
        (&cert_id, &Value::from(ID))
    );
    assert!(listing(&mut w, &[("OrderType", "UPLOAD")]).is_empty());
    assert_eq!(listing(&mut w, &[("Status", "ISSUED")]).len(), 0);

    let order_id = e["OrderId"].as_i64().expect("an OrderId").to_string();
    for action in [
        "RenewCertificateOrderForPackageRequest",
        "DescribeCertificateState",
    ] {
        let err = call(&mut w, action, &[("OrderId", &order_id)]).expect_err(action);
        assert_eq!(err.code, "OperationDenied.V2Instance", "{action}");
    }
    let state = w.snapshot();
    assert_eq!(state["v2"]["v1_order_calls"][ID], 2);
    assert!(
        state["renew_calls"]
            .as_object()
            .is_none_or(|m| m.is_empty())
    );
}

/// Applies with `method`, then returns the one DomainValidationList entry.
fn validation_entry(w: &mut World, method: &str) -> Value {
    upload_csr(w, &[("ValidationMethod", method)]);
    ok(w, "ApplyCertificate", &[("InstanceId", ID)]);
    poll_once(w)["DomainValidationList"][0].clone()
}

#[test]
fn txt_validation_forms_name_one_record_holding_the_bare_token() {
    for (v2, key, quoted) in [
        ("{}", "_dnsauth.shop", false),
        ("{ validation_key: relative_to_domain }", "_dnsauth", false),
        (
            "{ validation_key: fqdn }",
            "_dnsauth.shop.example.com",
            false,
        ),
        (
            "{ validation_key: fqdn_dot, validation_value: quoted }",
            "_dnsauth.shop.example.com.",
            true,
        ),
    ] {
        let mut w = world_with("validation: dns", &format!("{ONE}v2: {v2}\n"));
        let v = validation_entry(&mut w, "DNS");
        assert_eq!(v["ValidationKey"], key, "{v2}");
        let value = v["ValidationValue"].as_str().expect("value");
        assert_eq!(
            value.starts_with('"') && value.ends_with('"'),
            quoted,
            "{v2}"
        );
        let token = value.trim_matches('"');
        if quoted {
            // The quotes are the display form, not the record's content.
            add_txt(&mut w, value);
            assert_eq!(poll_once(&mut w)["Status"], "pending", "{v2}");
        }
        add_txt(&mut w, token);
        assert_eq!(
            poll_until_issued(&mut w)["CertificateStatus"],
            "issued",
            "{v2}"
        );
    }
}

fn add_txt(w: &mut World, value: &str) {
    ok(
        w,
        "AddDomainRecord",
        &[
            ("DomainName", "example.com"),
            ("RR", "_dnsauth.shop"),
            ("Type", "TXT"),
            ("Value", value),
        ],
    );
}

#[test]
fn file_validation_forms_name_one_file_holding_the_whole_value() {
    for (n, (v2, key, lines)) in [
        (
            "{ file_key: url }",
            "http://shop.example.com/.well-known/pki-validation/fileauth.txt",
            1,
        ),
        (
            "{ file_key: relative_path }",
            ".well-known/pki-validation/fileauth.txt",
            1,
        ),
        (
            "{ file_key: file_name, file_value: multi_line }",
            "fileauth.txt",
            3,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let root = std::env::temp_dir().join(format!("cas-sim-forms-{}-{n}", std::process::id()));
        let mut w = world_with(
            &format!("validation: file, webroot: {}", root.display()),
            &format!("{ONE}v2: {v2}\n"),
        );
        let v = validation_entry(&mut w, "HTTP");
        assert_eq!(v["ValidationKey"], key, "{v2}");
        let content = v["ValidationValue"].as_str().expect("content").to_owned();
        assert_eq!(content.lines().count(), lines, "{v2}");
        let file = root.join(crate::v2::FILE_VALIDATION_URI.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        if lines > 1 {
            let first = content.lines().next().expect("a line");
            std::fs::write(&file, first).expect("write");
            assert_eq!(poll_once(&mut w)["Status"], "pending", "only part of it");
        }
        std::fs::write(&file, &content).expect("write");
        let issued = poll_until_issued(&mut w);
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(issued["CertificateStatus"], "issued", "{v2}");
    }
}

#[test]
fn will_expire_begins_as_many_days_before_the_end_as_switched() {
    let spec = "instances:\n  - { domain: shop.example.com, service_period: 730d, certificate_expires_in: 20d }\n";
    let mut w = world(spec);
    assert_eq!(
        poll_once(&mut w)["CertificateStatus"],
        "willExpire",
        "30 days"
    );
    let mut w = world(&format!("{spec}v2: {{ will_expire_days: 15 }}\n"));
    assert_eq!(poll_once(&mut w)["CertificateStatus"], "issued");
    w.advance(6 * DAY);
    assert_eq!(
        poll_once(&mut w)["CertificateStatus"],
        "willExpire",
        "14 days left"
    );
}

#[test]
fn auto_reissue_certifies_cas_key_or_the_last_csr_as_switched() {
    let spec = "instances:\n  - { domain: shop.example.com, service_period: 730d, certificate_expires_in: 40d, auto_reissue: true }\n";
    for (v2, cas_key) in [("{}", true), ("{ auto_reissue_key: last_csr }", false)] {
        let mut w = world(&format!("{spec}v2: {v2}\n"));
        upload_csr(&mut w, &[]);
        w.advance(11 * DAY);
        let d = poll_once(&mut w);
        let id = d["CertificateId"].as_i64().expect("id").to_string();
        let detail = ok(&mut w, "GetUserCertificateDetail", &[("CertId", &id)]);
        assert_eq!(detail.get("Key").is_some(), cas_key, "{v2}");
        assert_eq!(w.snapshot()["v2"]["auto_reissues"][ID], 1, "{v2}");
    }
}
