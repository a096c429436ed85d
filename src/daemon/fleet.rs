//! The fleet's watch: a task that follows the certificates' keys under the
//! fleet's prefix in etcd and asks for a pass when another host publishes an
//! issued certificate, so every host installs it within seconds (the pass
//! installs it without the lock, with this host's own output, hooks and checks).

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::schedule::Trigger;
use crate::config::Config;

/// The watch of `cfg`'s fleet, when it has one.
pub(super) fn watch(cfg: &Config, tx: mpsc::Sender<Trigger>) -> Option<JoinHandle<()>> {
    #[cfg(feature = "fleet")]
    {
        let spec = cfg.fleet.clone()?;
        Some(tokio::spawn(imp::run(spec, cfg.schedule.run_at_start, tx)))
    }
    #[cfg(not(feature = "fleet"))]
    {
        let _ = (cfg, tx);
        None
    }
}

#[cfg(feature = "fleet")]
mod imp {
    use std::time::Duration;

    use etcd_client::EventType;
    use tokio::sync::mpsc;
    use tracing::{info, warn};

    use super::Trigger;
    use crate::fleet::FleetSpec;
    use crate::fleet::etcd::EtcdFleet;
    use crate::fleet::layout::IssuedRecord;

    /// The wait before watching again after etcd failed.
    const RETRY: Duration = Duration::from_secs(2);

    /// Watches until the daemon drops the task. A watch (re)established after a
    /// failure asks for a pass: what was published meanwhile is installed then;
    /// so does the first one when no pass runs at start.
    pub(super) async fn run(spec: FleetSpec, run_at_start: bool, tx: mpsc::Sender<Trigger>) {
        let mut catch_up = !run_at_start;
        loop {
            match watch_once(&spec, &tx, catch_up).await {
                Ok(()) => warn!("fleet: the etcd watch ended; watching again"),
                Err(e) => warn!(error = %e, "fleet: the etcd watch failed; watching again"),
            }
            catch_up = true;
            tokio::time::sleep(RETRY).await;
        }
    }

    async fn watch_once(
        spec: &FleetSpec,
        tx: &mpsc::Sender<Trigger>,
        catch_up: bool,
    ) -> Result<(), crate::fleet::FleetError> {
        let etcd = EtcdFleet::connect(spec).await?;
        let mut stream = etcd.watch_certs().await?;
        if catch_up {
            let _ = tx.send(Trigger::Fleet).await;
        }
        while let Some(resp) =
            stream
                .message()
                .await
                .map_err(|e| crate::fleet::FleetError::Etcd {
                    endpoints: spec.endpoints.join(","),
                    detail: e.to_string(),
                })?
        {
            for ev in resp.events() {
                let Some(kv) = ev.kv().filter(|_| ev.event_type() == EventType::Put) else {
                    continue;
                };
                let key = String::from_utf8_lossy(kv.key());
                let Some(cert) = etcd.layout().cert_of_issued(&key) else {
                    continue;
                };
                let Ok(record) = serde_json::from_slice::<IssuedRecord>(kv.value()) else {
                    warn!(key = %key, "fleet: an issued record that does not parse; left to the next pass");
                    continue;
                };
                // This host's own publication is installed by the pass that made it.
                if record.host != etcd.host() {
                    info!(cert, version = record.version, from = %record.host, "fleet: a new certificate was issued; a pass installs it");
                    let _ = tx.send(Trigger::Fleet).await;
                }
            }
        }
        Ok(())
    }
}
