//! The `fleet:` section: etcd endpoints, prefix, TLS files, lease, the sealing
//! key and this host's name, checked in every build (a build without the `fleet`
//! feature refuses the section with the reason).

use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::problems::Problems;
use super::values::{AbsPath, HumanDuration};
use crate::fleet::{FleetSpec, MIN_LEASE_TTL, SealingKey};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFleet {
    pub(super) etcd: RawEtcd,
    pub(super) sealing_key_file: Spanned<AbsPath>,
    pub(super) host_name: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEtcd {
    pub(super) endpoints: Spanned<Vec<Spanned<String>>>,
    pub(super) prefix: Spanned<String>,
    pub(super) ca_file: Option<AbsPath>,
    pub(super) cert_file: Option<Spanned<AbsPath>>,
    pub(super) key_file: Option<Spanned<AbsPath>>,
    pub(super) lease_ttl: Option<Spanned<HumanDuration>>,
}

/// The lease when `lease_ttl` is not given.
const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

/// Whether this binary can take part in a fleet.
const FLEET_BUILT: bool = cfg!(feature = "fleet");

/// The validated section; `None` when it has problems (each reported to `p`).
pub(super) fn fleet(raw: &Spanned<RawFleet>, p: &mut Problems<'_>) -> Option<FleetSpec> {
    if !FLEET_BUILT {
        p.at(
            raw.referenced,
            "fleet",
            "this cas-renewd was built without the `fleet` feature (etcd coordination); build it with `cargo build --release --features fleet` (needs protoc: Debian `protobuf-compiler libprotobuf-dev`), or remove `fleet:`",
        );
        return None;
    }
    let f = &raw.value;
    let endpoints = endpoints(&f.etcd.endpoints, p);
    let prefix = prefix(&f.etcd.prefix, p);
    let client_cert = match (&f.etcd.cert_file, &f.etcd.key_file) {
        (Some(c), Some(k)) => Some((c.value.0.clone(), k.value.0.clone())),
        (None, None) => None,
        (Some(c), None) => {
            p.at(
                c.referenced,
                "fleet.etcd.cert_file",
                "cert_file needs key_file beside it",
            );
            None
        }
        (None, Some(k)) => {
            p.at(
                k.referenced,
                "fleet.etcd.key_file",
                "key_file needs cert_file beside it",
            );
            None
        }
    };
    let lease_ttl = match &f.etcd.lease_ttl {
        Some(t) if t.value.0 < MIN_LEASE_TTL => {
            p.at(t.referenced, "fleet.etcd.lease_ttl", "must be at least 5s");
            None
        }
        Some(t) => Some(t.value.0),
        None => Some(DEFAULT_LEASE_TTL),
    };
    let sealing_key = SealingKey::read(&f.sealing_key_file.value.0)
        .map_err(|e| p.at(f.sealing_key_file.referenced, "fleet.sealing_key_file", e))
        .ok();
    let host_name = host_name(f.host_name.as_ref(), p);
    Some(FleetSpec {
        endpoints: endpoints?,
        prefix: prefix?,
        ca_file: f.etcd.ca_file.as_ref().map(|c| c.0.clone()),
        client_cert,
        lease_ttl: lease_ttl?,
        sealing_key: sealing_key?,
        host_name: host_name?,
    })
}

fn endpoints(raw: &Spanned<Vec<Spanned<String>>>, p: &mut Problems<'_>) -> Option<Vec<String>> {
    if raw.value.is_empty() {
        p.at(
            raw.referenced,
            "fleet.etcd.endpoints",
            "name at least one etcd endpoint",
        );
        return None;
    }
    let mut out = Vec::new();
    let mut schemes = std::collections::BTreeSet::new();
    for (i, e) in raw.value.iter().enumerate() {
        match reqwest::Url::parse(&e.value) {
            // The URL would be repeated in every etcd error and log line; the
            // message names the entry, not the text.
            Ok(u) if !u.username().is_empty() || u.password().is_some() => p.at(
                e.referenced,
                "fleet.etcd.endpoints",
                format!(
                    "entry {} holds a user name or password (user:pass@): etcd credentials are not taken from URLs; use cert_file and key_file",
                    i + 1
                ),
            ),
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                schemes.insert(u.scheme().to_owned());
                out.push(e.value.trim_end_matches('/').to_owned());
            }
            Ok(_) => p.at(
                e.referenced,
                "fleet.etcd.endpoints",
                format!(
                    "{:?} is not an http:// or https:// URL with a host",
                    e.value
                ),
            ),
            Err(err) => p.at(
                e.referenced,
                "fleet.etcd.endpoints",
                format!("{:?} is not a URL: {err}", e.value),
            ),
        }
    }
    if schemes.len() > 1 {
        p.at(
            raw.referenced,
            "fleet.etcd.endpoints",
            "mixes http:// and https://; every member is reached the same way",
        );
        return None;
    }
    (out.len() == raw.value.len()).then_some(out)
}

fn prefix(raw: &Spanned<String>, p: &mut Problems<'_>) -> Option<String> {
    let v = &raw.value;
    let problem = if !v.starts_with('/') {
        Some("must be absolute (start with /)")
    } else if v.len() > 1 && v.ends_with('/') || v == "/" {
        Some("must not end with /")
    } else if v.contains("//") || v.chars().any(|c| c.is_control() || c.is_whitespace()) {
        Some("must not hold an empty segment, a space or a control character")
    } else {
        None
    };
    match problem {
        Some(m) => {
            p.at(raw.referenced, "fleet.etcd.prefix", format!("{v:?} {m}"));
            None
        }
        None => Some(v.clone()),
    }
}

/// A host name as etcd keys and the lock's holder carry it.
fn is_valid_host_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn host_name(raw: Option<&Spanned<String>>, p: &mut Problems<'_>) -> Option<String> {
    let (name, loc) = match raw {
        Some(h) => (h.value.clone(), h.referenced),
        None => match system_host_name() {
            Some(h) => (h, Location::UNKNOWN),
            None => {
                p.at(
                    Location::UNKNOWN,
                    "fleet.host_name",
                    "the machine's hostname cannot be read; set fleet.host_name",
                );
                return None;
            }
        },
    };
    if is_valid_host_name(&name) {
        Some(name)
    } else {
        p.at(
            loc,
            "fleet.host_name",
            format!(
                "{name:?} may hold only letters, digits, '.', '_' and '-' (set fleet.host_name)"
            ),
        );
        None
    }
}

fn system_host_name() -> Option<String> {
    let text = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    Some(text.trim().to_owned()).filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::Path;

    use crate::config::Config;

    const BASE: &str =
        "state_dir: /tmp/x\ncertificates:\n  - name: www\n    domain: www.example.com\n";

    fn key_file(dir: &Path) -> String {
        let p = dir.join("fleet.key");
        std::fs::write(&p, [9u8; 32]).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        p.display().to_string()
    }

    fn parse(fleet: &str) -> Result<Config, String> {
        Config::parse(&format!("{BASE}{fleet}"), Path::new("t.yaml")).map_err(|e| e.to_string())
    }

    fn section(key: &str, etcd_extra: &str, top_extra: &str) -> String {
        format!(
            "fleet:\n  etcd:\n    endpoints: [\"http://127.0.0.1:2379\"]\n    prefix: /cas-renewd/prod\n{etcd_extra}  sealing_key_file: {key}\n  host_name: web-3\n{top_extra}"
        )
    }

    #[test]
    fn no_fleet_section_means_no_fleet() {
        assert!(parse("").expect("valid").fleet.is_none());
    }

    #[cfg(feature = "fleet")]
    #[test]
    fn a_valid_fleet_section_is_read() {
        let d = tempfile::tempdir().expect("tempdir");
        let cfg = parse(&section(&key_file(d.path()), "    lease_ttl: 10s\n", "")).expect("valid");
        let f = cfg.fleet.expect("fleet");
        assert_eq!(f.prefix, "/cas-renewd/prod");
        assert_eq!(f.host_name, "web-3");
        assert_eq!(f.lease_ttl, std::time::Duration::from_secs(10));
        assert!(!format!("{f:?}").contains("[9, 9"), "the key is redacted");
    }

    #[cfg(feature = "fleet")]
    #[test]
    fn each_fleet_key_is_checked() {
        let d = tempfile::tempdir().expect("tempdir");
        let key = key_file(d.path());
        let cases: Vec<(String, &str)> = vec![
            (
                section(&key, "", "").replace("[\"http://127.0.0.1:2379\"]", "[]"),
                "at least one etcd endpoint",
            ),
            (
                section(&key, "", "").replace("http://127.0.0.1:2379", "ftp://x"),
                "not an http:// or https://",
            ),
            (
                section(&key, "", "").replace(
                    "[\"http://127.0.0.1:2379\"]",
                    "[\"http://a:1\", \"https://b:2\"]",
                ),
                "mixes http",
            ),
            (
                section(&key, "", "").replace(
                    "http://127.0.0.1:2379",
                    "http://root:hunter2@127.0.0.1:2379",
                ),
                "user name or password",
            ),
            (
                section(&key, "", "").replace("/cas-renewd/prod", "cas-renewd"),
                "must be absolute",
            ),
            (
                section(&key, "", "").replace("/cas-renewd/prod", "/cas-renewd/"),
                "must not end with /",
            ),
            (
                section(&key, "    cert_file: /etc/c.pem\n", ""),
                "cert_file needs key_file",
            ),
            (
                section(&key, "    key_file: /etc/k.pem\n", ""),
                "key_file needs cert_file",
            ),
            (section(&key, "    lease_ttl: 2s\n", ""), "at least 5s"),
            (
                section(&key, "", "").replace("web-3", "web/3"),
                "only letters, digits",
            ),
            (section("/nonexistent/fleet.key", "", ""), "cannot be read"),
            (
                section(&key, "", "").replace("  host_name: web-3\n", "  host: web-3\n"),
                "unknown field",
            ),
        ];
        for (text, want) in cases {
            let err = parse(&text).expect_err(want);
            assert!(err.contains(want), "{want:?} not in {err}");
            assert!(!err.contains("hunter2"), "a password repeated: {err}");
        }
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = parse(&section(&key, "", "")).expect_err("readable key");
        assert!(err.contains("readable by group or others"), "{err}");
    }

    #[cfg(not(feature = "fleet"))]
    #[test]
    fn a_build_without_the_feature_refuses_a_fleet_section() {
        let d = tempfile::tempdir().expect("tempdir");
        let err = parse(&section(&key_file(d.path()), "", "")).expect_err("no feature");
        assert!(err.contains("built without the `fleet` feature"), "{err}");
    }
}
