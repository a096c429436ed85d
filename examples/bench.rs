//! `cargo build --release --bin cas-renewd --example bench && target/release/examples/bench`: a full pass at account scale against the
//! simulator, with the figures the README quotes: wall time against the lower
//! bound the rate limits imply, API calls per action against the minimum needed,
//! peak RSS and CPU of the `cas-renewd once` process, key generation cost, runtime
//! responsiveness during RSA generation, idle CPU of the daemon, and the same pass
//! scripted with the official Python SDK.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cas_renewd::config::KeyAlgorithm;
use cas_renewd::pki::Key;
use cas_sim::{Scenario, Simulator};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "Benchmark a full cas-renewd pass against the simulator")]
struct Args {
    /// Orders in the simulated account.
    #[arg(long, default_value_t = 10_000)]
    orders: u32,
    /// Of which this many are expiring (and managed, and renewed).
    #[arg(long, default_value_t = 1_000)]
    expiring: u32,
    /// Renewals the sequential Python SDK baseline performs (0 skips it); its time
    /// for all `expiring` is extrapolated from these.
    #[arg(long, default_value_t = 40)]
    sdk_sample: u32,
    /// Seconds over which the idle daemon's CPU is measured (0 skips it).
    #[arg(long, default_value_t = 60)]
    idle: u64,
    /// Python with the official SDK (scripts/test.sh builds target/sdk-venv).
    #[arg(long, default_value = "target/sdk-venv/bin/python")]
    python: PathBuf,
}

/// Server-side limits of the scenario, per second (ListUserCertificateOrder as CAS
/// documents; the others are not documented and set here).
const LIST_RATE: f64 = 10.0;
const DESCRIBE_RATE: f64 = 50.0;
const RENEW_RATE: f64 = 20.0;
const POLLS: u32 = 2;
const PAGE: u32 = 100;

fn scenario(orders: u32, expiring: u32) -> anyhow::Result<Scenario> {
    let text = format!(
        "access_key: {{ id: bench, secret: bench-secret }}\ngenerate: {{ count: {orders}, expiring_fraction: {}, domain: \"host-{{n}}.example.com\", algorithm: ECC }}\nissuance: {{ polls_before_issued: {POLLS} }}\nrate_limits: {{ ListUserCertificateOrder: {LIST_RATE}, DescribeCertificateState: {DESCRIBE_RATE}, RenewCertificateOrderForPackageRequest: {RENEW_RATE}, default: 100 }}\nmax_page_size: {PAGE}\n",
        f64::from(expiring) / f64::from(orders)
    );
    Ok(Scenario::parse(&text, Path::new("bench"))?)
}

/// Peak RSS (kB) and CPU seconds of a running process, from /proc.
fn proc_figures(pid: u32) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15; after the ")" they are the 12th and 13th.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some((hwm, ticks / 100.0))
}

fn cas_renewd_bin() -> anyhow::Result<PathBuf> {
    // Examples land in target/<profile>/examples/, next to nothing but themselves;
    // the daemon's binary is one level up.
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

fn write_config(dir: &Path, endpoint: &str, expiring: u32, extra: &str) -> anyhow::Result<PathBuf> {
    let mut cfg = format!(
        "api:\n  endpoint: \"{endpoint}\"\n  dns_endpoint: \"{endpoint}\"\n  rate_limit_per_second: 95\n  rate_limits: {{ ListUserCertificateOrder: {}, DescribeCertificateState: {}, RenewCertificateOrderForPackageRequest: {} }}\ncredentials: {{ access_key_id: bench, access_key_secret: bench-secret }}\nstate_dir: {d}/state\nrenewal: {{ poll_interval: 1s, poll_max_interval: 4s, concurrency: 64 }}\nlog: {{ level: warn }}\n{extra}certificates:\n",
        LIST_RATE * 0.95,
        DESCRIBE_RATE * 0.95,
        RENEW_RATE * 0.95,
        d = dir.display()
    );
    for n in 0..expiring {
        cfg.push_str(&format!(
            "  - {{ name: h{n}, domain: host-{n}.example.com, output: {{ dir: {}/out/h{n} }} }}\n",
            dir.display()
        ));
    }
    let path = dir.join("config.yaml");
    cas_renewd::store::write_file(
        &path,
        cfg.as_bytes(),
        cas_renewd::store::FileSpec::private(),
    )?;
    Ok(path)
}

fn key_generation() -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for (alg, n) in [
        (KeyAlgorithm::EcdsaP256, 200),
        (KeyAlgorithm::EcdsaP384, 200),
        (KeyAlgorithm::Rsa2048, 8),
        (KeyAlgorithm::Rsa3072, 4),
        (KeyAlgorithm::Rsa4096, 3),
    ] {
        let t = Instant::now();
        for _ in 0..n {
            let _ = Key::generate(alg);
        }
        out.push((
            alg.as_str().to_owned(),
            t.elapsed().as_secs_f64() * 1000.0 / f64::from(n),
        ));
    }
    out
}

/// The largest lateness of a 10 ms ticker while RSA-4096 keys are made, with the
/// generation on the blocking pool (as the engine does) or on a runtime worker.
async fn stall(on_blocking_pool: bool) -> f64 {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let ticker = tokio::spawn(async move {
        let mut worst = Duration::ZERO;
        let mut next = tokio::time::Instant::now();
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            next += Duration::from_millis(10);
            tokio::time::sleep_until(next).await;
            worst = worst.max(tokio::time::Instant::now().saturating_duration_since(next));
        }
        worst
    });
    let mut gens = Vec::new();
    for _ in 0..4 {
        gens.push(if on_blocking_pool {
            tokio::task::spawn_blocking(|| Key::generate(KeyAlgorithm::Rsa4096).map(|_| ()))
        } else {
            tokio::spawn(async { Key::generate(KeyAlgorithm::Rsa4096).map(|_| ()) })
        });
    }
    for g in gens {
        let _ = g.await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    ticker
        .await
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(f64::NAN)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = cas_renewd_bin()?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!(
        "cas-renewd bench: {} orders, {} expiring; machine: {cores} cores",
        args.orders, args.expiring
    );

    // 1. The simulated account.
    let sc = scenario(args.orders, args.expiring)?;
    let t = Instant::now();
    let sim = Simulator::start(&sc, "127.0.0.1:0").await?;
    let sim_load = t.elapsed();
    println!(
        "simulator: {} orders loaded in {:.0} ms",
        args.orders,
        sim_load.as_secs_f64() * 1000.0
    );

    // 2. The pass, as a separate process so its RSS and CPU are its own.
    let dir = tempfile::tempdir()?;
    let config = write_config(dir.path(), &sim.url(), args.expiring, "")?;
    let started = Instant::now();
    let mut child = Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .arg("once")
        .env("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting cas-renewd once")?;
    let pid = child.id();
    let mut last = (0u64, 0.0f64);
    let status = loop {
        if let Some(f) = proc_figures(pid) {
            last = f;
        }
        if let Some(st) = child.try_wait()? {
            break st;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let wall = started.elapsed().as_secs_f64();
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read as _;
            let _ = e.read_to_string(&mut err);
        }
        bail!(
            "cas-renewd once failed: {status}\n{}",
            err.lines().rev().take(20).collect::<Vec<_>>().join("\n")
        );
    }
    let state = sim.state();
    let calls: BTreeMap<String, u64> = serde_json::from_value(state["calls"].clone())?;
    let pages = u64::from(args.orders.div_ceil(PAGE));
    let e = u64::from(args.expiring);
    // Strictly needed: one listing; per certificate one describe to install the
    // current certificate (the disk starts empty), one renew, and POLLS+1 polls.
    let min: BTreeMap<&str, u64> = BTreeMap::from([
        ("ListUserCertificateOrder", pages),
        ("DescribeCertificateState", e * (1 + u64::from(POLLS) + 1)),
        ("RenewCertificateOrderForPackageRequest", e),
    ]);
    let needed: u64 = min.values().sum();
    let made: u64 = calls.values().sum();
    // The listing must come first (10/s, with a one-second burst); then describes
    // and renews proceed in parallel, each at its own limit.
    let bound = (pages as f64 - LIST_RATE).max(0.0) / LIST_RATE
        + (min["DescribeCertificateState"] as f64 / DESCRIBE_RATE).max(e as f64 / RENEW_RATE);
    let renewed = std::fs::read_dir(dir.path().join("out"))?.count();
    println!("\npass: {renewed} certificates renewed in {wall:.1} s wall");
    println!("  {:<42} {:>8} {:>8}", "API calls", "made", "minimum");
    for (action, n) in &calls {
        println!(
            "  {:<42} {:>8} {:>8}",
            action,
            n,
            min.get(action.as_str()).copied().unwrap_or(0)
        );
    }
    println!(
        "  {:<42} {:>8} {:>8}  ({:+.1}% over the minimum; throttled by the server: {})",
        "total",
        made,
        needed,
        (made as f64 / needed as f64 - 1.0) * 100.0,
        state["throttled"]
    );
    println!(
        "  lower bound from the rate limits: {bound:.1} s; wall / bound = {:.2}",
        wall / bound
    );
    println!(
        "  peak RSS {:.1} MiB; CPU {:.1} s (user+system) of `cas-renewd once`",
        last.0 as f64 / 1024.0,
        last.1
    );

    // 3. Key generation.
    println!("\nkey generation (ms per key, one core):");
    for (alg, ms) in key_generation() {
        println!("  {alg:<11} {ms:>9.3}");
    }
    let blocking = stall(true).await;
    let inline = stall(false).await;
    println!(
        "runtime responsiveness while 4 RSA-4096 keys are made: worst 10 ms-ticker lateness {blocking:.1} ms on the blocking pool (as the engine does), {inline:.1} ms if made on the runtime's workers"
    );

    // 4. The idle daemon.
    if args.idle > 0 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let idle_dir = tempfile::tempdir()?;
        let cfg = write_config(
            idle_dir.path(),
            &sim.url(),
            args.expiring,
            &format!(
                "schedule: {{ cron: \"0 17 3 * * *\", run_at_start: false }}\nmetrics: {{ listen: \"127.0.0.1:{port}\" }}\n"
            ),
        )?;
        let mut d = Command::new(&bin)
            .arg("--config")
            .arg(&cfg)
            .arg("run")
            .env("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let a = proc_figures(d.id()).map(|f| f.1).unwrap_or(0.0);
        tokio::time::sleep(Duration::from_secs(args.idle)).await;
        let (rss, b) = proc_figures(d.id()).unwrap_or((0, 0.0));
        let _ = Command::new("kill")
            .args(["-TERM", &d.id().to_string()])
            .status();
        let _ = d.wait();
        println!(
            "\nidle daemon: {:.2} s CPU over {} s ({:.3}% of one core); RSS {:.1} MiB",
            b - a,
            args.idle,
            (b - a) / args.idle as f64 * 100.0,
            rss as f64 / 1024.0
        );
    }

    // 5. The same pass scripted with the official Python SDK, sequentially.
    if args.sdk_sample > 0 {
        let ok = Command::new(&args.python)
            .args(["-c", "import alibabacloud_cas20200407"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            println!(
                "\nPython SDK baseline skipped: {} cannot import alibabacloud_cas20200407 (scripts/test.sh builds it)",
                args.python.display()
            );
        } else {
            let sim2 =
                Simulator::start(&scenario(args.orders, args.expiring)?, "127.0.0.1:0").await?;
            let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/baseline.py");
            let out = Command::new(&args.python)
                .arg(script)
                .args([
                    sim2.addr().to_string(),
                    "bench".into(),
                    "bench-secret".into(),
                    args.sdk_sample.to_string(),
                ])
                .output()?;
            let text = String::from_utf8_lossy(&out.stdout);
            let get = |k: &str| -> Option<f64> {
                text.lines()
                    .find_map(|l| l.strip_prefix(&format!("{k}=")))
                    .and_then(|v| v.trim().parse().ok())
            };
            match (get("list_s"), get("renew_each_s"), get("renewed")) {
                (Some(list), Some(each), Some(n)) => {
                    let total = list + each * args.expiring as f64;
                    println!(
                        "\nPython SDK baseline (sequential, as users script it): listing {list:.1} s; {n:.0} renewals measured at {each:.2} s each; all {} extrapolated to {total:.0} s; cas-renewd is {:.1}x faster",
                        args.expiring,
                        total / wall
                    );
                }
                _ => println!(
                    "\nPython SDK baseline failed:\n{text}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ),
            }
        }
    }
    Ok(())
}
