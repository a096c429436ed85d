//! The `cas-renewd` command line: parses arguments, sets up logging, and hands
//! each subcommand to the library. `anyhow` lives here only.
//!
//! One dispatch ([`dispatch`]) calls one function per subcommand; each returns its
//! exit status, and [`failure`] is the one place where an error becomes a
//! message and a status (the contract: 2 for a configuration that cannot be used,
//! 1 for anything else that failed).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser};

use cas_renewd::announce::Notifying;
use cas_renewd::cas::credentials::{CredentialsProvider, Environment};
use cas_renewd::config::{self, Config, LogFormat};
use cas_renewd::notify;
use cas_renewd::renew::{Engine, NoObserver, PassObserver as _, PassOptions};
#[cfg(feature = "sim")]
use cas_sim::{Scenario, Simulator};

mod assets;
mod cli;
#[cfg(feature = "sim")]
mod demo;
mod handoff;
mod inspect;
use cas_renewd::status::{self, Thresholds};
use cas_renewd::store::StateDir;
use cli::{Cli, Command};

/// Exit status for a configuration that cannot be used.
const EXIT_BAD_CONFIG: u8 = 2;

/// An error that the CLI contract words and numbers itself; any other error is
/// printed as "error: ..." with exit status 1.
#[derive(Debug, thiserror::Error)]
enum Fatal {
    /// The configuration (or a simulator scenario) cannot be used: exit 2, and
    /// the message as the loader wrote it.
    #[error("{0}")]
    BadConfig(anyhow::Error),
    /// Exit 1, with the message as it stands (no "error:" in front).
    #[error("{0:#}")]
    Plain(anyhow::Error),
}

fn main() -> ExitCode {
    dispatch(Cli::parse()).unwrap_or_else(|e| {
        let (status, message) = failure(&e);
        eprintln!("{message}");
        ExitCode::from(status)
    })
}

/// The one place where an error becomes the message on stderr and the exit status.
fn failure(e: &anyhow::Error) -> (u8, String) {
    match e.downcast_ref::<Fatal>() {
        Some(f @ Fatal::BadConfig(_)) => (EXIT_BAD_CONFIG, f.to_string()),
        Some(f @ Fatal::Plain(_)) => (1, f.to_string()),
        None => (1, format!("error: {e:#}")),
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let path = cli.config;
    match cli.command {
        #[cfg(feature = "sim")]
        Command::Sim {
            listen,
            scenario,
            recording,
        } => sim(&listen, scenario.as_deref(), recording.as_deref()),
        #[cfg(feature = "sim")]
        Command::Demo { dir } => demo(dir.as_deref()),
        Command::CheckConfig { online } => check_config(&path, online),
        Command::Run => daemon(path),
        Command::Reload { pid, timeout } => reload(pid, timeout),
        Command::GenerateAssets { dir } => {
            for f in assets::generate(Cli::command(), &dir)? {
                println!("{}", dir.join(f).display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Once {
            dry_run,
            cert,
            wait,
        } => once(&path, dry_run, cert, wait),
        Command::Renew {
            cert,
            force,
            wait,
            pid,
        } => renew(&path, cert, force, wait, pid),
        Command::Import { cert, key, pid } => import(&path, cert, &key, pid),
        Command::Status {
            json,
            online,
            warning,
            critical,
        } => inspect::status(&path, json, online, Thresholds { warning, critical }),
        Command::Notify { test } => inspect::notify_test(&path, test),
        Command::Quota { json } => inspect::quota(&path, json),
        Command::Doctor { json, record } => inspect::doctor(&path, json, record.as_deref()),
        Command::List {
            status,
            order_type,
            keyword,
            json,
        } => inspect::list(&path, status, order_type, keyword, json),
    }
}

fn load_config(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| Fatal::BadConfig(e.into()).into())
}

/// What every command that works from the configuration starts with: the
/// configuration, logging as it asks, its warnings, and the async runtime.
fn configured(path: &Path) -> anyhow::Result<(Config, tokio::runtime::Runtime)> {
    let cfg = load_config(path)?;
    init_logging(&cfg);
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    Ok((cfg, runtime()?))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(|e| Fatal::Plain(e).into())
}

fn check_config(path: &Path, online: bool) -> anyhow::Result<ExitCode> {
    let cfg = load_config(path)?;
    for w in &cfg.warnings {
        eprintln!("warning: {w}");
    }
    let creds = config::check_credentials(&cfg, &Environment::from_process())
        .map_err(|e| Fatal::BadConfig(anyhow::anyhow!("{}: {e}", path.display())))?;
    println!(
        "{}: valid ({} certificate{}{})",
        path.display(),
        cfg.certificates.len(),
        if cfg.certificates.len() == 1 { "" } else { "s" },
        if cfg.discover.is_some() {
            ", discover on"
        } else {
            ""
        }
    );
    println!("credentials: {}", creds.origin());
    if !online {
        return Ok(ExitCode::SUCCESS);
    }
    let endpoint = cfg.api.endpoint.to_string();
    let checked = runtime()?.block_on(config::check_online(&cfg, Arc::new(creds)));
    print!("{}", checked.render(&endpoint));
    Ok(if checked.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn daemon(path: PathBuf) -> anyhow::Result<ExitCode> {
    let (cfg, rt) = configured(&path)?;
    rt.block_on(cas_renewd::daemon::run(path, cfg))?;
    Ok(ExitCode::SUCCESS)
}

fn reload(pid: u32, timeout: std::time::Duration) -> anyhow::Result<ExitCode> {
    use cas_renewd::daemon::reload_status;
    let dir = reload_status::runtime_dir();
    let status = runtime()?
        .block_on(reload_status::request(pid, &dir, timeout))
        .map_err(|e| Fatal::Plain(e.into()))?;
    if status.ok {
        println!("{}", status.message);
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "reload refused; the previous configuration stays in force:\n{}",
            status.message
        );
        Ok(ExitCode::from(EXIT_BAD_CONFIG))
    }
}

fn once(
    path: &Path,
    dry_run: bool,
    cert: Option<String>,
    wait: Duration,
) -> anyhow::Result<ExitCode> {
    let opts = PassOptions {
        dry_run,
        only: cert,
        force: false,
        follow_budget: Some(wait),
    };
    let (cfg, rt) = configured(path)?;
    rt.block_on(pass(cfg, Job::Pass(opts)))
}

fn renew(
    path: &Path,
    cert: String,
    force: bool,
    wait: Duration,
    pid: Option<u32>,
) -> anyhow::Result<ExitCode> {
    let (cfg, rt) = configured(path)?;
    if let Some(pid) = handoff::daemon_pid(&cfg, pid)? {
        let what = handoff::What::Renew {
            force,
            wait_secs: wait.as_secs(),
        };
        return rt.block_on(handoff::submit(&cfg, pid, &cert, what, wait));
    }
    let opts = PassOptions {
        dry_run: false,
        only: Some(cert),
        force,
        follow_budget: Some(wait),
    };
    rt.block_on(pass(cfg, Job::Pass(opts)))
}

fn import(path: &Path, cert: String, key: &Path, pid: Option<u32>) -> anyhow::Result<ExitCode> {
    let (cfg, rt) = configured(path)?;
    let key = handoff::read_key(key).map_err(Fatal::Plain)?;
    if let Some(pid) = handoff::daemon_pid(&cfg, pid)? {
        let what = handoff::What::Import {
            key_pem: key.pem().clone(),
        };
        return rt.block_on(handoff::submit(&cfg, pid, &cert, what, Duration::ZERO));
    }
    rt.block_on(pass(cfg, Job::Import { cert, key }))
}

/// Text logs on stderr for commands that run without a configuration file.
#[cfg(feature = "sim")]
fn init_plain_logging(default_level: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAS_RENEWD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .fmt_fields(cas_renewd::logfmt::EscapingFields)
        .with_ansi(false)
        .init();
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAS_RENEWD_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cfg.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.log.format {
        // JSON escapes control characters itself; text needs the escaping formatter.
        LogFormat::Text => builder
            .fmt_fields(cas_renewd::logfmt::EscapingFields)
            .with_ansi(false)
            .init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

#[cfg(feature = "sim")]
fn sim(
    listen: &str,
    scenario: Option<&Path>,
    recording: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    init_plain_logging("info");
    let mut scenario = match scenario.map(Scenario::load).transpose() {
        Ok(s) => s.unwrap_or_else(Scenario::demo),
        Err(e) => return Err(Fatal::BadConfig(e.into()).into()),
    };
    if let Some(dir) = recording {
        scenario.recording =
            Some(cas_sim::recording::Recording::load(dir).map_err(|e| Fatal::BadConfig(e.into()))?);
    }
    runtime()?.block_on(async {
        let sim = Simulator::start(&scenario, listen).await?;
        println!("listening on {}", sim.url());
        std::io::Write::flush(&mut std::io::stdout())?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

#[cfg(feature = "sim")]
fn demo(dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    init_plain_logging("warn");
    let run = runtime()?
        .block_on(demo::run(dir))
        .map_err(|e| Fatal::Plain(anyhow::Error::new(e).context("demo failed")))?;
    print!("{}", demo::summary(&run));
    Ok(if run.report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn credentials(cfg: &Config) -> anyhow::Result<CredentialsProvider> {
    CredentialsProvider::resolve(cfg.credentials.as_ref(), &Environment::from_process())
        .context("resolving credentials")
}

fn engine(cfg: Config) -> anyhow::Result<Arc<Engine>> {
    let creds = credentials(&cfg)?;
    Ok(Arc::new(Engine::new(cfg, Arc::new(creds))?))
}

/// What `pass` does under the state lock.
enum Job {
    /// `once` and `renew`.
    Pass(PassOptions),
    /// `import`.
    Import {
        cert: String,
        key: cas_renewd::pki::Key,
    },
}

/// `once`, `renew` and `import`: one pass (or import) under the state lock (none
/// for a dry run); exit 1 when a certificate failed, else 75 when an order is still
/// in progress. Notifications go out before the command exits (none for a dry run).
async fn pass(cfg: Config, job: Job) -> anyhow::Result<ExitCode> {
    let dry_run = matches!(&job, Job::Pass(o) if o.dry_run);
    let channels = if dry_run { &[][..] } else { &cfg.notify[..] };
    // Nothing serves a one-shot command's metrics: at 10,000 certificates their
    // label sets alone were ~30 MiB, so a pass outside the daemon records none.
    let notifier = Notifying::start(channels, &cfg.state_dir, Arc::new(NoObserver));
    let creds = credentials(&cfg)?;
    let engine = Arc::new(Engine::with_observer(
        cfg,
        Arc::new(creds),
        notifier.clone(),
    )?);
    let result = pass_locked(&engine, &job).await;
    // A refused import is the operator's answer at the terminal, not a failed pass.
    if let (Err(e), Job::Pass(_)) = (&result, &job) {
        notifier.pass_failed(&format!("{e:#}"));
    }
    notifier.finish(notify::FINISH_WITHIN).await;
    result
}

async fn pass_locked(engine: &Arc<Engine>, job: &Job) -> anyhow::Result<ExitCode> {
    let opts = match job {
        Job::Pass(o) => o,
        Job::Import { cert, key } => {
            let _lock = lock_and_repair(engine)?;
            let report = engine.import(cert, key).await?;
            print!("{}", report.render(false));
            return Ok(handoff::exit_code(!report.ok(), false));
        }
    };
    // A dry run changes nothing, so it needs no lock and may run beside the daemon.
    let _lock = if opts.dry_run {
        None
    } else {
        Some(lock_and_repair(engine)?)
    };
    let result = engine.pass(opts).await;
    if !opts.dry_run {
        status::last_pass::record(
            &engine.config().state_dir,
            &status::LastPass::of(result.as_ref()),
        );
    }
    let report = result?;
    print!("{}", report.render(opts.dry_run));
    let note = opts
        .follow_budget
        .and_then(|waited| report.in_progress_note(waited));
    if let Some(note) = &note {
        print!("{note}");
    }
    Ok(handoff::exit_code(!report.ok(), note.is_some()))
}

/// The state lock, and a set torn by a crash made whole before anything reads it.
fn lock_and_repair(engine: &Engine) -> anyhow::Result<std::fs::File> {
    let state = StateDir::open(&engine.config().state_dir)?;
    let lock = state.lock()?;
    cas_renewd::store::repair::at_start(&state, &engine.config().certificates);
    Ok(lock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_that_cannot_be_used_exits_2_with_the_loaders_words() {
        let e: anyhow::Error =
            Fatal::BadConfig(anyhow::anyhow!("inner detail").context("/etc/x.yaml:3:1: bad key"))
                .into();
        assert_eq!(failure(&e), (2, "/etc/x.yaml:3:1: bad key".to_owned()));
    }

    #[test]
    fn any_other_error_exits_1_with_its_whole_chain() {
        let e = anyhow::anyhow!("connection refused").context("resolving credentials");
        assert_eq!(
            failure(&e),
            (
                1,
                "error: resolving credentials: connection refused".to_owned()
            )
        );
        let e: anyhow::Error =
            Fatal::Plain(anyhow::anyhow!("no such directory").context("demo failed")).into();
        assert_eq!(
            failure(&e),
            (1, "demo failed: no such directory".to_owned())
        );
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
