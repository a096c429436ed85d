//! Prometheus metrics (DESIGN §6): one registry per process, names prefixed
//! `cas_renewd_`, units in names, expiry as timestamps.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder as _, Gauge, GaugeVec, HistogramVec, IntCounter, IntCounterVec, Registry, TextEncoder,
};

use crate::cas::api_apply::PackageState;
use crate::cas::client::is_auth_code;
use crate::cas::credentials::CredentialsProvider;
use crate::renew::{Engine, EngineError, Outcome, PassObserver, PassReport, installed_leaf};
use crate::settings::CertificateConfig;
use crate::settings::Config;

pub struct Metrics {
    registry: Registry,
    pub not_after: GaugeVec,
    pub ready: GaugeVec,
    pub renewals: IntCounterVec,
    pub renew_orders: IntCounterVec,
    pub last_success: GaugeVec,
    pub order_state: GaugeVec,
    pub api_requests: IntCounterVec,
    pub api_duration: HistogramVec,
    pub hook_runs: IntCounterVec,
    pub served_matches: GaugeVec,
    pub pending_application: GaugeVec,
    pub unclear_paid_call: GaugeVec,
    pub package: PackageGauges,
    pub fleet: FleetGauges,
    pub last_pass: Gauge,
    pub config_reload_ok: Gauge,
    pub build_info: GaugeVec,
    /// Daemon passes by result (`ok`, `failed`); both start at 0.
    pub passes: IntCounterVec,
    /// API attempts refused for authentication or authorisation; starts at 0.
    pub auth_failures: IntCounter,
    /// Daemon passes in a row that failed; 0 after a good one.
    pub consecutive_failed_passes: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The order states DescribeCertificateState reports, for `order_state{state}`.
pub const ORDER_STATES: [&str; 6] = [
    "payed",
    "domain_verify",
    "process",
    "certificate",
    "verify_fail",
    "unknow",
];

/// The values `api_requests_total{code}` takes: the client's own outcome classes,
/// the documented gateway codes, and the CAS and Alidns codes the program knows.
/// Any other Code counts as `other` (the log line of the call still names it), so a
/// server cannot grow the label set without bound.
pub const API_CODE_LABELS: &[&str] = &[
    // Outcome classes of the client.
    "OK",
    "transport",
    "redirect",
    "malformed",
    "too_large",
    "schema",
    "ambiguous",
    "credentials",
    // Gateway codes (reference/cas-api.md §4.2).
    "MissingParameter",
    "InvalidParameter",
    "InvalidAccessKeyId.NotFound",
    "InvalidAccessKeyId.Inactive",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "IllegalTimestamp",
    "InvalidTimeStamp.Expired",
    "SignatureNonceUsed",
    "Throttling",
    "Throttling.User",
    "Throttling.Api",
    "InvalidAction",
    "InvalidAction.NotFound",
    "InvalidVersion",
    "NoSuchVersion",
    "UnsupportedHTTPMethod",
    "Forbidden.RAM",
    "Forbidden",
    "NoPermission",
    "Forbidden.RiskControl",
    "InternalError",
    "ServiceUnavailable",
    "ServiceUnAvailable",
    // CAS (cas-api.md §4.2) and Alidns (§9.6).
    "MissingStatus",
    "DomainRecordDuplicate",
    "DomainRecordConflict",
    "DomainRecordNotBelongToUser",
    "InvalidDomainName.NoExist",
    "Forbidden.DomainNotBelongToUser",
    "DomainNotFound",
    "SubDomainInvalid.Value",
    "LastOperationNotFinished",
];

/// The `code` label for an API outcome: itself when listed, else `other`.
pub fn api_code_label(code: &str) -> &str {
    API_CODE_LABELS
        .iter()
        .find(|known| **known == code)
        .copied()
        .unwrap_or("other")
}

mod defs;

use defs::*;
pub use defs::{FleetGauges, PackageGauges};

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let r = Registry::new();
        let api_duration = api_duration(&r);
        let last_pass = gauge(
            &r,
            "cas_renewd_last_pass_timestamp_seconds",
            "When the last pass finished (Unix time).",
        );
        let config_reload_ok = gauge(
            &r,
            "cas_renewd_config_last_reload_successful",
            "1 if the last configuration load (start or SIGHUP) succeeded, else 0.",
        );
        let m = Metrics {
            not_after: gauge_vec(&r, NOT_AFTER),
            ready: gauge_vec(&r, READY),
            renewals: counter_vec(&r, RENEWALS),
            renew_orders: counter_vec(&r, RENEW_ORDERS),
            last_success: gauge_vec(&r, LAST_SUCCESS),
            order_state: gauge_vec(&r, ORDER_STATE),
            api_requests: counter_vec(&r, API_REQUESTS),
            api_duration,
            hook_runs: counter_vec(&r, HOOK_RUNS),
            served_matches: gauge_vec(&r, SERVED_MATCHES),
            pending_application: gauge_vec(&r, PENDING_APPLICATION),
            unclear_paid_call: gauge_vec(&r, UNCLEAR_PAID_CALL),
            package: PackageGauges::new(&r),
            fleet: FleetGauges::new(&r),
            last_pass,
            config_reload_ok,
            build_info: gauge_vec(&r, BUILD_INFO),
            passes: counter_vec(&r, PASSES),
            auth_failures: counter(
                &r,
                "cas_renewd_api_auth_failures_total",
                "API attempts refused for authentication or authorisation (AccessKey, signature, timestamp, STS token, RAM policy).",
            ),
            consecutive_failed_passes: gauge(
                &r,
                "cas_renewd_consecutive_failed_passes",
                "Daemon passes in a row that failed (see passes_total); 0 once one succeeds. The next is retried with backoff.",
            ),
            registry: r,
        };
        // Alert rules see the first failure only when the series exists at 0 before it.
        for result in ["ok", "failed"] {
            m.passes.with_label_values(&[result]);
        }
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1.0);
        m.config_reload_ok.set(1.0);
        Arc::new(m)
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Records one API attempt; an unlisted code is counted as `other`.
    pub fn observe_api(&self, action: &str, code: &str, took: Duration) {
        self.api_requests
            .with_label_values(&[action, api_code_label(code)])
            .inc();
        self.api_duration
            .with_label_values(&[action])
            .observe(took.as_secs_f64());
        if is_auth_code(code) {
            self.auth_failures.inc();
        }
    }

    /// Counts one daemon pass as `ok` or `failed`; `in_a_row` failed so far.
    pub fn record_pass_result(&self, ok: bool, in_a_row: u32) {
        self.passes
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .inc();
        self.consecutive_failed_passes.set(f64::from(in_a_row));
    }

    /// Makes each hook's run counters exist at 0, so that its first failure
    /// is an increase the alert rules see.
    pub fn init_hooks<'a>(&self, hooks: impl IntoIterator<Item = &'a str>) {
        for h in hooks {
            for result in ["ok", "failed"] {
                self.hook_runs.with_label_values(&[h, result]);
            }
        }
    }

    pub fn set_order_state(&self, cert: &str, state: &str) {
        if state != "payed" {
            self.pending_application.with_label_values(&[cert]).set(0.0);
        }
        for s in ORDER_STATES {
            self.order_state
                .with_label_values(&[cert, s])
                .set(if s == state { 1.0 } else { 0.0 });
        }
    }

    /// Re-reads the installed certificates: expiry and readiness.
    pub fn refresh_disk(&self, certs: &[CertificateConfig]) {
        let now = chrono::Utc::now().timestamp();
        for c in certs {
            // Counters start at 0 so that rules can take exact deltas of them, and
            // see a first failure.
            self.renew_orders.with_label_values(&[c.name.as_str()]);
            for result in RENEWAL_RESULTS {
                self.renewals.with_label_values(&[c.name.as_str(), result]);
            }
            match installed_leaf(&c.output) {
                Some(l) => {
                    self.not_after
                        .with_label_values(&[c.name.as_str()])
                        .set(l.not_after as f64);
                    let ok = l.not_before <= now + 300 && now < l.not_after;
                    self.ready.with_label_values(&[c.name.as_str()]).set(if ok {
                        1.0
                    } else {
                        0.0
                    });
                }
                None => self.ready.with_label_values(&[c.name.as_str()]).set(0.0),
            }
        }
    }

    /// Counts a pass's results.
    pub fn record_pass(&self, report: &PassReport) {
        let now = chrono::Utc::now().timestamp() as f64;
        for c in &report.certs {
            let result = match c.outcome {
                Outcome::Renewed => Some("renewed"),
                Outcome::Installed => Some("installed"),
                Outcome::Failed => Some("failed"),
                Outcome::Blocked => Some("blocked"),
                Outcome::Reloaded | Outcome::Unchanged | Outcome::Planned | Outcome::Waiting => {
                    None
                }
            };
            if let Some(r) = result {
                self.renewals.with_label_values(&[c.name.as_str(), r]).inc();
            }
            if !matches!(c.outcome, Outcome::Failed | Outcome::Blocked) {
                self.last_success
                    .with_label_values(&[c.name.as_str()])
                    .set(now);
            }
            if let Some(m) = c.served_matches_disk {
                self.served_matches
                    .with_label_values(&[c.name.as_str()])
                    .set(if m { 1.0 } else { 0.0 });
            }
        }
        for h in &report.hooks {
            self.hook_runs
                .with_label_values(&[h.hook.as_str(), if h.ok { "ok" } else { "failed" }])
                .inc();
        }
        self.last_pass.set(now);
    }
}

/// The engine reports into the metrics through this; the engine itself names
/// no metric.
impl PassObserver for Metrics {
    fn api_call(&self, action: &str, code: &str, took: Duration) {
        self.observe_api(action, code, took);
    }

    fn paid_call(&self, cert: &str) {
        self.renew_orders.with_label_values(&[cert]).inc();
    }

    fn unclear_paid_call(&self, cert: &str, on: bool) {
        self.unclear_paid_call
            .with_label_values(&[cert])
            .set(if on { 1.0 } else { 0.0 });
    }

    fn pending_application(&self, cert: &str, on: bool) {
        self.pending_application
            .with_label_values(&[cert])
            .set(if on { 1.0 } else { 0.0 });
    }

    fn order_state(&self, cert: &str, state: &str) {
        self.set_order_state(cert, state);
    }

    fn package_state(&self, product_code: &str, state: Option<&PackageState>, due: u32) {
        self.package.set(product_code, state, due);
    }

    fn blocked(&self, cert: &str) {
        self.ready.with_label_values(&[cert]).set(0.0);
    }

    fn fleet(&self, event: &crate::fleet::FleetEvent<'_>) {
        self.fleet.record(event);
    }

    fn pass_done(&self, certs: &[CertificateConfig], report: &PassReport) {
        self.refresh_disk(certs);
        self.record_pass(report);
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

/// The engine wired to a metrics registry. These live here, not in `renew`, so
/// that the engine does not depend on the metrics (metrics sit above it).
impl Engine {
    /// An engine recording into a fresh registry (`once`, `demo`, tests).
    pub fn new(cfg: Config, credentials: Arc<CredentialsProvider>) -> Result<Engine, EngineError> {
        Engine::with_metrics(cfg, credentials, Metrics::new())
    }

    /// An engine that records into `metrics` (the daemon keeps one registry across
    /// configuration reloads).
    pub fn with_metrics(
        cfg: Config,
        credentials: Arc<CredentialsProvider>,
        metrics: Arc<Metrics>,
    ) -> Result<Engine, EngineError> {
        Engine::with_observer(cfg, credentials, metrics)
    }

    /// The registry this engine records into; an empty one when it was built
    /// with another observer (`Engine::with_observer`).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.observer()
            .clone()
            .into_any()
            .downcast::<Metrics>()
            .unwrap_or_else(|_| Metrics::new())
    }
}

#[cfg(test)]
mod tests;
