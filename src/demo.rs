//! `cas-renewd demo`: a full renewal against an in-process simulator, in a scratch
//! directory, with a reload hook, so a newcomer sees every part work in seconds.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cas_renewd::cas::credentials::{CredentialsProvider, Environment};
use cas_renewd::config::Config;
use cas_renewd::renew::{Engine, PassOptions, PassReport};
use cas_renewd::store::{self, FileSpec};
use cas_sim::{Scenario, Simulator};

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo directory {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Sim(#[from] cas_sim::SimError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Config(#[from] cas_renewd::config::ConfigError),
    #[error(transparent)]
    Engine(#[from] cas_renewd::renew::EngineError),
}

/// What the demo did, for its summary.
#[derive(Debug)]
pub struct DemoRun {
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub report: PassReport,
    pub renew_calls: serde_json::Value,
    pub api_calls: serde_json::Value,
    pub reload_log: String,
    /// The metrics the daemon would serve, as exposed text.
    pub metrics: String,
}

/// The configuration the demo writes: the simulator's endpoint and key, two
/// certificates, a reload hook that logs what it was told.
pub fn demo_config(dir: &Path, endpoint: &str, scenario: &Scenario) -> String {
    format!(
        r#"# Written by `cas-renewd demo`: a complete configuration against the simulator.
api:
  endpoint: {endpoint}
  dns_endpoint: {endpoint}
credentials:
  access_key_id: {id}
  access_key_secret: {secret}
state_dir: {dir}/state
schedule: {{ cron: "0 17 3 * * *", jitter: 0s }}
renewal:
  renew_before: 30d
  poll_interval: 1s
  poll_max_interval: 2s
  issuance_timeout: 5m
defaults:
  key: {{ algorithm: ecdsa-p256 }}
  reload: [demo-reload]
certificates:
  - name: www
    domain: www.example.com
    output: {{ dir: {dir}/certs/www }}
  - name: api
    domain: api.example.com
    key: {{ algorithm: rsa-2048 }}
    output: {{ dir: {dir}/certs/api }}
hooks:
  demo-reload:
    command: ["/bin/sh", "-c", "echo \"reload for $CAS_RENEWD_CERT_NAME: $CAS_RENEWD_FULLCHAIN_PATH valid until $CAS_RENEWD_NOT_AFTER\" >> {dir}/reload.log"]
    timeout: 10s
metrics:
  listen: 127.0.0.1:0
"#,
        dir = dir.display(),
        id = scenario.access_key.id,
        secret = scenario.access_key.secret,
    )
}

pub async fn run(dir: Option<&Path>) -> Result<DemoRun, DemoError> {
    let dir = match dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|source| DemoError::Dir {
                path: d.to_owned(),
                source,
            })?;
            d.canonicalize().map_err(|source| DemoError::Dir {
                path: d.to_owned(),
                source,
            })?
        }
        None => tempfile::Builder::new()
            .prefix("cas-renewd-demo-")
            .tempdir()
            .map_err(|source| DemoError::Dir {
                path: std::env::temp_dir(),
                source,
            })?
            .keep(),
    };
    let scenario = Scenario::demo();
    let sim = Simulator::start(&scenario, "127.0.0.1:0").await?;
    let config_path = dir.join("config.yaml");
    store::write_file(
        &config_path,
        demo_config(&dir, &sim.url(), &scenario).as_bytes(),
        FileSpec::private(),
    )?;
    let cfg = Config::load(&config_path)?;
    let creds = CredentialsProvider::resolve(cfg.credentials.as_ref(), &Environment::default())
        .map_err(cas_renewd::renew::EngineError::from)?;
    let engine = Arc::new(Engine::new(cfg, Arc::new(creds))?);
    let _lock = store::StateDir::open(&engine.config().state_dir)?.lock()?;
    let report = engine.pass(&PassOptions::default()).await?;
    let state = sim.state();
    Ok(DemoRun {
        reload_log: std::fs::read_to_string(dir.join("reload.log")).unwrap_or_default(),
        dir,
        config_path,
        report,
        renew_calls: state["renew_calls"].clone(),
        api_calls: state["calls"].clone(),
        metrics: engine.metrics().render(),
    })
}

/// The demo's closing summary.
pub fn summary(run: &DemoRun) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "cas-renewd demo: a full renewal against the built-in simulator\n\n  working directory  {}\n  configuration      {}\n\n",
        run.dir.display(),
        run.config_path.display()
    ));
    for c in &run.report.certs {
        s.push_str(&format!("certificate {} ({})\n", c.name, c.domain));
        s.push_str(&format!("  result       {:?}: {}\n", c.outcome, c.message));
        s.push_str(&format!(
            "  expiry       {} -> {}\n",
            c.previous_not_after
                .as_deref()
                .unwrap_or("(nothing on disk)"),
            c.not_after.as_deref().unwrap_or("-")
        ));
        if let Some(o) = c.order_id {
            s.push_str(&format!("  order        {o}\n"));
        }
        s.push_str(&format!("  renew calls  {}\n", c.renew_calls));
        if !c.files.is_empty() {
            s.push_str("  files\n");
            for f in &c.files {
                s.push_str(&format!("    {}\n", f.display()));
            }
        }
        s.push('\n');
    }
    for h in &run.report.hooks {
        s.push_str(&format!(
            "hook {} ran once for {}: {}\n",
            h.hook,
            h.certs.join(", "),
            if h.ok { "ok" } else { &h.message }
        ));
    }
    if !run.reload_log.is_empty() {
        s.push_str("reload.log:\n");
        for l in run.reload_log.lines() {
            s.push_str(&format!("  {l}\n"));
        }
    }
    s.push_str(&format!(
        "\nsimulator: paid renew calls per source order {}; API calls {}\n",
        run.renew_calls, run.api_calls
    ));
    s.push_str("\nmetrics (as `run` serves them on /metrics):\n");
    for l in run.metrics.lines().filter(|l| {
        !l.starts_with('#')
            && (l.starts_with("cas_renewd_certificate_")
                || l.starts_with("cas_renewd_renew")
                || l.starts_with("cas_renewd_hook_runs_total")
                || l.starts_with("cas_renewd_api_requests_total"))
    }) {
        s.push_str(&format!("  {l}\n"));
    }
    s.push_str(&format!(
        "\nLook around: the files under {}/certs, the journals under {}/state/journal.\nThe simulator stopped with the demo; `cas-renewd sim` runs one to keep trying (README, Sandbox).\n",
        run.dir.display(),
        run.dir.display()
    ));
    s
}
