//! Throwaway etcd members for the fleet tests: one member or a 3-member cluster
//! on free loopback ports, each with a temporary data dir, killed on `Drop`.
//! Without `/usr/bin/etcd` the tests skip with the reason, unless
//! `CAS_RENEWD_E2E=1` (then a missing etcd is a failure).

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::net::TcpListener;

pub const ETCD: &str = "/usr/bin/etcd";

/// One member: how to start it again (same name, ports, data dir) and its process.
pub struct EtcdMember {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    child: Option<Child>,
}

/// A cluster of throwaway members.
pub struct EtcdCluster {
    pub members: Vec<EtcdMember>,
    initial_cluster: String,
    _dir: tempfile::TempDir,
}

/// Whether the fleet tests can run; prints why not (or panics under E2E).
pub fn etcd_available() -> bool {
    if Path::new(ETCD).exists() {
        return true;
    }
    if std::env::var("CAS_RENEWD_E2E").as_deref() == Ok("1") {
        panic!(
            "CAS_RENEWD_E2E=1 but {ETCD} is missing; run scripts/test.sh (it installs etcd-server)"
        );
    }
    eprintln!("skipped: {ETCD} is missing (Debian package etcd-server)");
    false
}

impl EtcdCluster {
    /// One member, ready; `None` (after saying why) when etcd is not installed.
    pub fn single() -> Option<EtcdCluster> {
        EtcdCluster::start(1)
    }

    /// Three members, ready (a quorum answers); `None` when etcd is missing.
    pub fn three() -> Option<EtcdCluster> {
        EtcdCluster::start(3)
    }

    /// Starts `n` members; a start that does not become healthy (a port taken
    /// between our check and etcd's bind, a slow machine) is retried on other
    /// ports with new data dirs, and the last failure shows the members' logs.
    fn start(n: usize) -> Option<EtcdCluster> {
        if !etcd_available() {
            return None;
        }
        let mut last = String::new();
        for _attempt in 0..3 {
            let mut c = EtcdCluster::spawn(n);
            match c.try_wait_ready(Duration::from_secs(30)) {
                Ok(()) => return Some(c),
                Err(why) => {
                    c.stop_all();
                    last = format!("{why}\n{}", c.logs());
                    eprintln!("etcd start failed, retrying on other ports: {why}");
                }
            }
        }
        panic!("etcd did not start after 3 attempts: {last}");
    }

    fn spawn(n: usize) -> EtcdCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports = unused_ports(2 * n);
        let members: Vec<EtcdMember> = (0..n)
            .map(|i| EtcdMember {
                name: format!("m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                data_dir: dir.path().join(format!("m{i}")),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = EtcdCluster {
            members,
            initial_cluster,
            _dir: dir,
        };
        for i in 0..n {
            c.start_member(i);
        }
        c
    }

    /// Every member's log, for a failure message.
    fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let path = self._dir.path().join(format!("{}.log", m.name));
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!(
                    "--- {} (client {}, peer {}) ---\n{}",
                    m.name,
                    m.client_port,
                    m.peer_port,
                    tail.join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The client URLs, for `fleet.etcd.endpoints`.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// The endpoints as a YAML flow list.
    pub fn endpoints_yaml(&self) -> String {
        let quoted: Vec<String> = self.endpoints().iter().map(|e| format!("{e:?}")).collect();
        format!("[{}]", quoted.join(", "))
    }

    /// (Re)starts member `i` with its data dir (a restarted member rejoins).
    pub fn start_member(&mut self, i: usize) {
        let m = &self.members[i];
        let log = std::fs::File::create(self._dir.path().join(format!("{}.log", m.name)))
            .expect("etcd log");
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let child = Command::new(ETCD)
            .env_clear()
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "cas-renewd-test"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.members[i].child = Some(child);
    }

    /// Kills member `i` (SIGKILL) and waits for it; its data dir stays.
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills every member.
    pub fn stop_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
    }

    /// Starts every stopped member again and waits until the cluster answers.
    pub fn start_all(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                self.start_member(i);
            }
        }
        self.wait_ready(Duration::from_secs(30));
    }

    /// Waits until a running member reports itself healthy (a quorum exists).
    pub fn wait_ready(&mut self, limit: Duration) {
        if let Err(why) = self.try_wait_ready(limit) {
            panic!("{why}\n{}", self.logs());
        }
    }

    /// Like `wait_ready`, but says why instead of panicking; a member that has
    /// exited (its port taken, say) ends the wait at once.
    fn try_wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        while start.elapsed() < limit {
            for m in &mut self.members {
                if let Some(child) = m.child.as_mut()
                    && let Ok(Some(status)) = child.try_wait()
                {
                    m.child = None;
                    return Err(format!("etcd member {} exited: {status}", m.name));
                }
            }
            let healthy = self
                .members
                .iter()
                .filter(|m| m.child.is_some())
                .any(|m| health(m.client_port));
            if healthy {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("etcd did not become healthy within {limit:?}"))
    }
}

/// `count` distinct ports that are free now, chosen below the kernel's ephemeral
/// range: the daemons' and simulator's outgoing connections take local ports from
/// that range, so a port picked there could be taken before etcd binds it, or
/// while a member is stopped and must come back on the same port.
fn unused_ports(count: usize) -> Vec<u16> {
    // The ephemeral range's first port (Linux default 32768); 10,000 below it
    // leaves room for parallel clusters.
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let low = ephemeral_low.saturating_sub(10_000).max(1_024);
    let high = ephemeral_low.max(low + 1_000);
    let mut held: Vec<TcpListener> = Vec::with_capacity(count);
    for _ in 0..10_000 {
        if held.len() == count {
            break;
        }
        let port: u16 = rand::random_range(low..high);
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
        }
    }
    assert_eq!(held.len(), count, "no {count} free ports in {low}..{high}");
    held.iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

/// `GET /health` on a member: `{"health":"true"}` once it has a leader.
fn health(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}
