//! The `cas-renewd` command line: parses arguments, sets up logging, and hands
//! each subcommand to the library. `anyhow` lives here only.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use cas_renewd::cas::api::{OrderFilter, OrderStatus, OrderType};
use cas_renewd::cas::credentials::{CredentialsProvider, Environment};
use cas_renewd::config::{self, Config, LogFormat};
use cas_renewd::renew::{Engine, PassOptions};
use cas_renewd::store::StateDir;
#[cfg(feature = "sim")]
use cas_sim::{Scenario, Simulator};

#[cfg(feature = "sim")]
mod demo;

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
    /// Validate the configuration: exit 0 when valid, 2 when not.
    CheckConfig,
    /// List the orders (or certificates) in the account.
    List {
        /// Only entries with this status (PAYED, ISSUED, WILLEXPIRED, EXPIRED, ...).
        #[arg(long, value_parser = parse_status)]
        status: Option<OrderStatus>,
        /// What to list: orders (cpack, buy) or certificates (cert, upload).
        #[arg(long = "type", value_enum, default_value_t = ListType::Cpack)]
        order_type: ListType,
        /// Only entries whose domain or id matches this keyword.
        #[arg(long)]
        keyword: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One pass over every certificate: exit 0 all good, 1 a certificate failed.
    Once {
        /// Print the plan with reasons; change nothing, make no write call to CAS.
        #[arg(long)]
        dry_run: bool,
        /// Only this certificate.
        #[arg(long = "cert")]
        cert: Option<String>,
    },
    /// Renew one certificate now (if due, or always with --force).
    Renew {
        #[arg(long = "cert")]
        cert: String,
        /// Renew even when not due, and past a refused certificate.
        #[arg(long)]
        force: bool,
    },
    /// Managed certificates: on-disk expiry, order, journal phase, next action.
    Status {
        #[arg(long)]
        json: bool,
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
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ListType {
    Cpack,
    Buy,
    Cert,
    Upload,
}

impl From<ListType> for OrderType {
    fn from(t: ListType) -> Self {
        match t {
            ListType::Cpack => OrderType::Cpack,
            ListType::Buy => OrderType::Buy,
            ListType::Cert => OrderType::Cert,
            ListType::Upload => OrderType::Upload,
        }
    }
}

fn parse_status(s: &str) -> Result<OrderStatus, String> {
    s.parse()
}

/// Exit status for a configuration that cannot be used.
const EXIT_BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    #[cfg(feature = "sim")]
    if let Command::Sim { listen, scenario } = &cli.command {
        return run_sim(listen, scenario.as_deref());
    }
    #[cfg(feature = "sim")]
    if let Command::Demo { dir } = &cli.command {
        return run_demo(dir.as_deref());
    }
    let cfg = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    if let Command::CheckConfig = cli.command {
        for w in &cfg.warnings {
            eprintln!("warning: {w}");
        }
        println!(
            "{}: valid ({} certificate{}{})",
            cli.config.display(),
            cfg.certificates.len(),
            if cfg.certificates.len() == 1 { "" } else { "s" },
            if cfg.discover.is_some() {
                ", discover on"
            } else {
                ""
            }
        );
        return ExitCode::SUCCESS;
    }
    init_logging(&cfg);
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    let runtime = match runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, cfg, cli.config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
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

#[cfg(feature = "sim")]
fn run_sim(listen: &str, scenario: Option<&std::path::Path>) -> ExitCode {
    init_plain_logging("info");
    let scenario = match scenario.map(Scenario::load).transpose() {
        Ok(s) => s.unwrap_or_else(Scenario::demo),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let result = runtime().and_then(|rt| {
        rt.block_on(async {
            let sim = Simulator::start(&scenario, listen).await?;
            println!("listening on {}", sim.url());
            std::io::stdout().flush()?;
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            anyhow::Ok(())
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn engine(cfg: Config) -> anyhow::Result<Arc<Engine>> {
    let creds =
        CredentialsProvider::resolve(cfg.credentials.as_ref(), &Environment::from_process())
            .context("resolving credentials")?;
    Ok(Arc::new(Engine::new(cfg, Arc::new(creds))?))
}

async fn pass(cfg: Config, opts: PassOptions) -> anyhow::Result<ExitCode> {
    let engine = engine(cfg)?;
    // A dry run changes nothing, so it needs no lock and may run beside the daemon.
    let _lock = if opts.dry_run {
        None
    } else {
        let state = StateDir::open(&engine.config().state_dir)?;
        let lock = state.lock()?;
        // A set torn by a crash is whole again before the pass reads it.
        cas_renewd::store::repair::at_start(&state, &engine.config().certificates);
        Some(lock)
    };
    let report = engine.pass(&opts).await?;
    print!("{}", report.render(opts.dry_run));
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn status(cfg: Config, json: bool) -> anyhow::Result<ExitCode> {
    let engine = engine(cfg)?;
    let rows = cas_renewd::status::collect(&engine).await;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
    } else {
        out.write_all(cas_renewd::status::table(&rows).as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "sim")]
fn run_demo(dir: Option<&std::path::Path>) -> ExitCode {
    init_plain_logging("warn");
    let result = runtime().and_then(|rt| rt.block_on(async { Ok(demo::run(dir).await?) }));
    match result {
        Ok(run) => {
            print!("{}", demo::summary(&run));
            if run.report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("demo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
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

async fn run(command: Command, cfg: Config, config_path: PathBuf) -> anyhow::Result<ExitCode> {
    match command {
        Command::CheckConfig => Ok(ExitCode::SUCCESS),
        #[cfg(feature = "sim")]
        Command::Sim { .. } | Command::Demo { .. } => Ok(ExitCode::SUCCESS),
        Command::Once { dry_run, cert } => {
            pass(
                cfg,
                PassOptions {
                    dry_run,
                    only: cert,
                    force: false,
                    follow_budget: None,
                },
            )
            .await
        }
        Command::Renew { cert, force } => {
            pass(
                cfg,
                PassOptions {
                    dry_run: false,
                    only: Some(cert),
                    force,
                    follow_budget: None,
                },
            )
            .await
        }
        Command::Status { json } => status(cfg, json).await,
        Command::Run => {
            cas_renewd::daemon::run(config_path, cfg).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::List {
            status,
            order_type,
            keyword,
            json,
        } => {
            let creds = CredentialsProvider::resolve(
                cfg.credentials.as_ref(),
                &Environment::from_process(),
            )
            .context("resolving credentials")?;
            let limiter = Arc::new(cfg.api.limiter());
            let cas = cas_renewd::cas::cas_client(&cfg.api, Arc::new(creds), limiter, None)?;
            let filter = OrderFilter {
                keyword,
                status,
                order_type: Some(order_type.into()),
                resource_group_id: None,
            };
            let orders = cas.list_all_orders(filter, cfg.api.page_size).await?;
            let rows = cas_renewd::listing::rows(&orders, chrono::Utc::now());
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &rows)?;
                writeln!(out)?;
            } else {
                out.write_all(cas_renewd::listing::table(&rows).as_bytes())?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
