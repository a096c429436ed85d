//! Reload hooks: commands run as argv (no shell) with a timeout and a fixed
//! environment that names the installed files and never carries a secret. Each
//! hook runs in a process group of its own, killed whole on timeout, and only a
//! bounded tail of its output is kept. [`dir`] lists the programs of a hooks
//! directory (`hooks_dir`), run like certbot's `renewal-hooks/deploy`.

pub mod dir;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt as _};

/// PATH for hooks when the daemon has none (systemd gives services a fixed one).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How much of each output stream (stdout, stderr) is kept for the log.
pub const OUTPUT_TAIL_BYTES: usize = 8 * 1024;
/// How long output is still read after the hook exited, for what a background
/// child it left keeps writing; then the pipes are dropped.
const DRAIN_GRACE: Duration = Duration::from_millis(250);

/// A reload hook: the command, how long it may run and whether it runs once per
/// certificate (`hooks.<name>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookSpec {
    pub command: Vec<String>,
    pub timeout: Duration,
    /// Once per certificate with single values, instead of once for all the
    /// certificates a pass installed with comma-joined values.
    pub per_certificate: bool,
}

impl HookSpec {
    /// How long a hook may run when its configuration does not say.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
}

/// The name under which the programs of `hooks_dir` wait in a certificate's
/// `reload` list and journal. Parentheses cannot occur in a configured hook name
/// (`[a-z0-9_-]+`), so it never collides with one.
pub const DIR_HOOK: &str = "(hooks_dir)";

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// A certificate names a hook that is not defined; configuration validation
    /// refuses that, so only a configuration changed under a running pass gets here.
    #[error("hook {hook}: no such hook in the configuration")]
    Unknown { hook: String },
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
    /// A hooks directory, or a program in it, that someone other than root or
    /// the daemon's user could change, or that is not a plain file.
    #[error("hook {hook}: {path} {why}; not run ({fix})")]
    Insecure {
        hook: String,
        path: std::path::PathBuf,
        why: String,
        fix: String,
    },
    #[error("hook {hook}: cannot read the hooks directory {path}: {source}")]
    Dir {
        hook: String,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
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

/// Keeps the last `cap` bytes written to it, so a hook that floods its output
/// costs a fixed amount of memory.
#[derive(Debug)]
struct Tail {
    buf: Vec<u8>,
    cap: usize,
    /// Bytes read in all, kept or not.
    total: u64,
}

impl Tail {
    fn new(cap: usize) -> Self {
        Tail {
            buf: Vec::with_capacity(cap),
            cap,
            total: 0,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        if chunk.len() >= self.cap {
            self.buf.clear();
            self.buf.extend_from_slice(&chunk[chunk.len() - self.cap..]);
            return;
        }
        let overflow = (self.buf.len() + chunk.len()).saturating_sub(self.cap);
        self.buf.drain(..overflow);
        self.buf.extend_from_slice(chunk);
    }
}

/// Reads `stream` to its end into `tail`; a read error ends the reading.
async fn pump<R: AsyncRead + Unpin>(stream: Option<R>, tail: &mut Tail) {
    let Some(mut stream) = stream else { return };
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => tail.push(&chunk[..n]),
        }
    }
}

/// Kills the hook's whole process group when dropped while armed: on a timeout,
/// and when the pass running the hook is cancelled (daemon stop).
struct GroupKiller(Option<rustix::process::Pid>);

impl GroupKiller {
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            // ESRCH (the group is already gone) is the outcome wanted.
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One line for the log from a stream's retained tail.
fn tail(out: &[u8]) -> String {
    let text = String::from_utf8_lossy(out);
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
    t.trim().trim_matches('|').trim().to_owned()
}

/// Both streams' tails for a message: stdout, then stderr.
fn shown(out: &Tail, err: &Tail) -> String {
    let parts: Vec<String> = [("", out), ("stderr: ", err)]
        .iter()
        .filter_map(|(label, t)| {
            let text = tail(&t.buf);
            (!text.is_empty()).then(|| {
                let cut = if t.total > t.buf.len() as u64 {
                    "…"
                } else {
                    ""
                };
                format!("{label}{cut}{text}")
            })
        })
        .collect();
    if parts.is_empty() {
        "(none)".into()
    } else {
        parts.join(" | ")
    }
}

/// What a finished hook left: how long it ran and the tails of its output.
#[derive(Debug)]
pub struct HookRun {
    pub took: Duration,
    /// The last [`OUTPUT_TAIL_BYTES`] of stdout.
    pub stdout_tail: Vec<u8>,
    /// The last [`OUTPUT_TAIL_BYTES`] of stderr.
    pub stderr_tail: Vec<u8>,
}

/// Runs one hook to completion (or its timeout); returns how long it took.
pub async fn run(name: &str, hook: &HookSpec, ctx: &HookContext) -> Result<Duration, HookError> {
    run_captured(name, hook, ctx).await.map(|r| r.took)
}

/// Runs one hook in a process group of its own. Both output streams are read at
/// once into bounded tails; the hook is done when its process exits (output still
/// held open by a background child is read for `DRAIN_GRACE` more, no longer).
/// On timeout the whole group is killed, not only the process started.
pub async fn run_captured(
    name: &str,
    hook: &HookSpec,
    ctx: &HookContext,
) -> Result<HookRun, HookError> {
    let started = Instant::now();
    let (mut child, mut killer) = spawn(name, hook, ctx)?;
    let mut out = Tail::new(OUTPUT_TAIL_BYTES);
    let mut err = Tail::new(OUTPUT_TAIL_BYTES);
    let status = wait_reading(&mut child, &mut killer, hook.timeout, &mut out, &mut err).await;
    outcome(name, hook, started.elapsed(), status, out, err)
}

/// Starts the hook with its fixed environment, in a process group of its own, and
/// the guard that kills that group.
fn spawn(
    name: &str,
    hook: &HookSpec,
    ctx: &HookContext,
) -> Result<(tokio::process::Child, GroupKiller), HookError> {
    let (program, args) = hook.command.split_first().ok_or_else(|| HookError::Spawn {
        hook: name.to_owned(),
        program: String::new(),
        source: std::io::Error::other("empty command"),
    })?;
    let child = tokio::process::Command::new(program)
        .args(args)
        .env_clear()
        .envs(ctx.env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so that a timeout can end everything the hook started.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| HookError::Spawn {
            hook: name.to_owned(),
            program: program.clone(),
            source,
        })?;
    // process_group(0) makes the child's pid its group id. Until the child is
    // reaped its pid cannot be reused, so killing the group cannot hit strangers.
    let killer = GroupKiller(
        child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(rustix::process::Pid::from_raw),
    );
    Ok((child, killer))
}

/// Waits for the hook to exit within `timeout` while reading both streams into
/// `out` and `err`. `None` when it timed out: then its group is killed and the
/// process reaped. The killer is disarmed once the hook exited by itself.
async fn wait_reading(
    child: &mut tokio::process::Child,
    killer: &mut GroupKiller,
    timeout: Duration,
    out: &mut Tail,
    err: &mut Tail,
) -> Option<std::io::Result<std::process::ExitStatus>> {
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let mut readers = std::pin::pin!(async {
        tokio::join!(pump(stdout, out), pump(stderr, err));
    });
    let mut read_all = false;
    let waited = tokio::time::timeout(timeout, async {
        loop {
            tokio::select! {
                s = child.wait() => break s,
                () = &mut readers, if !read_all => read_all = true,
            }
        }
    })
    .await;
    let status = match waited {
        Ok(s) => {
            killer.0 = None;
            Some(s)
        }
        Err(_) => {
            killer.kill();
            let _ = child.start_kill();
            let _ = child.wait().await;
            None
        }
    };
    if !read_all {
        // A background child may hold the pipes open for as long as it lives.
        let _ = tokio::time::timeout(DRAIN_GRACE, &mut readers).await;
    }
    status
}

/// The result of a hook that ran for `took` and ended with `status` (`None`: timed
/// out), with the tails of its output in the message or the [`HookRun`].
fn outcome(
    name: &str,
    hook: &HookSpec,
    took: Duration,
    status: Option<std::io::Result<std::process::ExitStatus>>,
    out: Tail,
    err: Tail,
) -> Result<HookRun, HookError> {
    match status {
        None => Err(HookError::Timeout {
            hook: name.to_owned(),
            timeout: hook.timeout,
            tail: shown(&out, &err),
        }),
        Some(Ok(s)) if s.success() => {
            tracing::info!(hook = name, duration_ms = took.as_millis() as u64, output = %shown(&out, &err), "hook ran");
            Ok(HookRun {
                took,
                stdout_tail: out.buf,
                stderr_tail: err.buf,
            })
        }
        Some(status) => Err(HookError::Failed {
            hook: name.to_owned(),
            status: match status {
                Ok(s) => s.to_string(),
                Err(e) => e.to_string(),
            },
            tail: shown(&out, &err),
        }),
    }
}

#[cfg(test)]
mod tests;
