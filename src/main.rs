//! The `cas-renewd` command line: parses arguments, sets up logging, and hands
//! each subcommand to the library. `anyhow` lives here only.
//!
//! One dispatch ([`dispatch`]) calls one function per subcommand; each returns its
//! exit status, and [`failure`] is the one place where an error becomes a
//! message and a status (the contract: 2 for a configuration that cannot be used,
//! 1 for anything else that failed).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand, ValueEnum};

use cas_renewd::announce::Notifying;
use cas_renewd::cas::api::{InstanceFilter, OrderFilter, OrderStatus, OrderType};
use cas_renewd::cas::credentials::{CredentialsProvider, Environment};
use cas_renewd::cas::inventory::Inventory;
use cas_renewd::config::{self, Config, LogFormat};
use cas_renewd::metrics::Metrics;
use cas_renewd::notify;
use cas_renewd::renew::{Engine, PassObserver as _, PassOptions};
#[cfg(feature = "sim")]
use cas_sim::{Scenario, Simulator};

mod assets;
#[cfg(feature = "sim")]
mod demo;
mod handoff;
use cas_renewd::status::{self, Health, Thresholds};
use cas_renewd::store::StateDir;
use serde::Serialize;

/// Keeps TLS certificates bought through Alibaba Cloud CAS renewed.
#[derive(Debug, Parser)]
#[command(name = "cas-renewd", version, about)]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "CAS_RENEWD_CONFIG", default_value = config::DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The daemon: passes on the schedule, signals, sd_notify, metrics endpoint.
    Run,
    /// Ask the running daemon to reload its configuration and wait for the
    /// outcome: exit 0 applied, 2 refused (the previous one stays), 1 no answer.
    /// The unit's ExecReload=.
    Reload {
        /// The daemon's process id (systemd: $MAINPID).
        #[arg(long)]
        pid: u32,
        /// How long to wait for the outcome.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Write the man pages and shell completions into DIR (for packagers).
    #[command(hide = true)]
    GenerateAssets {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Validate the configuration and the credentials: exit 0 when valid, 2 when not.
    CheckConfig {
        /// Also make one read-only call to CAS and compare this host's clock with
        /// the endpoint's (exit 1 when either fails).
        #[arg(long)]
        online: bool,
    },
    /// List the orders (or certificates) and the V2.0 instances in the account.
    List {
        /// Only entries with this status (PAYED, ISSUED, WILLEXPIRED, EXPIRED, ...).
        #[arg(long, value_parser = parse_status)]
        status: Option<OrderStatus>,
        /// What to list: orders (cpack, the default, also lists the V2.0 instances;
        /// buy), certificates (cert, upload), or V2.0 instances only (instance).
        #[arg(long = "type", value_enum, default_value_t = ListType::Cpack)]
        order_type: ListType,
        /// Only entries whose domain or id matches this keyword.
        #[arg(long)]
        keyword: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One pass over every certificate: exit 0 all good, 1 a certificate failed,
    /// 75 nothing failed but an order is still in progress after --wait.
    Once {
        /// Print the plan with reasons; change nothing, make no write call to CAS.
        #[arg(long)]
        dry_run: bool,
        /// Only this certificate.
        #[arg(long = "cert")]
        cert: Option<String>,
        /// How long to follow an order CAS has not issued yet before returning
        /// (the journal keeps it; the next `once` or the daemon continues it).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "10m")]
        wait: Duration,
    },
    /// Renew one certificate now (if due, or always with --force); exit codes as `once`.
    /// While the daemon runs, it does the renewal (asked through the state directory
    /// and SIGUSR1) and this prints its outcome.
    Renew {
        #[arg(long = "cert")]
        cert: String,
        /// Renew even when not due, past a refused certificate, and past an order
        /// renewed elsewhere whose key this host lacks (spends quota).
        #[arg(long)]
        force: bool,
        /// How long to follow the new order before returning, as for `once`.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "10m")]
        wait: Duration,
        /// The running daemon's pid, when its pid file (state_dir/daemon.pid) is missing.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Install the certificate of NAME's newest issued order (one renewed on another
    /// host, say) with the private key FILE, checked like any install; exit 0
    /// installed, 1 not. Through the daemon while it runs, as `renew`.
    Import {
        #[arg(long = "cert")]
        cert: String,
        /// The private key (PEM) the order's CSR was made with.
        #[arg(long)]
        key: PathBuf,
        /// The running daemon's pid, when its pid file (state_dir/daemon.pid) is missing.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// The resource plans (DescribePackageState) the managed certificates spend
    /// from: units total, used, issued, left, and certificates due now. Read-only.
    Quota {
        #[arg(long)]
        json: bool,
    },
    /// Check the setup without changing anything or spending: configuration,
    /// credentials, endpoint and clock, each API permission, the inventory, output
    /// directories, hooks, verify targets, state directory. Exit 0 when no check failed.
    Doctor {
        /// Print a JSON array of {check, status, message}.
        #[arg(long)]
        json: bool,
        /// Save every API answer in this directory (secrets and private keys
        /// removed, request ids kept), for a support report or `sim --recording`.
        #[arg(long)]
        record: Option<PathBuf>,
    },
    /// Managed certificates from disk and journal: expiry, order, phase, next
    /// action, last error, health. Exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    Status {
        #[arg(long)]
        json: bool,
        /// Also ask CAS for each certificate's next action (needs the credentials).
        #[arg(long)]
        online: bool,
        /// WARNING when a certificate expires within this.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "21d")]
        warning: Duration,
        /// CRITICAL when a certificate expires within this.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "7d")]
        critical: Duration,
    },
    /// Notifications: `--test` sends a test message to every configured channel
    /// and prints each channel's result (exit 1 when one failed).
    Notify {
        /// Send the test message (required: the command sends nothing else).
        #[arg(long)]
        test: bool,
    },
    /// A full renewal against an in-process simulator, in a scratch directory.
    #[cfg(feature = "sim")]
    Demo {
        /// Directory to work in (default: a new one under the temp directory, kept).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Run the CAS simulator (loopback only) until interrupted.
    #[cfg(feature = "sim")]
    Sim {
        /// Address to listen on, e.g. 127.0.0.1:8443 (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Scenario file; without it, the built-in demo scenario.
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// A `doctor --record` directory: its real answers are given for the
        /// actions it recorded, the scenario's account answers the rest.
        #[arg(long)]
        recording: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ListType {
    Cpack,
    Buy,
    Cert,
    Upload,
    /// SSL Certificate Management V2.0 instances only.
    Instance,
}

impl ListType {
    /// The ListUserCertificateOrder type, when this lists V1 entries.
    fn order_type(self) -> Option<OrderType> {
        match self {
            ListType::Cpack => Some(OrderType::Cpack),
            ListType::Buy => Some(OrderType::Buy),
            ListType::Cert => Some(OrderType::Cert),
            ListType::Upload => Some(OrderType::Upload),
            ListType::Instance => None,
        }
    }
}

fn parse_status(s: &str) -> Result<OrderStatus, String> {
    s.parse()
}

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
        } => status(&path, json, online, Thresholds { warning, critical }),
        Command::Notify { test } => notify_test(&path, test),
        Command::Quota { json } => quota(&path, json),
        Command::Doctor { json, record } => doctor(&path, json, record.as_deref()),
        Command::List {
            status,
            order_type,
            keyword,
            json,
        } => list(&path, status, order_type, keyword, json),
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

/// Status is a monitoring check: whatever stops it is UNKNOWN (3), a bad
/// configuration included, not the other commands' 1 or 2.
fn status(path: &Path, json: bool, online: bool, t: Thresholds) -> anyhow::Result<ExitCode> {
    status_report(path, json, online, t).or_else(|e| {
        eprintln!("{}", failure(&e).1);
        Ok(ExitCode::from(Health::Unknown.exit_code()))
    })
}

fn status_report(path: &Path, json: bool, online: bool, t: Thresholds) -> anyhow::Result<ExitCode> {
    let (cfg, rt) = configured(path)?;
    let report = if online {
        rt.block_on(async {
            match engine(cfg.clone()) {
                Ok(engine) => status::online(&engine, t).await,
                // No credentials to ask CAS with: what the disk says, and why.
                Err(e) => status::Report {
                    cas_error: Some(status::CasError {
                        message: format!("{e:#}"),
                        auth: true,
                    }),
                    ..offline_status(&cfg, t)
                },
            }
        })
    } else {
        offline_status(&cfg, t)
    };
    if !json {
        print!("{}", report.summary());
    }
    print_rows(&report.rows, json, status::table)?;
    Ok(ExitCode::from(report.health().0.exit_code()))
}

/// `status` from disk and journals: the configured certificates and the
/// discovered ones installed under `discover.output_root`.
fn offline_status(cfg: &Config, t: Thresholds) -> status::Report {
    let mut certs = cfg.certificates.clone();
    certs.extend(cas_renewd::renew::installed_discovered(cfg));
    status::offline(&certs, &cfg.state_dir, cfg.renewal.renew_before, t)
}

fn doctor(path: &Path, json: bool, record: Option<&Path>) -> anyhow::Result<ExitCode> {
    // Logs only for warnings and worse: the report is the output.
    let loaded = Config::load(path);
    if let Ok(cfg) = &loaded {
        let mut quiet = cfg.clone();
        if std::env::var_os("CAS_RENEWD_LOG").is_none() {
            quiet.log.level = "error".into();
        }
        init_logging(&quiet);
    }
    let checks = runtime()?.block_on(cas_renewd::doctor::run(
        path,
        loaded,
        &Environment::from_process(),
        record,
    ));
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &checks)?;
        writeln!(out)?;
    } else {
        out.write_all(cas_renewd::doctor::render(&checks).as_bytes())?;
    }
    Ok(if cas_renewd::doctor::passed(&checks) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn quota(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let (cfg, rt) = configured(path)?;
    let rows = rt.block_on(async {
        let engine = engine(cfg)?;
        anyhow::Ok(engine.quota().await?)
    })?;
    print_rows(&rows, json, cas_renewd::renew::quota::table)
}

fn list(
    path: &Path,
    status: Option<OrderStatus>,
    order_type: ListType,
    keyword: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (cfg, rt) = configured(path)?;
    if status.is_some() && matches!(order_type, ListType::Instance) {
        anyhow::bail!(
            "--status takes the statuses of V1 orders; V2.0 instances have their own (see the STATUS column without --status)"
        );
    }
    let orders = order_type.order_type().map(|t| OrderFilter {
        keyword: keyword.clone(),
        status,
        order_type: Some(t),
        resource_group_id: None,
    });
    // Instance statuses are not the V1 names, so a --status filter lists orders only.
    let instances = (matches!(order_type, ListType::Cpack | ListType::Instance)
        && status.is_none())
    .then(|| InstanceFilter {
        keyword,
        ..Default::default()
    });
    let inventory = rt.block_on(async {
        let limiter = Arc::new(cfg.api.limiter());
        let cas =
            cas_renewd::cas::cas_client(&cfg.api, Arc::new(credentials(&cfg)?), limiter, None)?;
        let inv = Inventory::fetch(&cas, orders, instances.as_ref(), cfg.api.page_size).await?;
        anyhow::Ok(inv)
    })?;
    let rows = cas_renewd::listing::inventory_rows(&inventory, chrono::Utc::now());
    print_rows(&rows, json, cas_renewd::listing::table)
}

/// `list` and `status` print alike: pretty JSON with `--json`, else the table.
fn print_rows<T: Serialize>(
    rows: &[T],
    json: bool,
    table: fn(&[T]) -> String,
) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, rows)?;
        writeln!(out)?;
    } else {
        out.write_all(table(rows).as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
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
        std::io::stdout().flush()?;
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

/// `notify --test`: one test message per channel, one line per channel.
fn notify_test(path: &Path, test: bool) -> anyhow::Result<ExitCode> {
    if !test {
        return Err(Fatal::Plain(anyhow::anyhow!(
            "notify: say --test to send a test message to every channel"
        ))
        .into());
    }
    let (cfg, rt) = configured(path)?;
    if cfg.notify.is_empty() {
        return Err(Fatal::Plain(anyhow::anyhow!(
            "{}: no notification channel is configured (notify:)",
            path.display()
        ))
        .into());
    }
    let lines = rt.block_on(async {
        let (open, failed) = notify::open_channels(&cfg.notify);
        let event = notify::Event::new(
            notify::EventKind::Test,
            "",
            "",
            "a test message from cas-renewd: this channel works",
            chrono::Utc::now(),
        );
        let sent = notify::send_test(&open, &event).await;
        let mut lines: Vec<(String, String, Option<String>)> = failed
            .into_iter()
            .map(|(name, e)| (name, String::new(), Some(e.to_string())))
            .collect();
        for d in sent {
            let err = d.result.err().map(|e| e.to_string());
            lines.push((d.channel, d.channel_type.to_owned(), err));
        }
        lines
    });
    let mut out = std::io::stdout().lock();
    let mut ok = true;
    for (name, ty, err) in &lines {
        let ty = if ty.is_empty() {
            String::new()
        } else {
            format!(" ({ty})")
        };
        match err {
            None => writeln!(out, "{name}{ty}: ok")?,
            Some(e) => {
                ok = false;
                writeln!(out, "{name}{ty}: FAILED: {e}")?;
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
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
    let notifier = Notifying::start(channels, &cfg.state_dir, Metrics::new());
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
