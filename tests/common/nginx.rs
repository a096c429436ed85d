//! A real nginx for the end-to-end tests: its own prefix, configuration, pid
//! file and loopback port, stopped whatever happens; and what it serves.
//! Skipped with a reason when nginx is not installed, unless CAS_RENEWD_E2E=1.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use cas_renewd::pki;

pub fn nginx_available() -> bool {
    if Command::new("nginx").arg("-v").output().is_ok() {
        return true;
    }
    if std::env::var("CAS_RENEWD_E2E").as_deref() == Ok("1") {
        panic!("CAS_RENEWD_E2E=1 but nginx is missing; run scripts/test.sh");
    }
    eprintln!("skipped: nginx is not installed (scripts/test.sh installs it)");
    false
}

/// One server block: a name and the cas-renewd output directory it serves from.
pub struct Site<'a> {
    pub server_name: &'a str,
    pub dir: PathBuf,
}

/// An nginx of our own, stopped on drop.
pub struct Nginx {
    pub prefix: PathBuf,
    pub conf: PathBuf,
    pub port: u16,
}

impl Nginx {
    pub fn conf_text(prefix: &Path, port: u16, sites: &[Site<'_>], broken: bool) -> String {
        let p = prefix.display();
        let mut servers = String::new();
        for s in sites {
            servers.push_str(&format!(
                "    server {{\n        listen 127.0.0.1:{port} ssl;\n        server_name {};\n        ssl_certificate {}/fullchain.pem;\n        ssl_certificate_key {}/privkey.pem;\n        return 200 \"{}\\n\";\n    }}\n",
                s.server_name,
                s.dir.display(),
                s.dir.display(),
                s.server_name
            ));
        }
        format!(
            "daemon on;\nmaster_process on;\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log;\nevents {{ worker_connections 64; }}\nhttp {{\n    access_log off;\n    client_body_temp_path {p}/tmp/body;\n    proxy_temp_path {p}/tmp/proxy;\n    fastcgi_temp_path {p}/tmp/fastcgi;\n    uwsgi_temp_path {p}/tmp/uwsgi;\n    scgi_temp_path {p}/tmp/scgi;\n{servers}{}}}\n",
            if broken {
                "    this_directive_does_not_exist on;\n"
            } else {
                ""
            }
        )
    }

    pub fn cmd(&self, args: &[&str]) -> Output {
        Command::new("nginx")
            .arg("-p")
            .arg(&self.prefix)
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .output()
            .expect("nginx runs")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.prefix.join("nginx.pid")
    }

    pub fn rewrite(&self, sites: &[Site<'_>], broken: bool) {
        std::fs::write(
            &self.conf,
            Self::conf_text(&self.prefix, self.port, sites, broken),
        )
        .expect("rewrite conf");
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(self.pid_file()).unwrap_or_default();
        let pid = pid.trim().to_owned();
        let _ = self.cmd(&["-s", "stop"]);
        let alive = || !pid.is_empty() && Path::new(&format!("/proc/{pid}")).exists();
        for _ in 0..50 {
            if !alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // The graceful stop failed (a broken config, say): kill workers, then master.
        let _ = Command::new("pkill").args(["-KILL", "-P", &pid]).status();
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
    }
}

pub async fn served(addr: &str, sni: &str) -> pki::CertInfo {
    let der = cas_renewd::verify::served_leaf(addr, sni, Duration::from_secs(5))
        .await
        .expect("TLS handshake with nginx");
    use base64::Engine as _;
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64::engine::general_purpose::STANDARD.encode(&der)
    );
    pki::read_leaf(&pem).expect("served leaf parses")
}

/// What nginx serves once its reload has settled: right after a reload, an old
/// worker can still accept a connection or two with the old certificate, so look
/// again (for up to 5 s) until the expected serial shows.
pub async fn served_settled(addr: &str, sni: &str, expected_serial: &str) -> pki::CertInfo {
    let mut leaf = served(addr, sni).await;
    for _ in 0..50 {
        if leaf.serial_hex == expected_serial {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        leaf = served(addr, sni).await;
    }
    leaf
}

/// The leaf cas-renewd installed in `dir`.
pub fn on_disk(dir: &Path) -> pki::CertInfo {
    pki::read_leaf(&std::fs::read_to_string(dir.join("cert.pem")).expect("cert.pem")).expect("leaf")
}

/// The reload hook (as YAML argv) of the nginx with prefix `n_prefix` and `conf`.
pub fn reload_hook(n_prefix: &Path, conf: &Path) -> String {
    format!(
        "[\"nginx\", \"-p\", \"{}\", \"-c\", \"{}\", \"-s\", \"reload\"]",
        n_prefix.display(),
        conf.display()
    )
}

pub fn start_on(prefix: &Path, port: u16, sites: &[Site<'_>]) -> Nginx {
    std::fs::create_dir_all(prefix.join("tmp")).expect("prefix");
    let conf = prefix.join("nginx.conf");
    std::fs::write(&conf, Nginx::conf_text(prefix, port, sites, false)).expect("conf");
    let n = Nginx {
        prefix: prefix.to_owned(),
        conf,
        port,
    };
    let out = n.cmd(&[]);
    assert!(
        out.status.success(),
        "nginx start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    n
}
