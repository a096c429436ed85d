//! `cas-renewd run` as systemd runs it: READY=1 on a NOTIFY_SOCKET we created,
//! valid metrics, SIGHUP reload (a bad config is refused, the old one kept), SIGUSR1
//! pass, and exit 0 after SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cas_sim::{Scenario, Simulator};

const BIN: &str = env!("CARGO_BIN_EXE_cas-renewd");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Reads notifications until one contains `want` (bounded).
fn wait_notify(sock: &UnixDatagram, want: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = msg.lines().any(|l| l == want);
            seen.push(msg);
            if hit {
                return;
            }
        }
    }
    panic!("no {want} within 30 s; got {seen:?}");
}

fn kill(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.expect("get");
    let st = r.status().as_u16();
    (st, r.text().await.expect("body"))
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn run_notifies_serves_metrics_reloads_passes_and_stops() {
    let scenario = Scenario::parse(
        "access_key: { id: k, secret: s }\norders:\n  - { domain: www.example.com, expires_in: 20d }\nissuance: { polls_before_issued: 1 }\n",
        Path::new("scenario"),
    )
    .expect("scenario");
    let sim = Simulator::start(&scenario, "127.0.0.1:0")
        .await
        .expect("sim");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let cfg_text = format!(
        "api: {{ endpoint: \"{0}\", dns_endpoint: \"{0}\" }}\ncredentials: {{ access_key_id: k, access_key_secret: s }}\nstate_dir: {1}/state\nschedule: {{ cron: \"0 17 3 * * *\", jitter: 0s, run_at_start: true }}\nrenewal: {{ poll_interval: 100ms, poll_max_interval: 200ms }}\ncertificates:\n  - {{ name: www, domain: www.example.com, output: {{ dir: {1}/out/www }} }}\nmetrics: {{ listen: \"127.0.0.1:{port}\" }}\n",
        sim.url(),
        dir.path().display()
    );
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, &cfg_text).expect("config");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");

    let child = Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NOTIFY_SOCKET", &sock_path)
        .env("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("daemon starts");
    let pid = child.id();
    let mut seen = Vec::new();
    wait_notify(&sock, "READY=1", &mut seen);
    assert!(seen.iter().any(|m| m.contains("STATUS=")), "{seen:?}");
    let base = format!("http://127.0.0.1:{port}");
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);

    // The start pass installs and renews; wait for readiness and the renewal.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (st, _) = get(&format!("{base}/readyz")).await;
        let m = get(&format!("{base}/metrics")).await.1;
        if st == 200 && metric(&m, "cas_renewd_renew_orders_total{cert=\"www\"}") == Some(1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "no renewal within 30 s:\n{m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let m = get(&format!("{base}/metrics")).await.1;
    assert_eq!(
        metric(&m, "cas_renewd_certificate_ready{cert=\"www\"}"),
        Some(1.0),
        "{m}"
    );
    assert!(
        metric(
            &m,
            "cas_renewd_certificate_not_after_timestamp_seconds{cert=\"www\"}"
        )
        .is_some_and(|t| t > 1.8e9)
    );
    assert!(metric(&m, "cas_renewd_last_pass_timestamp_seconds").is_some_and(|t| t > 0.0));
    let metrics_file = dir.path().join("scrape.prom");
    std::fs::write(&metrics_file, &m).expect("write scrape");

    // SIGHUP with a broken file: refused, old config kept, metric says so.
    std::fs::write(&cfg, "certificates: [\n").expect("break config");
    kill(pid, "-HUP");
    wait_notify(&sock, "RELOADING=1", &mut seen);
    wait_notify(&sock, "READY=1", &mut seen);
    let m = get(&format!("{base}/metrics")).await.1;
    assert_eq!(
        metric(&m, "cas_renewd_config_last_reload_successful"),
        Some(0.0),
        "{m}"
    );
    std::fs::write(&cfg, &cfg_text).expect("fix config");
    kill(pid, "-HUP");
    wait_notify(&sock, "RELOADING=1", &mut seen);
    wait_notify(&sock, "READY=1", &mut seen);
    let m = get(&format!("{base}/metrics")).await.1;
    assert_eq!(
        metric(&m, "cas_renewd_config_last_reload_successful"),
        Some(1.0),
        "{m}"
    );

    // SIGUSR1: a pass now (one more listing), and still one renew call.
    let before = sim.state()["calls"]["ListUserCertificateOrder"]
        .as_u64()
        .expect("n");
    kill(pid, "-USR1");
    let deadline = Instant::now() + Duration::from_secs(20);
    while sim.state()["calls"]["ListUserCertificateOrder"]
        .as_u64()
        .expect("n")
        <= before
    {
        assert!(Instant::now() < deadline, "SIGUSR1 ran no pass");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        sim.state()["renew_calls"],
        serde_json::json!({ "100001": 1 })
    );

    kill(pid, "-TERM");
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || child.wait_with_output().expect("wait"))
        .await
        .expect("join");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped within 10 s"
    );
    assert_eq!(
        status.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    wait_notify(&sock, "STOPPING=1", &mut seen);

    // The live scrape is valid exposition format (promtool, when installed).
    match Command::new("promtool")
        .arg("check")
        .arg("metrics")
        .stdin(std::fs::File::open(&metrics_file).expect("open"))
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) if std::env::var("CAS_RENEWD_E2E").as_deref() == Ok("1") => {
            panic!("CAS_RENEWD_E2E=1 but promtool is missing; run scripts/test.sh")
        }
        Err(_) => eprintln!(
            "skipped promtool check: promtool is not installed (scripts/test.sh installs it)"
        ),
    }
}
