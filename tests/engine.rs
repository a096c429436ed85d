//! In-process engine tests: a crash at every crash point, for a renewal, a new
//! application (`renewal.mode: reapply`) and a renewal whose order needs its
//! application submitted, then a fresh engine that resumes from the state
//! directory: exactly one paid call per certificate, a matching new pair installed,
//! the journal back at idle. The crash is simulated in the process (the step
//! unwinds at the point, see `store::faults::in_process`), so the whole matrix
//! runs in one test process; the SIGKILL campaign in tests/renew.rs and
//! tests/reliability.rs keeps showing what only a real process death shows.
//!
//! Needs the `fault-injection` feature: the crate's dev-dependency on itself
//! turns it on for every `cargo test`.

mod common;

use std::path::Path;
use std::sync::Arc;

use cas_renewd::cas::credentials::{CredentialsProvider, Environment};
use cas_renewd::config::Config;
use cas_renewd::pki::{self, Key};
use cas_renewd::renew::{Engine, PassOptions, PassReport};
use cas_renewd::store::{StateDir, repair};
use cas_sim::{Scenario, Simulator};
use common::crash::{CrashWorld, caught, matrix};

const RENEW: &str = "RenewCertificateOrderForPackageRequest";
const CREATE: &str = "CreateCertificateForPackageRequest";

/// One kind of renewal the crash matrix runs.
struct Case {
    name: &'static str,
    scenario: &'static str,
    cert_extra: &'static str,
    paid_action: &'static str,
}

const CASES: [Case; 3] = [
    Case {
        name: "renew",
        scenario: "orders:\n  - { domain: www.example.com, expires_in: 20d }\nissuance: { polls_before_issued: 2 }\n",
        cert_extra: "",
        paid_action: RENEW,
    },
    Case {
        name: "reapply",
        scenario: "orders:\n  - { domain: www.example.com, expires_in: 20d, product_code: digicert-free-1-free }\nissuance: { polls_before_issued: 2, validation: dns }\n",
        cert_extra: ", renewal: { mode: reapply }, validation: { method: dns }",
        paid_action: CREATE,
    },
    Case {
        name: "renew-with-application",
        scenario: "orders:\n  - { domain: www.example.com, expires_in: 20d }\nissuance: { polls_before_issued: 2, renewal_needs_application: true }\n",
        cert_extra: "",
        paid_action: RENEW,
    },
];

struct World {
    sim: Simulator,
    dir: tempfile::TempDir,
    cfg: Config,
    creds: Arc<CredentialsProvider>,
}

impl World {
    async fn new(case: &Case) -> World {
        let s = Scenario::parse(
            &format!("access_key: {{ id: k, secret: s }}\n{}", case.scenario),
            Path::new("scenario"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let sim = Simulator::start(&s, "127.0.0.1:0").await.expect("sim");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display();
        let text = format!(
            "api: {{ endpoint: \"{0}\", dns_endpoint: \"{0}\", max_attempts: 6 }}\ncredentials: {{ access_key_id: k, access_key_secret: s }}\nstate_dir: {d}/state\nrenewal: {{ poll_interval: 100ms, poll_max_interval: 200ms, issuance_timeout: 5s }}\nhooks: {{ mark: {{ command: [\"/bin/sh\", \"-c\", \"echo x >> {d}/reloads\"] }} }}\ndefaults: {{ reload: [mark] }}\ncertificates:\n  - {{ name: www, domain: www.example.com, output: {{ dir: {d}/out/www }}{1} }}\n",
            sim.url(),
            case.cert_extra
        );
        let cfg = Config::parse(&text, Path::new("engine.yaml")).unwrap_or_else(|e| panic!("{e}"));
        let creds = CredentialsProvider::resolve(cfg.credentials.as_ref(), &Environment::default())
            .expect("creds");
        World {
            sim,
            dir,
            cfg,
            creds: Arc::new(creds),
        }
    }
}

impl CrashWorld for World {
    /// One pass of a fresh engine (a fresh process, as after a restart), run as
    /// its own task so a crash that unwinds out of the pass is caught here.
    async fn pass(&self, opts: PassOptions) -> Result<PassReport, String> {
        let engine = Arc::new(Engine::new(self.cfg.clone(), self.creds.clone()).expect("engine"));
        caught(tokio::spawn(async move { engine.pass(&opts).await }).await)
    }

    /// What the start-up of the binary does before any pass.
    fn repair(&self) {
        let state = StateDir::open(&self.cfg.state_dir).expect("state dir");
        repair::at_start(&state, &self.cfg.certificates);
    }

    fn calls(&self, action: &str) -> u64 {
        self.sim.state()["calls"][action].as_u64().unwrap_or(0)
    }

    /// Days left on the installed certificate, and whether the key matches it.
    fn installed(&self) -> Option<(i64, bool)> {
        let out = self.dir.path().join("out/www");
        let cert = std::fs::read_to_string(out.join("cert.pem")).ok()?;
        let key = std::fs::read_to_string(out.join("privkey.pem")).ok()?;
        let leaf = pki::read_leaf(&cert).expect("leaf");
        let key = Key::from_pem(&key).expect("key");
        let days = (leaf.not_after - chrono::Utc::now().timestamp()) / 86_400;
        Some((days, leaf.spki_sha256 == key.spki_sha256()))
    }

    fn journal(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("state/journal/www.json")).unwrap_or_default()
    }
}

/// Every crash point, in every case that reaches it; each point is reached by at
/// least one case.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_at_every_point_resumes_with_one_paid_call() {
    let cases: Vec<_> = CASES.iter().map(|c| (c.name, c.paid_action)).collect();
    matrix(&cases, async |i| World::new(&CASES[i]).await, |_, _| {}).await;
}
