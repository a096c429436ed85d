//! The fleet scenarios' harness: hosts (a configuration, state and output of their
//! own, a daemon that can be killed and started again), the fleet of them around
//! one simulator and one etcd prefix, and what the tests read back (renew calls,
//! convergence, install spread, lock holders, doctor's checks), and libfaketime.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use cas_renewd::pki::{self, Key};
use serde_json::Value;

use crate::common::{self, DaemonProcess, TestEnv, bin_command, free_port};

pub const PREFIX: &str = "/cas-renewd/test";
/// The shortest lease the configuration accepts: a killed holder's locks free
/// up after it.
pub const LEASE_TTL: &str = "5s";

/// One host of the fleet: its configuration, its output and state under
/// `<tmp>/<name>/`, and its daemon while it runs.
pub struct Host {
    pub name: String,
    pub config: PathBuf,
    pub root: PathBuf,
    /// Variables added to the daemon's environment (libfaketime for a skewed clock).
    pub env: Vec<(String, String)>,
    pub daemon: Option<DaemonProcess>,
    pub starts: usize,
}

impl Host {
    pub fn start(&mut self) {
        let mut c = bin_command(&self.config, &["run"], Some("info"));
        for (k, v) in &self.env {
            c.env(k, v);
        }
        self.starts += 1;
        let log = self.root.join(format!("run.{}.log", self.starts));
        self.daemon = Some(DaemonProcess::start(c, log));
    }

    /// SIGKILL (the process has no chance to release its lease) and reap.
    pub fn kill(&mut self) {
        // DaemonProcess's Drop sends SIGKILL and waits.
        self.daemon.take();
    }

    pub fn out(&self, cert: &str) -> PathBuf {
        self.root.join("out").join(cert)
    }

    /// Every log of this host, oldest first, for failure messages.
    pub fn logs(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                let text = std::fs::read_to_string(self.root.join(format!("run.{n}.log")))
                    .unwrap_or_default();
                format!("--- {} run {n}\n{text}", self.name)
            })
            .collect()
    }
}

/// A simulator with `certs` due orders, and `hosts` configurations for them
/// that share one etcd prefix and sealing key.
pub struct Fleet {
    pub env: TestEnv,
    pub hosts: Vec<Host>,
    pub certs: Vec<String>,
    pub endpoints: Vec<String>,
}

/// The scenario: `n` orders expiring in 10 days (due), issued after `polls` polls.
pub fn scenario(n: usize, polls: u32) -> String {
    let mut s = String::from("orders:\n");
    for i in 0..n {
        s.push_str(&format!(
            "  - {{ domain: c{i}.example.com, expires_in: 10d }}\n"
        ));
    }
    s.push_str(&format!(
        "issuance: {{ polls_before_issued: {polls} }}\nrate_limits: {{ default: 1000 }}\n"
    ));
    s
}

impl Fleet {
    pub async fn new(n: usize, polls: u32, hosts: usize, endpoints: Vec<String>) -> Fleet {
        let certs: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
        let env = TestEnv::builder(&scenario(n, polls))
            .api(", max_attempts: 6")
            // An intent whose paid call may or may not have gone out (a kill, or an
            // etcd write whose answer was lost) is unclear: paid again only after
            // unclear_retry_after and only if no order shows. 3 s instead of 24 h
            // lets the tests see that path end, still one call per order.
            .renewal(Some(
                "poll_interval: 100ms, poll_max_interval: 200ms, issuance_timeout: 2m, concurrency: 8, unclear_retry_after: 3s",
            ))
            .certs(
                certs
                    .iter()
                    .map(|c| common::Cert::new(c, &format!("{c}.example.com"))),
            )
            .log_env(Some("info"))
            .start()
            .await;
        let d = env.dir().display().to_string();
        let key = env.path("fleet.key");
        let bytes: [u8; 32] = rand::random();
        std::fs::write(&key, bytes).expect("sealing key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let base = env.config_text();
        let quoted: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
        let hosts = (0..hosts)
            .map(|i| {
                let name = format!("h{i}");
                let root = env.path(&name);
                std::fs::create_dir_all(&root).expect("host dir");
                // Each host: its own state and output, metrics port, and name;
                // passes retried within seconds so a takeover is not left to cron.
                let text = base
                    .replace(&format!("{d}/state"), &format!("{d}/{name}/state"))
                    .replace(&format!("{d}/out/"), &format!("{d}/{name}/out/"))
                    .replacen(
                        "certificates:\n",
                        &format!(
                            "metrics: {{ listen: \"127.0.0.1:{}\" }}\nschedule: {{ jitter: 0s, retry_after: 1s, retry_max: 2s }}\nfleet:\n  etcd: {{ endpoints: [{}], prefix: {PREFIX}, lease_ttl: {LEASE_TTL} }}\n  sealing_key_file: {}\n  host_name: {name}\ncertificates:\n",
                            free_port(),
                            quoted.join(", "),
                            key.display()
                        ),
                        1,
                    );
                let config = root.join("config.yaml");
                std::fs::write(&config, text).expect("host config");
                // It holds the simulator's AccessKey secret: root-only, as in production.
                std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600))
                    .expect("chmod config");
                Host {
                    name,
                    config,
                    root,
                    env: Vec::new(),
                    daemon: None,
                    starts: 0,
                }
            })
            .collect();
        Fleet {
            env,
            hosts,
            certs,
            endpoints,
        }
    }

    /// Every host's daemon, started back to back (the same instant, as after a
    /// rollout that restarts them all with `run_at_start`).
    pub fn start_all(&mut self) {
        for h in &mut self.hosts {
            h.start();
        }
    }

    /// [`Fleet::start_all`], then waits (60 s at most) for the first paid call:
    /// the pass is spending.
    pub async fn start_all_until_spending(&mut self) {
        self.start_all();
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.renew_total() == 0 {
            assert!(Instant::now() < deadline, "no renew call within 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Paid renew calls per source order.
    pub fn renew_calls(&self) -> BTreeMap<String, u64> {
        self.env
            .renew_calls()
            .as_object()
            .expect("renew_calls map")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().expect("count")))
            .collect()
    }

    pub fn renew_total(&self) -> u64 {
        self.renew_calls().values().sum()
    }

    /// Whether every host has every certificate renewed, byte-identical to the
    /// other hosts', with a key that matches it.
    pub fn converged(&self) -> Result<(), String> {
        for cert in &self.certs {
            let mut first: Option<(Vec<u8>, Vec<u8>)> = None;
            for h in &self.hosts {
                let dir = h.out(cert);
                let (Ok(c), Ok(k)) = (
                    std::fs::read(dir.join("cert.pem")),
                    std::fs::read(dir.join("privkey.pem")),
                ) else {
                    return Err(format!("{}: {cert} not installed", h.name));
                };
                let leaf =
                    pki::read_leaf(&String::from_utf8_lossy(&c)).map_err(|e| e.to_string())?;
                if (leaf.not_after - chrono::Utc::now().timestamp()) < 300 * 86_400 {
                    return Err(format!("{}: {cert} still the old certificate", h.name));
                }
                let key = Key::from_pem(&String::from_utf8_lossy(&k)).map_err(|e| e.to_string())?;
                if key.spki_sha256() != leaf.spki_sha256 {
                    return Err(format!(
                        "{}: {cert}: privkey.pem does not match cert.pem",
                        h.name
                    ));
                }
                match &first {
                    None => first = Some((c, k)),
                    Some((c0, k0)) if *c0 != c || *k0 != k => {
                        return Err(format!("{}: {cert} differs from the first host's", h.name));
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }

    /// Waits (bounded by `limit`) until [`Fleet::converged`]; fails with every log.
    pub async fn wait_converged(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let Err(why) = self.converged() else {
                return;
            };
            if Instant::now() > deadline {
                let logs: String = self.hosts.iter().map(Host::logs).collect();
                panic!(
                    "not converged after {limit:?}: {why}\nrenew calls {:?}\n{logs}",
                    self.renew_calls()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// One renew call per order, and one order per certificate.
    pub fn assert_one_call_per_order(&self) {
        let calls = self.renew_calls();
        assert_eq!(calls.len(), self.certs.len(), "orders renewed: {calls:?}");
        assert!(
            calls.values().all(|&n| n == 1),
            "renew calls per order: {calls:?}"
        );
    }

    /// The longest time, over the certificates, from the first host's install of
    /// the new version (right after issuance, on the host that renewed it) to the
    /// last host's.
    pub fn install_spread(&self) -> Duration {
        self.certs
            .iter()
            .map(|cert| {
                let times: Vec<SystemTime> = self
                    .hosts
                    .iter()
                    .map(|h| {
                        std::fs::metadata(h.out(cert).join("cert.pem"))
                            .and_then(|m| m.modified())
                            .expect("cert.pem mtime")
                    })
                    .collect();
                let first = times.iter().min().expect("a host");
                let last = times.iter().max().expect("a host");
                last.duration_since(*first).unwrap_or_default()
            })
            .max()
            .unwrap_or_default()
    }

    /// The hosts holding a certificate lock right now (from etcd's lock keys).
    pub async fn lock_holders(&self) -> Vec<String> {
        let Ok(mut c) = etcd_client::Client::connect(&self.endpoints, None).await else {
            return Vec::new();
        };
        let opts = etcd_client::GetOptions::new().with_prefix();
        let Ok(resp) = c.get(format!("{PREFIX}/certs/"), Some(opts)).await else {
            return Vec::new();
        };
        let mut holders: Vec<String> = resp
            .kvs()
            .iter()
            .filter(|kv| kv.key_str().is_ok_and(|k| k.ends_with("/lock")))
            .filter_map(|kv| serde_json::from_slice::<Value>(kv.value()).ok())
            .filter_map(|v| v["host"].as_str().map(str::to_owned))
            .collect();
        holders.sort();
        holders.dedup();
        holders
    }

    /// Certificate attempts the hosts' logs call unclear (an intent journaled,
    /// whether its paid call went out not known), counted once per certificate.
    pub fn unclear_certs(&self) -> usize {
        let logs: String = self.hosts.iter().map(Host::logs).collect();
        self.certs
            .iter()
            .filter(|c| {
                logs.lines().any(|l| {
                    l.contains(&format!("cert={c} ")) && l.contains("had an unclear outcome")
                })
            })
            .count()
    }

    pub fn host_index(&self, name: &str) -> Option<usize> {
        self.hosts.iter().position(|h| h.name == name)
    }
}

/// libfaketime's preload library, if installed (scripts/test.sh installs it).
pub fn libfaketime() -> Option<PathBuf> {
    let found = ["x86_64-linux-gnu", "aarch64-linux-gnu"]
        .iter()
        .map(|arch| {
            Path::new("/usr/lib")
                .join(arch)
                .join("faketime/libfaketime.so.1")
        })
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var("CAS_RENEWD_E2E").as_deref() != Ok("1"),
            "CAS_RENEWD_E2E=1 but libfaketime is missing; run scripts/test.sh"
        );
        eprintln!("skipped: libfaketime is not installed (scripts/test.sh installs it)");
    }
    found
}

/// Seconds between the last log line's timestamp (RFC 3339, first field) and now.
pub fn log_clock_skew(log: &str) -> i64 {
    let stamp = log
        .lines()
        .rev()
        .find_map(|l| {
            l.split_whitespace()
                .next()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        })
        .unwrap_or_else(|| panic!("no timestamped line in:\n{log}"));
    stamp.timestamp() - chrono::Utc::now().timestamp()
}

impl Fleet {
    /// `doctor --json` on host `i`: each check's name to its status and message.
    pub async fn doctor(&self, i: usize) -> BTreeMap<String, (String, String)> {
        let c = bin_command(&self.hosts[i].config, &["doctor", "--json"], Some("warn"));
        let o = self.env.output(c).await;
        let checks: Vec<Value> = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", common::show(&o)));
        checks
            .iter()
            .map(|c| {
                let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
                (s("check"), (s("status"), s("message")))
            })
            .collect()
    }

    /// Gives host `i` a sealing key of its own (not the fleet's).
    pub fn give_own_key(&mut self, i: usize) {
        let h = &self.hosts[i];
        let key = h.root.join("own.key");
        std::fs::write(&key, rand::random::<[u8; 32]>()).expect("own key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let text = std::fs::read_to_string(&h.config).expect("config");
        let fleet_key = self.env.path("fleet.key").display().to_string();
        std::fs::write(
            &h.config,
            text.replace(&fleet_key, &key.display().to_string()),
        )
        .expect("config");
    }
}
