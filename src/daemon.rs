//! `cas-renewd run`: passes on a cron schedule with jitter, signals (TERM/INT stop,
//! HUP reload, USR1 pass now), systemd notifications and watchdog, and the
//! metrics and health endpoint.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use chrono::Utc;
use rand::Rng;
use sd_notify::NotifyState;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_cron_scheduler::{Job, JobScheduler};
use tracing::{error, info, warn};

use crate::cas::credentials::{CredentialsProvider, Environment};
use crate::config::{self, Config};
use crate::metrics::Metrics;
use crate::renew::{Engine, Outcome, PassOptions, PassReport, installed_leaf};
use crate::store::StateDir;

pub mod listener;

/// How long one pass follows unissued orders before it moves on; the daemon
/// comes back for them after `poll_max_interval`.
const FOLLOW_BUDGET: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot serve metrics on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("scheduler: {0}")]
    Scheduler(String),
    #[error("signals: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Engine(#[from] crate::renew::EngineError),
}

/// Why a pass starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Start,
    Cron,
    Signal,
    FollowUp,
}

/// What the health endpoints report.
struct Health {
    metrics: Arc<Metrics>,
    config_loaded: AtomicBool,
    pass_ran: AtomicBool,
}

async fn metrics_handler(
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

fn notify(states: &[NotifyState<'_>]) {
    // Outside systemd NOTIFY_SOCKET is unset and this does nothing.
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "cannot notify systemd");
    }
}

fn status_line(cfg: &Config, running: bool) -> String {
    let next = config::next_fires(&cfg.schedule.cron, Utc::now(), 1)
        .first()
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| "?".into());
    let nearest = cfg
        .certificates
        .iter()
        .filter_map(|c| installed_leaf(&c.output).map(|l| (l.not_after, c.name.clone())))
        .min();
    let nearest = match nearest {
        Some((t, name)) => format!(
            "nearest expiry {name} {}",
            chrono::DateTime::from_timestamp(t, 0)
                .map(|d| d.format("%Y-%m-%d").to_string())
                .unwrap_or_default()
        ),
        None => "no certificate installed yet".into(),
    };
    format!(
        "{}next pass {next}; {nearest}",
        if running { "pass running; " } else { "" }
    )
}

fn build_engine(
    cfg: Config,
    metrics: Arc<Metrics>,
) -> Result<Arc<Engine>, crate::renew::EngineError> {
    let creds =
        CredentialsProvider::resolve(cfg.credentials.as_ref(), &Environment::from_process())?;
    Ok(Arc::new(Engine::with_metrics(
        cfg,
        Arc::new(creds),
        metrics,
    )?))
}

async fn schedule(
    sched: &JobScheduler,
    cron: &str,
    tx: mpsc::Sender<Trigger>,
) -> Result<uuid::Uuid, DaemonError> {
    let job = Job::new_async(cron, move |_, _| {
        let tx = tx.clone();
        Box::pin(async move {
            let _ = tx.send(Trigger::Cron).await;
        })
    })
    .map_err(|e| DaemonError::Scheduler(format!("{cron:?}: {e}")))?;
    sched
        .add(job)
        .await
        .map_err(|e| DaemonError::Scheduler(e.to_string()))
}

/// Forwards signals from a signal-hook thread into the async loop. Until that loop
/// reads them (`serving`), TERM and INT end the process from this thread: start-up
/// may be busy, and a signal queued where nobody reads is an ignored SIGTERM.
/// Every write is atomic, so stopping there loses nothing.
fn signals(serving: Arc<AtomicBool>) -> Result<mpsc::Receiver<i32>, DaemonError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
    let mut sigs = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])
        .map_err(DaemonError::Signals)?;
    let (tx, rx) = mpsc::channel(16);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for s in sigs.forever() {
                if matches!(s, SIGTERM | SIGINT) && !serving.load(Ordering::SeqCst) {
                    eprintln!("cas-renewd: signal {s} during start-up; stopped");
                    std::process::exit(0);
                }
                if tx.blocking_send(s).is_err() {
                    break;
                }
            }
        })
        .map_err(DaemonError::Signals)?;
    Ok(rx)
}

/// Runs until SIGTERM or SIGINT; returns after a graceful stop.
pub async fn run(config_path: PathBuf, cfg: Config) -> Result<(), DaemonError> {
    let serving = Arc::new(AtomicBool::new(false));
    let mut sig_rx = signals(serving.clone())?;
    let metrics = Metrics::new();
    let state = StateDir::open(&cfg.state_dir)?;
    let _lock = state.lock()?;
    crate::store::repair::at_start(&state, &cfg.certificates);
    let mut engine = build_engine(cfg.clone(), metrics.clone())?;
    let health = Arc::new(Health {
        metrics: metrics.clone(),
        config_loaded: AtomicBool::new(true),
        pass_ran: AtomicBool::new(false),
    });
    let listener = tokio::net::TcpListener::bind(cfg.metrics.listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: cfg.metrics.listen,
            source,
        })?;
    let bound = listener.local_addr().unwrap_or(cfg.metrics.listen);
    let app = axum::Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(health.clone());
    let server = tokio::spawn(listener::serve(listener, app, listener::Limits::default()));
    info!(addr = %bound, "metrics on http://{bound}/metrics");
    if let Some(w) = listener::exposure_warning(bound) {
        warn!("{w}");
    }

    let (tx, mut trig_rx) = mpsc::channel::<Trigger>(16);
    let mut sched = JobScheduler::new()
        .await
        .map_err(|e| DaemonError::Scheduler(e.to_string()))?;
    let mut job = schedule(&sched, &cfg.schedule.cron, tx.clone()).await?;
    sched
        .start()
        .await
        .map_err(|e| DaemonError::Scheduler(e.to_string()))?;
    let fires: Vec<String> = config::next_fires(&cfg.schedule.cron, Utc::now(), 3)
        .iter()
        .map(|t| t.to_rfc3339())
        .collect();
    info!(cron = %cfg.schedule.cron, next = ?fires, jitter = %humantime::format_duration(cfg.schedule.jitter), "scheduled");

    let mut cfg = cfg;
    metrics.refresh_disk(&cfg.certificates);
    notify(&[
        NotifyState::Ready,
        NotifyState::Status(&status_line(&cfg, false)),
    ]);
    let watchdog = sd_notify::watchdog_enabled();
    let mut wd_tick = tokio::time::interval(watchdog.map_or(Duration::from_secs(3600), |d| d / 2));

    let mut pass: Option<JoinHandle<Option<PassReport>>> = None;
    let mut pending: Option<Trigger> = cfg.schedule.run_at_start.then_some(Trigger::Start);
    serving.store(true, Ordering::SeqCst);
    loop {
        if pass.is_none()
            && let Some(t) = pending.take()
        {
            pass = Some(start_pass(engine.clone(), t, cfg.schedule.jitter));
            notify(&[NotifyState::Status(&status_line(&cfg, true))]);
        }
        tokio::select! {
            sig = sig_rx.recv() => match sig {
                Some(signal_hook::consts::SIGHUP) => {
                    let usec = NotifyState::monotonic_usec_now().unwrap_or(NotifyState::MonotonicUsec(0));
                    notify(&[NotifyState::Reloading, usec]);
                    match Config::load(&config_path) {
                        Ok(new) => match build_engine(new.clone(), metrics.clone()) {
                            Ok(e) => {
                                if new.schedule.cron != cfg.schedule.cron {
                                    let _ = sched.remove(&job).await;
                                    match schedule(&sched, &new.schedule.cron, tx.clone()).await {
                                        Ok(j) => job = j,
                                        Err(e) => error!(error = %e, "cannot reschedule; keeping no cron job until the next reload"),
                                    }
                                }
                                if new.metrics.listen != cfg.metrics.listen {
                                    warn!("metrics.listen changed; it takes effect after a restart");
                                }
                                // The same warnings as at start: a reload is when a fix is checked.
                                for w in &new.warnings {
                                    warn!("{w}");
                                }
                                engine = e;
                                cfg = new;
                                metrics.config_reload_ok.set(1.0);
                                info!(path = %config_path.display(), "configuration reloaded");
                            }
                            Err(e) => {
                                metrics.config_reload_ok.set(0.0);
                                error!(error = %e, "reloaded configuration cannot be used; the previous one stays in force");
                            }
                        },
                        Err(e) => {
                            metrics.config_reload_ok.set(0.0);
                            error!(error = %e, "invalid configuration on reload; the previous one stays in force");
                        }
                    }
                    notify(&[NotifyState::Ready, NotifyState::Status(&status_line(&cfg, pass.is_some()))]);
                }
                Some(signal_hook::consts::SIGUSR1) => {
                    info!("SIGUSR1: pass requested");
                    pending = Some(Trigger::Signal);
                }
                Some(s) => {
                    info!(signal = s, "stopping");
                    break;
                }
                None => break,
            },
            Some(t) = trig_rx.recv() => {
                if pass.is_some() {
                    info!(trigger = ?t, "a pass is running; this one runs after it");
                }
                pending = pending.or(Some(t));
            }
            done = async { pass.as_mut().expect("guarded by the select condition").await }, if pass.is_some() => {
                pass = None;
                health.pass_ran.store(true, Ordering::Relaxed);
                if let Ok(Some(report)) = done
                    && report.certs.iter().any(|c| c.outcome == Outcome::Waiting) {
                        let tx = tx.clone();
                        let after = cfg.renewal.poll_max_interval;
                        info!(after = %humantime::format_duration(after), "orders still in progress; following up");
                        tokio::spawn(async move {
                            tokio::time::sleep(after).await;
                            let _ = tx.send(Trigger::FollowUp).await;
                        });
                    }
                notify(&[NotifyState::Status(&status_line(&cfg, false))]);
            }
            _ = wd_tick.tick(), if watchdog.is_some() => notify(&[NotifyState::Watchdog]),
        }
    }

    notify(&[NotifyState::Stopping]);
    if let Some(p) = pass {
        // Every journal and file write is synchronous and atomic, so stopping the
        // pass at its next await point cannot leave a half-written file; the journal
        // resumes the renewal at the next start.
        p.abort();
        let _ = p.await;
    }
    let _ = sched.shutdown().await;
    server.abort();
    info!("stopped");
    Ok(())
}

fn start_pass(
    engine: Arc<Engine>,
    trigger: Trigger,
    jitter: Duration,
) -> JoinHandle<Option<PassReport>> {
    tokio::spawn(async move {
        if trigger == Trigger::Cron && !jitter.is_zero() {
            let wait = Duration::from_secs_f64(rand::rng().random::<f64>() * jitter.as_secs_f64());
            info!(wait = %humantime::format_duration(Duration::from_secs(wait.as_secs())), "jitter before the scheduled pass");
            tokio::time::sleep(wait).await;
        }
        info!(trigger = ?trigger, "pass starts");
        let opts = PassOptions {
            follow_budget: Some(FOLLOW_BUDGET),
            ..PassOptions::default()
        };
        match engine.pass(&opts).await {
            Ok(r) => {
                for c in &r.certs {
                    info!(cert = %c.name, outcome = ?c.outcome, message = %c.message, "pass result");
                }
                Some(r)
            }
            Err(e) => {
                error!(error = %e, "pass failed");
                None
            }
        }
    })
}
