//! Fleet scenarios at scale (issue 13): three real daemons per test against one
//! simulator and real etcd members on loopback ports. 20 certificates started at
//! the same instant, 30 SIGKILLs of lock holders, etcd stopped during a pass, a
//! lost member of a 3-member cluster, and hosts whose clocks are 10 minutes off.
//! Every test checks one paid renew call per order and byte-identical matching
//! pairs on every host, and prints a `figures:` line for the README.
#![cfg(feature = "fleet")]

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use cas_renewd::pki::{self, Key};
use common::etcd::EtcdCluster;
use common::{DaemonProcess, TestEnv, bin_command, free_port};
use rand::{Rng, SeedableRng};
use serde_json::Value;

const PREFIX: &str = "/cas-renewd/test";
/// The shortest lease the configuration accepts: a killed holder's locks free
/// up after it.
const LEASE_TTL: &str = "5s";

/// One host of the fleet: its configuration, its output and state under
/// `<tmp>/<name>/`, and its daemon while it runs.
struct Host {
    name: String,
    config: PathBuf,
    root: PathBuf,
    /// Variables added to the daemon's environment (libfaketime for a skewed clock).
    env: Vec<(String, String)>,
    daemon: Option<DaemonProcess>,
    starts: usize,
}

impl Host {
    fn start(&mut self) {
        let mut c = bin_command(&self.config, &["run"], Some("info"));
        for (k, v) in &self.env {
            c.env(k, v);
        }
        self.starts += 1;
        let log = self.root.join(format!("run.{}.log", self.starts));
        self.daemon = Some(DaemonProcess::start(c, log));
    }

    /// SIGKILL (the process has no chance to release its lease) and reap.
    fn kill(&mut self) {
        // DaemonProcess's Drop sends SIGKILL and waits.
        self.daemon.take();
    }

    fn out(&self, cert: &str) -> PathBuf {
        self.root.join("out").join(cert)
    }

    /// Every log of this host, oldest first, for failure messages.
    fn logs(&self) -> String {
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
struct Fleet {
    env: TestEnv,
    hosts: Vec<Host>,
    certs: Vec<String>,
    endpoints: Vec<String>,
}

/// The scenario: `n` orders expiring in 10 days (due), issued after `polls` polls.
fn scenario(n: usize, polls: u32) -> String {
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
    async fn new(n: usize, polls: u32, hosts: usize, endpoints: Vec<String>) -> Fleet {
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
    fn start_all(&mut self) {
        for h in &mut self.hosts {
            h.start();
        }
    }

    /// Paid renew calls per source order.
    fn renew_calls(&self) -> BTreeMap<String, u64> {
        self.env
            .renew_calls()
            .as_object()
            .expect("renew_calls map")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().expect("count")))
            .collect()
    }

    fn renew_total(&self) -> u64 {
        self.renew_calls().values().sum()
    }

    /// Whether every host has every certificate renewed, byte-identical to the
    /// other hosts', with a key that matches it.
    fn converged(&self) -> Result<(), String> {
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
    async fn wait_converged(&self, limit: Duration) {
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
    fn assert_one_call_per_order(&self) {
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
    fn install_spread(&self) -> Duration {
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
    async fn lock_holders(&self) -> Vec<String> {
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
    fn unclear_certs(&self) -> usize {
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

    fn host_index(&self, name: &str) -> Option<usize> {
        self.hosts.iter().position(|h| h.name == name)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_certificates_on_three_hosts_started_together_renew_once_each() {
    let Some(etcd) = EtcdCluster::single() else {
        return;
    };
    let mut f = Fleet::new(20, 3, 3, etcd.endpoints()).await;
    let started = Instant::now();
    f.start_all();
    f.wait_converged(Duration::from_secs(90)).await;
    let took = started.elapsed();
    let calls = f.renew_calls();
    println!(
        "figures: fleet 3 hosts x 20 certificates started together: {} renew calls for {} orders (max {} per order); all hosts converged in {:.1} s; first to last host install of a version: {:.2} s at most",
        f.renew_total(),
        calls.len(),
        calls.values().max().copied().unwrap_or(0),
        took.as_secs_f64(),
        f.install_spread().as_secs_f64()
    );
    f.assert_one_call_per_order();
}

#[tokio::test(flavor = "multi_thread")]
async fn thirty_sigkills_of_lock_holders_spend_once_and_converge() {
    let Some(etcd) = EtcdCluster::single() else {
        return;
    };
    // Slow issuance (25 polls) keeps renewals, and so lock holders, in flight
    // while the kills land.
    let mut f = Fleet::new(12, 25, 3, etcd.endpoints()).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let started = Instant::now();
    f.start_all();
    let (mut kills, mut looks) = (0, 0);
    while kills < 30 && f.converged().is_err() {
        looks += 1;
        assert!(looks < 1000, "30 kills should not take {looks} looks");
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..700))).await;
        let holders = f.lock_holders().await;
        if holders.is_empty() {
            continue;
        }
        let victim = &holders[rng.random_range(0..holders.len())];
        let i = f
            .host_index(victim)
            .expect("a lock holder is one of our hosts");
        f.hosts[i].kill();
        kills += 1;
        // Back after a moment, as systemd's Restart= would bring it.
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..400))).await;
        f.hosts[i].start();
    }
    f.wait_converged(Duration::from_secs(120)).await;
    println!(
        "figures: fleet SIGKILL campaign: {kills} lock holders killed at random moments (seed 13) over 12 certificates on 3 hosts, {:.1} s to convergence; {} renew calls for {} orders; {} certificate(s) went through an unclear intent; every host byte-identical",
        started.elapsed().as_secs_f64(),
        f.renew_total(),
        f.renew_calls().len(),
        f.unclear_certs()
    );
    assert_eq!(kills, 30, "the renewals ended before 30 kills could land");
    f.assert_one_call_per_order();
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_stopped_during_a_pass_pays_nothing_until_it_returns() {
    let Some(mut etcd) = EtcdCluster::single() else {
        return;
    };
    let mut f = Fleet::new(6, 15, 3, etcd.endpoints()).await;
    f.start_all();
    // Stop etcd once the pass is spending: some orders renewed, not all.
    let deadline = Instant::now() + Duration::from_secs(60);
    while f.renew_total() == 0 {
        assert!(Instant::now() < deadline, "no renew call within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    etcd.stop_all();
    // A call whose journal write reached etcd just before the stop may still be
    // on the wire; after that, nothing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let at_stop = f.renew_total();
    // Longer than the lease: a host that still believed its lease alive has
    // had time to find out.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let while_down = f.renew_total() - at_stop;
    etcd.start_all();
    let back = Instant::now();
    f.wait_converged(Duration::from_secs(90)).await;
    println!(
        "figures: fleet etcd stopped during a pass: {at_stop} of 6 orders renewed when it stopped, {while_down} renew calls in the 8 s it was down, converged {:.1} s after it returned; {} renew calls for {} orders; {} certificate(s) left unclear by a lost etcd answer (settled after unclear_retry_after)",
        back.elapsed().as_secs_f64(),
        f.renew_total(),
        f.renew_calls().len(),
        f.unclear_certs()
    );
    assert!(
        at_stop < 6,
        "the pass had finished before etcd stopped: no test"
    );
    assert_eq!(while_down, 0, "paid calls while etcd was down");
    f.assert_one_call_per_order();
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "fails: with one of three endpoints refusing connections every etcd request of the hosts fails (etcd-client's balanced channel, etcdv3/etcd-client#39), so the fleet stops; src/fleet/etcd.rs must fail over between endpoints"]
async fn one_member_of_three_lost_work_goes_on() {
    let Some(mut cluster) = EtcdCluster::three() else {
        return;
    };
    let mut f = Fleet::new(6, 10, 3, cluster.endpoints()).await;
    f.start_all();
    let deadline = Instant::now() + Duration::from_secs(60);
    while f.renew_total() == 0 {
        assert!(Instant::now() < deadline, "no renew call within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The first member is the first endpoint every host tries.
    cluster.kill_member(0);
    let at_kill = f.renew_total();
    let started = Instant::now();
    f.wait_converged(Duration::from_secs(90)).await;
    println!(
        "figures: fleet 3-member etcd, member 0 killed with {at_kill} of 6 orders renewed: converged {:.1} s later; {} renew calls for {} orders",
        started.elapsed().as_secs_f64(),
        f.renew_total(),
        f.renew_calls().len()
    );
    f.assert_one_call_per_order();
}

/// libfaketime's preload library, if installed (scripts/test.sh installs it).
fn libfaketime() -> Option<PathBuf> {
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

#[tokio::test(flavor = "multi_thread")]
async fn hosts_ten_minutes_off_still_pay_once() {
    let Some(faketime) = libfaketime() else {
        return;
    };
    let Some(etcd) = EtcdCluster::single() else {
        return;
    };
    let mut f = Fleet::new(4, 3, 3, etcd.endpoints()).await;
    // h1 10 minutes ahead, h2 10 minutes behind (the simulator, like CAS, accepts
    // a signature timestamp up to 15 minutes off); monotonic time stays true, as
    // a wrong wall clock leaves it.
    for (i, offset) in [(1, "+10m"), (2, "-10m")] {
        f.hosts[i].env = vec![
            ("LD_PRELOAD".into(), faketime.display().to_string()),
            ("FAKETIME".into(), offset.into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ];
    }
    let started = Instant::now();
    f.start_all();
    f.wait_converged(Duration::from_secs(90)).await;
    println!(
        "figures: fleet with clocks +10 min and -10 min on two of 3 hosts: {} renew calls for {} orders, converged in {:.1} s",
        f.renew_total(),
        f.renew_calls().len(),
        started.elapsed().as_secs_f64()
    );
    f.assert_one_call_per_order();
    // The skew took hold: each host's log lines carry its own clock.
    for (i, want) in [(1, 600), (2, -600)] {
        let skew = log_clock_skew(&f.hosts[i].logs());
        assert!(
            (skew - want).abs() < 120,
            "{}: log clock {skew} s off",
            f.hosts[i].name
        );
    }
}

/// Seconds between the last log line's timestamp (RFC 3339, first field) and now.
fn log_clock_skew(log: &str) -> i64 {
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
    async fn doctor(&self, i: usize) -> BTreeMap<String, (String, String)> {
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
    fn give_own_key(&mut self, i: usize) {
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

#[tokio::test(flavor = "multi_thread")]
async fn doctor_checks_etcd_the_lease_and_the_sealing_key() {
    let Some(mut etcd) = EtcdCluster::single() else {
        return;
    };
    let mut f = Fleet::new(1, 1, 2, etcd.endpoints()).await;
    f.give_own_key(1);
    let status = |d: &BTreeMap<String, (String, String)>, check: &str| {
        d.get(check)
            .unwrap_or_else(|| panic!("no {check} check in {d:?}"))
            .clone()
    };
    // Nothing in etcd yet: every host's key is fine until one seals the check.
    let d = f.doctor(0).await;
    assert_eq!(status(&d, "etcd").0, "ok", "{d:?}");
    assert_eq!(status(&d, "fleet lease").0, "ok", "{d:?}");
    assert_eq!(status(&d, "sealing key").0, "ok", "{d:?}");
    // The check value as the first daemon seals it, with the fleet's key.
    let bytes: [u8; 32] = std::fs::read(f.env.path("fleet.key"))
        .expect("key")
        .try_into()
        .expect("32 bytes");
    let (cert, version) = cas_renewd::fleet::layout::CHECK_BINDING;
    let sealed = cas_renewd::fleet::SealingKey::from_bytes(bytes)
        .seal(cert, version, cas_renewd::fleet::layout::CHECK_TEXT)
        .expect("seal");
    let mut client = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .expect("etcd client");
    client
        .put(format!("{PREFIX}/sealing-check"), sealed, None)
        .await
        .expect("put");
    let d = f.doctor(0).await;
    assert_eq!(status(&d, "sealing key").0, "ok", "{d:?}");
    assert!(status(&d, "sealing key").1.contains("the fleet's"), "{d:?}");
    let d = f.doctor(1).await;
    let (st, msg) = status(&d, "sealing key");
    assert_eq!(st, "fail", "{d:?}");
    assert!(msg.contains("not the key the other hosts use"), "{msg}");
    etcd.stop_all();
    let d = f.doctor(0).await;
    assert_eq!(status(&d, "etcd").0, "fail", "{d:?}");
    assert!(
        !d.contains_key("fleet lease"),
        "skipped without etcd: {d:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "fails: after the loss the paying host's lock and shared journal are gone, another host adopts the order without its key, the paying host's next load takes that shared phase over its own attempt, and every host ends blocked (renewed elsewhere, key not available) although the key is in the paying host's state_dir; still one paid call"]
async fn etcd_data_lost_during_a_pass_spends_once_and_converges() {
    let Some(mut etcd) = EtcdCluster::single() else {
        return;
    };
    let mut f = Fleet::new(6, 15, 3, etcd.endpoints()).await;
    f.start_all();
    let deadline = Instant::now() + Duration::from_secs(60);
    while f.renew_total() == 0 {
        assert!(Instant::now() < deadline, "no renew call within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every shared journal, sealed key and lock gone, as after losing every
    // member without a snapshot: a new, empty cluster on the same addresses.
    etcd.stop_all();
    let at_loss = f.renew_total();
    std::fs::remove_dir_all(&etcd.members[0].data_dir).expect("wipe etcd data");
    etcd.start_all();
    let back = Instant::now();
    f.wait_converged(Duration::from_secs(90)).await;
    println!(
        "figures: fleet etcd data lost during a pass ({at_loss} of 6 orders renewed then): converged {:.1} s after an empty etcd came up; {} renew calls for {} orders",
        back.elapsed().as_secs_f64(),
        f.renew_total(),
        f.renew_calls().len()
    );
    f.assert_one_call_per_order();
}

/// `etcd grpc-proxy` in front of a cluster (killed on drop): the proxy fails
/// over between members, which the etcd client does not do by itself.
struct GrpcProxy(std::process::Child);

impl GrpcProxy {
    fn start(cluster: &EtcdCluster, dir: &Path) -> (GrpcProxy, String) {
        let port = free_port();
        let members: Vec<String> = cluster
            .endpoints()
            .iter()
            .map(|e| e.trim_start_matches("http://").to_owned())
            .collect();
        let log = std::fs::File::create(dir.join("grpc-proxy.log")).expect("proxy log");
        let child = std::process::Command::new(common::etcd::ETCD)
            .args(["grpc-proxy", "start"])
            .arg(format!("--endpoints={}", members.join(",")))
            .arg(format!("--listen-addr=127.0.0.1:{port}"))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("grpc-proxy starts");
        (GrpcProxy(child), format!("http://127.0.0.1:{port}"))
    }
}

impl GrpcProxy {
    /// The member the proxy is talking to (`ss` shows its connections), so the
    /// kill forces a failover; member 0 when that cannot be told.
    fn member_in_use(&self, cluster: &EtcdCluster) -> usize {
        let pid = format!("pid={},", self.0.id());
        let out = std::process::Command::new("ss")
            .args(["-tnpH", "state", "established"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        out.lines()
            .filter(|l| l.contains(&pid))
            .filter_map(|l| {
                l.split_whitespace()
                    .nth(3)?
                    .rsplit(':')
                    .next()?
                    .parse()
                    .ok()
            })
            .find_map(|port: u16| cluster.members.iter().position(|m| m.client_port == port))
            .unwrap_or(0)
    }
}

impl Drop for GrpcProxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_member_of_three_lost_behind_a_grpc_proxy_work_goes_on() {
    let Some(mut cluster) = EtcdCluster::three() else {
        return;
    };
    let scratch = tempfile::tempdir().expect("tempdir");
    let (proxy, endpoint) = GrpcProxy::start(&cluster, scratch.path());
    let mut f = Fleet::new(6, 10, 3, vec![endpoint]).await;
    f.start_all();
    let deadline = Instant::now() + Duration::from_secs(60);
    while f.renew_total() == 0 {
        assert!(Instant::now() < deadline, "no renew call within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let victim = proxy.member_in_use(&cluster);
    cluster.kill_member(victim);
    let at_kill = f.renew_total();
    let started = Instant::now();
    f.wait_converged(Duration::from_secs(90)).await;
    println!(
        "figures: fleet 3-member etcd behind etcd grpc-proxy, member {victim} (the proxy's) killed with {at_kill} of 6 orders renewed: converged {:.1} s later; {} renew calls for {} orders",
        started.elapsed().as_secs_f64(),
        f.renew_total(),
        f.renew_calls().len()
    );
    f.assert_one_call_per_order();
}
