//! The renewal engine: inventory, plan, and the crash-safe state machine that
//! carries a plan out (key, renew, follow, check, install, reload, verify).
//!
//! Every step that matters is written to the certificate's journal before the
//! next one starts, so a crash at any moment resumes at the right step and never
//! spends quota twice: a renew call whose outcome is unknown is reconciled by
//! looking for the order it may have created before anything is called again.

mod apply;
pub mod discover;
pub mod plan;
pub mod validation;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::Digest as _;
use tokio::sync::Semaphore;
use tracing::{Instrument as _, error, info, warn};

use crate::cas::api::{Cas, CertificateOrder, CertificateState, OrderFilter};
use crate::cas::client::ApiError;
use crate::cas::credentials::CredentialsProvider;
use crate::cas::dns::Dns;
use crate::config::{CertificateConfig, Config, OutputConfig};
use crate::domain::ControlsEscaped;
use crate::hooks::{self, HookContext};
use crate::metrics::Metrics;
use crate::pki::{self, CertInfo, Chain, Expectations, Key, PkiError};
use crate::store::faults::{CrashPoint, crash_point};
use crate::store::{
    self, CertificateFiles, FileSpec, Journal, JournalPhase, PaidCall, StateDir, StoreError,
};
pub use discover::{BlockedTarget, Targets, child_dir, discovered_names};
use plan::{Action, Plan, PlanInput};
use validation::Published;

/// How long after an unclear renew call the account must show no new order before
/// the call is made again (at least; twice the poll interval when that is longer).
const RECONCILE_GRACE: Duration = Duration::from_secs(10);
/// Tag put on renewal orders so an operator can tell them apart in the console.
const TAG_KEY: &str = "cas-renewd";
/// The served-certificate check: each handshake's limit, how many, how far apart.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);
const VERIFY_ATTEMPTS: u32 = 5;
const VERIFY_SPACING: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Validation(#[from] validation::ValidationError),
    #[error(transparent)]
    Hook(#[from] hooks::HookError),
    #[error("credentials: {0}")]
    Credentials(#[from] crate::cas::credentials::CredentialsError),
    #[error("{0}")]
    Other(String),
    /// Not an error: the follow budget of this pass ran out while CAS processes the order.
    #[error("{0}")]
    Waiting(String),
    /// Needs the operator before anything more is spent (the message says what to do).
    #[error("{0}")]
    Blocked(String),
}

/// How one certificate's pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Nothing needed doing.
    Unchanged,
    /// A renewed certificate was installed (and reloaded, where hooks are configured).
    Renewed,
    /// An existing order's certificate was installed (first install, or a renewal
    /// made elsewhere).
    Installed,
    /// An installed certificate's reload was re-run and succeeded.
    Reloaded,
    /// A step failed; the journal says where to resume.
    Failed,
    /// Needs the operator (see the message).
    Blocked,
    /// Dry run: only planned.
    Planned,
    /// An order is still being processed; the daemon follows it again soon.
    Waiting,
}

#[derive(Debug, Clone, Serialize)]
pub struct CertReport {
    pub name: String,
    pub domain: String,
    pub plan: Plan,
    pub outcome: Outcome,
    pub message: String,
    pub order_id: Option<i64>,
    /// Expiry of the certificate on disk after the pass, RFC 3339.
    pub not_after: Option<String>,
    pub previous_not_after: Option<String>,
    pub files: Vec<PathBuf>,
    /// Paid renew calls made for this certificate in this pass.
    pub renew_calls: u32,
    /// Whether the served certificate matched the one on disk (when `verify` is set).
    pub served_matches_disk: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HookReport {
    pub hook: String,
    pub certs: Vec<String>,
    pub ok: bool,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct PassReport {
    pub certs: Vec<CertReport>,
    pub hooks: Vec<HookReport>,
}

impl PassReport {
    /// True when no certificate failed or is blocked and every hook ran.
    pub fn ok(&self) -> bool {
        self.certs
            .iter()
            .all(|c| !matches!(c.outcome, Outcome::Failed | Outcome::Blocked))
            && self.hooks.iter().all(|h| h.ok)
    }
}

#[derive(Debug, Clone, Default)]
pub struct PassOptions {
    pub dry_run: bool,
    /// Only this certificate.
    pub only: Option<String>,
    /// Renew even when not due, and past a rejection.
    pub force: bool,
    /// How long a pass follows an unissued order before it reports `Waiting` and
    /// moves on (the daemon); `None` follows until `issuance_timeout` (`once`).
    pub follow_budget: Option<Duration>,
}

fn now_rfc3339() -> String {
    Utc::now().to_rfc3339()
}

fn new_attempt_id() -> String {
    hex::encode(rand::random::<[u8; 6]>())
}

/// The report line of a blocked discovered domain.
fn blocked_report(b: &BlockedTarget, dry_run: bool) -> CertReport {
    CertReport {
        name: b.name.clone(),
        domain: b.domain.clone(),
        plan: Plan {
            cert: b.name.clone(),
            action: Action::Blocked,
            reason: b.reason.clone(),
        },
        outcome: if dry_run {
            Outcome::Planned
        } else {
            Outcome::Blocked
        },
        message: b.reason.clone(),
        order_id: None,
        not_after: None,
        previous_not_after: None,
        files: vec![],
        renew_calls: 0,
        served_matches_disk: None,
    }
}

/// The plans of a pass, and the discovered domains it cannot act on.
#[derive(Debug, Clone, Default)]
pub struct Plans {
    pub certs: Vec<(CertificateConfig, Plan)>,
    pub blocked: Vec<BlockedTarget>,
}

/// Reads the installed leaf of `out`, if there is one that parses.
pub fn installed_leaf(out: &OutputConfig) -> Option<CertInfo> {
    let pem = store::read_output_text(&out.dir.join(store::CERT_FILE)).ok()??;
    pki::read_leaf(&pem).ok()
}

pub struct Engine {
    cfg: Config,
    cas: Cas,
    dns: Dns,
    state_root: PathBuf,
    metrics: Arc<Metrics>,
}

impl Engine {
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
        let limiter = Arc::new(cfg.api.limiter());
        let m = metrics.clone();
        let observer: crate::cas::client::Observer =
            Arc::new(move |action, code, took| m.observe_api(action, code, took));
        let cas = crate::cas::cas_client(
            &cfg.api,
            credentials.clone(),
            limiter.clone(),
            Some(observer.clone()),
        )?;
        let dns = crate::cas::dns_client(&cfg.api, credentials, limiter, Some(observer))?;
        Ok(Engine {
            state_root: cfg.state_dir.clone(),
            cfg,
            cas,
            dns,
            metrics,
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Every order in the account (CPACK, all statuses), page by page.
    pub async fn inventory(&self) -> Result<Vec<CertificateOrder>, ApiError> {
        self.cas
            .list_all_orders(OrderFilter::default(), self.cfg.api.page_size)
            .await
    }

    /// Configured certificates, then the usable discovered ones; and the
    /// discovered domains that are blocked.
    pub fn targets(&self, orders: &[CertificateOrder]) -> Targets {
        discover::targets(&self.cfg, orders)
    }

    fn read_journal(&self, name: &str) -> Result<Journal, StoreError> {
        // Read without creating the state directory, so dry runs change nothing.
        let path = self.state_root.join("journal").join(format!("{name}.json"));
        if !path.exists() {
            return Ok(Journal {
                cert: name.to_owned(),
                ..Journal::default()
            });
        }
        StateDir::at(&self.state_root).load_journal(name)
    }

    /// The plan for one certificate from the account's `orders`, its journal and
    /// what is on disk now.
    fn plan_one(
        &self,
        cert: &CertificateConfig,
        orders: &[CertificateOrder],
        journal: &Journal,
        force: bool,
    ) -> Plan {
        let mine: Vec<CertificateOrder> = orders
            .iter()
            .filter(|o| o.is_for(&cert.domain))
            .cloned()
            .collect();
        let disk = installed_leaf(&cert.output);
        plan::plan(&PlanInput {
            cert: &cert.name,
            domain: &cert.domain,
            orders: &mine,
            journal,
            disk: disk.as_ref(),
            now_ms: Utc::now().timestamp_millis(),
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
        let mut out = Plans::default();
        for cert in targets.certs {
            if !wanted(&cert.name) {
                continue;
            }
            let journal = self.read_journal(&cert.name)?;
            let p = self.plan_one(&cert, orders, &journal, opts.force);
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
            return Err(EngineError::Other(format!(
                "no certificate named {only:?} (configured or discovered)"
            )));
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
            let certs = plans
                .into_iter()
                .map(|(c, p)| CertReport {
                    name: c.name.clone(),
                    domain: c.domain.clone(),
                    message: p.reason.clone(),
                    plan: p,
                    outcome: Outcome::Planned,
                    order_id: None,
                    not_after: installed_leaf(&c.output).map(|l| l.not_after_rfc3339()),
                    previous_not_after: None,
                    files: vec![],
                    renew_calls: 0,
                    served_matches_disk: None,
                })
                .chain(blocked.iter().map(|b| blocked_report(b, true)))
                .collect();
            return Ok(PassReport {
                certs,
                hooks: vec![],
            });
        }
        let state = StateDir::open(&self.state_root)?;
        let orders = Arc::new(orders);
        let sem = Arc::new(Semaphore::new(self.cfg.renewal.concurrency));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, (cert, p)) in plans.into_iter().enumerate() {
            let engine = self.clone();
            let sem = sem.clone();
            let orders = orders.clone();
            let state = state.clone();
            let force = opts.force;
            let deadline = opts.follow_budget.map(|b| tokio::time::Instant::now() + b);
            // Every log line of this certificate's work, API calls included, carries
            // the certificate's name and domain.
            let span = tracing::info_span!("renewal", cert = %cert.name, domain = %cert.domain);
            tasks.spawn(
                async move {
                    let _permit = sem.acquire_owned().await;
                    let report = engine
                        .run_cert(&state, &cert, p, &orders, force, deadline)
                        .await;
                    (i, cert, report)
                }
                .instrument(span),
            );
        }
        let mut results = Vec::new();
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(x) => results.push(x),
                Err(e) => error!(error = %e, "a certificate task panicked"),
            }
        }
        results.sort_by_key(|(i, _, _)| *i);
        let mut report = PassReport::default();
        let mut certs: Vec<CertificateConfig> = Vec::new();
        for (_, c, r) in results {
            certs.push(c);
            report.certs.push(r);
        }
        self.run_hooks(&state, &certs, &mut report).await;
        self.verify_served(&state, &certs, &mut report).await;
        self.metrics.refresh_disk(&certs);
        for b in &blocked {
            report.certs.push(blocked_report(b, false));
            self.metrics
                .ready
                .with_label_values(&[b.name.as_str()])
                .set(0.0);
        }
        self.metrics.record_pass(&report);
        Ok(report)
    }

    async fn run_cert(
        &self,
        state: &StateDir,
        cert: &CertificateConfig,
        first: Plan,
        orders: &[CertificateOrder],
        force: bool,
        deadline: Option<tokio::time::Instant>,
    ) -> CertReport {
        let previous = installed_leaf(&cert.output).map(|l| l.not_after_rfc3339());
        let mut report = CertReport {
            name: cert.name.clone(),
            domain: cert.domain.clone(),
            message: first.reason.clone(),
            plan: first.clone(),
            outcome: Outcome::Unchanged,
            order_id: None,
            not_after: previous.clone(),
            previous_not_after: previous,
            files: vec![],
            renew_calls: 0,
            served_matches_disk: None,
        };
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
        let mut p = first;
        // A pass may take several steps for one certificate: install what is issued,
        // then renew it if it is due.
        for step in 0..4 {
            info!(cert = %cert.name, action = ?p.action, reason = %p.reason, "plan");
            let result = run.act(&p, force && step == 0).await;
            match result {
                Ok(Step::Done) => break,
                Ok(Step::Replan) => p = self.plan_one(cert, orders, &run.journal, false),
                Err(EngineError::Waiting(msg)) => {
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

    /// Runs each hook needed by any certificate once, then clears it from their journals.
    async fn run_hooks(
        &self,
        state: &StateDir,
        certs: &[CertificateConfig],
        report: &mut PassReport,
    ) {
        let mut wanted: BTreeMap<String, Vec<(usize, HookContext)>> = BTreeMap::new();
        for (i, cert) in certs.iter().enumerate() {
            let Ok(j) = state.load_journal(&cert.name) else {
                continue;
            };
            if j.reload_pending.is_empty() {
                continue;
            }
            let leaf = installed_leaf(&cert.output);
            let ctx = HookContext {
                cert_name: cert.name.clone(),
                domain: cert.domain.clone(),
                order_id: j
                    .new_order_id
                    .or(j.source_order_id)
                    .map(|o| o.to_string())
                    .unwrap_or_default(),
                cert_path: path_str(&cert.output.dir.join(store::CERT_FILE)),
                key_path: path_str(&cert.output.dir.join(store::KEY_FILE)),
                fullchain_path: path_str(&cert.output.dir.join(store::FULLCHAIN_FILE)),
                chain_path: path_str(&cert.output.dir.join(store::CHAIN_FILE)),
                not_after: leaf
                    .as_ref()
                    .map(|l| l.not_after_rfc3339())
                    .unwrap_or_default(),
                sha256: leaf.map(|l| l.sha256).unwrap_or_default(),
            };
            for h in &j.reload_pending {
                wanted.entry(h.clone()).or_default().push((i, ctx.clone()));
            }
        }
        for (hook, users) in wanted {
            let names: Vec<String> = users.iter().map(|(i, _)| certs[*i].name.clone()).collect();
            let result = match self.cfg.hooks.get(&hook) {
                Some(h) => {
                    let ctxs: Vec<HookContext> = users.iter().map(|(_, c)| c.clone()).collect();
                    hooks::run(&hook, h, &HookContext::merge(&ctxs))
                        .await
                        .map(|_| ())
                }
                None => Err(hooks::HookError::Spawn {
                    hook: hook.clone(),
                    program: String::new(),
                    source: std::io::Error::other("no such hook in the configuration"),
                }),
            };
            let ok = result.is_ok();
            if let Err(e) = &result {
                error!(hook = %hook, certs = ?names, error = %e, "reload hook failed; it is retried on the next pass without renewing again");
            }
            for (i, _) in &users {
                let cert = &certs[*i];
                let Ok(mut j) = state.load_journal(&cert.name) else {
                    continue;
                };
                if ok {
                    j.reload_pending.retain(|h| h != &hook);
                    if j.reload_pending.is_empty() && j.phase == JournalPhase::Installed {
                        j.phase = JournalPhase::Idle;
                        j.last_success = Some(now_rfc3339());
                        j.last_error = None;
                    }
                } else {
                    j.last_error = result.as_ref().err().map(ToString::to_string);
                    if let Some(r) = report.certs.iter_mut().find(|r| r.name == cert.name) {
                        r.outcome = Outcome::Failed;
                        r.message = format!(
                            "installed, but reload failed: {}",
                            j.last_error.clone().unwrap_or_default()
                        );
                    }
                }
                if let Err(e) = state.save_journal(&mut j) {
                    error!(cert = %cert.name, error = %e, "cannot write journal after hook");
                }
                if ok && j.phase == JournalPhase::Idle {
                    crash_point(CrashPoint::AfterReload);
                    let _ = state.prune_attempts(&cert.name, j.attempt.as_deref());
                    if let Some(r) = report.certs.iter_mut().find(|r| r.name == cert.name)
                        && r.outcome == Outcome::Unchanged
                    {
                        r.outcome = Outcome::Reloaded;
                        r.message = "reload re-run and succeeded".into();
                    }
                }
            }
            report.hooks.push(HookReport {
                hook: hook.clone(),
                certs: names,
                ok,
                message: match &result {
                    Ok(()) => "ok".into(),
                    Err(e) => e.to_string(),
                },
            });
        }
    }

    /// Compares what `verify.connect` serves with `cert.pem`; a difference puts
    /// the reload back on the journal so the next pass tries again.
    async fn verify_served(
        &self,
        state: &StateDir,
        certs: &[CertificateConfig],
        report: &mut PassReport,
    ) {
        for cert in certs {
            let Some(v) = &cert.verify else { continue };
            let Some(r) = report.certs.iter_mut().find(|r| r.name == cert.name) else {
                continue;
            };
            if matches!(r.outcome, Outcome::Blocked | Outcome::Planned) {
                continue;
            }
            let Some(disk) = installed_leaf(&cert.output) else {
                continue;
            };
            let sni = v
                .server_name
                .clone()
                .unwrap_or_else(|| cert.domain.trim_start_matches("*.").to_owned());
            // A reload takes effect when the server's new workers are up: look a few
            // times before calling a difference a failure.
            let mut served = crate::verify::served_leaf(&v.connect, &sni, VERIFY_TIMEOUT).await;
            for _ in 1..VERIFY_ATTEMPTS {
                if served.as_ref().is_ok_and(|der| *der == disk.der) {
                    break;
                }
                tokio::time::sleep(VERIFY_SPACING).await;
                served = crate::verify::served_leaf(&v.connect, &sni, VERIFY_TIMEOUT).await;
            }
            let served_sha = served
                .as_ref()
                .ok()
                .map(|der| hex::encode_upper(sha2::Sha256::digest(der)));
            if let Ok(mut j) = state.load_journal(&cert.name) {
                j.served_sha256 = served_sha;
                j.served_checked_at = Some(now_rfc3339());
                let _ = state.save_journal(&mut j);
            }
            match served {
                Ok(der) => {
                    let matches = der == disk.der;
                    r.served_matches_disk = Some(matches);
                    if matches {
                        info!(cert = %cert.name, addr = %v.connect, "served certificate matches the one on disk");
                    } else {
                        let served = pki::read_leaf(&pem_of(&der))
                            .map(|l| l.serial_hex)
                            .unwrap_or_default();
                        error!(cert = %cert.name, addr = %v.connect, served_serial = %served, disk_serial = %disk.serial_hex, "served certificate differs from the one on disk; the reload is retried next pass");
                        r.outcome = Outcome::Failed;
                        r.message = format!(
                            "{} serves serial {served}, but {} holds serial {}: the reload did not take effect",
                            v.connect,
                            cert.output.dir.join(store::CERT_FILE).display(),
                            disk.serial_hex
                        );
                        if let Ok(mut j) = state.load_journal(&cert.name) {
                            for h in &cert.reload {
                                if !j.reload_pending.contains(h) {
                                    j.reload_pending.push(h.clone());
                                }
                            }
                            j.last_error = Some(r.message.clone());
                            let _ = state.save_journal(&mut j);
                        }
                    }
                }
                Err(e) => {
                    r.served_matches_disk = Some(false);
                    warn!(cert = %cert.name, error = %e, "could not check the served certificate");
                    r.message = format!("{}; served certificate not checked: {e}", r.message);
                }
            }
        }
    }
}

fn pem_of(der: &[u8]) -> String {
    use base64::Engine as _;
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64::engine::general_purpose::STANDARD.encode(der)
    )
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

enum Step {
    /// This certificate is finished for the pass.
    Done,
    /// The disk changed but no order did: plan again from the same listing.
    Replan,
}

/// One certificate's work within a pass.
struct CertRun<'a> {
    e: &'a Engine,
    state: &'a StateDir,
    cert: &'a CertificateConfig,
    journal: Journal,
    report: &'a mut CertReport,
    /// When this pass stops following unissued orders (the daemon's budget).
    deadline: Option<tokio::time::Instant>,
    /// `renew --force`: the operator allows paying again after an unclear call.
    force: bool,
    /// The account's orders as this pass listed them.
    orders: &'a [CertificateOrder],
}

impl CertRun<'_> {
    fn save(&mut self) -> Result<(), EngineError> {
        self.state.save_journal(&mut self.journal)?;
        Ok(())
    }

    async fn act(&mut self, p: &Plan, force: bool) -> Result<Step, EngineError> {
        match &p.action {
            Action::Nothing => Ok(Step::Done),
            Action::Blocked => {
                self.report.outcome = Outcome::Blocked;
                self.report.message = p.reason.clone();
                warn!(cert = %self.cert.name, reason = %p.reason, "blocked");
                Ok(Step::Done)
            }
            Action::RerunReload => Ok(Step::Done),
            // After a renewal step, the pass's listing no longer shows the account:
            // planning again from it could renew twice. The next pass lists afresh.
            Action::Resume { .. } => {
                self.resume().await?;
                Ok(Step::Done)
            }
            Action::Install { order_id } => {
                self.install_from_order(*order_id).await?;
                Ok(Step::Replan)
            }
            Action::Adopt { order_id } => {
                self.remove_published().await;
                self.journal = Journal {
                    cert: self.cert.name.clone(),
                    phase: JournalPhase::OrderCreated,
                    attempt: Some(new_attempt_id()),
                    new_order_id: Some(*order_id),
                    requested_at: Some(now_rfc3339()),
                    unusable_orders: std::mem::take(&mut self.journal.unusable_orders),
                    reload_pending: std::mem::take(&mut self.journal.reload_pending),
                    adopted: true,
                    ..Journal::default()
                };
                self.save()?;
                info!(cert = %self.cert.name, order_id, "adopted a renewal made elsewhere");
                self.resume().await?;
                Ok(Step::Done)
            }
            Action::Renew { source_order_id } => {
                if self.journal.phase == JournalPhase::Rejected && !force {
                    return Ok(Step::Done);
                }
                self.start_renewal(*source_order_id, PaidCall::Renew, None)
                    .await?;
                self.resume().await?;
                Ok(Step::Done)
            }
            Action::Reapply {
                source_order_id,
                product_code,
            } => {
                if self.journal.phase == JournalPhase::Rejected && !force {
                    return Ok(Step::Done);
                }
                self.check_package(product_code).await?;
                self.start_renewal(
                    *source_order_id,
                    PaidCall::Create,
                    Some(product_code.clone()),
                )
                .await?;
                self.resume().await?;
                Ok(Step::Done)
            }
        }
    }

    /// Makes the key (0600, fsynced, under the state directory) and journals it
    /// before anything is spent.
    async fn start_renewal(
        &mut self,
        source_order_id: i64,
        paid_call: PaidCall,
        product_code: Option<String>,
    ) -> Result<(), EngineError> {
        // The journal is about to start afresh (`renew --force` after a refusal):
        // anything an earlier order left published goes first.
        self.remove_published().await;
        let attempt = new_attempt_id();
        let key = if self.cert.key.reuse {
            match store::read_output_text(&self.cert.output.dir.join(store::KEY_FILE)) {
                Ok(Some(pem)) => Key::from_pem(&pem)?,
                _ => self.generate_key().await?,
            }
        } else {
            self.generate_key().await?
        };
        let key_path = self.state.key_path(&self.cert.name, &attempt);
        store::write_file(
            &key_path,
            key.pem().expose().as_bytes(),
            FileSpec::private(),
        )?;
        let names = self.names_for_csr();
        let csr = key.csr_pem(&self.cert.domain, &names)?;
        self.journal = Journal {
            cert: self.cert.name.clone(),
            phase: JournalPhase::KeyReady,
            attempt: Some(attempt),
            source_order_id: Some(source_order_id),
            key_path: Some(key_path),
            key_spki_sha256: Some(key.spki_sha256()),
            csr_sha256: Some(crate::cas::sign::sha256_hex(csr.as_bytes())),
            paid_call,
            product_code,
            unusable_orders: std::mem::take(&mut self.journal.unusable_orders),
            reload_pending: std::mem::take(&mut self.journal.reload_pending),
            ..Journal::default()
        };
        self.save()?;
        info!(cert = %self.cert.name, source_order_id, key = %key.spki_sha256(), algorithm = self.cert.key.algorithm.as_str(), "key ready");
        crash_point(CrashPoint::AfterKeyReady);
        Ok(())
    }

    async fn generate_key(&self) -> Result<Key, EngineError> {
        let alg = self.cert.key.algorithm;
        // RSA generation takes up to seconds of CPU: keep it off the runtime's workers.
        tokio::task::spawn_blocking(move || Key::generate(alg))
            .await
            .map_err(|e| EngineError::Other(format!("key generation task failed: {e}")))?
            .map_err(EngineError::from)
    }

    /// CN is the domain; SANs are the names of the installed certificate (they came
    /// from the order), the domain first.
    fn names_for_csr(&self) -> Vec<String> {
        let mut names = vec![self.cert.domain.clone()];
        if let Some(leaf) = installed_leaf(&self.cert.output) {
            for n in leaf.dns_names {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        names
    }

    fn load_key(&self) -> Result<Option<Key>, EngineError> {
        match &self.journal.key_path {
            Some(p) => {
                let pem = std::fs::read_to_string(p).map_err(|source| StoreError::Io {
                    path: p.clone(),
                    op: "read key",
                    source,
                })?;
                Ok(Some(Key::from_pem(&pem)?))
            }
            None => Ok(None),
        }
    }

    /// Carries the journal forward from wherever it stands to `Installed`.
    async fn resume(&mut self) -> Result<(), EngineError> {
        loop {
            match self.journal.phase {
                JournalPhase::KeyReady => self.call_renew().await?,
                JournalPhase::RenewRequested => self.reconcile_or_renew().await?,
                JournalPhase::OrderCreated
                | JournalPhase::ApplicationRequested
                | JournalPhase::ApplicationSubmitted => self.follow().await?,
                JournalPhase::Issued => self.install_issued()?,
                JournalPhase::Installed | JournalPhase::Idle | JournalPhase::Rejected => {
                    return Ok(());
                }
            }
        }
    }

    /// When the renew call was journaled (or an adopted order taken up); now if unknown.
    fn requested_at(&self) -> DateTime<Utc> {
        self.journal
            .requested_at
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map_or_else(Utc::now, |t| t.with_timezone(&Utc))
    }

    /// Polls DescribeCertificateState with backoff until the order is issued.
    async fn follow(&mut self) -> Result<(), EngineError> {
        let order = self
            .journal
            .new_order_id
            .ok_or_else(|| EngineError::Other("journal at order-created has no order".into()))?;
        self.report.order_id = Some(order);
        let started = self.requested_at();
        let r = &self.e.cfg.renewal;
        let mut interval = r.poll_interval;
        let mut published = self.published_from_journal();
        let mut payed_polls = 0u32;
        let state = loop {
            let resp = self.e.cas.describe_certificate_state(order).await?;
            let s = resp.body;
            info!(cert = %self.cert.name, order_id = order, request_id = %resp.request_id, state = s.state.as_str(), "order state");
            self.e
                .metrics
                .set_order_state(&self.cert.name, s.state.as_str());
            match s.state {
                CertificateState::Certificate => break s,
                CertificateState::VerifyFail => {
                    self.remove_published().await;
                    self.journal.validation_told = None;
                    self.journal.phase = JournalPhase::Rejected;
                    let msg = format!(
                        "order {order} failed the CA's review (verify_fail); CAS suggests deleting the order (DeleteCertificateRequest returns the quota) and applying again"
                    );
                    self.journal.last_error = Some(msg.clone());
                    self.save()?;
                    return Err(EngineError::Other(msg));
                }
                CertificateState::DomainVerify if published == Published::Nothing => {
                    published = validation::publish(
                        &self.e.dns,
                        &self.cert.validation,
                        &self.cert.domain,
                        order,
                        &s,
                        self.journal.validation_told.as_deref(),
                    )
                    .await?;
                    match &published {
                        Published::Dns { zone, record_id } => {
                            self.journal.dns_record = Some((zone.clone(), record_id.clone()));
                            self.save()?;
                        }
                        Published::File(p) => {
                            self.journal.validation_file = Some(p.clone());
                            self.save()?;
                        }
                        Published::Manual(told)
                            if self.journal.validation_told.as_ref() != Some(told) =>
                        {
                            self.journal.validation_told = Some(told.clone());
                            self.save()?;
                        }
                        _ => {}
                    }
                }
                CertificateState::Payed => {
                    payed_polls += 1;
                    self.on_payed(order, payed_polls).await?;
                }
                _ => {}
            }
            let elapsed = (Utc::now() - started).to_std().unwrap_or_default();
            if elapsed >= r.issuance_timeout && self.journal.adopted {
                return self.give_up_adopted(order, s.state).await;
            }
            if elapsed >= r.issuance_timeout {
                let msg = format!(
                    "order {order} not issued after {} (state {}); its validation record or file is removed; it stays in the journal and is followed again next pass",
                    humantime::format_duration(r.issuance_timeout),
                    s.state.as_str()
                );
                self.remove_published().await;
                self.save()?;
                return Err(EngineError::Other(msg));
            }
            if self
                .deadline
                .is_some_and(|d| tokio::time::Instant::now() + interval > d)
            {
                return Err(EngineError::Waiting(format!(
                    "order {order} is {}; followed again on the next poll",
                    s.state.as_str()
                )));
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 2).min(r.poll_max_interval);
        };
        self.remove_published().await;
        self.journal.validation_told = None;
        self.accept_issued(
            order,
            state.certificate.as_deref(),
            state.private_key.as_ref().map(|k| k.expose()),
        )
    }

    /// Removes what validation published for the journal's order (recorded in the
    /// journal, so also after a crash) and forgets it. Called wherever an order
    /// ends: issued, verify_fail, issuance timeout, or a journal started afresh.
    /// After a timeout the order is followed again, so the operator, once told what
    /// to publish, is not told again.
    async fn remove_published(&mut self) {
        validation::unpublish(&self.e.dns, &self.published_from_journal()).await;
        self.journal.dns_record = None;
        self.journal.validation_file = None;
    }

    fn published_from_journal(&self) -> Published {
        if let Some((zone, id)) = &self.journal.dns_record {
            Published::Dns {
                zone: zone.clone(),
                record_id: id.clone(),
            }
        } else if let Some(p) = &self.journal.validation_file {
            Published::File(p.clone())
        } else {
            Published::Nothing
        }
    }

    /// The checks before install: `key`'s certificate for our domain, valid now,
    /// and expiring later than what is installed.
    fn check_against_disk(&self, chain: &Chain, key: &Key) -> Result<(), PkiError> {
        let disk = installed_leaf(&self.cert.output);
        pki::check(
            chain,
            &Expectations {
                spki_sha256: &key.spki_sha256(),
                domain: &self.cert.domain,
                now: Utc::now().timestamp(),
                installed_not_after: disk.as_ref().map(|d| d.not_after),
            },
        )
    }

    /// Checks an issued chain and, when it passes, saves it (and a CAS-made key)
    /// under the state directory and journals `Issued`.
    fn accept_issued(
        &mut self,
        order: i64,
        cert_pem: Option<&str>,
        cas_key: Option<&str>,
    ) -> Result<(), EngineError> {
        let our_key = self.load_key()?;
        let key = match (our_key, cas_key) {
            (Some(k), Some(_)) => {
                warn!(cert = %self.cert.name, order_id = order, "the answer carries a PrivateKey although we sent a CSR; ignored");
                k
            }
            (Some(k), None) => k,
            (None, Some(pem)) => {
                let k = Key::from_pem(pem)?;
                let attempt = self.journal.attempt.clone().unwrap_or_else(new_attempt_id);
                let path = self.state.key_path(&self.cert.name, &attempt);
                store::write_file(&path, k.pem().expose().as_bytes(), FileSpec::private())?;
                self.journal.key_path = Some(path);
                self.journal.key_spki_sha256 = Some(k.spki_sha256());
                k
            }
            (None, None) => {
                self.journal.unusable_orders.push(order);
                self.journal.phase = JournalPhase::Idle;
                let msg = format!(
                    "order {order} was issued for a key this host does not have (renewed elsewhere with its own CSR); not installed"
                );
                self.journal.last_error = Some(msg.clone());
                self.save()?;
                return Err(EngineError::Other(msg));
            }
        };
        let pem = cert_pem.ok_or_else(|| {
            EngineError::Other(format!(
                "order {order} is issued but the answer has no Certificate"
            ))
        })?;
        let checked = Chain::parse(pem)
            .and_then(|chain| self.check_against_disk(&chain, &key).map(|()| chain));
        let chain = match checked {
            Ok(c) => c,
            Err(e) => {
                let msg = format!(
                    "certificate of order {order} refused: {e}; the installed files are unchanged"
                );
                error!(cert = %self.cert.name, order_id = order, reason = %e, "issued certificate refused; old files kept; no new order is placed automatically");
                self.journal.phase = JournalPhase::Rejected;
                self.journal.last_error = Some(msg.clone());
                self.save()?;
                self.report.outcome = Outcome::Blocked;
                return Err(EngineError::Other(msg));
            }
        };
        let attempt = self.journal.attempt.clone().unwrap_or_else(new_attempt_id);
        let issued_path = self.state.issued_path(&self.cert.name, &attempt);
        store::write_file(
            &issued_path,
            chain.fullchain_pem().as_bytes(),
            FileSpec::private(),
        )?;
        self.journal.attempt = Some(attempt);
        self.journal.issued_path = Some(issued_path);
        self.journal.new_order_id = Some(order);
        self.journal.pending_application = None;
        self.journal.phase = JournalPhase::Issued;
        self.save()?;
        info!(cert = %self.cert.name, order_id = order, serial = %chain.leaf.serial_hex, not_after = %chain.leaf.not_after_rfc3339(), "issued certificate passed its checks");
        crash_point(CrashPoint::AfterIssued);
        Ok(())
    }

    /// Installs the saved chain and key; the journal says `Installed` only after
    /// every file and the directory are synced.
    fn install_issued(&mut self) -> Result<(), EngineError> {
        let path = self.journal.issued_path.clone().ok_or_else(|| {
            EngineError::Other("journal at issued has no certificate path".into())
        })?;
        let pem = std::fs::read_to_string(&path).map_err(|source| StoreError::Io {
            path: path.clone(),
            op: "read issued certificate",
            source,
        })?;
        let key = self
            .load_key()?
            .ok_or_else(|| EngineError::Other("journal at issued has no key".into()))?;
        let chain = Chain::parse(&pem)?;
        if chain.leaf.spki_sha256 != key.spki_sha256() {
            return Err(EngineError::Other(
                "saved certificate does not match the saved key".into(),
            ));
        }
        // Only a renewal of ours made a CSR; an adopted order did not.
        let renewed = self.journal.csr_sha256.is_some();
        self.install_chain(&chain, &key, renewed)
    }

    fn install_chain(
        &mut self,
        chain: &Chain,
        key: &Key,
        renewed: bool,
    ) -> Result<(), EngineError> {
        let files = CertificateFiles {
            cert_pem: chain.leaf_pem(),
            chain_pem: chain.chain_pem(),
            fullchain_pem: chain.fullchain_pem(),
            key_pem: key.pem().clone(),
        };
        if self.report.previous_not_after.is_none() {
            self.report.previous_not_after =
                installed_leaf(&self.cert.output).map(|l| l.not_after_rfc3339());
        }
        crash_point(CrashPoint::BeforeInstall);
        let written = store::install(&self.cert.output, &files)?;
        crash_point(CrashPoint::AfterInstallFiles);
        self.journal.phase = JournalPhase::Installed;
        self.journal.installed_sha256 = Some(chain.leaf.sha256.clone());
        self.journal.reload_pending = self.cert.reload.clone();
        if self.journal.reload_pending.is_empty() {
            self.journal.phase = JournalPhase::Idle;
            self.journal.last_success = Some(now_rfc3339());
        }
        self.journal.last_error = None;
        self.save()?;
        crash_point(CrashPoint::AfterInstalled);
        info!(cert = %self.cert.name, serial = %chain.leaf.serial_hex, not_after = %chain.leaf.not_after_rfc3339(), dir = %self.cert.output.dir.display(), "installed");
        self.report.outcome = if renewed {
            Outcome::Renewed
        } else {
            Outcome::Installed
        };
        self.report.message = format!(
            "{} valid until {}",
            if renewed {
                "new certificate"
            } else {
                "the order's certificate"
            },
            chain.leaf.not_after_rfc3339()
        );
        self.report.files = written;
        Ok(())
    }

    /// Installs the certificate an existing issued order holds (first install, or a
    /// renewal made elsewhere whose key CAS generated).
    async fn install_from_order(&mut self, order: i64) -> Result<(), EngineError> {
        let resp = self.e.cas.describe_certificate_state(order).await?;
        let s = resp.body;
        if s.state != CertificateState::Certificate {
            return Err(EngineError::Other(format!(
                "order {order} is {} and holds no certificate yet",
                s.state.as_str()
            )));
        }
        let pem = s.certificate.as_deref().ok_or_else(|| {
            EngineError::Other(format!("order {order} answered without a Certificate"))
        })?;
        let chain = Chain::parse(pem)?;
        // The key: CAS's, when it made it; otherwise ours if the installed key fits.
        let key = match s.private_key.as_ref() {
            Some(k) => Some(Key::from_pem(k.expose())?),
            None => store::read_output_text(&self.cert.output.dir.join(store::KEY_FILE))
                .ok()
                .flatten()
                .and_then(|pem| Key::from_pem(&pem).ok())
                .filter(|k| k.spki_sha256() == chain.leaf.spki_sha256),
        };
        let Some(key) = key else {
            self.journal.unusable_orders.push(order);
            let msg = format!(
                "order {order} holds a certificate for a key this host does not have; not installed"
            );
            self.journal.last_error = Some(msg.clone());
            self.save()?;
            warn!(cert = %self.cert.name, order_id = order, "{msg}");
            return Ok(());
        };
        self.check_against_disk(&chain, &key)?;
        self.journal.source_order_id = Some(order);
        self.report.order_id = Some(order);
        self.install_chain(&chain, &key, false)
    }
}

impl PassReport {
    /// One line per certificate and hook, for people.
    pub fn render(&self, dry_run: bool) -> String {
        let width = self
            .certs
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let mut s = String::new();
        for c in &self.certs {
            let what = if dry_run {
                match &c.plan.action {
                    Action::Nothing => "nothing".to_owned(),
                    Action::Resume { phase } => format!("resume ({phase})"),
                    Action::RerunReload => "reload".to_owned(),
                    Action::Install { order_id } => format!("install (order {order_id})"),
                    Action::Adopt { order_id } => format!("adopt (order {order_id})"),
                    Action::Renew { source_order_id } => format!("renew (order {source_order_id})"),
                    Action::Reapply {
                        source_order_id,
                        product_code,
                    } => format!("reapply ({product_code}, for order {source_order_id})"),
                    Action::Blocked => "blocked".to_owned(),
                }
            } else {
                match c.outcome {
                    Outcome::Unchanged => "unchanged",
                    Outcome::Renewed => "renewed",
                    Outcome::Installed => "installed",
                    Outcome::Reloaded => "reloaded",
                    Outcome::Failed => "FAILED",
                    Outcome::Blocked => "BLOCKED",
                    Outcome::Planned => "planned",
                    Outcome::Waiting => "waiting",
                }
                .to_owned()
            };
            // A message may quote CAS or a hook: one line per certificate regardless.
            s.push_str(&format!(
                "{:<width$}  {:<22}  {}\n",
                c.name,
                what,
                ControlsEscaped(&c.message)
            ));
            match c.served_matches_disk {
                Some(true) => s.push_str(&format!(
                    "{:<width$}  served certificate matches the one on disk\n",
                    ""
                )),
                Some(false) => s.push_str(&format!(
                    "{:<width$}  served certificate DIFFERS from the one on disk\n",
                    ""
                )),
                None => {}
            }
        }
        for h in &self.hooks {
            s.push_str(&format!(
                "hook {} ({}): {}\n",
                h.hook,
                h.certs.join(", "),
                if h.ok {
                    "ok".to_owned()
                } else {
                    format!("FAILED: {}", h.message)
                }
            ));
        }
        s
    }
}
