//! The real binary as a child process: a free loopback port, a clean command
//! environment, and `DaemonProcess` for `run` with readiness waits (a log line, a
//! systemd notification, the metrics listener answering), signals and a `Drop`
//! that never leaves a daemon behind.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::env::TestEnv;

pub const BIN: &str = env!("CARGO_BIN_EXE_cas-renewd");

/// A loopback port free right now (for a configuration written before the listener).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The binary with `--config <config> <args>` and an environment of only PATH and
/// the switch that keeps credentials off the ECS metadata service; `log` sets
/// `CAS_RENEWD_LOG`.
pub fn bin_command(config: &Path, args: &[&str], log: Option<&str>) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
        .arg("--config")
        .arg(config)
        .args(args);
    if let Some(level) = log {
        c.env("CAS_RENEWD_LOG", level);
    }
    c
}

/// Sends `sig` (as `kill` spells it, e.g. `-HUP`) to `pid`.
pub fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(st.success(), "kill {sig} {pid}");
}

/// `GET url`: status and body.
pub async fn scrape(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.expect("get");
    let st = r.status().as_u16();
    (st, r.text().await.expect("body"))
}

/// A `NOTIFY_SOCKET` of our own, as systemd makes one.
pub struct Notify {
    pub path: PathBuf,
    sock: UnixDatagram,
    /// Every notification received so far.
    pub seen: Vec<String>,
}

impl Notify {
    pub fn bind(path: PathBuf) -> Notify {
        let sock = UnixDatagram::bind(&path).expect("notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        Notify {
            path,
            sock,
            seen: Vec::new(),
        }
    }

    /// Reads notifications until one has the line `want` (bounded).
    pub fn wait(&mut self, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let hit = msg.lines().any(|l| l == want);
                self.seen.push(msg);
                if hit {
                    return;
                }
            }
        }
        panic!("no {want} within 30 s; got {:?}", self.seen);
    }
}

/// `cas-renewd run` (or another long command) with stdout and stderr in one log
/// file; killed on drop if still running.
pub struct DaemonProcess {
    child: Child,
    log: PathBuf,
    metrics: Option<String>,
}

impl DaemonProcess {
    /// `run` in `env` with `extra_env` added to the command's environment.
    pub fn spawn(env: &TestEnv, extra_env: &[(&str, &str)]) -> DaemonProcess {
        let mut c = env.command(&["run"]);
        for (k, v) in extra_env {
            c.env(k, v);
        }
        let log = env.path("run.log");
        let mut d = DaemonProcess::start(c, log);
        d.metrics = env.metrics_port().map(|p| format!("http://127.0.0.1:{p}"));
        d
    }

    /// Any prepared command, its output going to the file `log`.
    pub fn start(mut c: Command, log: PathBuf) -> DaemonProcess {
        let f = std::fs::File::create(&log).expect("log");
        let child = c
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("log"))
            .stderr(f)
            .spawn()
            .expect("daemon starts");
        DaemonProcess {
            child,
            log,
            metrics: None,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        signal(self.child.id(), sig);
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (30 s at most) until the log has a line containing `needle`; returns
    /// the log up to the end of that line. Fails if the daemon exits first.
    pub fn wait_log(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.log();
            if let Some(at) = text.find(needle) {
                let end = text[at..].find('\n').map_or(text.len(), |n| at + n + 1);
                return text[..end].to_owned();
            }
            if Instant::now() > deadline || self.child.try_wait().expect("wait").is_some() {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("no {needle:?} in the log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn base(&self) -> &str {
        self.metrics
            .as_deref()
            .expect("the environment has a metrics listener")
    }

    /// Polls `/readyz` every `every` (at most `tries` times) until it answers 200;
    /// returns whether it did.
    pub async fn wait_ready(&self, tries: usize, every: Duration) -> bool {
        let url = format!("{}/readyz", self.base());
        for _ in 0..tries {
            if let Ok(r) = reqwest::get(&url).await
                && r.status() == 200
            {
                return true;
            }
            tokio::time::sleep(every).await;
        }
        false
    }

    /// Polls `/healthz` until the listener answers at all (bounded as `wait_ready`).
    pub async fn wait_listening(&self, tries: usize, every: Duration) -> bool {
        let url = format!("{}/healthz", self.base());
        for _ in 0..tries {
            if reqwest::get(&url).await.is_ok() {
                return true;
            }
            tokio::time::sleep(every).await;
        }
        false
    }

    /// `GET <metrics listener><path>`: status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        scrape(&format!("{}{path}", self.base())).await
    }

    /// The `/metrics` text.
    pub async fn scrape(&self) -> String {
        self.get("/metrics").await.1
    }

    /// Waits up to `limit` for the process to exit; kills it and fails otherwise.
    pub fn wait_exit(&mut self, limit: Duration, what: &str) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{what}: still running after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM (if still running), then the exit status (30 s at most).
    pub fn stop(&mut self) -> ExitStatus {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
        }
        self.wait_exit(Duration::from_secs(30), "daemon after SIGTERM")
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
