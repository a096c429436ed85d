//! `cargo build --release --bin cas-renewd --example bench && target/release/examples/bench`:
//! `cas-renewd once` against the simulator on every shape of the job (renewals of
//! configured certificates; a first run that discovers and installs a whole account,
//! with RSA and with ECC orders; the steady state after it; a slow disk), each
//! printed with its wall time, the lower bounds from the rate limits and from the
//! disk's measured fsync floor, the ratio, API calls made against those needed, peak
//! RSS and CPU of the daemon and of the simulator; then key generation, the idle
//! daemon and the official Python SDK doing the same renewals in full.

mod misc;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cas_sim::{Scenario, Simulator};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "Benchmark cas-renewd passes of every shape against the simulator")]
struct Args {
    /// Shapes to run, comma-separated: renew-only, first-run-rsa, first-run-ecc,
    /// slow-disk, first-run-10k (followed by steady-10k), renew-only-10k, sdk; or all.
    #[arg(long, default_value = "all")]
    shapes: String,
    /// Orders and expiring ones of the small account.
    #[arg(long, default_value_t = 2_000)]
    small_orders: u32,
    #[arg(long, default_value_t = 200)]
    small_expiring: u32,
    /// Orders and expiring ones of the large account.
    #[arg(long, default_value_t = 10_000)]
    large_orders: u32,
    #[arg(long, default_value_t = 1_000)]
    large_expiring: u32,
    /// Algorithm of the large account's orders (RSA or ECC).
    #[arg(long, default_value = "ECC")]
    large_algorithm: String,
    /// Milliseconds added to every fsync in the slow-disk shape.
    #[arg(long, default_value_t = 4)]
    slow_fsync_ms: u64,
    /// Seconds over which the idle daemon's CPU is measured (0 skips it).
    #[arg(long, default_value_t = 60)]
    idle: u64,
    /// Measure key generation and runtime responsiveness.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    keygen: bool,
    /// Python with the official SDK (scripts/test.sh builds target/sdk-venv).
    #[arg(long, default_value = "target/sdk-venv/bin/python")]
    python: PathBuf,
    /// A profiler to run the daemon under, split on spaces (e.g. `heaptrack -o
    /// /tmp/ht` or `perf record -g -o /tmp/perf.data --`); its figures then include
    /// the profiler's own.
    #[arg(long)]
    wrap: Option<String>,
}

/// Server-side limits of the scenario, per second (ListUserCertificateOrder as CAS
/// documents; the others are not documented and set here).
const LIST_RATE: f64 = 10.0;
const DESCRIBE_RATE: f64 = 50.0;
const RENEW_RATE: f64 = 20.0;
const POLLS: u32 = 2;
const PAGE: u32 = 100;
const CONCURRENCY: u32 = 64;
/// fsyncs per certificate, counted with `strace -f -c -e trace=fsync` on a
/// 300-order first run: an install of the current certificate (three files, their
/// directory, the journal, the history), and a renewal after it (key, journal
/// transitions, issued chain, install, pruning).
const FSYNCS_INSTALL: u64 = 7;
const FSYNCS_RENEWED: u64 = 32;

/// What one shape does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Only the expiring orders are configured; each is installed, then renewed.
    RenewOnly,
    /// `discover` over the whole account from an empty disk: every order installed,
    /// the expiring ones renewed.
    FirstRun,
    /// The pass after a first run: nothing to do.
    Steady,
}

struct Shape {
    name: String,
    kind: Kind,
    orders: u32,
    expiring: u32,
    algorithm: String,
    slow_fsync_ms: u64,
}

/// The figures of one `cas-renewd once`.
struct Run {
    wall: f64,
    rss_kib: u64,
    cpu: f64,
    sim_cpu: f64,
    calls: BTreeMap<String, u64>,
    throttled: u64,
}

fn scenario(orders: u32, expiring: u32, algorithm: &str) -> anyhow::Result<Scenario> {
    let text = format!(
        "access_key: {{ id: bench, secret: bench-secret }}\ngenerate: {{ count: {orders}, expiring_fraction: {}, domain: \"host-{{n}}.example.com\", algorithm: {algorithm} }}\nissuance: {{ polls_before_issued: {POLLS} }}\nrate_limits: {{ ListUserCertificateOrder: {LIST_RATE}, DescribeCertificateState: {DESCRIBE_RATE}, RenewCertificateOrderForPackageRequest: {RENEW_RATE}, default: 100 }}\nmax_page_size: {PAGE}\n",
        f64::from(expiring) / f64::from(orders)
    );
    Ok(Scenario::parse(&text, Path::new("bench"))?)
}

fn cas_renewd_bin() -> anyhow::Result<PathBuf> {
    // Examples land in target/<profile>/examples/; the daemon's binary is one level up.
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the bench's own path has no profile directory")?;
    let bin = profile_dir.join("cas-renewd");
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release --bin cas-renewd --example bench)",
            bin.display()
        );
    }
    Ok(bin)
}

/// The daemon's configuration: client limits at 95 % of the server's for the
/// actions CAS documents no limit for; ListUserCertificateOrder left to the
/// client's default (95 % of the documented 10/s: 10 calls in every 1.05 s).
fn write_config(dir: &Path, endpoint: &str, certs: &str, extra: &str) -> anyhow::Result<PathBuf> {
    let cfg = format!(
        "api:\n  endpoint: \"{endpoint}\"\n  dns_endpoint: \"{endpoint}\"\n  page_size: {PAGE}\n  rate_limit_per_second: 95\n  rate_limits: {{ DescribeCertificateState: {}, RenewCertificateOrderForPackageRequest: {} }}\ncredentials: {{ access_key_id: bench, access_key_secret: bench-secret }}\nstate_dir: {d}/state\nrenewal: {{ poll_interval: 1s, poll_max_interval: 4s, concurrency: {CONCURRENCY} }}\nlog: {{ level: warn }}\n{extra}{certs}",
        DESCRIBE_RATE * 0.95,
        RENEW_RATE * 0.95,
        d = dir.display()
    );
    let path = dir.join("config.yaml");
    cas_renewd::store::write_file(
        &path,
        cfg.as_bytes(),
        cas_renewd::store::FileSpec::private(),
    )?;
    Ok(path)
}

fn configured(dir: &Path, expiring: u32) -> String {
    let mut c = "certificates:\n".to_owned();
    for n in 0..expiring {
        c.push_str(&format!(
            "  - {{ name: h{n}, domain: host-{n}.example.com, output: {{ dir: {}/out/h{n} }} }}\n",
            dir.display()
        ));
    }
    c
}

fn discover(dir: &Path) -> String {
    format!(
        "discover: {{ keyword: example.com, output_root: {}/out }}\n",
        dir.display()
    )
}

/// Runs `cas-renewd once` with `config`, sampling its RSS and CPU until it exits.
async fn once(
    bin: &Path,
    config: &Path,
    sim: &Simulator,
    slow_fsync_ms: u64,
    wrap: Option<&str>,
) -> anyhow::Result<Run> {
    let before: BTreeMap<String, u64> = serde_json::from_value(sim.state()["calls"].clone())?;
    let throttled_before = sim.state()["throttled"].as_u64().unwrap_or(0);
    let sim_cpu = || misc::cpu_seconds("/proc/self/stat").unwrap_or(0.0);
    let sim_cpu_before = sim_cpu();
    let log = config.with_file_name("once.log");
    let mut words = wrap.unwrap_or_default().split_whitespace();
    let mut cmd = match words.next() {
        Some(profiler) => {
            let mut c = Command::new(profiler);
            c.args(words).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.arg("--config")
        .arg(config)
        .arg("once")
        .env("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?);
    if slow_fsync_ms > 0 {
        cmd.env("CAS_RENEWD_FAULT_FSYNC_MS", slow_fsync_ms.to_string());
    }
    let started = Instant::now();
    let mut child = cmd.spawn().context("starting cas-renewd once")?;
    let mut last = (0u64, 0.0f64);
    let status = loop {
        if let Some(f) = misc::proc_figures(child.id()) {
            last = f;
        }
        if let Some(st) = child.try_wait()? {
            break st;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let wall = started.elapsed().as_secs_f64();
    // Exit 1 is a pass with a failed or blocked certificate: the figures still hold,
    // and the log says which.
    if !matches!(status.code(), Some(0 | 1)) {
        let err = std::fs::read_to_string(&log).unwrap_or_default();
        bail!(
            "cas-renewd once failed: {status}\n{}",
            err.lines().rev().take(20).collect::<Vec<_>>().join("\n")
        );
    }
    let state = sim.state();
    let mut calls: BTreeMap<String, u64> = serde_json::from_value(state["calls"].clone())?;
    for (action, n) in &mut calls {
        *n -= before.get(action).copied().unwrap_or(0);
    }
    calls.retain(|_, n| *n > 0);
    Ok(Run {
        wall,
        rss_kib: last.0,
        cpu: last.1,
        sim_cpu: sim_cpu() - sim_cpu_before,
        calls,
        throttled: state["throttled"].as_u64().unwrap_or(0) - throttled_before,
    })
}

/// The calls a shape strictly needs, per action: one listing at the largest page;
/// a describe per certificate installed from an empty disk; a renew and POLLS+1
/// polls (payed, process, certificate) per renewal.
fn needed(s: &Shape) -> BTreeMap<&'static str, u64> {
    let e = u64::from(s.expiring);
    // After a first run the account also holds the renewal orders it made.
    let listed = u64::from(s.orders) + if s.kind == Kind::Steady { e } else { 0 };
    let pages = listed.div_ceil(u64::from(PAGE));
    let installs = match s.kind {
        Kind::RenewOnly => e,
        Kind::FirstRun => u64::from(s.orders),
        Kind::Steady => 0,
    };
    let renewals = if s.kind == Kind::Steady { 0 } else { e };
    BTreeMap::from([
        ("ListUserCertificateOrder", pages),
        (
            "DescribeCertificateState",
            installs + renewals * u64::from(POLLS + 1),
        ),
        ("RenewCertificateOrderForPackageRequest", renewals),
    ])
}

/// Lower bounds in seconds: from the rate limits (the listing first, at 10/s with a
/// one-second burst; then describes and renews in parallel, each at its limit), and
/// from the disk (the listing, then every fsync at `fsync_s`, `CONCURRENCY` at once).
fn bounds(s: &Shape, need: &BTreeMap<&str, u64>, fsync_s: f64) -> (f64, f64) {
    let list = (need["ListUserCertificateOrder"] as f64 - LIST_RATE).max(0.0) / LIST_RATE;
    let rate = list
        + (need["DescribeCertificateState"] as f64 / DESCRIBE_RATE)
            .max(need["RenewCertificateOrderForPackageRequest"] as f64 / RENEW_RATE);
    let e = u64::from(s.expiring);
    let fsyncs = match s.kind {
        Kind::RenewOnly => e * FSYNCS_RENEWED,
        Kind::FirstRun => (u64::from(s.orders) - e) * FSYNCS_INSTALL + e * FSYNCS_RENEWED,
        Kind::Steady => 0,
    };
    (
        rate,
        list + fsyncs as f64 * fsync_s / f64::from(CONCURRENCY),
    )
}

struct Row {
    shape: String,
    wall: f64,
    rate_bound: f64,
    disk_bound: f64,
    made: u64,
    needed: u64,
    rss_mib: f64,
    cpu: f64,
    sim_cpu: f64,
}

fn report(s: &Shape, run: &Run, fsync_s: f64) -> Row {
    let need = needed(s);
    let (rate_bound, disk_bound) = bounds(s, &need, fsync_s);
    let made: u64 = run.calls.values().sum();
    let needed: u64 = need.values().sum();
    println!(
        "\n{}: {} orders, {} expiring, {} ({:?}{}): {:.1} s wall",
        s.name,
        s.orders,
        s.expiring,
        s.algorithm,
        s.kind,
        if s.slow_fsync_ms > 0 {
            format!(", every fsync +{} ms", s.slow_fsync_ms)
        } else {
            String::new()
        },
        run.wall
    );
    println!("  {:<42} {:>8} {:>8}", "API calls", "made", "needed");
    let mut actions: Vec<&str> = need.keys().copied().collect();
    actions.extend(run.calls.keys().map(String::as_str));
    actions.sort_unstable();
    actions.dedup();
    for a in actions {
        println!(
            "  {:<42} {:>8} {:>8}",
            a,
            run.calls.get(a).copied().unwrap_or(0),
            need.get(a).copied().unwrap_or(0)
        );
    }
    println!(
        "  total {made} made / {needed} needed ({:+.1}%); throttled by the server: {}",
        (made as f64 / needed.max(1) as f64 - 1.0) * 100.0,
        run.throttled
    );
    let bound = rate_bound.max(disk_bound);
    println!(
        "  bounds: rate limits {rate_bound:.1} s, disk {disk_bound:.1} s (fsync {:.2} ms); wall / bound = {:.2}",
        fsync_s * 1000.0,
        run.wall / bound
    );
    println!(
        "  cas-renewd: peak RSS {:.1} MiB, CPU {:.1} s; simulator CPU {:.1} s",
        run.rss_kib as f64 / 1024.0,
        run.cpu,
        run.sim_cpu
    );
    Row {
        shape: s.name.clone(),
        wall: run.wall,
        rate_bound,
        disk_bound,
        made,
        needed,
        rss_mib: run.rss_kib as f64 / 1024.0,
        cpu: run.cpu,
        sim_cpu: run.sim_cpu,
    }
}

/// Runs `shape` (and, for a first run with `then_steady`, the pass after it).
async fn run_shape(
    bin: &Path,
    shape: &Shape,
    fsync_s: f64,
    then_steady: Option<String>,
    wrap: Option<&str>,
) -> anyhow::Result<Vec<Row>> {
    let sim = Simulator::start(
        &scenario(shape.orders, shape.expiring, &shape.algorithm)?,
        "127.0.0.1:0",
    )
    .await?;
    let dir = tempfile::tempdir()?;
    let certs = match shape.kind {
        Kind::RenewOnly => configured(dir.path(), shape.expiring),
        _ => String::new(),
    };
    let extra = match shape.kind {
        Kind::RenewOnly => String::new(),
        _ => discover(dir.path()),
    };
    let config = write_config(dir.path(), &sim.url(), &certs, &extra)?;
    let slow_s = shape.slow_fsync_ms as f64 / 1000.0;
    let run = once(bin, &config, &sim, shape.slow_fsync_ms, wrap).await?;
    let mut rows = vec![report(shape, &run, fsync_s + slow_s)];
    if let Some(name) = then_steady {
        let steady = Shape {
            name,
            kind: Kind::Steady,
            orders: shape.orders,
            expiring: shape.expiring,
            algorithm: shape.algorithm.clone(),
            slow_fsync_ms: 0,
        };
        let run = once(bin, &config, &sim, 0, wrap).await?;
        rows.push(report(&steady, &run, fsync_s));
    }
    Ok(rows)
}

fn shapes(a: &Args) -> Vec<(Shape, Option<String>)> {
    let shape = |name: &str, kind, orders, expiring, algorithm: &str, slow| Shape {
        name: name.to_owned(),
        kind,
        orders,
        expiring,
        algorithm: algorithm.to_owned(),
        slow_fsync_ms: slow,
    };
    let (so, se, lo, le) = (
        a.small_orders,
        a.small_expiring,
        a.large_orders,
        a.large_expiring,
    );
    let all = vec![
        (shape("renew-only", Kind::RenewOnly, so, se, "ECC", 0), None),
        (
            shape("first-run-rsa", Kind::FirstRun, so, se, "RSA", 0),
            None,
        ),
        (
            shape("first-run-ecc", Kind::FirstRun, so, se, "ECC", 0),
            None,
        ),
        (
            shape("slow-disk", Kind::FirstRun, so, se, "ECC", a.slow_fsync_ms),
            None,
        ),
        (
            shape(
                "first-run-10k",
                Kind::FirstRun,
                lo,
                le,
                &a.large_algorithm,
                0,
            ),
            Some("steady-10k".to_owned()),
        ),
        (
            shape(
                "renew-only-10k",
                Kind::RenewOnly,
                lo,
                le,
                &a.large_algorithm,
                0,
            ),
            None,
        ),
    ];
    let wanted: Vec<&str> = a.shapes.split(',').map(str::trim).collect();
    all.into_iter()
        .filter(|(s, _)| wanted.contains(&"all") || wanted.contains(&s.name.as_str()))
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = cas_renewd_bin()?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let probe = tempfile::tempdir()?;
    let fsync_s = misc::fsync_floor(probe.path(), 100)?;
    println!(
        "cas-renewd bench; machine: {cores} cores; fsync floor of the temporary directory's disk: {:.2} ms",
        fsync_s * 1000.0
    );
    let mut rows = Vec::new();
    for (shape, steady) in shapes(&args) {
        rows.extend(run_shape(&bin, &shape, fsync_s, steady, args.wrap.as_deref()).await?);
    }
    println!(
        "\n| shape | wall | bound: rate limits | bound: disk | wall / bound | calls made / needed | peak RSS | CPU cas-renewd | CPU simulator |\n|---|---|---|---|---|---|---|---|---|"
    );
    for r in &rows {
        println!(
            "| {} | {:.1} s | {:.1} s | {:.1} s | {:.2} | {} / {} ({:+.1} %) | {:.1} MiB | {:.1} s | {:.1} s |",
            r.shape,
            r.wall,
            r.rate_bound,
            r.disk_bound,
            r.wall / r.rate_bound.max(r.disk_bound),
            r.made,
            r.needed,
            (r.made as f64 / r.needed.max(1) as f64 - 1.0) * 100.0,
            r.rss_mib,
            r.cpu,
            r.sim_cpu
        );
    }
    if args.keygen {
        println!("\nkey generation (ms per key, one core):");
        for (alg, ms) in misc::key_generation() {
            println!("  {alg:<11} {ms:>9.3}");
        }
        let blocking = misc::stall(true).await;
        let inline = misc::stall(false).await;
        println!(
            "runtime responsiveness while 4 RSA-4096 keys are made: worst 10 ms-ticker lateness {blocking:.1} ms on the blocking pool (as the engine does), {inline:.1} ms if made on the runtime's workers"
        );
    }
    if args.idle > 0 {
        idle(&args, &bin).await?;
    }
    let wanted = |n: &str| {
        args.shapes
            .split(',')
            .any(|s| s.trim() == n || s.trim() == "all")
    };
    if wanted("sdk") {
        sdk(&args, &rows).await?;
    }
    Ok(())
}

/// The idle daemon: a small account, nothing due until a distant cron time.
async fn idle(args: &Args, bin: &Path) -> anyhow::Result<()> {
    let sim = Simulator::start(&scenario(100, 10, "ECC")?, "127.0.0.1:0").await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = tempfile::tempdir()?;
    let cfg = write_config(
        dir.path(),
        &sim.url(),
        &configured(dir.path(), 10),
        &format!(
            "schedule: {{ cron: \"0 17 3 * * *\", run_at_start: false }}\nmetrics: {{ listen: \"127.0.0.1:{port}\" }}\n"
        ),
    )?;
    let (cpu, rss) = misc::idle_daemon(bin, &cfg, args.idle).await?;
    println!(
        "\nidle daemon: {cpu:.2} s CPU over {} s ({:.3}% of one core); RSS {:.1} MiB",
        args.idle,
        cpu / args.idle as f64 * 100.0,
        rss as f64 / 1024.0
    );
    Ok(())
}

/// The small account's renewals scripted sequentially with the official Python
/// SDK, every one of them run, against the renew-only pass.
async fn sdk(args: &Args, rows: &[Row]) -> anyhow::Result<()> {
    let sim = Simulator::start(
        &scenario(args.small_orders, args.small_expiring, "ECC")?,
        "127.0.0.1:0",
    )
    .await?;
    let addr = sim.addr().to_string();
    let python = args.python.clone();
    let n = args.small_expiring;
    let run = tokio::task::spawn_blocking(move || misc::sdk_baseline(&python, &addr, n)).await??;
    let Some(run) = run else {
        println!(
            "\nPython SDK baseline skipped: {} cannot import alibabacloud_cas20200407 (scripts/test.sh builds it)",
            args.python.display()
        );
        return Ok(());
    };
    let total = run.list_s + run.renewals_s;
    print!(
        "\nPython SDK baseline (sequential, as users script it), all run: listing {:.1} s, {} renewals {:.1} s ({:.2} s each), {total:.1} s in all",
        run.list_s,
        run.renewed,
        run.renewals_s,
        run.renewals_s / f64::from(run.renewed.max(1))
    );
    match rows.iter().find(|r| r.shape == "renew-only") {
        Some(r) => println!(
            "; cas-renewd renew-only ({n} renewals, installs included) {:.1} s: {:.1}x faster",
            r.wall,
            total / r.wall
        ),
        None => println!(" (run the renew-only shape too for the ratio)"),
    }
    Ok(())
}
