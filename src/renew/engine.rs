//! The engine: inventory, plans, and a pass over every certificate (bounded
//! concurrency), then the reload hooks once each and the served-certificate checks.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tracing::{Instrument as _, error, info, warn};

use super::discover::{self, BlockedTarget, Targets};
use super::plan::{self, Plan, PlanInput};
use super::ports::{CertificateSource, Clock, DnsApi, JournalStore, LocalJournals, SystemClock};
use super::report::{CertReport, Outcome, PassObserver, PassReport, blocked_report};
use super::steps::{CertRun, Step};
use super::{EngineError, PassOptions, installed_leaf};
use crate::cas::api::{CertificateOrder, OrderFilter};
use crate::cas::client::ApiError;
use crate::cas::credentials::CredentialsProvider;
use crate::settings::{CertificateConfig, Config};
use crate::store::{Journal, StoreError};

/// The plans of a pass, and the discovered domains it cannot act on.
#[derive(Debug, Clone, Default)]
pub struct Plans {
    pub certs: Vec<(CertificateConfig, Plan)>,
    pub blocked: Vec<BlockedTarget>,
}

/// What the engine talks to: the certificate source, DNS, the journal store and
/// the clock (see [`super::ports`]).
#[derive(Clone)]
pub struct Ports {
    pub source: Arc<dyn CertificateSource>,
    pub dns: Arc<dyn DnsApi>,
    pub journals: Arc<dyn JournalStore>,
    pub clock: Arc<dyn Clock>,
}

pub struct Engine {
    pub(super) cfg: Config,
    pub(super) cas: Arc<dyn CertificateSource>,
    pub(super) dns: Arc<dyn DnsApi>,
    pub(super) journals: Arc<dyn JournalStore>,
    pub(super) clock: Arc<dyn Clock>,
    /// Where the engine reports what it does (metrics, or a test's recorder).
    pub(super) observer: Arc<dyn PassObserver>,
    /// The resource plans of the current pass.
    pub(super) quota: super::quota::QuotaCache,
}

impl Engine {
    /// An engine that reports to `observer` (the daemon passes its metrics
    /// registry, which it keeps across configuration reloads).
    pub fn with_observer(
        cfg: Config,
        credentials: Arc<CredentialsProvider>,
        observer: Arc<dyn PassObserver>,
    ) -> Result<Engine, EngineError> {
        let limiter = Arc::new(cfg.api.limiter());
        let o = observer.clone();
        let api_observer: crate::cas::client::Observer =
            Arc::new(move |action, code, took| o.api_call(action, code, took));
        let cas = crate::cas::cas_client(
            &cfg.api,
            credentials.clone(),
            limiter.clone(),
            Some(api_observer.clone()),
        )?;
        let dns = crate::cas::dns_client(&cfg.api, credentials, limiter, Some(api_observer))?;
        let ports = Ports {
            source: Arc::new(cas),
            dns: Arc::new(dns),
            journals: Arc::new(LocalJournals::at(&cfg.state_dir)),
            clock: Arc::new(SystemClock),
        };
        Ok(Engine::with_ports(cfg, ports, observer))
    }

    /// An engine that talks to `ports` instead of CAS, Alibaba Cloud DNS, the
    /// state directory and the system clock (the in-process engine tests).
    pub fn with_ports(cfg: Config, ports: Ports, observer: Arc<dyn PassObserver>) -> Engine {
        Engine {
            cfg,
            cas: ports.source,
            dns: ports.dns,
            journals: ports.journals,
            clock: ports.clock,
            observer,
            quota: super::quota::QuotaCache::default(),
        }
    }

    pub fn observer(&self) -> &Arc<dyn PassObserver> {
        &self.observer
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Every order in the account (CPACK, all statuses), page by page. An entry
    /// without an OrderId names nothing cas-renewd could renew, install or follow:
    /// it is left out here, with a warning, so the plan meets only orders with one.
    pub async fn inventory(&self) -> Result<Vec<CertificateOrder>, ApiError> {
        let orders = self
            .cas
            .list_all_orders(OrderFilter::default(), self.cfg.api.page_size)
            .await?;
        Ok(with_order_ids(orders))
    }

    /// Configured certificates, then the usable discovered ones; and the
    /// discovered domains that are blocked.
    pub fn targets(&self, orders: &[CertificateOrder]) -> Targets {
        discover::targets(&self.cfg, orders)
    }

    pub(super) fn read_journal(&self, name: &str) -> Result<Journal, StoreError> {
        self.journals.load_journal(name)
    }

    /// The plan for one certificate from the account's `orders`, its journal and
    /// what is on disk now.
    pub(super) fn plan_one<'o>(
        &self,
        cert: &CertificateConfig,
        orders: impl IntoIterator<Item = &'o CertificateOrder>,
        journal: &Journal,
        force: bool,
    ) -> Plan {
        self.with_plan_input(cert, orders, journal, force, plan::plan)
    }

    /// Calls `f` with what the plan for `cert` depends on: its orders among the
    /// account's `orders`, its journal, what is on disk now, the clock.
    pub(super) fn with_plan_input<'o, R>(
        &self,
        cert: &CertificateConfig,
        orders: impl IntoIterator<Item = &'o CertificateOrder>,
        journal: &Journal,
        force: bool,
        f: impl FnOnce(&PlanInput<'_>) -> R,
    ) -> R {
        let mine: Vec<CertificateOrder> = orders
            .into_iter()
            .filter(|o| o.is_for(&cert.domain))
            .cloned()
            .collect();
        let disk = installed_leaf(&cert.output);
        f(&PlanInput {
            cert: &cert.name,
            domain: &cert.domain,
            orders: &mine,
            journal,
            disk: disk.as_ref(),
            now_ms: self.clock.now().timestamp_millis(),
            renew_before: self.cfg.renewal.renew_before,
            force,
            mode: cert.mode,
        })
    }

    /// The plan for every target, without acting, and the blocked discoveries.
    pub fn plans(
        &self,
        orders: &[CertificateOrder],
        opts: &PassOptions,
    ) -> Result<Plans, EngineError> {
        let wanted = |name: &str| opts.only.as_deref().is_none_or(|o| o == name);
        let targets = self.targets(orders);
        let by_domain = by_domain(orders);
        let mut out = Plans::default();
        for cert in targets.certs {
            if !wanted(&cert.name) {
                continue;
            }
            let journal = self.read_journal(&cert.name)?;
            let mine = by_domain.get(&cert.domain.to_ascii_lowercase());
            let p = self.plan_one(
                &cert,
                mine.into_iter().flatten().copied(),
                &journal,
                opts.force,
            );
            out.certs.push((cert, p));
        }
        out.blocked = targets
            .blocked
            .into_iter()
            .filter(|b| wanted(&b.name))
            .collect();
        if let Some(only) = &opts.only
            && out.certs.is_empty()
            && out.blocked.is_empty()
        {
            return Err(EngineError::NoSuchCertificate { name: only.clone() });
        }
        Ok(out)
    }

    /// One pass: inventory, plan, act on every certificate (bounded concurrency),
    /// then the reload hooks once each, then the served-certificate checks.
    pub async fn pass(self: &Arc<Self>, opts: &PassOptions) -> Result<PassReport, EngineError> {
        let orders = self.inventory().await?;
        let Plans {
            certs: plans,
            blocked,
        } = self.plans(&orders, opts)?;
        if opts.dry_run {
            return Ok(self.dry_pass(plans, &blocked, &orders, opts.force).await);
        }
        self.journals.prepare()?;
        let state = self.journals.clone();
        self.read_quota(&self.journaled(&plans), &orders).await;
        let orders = Arc::new(orders);
        let sem = Arc::new(Semaphore::new(self.cfg.renewal.concurrency));
        let mut results = Vec::new();
        let force = opts.force;
        let budget = opts.follow_budget;
        let task = |i: usize, (cert, p): (CertificateConfig, Plan)| {
            // Each certificate's budget starts when it gets its permit.
            let deadline = budget.map(|b| tokio::time::Instant::now() + b);
            let engine = self.clone();
            let orders = orders.clone();
            let state = state.clone();
            // Every log line of this certificate's work, API calls included, carries
            // the certificate's name and domain.
            let span = tracing::info_span!("renewal", cert = %cert.name, domain = %cert.domain);
            async move {
                let report = engine
                    .run_cert(state.as_ref(), &cert, p, &orders, force, deadline)
                    .await;
                (i, cert, report)
            }
            .instrument(span)
        };
        super::permit::each_holding(sem, plans, task, |r| results.push(r)).await;
        results.sort_by_key(|(i, _, _)| *i);
        let mut report = PassReport::default();
        let mut certs: Vec<CertificateConfig> = Vec::new();
        for (_, c, r) in results {
            certs.push(c);
            report.certs.push(r);
        }
        self.after_installs(state.as_ref(), &certs, &mut report)
            .await;
        for b in &blocked {
            report.certs.push(blocked_report(b));
            self.observer.blocked(&b.name);
        }
        self.observer.pass_done(&certs, &report);
        Ok(report)
    }

    pub(super) async fn run_cert(
        &self,
        state: &dyn JournalStore,
        cert: &CertificateConfig,
        first: Plan,
        orders: &[CertificateOrder],
        force: bool,
        deadline: Option<tokio::time::Instant>,
    ) -> CertReport {
        let mut report = unchanged_report(cert, &first);
        let mut run = CertRun {
            e: self,
            state,
            cert,
            journal: match state.load_journal(&cert.name) {
                Ok(j) => j,
                Err(e) => {
                    report.outcome = Outcome::Failed;
                    report.message = e.to_string();
                    return report;
                }
            },
            report: &mut report,
            deadline,
            force,
            orders,
        };
        // A pass with nothing to do leaves the installed leaf as it was read.
        let untouched = first.action == plan::Action::Nothing;
        let mut p = first;
        // A pass may take several steps for one certificate: install what is issued,
        // then renew it if it is due.
        for step in 0..4 {
            info!(cert = %cert.name, action = %p.action, reason = %p.reason, "plan");
            let result = run.act(&p, force && step == 0).await;
            match result {
                Ok(Step::Done) => break,
                Ok(Step::Replan) => p = self.plan_one(cert, orders, &run.journal, false),
                Ok(Step::Pending { order, state }) => {
                    let msg = format!("order {order} is {state}; followed again on the next poll");
                    info!(cert = %cert.name, "{msg}");
                    run.report.outcome = Outcome::Waiting;
                    run.report.message = msg;
                    break;
                }
                Err(EngineError::Blocked(msg)) => {
                    run.journal.last_error = Some(msg.clone());
                    let _ = state.save_journal(&mut run.journal);
                    run.report.outcome = Outcome::Blocked;
                    run.report.message = msg;
                    break;
                }
                Err(e) => {
                    error!(cert = %cert.name, error = %e, "renewal step failed");
                    run.journal.last_error = Some(e.to_string());
                    let _ = state.save_journal(&mut run.journal);
                    run.report.outcome = Outcome::Failed;
                    run.report.message = e.to_string();
                    break;
                }
            }
        }
        if !untouched {
            report.not_after = installed_leaf(&cert.output).map(|l| l.not_after_rfc3339());
        }
        report
    }
}

/// A certificate's report before anything is done: `plan` and its reason, what
/// is installed now.
impl Engine {
    /// What follows the installs of a pass (or an import): the reload hooks, the
    /// served-certificate check, then the keys and chains of finished attempts
    /// (the rule is in `store::prune`), once every hook had its chance.
    pub(super) async fn after_installs(
        &self,
        state: &dyn JournalStore,
        certs: &[CertificateConfig],
        report: &mut PassReport,
    ) {
        self.run_hooks(state, certs, report).await;
        self.verify_served(state, certs, report).await;
        if let Err(e) = state.prune_finished() {
            warn!(error = %e, "old keys and chains in the state directory not pruned");
        }
    }
}

pub(super) fn unchanged_report(cert: &CertificateConfig, plan: &Plan) -> CertReport {
    let previous = installed_leaf(&cert.output).map(|l| l.not_after_rfc3339());
    CertReport {
        name: cert.name.clone(),
        domain: cert.domain.clone(),
        message: plan.reason.clone(),
        plan: plan.clone(),
        outcome: Outcome::Unchanged,
        order_id: None,
        not_after: previous.clone(),
        previous_not_after: previous,
        files: vec![],
        renew_calls: 0,
        served_matches_disk: None,
        steps: vec![],
    }
}

/// `orders` by domain, ASCII lower case (as [`CertificateOrder::is_for`] compares):
/// each plan then looks at its own orders, not at the whole account.
fn by_domain(orders: &[CertificateOrder]) -> HashMap<String, Vec<&CertificateOrder>> {
    let mut out: HashMap<String, Vec<&CertificateOrder>> = HashMap::new();
    for o in orders {
        if let Some(d) = o.domain_name() {
            out.entry(d.to_ascii_lowercase()).or_default().push(o);
        }
    }
    out
}

/// The orders that have an OrderId; each one without is left out with a warning.
fn with_order_ids(mut orders: Vec<CertificateOrder>) -> Vec<CertificateOrder> {
    orders.retain(|o| {
        if o.order_id.is_none() {
            warn!(
                domain = o.domain.as_deref(),
                status = o.status.map(|s| s.as_str()),
                "an order in the listing has no OrderId; left out"
            );
        }
        o.order_id.is_some()
    });
    orders
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_domain_are_those_each_domain_is_for() {
        let orders: Vec<CertificateOrder> = serde_json::from_value(serde_json::json!([
            { "OrderId": 1, "Domain": "WWW.example.com" },
            { "OrderId": 2, "CommonName": "www.EXAMPLE.com" },
            { "OrderId": 3, "Domain": "api.example.com" },
            { "OrderId": 4 },
            { "OrderId": 5, "Domain": "www.example.com" },
        ]))
        .expect("orders");
        let groups = by_domain(&orders);
        for domain in ["www.example.com", "api.example.com", "x.example.com"] {
            let mine: Vec<Option<i64>> = groups
                .get(&domain.to_ascii_lowercase())
                .into_iter()
                .flatten()
                .map(|o| o.order_id)
                .collect();
            let filtered: Vec<Option<i64>> = orders
                .iter()
                .filter(|o| o.is_for(domain))
                .map(|o| o.order_id)
                .collect();
            assert_eq!(mine, filtered, "{domain}");
        }
        assert_eq!(groups["www.example.com"].len(), 3, "in the listing's order");
        assert_eq!(
            groups.values().map(Vec::len).sum::<usize>(),
            4,
            "no domain, no group"
        );
    }

    #[test]
    fn orders_without_an_order_id_are_left_out_of_the_inventory() {
        let orders: Vec<CertificateOrder> = serde_json::from_value(serde_json::json!([
            { "OrderId": 7, "Domain": "www.example.com" },
            { "Domain": "www.example.com", "Status": "ISSUED" },
            { "OrderId": 9, "Domain": "" },
        ]))
        .expect("orders");
        let ids: Vec<Option<i64>> = with_order_ids(orders).iter().map(|o| o.order_id).collect();
        assert_eq!(ids, [Some(7), Some(9)]);
    }
}
