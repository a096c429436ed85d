//! The metrics and health router (`/metrics`, `/healthz`, `/readyz`) and its
//! start on the configured address; `listener` bounds the connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::listener;
use crate::metrics::Metrics;

/// What the health endpoints report.
pub(super) struct Health {
    pub(super) metrics: Arc<Metrics>,
    pub(super) config_loaded: AtomicBool,
    pub(super) pass_ran: AtomicBool,
}

impl Health {
    /// A daemon whose configuration is loaded and that has not finished a pass yet.
    pub(super) fn new(metrics: Arc<Metrics>) -> Arc<Health> {
        Arc::new(Health {
            metrics,
            config_loaded: AtomicBool::new(true),
            pass_ran: AtomicBool::new(false),
        })
    }
}

/// Binds `addr` and serves the router from a task of its own.
pub(super) async fn start(
    addr: SocketAddr,
    health: Arc<Health>,
) -> std::io::Result<JoinHandle<()>> {
    let tcp = tokio::net::TcpListener::bind(addr).await?;
    let bound = tcp.local_addr().unwrap_or(addr);
    let server = tokio::spawn(listener::serve(
        tcp,
        router(health),
        listener::Limits::default(),
    ));
    info!(addr = %bound, "metrics on http://{bound}/metrics");
    if let Some(w) = listener::exposure_warning(bound) {
        warn!("{w}");
    }
    Ok(server)
}

fn router(health: Arc<Health>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(health)
}

async fn metrics(
    State(h): State<Arc<Health>>,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        h.metrics.render(),
    )
}

async fn readyz(State(h): State<Arc<Health>>) -> (StatusCode, &'static str) {
    if !h.config_loaded.load(Ordering::Relaxed) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "configuration not loaded\n",
        )
    } else if !h.pass_ran.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "no pass has run yet\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_only_after_the_configuration_and_a_pass() {
        let h = Health::new(Metrics::new());
        assert_eq!(
            readyz(State(h.clone())).await,
            (StatusCode::SERVICE_UNAVAILABLE, "no pass has run yet\n")
        );
        h.pass_ran.store(true, Ordering::Relaxed);
        assert_eq!(readyz(State(h.clone())).await, (StatusCode::OK, "ready\n"));
        h.config_loaded.store(false, Ordering::Relaxed);
        assert_eq!(
            readyz(State(h)).await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "configuration not loaded\n"
            )
        );
    }

    #[tokio::test]
    async fn metrics_are_served_in_the_prometheus_text_format() {
        let h = Health::new(Metrics::new());
        let (status, headers, body) = metrics(State(h.clone())).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers,
            [("content-type", "text/plain; version=0.0.4; charset=utf-8")]
        );
        assert!(
            body.contains("cas_renewd_config_last_reload_successful 1"),
            "{body}"
        );
    }
}
