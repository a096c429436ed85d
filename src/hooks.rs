//! Reload hooks: commands run as argv (no shell) with a timeout and a fixed
//! environment that names the installed files and never carries a secret.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt as _;

use crate::config::HookConfig;

/// PATH for hooks when the daemon has none (systemd gives services a fixed one).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How much of a failed hook's output is kept for the log.
const OUTPUT_TAIL_BYTES: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("hook {hook}: cannot start {program:?}: {source}")]
    Spawn {
        hook: String,
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("hook {hook}: timed out after {timeout:?} and was killed; output: {tail}")]
    Timeout {
        hook: String,
        timeout: Duration,
        tail: String,
    },
    #[error("hook {hook}: exited with {status}; output: {tail}")]
    Failed {
        hook: String,
        status: String,
        tail: String,
    },
}

/// What a hook is told about the certificates it reloads. With several
/// certificates behind one hook, each variable lists their values comma-separated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookContext {
    pub cert_name: String,
    pub domain: String,
    pub order_id: String,
    pub cert_path: String,
    pub key_path: String,
    pub fullchain_path: String,
    pub chain_path: String,
    pub not_after: String,
    pub sha256: String,
}

impl HookContext {
    /// Joins the contexts of every certificate served by one hook.
    pub fn merge(all: &[HookContext]) -> HookContext {
        let join = |f: fn(&HookContext) -> &str| all.iter().map(f).collect::<Vec<_>>().join(",");
        HookContext {
            cert_name: join(|c| &c.cert_name),
            domain: join(|c| &c.domain),
            order_id: join(|c| &c.order_id),
            cert_path: join(|c| &c.cert_path),
            key_path: join(|c| &c.key_path),
            fullchain_path: join(|c| &c.fullchain_path),
            chain_path: join(|c| &c.chain_path),
            not_after: join(|c| &c.not_after),
            sha256: join(|c| &c.sha256),
        }
    }

    /// The variables of DESIGN §4, and PATH; nothing else reaches the hook.
    pub fn env(&self) -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            (
                "PATH",
                std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.to_owned()),
            ),
            ("CAS_RENEWD_CERT_NAME", self.cert_name.clone()),
            ("CAS_RENEWD_DOMAIN", self.domain.clone()),
            ("CAS_RENEWD_ORDER_ID", self.order_id.clone()),
            ("CAS_RENEWD_CERT_PATH", self.cert_path.clone()),
            ("CAS_RENEWD_KEY_PATH", self.key_path.clone()),
            ("CAS_RENEWD_FULLCHAIN_PATH", self.fullchain_path.clone()),
            ("CAS_RENEWD_CHAIN_PATH", self.chain_path.clone()),
            ("CAS_RENEWD_NOT_AFTER", self.not_after.clone()),
            ("CAS_RENEWD_SHA256", self.sha256.clone()),
        ])
    }
}

fn tail(out: &[u8]) -> String {
    let start = out.len().saturating_sub(OUTPUT_TAIL_BYTES);
    let text = String::from_utf8_lossy(&out[start..]);
    let t: String = text
        .chars()
        .map(|c| {
            if c == '\n' {
                '|'
            } else if c.is_control() {
                ' '
            } else {
                c
            }
        })
        .collect();
    let t = t.trim().trim_matches('|').to_owned();
    if t.is_empty() { "(none)".into() } else { t }
}

/// Runs one hook to completion (or its timeout); returns how long it took.
pub async fn run(name: &str, hook: &HookConfig, ctx: &HookContext) -> Result<Duration, HookError> {
    let started = Instant::now();
    let (program, args) = hook.command.split_first().ok_or_else(|| HookError::Spawn {
        hook: name.to_owned(),
        program: String::new(),
        source: std::io::Error::other("empty command"),
    })?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env_clear()
        .envs(ctx.env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| HookError::Spawn {
            hook: name.to_owned(),
            program: program.clone(),
            source,
        })?;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let collect = async {
        let mut out = Vec::new();
        let mut err = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut out).await;
        }
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut err).await;
        }
        out.extend_from_slice(&err);
        out
    };
    let waited = tokio::time::timeout(hook.timeout, async {
        let output = collect.await;
        (child.wait().await, output)
    })
    .await;
    match waited {
        Err(_) => {
            // kill_on_drop ends the child when `child` goes out of scope.
            Err(HookError::Timeout {
                hook: name.to_owned(),
                timeout: hook.timeout,
                tail: "(killed)".into(),
            })
        }
        Ok((Ok(status), output)) if status.success() => {
            tracing::info!(hook = name, duration_ms = started.elapsed().as_millis() as u64, output = %tail(&output), "hook ran");
            Ok(started.elapsed())
        }
        Ok((status, output)) => Err(HookError::Failed {
            hook: name.to_owned(),
            status: match status {
                Ok(s) => s.to_string(),
                Err(e) => e.to_string(),
            },
            tail: tail(&output),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(cmd: &[&str], timeout_ms: u64) -> HookConfig {
        HookConfig {
            command: cmd.iter().map(|s| (*s).to_owned()).collect(),
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    fn ctx() -> HookContext {
        HookContext {
            cert_name: "www".into(),
            domain: "www.example.com".into(),
            sha256: "AB".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn hooks_get_only_the_documented_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dump = dir.path().join("env");
        let script = format!("env > {}", dump.display());
        run("dump", &hook(&["/bin/sh", "-c", &script], 5000), &ctx())
            .await
            .expect("runs");
        let env = std::fs::read_to_string(&dump).expect("dump");
        assert!(env.contains("CAS_RENEWD_CERT_NAME=www\n"), "{env}");
        assert!(env.contains("CAS_RENEWD_DOMAIN=www.example.com\n"));
        for line in env.lines() {
            let name = line.split('=').next().unwrap_or_default();
            assert!(
                name.starts_with("CAS_RENEWD_") || ["PATH", "PWD", "SHLVL", "_"].contains(&name),
                "unexpected variable {line}"
            );
            assert!(!name.starts_with("ALIBABA_CLOUD_"));
        }
    }

    #[tokio::test]
    async fn failures_and_timeouts_are_reported_with_output() {
        let err = run(
            "bad",
            &hook(&["/bin/sh", "-c", "echo broken config >&2; exit 3"], 5000),
            &ctx(),
        )
        .await
        .expect_err("fails");
        let shown = err.to_string();
        assert!(
            shown.contains("exit status: 3") && shown.contains("broken config"),
            "{shown}"
        );
        let err = run("slow", &hook(&["/bin/sleep", "5"], 200), &ctx())
            .await
            .expect_err("times out");
        assert!(matches!(err, HookError::Timeout { .. }), "{err}");
        let err = run("missing", &hook(&["/nonexistent/program"], 200), &ctx())
            .await
            .expect_err("spawn");
        assert!(matches!(err, HookError::Spawn { .. }), "{err}");
    }

    #[test]
    fn merged_context_lists_every_certificate() {
        let mut b = ctx();
        b.cert_name = "api".into();
        assert_eq!(HookContext::merge(&[ctx(), b]).cert_name, "www,api");
    }
}
