//! A pass in a fleet: before a certificate's work, install what another host
//! issued (no lock needed), then take the fleet lock when the plan could spend,
//! and plan again from the shared journal; the paid-call guard; the lock's release.

use std::sync::Arc;

use tracing::info;

use super::engine::unchanged_report;
use super::engine::{CertJob, Engine};
use super::plan::{Action, Plan};
use super::ports::{FleetPort, JournalStore};
use super::report::{CertReport, Outcome, PassReport};
use super::steps::{CertRun, check_pair};
use super::{EngineError, installed_leaf};
use crate::cas::inventory::Inventory;
use crate::fleet::{FleetError, FleetEvent};
use crate::pki::{Chain, Key};
use crate::settings::CertificateConfig;

/// How long a pass waits for another host's lock when it has no follow budget.
const DEFAULT_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Whether acting on `action` may spend or move the shared journal: only under
/// the lock.
fn needs_lock(action: &Action) -> bool {
    !matches!(
        action,
        Action::Nothing | Action::Blocked | Action::RerunReload
    )
}

/// What a certificate's work in a fleet starts from.
pub(super) struct FleetStart {
    pub(super) plan: Plan,
    /// This pass took the certificate's lock (released by [`Engine::fleet_end`]).
    pub(super) locked: bool,
    /// The account's orders and instances listed again under the lock.
    pub(super) inv: Option<Inventory>,
}

impl Engine {
    /// The plan to act on: `first` for a host alone; in a fleet, the plan after
    /// installing what the fleet issued and, when it could spend, after taking
    /// the lock and reading the shared journal again.
    pub(super) async fn fleet_start(
        &self,
        job: CertJob<'_>,
        first: Plan,
        report: &mut CertReport,
    ) -> Result<FleetStart, EngineError> {
        let (state, cert, force) = (job.state, job.cert, job.force);
        let Some(fleet) = state.fleet() else {
            return Ok(FleetStart {
                plan: first,
                locked: false,
                inv: None,
            });
        };
        fleet.ready().await?;
        self.fleet_sync(fleet, state, cert, job.inv, report).await?;
        let journal = state.load_journal(&cert.name)?;
        let plan = self.plan_one(cert, job.inv, &journal, force);
        if !needs_lock(&plan.action) {
            return Ok(FleetStart {
                plan,
                locked: false,
                inv: None,
            });
        }
        let until = job
            .deadline
            .unwrap_or_else(|| tokio::time::Instant::now() + DEFAULT_LOCK_WAIT);
        fleet.lock(&cert.name, until).await?;
        // What the previous holder did is known only now: its issued material,
        // its journal (an attempt to carry on with the same key and order). The
        // pass's listing is older than the lock: another host may have renewed
        // since, and a plan from it would pay again. List afresh under the lock.
        let again = async {
            let inv = self.inventory_all().await?;
            self.fleet_sync(fleet, state, cert, &inv, report).await?;
            let journal = state.load_journal(&cert.name)?;
            fleet.fetch_attempt(&cert.name, &journal).await?;
            let plan = self.plan_one(cert, &inv, &journal, force);
            Ok::<_, EngineError>((plan, inv))
        };
        match again.await {
            Ok((plan, inv)) => Ok(FleetStart {
                plan,
                locked: true,
                inv: Some(inv),
            }),
            Err(e) => {
                let _ = fleet.unlock(&cert.name).await;
                Err(e)
            }
        }
    }

    /// After a certificate's work: report what is installed, release the lock.
    pub(super) async fn fleet_end(&self, job: CertJob<'_>, locked: bool, report: &mut CertReport) {
        let (state, cert, inv) = (job.state, job.cert, job.inv);
        let Some(fleet) = state.fleet() else {
            return;
        };
        if let Err(e) = self.fleet_sync(fleet, state, cert, inv, report).await {
            tracing::warn!(cert = %cert.name, error = %e, "fleet: the installed version is not reported");
        }
        if locked {
            let _ = fleet.unlock(&cert.name).await;
        }
    }

    /// Installs the fleet's issued material of `cert` when it is newer than what
    /// this host has, through the install every renewal uses (output dir, owner,
    /// modes, hooks), and reports the version installed.
    pub(super) async fn fleet_sync(
        &self,
        fleet: &dyn FleetPort,
        state: &dyn JournalStore,
        cert: &CertificateConfig,
        inv: &Inventory,
        report: &mut CertReport,
    ) -> Result<(), EngineError> {
        let Some(shared) = fleet.shared_issued(&cert.name).await? else {
            return Ok(());
        };
        let chain = Chain::parse(&shared.fullchain_pem)?;
        let sha = chain.leaf.sha256.clone();
        let journal = state.load_journal(&cert.name)?;
        if journal.installed_sha256.as_deref() == Some(sha.as_str()) {
            self.observer.fleet(&FleetEvent::InstalledVersion {
                cert: &cert.name,
                version: shared.version,
            });
            return Ok(fleet
                .report_installed(&cert.name, shared.version, &sha, self.clock.now())
                .await?);
        }
        // Whatever the fleet's journal says (another attempt under way), issued
        // material newer than this host's is installed: the attempt's end brings
        // a newer version still.
        let disk = installed_leaf(&cert.output);
        if disk.is_some_and(|d| d.not_after >= chain.leaf.not_after) {
            return Ok(());
        }
        let key = Key::from_pem(shared.key.expose())?;
        if chain.leaf.spki_sha256 != key.spki_sha256() {
            return Err(EngineError::SavedPairMismatch);
        }
        check_pair(cert, self.clock.now().timestamp(), &chain, &key)?;
        let mut run = CertRun {
            e: self,
            state,
            cert,
            journal,
            report,
            deadline: None,
            force: false,
            inv,
        };
        run.journal.last_order_id = Some(shared.order_id);
        run.report.order_id = Some(shared.order_id);
        // An attempt in flight (its paid call may be made) stays in the journal:
        // under the lock, moving it to idle would erase it in etcd, and the next
        // plan would pay again.
        if run.journal.phase.in_flight() {
            run.install_chain_keeping_phase(&chain, &key)?;
        } else {
            run.install_chain(&chain, &key, false)?;
        }
        info!(cert = %cert.name, version = shared.version, from = %shared.host, "installed the fleet's certificate");
        self.observer.fleet(&FleetEvent::InstalledVersion {
            cert: &cert.name,
            version: shared.version,
        });
        Ok(fleet
            .report_installed(&cert.name, shared.version, &sha, self.clock.now())
            .await?)
    }
}

impl Engine {
    /// What the fleet's watch asks for: installs every certificate another host
    /// issued that is newer than this host's, then runs the reload hooks and the
    /// served checks. Takes no lock and never renews (a renewal waits for a pass
    /// of the schedule, with its jitter).
    pub async fn fleet_install_pass(self: &Arc<Self>) -> Result<PassReport, EngineError> {
        let state = self.journals.clone();
        let Some(fleet) = state.fleet() else {
            return Ok(PassReport::default());
        };
        let inv = self.inventory_all().await?;
        let targets = self.targets(&inv);
        state.prepare()?;
        fleet.ready().await?;
        let mut report = PassReport::default();
        for cert in &targets.certs {
            let journal = state.load_journal(&cert.name)?;
            let plan = self.plan_one(cert, &inv, &journal, false);
            let mut r = unchanged_report(cert, &plan);
            if let Err(e) = self
                .fleet_sync(fleet, state.as_ref(), cert, &inv, &mut r)
                .await
            {
                tracing::error!(cert = %cert.name, error = %e, "fleet: the fleet's certificate is not installed");
                r.outcome = Outcome::Failed;
                r.message = e.to_string();
            }
            report.certs.push(r);
        }
        self.after_installs(state.as_ref(), &targets.certs, &mut report)
            .await;
        Ok(report)
    }
}

impl CertRun<'_> {
    /// The paid-call guard: in a fleet, a paid call goes out only while this host
    /// holds the certificate's lock and etcd confirmed its lease recently.
    pub(super) fn fleet_may_spend(&self) -> Result<(), EngineError> {
        match self.state.fleet() {
            Some(f) => f.may_spend(&self.cert.name).map_err(EngineError::from),
            None => Ok(()),
        }
    }
}

/// A fleet error that means this host must not act now (another host holds the
/// lock): the certificate waits, nothing failed.
pub(super) fn is_busy(e: &EngineError) -> bool {
    matches!(e, EngineError::Fleet(FleetError::Busy { .. }))
}
