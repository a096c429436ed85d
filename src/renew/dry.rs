//! The dry run: for every certificate, the whole chain of steps the real pass
//! would take (`plan::chain`), looked ahead with read calls only (the order's
//! certificate and key, the resource plans), and the outcome the real pass would
//! report, so `once --dry-run` exits as `once` would. Nothing is written to CAS
//! or to disk.

use std::collections::BTreeMap;

use super::discover::BlockedTarget;
use super::engine::Engine;
use super::plan::Plan;
use super::plan::chain::{self, Installable, Lookahead};
use super::plan::{Action, PlanInput};
use super::quota;
use super::report::{CertReport, Outcome, PassReport, blocked_report};
use super::steps::{check_pair, order_pair};
use super::{EngineError, installed_leaf};
use crate::cas::api_apply::PackageState;
use crate::cas::inventory::Inventory;
use crate::ids::OrderId;
use crate::settings::CertificateConfig;
use crate::store::Journal;

/// What the dry run read ahead, and the units its planned paid calls take.
struct Look<'a> {
    /// What installing each order would meet.
    installs: BTreeMap<OrderId, Installable>,
    /// The resource plans as the real pass would read them first.
    plans: BTreeMap<String, Option<PackageState>>,
    /// Units the planned paid calls take, by product code, as the guard counts them
    /// (two certificates of one product cannot both take its last unit).
    taken: BTreeMap<String, i64>,
    inv: &'a Inventory,
}

impl Lookahead for Look<'_> {
    fn install(&mut self, order: OrderId) -> Installable {
        self.installs.get(&order).cloned().unwrap_or_else(|| {
            Installable::Fails(format!("order {order} was not read ahead by the dry run"))
        })
    }

    fn paid(&mut self, action: &Action, journal: &Journal) -> Result<(), String> {
        // `i64::MIN`: only the paid call itself counts here, not an install due later.
        let Some(code) = quota::paid_product_code(action, journal, &self.inv.orders, i64::MIN)
        else {
            return Ok(());
        };
        // A plan not read, or not readable, never blocks (as in the real guard).
        let Some(Some(s)) = self.plans.get(&code) else {
            return Ok(());
        };
        let taken = self.taken.entry(code.clone()).or_default();
        if let Some(why) = quota::refusal(&code, s, *taken) {
            return Err(why);
        }
        *taken += 1;
        Ok(())
    }
}

impl Engine {
    /// The dry run of a pass whose first plans are `plans`.
    pub(super) async fn dry_pass(
        &self,
        plans: Vec<(CertificateConfig, Plan)>,
        blocked: &[BlockedTarget],
        inv: &Inventory,
        force: bool,
    ) -> PassReport {
        // The guard's view: the plans the real pass reads at its start (read-only).
        self.read_quota(&self.journaled(&plans), &inv.orders).await;
        let mut look = Look {
            installs: BTreeMap::new(),
            plans: self.quota.snapshot().await,
            taken: BTreeMap::new(),
            inv,
        };
        let mut certs = Vec::new();
        for (cert, first) in plans {
            certs.push(self.dry_cert(&cert, first, &mut look, force).await);
        }
        certs.extend(blocked.iter().map(blocked_report));
        PassReport {
            certs,
            hooks: vec![],
        }
    }

    async fn dry_cert(
        &self,
        cert: &CertificateConfig,
        first: Plan,
        look: &mut Look<'_>,
        force: bool,
    ) -> CertReport {
        let mut report = CertReport {
            name: cert.name.clone(),
            domain: cert.domain.clone(),
            message: first.reason.clone(),
            plan: first.clone(),
            outcome: Outcome::Planned,
            order_id: None,
            not_after: installed_leaf(&cert.output).map(|l| l.not_after_rfc3339()),
            previous_not_after: None,
            files: vec![],
            renew_calls: 0,
            served_matches_disk: None,
            steps: vec![],
        };
        let journal = match self.read_journal(&cert.name) {
            Ok(j) => j,
            Err(e) => {
                report.outcome = Outcome::Failed;
                report.message = e.to_string();
                return report;
            }
        };
        // Only the first step can be an install: after it the newest issued order
        // is on disk (or unusable), so no other order is newer.
        if let Action::Install { order_id } = first.action {
            let seen = self.foresee_install(cert, order_id).await;
            look.installs.insert(order_id, seen);
        }
        let inv = look.inv;
        let c = self.with_plan_input(cert, inv, &journal, force, |i: &PlanInput<'_>| {
            chain::chain(i, &cert.reload, look)
        });
        report.outcome = if c.failure.is_some() {
            Outcome::Failed
        } else if c.blocked() {
            Outcome::Blocked
        } else {
            Outcome::Planned
        };
        report.message = c.reasons();
        report.steps = c.steps;
        report
    }

    /// What installing order `order` would meet, read without writing.
    async fn foresee_install(&self, cert: &CertificateConfig, order: OrderId) -> Installable {
        match order_pair(self, cert, order).await {
            Ok(Some((chain, key))) => {
                match check_pair(cert, self.clock.now().timestamp(), &chain, &key) {
                    Ok(()) => Installable::Yes(chain.leaf),
                    Err(e) => Installable::Fails(EngineError::from(e).to_string()),
                }
            }
            Ok(None) => Installable::ForeignKey,
            Err(e) => Installable::Fails(e.to_string()),
        }
    }
}
