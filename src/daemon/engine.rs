//! Every call the daemon makes into the renewal engine, in one place: building
//! it from a configuration, running a pass in a task, and reading what a pass or
//! the installed files say.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{error, info};

use super::requests;
use super::schedule::{Trigger, jitter_wait};
use crate::announce::Notifying;
use crate::cas::credentials::{CredentialsProvider, Environment};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pki::Key;
use crate::renew::{Engine, EngineError, Outcome, PassOptions, PassReport, installed_leaf};

/// How long one pass follows unissued orders before it moves on; the daemon
/// comes back for them after `poll_max_interval`.
const FOLLOW_BUDGET: Duration = Duration::from_secs(600);

/// The engine for `cfg`, reporting into `metrics` and to the notification channels.
pub(super) fn build(cfg: Config, metrics: Arc<Metrics>) -> Result<Arc<Engine>, EngineError> {
    let creds =
        CredentialsProvider::resolve(cfg.credentials.as_ref(), &Environment::from_process())?;
    let observer = Notifying::start(&cfg.notify, &cfg.state_dir, metrics);
    Ok(Arc::new(Engine::with_observer(
        cfg,
        Arc::new(creds),
        observer,
    )?))
}

/// One pass in a task of its own, after the jitter a scheduled pass waits. The
/// report is `None` when the pass failed as a whole (logged here).
pub(super) fn start_pass(
    engine: Arc<Engine>,
    trigger: Trigger,
    jitter: Duration,
) -> JoinHandle<Option<PassReport>> {
    tokio::spawn(async move {
        let wait = jitter_wait(trigger, jitter);
        if !wait.is_zero() {
            info!(wait = %humantime::format_duration(Duration::from_secs(wait.as_secs())), "jitter before the scheduled pass");
            tokio::time::sleep(wait).await;
        }
        info!(trigger = ?trigger, "pass starts");
        let opts = PassOptions {
            follow_budget: Some(FOLLOW_BUDGET),
            ..PassOptions::default()
        };
        let result = if trigger == Trigger::Fleet {
            engine.fleet_install_pass().await
        } else {
            engine.pass(&opts).await
        };
        // The fleet's install pass is not a pass of the schedule: `status` keeps
        // reporting the last real one.
        if trigger != Trigger::Fleet {
            crate::status::last_pass::record(
                &engine.config().state_dir,
                &crate::status::LastPass::of(result.as_ref()),
            );
        }
        match result {
            Ok(r) => {
                for c in &r.certs {
                    info!(cert = %c.name, outcome = ?c.outcome, message = %c.message, "pass result");
                }
                Some(r)
            }
            Err(e) => {
                error!(error = %e, "pass failed");
                engine.observer().pass_failed(&e.to_string());
                None
            }
        }
    })
}

/// Whether the pass left an order CAS has not issued yet.
pub(super) fn orders_in_progress(report: &PassReport) -> bool {
    report.certs.iter().any(|c| c.outcome == Outcome::Waiting)
}

/// The installed certificate that expires first: its name and the day (UTC).
pub(super) fn nearest_expiry(cfg: &Config) -> Option<(String, String)> {
    let (t, name) = cfg
        .certificates
        .iter()
        .filter_map(|c| installed_leaf(&c.output).map(|l| (l.not_after, c.name.clone())))
        .min()?;
    let day = chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default();
    Some((name, day))
}

/// A command's request (see [`super::requests`]) in a task of its own: a pass of
/// that certificate only (`renew`), or its import; the outcome goes where the
/// command waits for it.
pub(super) fn start_request(
    engine: Arc<Engine>,
    req: requests::Request,
) -> JoinHandle<Option<PassReport>> {
    tokio::spawn(async move {
        info!(cert = %req.cert, request = %req.id, "a request from the command line starts");
        let (result, wait) = match &req.what {
            requests::What::Renew { force, wait_secs } => {
                let wait = Duration::from_secs(*wait_secs);
                let opts = PassOptions {
                    only: Some(req.cert.clone()),
                    force: *force,
                    follow_budget: Some(wait),
                    dry_run: false,
                };
                let result = engine.pass(&opts).await;
                crate::status::last_pass::record(
                    &engine.config().state_dir,
                    &crate::status::LastPass::of(result.as_ref()),
                );
                (result, Some(wait))
            }
            requests::What::Import { key_pem } => {
                let result = match Key::from_pem(key_pem.expose()) {
                    Ok(key) => engine.import(&req.cert, &key).await,
                    Err(e) => Err(e.into()),
                };
                (result, None)
            }
        };
        let outcome = match &result {
            Ok(r) => {
                let note = wait.and_then(|w| r.in_progress_note(w));
                requests::Outcome {
                    id: req.id.clone(),
                    text: format!("{}{}", r.render(false), note.as_deref().unwrap_or("")),
                    error: None,
                    failed: !r.ok(),
                    in_progress: note.is_some(),
                }
            }
            Err(e) => {
                error!(cert = %req.cert, error = %e, "request failed");
                // As `renew` without a daemon; a refused import is only the operator's.
                if matches!(req.what, requests::What::Renew { .. }) {
                    engine.observer().pass_failed(&e.to_string());
                }
                requests::Outcome {
                    id: req.id.clone(),
                    text: String::new(),
                    error: Some(e.to_string()),
                    failed: true,
                    in_progress: false,
                }
            }
        };
        requests::record(&engine.config().state_dir, &req.cert, &outcome);
        result.ok()
    })
}
