//! The reload hooks after a pass: which hooks the installed certificates still
//! need ([`pending_hooks`]), each run once for all of them (or once per
//! certificate: `per_certificate`, and the programs of `hooks_dir`), and the
//! journal of each certificate updated with the result.

use std::collections::BTreeMap;
use std::path::Path;

use tracing::error;

use super::engine::Engine;
use super::installed_leaf;
use super::plan::Action;
use super::ports::JournalStore;
use super::report::{HookReport, Outcome, PassReport};
use crate::hooks::{self, DIR_HOOK, HookContext, HookError};
use crate::settings::CertificateConfig;
use crate::store::faults::{CrashPoint, crash_point};
use crate::store::{self, Journal, Phase};

/// Each hook that any of `certs` still needs after an install, with the index in
/// `certs` and the hook context of every certificate that needs it; the journals
/// of the certificates `idle` says this pass left alone are not read.
pub(super) fn pending_hooks(
    state: &dyn JournalStore,
    certs: &[CertificateConfig],
    idle: impl Fn(usize) -> bool,
) -> BTreeMap<String, Vec<(usize, HookContext)>> {
    let mut wanted: BTreeMap<String, Vec<(usize, HookContext)>> = BTreeMap::new();
    for (i, cert) in certs.iter().enumerate() {
        if idle(i) {
            continue;
        }
        let Ok(j) = state.load_journal(&cert.name) else {
            continue;
        };
        if j.reload_pending.is_empty() {
            continue;
        }
        let ctx = hook_context(cert, &j);
        for h in &j.reload_pending {
            wanted.entry(h.clone()).or_default().push((i, ctx.clone()));
        }
    }
    wanted
}

/// What a hook learns about one certificate (its environment).
fn hook_context(cert: &CertificateConfig, j: &Journal) -> HookContext {
    let leaf = installed_leaf(&cert.output);
    HookContext {
        cert_name: cert.name.clone(),
        domain: cert.domain.clone(),
        order_id: j.order_id().map(|o| o.to_string()).unwrap_or_default(),
        cert_path: path_str(&cert.output.dir.join(store::CERT_FILE)),
        key_path: path_str(&cert.output.dir.join(store::KEY_FILE)),
        fullchain_path: path_str(&cert.output.dir.join(store::FULLCHAIN_FILE)),
        chain_path: path_str(&cert.output.dir.join(store::CHAIN_FILE)),
        not_after: leaf
            .as_ref()
            .map(|l| l.not_after_rfc3339())
            .unwrap_or_default(),
        sha256: leaf.map(|l| l.sha256).unwrap_or_default(),
    }
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

impl Engine {
    /// Runs each hook needed by any certificate once (once per certificate when
    /// the hook says `per_certificate`, and for `hooks_dir`, which comes last),
    /// then clears it from their journals.
    pub(super) async fn run_hooks(
        &self,
        state: &dyn JournalStore,
        certs: &[CertificateConfig],
        report: &mut PassReport,
    ) {
        // A plan of nothing means no reload was pending (it would have planned the
        // reload), and nothing of the pass wrote that journal since; with a fleet,
        // the fleet's step may have installed and asked for one all the same.
        let idle = |i: usize| {
            state.fleet().is_none()
                && report.certs.get(i).is_some_and(|r| {
                    r.name == certs[i].name
                        && r.outcome == Outcome::Unchanged
                        && r.plan.action == Action::Nothing
                })
        };
        let mut pending: Vec<_> = pending_hooks(state, certs, idle).into_iter().collect();
        pending.sort_by_key(|(hook, _)| hook == DIR_HOOK);
        for (hook, users) in pending {
            let per_cert =
                hook == DIR_HOOK || self.cfg.hooks.get(&hook).is_some_and(|h| h.per_certificate);
            let groups = if per_cert {
                users.into_iter().map(|u| vec![u]).collect()
            } else {
                vec![users]
            };
            for users in groups {
                self.run_for(state, certs, &hook, &users, report).await;
            }
        }
    }

    /// Runs `hook` once for `users` (merged values) and records the result.
    async fn run_for(
        &self,
        state: &dyn JournalStore,
        certs: &[CertificateConfig],
        hook: &str,
        users: &[(usize, HookContext)],
        report: &mut PassReport,
    ) {
        let names: Vec<String> = users.iter().map(|(i, _)| certs[*i].name.clone()).collect();
        let ctxs: Vec<HookContext> = users.iter().map(|(_, c)| c.clone()).collect();
        let result = self.run_hook(hook, &ctxs).await;
        if let Err(e) = &result {
            error!(hook = %hook, certs = %names.join(","), error = %e, "reload hook failed; it is retried on the next pass without renewing again");
        }
        for (i, _) in users {
            let at = report.index_of(*i, &certs[*i].name);
            apply_hook_result(
                state,
                &certs[*i],
                at,
                hook,
                &result,
                report,
                self.clock.now(),
            );
        }
        report.hooks.push(HookReport {
            hook: hook.to_owned(),
            certs: names,
            ok: result.is_ok(),
            message: match &result {
                Ok(()) => "ok".into(),
                Err(e) => e.to_string(),
            },
        });
    }

    async fn run_hook(&self, hook: &str, ctxs: &[HookContext]) -> Result<(), HookError> {
        let ctx = HookContext::merge(ctxs);
        if hook == DIR_HOOK
            && let Some(dir) = &self.cfg.hooks_dir
        {
            return run_dir(dir, &ctx).await;
        }
        match self.cfg.hooks.get(hook) {
            Some(h) => hooks::run(hook, h, &ctx).await.map(|_| ()),
            None => Err(HookError::Spawn {
                hook: hook.to_owned(),
                program: String::new(),
                source: std::io::Error::other("no such hook in the configuration"),
            }),
        }
    }
}

/// The programs of `hooks_dir` for one certificate, once the directory itself is
/// checked like an output directory (owned by root or the daemon's user, not
/// writable by others, all the way up).
async fn run_dir(dir: &Path, ctx: &HookContext) -> Result<(), HookError> {
    store::safe_fs::check_dir_secure(dir, None).map_err(|e| match e {
        store::StoreError::InsecureDir { path, why, fix } => HookError::Insecure {
            hook: DIR_HOOK.to_owned(),
            path,
            why,
            fix,
        },
        other => HookError::Dir {
            hook: DIR_HOOK.to_owned(),
            path: dir.to_owned(),
            source: std::io::Error::other(other.to_string()),
        },
    })?;
    hooks::dir::run(dir, hooks::HookSpec::DEFAULT_TIMEOUT, ctx)
        .await
        .map(|_| ())
}

/// Records one hook's result in `cert`'s journal and report (`at`, its index): done hooks leave
/// the journal, and the last one brings an installed certificate to `Idle`.
fn apply_hook_result(
    state: &dyn JournalStore,
    cert: &CertificateConfig,
    at: Option<usize>,
    hook: &str,
    result: &Result<(), HookError>,
    report: &mut PassReport,
    now: chrono::DateTime<chrono::Utc>,
) {
    let Ok(mut j) = state.load_journal(&cert.name) else {
        return;
    };
    let ok = result.is_ok();
    if ok {
        j.reload_pending.retain(|h| h != hook);
        if j.reload_pending.is_empty() && j.phase == Phase::Installed {
            j.set_phase(Phase::Idle);
            j.last_success = Some(now);
            j.last_error = None;
        }
    } else {
        j.last_error = result.as_ref().err().map(ToString::to_string);
        if let Some(r) = at.and_then(|i| report.certs.get_mut(i)) {
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
    if ok && j.phase == Phase::Idle {
        crash_point(CrashPoint::AfterReload);
        if let Some(r) = at.and_then(|i| report.certs.get_mut(i))
            && r.outcome == Outcome::Unchanged
        {
            r.outcome = Outcome::Reloaded;
            r.message = "reload re-run and succeeded".into();
        }
    }
}
