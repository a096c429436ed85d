//! The served-certificate check: what `verify.connect` serves against the
//! installed `cert.pem`; a difference puts the reload back on the journal.

use std::time::Duration;

use sha2::Digest as _;
use tracing::{error, info, warn};

use super::engine::Engine;
use super::installed_leaf;
use super::ports::JournalStore;
use super::report::{Outcome, PassReport};
use crate::pki;
use crate::settings::CertificateConfig;
use crate::store;

/// Each handshake's limit, how many, how far apart.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);
const VERIFY_ATTEMPTS: u32 = 5;
const VERIFY_SPACING: Duration = Duration::from_secs(1);

impl Engine {
    /// the reload back on the journal so the next pass tries again.
    pub(super) async fn verify_served(
        &self,
        state: &dyn JournalStore,
        certs: &[CertificateConfig],
        report: &mut PassReport,
    ) {
        for (i, cert) in certs.iter().enumerate() {
            let Some(v) = &cert.verify else { continue };
            let at = report.index_of(i, &cert.name);
            let Some(r) = at.and_then(|i| report.certs.get_mut(i)) else {
                continue;
            };
            if matches!(r.outcome, Outcome::Blocked | Outcome::Planned) {
                continue;
            }
            let Some(disk) = installed_leaf(&cert.output) else {
                continue;
            };
            let sni = v
                .server_name
                .clone()
                .unwrap_or_else(|| cert.domain.trim_start_matches("*.").to_owned());
            // A reload takes effect when the server's new workers are up: look a few
            // times before calling a difference a failure.
            let mut served = crate::verify::served_leaf(&v.connect, &sni, VERIFY_TIMEOUT).await;
            for _ in 1..VERIFY_ATTEMPTS {
                if served.as_ref().is_ok_and(|der| *der == disk.der) {
                    break;
                }
                tokio::time::sleep(VERIFY_SPACING).await;
                served = crate::verify::served_leaf(&v.connect, &sni, VERIFY_TIMEOUT).await;
            }
            let served_sha = served
                .as_ref()
                .ok()
                .map(|der| hex::encode_upper(sha2::Sha256::digest(der)));
            if let Ok(mut j) = state.load_journal(&cert.name) {
                j.served_sha256 = served_sha;
                j.served_checked_at = Some(self.clock.now());
                let _ = state.save_journal(&mut j);
            }
            match served {
                Ok(der) => {
                    let matches = der == disk.der;
                    r.served_matches_disk = Some(matches);
                    if matches {
                        info!(cert = %cert.name, addr = %v.connect, "served certificate matches the one on disk");
                    } else {
                        let served = pki::read_leaf(&pem_of(&der))
                            .map(|l| l.serial_hex)
                            .unwrap_or_default();
                        error!(cert = %cert.name, addr = %v.connect, served_serial = %served, disk_serial = %disk.serial_hex, "served certificate differs from the one on disk; the reload is retried next pass");
                        r.outcome = Outcome::Failed;
                        r.message = format!(
                            "{} serves serial {served}, but {} holds serial {}: the reload did not take effect",
                            v.connect,
                            cert.output.dir.join(store::CERT_FILE).display(),
                            disk.serial_hex
                        );
                        if let Ok(mut j) = state.load_journal(&cert.name) {
                            for h in &cert.reload {
                                if !j.reload_pending.contains(h) {
                                    j.reload_pending.push(h.clone());
                                }
                            }
                            j.last_error = Some(r.message.clone());
                            let _ = state.save_journal(&mut j);
                        }
                    }
                }
                Err(e) => {
                    r.served_matches_disk = Some(false);
                    warn!(cert = %cert.name, error = %e, "could not check the served certificate");
                    r.message = format!("{}; served certificate not checked: {e}", r.message);
                }
            }
        }
    }
}

fn pem_of(der: &[u8]) -> String {
    use base64::Engine as _;
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64::engine::general_purpose::STANDARD.encode(der)
    )
}
