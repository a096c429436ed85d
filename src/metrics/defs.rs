//! The metric definitions (name, help, labels) and their registration helpers,
//! and the resource-plan gauges.

use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

use crate::cas::api_apply::PackageState;

/// A labelled metric: its name after `cas_renewd_`, its help text, its labels.
pub(super) type Def = (&'static str, &'static str, &'static [&'static str]);

pub(super) const NOT_AFTER: Def = (
    "certificate_not_after_timestamp_seconds",
    "Expiry of the installed certificate (Unix time).",
    &["cert"],
);
pub(super) const READY: Def = (
    "certificate_ready",
    "1 if a valid certificate is installed.",
    &["cert"],
);
pub(super) const RENEWALS: Def = (
    "renewals_total",
    "Certificate passes that installed or failed, by result.",
    &["cert", "result"],
);
pub(super) const RENEW_ORDERS: Def = (
    "renew_orders_total",
    "Paid calls made (RenewCertificateOrderForPackageRequest, CreateCertificateForPackageRequest).",
    &["cert"],
);
pub(super) const LAST_SUCCESS: Def = (
    "last_success_timestamp_seconds",
    "When a pass last left this certificate in good order (Unix time).",
    &["cert"],
);
pub(super) const ORDER_STATE: Def = (
    "order_state",
    "1 for the current DescribeCertificateState of the order being followed.",
    &["cert", "state"],
);
pub(super) const API_REQUESTS: Def = (
    "api_requests_total",
    "API attempts by action and outcome code (OK, a known Alibaba Code, a class, or other).",
    &["action", "code"],
);
pub(super) const HOOK_RUNS: Def = (
    "hook_runs_total",
    "Reload hook runs by result.",
    &["hook", "result"],
);
pub(super) const SERVED_MATCHES: Def = (
    "served_matches_disk",
    "1 if verify.connect serves the installed certificate.",
    &["cert"],
);
pub(super) const PENDING_APPLICATION: Def = (
    "pending_application",
    "1 while the followed order waits in payed (pending application) for an application cas-renewd cannot submit.",
    &["cert"],
);
pub(super) const UNCLEAR_PAID_CALL: Def = (
    "unclear_paid_call",
    "1 while a paid call's outcome is unclear and its order has not been found.",
    &["cert"],
);
pub(super) const PASSES: Def = (
    "passes_total",
    "Daemon passes by result: ok, or failed (the pass itself failed, or left a certificate failed or blocked, or a hook failed).",
    &["result"],
);
/// The values `renewals_total{result}` takes; every one starts at 0 per certificate.
pub(super) const RENEWAL_RESULTS: [&str; 4] = ["renewed", "installed", "failed", "blocked"];
pub(super) const PACKAGE_TOTAL: Def = (
    "package_units",
    "Units of the resource plan (DescribePackageState TotalCount), by ProductCode.",
    &["product_code"],
);
pub(super) const PACKAGE_USED: Def = (
    "package_used_units",
    "Units used (DescribePackageState UsedCount), by ProductCode.",
    &["product_code"],
);
pub(super) const PACKAGE_ISSUED: Def = (
    "package_issued_certificates",
    "Certificates issued from the plan (DescribePackageState IssuedCount), by ProductCode.",
    &["product_code"],
);
pub(super) const PACKAGE_DUE: Def = (
    "package_due_certificates",
    "Managed certificates whose plan in the last pass was a paid call (due: within renewal.renew_before of expiry), by the ProductCode it spends from.",
    &["product_code"],
);
pub(super) const PACKAGE_READ_OK: Def = (
    "package_read_ok",
    "1 if the last pass read the plan (DescribePackageState), 0 if the read failed.",
    &["product_code"],
);

pub(super) const FLEET_ETCD_UP: Def = (
    "fleet_etcd_up",
    "1 if the fleet's etcd answered this host's last request, 0 if it did not (only with `fleet:`).",
    &[],
);
pub(super) const FLEET_LOCK_HELD: Def = (
    "fleet_lock_held",
    "1 while this host holds the certificate's fleet lock (only with `fleet:`).",
    &["cert"],
);
pub(super) const FLEET_INSTALLED_VERSION: Def = (
    "fleet_installed_version",
    "The fleet's version of the certificate this host has installed (only with `fleet:`).",
    &["cert"],
);

/// The fleet's gauges; a series appears only once the fleet reports it, so a
/// host without `fleet:` shows none.
pub struct FleetGauges {
    pub etcd_up: GaugeVec,
    pub lock_held: GaugeVec,
    pub installed_version: GaugeVec,
}

impl FleetGauges {
    pub(super) fn new(r: &Registry) -> FleetGauges {
        FleetGauges {
            etcd_up: gauge_vec(r, FLEET_ETCD_UP),
            lock_held: gauge_vec(r, FLEET_LOCK_HELD),
            installed_version: gauge_vec(r, FLEET_INSTALLED_VERSION),
        }
    }

    pub(super) fn record(&self, e: &crate::fleet::FleetEvent<'_>) {
        use crate::fleet::FleetEvent;
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        match *e {
            FleetEvent::EtcdUp(up) => self.etcd_up.with_label_values::<&str>(&[]).set(flag(up)),
            FleetEvent::LockHeld { cert, held } => {
                self.lock_held.with_label_values(&[cert]).set(flag(held));
            }
            FleetEvent::InstalledVersion { cert, version } => {
                self.installed_version
                    .with_label_values(&[cert])
                    .set(version as f64);
            }
        }
    }
}

/// The resource plans, per ProductCode, as the last pass read them.
pub struct PackageGauges {
    pub total: GaugeVec,
    pub used: GaugeVec,
    pub issued: GaugeVec,
    pub due: GaugeVec,
    pub read_ok: GaugeVec,
}

impl PackageGauges {
    pub(super) fn new(r: &Registry) -> PackageGauges {
        PackageGauges {
            total: gauge_vec(r, PACKAGE_TOTAL),
            used: gauge_vec(r, PACKAGE_USED),
            issued: gauge_vec(r, PACKAGE_ISSUED),
            due: gauge_vec(r, PACKAGE_DUE),
            read_ok: gauge_vec(r, PACKAGE_READ_OK),
        }
    }

    /// A failed read keeps the last counters (the alert goes on comparing them
    /// with the due certificates) and says so in `package_read_ok`.
    pub(super) fn set(&self, code: &str, state: Option<&PackageState>, due: u32) {
        self.due.with_label_values(&[code]).set(f64::from(due));
        self.read_ok
            .with_label_values(&[code])
            .set(if state.is_some() { 1.0 } else { 0.0 });
        let Some(s) = state else { return };
        for (g, v) in [
            (&self.total, s.total_count),
            (&self.used, s.used_count),
            (&self.issued, s.issued_count),
        ] {
            if let Some(v) = v {
                g.with_label_values(&[code]).set(v as f64);
            }
        }
    }
}

pub(super) const BUILD_INFO: Def = (
    "build_info",
    "Always 1; the version label names the build.",
    &["version"],
);

pub(super) fn gauge_vec(r: &Registry, (name, help, labels): Def) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(format!("cas_renewd_{name}"), help), labels)
        .expect("metric names and labels are static and valid");
    r.register(Box::new(g.clone()))
        .expect("each metric is registered once");
    g
}

pub(super) fn counter_vec(r: &Registry, (name, help, labels): Def) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(format!("cas_renewd_{name}"), help), labels)
        .expect("metric names and labels are static and valid");
    r.register(Box::new(c.clone()))
        .expect("each metric is registered once");
    c
}

/// An unlabelled gauge; `name` is the full name.
pub(super) fn gauge(r: &Registry, name: &str, help: &str) -> Gauge {
    let g = Gauge::new(name, help).expect("static gauge definition is valid");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

/// An unlabelled counter; `name` is the full name.
pub(super) fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("static counter definition is valid");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

pub(super) fn api_duration(r: &Registry) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(
            "cas_renewd_api_request_duration_seconds",
            "Duration of one API attempt, by action.",
        )
        .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
        &["action"],
    )
    .expect("static histogram definition is valid");
    r.register(Box::new(h.clone())).expect("registered once");
    h
}
