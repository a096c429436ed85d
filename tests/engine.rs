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

use std::path::Path;
use std::sync::Arc;

use cas_renewd::cas::credentials::{CredentialsProvider, Environment};
use cas_renewd::config::Config;
use cas_renewd::pki::{self, Key};
use cas_renewd::renew::{Engine, Outcome, PassOptions, PassReport};
use cas_renewd::store::faults::{CrashPoint, SimulatedCrash, in_process};
use cas_renewd::store::{StateDir, repair};
use cas_sim::{Scenario, Simulator};

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

    /// One pass of a fresh engine (a fresh process, as after a restart), run as
    /// its own task so a crash that unwinds out of the pass is caught here.
    async fn pass(&self, opts: PassOptions) -> Result<PassReport, String> {
        let engine = Arc::new(Engine::new(self.cfg.clone(), self.creds.clone()).expect("engine"));
        let task = tokio::spawn(async move { engine.pass(&opts).await });
        match task.await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) if e.is_panic() => {
                let payload = e.into_panic();
                match payload.downcast_ref::<SimulatedCrash>() {
                    Some(c) => Err(format!("crashed at {}", c.0.name())),
                    None => std::panic::resume_unwind(payload),
                }
            }
            Err(e) => Err(e.to_string()),
        }
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

/// Crashes `case` at `point` and resumes; `false` when this case never reaches
/// the point (nothing is checked then beyond a clean first pass).
async fn crash_and_resume(case: &Case, point: CrashPoint) -> bool {
    let w = World::new(case).await;
    let label = format!("{} at {}", case.name, point.name());
    in_process::arm(Some(point));
    let first = w.pass(PassOptions::default()).await;
    let reached = in_process::armed().is_none();
    in_process::arm(None);
    if !reached {
        let r = first.unwrap_or_else(|e| panic!("{label}: pass without the point: {e}"));
        assert!(r.ok(), "{label}: {}", r.render(false));
        return false;
    }
    if let Some((_, matches)) = w.installed() {
        assert!(
            matches,
            "{label}: whatever is on disk after the crash is a pair"
        );
    }
    w.repair();
    if point == CrashPoint::AfterRenewRequested {
        // The intent is journaled but the call never left: an unclear outcome. No
        // order shows, so nothing is paid until the operator forces it.
        let r = w.pass(PassOptions::default()).await.expect("resume");
        assert_eq!(
            r.certs[0].outcome,
            Outcome::Blocked,
            "{label}: {}",
            r.render(false)
        );
        assert!(r.certs[0].message.contains("unclear outcome"), "{label}");
        assert_eq!(w.calls(case.paid_action), 0, "{label}: not paid");
        let forced = PassOptions {
            force: true,
            only: Some("www".into()),
            ..PassOptions::default()
        };
        let r = w.pass(forced).await.expect("forced");
        assert!(r.ok(), "{label}: forced: {}", r.render(false));
    } else if point == CrashPoint::AfterApplicationRequested {
        // Whether ApplyCertificate left is unknown, and it is never made twice:
        // the order stays payed and the operator is told to submit it in the
        // console. Nothing more is paid or applied for.
        let r = w.pass(PassOptions::default()).await.expect("resume");
        assert_eq!(
            r.certs[0].outcome,
            Outcome::Failed,
            "{label}: {}",
            r.render(false)
        );
        let j = w.journal();
        assert!(
            j.contains("\"phase\": \"application-requested\"") && j.contains("not submitted twice"),
            "{label}: {j}"
        );
        assert_eq!(
            (w.calls(case.paid_action), w.calls("ApplyCertificate")),
            (1, 0),
            "{label}: one paid call, no application after the crash"
        );
        return true;
    } else {
        let r = w.pass(PassOptions::default()).await.expect("resume");
        assert!(r.ok(), "{label}: resume: {}", r.render(false));
    }
    let (days, matches) = w
        .installed()
        .unwrap_or_else(|| panic!("{label}: nothing installed"));
    assert!(matches, "{label}: key matches certificate");
    // The source expires in 20 days; a new certificate (a year, or 90 days for a
    // free one) is far past it.
    assert!(
        days > 60,
        "{label}: the new certificate is installed ({days} days)"
    );
    assert_eq!(
        w.calls(case.paid_action),
        1,
        "{label}: exactly one paid call"
    );
    for step in ["UpdateInstance", "ApplyCertificate"] {
        assert!(w.calls(step) <= 1, "{label}: {step} at most once");
    }
    let j = w.journal();
    assert!(
        j.contains("\"phase\": \"idle\"") && j.contains("\"reload_pending\": []"),
        "{label}: {j}"
    );
    true
}

/// Every crash point, in every case that reaches it; each point is reached by at
/// least one case.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_at_every_point_resumes_with_one_paid_call() {
    let started = std::time::Instant::now();
    let mut runs = 0;
    for point in CrashPoint::ALL {
        let mut reached_by = Vec::new();
        for case in &CASES {
            if crash_and_resume(case, point).await {
                reached_by.push(case.name);
                runs += 1;
            }
        }
        assert!(
            !reached_by.is_empty(),
            "{}: no case reaches it",
            point.name()
        );
        println!("{}: crashed and resumed in {reached_by:?}", point.name());
    }
    println!(
        "figures: {runs} crash-and-resume runs over {} crash points in {:.1} s",
        CrashPoint::ALL.len(),
        started.elapsed().as_secs_f64()
    );
}
