//! Unit tests of the metrics: labels, initial series, rendering.

use super::*;

#[test]
fn unknown_api_codes_share_one_label() {
    let m = Metrics::new();
    for i in 0..500 {
        m.observe_api(
            "DescribeCertificateState",
            &format!("Weird.Code{i}"),
            Duration::ZERO,
        );
    }
    m.observe_api(
        "DescribeCertificateState",
        "Throttling.User",
        Duration::ZERO,
    );
    let text = m.render();
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("cas_renewd_api_requests_total{"))
        .collect();
    assert_eq!(series.len(), 2, "one series per unknown code");
    assert_eq!(
        series,
        [
            "cas_renewd_api_requests_total{action=\"DescribeCertificateState\",code=\"Throttling.User\"} 1",
            "cas_renewd_api_requests_total{action=\"DescribeCertificateState\",code=\"other\"} 500",
        ]
    );
}

#[test]
fn every_failure_series_exists_at_zero_before_the_first_failure() {
    let cfg = Config::parse(
        "certificates:\n  - name: www\n    domain: www.example.com\n",
        std::path::Path::new("/etc/cas-renewd/test.yaml"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let m = Metrics::new();
    m.refresh_disk(&cfg.certificates);
    m.init_hooks(["nginx"]);
    let text = m.render();
    for series in [
        "cas_renewd_renewals_total{cert=\"www\",result=\"failed\"} 0",
        "cas_renewd_renewals_total{cert=\"www\",result=\"blocked\"} 0",
        "cas_renewd_renewals_total{cert=\"www\",result=\"installed\"} 0",
        "cas_renewd_renewals_total{cert=\"www\",result=\"renewed\"} 0",
        "cas_renewd_hook_runs_total{hook=\"nginx\",result=\"failed\"} 0",
        "cas_renewd_hook_runs_total{hook=\"nginx\",result=\"ok\"} 0",
        "cas_renewd_passes_total{result=\"failed\"} 0",
        "cas_renewd_passes_total{result=\"ok\"} 0",
        "cas_renewd_api_auth_failures_total 0",
        "cas_renewd_consecutive_failed_passes 0",
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
    m.record_pass_result(false, 1);
    m.observe_api(
        "ListUserCertificateOrder",
        "SignatureDoesNotMatch",
        Duration::ZERO,
    );
    m.observe_api(
        "ListUserCertificateOrder",
        "Throttling.User",
        Duration::ZERO,
    );
    let text = m.render();
    assert!(
        text.contains("cas_renewd_passes_total{result=\"failed\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("cas_renewd_api_auth_failures_total 1"),
        "{text}"
    );
}

#[test]
fn renders_every_documented_metric() {
    let m = Metrics::new();
    m.observe_api("ListUserCertificateOrder", "OK", Duration::from_millis(20));
    m.set_order_state("www", "process");
    m.renew_orders.with_label_values(&["www"]).inc();
    m.record_pass(&PassReport::default());
    m.not_after.with_label_values(&["www"]).set(1.0);
    m.ready.with_label_values(&["www"]).set(1.0);
    m.renewals.with_label_values(&["www", "renewed"]).inc();
    m.last_success.with_label_values(&["www"]).set(1.0);
    m.hook_runs.with_label_values(&["nginx", "ok"]).inc();
    m.served_matches.with_label_values(&["www"]).set(1.0);
    let plan = PackageState {
        total_count: Some(5),
        used_count: Some(4),
        issued_count: Some(3),
        ..PackageState::default()
    };
    m.package_state("geotrust-dv-1-starter", Some(&plan), 2);
    m.package_state("digicert-free-1-free", None, 1);
    let text = m.render();
    for name in [
        "cas_renewd_certificate_not_after_timestamp_seconds{cert=\"www\"}",
        "cas_renewd_certificate_ready{cert=\"www\"}",
        "cas_renewd_renewals_total{cert=\"www\",result=\"renewed\"}",
        "cas_renewd_renew_orders_total{cert=\"www\"}",
        "cas_renewd_last_success_timestamp_seconds{cert=\"www\"}",
        "cas_renewd_order_state{cert=\"www\",state=\"process\"} 1",
        "cas_renewd_api_requests_total{action=\"ListUserCertificateOrder\",code=\"OK\"} 1",
        "cas_renewd_api_request_duration_seconds_bucket{action=\"ListUserCertificateOrder\"",
        "cas_renewd_hook_runs_total{hook=\"nginx\",result=\"ok\"}",
        "cas_renewd_served_matches_disk{cert=\"www\"}",
        "cas_renewd_last_pass_timestamp_seconds ",
        "cas_renewd_config_last_reload_successful 1",
        "cas_renewd_build_info{version=\"",
        "cas_renewd_package_units{product_code=\"geotrust-dv-1-starter\"} 5",
        "cas_renewd_package_used_units{product_code=\"geotrust-dv-1-starter\"} 4",
        "cas_renewd_package_issued_certificates{product_code=\"geotrust-dv-1-starter\"} 3",
        "cas_renewd_package_due_certificates{product_code=\"geotrust-dv-1-starter\"} 2",
        "cas_renewd_package_read_ok{product_code=\"geotrust-dv-1-starter\"} 1",
        "cas_renewd_package_due_certificates{product_code=\"digicert-free-1-free\"} 1",
        "cas_renewd_package_read_ok{product_code=\"digicert-free-1-free\"} 0",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
}

#[test]
fn fleet_series_appear_only_once_the_fleet_reports() {
    use crate::fleet::FleetEvent;
    use crate::renew::PassObserver as _;
    let m = Metrics::new();
    assert!(
        !m.render().contains("cas_renewd_fleet_"),
        "no fleet, no series"
    );
    m.fleet(&FleetEvent::EtcdUp(false));
    m.fleet(&FleetEvent::LockHeld {
        cert: "www",
        held: true,
    });
    m.fleet(&FleetEvent::InstalledVersion {
        cert: "www",
        version: 3,
    });
    let text = m.render();
    assert!(text.contains("cas_renewd_fleet_etcd_up 0"), "{text}");
    assert!(
        text.contains("cas_renewd_fleet_lock_held{cert=\"www\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("cas_renewd_fleet_installed_version{cert=\"www\"} 3"),
        "{text}"
    );
}
