//! `cas-renewd run`: passes on a cron schedule with jitter, signals (TERM/INT stop,
//! HUP reload, USR1 pass now or a command's request), systemd notifications and
//! watchdog, and the metrics and health endpoint.
//!
//! [`run`] owns the process-wide parts (signals, the state lock); a [`Daemon`]
//! owns the rest and turns each event of its loop into one small method.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinHandle};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::renew::{Engine, PassReport};
use crate::store::StateDir;

mod engine;
mod fleet;
mod http;
pub mod listener;
pub mod reload_status;
pub mod requests;
mod schedule;
mod signals;

pub use schedule::ScheduleError;
use schedule::{Schedule, Trigger};
use signals::Signal;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot serve metrics on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error("signals: {0}")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Engine(#[from] crate::renew::EngineError),
}

/// Runs until SIGTERM or SIGINT; returns after a graceful stop.
pub async fn run(config_path: PathBuf, cfg: Config) -> Result<(), DaemonError> {
    let serving = Arc::new(AtomicBool::new(false));
    let mut signals = signals::forward(serving.clone()).map_err(DaemonError::Signals)?;
    let state = StateDir::open(&cfg.state_dir)?;
    let _lock = state.lock()?;
    requests::write_pid(state.root())?;
    crate::store::repair::at_start(&state, &cfg.certificates);
    let (mut daemon, mut triggers) = Daemon::start(config_path, cfg).await?;
    // From here on the loop reads TERM and INT and stops gracefully.
    serving.store(true, Ordering::SeqCst);
    daemon.serve(&mut signals, &mut triggers).await;
    daemon.shutdown().await;
    requests::remove_pid(state.root());
    Ok(())
}

/// The running daemon: its configuration, engine, endpoints, schedule, and the
/// one pass that may be running with the one that waits for it.
struct Daemon {
    config_path: PathBuf,
    cfg: Config,
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    health: Arc<http::Health>,
    schedule: Schedule,
    server: JoinHandle<()>,
    /// The next pass to start once none is running (several requests make one).
    pending: Option<Trigger>,
    pass: Option<JoinHandle<Option<PassReport>>>,
    /// Commands' requests (`renew`, `import`) claimed and not yet run.
    requests: VecDeque<requests::Request>,
    /// The running pass is a request's: it leaves the schedule and backoff alone.
    running_request: bool,
    /// Passes in a row that failed or left a certificate failed, blocked or a hook
    /// failing; 0 once one succeeds.
    failures: u32,
    /// When the backoff retry is due, for the status line.
    retry_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Where each reload's outcome goes for `cas-renewd reload`.
    reloads: reload_status::Recorder,
    /// The fleet's etcd watch (`fleet:` only).
    fleet_watch: Option<JoinHandle<()>>,
}

impl Daemon {
    async fn start(
        config_path: PathBuf,
        cfg: Config,
    ) -> Result<(Daemon, mpsc::Receiver<Trigger>), DaemonError> {
        let metrics = Metrics::new();
        let engine = engine::build(cfg.clone(), metrics.clone())?;
        let health = http::Health::new(metrics.clone());
        let server = http::start(cfg.metrics.listen, health.clone())
            .await
            .map_err(|source| DaemonError::Listen {
                addr: cfg.metrics.listen,
                source,
            })?;
        let (schedule, triggers) = Schedule::start(&cfg.schedule.cron, cfg.schedule.jitter).await?;
        metrics.refresh_disk(&cfg.certificates);
        metrics.init_hooks(cfg.hooks.keys().map(String::as_str));
        let fleet_watch = fleet::watch(&cfg, schedule.sender());
        let daemon = Daemon {
            fleet_watch,
            pending: cfg.schedule.run_at_start.then_some(Trigger::Start),
            config_path,
            cfg,
            engine,
            metrics,
            health,
            schedule,
            server,
            pass: None,
            requests: VecDeque::new(),
            running_request: false,
            failures: 0,
            retry_at: None,
            reloads: reload_status::Recorder::new(reload_status::runtime_dir()),
        };
        notify(&[
            NotifyState::Ready,
            NotifyState::Status(&daemon.status_line()),
        ]);
        Ok((daemon, triggers))
    }

    /// The event loop, until a stop signal.
    async fn serve(
        &mut self,
        signals: &mut mpsc::Receiver<Signal>,
        triggers: &mut mpsc::Receiver<Trigger>,
    ) {
        let watchdog = sd_notify::watchdog_enabled();
        let mut wd_tick =
            tokio::time::interval(watchdog.map_or(Duration::from_secs(3600), |d| d / 2));
        loop {
            self.start_pending_pass();
            tokio::select! {
                sig = signals.recv() => match sig {
                    Some(s) => if self.on_signal(s).await.is_break() { break },
                    None => break,
                },
                Some(t) = triggers.recv() => self.on_trigger(t),
                done = async { self.pass.as_mut().expect("guarded by the select condition").await }, if self.pass.is_some() => {
                    self.on_pass_done(done);
                }
                _ = wd_tick.tick(), if watchdog.is_some() => notify(&[NotifyState::Watchdog]),
            }
        }
    }

    fn start_pending_pass(&mut self) {
        if self.pass.is_some() {
            return;
        }
        if let Some(r) = self.requests.pop_front() {
            self.running_request = true;
            self.pass = Some(engine::start_request(self.engine.clone(), r));
            notify(&[NotifyState::Status(&self.status_line())]);
        } else if let Some(t) = self.pending.take() {
            // The fleet's install pass renews nothing: like a request, it leaves
            // the schedule and the backoff alone.
            self.running_request = t == Trigger::Fleet;
            self.pass = Some(engine::start_pass(
                self.engine.clone(),
                t,
                self.cfg.schedule.jitter,
            ));
            notify(&[NotifyState::Status(&self.status_line())]);
        }
    }

    async fn on_signal(&mut self, sig: Signal) -> ControlFlow<()> {
        match sig {
            Signal::Reload => self.reload().await,
            Signal::PassNow => {
                let claimed = requests::claim_all(&self.cfg.state_dir);
                if claimed.is_empty() {
                    info!("SIGUSR1: pass requested");
                    self.pending = Some(Trigger::Signal);
                }
                for r in claimed {
                    info!(cert = %r.cert, request = %r.id, "SIGUSR1: a request from the command line");
                    self.requests.push_back(r);
                }
            }
            Signal::Stop(s) => {
                info!(signal = s, "stopping");
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }

    /// SIGHUP: the new configuration takes over only if it loads and its engine
    /// builds; otherwise the previous one stays in force.
    async fn reload(&mut self) {
        let usec = NotifyState::monotonic_usec_now().unwrap_or(NotifyState::MonotonicUsec(0));
        notify(&[NotifyState::Reloading, usec]);
        let outcome = match self.load_new() {
            Ok((new, engine)) => {
                self.take_over(new, engine).await;
                Ok(())
            }
            Err(e) => {
                self.metrics.config_reload_ok.set(0.0);
                Err(e)
            }
        };
        self.reloads.record(&outcome);
        notify(&[NotifyState::Ready, NotifyState::Status(&self.status_line())]);
    }

    /// The new configuration and its engine, or why they cannot be used.
    fn load_new(&self) -> Result<(Config, Arc<Engine>), String> {
        let new = match Config::load(&self.config_path) {
            Ok(c) => c,
            Err(e) => {
                error!(error = %e, "invalid configuration on reload; the previous one stays in force");
                return Err(e.to_string());
            }
        };
        match engine::build(new.clone(), self.metrics.clone()) {
            Ok(engine) => Ok((new, engine)),
            Err(e) => {
                error!(error = %e, "reloaded configuration cannot be used; the previous one stays in force");
                Err(format!("the configuration cannot be used: {e}"))
            }
        }
    }

    async fn take_over(&mut self, new: Config, engine: Arc<Engine>) {
        if new.schedule.cron != self.cfg.schedule.cron
            && let Err(e) = self.schedule.replace(&new.schedule.cron).await
        {
            error!(error = %e, "cannot reschedule; keeping no cron job until the next reload");
        }
        if new.metrics.listen != self.cfg.metrics.listen {
            warn!("metrics.listen changed; it takes effect after a restart");
        }
        // The same warnings as at start: a reload is when a fix is checked.
        for w in &new.warnings {
            warn!("{w}");
        }
        self.metrics.refresh_disk(&new.certificates);
        self.metrics
            .init_hooks(new.hooks.keys().map(String::as_str));
        if let Some(w) = self.fleet_watch.take() {
            w.abort();
        }
        self.fleet_watch = fleet::watch(&new, self.schedule.sender());
        self.engine = engine;
        self.cfg = new;
        self.metrics.config_reload_ok.set(1.0);
        info!(path = %self.config_path.display(), "configuration reloaded");
    }

    fn on_trigger(&mut self, t: Trigger) {
        if self.pass.is_some() {
            info!(trigger = ?t, "a pass is running; this one runs after it");
        }
        // Any pass installs what the fleet issued: the fleet's own only when no
        // other is pending.
        self.pending = match self.pending {
            None | Some(Trigger::Fleet) => Some(t),
            p => p,
        };
    }

    fn on_pass_done(&mut self, done: Result<Option<PassReport>, JoinError>) {
        self.pass = None;
        let report = done.ok().flatten();
        if std::mem::take(&mut self.running_request) {
            // One certificate on an operator's word: not a pass whose result
            // decides the schedule; an order it left in progress is followed.
            if report.as_ref().is_some_and(engine::orders_in_progress) {
                self.schedule.follow_up(self.cfg.renewal.poll_max_interval);
            }
            notify(&[NotifyState::Status(&self.status_line())]);
            return;
        }
        self.health.pass_ran.store(true, Ordering::Relaxed);
        if let Some(report) = &report
            && engine::orders_in_progress(report)
        {
            let after = self.cfg.renewal.poll_max_interval;
            info!(after = %humantime::format_duration(after), "orders still in progress; following up");
            self.schedule.follow_up(after);
        }
        let ok = report.as_ref().is_some_and(PassReport::ok);
        if ok {
            self.back_to_cron();
        } else {
            self.retry_later();
        }
        self.metrics.record_pass_result(ok, self.failures);
        notify(&[NotifyState::Status(&self.status_line())]);
    }

    /// After a failed or incomplete pass: the next one comes with backoff, not at
    /// the next cron time (by default the next day).
    fn retry_later(&mut self) {
        self.failures = self.failures.saturating_add(1);
        let s = &self.cfg.schedule;
        let now = chrono::Utc::now();
        let cron = schedule::next_fire(&s.cron, now);
        self.retry_at = schedule::next_retry(self.failures, now, cron, s.retry_after, s.retry_max);
        match self.retry_at {
            Some(at) => {
                self.schedule
                    .retry_after((at - now).to_std().unwrap_or_default());
                warn!(
                    failures = self.failures,
                    next_retry = %at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    "pass failed or incomplete; retrying with backoff"
                );
            }
            None => {
                self.schedule.cancel_retry();
                warn!(
                    failures = self.failures,
                    next_pass = %cron.map_or("?".into(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                    "pass failed or incomplete; the next scheduled pass comes before a retry would"
                );
            }
        }
    }

    /// After a good pass: no retry is pending; the cron schedule alone decides.
    fn back_to_cron(&mut self) {
        if self.failures > 0 {
            info!(
                after_failures = self.failures,
                "pass succeeded; back to the cron schedule"
            );
        }
        self.failures = 0;
        self.retry_at = None;
        self.schedule.cancel_retry();
    }

    async fn shutdown(mut self) {
        notify(&[NotifyState::Stopping]);
        if let Some(p) = self.pass.take() {
            // Every journal and file write is synchronous and atomic, so stopping the
            // pass at its next await point cannot leave a half-written file; the
            // journal resumes the renewal at the next start.
            p.abort();
            let _ = p.await;
        }
        if let Some(w) = self.fleet_watch.take() {
            w.abort();
        }
        self.schedule.shutdown().await;
        self.server.abort();
        info!("stopped");
    }

    /// The systemd status line: whether a pass runs, the next scheduled one, and
    /// the installed certificate that expires first.
    fn status_line(&self) -> String {
        let nearest = match engine::nearest_expiry(&self.cfg) {
            Some((name, day)) => format!("nearest expiry {name} {day}"),
            None => "no certificate installed yet".into(),
        };
        let retry = match self.retry_at {
            Some(t) => format!(
                "{} failed pass(es), retry {}; ",
                self.failures,
                t.format("%Y-%m-%d %H:%M UTC")
            ),
            None => String::new(),
        };
        format!(
            "{}{retry}next pass {}; {nearest}",
            if self.pass.is_some() {
                "pass running; "
            } else {
                ""
            },
            schedule::next_fire_text(&self.cfg.schedule.cron),
        )
    }
}

fn notify(states: &[NotifyState<'_>]) {
    // Outside systemd NOTIFY_SOCKET is unset and this does nothing.
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "cannot notify systemd");
    }
}
