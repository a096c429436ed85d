//! The CAS simulator: a strict, fault-injecting fake of Alibaba Cloud CAS and DNS
//! on a loopback address, for tests, the demo and operators' trials.
//!
//! Like Let's Encrypt's Pebble it is strict where the real service is (signatures,
//! nonces, clock skew, versions, order states) and can be told to misbehave
//! (throttling, 5xx, held connections, garbled bodies, bad certificates).

pub mod ca;
pub mod recording;
pub mod scenario;
pub mod server;
pub mod v2;
pub mod validation;
pub mod world;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use scenario::Scenario;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the simulator may only listen on a loopback address, not {0}")]
    NotLoopback(SocketAddr),
    #[error("cannot create the simulator's CA: {0}")]
    Ca(#[from] ca::CaError),
}

/// A running simulator; dropping it stops the server.
pub struct Simulator {
    addr: SocketAddr,
    shared: Arc<server::Shared>,
    task: JoinHandle<()>,
}

impl Simulator {
    /// Starts a simulator for `scenario` on `listen` (loopback only).
    pub async fn start(scenario: &Scenario, listen: &str) -> Result<Simulator, SimError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| SimError::Bind {
                addr: listen.to_owned(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SimError::Bind {
            addr: listen.to_owned(),
            source,
        })?;
        if !addr.ip().is_loopback() {
            return Err(SimError::NotLoopback(addr));
        }
        let world = world::World::new(scenario)?;
        let shared = Arc::new(server::Shared::new(scenario, world));
        let app = axum::Router::new()
            .fallback(server::handle)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "simulator server stopped");
            }
        });
        Ok(Simulator { addr, shared, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, the endpoint to configure.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The same JSON as `GET /_sim/state`.
    pub fn state(&self) -> serde_json::Value {
        self.shared
            .world
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .snapshot()
    }

    /// The plan of paid product `product_code` now holds `units` in all (the same
    /// as `POST /_sim/packages`).
    pub fn set_package_units(&self, product_code: &str, units: u32) {
        self.shared
            .world
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_package_units(product_code, units);
    }

    /// Moves the simulated clock forward.
    pub fn advance(&self, by: std::time::Duration) {
        self.shared
            .world
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .advance(by);
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}
