//! DescribeCertificateState: where an order stands, and what it carries once
//! issued (the certificate, and the key when CAS made it).

use serde::{Deserialize, Serialize};

use super::de::{de_opt, de_opt_string};
use super::{Cas, param};
use crate::cas::client::{ApiError, Idempotence, Response};
use crate::secret::Secret;

/// `Type` of DescribeCertificateState.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CertificateState {
    Payed,
    DomainVerify,
    Process,
    VerifyFail,
    Certificate,
    /// The API spells it without the final "n".
    Unknow,
    #[serde(other)]
    Unrecognised,
}

impl CertificateState {
    pub fn as_str(self) -> &'static str {
        match self {
            CertificateState::Payed => "payed",
            CertificateState::DomainVerify => "domain_verify",
            CertificateState::Process => "process",
            CertificateState::VerifyFail => "verify_fail",
            CertificateState::Certificate => "certificate",
            CertificateState::Unknow => "unknow",
            CertificateState::Unrecognised => "unrecognised",
        }
    }
}

/// DescribeCertificateState's answer. `PrivateKey` is a [`Secret`].
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CertificateStateResponse {
    #[serde(default)]
    pub request_id: String,
    #[serde(rename = "Type")]
    pub state: CertificateState,
    #[serde(default, deserialize_with = "de_opt")]
    pub validate_type: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub record_domain: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub record_type: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub record_value: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub domain: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub uri: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub content: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub certificate: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub private_key: Option<Secret>,
    #[serde(default, deserialize_with = "de_opt_string")]
    pub cert_id: Option<String>,
}

impl Cas {
    pub async fn describe_certificate_state(
        &self,
        order_id: i64,
    ) -> Result<Response<CertificateStateResponse>, ApiError> {
        self.client
            .call(
                "DescribeCertificateState",
                &[param("OrderId", order_id)],
                Idempotence::Idempotent,
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_strings_in_a_state_answer_are_absent() {
        let s: CertificateStateResponse = serde_json::from_str(
            r#"{"RequestId": "R", "Type": "certificate", "ValidateType": "", "RecordDomain": "",
                "RecordType": "", "RecordValue": "", "Domain": "", "Uri": "", "Content": "",
                "Certificate": "-----BEGIN CERTIFICATE-----", "PrivateKey": "", "CertId": ""}"#,
        )
        .expect("parses");
        assert!(s.private_key.is_none(), "an empty PrivateKey is no key");
        assert!(s.cert_id.is_none());
        assert!(
            s.validate_type.is_none()
                && s.record_domain.is_none()
                && s.record_type.is_none()
                && s.record_value.is_none()
                && s.domain.is_none()
                && s.uri.is_none()
                && s.content.is_none()
        );
        assert_eq!(
            s.certificate.as_deref(),
            Some("-----BEGIN CERTIFICATE-----")
        );
        // Blank (whitespace) counts as empty; a real value is kept and redacted.
        let s: CertificateStateResponse = serde_json::from_str(
            r#"{"Type": "certificate", "PrivateKey": " \n", "Certificate": null}"#,
        )
        .expect("parses");
        assert!(s.private_key.is_none() && s.certificate.is_none());
        let s: CertificateStateResponse = serde_json::from_str(
            r#"{"Type": "certificate", "PrivateKey": "-----BEGIN RSA PRIVATE KEY-----x"}"#,
        )
        .expect("parses");
        assert!(
            s.private_key
                .is_some_and(|k| k.expose().starts_with("-----BEGIN"))
        );
    }
}
