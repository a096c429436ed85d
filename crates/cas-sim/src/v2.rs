//! The readings the V2.0 instance documents leave open (scenario `v2:`), each
//! behind a switch: the TaskId of an ApplyCertificate, whether instances also show
//! in the V1 listing, and the forms of `DomainValidationList`'s key and value.

use serde::Deserialize;

use crate::validation::{DNS_RECORD_HOST, RecordDomainForm, record_domain};

/// Where a file validation lives on the domain's web server.
pub const FILE_VALIDATION_URI: &str = "/.well-known/pki-validation/fileauth.txt";

/// ASSUMPTION switches of V2.0 instances (the docs do not settle these).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct V2Behaviour {
    /// true (default): a certificate ends no later than its instance's service
    /// period; false: it gets its full validity even past the service end.
    #[serde(default = "default_true")]
    pub cert_within_service: bool,
    /// GetTaskAttribute answers `processing` this many times before `success`.
    #[serde(default = "default_task_polls")]
    pub task_processing_polls: u32,
    /// GetInstanceDetail polls an application stays `pending` (after validation)
    /// before its certificate is issued (default `issuance.polls_before_issued`).
    pub polls_before_issued: Option<u32>,
    /// What GetTaskAttribute's TaskId of an ApplyCertificate is.
    #[serde(default)]
    pub task_id: TaskIdForm,
    /// Instances also show in ListUserCertificateOrder (CPACK, BUY and CERT lists),
    /// with an OrderId of their own, their InstanceId and CertificateId; V1 calls
    /// on that OrderId are refused and counted.
    #[serde(default)]
    pub listed_in_orders: bool,
    /// How a TXT `ValidationKey` names the record.
    #[serde(default)]
    pub validation_key: ValidationKeyForm,
    /// How a TXT `ValidationValue` is written.
    #[serde(default)]
    pub validation_value: ValidationValueForm,
    /// How an HTTP `ValidationKey` names the file.
    #[serde(default)]
    pub file_key: FileKeyForm,
    /// What an HTTP `ValidationValue` (the file's content) holds.
    #[serde(default)]
    pub file_value: FileValueForm,
    /// An instance or its certificate is `willExpire` from this many days before
    /// its end (the console's 30; the API's threshold is undocumented).
    #[serde(default = "default_will_expire_days")]
    pub will_expire_days: u32,
    /// The key of a certificate CAS re-issues by itself (AutoReissue).
    #[serde(default)]
    pub auto_reissue_key: AutoReissueKey,
}

fn default_will_expire_days() -> u32 {
    30
}

/// Which key CAS's managed re-issue (AutoReissue) certifies: a new one CAS makes
/// and sends as `Key`, or, when the last application uploaded a CSR, that CSR's
/// key again (no `Key`: only its holder has it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoReissueKey {
    #[default]
    Cas,
    LastCsr,
}

fn default_true() -> bool {
    true
}

fn default_task_polls() -> u32 {
    1
}

impl Default for V2Behaviour {
    fn default() -> Self {
        V2Behaviour {
            cert_within_service: true,
            task_processing_polls: default_task_polls(),
            polls_before_issued: None,
            task_id: TaskIdForm::default(),
            listed_in_orders: false,
            validation_key: ValidationKeyForm::default(),
            validation_value: ValidationValueForm::default(),
            file_key: FileKeyForm::default(),
            file_value: FileValueForm::default(),
            will_expire_days: default_will_expire_days(),
            auto_reissue_key: AutoReissueKey::default(),
        }
    }
}

/// The TaskId GetTaskAttribute takes for an ApplyCertificate: the Chinese doc
/// says "实例 id" (the InstanceId), but ApplyCertificate answers only a RequestId,
/// which could as well be the task's id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskIdForm {
    #[default]
    InstanceId,
    /// The RequestId of the ApplyCertificate answer; the InstanceId is unknown.
    RequestId,
}

/// A TXT `ValidationKey` for `shop.example.com` in zone `example.com`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValidationKeyForm {
    /// `_dnsauth.shop`: relative to `RootDomain` (Alibaba's host-record habit).
    #[default]
    RelativeToRoot,
    /// `_dnsauth`: relative to the domain itself.
    RelativeToDomain,
    /// `_dnsauth.shop.example.com`.
    Fqdn,
    /// `_dnsauth.shop.example.com.` (absolute, trailing dot).
    FqdnDot,
}

/// A TXT `ValidationValue`: the token, or the token in double quotes as a zone
/// file or `dig` writes it (the record to publish holds the bare token).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValidationValueForm {
    #[default]
    Plain,
    Quoted,
}

/// An HTTP `ValidationKey`; every form names [`FILE_VALIDATION_URI`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKeyForm {
    /// `/.well-known/pki-validation/fileauth.txt`.
    #[default]
    Path,
    /// `http://shop.example.com/.well-known/pki-validation/fileauth.txt`.
    Url,
    /// `.well-known/pki-validation/fileauth.txt` (no leading slash).
    RelativePath,
    /// `fileauth.txt`, the directory being the documented DCV one.
    FileName,
}

/// An HTTP `ValidationValue`: the token alone, or several lines (some CAs put a
/// hash, their own name and the token on three lines) that the file must hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileValueForm {
    #[default]
    Token,
    MultiLine,
}

impl V2Behaviour {
    /// The TXT `ValidationKey` for `domain`.
    pub fn txt_key(&self, domain: &str, zones: &[String]) -> String {
        let base = domain.trim_start_matches("*.");
        match self.validation_key {
            ValidationKeyForm::RelativeToRoot => {
                record_domain(RecordDomainForm::RelativeToZone, domain, zones)
            }
            ValidationKeyForm::RelativeToDomain => DNS_RECORD_HOST.to_owned(),
            ValidationKeyForm::Fqdn => format!("{DNS_RECORD_HOST}.{base}"),
            ValidationKeyForm::FqdnDot => format!("{DNS_RECORD_HOST}.{base}."),
        }
    }

    /// The TXT `ValidationValue` shown for `token`.
    pub fn txt_value(&self, token: &str) -> String {
        match self.validation_value {
            ValidationValueForm::Plain => token.to_owned(),
            ValidationValueForm::Quoted => format!("\"{token}\""),
        }
    }

    /// The HTTP `ValidationKey` for `domain`.
    pub fn file_key(&self, domain: &str) -> String {
        match self.file_key {
            FileKeyForm::Path => FILE_VALIDATION_URI.to_owned(),
            FileKeyForm::Url => format!("http://{domain}{FILE_VALIDATION_URI}"),
            FileKeyForm::RelativePath => FILE_VALIDATION_URI.trim_start_matches('/').to_owned(),
            FileKeyForm::FileName => FILE_VALIDATION_URI
                .rsplit('/')
                .next()
                .unwrap_or(FILE_VALIDATION_URI)
                .to_owned(),
        }
    }

    /// The content the validation file must hold for `token` (also its
    /// `ValidationValue`).
    pub fn file_content(&self, token: &str) -> String {
        match self.file_value {
            FileValueForm::Token => token.to_owned(),
            FileValueForm::MultiLine => {
                format!("{token}\nsimulator-ca.example\nsha256-{}", token.len())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(yaml: &str) -> V2Behaviour {
        serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"))
    }

    #[test]
    fn every_form_renders_as_documented_here() {
        let zones = vec!["example.com".to_owned()];
        let d = V2Behaviour::default();
        assert_eq!(d.txt_key("shop.example.com", &zones), "_dnsauth.shop");
        assert_eq!(d.txt_value("t"), "t");
        assert_eq!(d.file_key("shop.example.com"), FILE_VALIDATION_URI);
        assert_eq!(d.file_content("t"), "t");
        assert_eq!(d.task_id, TaskIdForm::InstanceId);
        assert!(!d.listed_in_orders);
        for (yaml, want) in [
            ("validation_key: relative_to_domain", "_dnsauth"),
            ("validation_key: fqdn", "_dnsauth.shop.example.com"),
            ("validation_key: fqdn_dot", "_dnsauth.shop.example.com."),
        ] {
            assert_eq!(with(yaml).txt_key("shop.example.com", &zones), want);
        }
        assert_eq!(with("validation_value: quoted").txt_value("t"), "\"t\"");
        for (yaml, want) in [
            (
                "file_key: url",
                "http://shop.example.com/.well-known/pki-validation/fileauth.txt",
            ),
            (
                "file_key: relative_path",
                ".well-known/pki-validation/fileauth.txt",
            ),
            ("file_key: file_name", "fileauth.txt"),
        ] {
            assert_eq!(with(yaml).file_key("shop.example.com"), want);
        }
        let multi = with("file_value: multi_line").file_content("tok");
        assert_eq!(multi.lines().count(), 3);
        assert!(multi.starts_with("tok\n"));
        let both = with("task_id: request_id\nlisted_in_orders: true");
        assert_eq!(
            (both.task_id, both.listed_in_orders),
            (TaskIdForm::RequestId, true)
        );
        assert!(serde_saphyr::from_str::<V2Behaviour>("task_id: order_id").is_err());
    }
}
