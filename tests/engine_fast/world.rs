//! The world of one in-process engine test: a fake CAS and DNS, a temporary state
//! and output directory, the engine's ports (a clock driven by tokio's paused
//! time) and a pass that turns a simulated crash into a value.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cas_renewd::config::Config;
use cas_renewd::pki::{self, Key};
use cas_renewd::renew::ports::{Clock, LocalJournals, TokioClock};
use cas_renewd::renew::{Engine, NoObserver, PassOptions, PassReport, Ports};
use cas_renewd::store::faults::SimulatedCrash;
use cas_renewd::store::{StateDir, repair};

use super::fake::{FakeCas, FakeDns, Script};
use crate::common::crash::{CrashWorld, caught};

/// The crash points are armed process-wide, so the tests of this file run one
/// at a time (each in a few milliseconds to a second).
static SERIAL: Mutex<()> = Mutex::new(());

/// The longest a pass may take on the paused clock.
const PASS_LIMIT: Duration = Duration::from_secs(86_400);

/// Runs `test` alone, on a current-thread runtime whose clock starts paused:
/// every wait of the engine (poll intervals, the reconciliation's grace, the
/// issuance timeout) passes at once.
pub fn run<F: Future<Output = ()>>(test: F) {
    let _alone = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    quiet_simulated_crashes();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime")
        .block_on(test);
}

/// A simulated crash is a panic the matrix expects by the dozen: its message is
/// left out of the output; every other panic prints as usual.
fn quiet_simulated_crashes() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<SimulatedCrash>().is_none() {
                default(info);
            }
        }));
    });
}

/// How a test's certificate is configured.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// The certificate's extra YAML (`, renewal: { mode: reapply }` …); `DIR`
    /// stands for the world's directory.
    pub cert_extra: String,
    /// A reload hook that appends a line to `reloads` (with the pass's ticker).
    pub hook: bool,
    /// A free source order (CAS does not renew it: `mode: reapply`).
    pub free: bool,
}

pub struct World {
    pub cas: Arc<FakeCas>,
    pub dns: Arc<FakeDns>,
    pub dir: tempfile::TempDir,
    pub cfg: Config,
    clock: Arc<TokioClock>,
    hook: bool,
}

impl World {
    /// Call inside the runtime (the clock starts there).
    pub fn new(script: Script, setup: Setup) -> World {
        // In memory where there is a tmpfs: the store syncs every write, which is
        // what the real store does and what these tests need not wait for.
        let dir = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .expect("tempdir");
        let webroot = dir.path().join("www");
        std::fs::create_dir_all(&webroot).expect("webroot");
        let dns = Arc::new(FakeDns::default());
        let cas = Arc::new(FakeCas::new(script, setup.free, dns.clone(), webroot));
        let d = dir.path().display();
        // P-256 keys: an RSA key takes a tenth of a second to make, per renewal.
        let hooks = if setup.hook {
            format!(
                "hooks: {{ mark: {{ command: [\"/bin/sh\", \"-c\", \"echo x >> {d}/reloads\"], timeout: 30d }} }}\ndefaults: {{ key: {{ algorithm: ecdsa-p256 }}, reload: [mark] }}\n"
            )
        } else {
            "defaults: { key: { algorithm: ecdsa-p256 } }\n".to_owned()
        };
        let text = format!(
            "state_dir: {d}/state\nrenewal: {{ poll_interval: 10s, poll_max_interval: 1m, issuance_timeout: 1h, unclear_retry_after: 6h }}\n{hooks}certificates:\n  - {{ name: www, domain: www.example.com, output: {{ dir: {d}/out/www }}{} }}\n",
            setup.cert_extra.replace("DIR", &d.to_string())
        );
        let cfg =
            Config::parse(&text, Path::new("engine_fast.yaml")).unwrap_or_else(|e| panic!("{e}"));
        World {
            cas,
            dns,
            dir,
            cfg,
            clock: Arc::new(TokioClock::starting_at(chrono::Utc::now())),
            hook: setup.hook,
        }
    }

    fn engine(&self) -> Arc<Engine> {
        let ports = Ports {
            source: self.cas.clone(),
            dns: self.dns.clone(),
            journals: Arc::new(LocalJournals::at(&self.cfg.state_dir)),
            clock: self.clock.clone(),
        };
        Arc::new(Engine::with_ports(
            self.cfg.clone(),
            ports,
            Arc::new(NoObserver),
        ))
    }

    /// A pass that must succeed.
    pub async fn ok_pass(&self, label: &str) -> PassReport {
        let r = self
            .pass(PassOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        assert!(r.ok(), "{label}: {}", r.render(false));
        r
    }

    pub fn out(&self) -> PathBuf {
        self.dir.path().join("out/www")
    }

    /// How many times the reload hook ran.
    pub fn reloads(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("reloads"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// The engine's clock now.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// Asserts the renewed pair is installed: a year's certificate (the source
    /// expires in 20 days), its key beside it, and the journal back at idle.
    pub fn assert_renewed(&self, label: &str) {
        let (days, matches) = self
            .installed()
            .unwrap_or_else(|| panic!("{label}: nothing installed"));
        assert!(
            matches,
            "{label}: the installed key matches the certificate"
        );
        assert!(
            days > 300,
            "{label}: the new certificate is installed ({days} days)"
        );
        let j = self.journal();
        assert!(
            j.contains("\"phase\": \"idle\"") && j.contains("\"reload_pending\": []"),
            "{label}: {j}"
        );
    }
}

impl CrashWorld for World {
    /// One pass of a fresh engine (as after a restart), as its own task so a crash
    /// that unwinds out of the pass is caught here.
    async fn pass(&self, opts: PassOptions) -> Result<PassReport, String> {
        let engine = self.engine();
        // A hook is a child process the paused clock does not wait for: this
        // ticker lets time pass in small steps meanwhile, instead of jumping to the
        // hook's timeout.
        let ticker = self.hook.then(|| {
            tokio::spawn(async {
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        });
        let task = tokio::spawn(async move { engine.pass(&opts).await });
        // A day of paused time: an engine that measured time by another clock than
        // tokio's would wait for ever here; it fails instead.
        let result = tokio::time::timeout(PASS_LIMIT, task)
            .await
            .unwrap_or_else(|_| panic!("a pass did not end within {PASS_LIMIT:?} of tokio time"));
        if let Some(t) = ticker {
            t.abort();
        }
        caught(result)
    }

    /// What the binary's start-up does before any pass.
    fn repair(&self) {
        let state = StateDir::open(&self.cfg.state_dir).expect("state dir");
        repair::at_start(&state, &self.cfg.certificates);
    }

    fn calls(&self, action: &str) -> u64 {
        u64::from(self.cas.calls(action))
    }

    /// Days left on the installed certificate (by the engine's clock), and
    /// whether the installed key matches it.
    fn installed(&self) -> Option<(i64, bool)> {
        let cert = std::fs::read_to_string(self.out().join("cert.pem")).ok()?;
        let key = std::fs::read_to_string(self.out().join("privkey.pem")).ok()?;
        let leaf = pki::read_leaf(&cert).expect("leaf");
        let key = Key::from_pem(&key).expect("key");
        let days = (leaf.not_after - self.clock.now().timestamp()) / 86_400;
        Some((days, leaf.spki_sha256 == key.spki_sha256()))
    }

    /// The journal as its file reads.
    fn journal(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("state/journal/www.json")).unwrap_or_default()
    }
}
