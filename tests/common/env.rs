//! `TestEnv`: a simulator holding a scenario, a scratch directory and a daemon
//! configuration pointing at both, built from typed parts (`EnvBuilder`, `Cert`),
//! with the ways tests run the binary against it and read back what happened.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use cas_renewd::cas::credentials::{CredentialsProvider, Environment};
use cas_renewd::config::Config;
use cas_renewd::renew::Engine;

use super::{Scenario, Simulator};
use cas_renewd::pki::{self, Key};
use serde_json::Value;

use super::process::{bin_command, free_port};

/// The account most tests use, in the scenario and the configuration alike.
pub const KEY_ID: &str = "sim-access-key-id";
pub const SECRET: &str = "sim-access-key-secret";
/// Fast polling, the `renewal:` most tests use.
pub const FAST: &str = "poll_interval: 100ms, poll_max_interval: 200ms, issuance_timeout: 1m";

/// The engine's crash points from a key made to the set installed, in order.
pub const RENEWAL_CRASH_POINTS: [&str; 8] = [
    "after-key-ready",
    "after-renew-requested",
    "after-renew-call",
    "after-order-created",
    "after-issued",
    "before-install",
    "after-install-files",
    "after-installed",
];

/// A simulator on a free loopback port for `access_key: { id, secret }` and the
/// scenario `body` (orders, issuance, faults...).
pub async fn start_sim(key_id: &str, secret: &str, body: &str) -> Simulator {
    let s = Scenario::parse(
        &format!("access_key: {{ id: {key_id}, secret: {secret} }}\n{body}"),
        Path::new("scenario"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    Simulator::start(&s, "127.0.0.1:0").await.expect("sim")
}

/// The simulator `state` counted no paid renew call at all.
pub fn no_renew_calls(state: &Value) -> bool {
    state["renew_calls"].as_object().expect("map").is_empty()
}

/// A command's status and both streams, for assertion messages.
pub fn show(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// One `certificates:` entry: `{ name, domain, output: { dir: <tmp>/out/<dir> }<extra> }`.
#[derive(Clone, Debug)]
pub struct Cert {
    pub name: String,
    pub domain: String,
    /// The output directory under `<tmp>/out/`; the name unless set.
    pub dir: String,
    /// YAML appended inside the entry, starting with `, ` (`{d}`: the scratch dir).
    pub extra: String,
}

impl Cert {
    pub fn new(name: &str, domain: &str) -> Cert {
        Cert {
            name: name.into(),
            domain: domain.into(),
            dir: name.into(),
            extra: String::new(),
        }
    }

    pub fn extra(mut self, extra: &str) -> Cert {
        self.extra = extra.into();
        self
    }

    pub fn dir(mut self, dir: &str) -> Cert {
        self.dir = dir.into();
        self
    }
}

/// The parts of a test environment; `start()` makes it.
#[derive(Clone, Debug)]
pub struct EnvBuilder {
    scenario: String,
    key_id: String,
    secret: String,
    credentials_extra: String,
    api_extra: String,
    renewal: Option<String>,
    extra: String,
    certs: Vec<Cert>,
    certs_yaml: Option<String>,
    metrics: bool,
    config_mode: Option<u32>,
    log_env: Option<String>,
}

impl EnvBuilder {
    /// The account's access key, in the scenario and the configuration.
    pub fn key(mut self, id: &str, secret: &str) -> Self {
        self.key_id = id.into();
        self.secret = secret.into();
        self
    }

    /// Appended inside `credentials: { .. }` (starting with `, `).
    pub fn credentials_extra(mut self, extra: &str) -> Self {
        self.credentials_extra = extra.into();
        self
    }

    /// Appended inside `api: { .. }` (starting with `, `).
    pub fn api(mut self, extra: &str) -> Self {
        self.api_extra = extra.into();
        self
    }

    /// `renewal: { <text> }` instead of [`FAST`]; `None` leaves the section out.
    pub fn renewal(mut self, text: Option<&str>) -> Self {
        self.renewal = text.map(str::to_owned);
        self
    }

    /// Top-level YAML before `certificates:` (`{d}`: the scratch directory).
    pub fn extra(mut self, yaml: &str) -> Self {
        self.extra.push_str(yaml);
        self
    }

    pub fn cert(mut self, cert: Cert) -> Self {
        self.certs.push(cert);
        self
    }

    pub fn certs(mut self, certs: impl IntoIterator<Item = Cert>) -> Self {
        self.certs.extend(certs);
        self
    }

    /// The entries under `certificates:` as YAML text (`{d}`: the scratch directory).
    pub fn certs_yaml(mut self, yaml: &str) -> Self {
        self.certs_yaml = Some(yaml.into());
        self
    }

    /// A metrics listener on a free port (`TestEnv::metrics_port`).
    pub fn metrics(mut self) -> Self {
        self.metrics = true;
        self
    }

    /// The configuration file's mode.
    pub fn config_mode(mut self, mode: u32) -> Self {
        self.config_mode = Some(mode);
        self
    }

    /// `CAS_RENEWD_LOG` for every command (`None`: unset, the config decides).
    pub fn log_env(mut self, level: Option<&str>) -> Self {
        self.log_env = level.map(str::to_owned);
        self
    }

    fn config_text(&self, sim_url: &str, d: &str, metrics_port: Option<u16>) -> String {
        let mut cfg = format!(
            "api: {{ endpoint: \"{sim_url}\", dns_endpoint: \"{sim_url}\"{} }}\ncredentials: {{ access_key_id: {}, access_key_secret: {}{} }}\nstate_dir: {d}/state\n",
            self.api_extra, self.key_id, self.secret, self.credentials_extra
        );
        if let Some(r) = &self.renewal {
            cfg.push_str(&format!("renewal: {{ {r} }}\n"));
        }
        if let Some(port) = metrics_port {
            cfg.push_str(&format!("metrics: {{ listen: \"127.0.0.1:{port}\" }}\n"));
        }
        cfg.push_str(&self.extra.replace("{d}", d));
        if !self.certs.is_empty() || self.certs_yaml.is_some() {
            cfg.push_str("certificates:\n");
        }
        for c in &self.certs {
            // A JSON string is a YAML double-quoted scalar: any name gets through.
            let domain = serde_json::to_string(&c.domain).expect("json string");
            cfg.push_str(&format!(
                "  - {{ name: {}, domain: {domain}, output: {{ dir: {d}/out/{} }}{} }}\n",
                c.name,
                c.dir,
                c.extra.replace("{d}", d)
            ));
        }
        if let Some(yaml) = &self.certs_yaml {
            cfg.push_str(&yaml.replace("{d}", d));
        }
        cfg
    }

    /// Starts the simulator and writes the configuration.
    pub async fn start(self) -> TestEnv {
        let sim = start_sim(&self.key_id, &self.secret, &self.scenario).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        let metrics_port = self.metrics.then(free_port);
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, self.config_text(&sim.url(), &d, metrics_port)).expect("config");
        if let Some(mode) = self.config_mode {
            std::fs::set_permissions(&config, std::fs::Permissions::from_mode(mode))
                .expect("chmod config");
        }
        TestEnv {
            sim,
            key_id: self.key_id,
            secret: self.secret,
            dir,
            config,
            log_env: self.log_env,
            metrics_port,
        }
    }
}

/// What `cas-renewd` installed for one certificate.
pub struct Installed {
    pub leaf: pki::CertInfo,
    /// privkey.pem is the key of cert.pem.
    pub key_matches: bool,
    /// fullchain.pem begins with cert.pem.
    pub fullchain_starts_with_leaf: bool,
}

impl Installed {
    /// Whole days until the leaf expires.
    pub fn days_left(&self) -> i64 {
        (self.leaf.not_after - chrono::Utc::now().timestamp()) / 86_400
    }
}

/// A running simulator, a scratch directory and a configuration for both.
pub struct TestEnv {
    pub sim: Simulator,
    key_id: String,
    secret: String,
    dir: tempfile::TempDir,
    config: PathBuf,
    log_env: Option<String>,
    metrics_port: Option<u16>,
}

impl TestEnv {
    /// An environment whose simulator holds `scenario` (without `access_key:`),
    /// with the default account, [`FAST`] renewal and no certificates yet.
    pub fn builder(scenario: &str) -> EnvBuilder {
        EnvBuilder {
            scenario: scenario.into(),
            key_id: KEY_ID.into(),
            secret: SECRET.into(),
            credentials_extra: String::new(),
            api_extra: String::new(),
            renewal: Some(FAST.into()),
            extra: String::new(),
            certs: Vec::new(),
            certs_yaml: None,
            metrics: false,
            config_mode: None,
            log_env: Some("info".into()),
        }
    }

    /// An in-process engine on this configuration, for tests that read its
    /// registry or pass report directly.
    pub fn engine(&self) -> Arc<Engine> {
        let cfg = Config::load(&self.config).unwrap_or_else(|e| panic!("{e}"));
        let creds = CredentialsProvider::resolve(cfg.credentials.as_ref(), &Environment::default())
            .expect("creds");
        Arc::new(Engine::new(cfg, Arc::new(creds)).expect("engine"))
    }

    /// A CAS client of the account, as an operator's console or script would use
    /// it beside the daemon (three attempts, 5 s timeout).
    pub fn console(&self) -> cas_renewd::cas::api::Cas {
        let fake = super::fake::Fake::at(self.sim.url());
        super::fake::cas_with_key(
            &fake,
            &self.key_id,
            &self.secret,
            None,
            3,
            std::time::Duration::from_secs(5),
        )
    }

    /// Renews order `id` through [`TestEnv::console`] (no CSR: CAS makes the key),
    /// as an operator would beside the daemon; returns the new order's id.
    pub async fn console_renew(&self, id: i64) -> i64 {
        self.console()
            .renew_certificate_order(id, None, &[])
            .await
            .expect("console renew")
            .body
            .order_id
    }

    /// `<tmp>/<p>`.
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn config_text(&self) -> String {
        std::fs::read_to_string(&self.config).expect("config")
    }

    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_port
    }

    /// The binary with this configuration and `args`, not yet started.
    pub fn command(&self, args: &[&str]) -> Command {
        bin_command(&self.config, args, self.log_env.as_deref())
    }

    /// Runs `c` to completion off the async runtime.
    pub async fn output(&self, mut c: Command) -> Output {
        tokio::task::spawn_blocking(move || c.output().expect("binary runs"))
            .await
            .expect("join")
    }

    pub async fn run(&self, args: &[&str]) -> Output {
        self.run_with_env(args, &[]).await
    }

    /// `run` with variables added to the environment (`CAS_RENEWD_CRASH_AT`, ...).
    pub async fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = self.command(args);
        for (k, v) in env {
            c.env(k, v);
        }
        self.output(c).await
    }

    pub async fn once(&self) -> Output {
        self.run(&["once"]).await
    }

    /// `once` killed at the crash point `point` (`CAS_RENEWD_CRASH_AT`), checked to
    /// have failed there.
    pub async fn once_crashing_at(&self, point: &str) -> Output {
        let o = self
            .run_with_env(&["once"], &[("CAS_RENEWD_CRASH_AT", point)])
            .await;
        assert!(
            !o.status.success(),
            "{point}: expected a crash\n{}",
            show(&o)
        );
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(&format!("crash point {point}")),
            "{point}: {}",
            show(&o)
        );
        o
    }

    /// `status --json`, parsed.
    pub async fn status_json(&self) -> Value {
        let o = self.run(&["status", "--json"]).await;
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&o)))
    }

    pub fn sim_state(&self) -> Value {
        self.sim.state()
    }

    /// Paid renew calls per order id, as the simulator counted them.
    pub fn renew_calls(&self) -> Value {
        self.sim.state()["renew_calls"].clone()
    }

    /// Attempts of `action` the simulator received.
    pub fn calls(&self, action: &str) -> u64 {
        self.sim.state()["calls"][action].as_u64().unwrap_or(0)
    }

    /// The installed set in `out/<dir>`, if cert.pem exists.
    pub fn installed(&self, dir: &str) -> Option<Installed> {
        let dir = self.path(&format!("out/{dir}"));
        let cert = std::fs::read_to_string(dir.join("cert.pem")).ok()?;
        let leaf = pki::read_leaf(&cert).expect("leaf");
        let key = Key::from_pem(&std::fs::read_to_string(dir.join("privkey.pem")).expect("key"))
            .expect("key parses");
        let full = std::fs::read_to_string(dir.join("fullchain.pem")).unwrap_or_default();
        Some(Installed {
            key_matches: key.spki_sha256() == leaf.spki_sha256,
            fullchain_starts_with_leaf: full.starts_with(&cert),
            leaf,
        })
    }

    /// The journal file of `name` as text (empty if absent).
    pub fn journal_text(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("state/journal/{name}.json")))
            .unwrap_or_default()
    }
}
