//! The whole chain of steps a pass would take for one certificate, for the dry
//! run: the plan, then the plan the engine would make after each step it can
//! foresee without writing (an install, the resource-plan guard before a paid call),
//! ending where the real pass would stop, block or fail.

use super::{Action, Plan, PlanInput, plan};
use crate::ids::OrderId;
use crate::pki::CertInfo;
use crate::store::{Journal, PhaseName};

/// The most steps the engine takes for one certificate in a pass
/// (`Engine::run_cert`); the chain stops there as well.
pub const MAX_STEPS: usize = 4;

/// What installing an issued order would meet, as read without writing
/// (DescribeCertificateState and the installed key).
#[derive(Debug, Clone)]
pub enum Installable {
    /// The install would succeed and put this leaf on disk.
    Yes(CertInfo),
    /// The certificate is for a key this host does not have: the engine lists the
    /// order as unusable and plans again.
    ForeignKey,
    /// The install would fail with this error.
    Fails(String),
}

/// What a dry run learns by reading (never writing) before each step.
pub trait Lookahead {
    /// What installing `order` would meet.
    fn install(&mut self, order: OrderId) -> Installable;
    /// Before the paid call of `action` (renew, reapply, or a journal whose key
    /// is ready): `Err(why)` when the guard would refuse it (no unit left).
    fn paid(&mut self, action: &Action, journal: &Journal) -> Result<(), String>;
}

/// The steps, in order, and how the pass would end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub steps: Vec<Plan>,
    /// The error a step would fail with, when one would.
    pub failure: Option<String>,
}

impl Chain {
    /// Whether the real pass would block this certificate.
    pub fn blocked(&self) -> bool {
        self.steps
            .last()
            .is_some_and(|p| p.action == Action::Blocked)
    }

    /// Each step's reason, then the failure, in order.
    pub fn reasons(&self) -> String {
        let mut parts: Vec<&str> = self.steps.iter().map(|p| p.reason.as_str()).collect();
        if let Some(f) = &self.failure {
            parts.push(f);
        }
        parts.join("; then: ")
    }
}

/// The chain of the pass for input `i`, whose certificate runs the reload hooks
/// `reload` after an install. Mirrors `CertRun::act`: an install is followed by a
/// new plan from the changed disk and journal; a paid call ends the chain (what
/// follows depends on CAS), unless the guard would refuse it; anything else ends it.
pub fn chain(i: &PlanInput<'_>, reload: &[String], look: &mut dyn Lookahead) -> Chain {
    let mut journal = i.journal.clone();
    let mut disk = i.disk.cloned();
    let mut steps = Vec::new();
    let mut p = plan(i);
    while steps.len() < MAX_STEPS {
        let action = p.action.clone();
        steps.push(p);
        let paid = matches!(action, Action::Renew { .. } | Action::Reapply { .. })
            || action
                == (Action::Resume {
                    phase: PhaseName::KeyReady,
                });
        if paid {
            if let Err(why) = look.paid(&action, &journal) {
                steps.push(Plan {
                    cert: i.cert.to_owned(),
                    action: Action::Blocked,
                    reason: why,
                });
            }
            break;
        }
        let Action::Install { order_id } = action else {
            break;
        };
        match look.install(order_id) {
            Installable::Yes(leaf) => {
                disk = Some(leaf);
                journal.last_order_id = Some(order_id);
                journal.reload_pending = reload.to_vec();
                journal.last_error = None;
            }
            Installable::ForeignKey => journal.unusable_orders.push(order_id),
            Installable::Fails(e) => {
                return Chain {
                    steps,
                    failure: Some(e),
                };
            }
        }
        // The engine plans again without `--force`: it applied to the first step.
        p = plan(&PlanInput {
            journal: &journal,
            disk: disk.as_ref(),
            force: false,
            ..*i
        });
        if p.action == Action::Nothing {
            break;
        }
    }
    Chain {
        steps,
        failure: None,
    }
}
