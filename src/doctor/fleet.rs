//! `doctor`'s fleet checks (`fleet:` configured): etcd answers, grants this host
//! a lease (what every lock hangs on), and this host's sealing key opens the
//! fleet's check value. Reads only; the lease lapses by itself after `lease_ttl`.

use crate::fleet::etcd::EtcdFleet;
use crate::fleet::layout;
use crate::fleet::{FleetError, FleetSpec};

use super::Check;

/// The checks in order; the later ones are skipped when etcd does not answer.
pub(super) async fn checks(spec: &FleetSpec) -> Vec<Check> {
    let endpoints = spec.endpoints.join(", ");
    let etcd = match EtcdFleet::connect(spec).await {
        Ok(e) => e,
        Err(e) => return vec![unreachable(&endpoints, &e)],
    };
    let check_key = etcd.layout().sealing_check();
    let stored = match etcd.get(&check_key).await {
        Ok(v) => v.value,
        Err(e) => return vec![unreachable(&endpoints, &e)],
    };
    let mut out = vec![Check::ok(
        "etcd",
        format!("{endpoints} answer(s) (prefix {})", spec.prefix),
    )];
    out.push(match etcd.lease().await {
        Ok(_) => Check::ok(
            "fleet lease",
            format!(
                "etcd granted a {} lease to host {} (it lapses by itself)",
                humantime::format_duration(spec.lease_ttl),
                spec.host_name
            ),
        ),
        Err(e) => Check::fail(
            "fleet lease",
            format!("{e}; without a lease this host takes no lock and makes no paid call: check the etcd user's permissions"),
        ),
    });
    out.push(sealing(spec, &check_key, stored.as_deref()));
    out
}

fn unreachable(endpoints: &str, e: &FleetError) -> Check {
    Check::fail(
        "etcd",
        format!(
            "{e}; check the members ({endpoints}), the network and the TLS files (ca_file, cert_file, key_file): without etcd this host makes no paid call"
        ),
    )
}

/// Whether this host's key opens the check value the first host sealed.
fn sealing(spec: &FleetSpec, check_key: &str, stored: Option<&[u8]>) -> Check {
    let Some(stored) = stored else {
        return Check::ok(
            "sealing key",
            format!(
                "read; no host has sealed the check value {check_key} yet (the first daemon to start does)"
            ),
        );
    };
    let (cert, version) = layout::CHECK_BINDING;
    match spec
        .sealing_key
        .open(cert, version, &String::from_utf8_lossy(stored))
    {
        Ok(plain) if plain == layout::CHECK_TEXT => Check::ok(
            "sealing key",
            format!("the fleet's: it opens the check value {check_key}"),
        ),
        _ => Check::fail(
            "sealing key",
            format!(
                "sealing_key_file does not open the check value {check_key}: it is not the key the other hosts use; copy theirs (this host would install nothing)"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::SealingKey;
    use crate::fleet::layout::{CHECK_BINDING, CHECK_TEXT};

    fn spec(key: [u8; 32]) -> FleetSpec {
        FleetSpec {
            endpoints: vec!["http://127.0.0.1:1".into()],
            prefix: "/p".into(),
            ca_file: None,
            client_cert: None,
            lease_ttl: std::time::Duration::from_secs(5),
            sealing_key: SealingKey::from_bytes(key),
            host_name: "h".into(),
        }
    }

    #[test]
    fn the_sealing_check_tells_the_fleet_key_from_another() {
        let (cert, version) = CHECK_BINDING;
        let sealed = SealingKey::from_bytes([7; 32])
            .seal(cert, version, CHECK_TEXT)
            .expect("seal");
        let ours = sealing(&spec([7; 32]), "/p/sealing-check", Some(sealed.as_bytes()));
        assert_eq!(ours.status, super::super::Status::Ok, "{ours:?}");
        let other = sealing(&spec([8; 32]), "/p/sealing-check", Some(sealed.as_bytes()));
        assert_eq!(other.status, super::super::Status::Fail, "{other:?}");
        assert!(
            other.message.contains("not the key the other hosts use"),
            "{other:?}"
        );
        let none = sealing(&spec([8; 32]), "/p/sealing-check", None);
        assert_eq!(none.status, super::super::Status::Ok, "{none:?}");
    }

    #[tokio::test]
    async fn etcd_that_does_not_answer_fails_the_first_check_and_skips_the_rest() {
        let checks = checks(&spec([7; 32])).await;
        assert_eq!(checks.len(), 1, "{checks:?}");
        assert_eq!(checks[0].check, "etcd");
        assert_eq!(checks[0].status, super::super::Status::Fail, "{checks:?}");
        assert!(checks[0].message.contains("127.0.0.1:1"), "{checks:?}");
    }
}
