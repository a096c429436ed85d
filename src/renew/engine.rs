//! The engine: inventory, plans, and a pass over every certificate (bounded
//! concurrency), then the reload hooks once each and the served-certificate checks.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tracing::{Instrument as _, error, info, warn};

use super::discover::{self, BlockedTarget, Targets};
use super::plan::{self, Plan, PlanInput};
use super::ports::{CertificateSource, Clock, DnsApi, JournalStore, LocalJournals};
use super::report::{CertReport, Outcome, PassObserver, PassReport, blocked_report};
use super::steps::{CertRun, Step};
use super::{EngineError, PassOptions, installed_leaf};
use crate::cas::api::Instance;
use crate::cas::api::{CertificateOrder, OrderFilter};
use crate::cas::client::ApiError;
use crate::cas::credentials::CredentialsProvider;
use crate::cas::inventory::{Entry, Inventory};
use crate::ids::InstanceId;
use crate::settings::{CertificateConfig, Config};
use crate::store::{Journal, StoreError};

/// The plans of a pass, and the discovered domains it cannot act on.
#[derive(Debug, Clone, Default)]
pub struct Plans {
    pub certs: Vec<(CertificateConfig, Plan)>,
    pub blocked: Vec<BlockedTarget>,
}

/// What `status` and the metrics show of the V2.0 instance a certificate comes
/// from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceFacts {
    pub instance_id: Option<InstanceId>,
    /// The end of its service period (InstanceEndTime).
    pub service_end: Option<chrono::DateTime<chrono::Utc>>,
    /// CAS re-issues it itself (AutoReissue).
    pub auto_reissue: bool,
}

/// One certificate's work in a pass: where its journal is, the certificate, the
/// account's orders and instances, and the pass's options for it.
#[derive(Clone, Copy)]
pub(super) struct CertJob<'a> {
    pub(super) state: &'a dyn JournalStore,
    pub(super) cert: &'a CertificateConfig,
    pub(super) inv: &'a Inventory,
    pub(super) force: bool,
    pub(super) deadline: Option<tokio::time::Instant>,
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
            journals: journal_store(&cfg, observer.clone())?,
            clock: super::ports::production_clock(),
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

    /// Every V1 order in the account (CPACK, all statuses), page by page, without
    /// the V2.0 instances the V1 listing may also show (see [`Engine::inventory_all`]).
    pub async fn inventory(&self) -> Result<Vec<CertificateOrder>, ApiError> {
        Ok(self.inventory_all().await?.orders)
    }

    /// The account's V1 orders and its V2.0 instances, each kind listed page by
    /// page (one listing of each per call): one pass handles a mixed account. An
    /// order without an OrderId names nothing cas-renewd could renew, install or
    /// follow: it is left out, with a warning. An instance that
    /// ListUserCertificateOrder also shows stays only as the instance, so no V1
    /// operation (the paid renew above all) is ever called on it.
    pub async fn inventory_all(&self) -> Result<Inventory, ApiError> {
        let orders = self
            .cas
            .list_all_orders(OrderFilter::default(), self.cfg.api.page_size)
            .await?;
        let instances = self.cas.list_all_instances(self.cfg.api.page_size).await?;
        Ok(Inventory::new(with_order_ids(orders), instances))
    }

    /// Configured certificates, then the usable discovered ones (from orders and
    /// instances); and the discovered domains that are blocked.
    pub fn targets(&self, inv: &Inventory) -> Targets {
        discover::inventory_targets(&self.cfg, inv)
    }

    pub(super) fn read_journal(&self, name: &str) -> Result<Journal, StoreError> {
        self.journals.load_journal(name)
    }

    /// The plan for one certificate from the account's `orders`, its journal and
    /// what is on disk now.
    pub(super) fn plan_one(
        &self,
        cert: &CertificateConfig,
        inv: &Inventory,
        journal: &Journal,
        force: bool,
    ) -> Plan {
        self.with_plan_input(cert, inv, journal, force, plan::plan)
    }

    /// Calls `f` with what the plan for `cert` depends on: its orders and
    /// instances in the account's inventory `inv`, its journal, what is on disk
    /// now, the clock.
    pub(super) fn with_plan_input<R>(
        &self,
        cert: &CertificateConfig,
        inv: &Inventory,
        journal: &Journal,
        force: bool,
        f: impl FnOnce(&PlanInput<'_>) -> R,
    ) -> R {
        let mine: Vec<CertificateOrder> = inv
            .orders
            .iter()
            .filter(|o| o.is_for(&cert.domain))
            .cloned()
            .collect();
        let instances: Vec<_> = inv
            .for_domain(&cert.domain)
            .into_iter()
            .filter_map(|e| match e {
                Entry::Instance(i) => Some(i.clone()),
                Entry::Order(_) => None,
            })
            .collect();
        let disk = installed_leaf(&cert.output);
        f(&PlanInput {
            cert: &cert.name,
            domain: &cert.domain,
            orders: &mine,
            instances: &instances,
            journal,
            disk: disk.as_ref(),
            now_ms: self.clock.now().timestamp_millis(),
            renew_before: self.cfg.renewal.renew_before,
            force,
            mode: cert.mode,
        })
    }

    /// The plan for every target of the V1 `orders` alone (no instances), without
    /// acting, and the blocked discoveries.
    pub fn plans(
        &self,
        orders: &[CertificateOrder],
        opts: &PassOptions,
    ) -> Result<Plans, EngineError> {
        let inv = Inventory {
            orders: orders.to_vec(),
            ..Inventory::default()
        };
        self.plans_for(&inv, opts)
    }

    /// The plan for every target of the inventory `inv`, without acting, and the
    /// blocked discoveries.
    pub fn plans_for(&self, inv: &Inventory, opts: &PassOptions) -> Result<Plans, EngineError> {
        let wanted = |name: &str| opts.only.as_deref().is_none_or(|o| o == name);
        let targets = self.targets(inv);
        let by_domain = by_domain(inv);
        let mut out = Plans {
            certs: Vec::with_capacity(targets.certs.len()),
            ..Plans::default()
        };
        for cert in targets.certs {
            if !wanted(&cert.name) {
                continue;
            }
            let journal = self.read_journal(&cert.name)?;
            // The orders and instances of this domain only: looking them up in the
            // whole account for each certificate is quadratic (10^8 comparisons at
            // 10,000 certificates).
            let mine = by_domain
                .get(&cert.domain.to_ascii_lowercase())
                .map(|(orders, instances)| Inventory {
                    orders: orders.iter().map(|o| (*o).clone()).collect(),
                    instances: instances.iter().map(|i| (*i).clone()).collect(),
                    listed_as_instances: vec![],
                })
                .unwrap_or_default();
            let p = self.plan_one(&cert, &mine, &journal, opts.force);
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
        let inv = self.inventory_all().await?;
        let Plans {
            certs: plans,
            blocked,
        } = self.plans_for(&inv, opts)?;
        if opts.dry_run {
            return Ok(self.dry_pass(plans, &blocked, &inv, opts.force).await);
        }
        self.journals.prepare()?;
        let state = self.journals.clone();
        self.observe_instances(&plans, &inv);
        self.read_quota(&self.journaled(&plans), &inv.orders).await;
        let orders = Arc::new(inv);
        let sem = Arc::new(Semaphore::new(self.cfg.renewal.concurrency));
        let mut results = Vec::with_capacity(plans.len());
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
        super::permit::each_holding(sem, Shrinking::new(plans), task, |r| results.push(r)).await;
        // Every task is done with the account's listing: its memory goes back
        // before the reports are gathered.
        drop(orders);
        results.sort_by_key(|(i, _, _)| *i);
        // Sized up front: grown by doubling, these three held ~18 MiB at 11,000
        // certificates, a third of the pass's peak.
        let mut report = PassReport {
            certs: Vec::with_capacity(results.len() + blocked.len()),
            ..PassReport::default()
        };
        let mut certs: Vec<CertificateConfig> = Vec::with_capacity(results.len());
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
        inv: &Inventory,
        force: bool,
        deadline: Option<tokio::time::Instant>,
    ) -> CertReport {
        let mut report = unchanged_report(cert, &first);
        let job = CertJob {
            state,
            cert,
            inv,
            force,
            deadline,
        };
        let (first, locked, fresh) = match self.fleet_start(job, first, &mut report).await {
            Ok(s) => (s.plan, s.locked, s.inv),
            Err(e) => {
                report.outcome = if super::fleet::is_busy(&e) {
                    Outcome::Waiting
                } else {
                    error!(cert = %cert.name, error = %e, "fleet: no step taken");
                    Outcome::Failed
                };
                report.message = e.to_string();
                return report;
            }
        };
        let inv = fresh.as_ref().unwrap_or(inv);
        let job = CertJob { inv, ..job };
        let mut report = self.run_plan(job, first, report).await;
        self.fleet_end(job, locked, &mut report).await;
        // The fleet's step may have installed another host's certificate whatever
        // the plan; alone, `run_plan` reads the leaf again when its plan acted.
        if state.fleet().is_some() {
            report.not_after = installed_leaf(&cert.output).map(|l| l.not_after_rfc3339());
        }
        report
    }

    /// Acts on `first` and the plans that follow it, up to four steps.
    async fn run_plan(&self, job: CertJob<'_>, first: Plan, mut report: CertReport) -> CertReport {
        let CertJob {
            state,
            cert,
            inv,
            force,
            deadline,
        } = job;
        // Nothing to do (most certificates of a pass): no journal to read, and the
        // leaf stays as the report read it. A pending reload is never "nothing"
        // (it plans RerunReload), which `pending_hooks` relies on too.
        if first.action == plan::Action::Nothing {
            info!(cert = %cert.name, action = %first.action, reason = %first.reason, "plan");
            return report;
        }
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
            inv,
        };
        let mut p = first;
        // A pass may take several steps for one certificate: install what is issued,
        // then renew it if it is due.
        for step in 0..4 {
            info!(cert = %cert.name, action = %p.action, reason = %p.reason, "plan");
            let result = run.act(&p, force && step == 0).await;
            match result {
                Ok(Step::Done) => break,
                Ok(Step::Replan) => p = self.plan_one(cert, inv, &run.journal, false),
                Ok(Step::Pending { order, state }) => {
                    let msg = format!("{order} is {state}; followed again on the next poll");
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
        report.not_after = installed_leaf(&cert.output).map(|l| l.not_after_rfc3339());
        report
    }
}

impl Engine {
    /// The V2.0 instance `cert` comes from in `inv` (the one its plan reads).
    pub fn source_instance(
        &self,
        cert: &CertificateConfig,
        inv: &Inventory,
    ) -> Option<InstanceFacts> {
        let j = crate::store::Journal::new(&cert.name);
        self.with_plan_input(cert, inv, &j, false, |i| {
            plan::instance::source(i).map(|x| InstanceFacts {
                instance_id: x.instance_id.clone().map(InstanceId::new),
                service_end: x.service_end(),
                auto_reissue: x.auto_reissue_enabled(),
            })
        })
    }

    /// Tells the observer each certificate's instance service end and AutoReissue.
    fn observe_instances(&self, plans: &[(CertificateConfig, Plan)], inv: &Inventory) {
        if inv.instances.is_empty() {
            return;
        }
        for (cert, _) in plans {
            if let Some(i) = self.source_instance(cert, inv) {
                self.observer.instance_service(
                    &cert.name,
                    i.service_end.map(|t| t.timestamp()),
                    i.auto_reissue,
                );
            }
        }
    }

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

/// The journals of `cfg`: the state directory, shared through etcd in a fleet.
fn journal_store(
    cfg: &Config,
    observer: Arc<dyn PassObserver>,
) -> Result<Arc<dyn JournalStore>, EngineError> {
    match &cfg.fleet {
        None => Ok(Arc::new(LocalJournals::at(&cfg.state_dir))),
        #[cfg(feature = "fleet")]
        Some(spec) => Ok(Arc::new(super::fleet_store::FleetJournals::connect(
            &cfg.state_dir,
            spec,
            observer,
        )?)),
        // `config` refuses `fleet:` in a build without the feature.
        #[cfg(not(feature = "fleet"))]
        Some(_) => {
            drop(observer);
            Err(EngineError::Fleet(crate::fleet::FleetError::Etcd {
                endpoints: String::new(),
                detail: "this cas-renewd was built without the `fleet` feature".into(),
            }))
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

/// Hands out a vector's items in order and gives their memory back as it goes:
/// the plans of 10,000 certificates (~5 MiB) would otherwise stay allocated until
/// the last certificate's task finished, beside every certificate's report.
struct Shrinking<T>(Vec<T>);

impl<T> Shrinking<T> {
    fn new(mut items: Vec<T>) -> Self {
        items.reverse();
        Shrinking(items)
    }
}

impl<T> Iterator for Shrinking<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        let item = self.0.pop();
        // Halving when a quarter is left copies each item at most a few times.
        if self.0.capacity() > 64 && self.0.len() < self.0.capacity() / 4 {
            self.0.shrink_to(self.0.len() * 2);
        }
        item
    }
}

/// The orders and the instances of one domain.
type DomainEntries<'a> = (Vec<&'a CertificateOrder>, Vec<&'a Instance>);

/// The inventory by domain, ASCII lower case (as [`CertificateOrder::is_for`] and
/// [`Inventory::for_domain`] compare), each in the listing's order: each plan then
/// looks at its own orders and instances, not at the whole account.
fn by_domain(inv: &Inventory) -> HashMap<String, DomainEntries<'_>> {
    let mut out: HashMap<String, DomainEntries<'_>> = HashMap::new();
    for o in &inv.orders {
        if let Some(d) = o.domain_name() {
            out.entry(d.to_ascii_lowercase()).or_default().0.push(o);
        }
    }
    for i in &inv.instances {
        let mut names = Entry::Instance(i).names();
        names.iter_mut().for_each(|n| n.make_ascii_lowercase());
        names.sort();
        names.dedup();
        for n in names {
            out.entry(n).or_default().1.push(i);
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
    fn the_plans_are_handed_out_in_order_and_their_memory_shrinks() {
        let mut items = Shrinking::new((0..10_000).collect::<Vec<u64>>());
        let seen: Vec<u64> = items.by_ref().take(9_000).collect();
        assert_eq!(seen, (0..9_000).collect::<Vec<u64>>());
        // 1,000 left: at most four times that is still allocated, not 10,000.
        assert!(items.0.capacity() <= 4_000, "{}", items.0.capacity());
        let mut seen = seen;
        seen.extend(items);
        assert_eq!(seen, (0..10_000).collect::<Vec<u64>>());
    }

    #[test]
    fn the_inventory_by_domain_is_what_each_domain_is_for() {
        let orders: Vec<CertificateOrder> = serde_json::from_value(serde_json::json!([
            { "OrderId": 1, "Domain": "WWW.example.com" },
            { "OrderId": 2, "CommonName": "www.EXAMPLE.com" },
            { "OrderId": 3, "Domain": "api.example.com" },
            { "OrderId": 4 },
            { "OrderId": 5, "Domain": "www.example.com" },
        ]))
        .expect("orders");
        let instances: Vec<Instance> = serde_json::from_value(serde_json::json!([
            { "InstanceId": "cas-a", "Domain": "www.example.com, API.example.com" },
            { "InstanceId": "cas-b", "Domain": "x.example.com", "CertificateDomain": "X.example.com" },
            { "InstanceId": "cas-c" },
        ]))
        .expect("instances");
        let inv = Inventory {
            orders,
            instances,
            listed_as_instances: vec![],
        };
        let groups = by_domain(&inv);
        for domain in [
            "www.example.com",
            "api.example.com",
            "x.example.com",
            "y.example.com",
        ] {
            let (orders, instances) = groups
                .get(&domain.to_ascii_lowercase())
                .cloned()
                .unwrap_or_default();
            let mine: Vec<Option<i64>> = orders.iter().map(|o| o.order_id).collect();
            let filtered: Vec<Option<i64>> = inv
                .orders
                .iter()
                .filter(|o| o.is_for(domain))
                .map(|o| o.order_id)
                .collect();
            assert_eq!(mine, filtered, "{domain}");
            let mine: Vec<_> = instances.iter().map(|i| i.instance_id.clone()).collect();
            let filtered: Vec<_> = inv
                .for_domain(domain)
                .into_iter()
                .filter_map(|e| match e {
                    Entry::Instance(i) => Some(i.instance_id.clone()),
                    Entry::Order(_) => None,
                })
                .collect();
            assert_eq!(mine, filtered, "{domain}");
        }
        assert_eq!(
            groups["www.example.com"].0.len(),
            3,
            "in the listing's order"
        );
        assert_eq!(
            groups["x.example.com"].1.len(),
            1,
            "an instance once per name, whichever field names it"
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
