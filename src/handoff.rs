//! `renew` and `import` while the daemon runs: the daemon holds the state lock,
//! so the command hands the work to it (see `cas_renewd::daemon::requests`) and
//! prints its outcome with the exit status the command would have had itself.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use cas_renewd::config::Config;
pub use cas_renewd::daemon::requests::What;
use cas_renewd::daemon::requests::{self, Request, RequestError};
use cas_renewd::pki::Key;
use cas_renewd::store::{StateDir, StoreError, safe_fs};

/// Exit status of `once`, `renew` and `import` when nothing failed but an order
/// is still in progress (sysexits EX_TEMPFAIL: run again later).
const EXIT_IN_PROGRESS: u8 = 75;
/// A key file larger than this is no private key.
const MAX_KEY_FILE: u64 = 64 * 1024;
/// Beyond the command's own `--wait`: a pass in progress runs first (the daemon
/// follows unissued orders for up to 10 minutes), then inventory, hooks, checks.
const QUEUE_MARGIN: Duration = Duration::from_secs(20 * 60);

/// 1 when a certificate failed, else 75 when an order is still in progress, else 0.
pub fn exit_code(failed: bool, in_progress: bool) -> ExitCode {
    if failed {
        ExitCode::from(1)
    } else if in_progress {
        ExitCode::from(EXIT_IN_PROGRESS)
    } else {
        ExitCode::SUCCESS
    }
}

/// The running daemon's pid when one holds the state lock (`given`, else its pid
/// file); `None` when the lock is free and the command can do the work itself.
pub fn daemon_pid(cfg: &Config, given: Option<u32>) -> anyhow::Result<Option<u32>> {
    let state = StateDir::open(&cfg.state_dir)?;
    match state.lock() {
        Ok(_free) => Ok(None),
        Err(StoreError::Locked(root)) => Ok(Some(
            given
                .or_else(|| requests::read_pid(&root))
                .ok_or(RequestError::NoPid(root))?,
        )),
        Err(e) => Err(e.into()),
    }
}

/// The operator's private key, read without following a symlink or blocking on
/// a special file, and bounded.
pub fn read_key(path: &Path) -> anyhow::Result<Key> {
    let data = safe_fs::read_regular(path, MAX_KEY_FILE)?
        .with_context(|| format!("{}: no such file", path.display()))?;
    let text = String::from_utf8(data)
        .ok()
        .with_context(|| format!("{}: not PEM text", path.display()))?;
    Key::from_pem(&text).with_context(|| format!("{}: not a private key", path.display()))
}

/// Hands `what` for `cert` to the daemon `pid` and prints its outcome.
pub async fn submit(
    cfg: &Config,
    pid: u32,
    cert: &str,
    what: What,
    wait: Duration,
) -> anyhow::Result<ExitCode> {
    eprintln!("the daemon (pid {pid}) holds the state lock; handing {cert} to it");
    let req = Request::new(cert, what);
    let outcome = requests::submit(&cfg.state_dir, pid, &req, wait + QUEUE_MARGIN).await?;
    print!("{}", outcome.text);
    if let Some(e) = &outcome.error {
        eprintln!("error: {e}");
    }
    Ok(exit_code(outcome.failed, outcome.in_progress))
}
