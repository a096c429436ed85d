//! The keys of a fleet under its prefix and the JSON records stored there.
//!
//! ```text
//! <prefix>/sealing-check                 a fixed text sealed with the fleet key
//! <prefix>/certs/<cert>/lock             the lock: {host, since}, on the holder's lease
//! <prefix>/certs/<cert>/journal          the shared journal (phase of the attempt)
//! <prefix>/certs/<cert>/keys/<attempt>   the attempt's private key, sealed
//! <prefix>/certs/<cert>/issued           the issued chain + sealed key, with a version
//! <prefix>/hosts/<host>/<cert>           the version this host installed
//! ```

use serde::{Deserialize, Serialize};

/// The text sealed under `sealing-check`: a host whose key does not open it
/// refuses to take part before it writes or installs anything.
pub const CHECK_TEXT: &[u8] = b"cas-renewd fleet sealing key check";

/// The "certificate" and "version" the check value is bound to.
pub const CHECK_BINDING: (&str, &str) = ("(sealing-check)", "1");

/// The key names of one fleet.
#[derive(Debug, Clone)]
pub struct Layout {
    prefix: String,
}

impl Layout {
    pub fn new(prefix: &str) -> Layout {
        Layout {
            prefix: prefix.to_owned(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn sealing_check(&self) -> String {
        format!("{}/sealing-check", self.prefix)
    }

    /// Everything about certificates: what the hosts watch.
    pub fn certs(&self) -> String {
        format!("{}/certs/", self.prefix)
    }

    pub fn lock(&self, cert: &str) -> String {
        format!("{}/certs/{cert}/lock", self.prefix)
    }

    pub fn journal(&self, cert: &str) -> String {
        format!("{}/certs/{cert}/journal", self.prefix)
    }

    /// Every attempt's sealed key of `cert`.
    pub fn attempt_keys(&self, cert: &str) -> String {
        format!("{}/certs/{cert}/keys/", self.prefix)
    }

    pub fn attempt_key(&self, cert: &str, attempt: &str) -> String {
        format!("{}/certs/{cert}/keys/{attempt}", self.prefix)
    }

    pub fn issued(&self, cert: &str) -> String {
        format!("{}/certs/{cert}/issued", self.prefix)
    }

    /// Every host's installed versions.
    pub fn hosts(&self) -> String {
        format!("{}/hosts/", self.prefix)
    }

    pub fn host_cert(&self, host: &str, cert: &str) -> String {
        format!("{}/hosts/{host}/{cert}", self.prefix)
    }

    /// The certificate an `issued` key names, for the watch.
    pub fn cert_of_issued<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix("/certs/")?
            .strip_suffix("/issued")
            .filter(|c| !c.contains('/'))
    }

    /// The certificate a `journal` key names.
    pub fn cert_of_journal<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix("/certs/")?
            .strip_suffix("/journal")
            .filter(|c| !c.contains('/'))
    }

    /// The host and certificate a `hosts/<host>/<cert>` key names.
    pub fn host_cert_of<'k>(&self, key: &'k str) -> Option<(&'k str, &'k str)> {
        let rest = key
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix("/hosts/")?;
        rest.split_once('/').filter(|(_, c)| !c.contains('/'))
    }
}

/// Who holds a certificate's lock (the value of its `lock` key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    pub host: String,
    pub since: String,
}

/// The issued material of a certificate: the chain in clear, the key sealed to
/// (certificate, version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedRecord {
    /// 1, 2, ...: one more than the record it replaced.
    pub version: u64,
    pub order_id: i64,
    pub attempt: String,
    /// SHA-256 of the leaf (DER), hex: what a host compares with its install.
    pub leaf_sha256: String,
    pub fullchain_pem: String,
    /// The private key (PEM), sealed with the version as associated data.
    pub sealed_key: String,
    /// The host that made the renewal.
    pub host: String,
}

/// What a host reports about a certificate (`hosts/<host>/<cert>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub version: u64,
    pub leaf_sha256: String,
    pub at: String,
}

/// A sealed private key of an attempt (`keys/<attempt>`): bound to the attempt.
pub fn attempt_binding(attempt: &str) -> String {
    format!("attempt:{attempt}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_to_their_names() {
        let l = Layout::new("/cas-renewd/prod");
        assert_eq!(l.lock("www"), "/cas-renewd/prod/certs/www/lock");
        assert_eq!(l.cert_of_issued(&l.issued("www")), Some("www"));
        assert_eq!(l.cert_of_issued(&l.journal("www")), None);
        assert_eq!(l.cert_of_issued("/other/certs/www/issued"), None);
        assert_eq!(l.cert_of_journal(&l.journal("www")), Some("www"));
        assert_eq!(l.cert_of_journal(&l.issued("www")), None);
        assert_eq!(l.cert_of_journal(&l.attempt_key("www", "journal")), None);
        assert_eq!(
            l.host_cert_of(&l.host_cert("web-3", "www")),
            Some(("web-3", "www"))
        );
    }
}
