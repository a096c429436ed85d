//! Domain validation while an order waits in `domain_verify`: a TXT or CNAME record
//! through Alibaba Cloud DNS, a file under the web root, or instructions for the
//! operator. The method comes from the answer's `ValidateType`; the configuration
//! only says which method cas-renewd may publish itself.

use std::path::{Path, PathBuf};

use super::ports::DnsApi;
use crate::cas::api::CertificateStateResponse;
use crate::cas::client::ApiError;
use crate::settings::{ValidationConfig, ValidationMethod};
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
    #[error(
        "FILE validation: Uri {0:?} is not a file directly under /.well-known/pki-validation/; nothing was written"
    )]
    BadUri(String),
    #[error(
        "FILE validation: {0} already exists with other content; cas-renewd does not overwrite it (remove it, or publish the validation file by hand)"
    )]
    FileExists(PathBuf),
    #[error("FILE validation: {0}")]
    Store(#[from] StoreError),
    #[error("domain validation: ValidateType {0:?} is neither DNS nor FILE")]
    UnknownMethod(String),
    #[error("domain validation: the answer names no ValidateType, record or file")]
    NoMethod,
    #[error("FILE validation cannot prove the wildcard {0}: CAS validates wildcards by DNS only")]
    WildcardFile(String),
    /// A record cas-renewd will not create, whatever the answer says.
    #[error("DNS validation refused: {0}; nothing was published")]
    Refused(String),
    #[error(
        "DNS validation: {name} already has a {record_type} record (id {record_id}) with another value {value:?}; remove it or publish the validation record by hand"
    )]
    Conflict {
        name: String,
        record_type: String,
        record_id: String,
        value: String,
    },
}

/// What was published, so it can be removed afterwards (also after a crash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    Nothing,
    /// The operator was told what to publish (the text of the instruction).
    Manual(String),
    Dns {
        zone: String,
        record_id: String,
    },
    File(PathBuf),
}

/// What the order asks for, read from the answer and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `record_type` is `TXT` or `CNAME`; `fqdn` lies under the certificate's domain.
    Dns {
        fqdn: String,
        record_type: String,
        value: String,
    },
    File {
        domain: String,
        uri: String,
        content: String,
    },
}

impl Request {
    /// What the operator must create, in one line.
    pub fn describe(&self) -> String {
        match self {
            Request::Dns {
                fqdn,
                record_type,
                value,
            } => format!("{record_type} record {fqdn} with value {value:?}"),
            Request::File {
                domain,
                uri,
                content,
            } => format!("file http://{domain}{uri} with content {content:?}"),
        }
    }

    fn method(&self) -> ValidationMethod {
        match self {
            Request::Dns { .. } => ValidationMethod::Dns,
            Request::File { .. } => ValidationMethod::File,
        }
    }
}

fn refused(why: String) -> ValidationError {
    ValidationError::Refused(why)
}

/// The one full name `RecordDomain` stands for under the certificate's `domain`.
///
/// CAS documents `RecordDomain` as the "host record" (example `_dnsauth`) without
/// saying relative to what, so each reading resolves to the same name; for
/// `www.example.com`: `_dnsauth` (relative to the domain), `_dnsauth.www` (relative
/// to the zone, Alibaba's host-record convention) and `_dnsauth.www.example.com`
/// (full name) all give `_dnsauth.www.example.com`. A wildcard `*.example.com`
/// gives `_dnsauth.example.com`. A name outside the domain (`evil.com.`,
/// `_dnsauth.www.example.com.attacker.net`) is refused.
pub fn record_fqdn(record_domain: &str, domain: &str) -> Result<String, ValidationError> {
    let base = domain
        .trim_start_matches("*.")
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let raw = record_domain.trim();
    let absolute = raw.ends_with('.');
    let rd = raw.trim_end_matches('.').to_ascii_lowercase();
    let is_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if rd.is_empty() || rd.len() > 253 || !rd.split('.').all(is_label) {
        return Err(refused(format!("RecordDomain {raw:?} is not a DNS name")));
    }
    let outside = || refused(format!("RecordDomain {raw:?} lies outside {base}"));
    if rd == base || rd.ends_with(&format!(".{base}")) {
        return Ok(rd);
    }
    if absolute {
        return Err(outside());
    }
    let bl: Vec<&str> = base.split('.').collect();
    // A relative host record never carries the domain's own parent names: one that
    // does is a full name somewhere else.
    let dotted = format!(".{rd}.");
    if (2..=bl.len()).any(|k| dotted.contains(&format!(".{}.", bl[bl.len() - k..].join(".")))) {
        return Err(outside());
    }
    let rl: Vec<&str> = rd.split('.').collect();
    // Relative to the zone: the record ends with the domain's first labels
    // (`_dnsauth.www` for `www.example.com`); the zone keeps at least two labels.
    for k in (1..=bl.len().saturating_sub(2)).rev() {
        if rl.len() > k && rl[rl.len() - k..] == bl[..k] {
            return Ok(format!("{rd}.{}", bl[k..].join(".")));
        }
    }
    let fqdn = format!("{rd}.{base}");
    if fqdn.len() > 253 {
        return Err(refused(format!(
            "RecordDomain {raw:?} makes a name too long"
        )));
    }
    Ok(fqdn)
}

/// Reads what the answer asks for and checks it: the method from `ValidateType`
/// (or, without it, from the fields present), DNS records only of type TXT or
/// CNAME and only under the certificate's domain, FILE never for a wildcard.
pub fn read_request(
    state: &CertificateStateResponse,
    domain: &str,
) -> Result<Request, ValidationError> {
    let dns = match state.validate_type.as_deref().map(str::trim) {
        Some(t) if t.eq_ignore_ascii_case("DNS") => true,
        Some(t) if t.eq_ignore_ascii_case("FILE") => false,
        Some(t) => return Err(ValidationError::UnknownMethod(t.to_owned())),
        None if state.record_domain.is_some() || state.record_value.is_some() => true,
        None if state.uri.is_some() || state.content.is_some() => false,
        None => return Err(ValidationError::NoMethod),
    };
    if dns {
        let (Some(rd), Some(value)) = (&state.record_domain, &state.record_value) else {
            return Err(ValidationError::IncompleteDns);
        };
        let record_type = state
            .record_type
            .as_deref()
            .unwrap_or("TXT")
            .trim()
            .to_ascii_uppercase();
        if !matches!(record_type.as_str(), "TXT" | "CNAME") {
            return Err(refused(format!(
                "RecordType {record_type:?} (only TXT and CNAME records are published)"
            )));
        }
        if value.chars().any(char::is_control) || value.len() > 1024 {
            return Err(refused(
                "RecordValue has control characters or is over 1024 bytes".into(),
            ));
        }
        let fqdn = record_fqdn(rd, domain)?;
        // Validation records live at underscore names (`_dnsauth…`, RFC 8552); a
        // TXT at the domain itself could rewrite its SPF, a CNAME take the name over.
        if !fqdn.starts_with('_') {
            return Err(refused(format!(
                "record name {fqdn:?} (validation records are published only at names whose first label starts with '_')"
            )));
        }
        return Ok(Request::Dns {
            fqdn,
            record_type,
            value: value.clone(),
        });
    }
    if domain.starts_with("*.") {
        return Err(ValidationError::WildcardFile(domain.to_owned()));
    }
    let (Some(uri), Some(content)) = (&state.uri, &state.content) else {
        return Err(ValidationError::IncompleteFile);
    };
    Ok(Request::File {
        domain: domain.to_owned(),
        uri: uri.clone(),
        content: content.clone(),
    })
}

/// Where CAS's DCV files live; an answer may name a file there and nowhere else
/// (`/index.html` or `/.htaccess` would be overwritten, then deleted).
const DCV_DIR: &str = ".well-known/pki-validation";

fn file_target(webroot: &Path, uri: &str) -> Result<PathBuf, ValidationError> {
    let rel = uri.trim_start_matches('/');
    let p = Path::new(rel);
    let in_dcv_dir = p
        .parent()
        .is_some_and(|dir| dir == Path::new(DCV_DIR) && p.file_name().is_some());
    if !in_dcv_dir
        || p.components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(ValidationError::BadUri(uri.to_owned()));
    }
    Ok(webroot.join(p))
}

/// Publishes what `state` asks for when the configuration allows that method;
/// otherwise tells the operator exactly what to create, unless `told` shows the
/// same instruction was already given for this order.
pub async fn publish(
    dns: &dyn DnsApi,
    config: &ValidationConfig,
    domain: &str,
    order_id: i64,
    state: &CertificateStateResponse,
    told: Option<&str>,
) -> Result<Published, ValidationError> {
    let request = read_request(state, domain)?;
    if request.method() != config.method {
        let text = request.describe();
        if told != Some(text.as_str()) {
            tracing::warn!(
                order_id,
                domain,
                validation_method = match config.method {
                    ValidationMethod::None => "none",
                    ValidationMethod::Dns => "dns",
                    ValidationMethod::File => "file",
                },
                "order waits for domain validation by {} and validation.method does not let cas-renewd publish it: create the {text} by hand; polling continues",
                if request.method() == ValidationMethod::Dns {
                    "DNS"
                } else {
                    "FILE"
                },
            );
        }
        return Ok(Published::Manual(text));
    }
    match request {
        Request::Dns {
            fqdn,
            record_type,
            value,
        } => publish_dns(dns, order_id, &fqdn, &record_type, &value).await,
        Request::File { uri, content, .. } => {
            let webroot = config
                .webroot
                .as_deref()
                .unwrap_or(Path::new("/var/www/html"));
            let rel = file_target(webroot, &uri)?;
            // No symlink below the web root may lead the write outside it.
            let target =
                store::resolve_under(webroot, rel.strip_prefix(webroot).unwrap_or(&rel), 0o755)?;
            // Ours from an earlier attempt (same content) is reused; anything else
            // there belongs to someone else.
            match store::read_regular(&target, store::MAX_OUTPUT_FILE_BYTES) {
                Ok(None) => {}
                Ok(Some(existing)) if existing == content.as_bytes() => {
                    return Ok(Published::File(target));
                }
                Ok(Some(_)) | Err(_) => return Err(ValidationError::FileExists(target)),
            }
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

async fn publish_dns(
    dns: &dyn DnsApi,
    order_id: i64,
    fqdn: &str,
    record_type: &str,
    value: &str,
) -> Result<Published, ValidationError> {
    let zone = dns
        .find_zone(fqdn)
        .await?
        .ok_or_else(|| ValidationError::NoZone(fqdn.to_owned()))?;
    let existing = dns.records_at(fqdn, &zone, None).await?;
    // An earlier attempt (a crash after adding, or CAS's own automatic DNS
    // verification) may have left the very record there: use it.
    if let Some(r) = existing
        .iter()
        .find(|r| r.record_type.eq_ignore_ascii_case(record_type) && r.value == value)
    {
        return Ok(Published::Dns {
            zone,
            record_id: r.record_id.clone(),
        });
    }
    // Someone else's record at that name is not ours to replace. A CNAME excludes
    // every other record at its name, so it cannot be added beside one; TXT records
    // with other values can stand beside ours (an apex and a wildcard order of one
    // zone both need `_dnsauth.example.com` at once, and the CA accepts any match).
    if let Some(r) = existing
        .iter()
        .find(|r| record_type == "CNAME" || r.record_type.eq_ignore_ascii_case("CNAME"))
    {
        return Err(ValidationError::Conflict {
            name: fqdn.to_owned(),
            record_type: r.record_type.clone(),
            record_id: r.record_id.clone(),
            value: r.value.clone(),
        });
    }
    let rr = fqdn
        .strip_suffix(&format!(".{zone}"))
        .unwrap_or("@")
        .to_owned();
    let record_id = match dns.add_record(&zone, &rr, record_type, value).await {
        Ok(id) => id,
        // A repeated add whose first try went through with its answer lost: the
        // record is there now, so it is the one to use.
        Err(e) if e.code() == Some("DomainRecordDuplicate") => dns
            .records_at(fqdn, &zone, Some(record_type))
            .await?
            .into_iter()
            .find(|r| r.value == value)
            .map(|r| r.record_id)
            .ok_or(ValidationError::Api(e))?,
        Err(e) => return Err(e.into()),
    };
    tracing::info!(order_id, fqdn = %fqdn, record_type, record_id = %record_id, "published the DNS validation record");
    Ok(Published::Dns { zone, record_id })
}

/// Removes a published record or file; failures are logged, not fatal.
pub async fn unpublish(dns: &dyn DnsApi, published: &Published) {
    match published {
        Published::Dns { record_id, .. } => {
            if let Err(e) = dns.delete_record(record_id).await {
                tracing::warn!(record_id = %record_id, error = %e, "could not delete the DNS validation record; delete it by hand");
            } else {
                tracing::info!(record_id = %record_id, "removed the DNS validation record");
            }
        }
        Published::File(p) => {
            if let Err(e) = store::remove_file(p) {
                tracing::warn!(path = %p.display(), error = %e, "could not remove the validation file");
            }
        }
        Published::Nothing | Published::Manual(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cas::api::CertificateState;

    fn fqdn(rd: &str, domain: &str) -> String {
        record_fqdn(rd, domain).unwrap_or_else(|e| panic!("{rd} under {domain}: {e}"))
    }

    #[test]
    fn every_record_domain_reading_gives_one_name() {
        for (rd, domain, want) in [
            ("_dnsauth", "www.example.com", "_dnsauth.www.example.com"),
            (
                "_dnsauth.www",
                "www.example.com",
                "_dnsauth.www.example.com",
            ),
            (
                "_dnsauth.www.example.com",
                "www.example.com",
                "_dnsauth.www.example.com",
            ),
            (
                "_dnsauth.www.example.com.",
                "www.example.com",
                "_dnsauth.www.example.com",
            ),
            (
                "_DNSAUTH.WWW",
                "www.example.com",
                "_dnsauth.www.example.com",
            ),
            ("_dnsauth", "example.com", "_dnsauth.example.com"),
            (
                "_dnsauth.example.com",
                "example.com",
                "_dnsauth.example.com",
            ),
            ("_dnsauth", "*.example.com", "_dnsauth.example.com"),
            (
                "_dnsauth.example.com",
                "*.example.com",
                "_dnsauth.example.com",
            ),
            (
                "_dnsauth.api.test",
                "api.test.example.com",
                "_dnsauth.api.test.example.com",
            ),
            (
                "_dnsauth.api",
                "api.test.example.com",
                "_dnsauth.api.test.example.com",
            ),
            (
                "_dnsauth",
                "api.test.example.com",
                "_dnsauth.api.test.example.com",
            ),
            (
                "_dnsauth.www",
                "*.www.example.com",
                "_dnsauth.www.example.com",
            ),
        ] {
            assert_eq!(fqdn(rd, domain), want, "{rd} under {domain}");
        }
    }

    #[test]
    fn names_outside_the_domain_are_refused() {
        for (rd, domain) in [
            ("evil.com.", "www.example.com"),
            ("_dnsauth.www.example.com.attacker.net", "www.example.com"),
            ("_dnsauth.example.com.attacker.net", "example.com"),
            ("_dnsauth.example.com", "www.example.com"),
            ("example.com", "www.example.com"),
            ("_dnsauth.other.com.", "*.example.com"),
            ("a b", "www.example.com"),
            ("_dnsauth..www", "www.example.com"),
            ("", "www.example.com"),
            ("*", "www.example.com"),
        ] {
            let r = record_fqdn(rd, domain);
            assert!(
                matches!(r, Err(ValidationError::Refused(_))),
                "{rd} under {domain}: {r:?}"
            );
        }
    }

    fn answer(json: &str) -> CertificateStateResponse {
        let s: CertificateStateResponse = serde_json::from_str(json).expect("parses");
        assert_eq!(s.state, CertificateState::DomainVerify);
        s
    }

    #[test]
    fn the_method_comes_from_the_answer() {
        let dns = answer(
            r#"{"Type":"domain_verify","ValidateType":"DNS","RecordDomain":"_dnsauth","RecordType":"TXT","RecordValue":"tok","Uri":"/x","Content":"c"}"#,
        );
        assert_eq!(
            read_request(&dns, "www.example.com").expect("ok"),
            Request::Dns {
                fqdn: "_dnsauth.www.example.com".into(),
                record_type: "TXT".into(),
                value: "tok".into()
            }
        );
        let file = answer(
            r#"{"Type":"domain_verify","ValidateType":"FILE","RecordDomain":"_dnsauth","RecordValue":"tok","Domain":"www.example.com","Uri":"/.well-known/pki-validation/fileauth.txt","Content":"c"}"#,
        );
        let r = read_request(&file, "www.example.com").expect("ok");
        assert_eq!(
            r.describe(),
            "file http://www.example.com/.well-known/pki-validation/fileauth.txt with content \"c\""
        );
        assert!(matches!(
            read_request(&file, "*.example.com"),
            Err(ValidationError::WildcardFile(_))
        ));
        // Without ValidateType the fields decide; CNAME is allowed.
        let cname = answer(
            r#"{"Type":"domain_verify","RecordDomain":"_dnsauth","RecordType":"cname","RecordValue":"x.dv.example.net"}"#,
        );
        assert!(matches!(
            read_request(&cname, "example.com"),
            Ok(Request::Dns { record_type, .. }) if record_type == "CNAME"
        ));
        let odd = answer(r#"{"Type":"domain_verify","ValidateType":"EMAIL"}"#);
        assert!(matches!(
            read_request(&odd, "example.com"),
            Err(ValidationError::UnknownMethod(_))
        ));
    }

    #[test]
    fn only_txt_and_cname_records_are_published() {
        for t in ["NS", "A", "AAAA", "MX", "SRV", "CAA", "REDIRECT_URL"] {
            let a = answer(&format!(
                r#"{{"Type":"domain_verify","ValidateType":"DNS","RecordDomain":"_dnsauth","RecordType":"{t}","RecordValue":"ns1.attacker.net"}}"#
            ));
            let r = read_request(&a, "www.example.com");
            assert!(
                matches!(&r, Err(ValidationError::Refused(m)) if m.contains(t)),
                "{t}: {r:?}"
            );
        }
        let a = answer(
            r#"{"Type":"domain_verify","ValidateType":"DNS","RecordDomain":"_dnsauth","RecordValue":"a\nb"}"#,
        );
        assert!(matches!(
            read_request(&a, "www.example.com"),
            Err(ValidationError::Refused(_))
        ));
        // Only underscore names: not the domain itself, not a host beside it.
        for (rd, t) in [
            ("www", "CNAME"),
            ("www.example.com", "TXT"),
            ("mail", "TXT"),
        ] {
            let a = answer(&format!(
                r#"{{"Type":"domain_verify","ValidateType":"DNS","RecordDomain":"{rd}","RecordType":"{t}","RecordValue":"target.attacker.net"}}"#
            ));
            let r = read_request(&a, "www.example.com");
            assert!(
                matches!(&r, Err(ValidationError::Refused(m)) if m.contains("first label")),
                "{rd} {t}: {r:?}"
            );
        }
    }

    #[test]
    fn uris_cannot_escape_the_web_root() {
        let root = Path::new("/srv/www");
        assert_eq!(
            file_target(root, "/.well-known/pki-validation/fileauth.txt").expect("ok"),
            Path::new("/srv/www/.well-known/pki-validation/fileauth.txt")
        );
        for bad in [
            "/../etc/passwd",
            "",
            "/a/../../b",
            "/./x",
            "/index.html",
            "/.htaccess",
            "/.well-known/pki-validation/",
            "/.well-known/pki-validation/a/b.txt",
            "/.well-known/acme-challenge/x",
        ] {
            assert!(file_target(root, bad).is_err(), "{bad}");
        }
    }
}
