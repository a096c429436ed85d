//! Domain validation while an order waits in `domain_verify`: a TXT record through
//! Alibaba Cloud DNS, a file under the web root, or instructions for the operator.

use std::path::{Path, PathBuf};

use crate::cas::api::CertificateStateResponse;
use crate::cas::client::ApiError;
use crate::cas::dns::Dns;
use crate::config::{ValidationConfig, ValidationMethod};
use crate::store::{self, FileSpec, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ValidationError {
    #[error("DNS validation: {0}")]
    Api(#[from] ApiError),
    #[error("DNS validation: no zone in this account hosts {0}")]
    NoZone(String),
    #[error("DNS validation: the answer lacks RecordDomain or RecordValue")]
    IncompleteDns,
    #[error("FILE validation: the answer lacks Uri or Content")]
    IncompleteFile,
    #[error("FILE validation: Uri {0:?} is not a plain path under the web root")]
    BadUri(String),
    #[error("FILE validation: {0}")]
    Store(#[from] StoreError),
}

/// What was published, so it can be removed afterwards (also after a crash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    Nothing,
    /// Instructions were logged; the operator publishes.
    Manual,
    Dns {
        zone: String,
        record_id: String,
    },
    File(PathBuf),
}

/// The record's full name: `RecordDomain` is the host part relative to the order's
/// domain (`_dnsauth` under `www.example.com` is `_dnsauth.www.example.com`).
pub fn record_fqdn(record_domain: &str, domain: &str) -> String {
    let base = domain.trim_start_matches("*.").trim_end_matches('.');
    let rd = record_domain.trim_end_matches('.');
    if rd.ends_with(base) {
        rd.to_owned()
    } else {
        format!("{rd}.{base}")
    }
}

fn file_target(webroot: &Path, uri: &str) -> Result<PathBuf, ValidationError> {
    let rel = uri.trim_start_matches('/');
    let p = Path::new(rel);
    if rel.is_empty()
        || p.components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(ValidationError::BadUri(uri.to_owned()));
    }
    Ok(webroot.join(p))
}

/// Publishes what `state` asks for with the configured method.
pub async fn publish(
    dns: &Dns,
    method: &ValidationConfig,
    domain: &str,
    order_id: i64,
    state: &CertificateStateResponse,
) -> Result<Published, ValidationError> {
    match method.method {
        ValidationMethod::None => {
            tracing::warn!(
                order_id,
                domain,
                validate_type = state.validate_type.as_deref().unwrap_or("?"),
                record = %state.record_domain.as_deref().map(|r| record_fqdn(r, domain)).unwrap_or_default(),
                record_type = state.record_type.as_deref().unwrap_or(""),
                record_value = state.record_value.as_deref().unwrap_or(""),
                uri = state.uri.as_deref().unwrap_or(""),
                content = state.content.as_deref().unwrap_or(""),
                "order waits for domain validation and validation.method is none: publish the record (DNS) or the file at http://<domain><uri> (FILE) by hand; polling continues"
            );
            Ok(Published::Manual)
        }
        ValidationMethod::Dns => {
            let (Some(rd), Some(value)) = (&state.record_domain, &state.record_value) else {
                return Err(ValidationError::IncompleteDns);
            };
            let rtype = state.record_type.as_deref().unwrap_or("TXT");
            let fqdn = record_fqdn(rd, domain);
            let zone = dns
                .find_zone(&fqdn)
                .await?
                .ok_or_else(|| ValidationError::NoZone(fqdn.clone()))?;
            // An earlier attempt (or a crash after adding) may have left it there.
            if let Some(r) = dns
                .records_at(&fqdn, rtype)
                .await?
                .into_iter()
                .find(|r| &r.value == value)
            {
                return Ok(Published::Dns {
                    zone,
                    record_id: r.record_id,
                });
            }
            let rr = fqdn
                .strip_suffix(&format!(".{zone}"))
                .unwrap_or("@")
                .to_owned();
            let record_id = dns.add_record(&zone, &rr, rtype, value).await?;
            tracing::info!(order_id, fqdn = %fqdn, record_id = %record_id, "published the DNS validation record");
            Ok(Published::Dns { zone, record_id })
        }
        ValidationMethod::File => {
            let (Some(uri), Some(content)) = (&state.uri, &state.content) else {
                return Err(ValidationError::IncompleteFile);
            };
            let webroot = method
                .webroot
                .as_deref()
                .unwrap_or(Path::new("/var/www/html"));
            let rel = file_target(webroot, uri)?;
            // No symlink below the web root may lead the write outside it.
            let target =
                store::resolve_under(webroot, rel.strip_prefix(webroot).unwrap_or(&rel), 0o755)?;
            store::write_file(
                &target,
                content.as_bytes(),
                FileSpec {
                    mode: 0o644,
                    uid: None,
                    gid: None,
                },
            )?;
            tracing::info!(order_id, path = %target.display(), "published the validation file");
            Ok(Published::File(target))
        }
    }
}

/// Removes a published record or file; failures are logged, not fatal.
pub async fn unpublish(dns: &Dns, published: &Published) {
    match published {
        Published::Dns { record_id, .. } => {
            if let Err(e) = dns.delete_record(record_id).await {
                tracing::warn!(record_id = %record_id, error = %e, "could not delete the DNS validation record; delete it by hand");
            }
        }
        Published::File(p) => {
            if let Err(e) = store::remove_file(p) {
                tracing::warn!(path = %p.display(), error = %e, "could not remove the validation file");
            }
        }
        Published::Nothing | Published::Manual => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_names_are_relative_to_the_domain() {
        assert_eq!(
            record_fqdn("_dnsauth", "www.example.com"),
            "_dnsauth.www.example.com"
        );
        assert_eq!(
            record_fqdn("_dnsauth", "*.example.com"),
            "_dnsauth.example.com"
        );
        assert_eq!(
            record_fqdn("_dnsauth.www.example.com", "www.example.com"),
            "_dnsauth.www.example.com"
        );
    }

    #[test]
    fn uris_cannot_escape_the_web_root() {
        let root = Path::new("/srv/www");
        assert_eq!(
            file_target(root, "/.well-known/pki-validation/fileauth.txt").expect("ok"),
            Path::new("/srv/www/.well-known/pki-validation/fileauth.txt")
        );
        for bad in ["/../etc/passwd", "", "/a/../../b", "/./x"] {
            assert!(file_target(root, bad).is_err(), "{bad}");
        }
    }
}
