//! A V2.0 instance's `DomainValidationList` entry read as the DescribeCertificateState
//! answer of an order in `domain_verify`, so an instance goes through the same
//! validation step (`renew::validation`) as an order.
//!
//! The docs call `ValidationKey` "the host record" and `ValidationValue` "the value
//! of the host record" and say no more; the forms below are the plausible ones
//! (README, simulator assumption 24, each with its scenario switch). A TXT key may
//! be relative to `RootDomain`, relative to the domain or a full name (with or
//! without the final dot): `renew::validation::record_fqdn` resolves each to the
//! one name. What this module settles: a TXT value in double quotes (a zone file's
//! way of writing it) holds the bare token; an HTTP key may be the path, the path
//! without its leading slash, the whole URL on the domain, or only the file name
//! in the documented DCV directory; an HTTP value is the file's whole content,
//! several lines included.

use super::instance_detail::DomainValidation;
use super::state::{CertificateState, CertificateStateResponse};

/// The directory CAS's validation files live in.
const DCV_PATH: &str = "/.well-known/pki-validation/";

/// The entry of `list` that validates `domain` (a wildcard's entry may name the
/// base domain), or the only entry; `None` when there is nothing to validate.
pub fn validation_for<'a>(
    list: &'a [DomainValidation],
    domain: &str,
) -> Option<&'a DomainValidation> {
    let norm = |d: &str| d.trim().trim_end_matches('.').to_ascii_lowercase();
    let want = norm(domain);
    let base = want.trim_start_matches("*.").to_owned();
    list.iter()
        .find(|v| v.domain.as_deref().is_some_and(|d| norm(d) == want))
        .or_else(|| {
            list.iter()
                .find(|v| v.domain.as_deref().is_some_and(|d| norm(d) == base))
        })
        .or_else(|| (list.len() == 1).then(|| &list[0]))
}

/// [`validation_for`] as a `domain_verify` answer, for the validation step.
pub fn validation_state(
    list: &[DomainValidation],
    domain: &str,
) -> Option<CertificateStateResponse> {
    validation_for(list, domain).map(|v| v.as_state(domain))
}

impl DomainValidation {
    /// This entry in the fields of a DescribeCertificateState answer in
    /// `domain_verify`: TXT and CNAME as DNS (`RecordDomain`, `RecordType`,
    /// `RecordValue`), HTTP as FILE (`Uri`, `Content`). Another or no
    /// ValidationType is passed on as it is, for the validation step to refuse.
    pub fn as_state(&self, domain: &str) -> CertificateStateResponse {
        let kind = self
            .validation_type
            .as_deref()
            .map(|t| t.trim().to_ascii_uppercase());
        let mut s = CertificateStateResponse {
            request_id: String::new(),
            state: CertificateState::DomainVerify,
            validate_type: None,
            record_domain: None,
            record_type: None,
            record_value: None,
            domain: self.domain.clone().or_else(|| Some(domain.to_owned())),
            uri: None,
            content: None,
            certificate: None,
            private_key: None,
            cert_id: None,
        };
        match kind.as_deref() {
            Some("TXT") => {
                s.validate_type = Some("DNS".into());
                s.record_type = Some("TXT".into());
                s.record_domain = self.validation_key.clone();
                s.record_value = self.validation_value.as_deref().map(unquote);
            }
            Some("CNAME") => {
                s.validate_type = Some("DNS".into());
                s.record_type = Some("CNAME".into());
                s.record_domain = self.validation_key.clone().or(self.cname_key.clone());
                s.record_value = self.validation_value.clone().or(self.cname.clone());
            }
            Some("HTTP" | "HTTPS" | "FILE") => {
                s.validate_type = Some("FILE".into());
                s.uri = self.validation_key.as_deref().map(|k| file_uri(k, domain));
                s.content = self.validation_value.clone();
            }
            other => {
                s.validate_type = other.map(str::to_owned);
                s.record_domain = self.validation_key.clone();
                s.record_value = self.validation_value.clone();
            }
        }
        s
    }
}

/// A TXT value without the one pair of double quotes a zone file puts around it.
fn unquote(value: &str) -> String {
    let v = value.trim();
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .filter(|inner| !inner.contains('"'))
        .unwrap_or(v)
        .to_owned()
}

/// The path a file-validation key names on `domain`'s web server: a path (with
/// or without its leading slash), `http(s)://<domain><path>`, or a bare file name
/// in the DCV directory. Anything else (another host, a query, a port) is given
/// back unchanged, for the validation step to refuse.
fn file_uri(key: &str, domain: &str) -> String {
    let k = key.trim();
    let path = match k.split_once("://") {
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
        {
            match rest.split_once('/') {
                Some((host, path)) if host.eq_ignore_ascii_case(domain) => format!("/{path}"),
                _ => return key.to_owned(),
            }
        }
        Some(_) => return key.to_owned(),
        None if !k.contains('/') && !k.is_empty() => format!("{DCV_PATH}{k}"),
        None if k.starts_with('/') => k.to_owned(),
        None => format!("/{k}"),
    };
    if path.contains(['?', '#']) {
        return key.to_owned();
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::renew::validation::{Request, ValidationError, read_request};

    fn entry(kind: &str, key: &str, value: &str) -> DomainValidation {
        DomainValidation {
            domain: Some("shop.example.com".into()),
            root_domain: Some("example.com".into()),
            validation_type: Some(kind.into()),
            validation_key: Some(key.into()),
            validation_value: Some(value.into()),
            ..Default::default()
        }
    }

    fn request(v: &DomainValidation) -> Result<Request, ValidationError> {
        read_request(&v.as_state("shop.example.com"), "shop.example.com")
    }

    #[test]
    fn every_txt_form_is_one_record_holding_the_bare_token() {
        let want = Request::Dns {
            fqdn: "_dnsauth.shop.example.com".into(),
            record_type: "TXT".into(),
            value: "2026tok".into(),
        };
        for (key, value) in [
            ("_dnsauth.shop", "2026tok"),
            ("_dnsauth", "2026tok"),
            ("_dnsauth.shop.example.com", "2026tok"),
            ("_dnsauth.shop.example.com.", "2026tok"),
            ("_dnsauth.shop", "\"2026tok\""),
            ("_dnsauth.shop.example.com.", " \"2026tok\" "),
        ] {
            let r = request(&entry("TXT", key, value));
            assert_eq!(r.ok(), Some(want.clone()), "{key} {value}");
        }
        // Quotes inside the value are content, not a display form.
        assert_eq!(unquote("\"a\" \"b\""), "\"a\" \"b\"");
        let cname = request(&DomainValidation {
            validation_type: Some("cname".into()),
            cname_key: Some("_dnsauth".into()),
            cname: Some("x.dv.example.net".into()),
            ..Default::default()
        });
        assert!(
            matches!(&cname, Ok(Request::Dns { record_type, .. }) if record_type == "CNAME"),
            "{cname:?}"
        );
    }

    #[test]
    fn every_file_form_is_one_file_under_the_dcv_directory() {
        let path = "/.well-known/pki-validation/fileauth.txt";
        for key in [
            path,
            ".well-known/pki-validation/fileauth.txt",
            "http://shop.example.com/.well-known/pki-validation/fileauth.txt",
            "HTTPS://Shop.Example.com/.well-known/pki-validation/fileauth.txt",
            "fileauth.txt",
        ] {
            for content in ["tok", "hash\nca.example\ntok"] {
                let r = request(&entry("HTTP", key, content));
                assert_eq!(
                    r.ok(),
                    Some(Request::File {
                        domain: "shop.example.com".into(),
                        uri: path.into(),
                        content: content.into(),
                    }),
                    "{key} {content:?}"
                );
            }
        }
    }

    #[test]
    fn odd_or_hostile_keys_are_passed_on_to_be_refused() {
        for key in [
            "http://evil.example.net/.well-known/pki-validation/fileauth.txt",
            "http://shop.example.com:8080/.well-known/pki-validation/fileauth.txt",
            "ftp://shop.example.com/.well-known/pki-validation/fileauth.txt",
            "/.well-known/pki-validation/fileauth.txt?x=1",
        ] {
            assert_eq!(file_uri(key, "shop.example.com"), key);
        }
        let dns = request(&entry(
            "TXT",
            "_dnsauth.shop.example.com.attacker.net.",
            "t",
        ));
        assert!(matches!(dns, Err(ValidationError::Refused(_))), "{dns:?}");
        let odd = request(&entry("EMAIL", "admin@example.com", "t"));
        assert!(
            matches!(odd, Err(ValidationError::UnknownMethod(_))),
            "{odd:?}"
        );
    }

    #[test]
    fn the_entry_for_the_domain_is_chosen() {
        let mut other = entry("TXT", "_dnsauth.api", "a");
        other.domain = Some("api.example.com".into());
        let mine = entry("TXT", "_dnsauth.shop", "s");
        let list = vec![other.clone(), mine.clone()];
        assert_eq!(validation_for(&list, "SHOP.example.com."), Some(&mine));
        assert_eq!(validation_for(&list, "www.example.com"), None);
        assert_eq!(
            validation_for(&[other.clone()], "www.example.com"),
            Some(&other)
        );
        let mut base = entry("TXT", "_dnsauth", "w");
        base.domain = Some("example.com".into());
        assert_eq!(
            validation_for(&[mine, base.clone()], "*.example.com"),
            Some(&base)
        );
        assert!(validation_state(&[], "shop.example.com").is_none());
    }
}
