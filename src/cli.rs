//! The command line's definition (clap): the global options, every subcommand
//! and its arguments. Man pages and completions are rendered from it (`assets`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use cas_renewd::cas::api::{OrderStatus, OrderType};
use cas_renewd::config;

/// Keeps TLS certificates bought through Alibaba Cloud CAS renewed.
#[derive(Debug, Parser)]
#[command(name = "cas-renewd", version, about)]
pub(crate) struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "CAS_RENEWD_CONFIG", default_value = config::DEFAULT_CONFIG_PATH)]
    pub(crate) config: PathBuf,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
pub(crate) enum ListType {
    Cpack,
    Buy,
    Cert,
    Upload,
    /// SSL Certificate Management V2.0 instances only.
    Instance,
}

impl ListType {
    /// The ListUserCertificateOrder type, when this lists V1 entries.
    pub(crate) fn order_type(self) -> Option<OrderType> {
        match self {
            ListType::Cpack => Some(OrderType::Cpack),
            ListType::Buy => Some(OrderType::Buy),
            ListType::Cert => Some(OrderType::Cert),
            ListType::Upload => Some(OrderType::Upload),
            ListType::Instance => None,
        }
    }
}

pub(crate) fn parse_status(s: &str) -> Result<OrderStatus, String> {
    s.parse()
}
