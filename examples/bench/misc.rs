//! The bench's measurements besides the passes: figures of a process from /proc,
//! the disk's fsync floor, key generation cost, runtime responsiveness during RSA
//! generation, the idle daemon, and the same renewals scripted with the official
//! Python SDK.

use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cas_renewd::config::KeyAlgorithm;
use cas_renewd::pki::Key;

/// Peak RSS (kB) and CPU seconds of a running process, from /proc.
pub fn proc_figures(pid: u32) -> Option<(u64, f64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((hwm, cpu_seconds(&format!("/proc/{pid}/stat"))?))
}

/// User + system CPU seconds from a /proc stat file.
pub fn cpu_seconds(stat_path: &str) -> Option<f64> {
    let stat = fs::read_to_string(stat_path).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15; after the ")" they are the 12th and 13th.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Seconds one fsync takes on the disk holding `dir`: the mean over `n` rounds of
/// what an install does per file (write, fsync, rename, fsync of the directory).
pub fn fsync_floor(dir: &Path, n: u32) -> anyhow::Result<f64> {
    let t = Instant::now();
    for i in 0..n {
        let tmp = dir.join(format!(".probe-{i}.tmp"));
        let mut f = File::create(&tmp)?;
        f.write_all(&[b'x'; 2048])?;
        f.sync_all()?;
        fs::rename(&tmp, dir.join("probe"))?;
        File::open(dir)?.sync_all()?;
    }
    fs::remove_file(dir.join("probe"))?;
    Ok(t.elapsed().as_secs_f64() / f64::from(2 * n))
}

pub fn key_generation() -> Vec<(String, f64)> {
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
pub async fn stall(on_blocking_pool: bool) -> f64 {
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

/// CPU seconds of an idle `cas-renewd run` over `secs`, and its RSS (kB).
pub async fn idle_daemon(bin: &Path, config: &Path, secs: u64) -> anyhow::Result<(f64, u64)> {
    let mut d = Command::new(bin)
        .arg("--config")
        .arg(config)
        .arg("run")
        .env("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let a = proc_figures(d.id()).map(|f| f.1).unwrap_or(0.0);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (rss, b) = proc_figures(d.id()).unwrap_or((0, 0.0));
    let _ = Command::new("kill")
        .args(["-TERM", &d.id().to_string()])
        .status();
    let _ = d.wait();
    Ok((b - a, rss))
}

/// What the SDK script measured: the listing, then `renewed` renewals one after
/// another, all run (nothing extrapolated).
pub struct SdkRun {
    pub list_s: f64,
    pub renewals_s: f64,
    pub renewed: u32,
}

/// Runs `tests/sdk/baseline.py` against `addr` for `renewals` renewals; `Ok(None)`
/// when `python` lacks the official SDK.
pub fn sdk_baseline(python: &Path, addr: &str, renewals: u32) -> anyhow::Result<Option<SdkRun>> {
    let ok = Command::new(python)
        .args(["-c", "import alibabacloud_cas20200407"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        return Ok(None);
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/baseline.py");
    let out = Command::new(python)
        .arg(script)
        .args([addr, "bench", "bench-secret", &renewals.to_string()])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |k: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.trim().parse().ok())
    };
    match (get("list_s"), get("renew_each_s"), get("renewed")) {
        (Some(list_s), Some(each), Some(n)) => Ok(Some(SdkRun {
            list_s,
            renewals_s: each * n,
            renewed: n as u32,
        })),
        _ => anyhow::bail!(
            "Python SDK baseline failed:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}
