//! Typed CAS operations (API version 2020-04-07), named after the API's own fields.
//!
//! Numbers may arrive as JSON numbers or numeric strings (older docs show both), so
//! every integer field accepts either (`de`). One file per operation family:
//! `order` (an entry of the order list), `listing` (ListUserCertificateOrder and
//! its pager), `state` (DescribeCertificateState), `detail`
//! (GetUserCertificateDetail), `instance` (V2.0 ListInstances and its pager),
//! `instance_detail` (V2.0 GetInstanceDetail, GetTaskAttribute), `instance_validation`
//! (its DomainValidationList as a `domain_verify` answer); the paid renewal
//! is here. The V2.0 application calls (UpdateInstance, ApplyCertificate) are in
//! `cas::api_apply`.

mod de;
mod detail;
mod instance;
mod instance_detail;
mod instance_validation;
mod listing;
mod order;
mod state;

use serde::{Deserialize, Serialize};

use super::client::{ApiClient, ApiError, Idempotence, Response};
use de::de_i64;

pub(crate) use de::{de_opt, int_from_str};
pub use detail::{CertificateDetail, ChainEntry};
pub use instance::{
    CertificateStatus, Instance, InstanceFilter, InstancePage, InstanceStatus,
    MAX_INSTANCE_PAGE_SIZE, from_secs,
};
pub use instance_detail::{
    DingGroup, DomainValidation, InstanceDetail, InstanceTag, TASK_TYPE_APPLY, TaskAttribute,
    TaskStatus,
};
pub use instance_validation::{validation_for, validation_state};
pub use listing::{DEFAULT_PAGE_SIZE, OrderFilter, OrderPage, OrderPager};
pub use order::{CertificateOrder, OrderStatus, OrderType};
pub use state::{CertificateState, CertificateStateResponse};

/// CAS API version.
pub const CAS_VERSION: &str = "2020-04-07";

/// RenewCertificateOrderForPackageRequest's answer: the new order.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RenewResponse {
    #[serde(default)]
    pub request_id: String,
    #[serde(deserialize_with = "de_i64")]
    pub order_id: i64,
}

/// A resource tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    pub key: String,
    pub value: String,
}

/// One query parameter of a call.
pub(crate) fn param(k: &str, v: impl ToString) -> (String, String) {
    (k.to_owned(), v.to_string())
}

/// The CAS operations the daemon uses.
#[derive(Debug, Clone)]
pub struct Cas {
    client: ApiClient,
}

impl Cas {
    pub fn new(client: ApiClient) -> Self {
        Cas { client }
    }

    pub fn client(&self) -> &ApiClient {
        &self.client
    }

    /// Spends quota: never repeated when the outcome is unclear (see
    /// [`Idempotence::NonIdempotent`]); the caller reconciles an
    /// [`ApiError::Ambiguous`] by listing orders.
    pub async fn renew_certificate_order(
        &self,
        order_id: i64,
        csr: Option<&str>,
        tags: &[Tag],
    ) -> Result<Response<RenewResponse>, ApiError> {
        let mut p = vec![param("OrderId", order_id)];
        if let Some(csr) = csr {
            p.push(param("Csr", csr));
        }
        if !tags.is_empty() {
            let v = serde_json::to_value(tags).unwrap_or_default();
            super::sign::flatten_param("Tags", &v, &mut p);
        }
        self.client
            .call(
                "RenewCertificateOrderForPackageRequest",
                &p,
                Idempotence::NonIdempotent,
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_and_renew_responses_parse() {
        let s: CertificateStateResponse = serde_json::from_str(
            r#"{"RequestId":"R","Type":"certificate","Certificate":"-----BEGIN CERTIFICATE-----","PrivateKey":"-----BEGIN PRIVATE KEY-----secret","CertId":111111}"#,
        )
        .expect("parses");
        assert_eq!(s.state, CertificateState::Certificate);
        assert_eq!(s.cert_id.as_deref(), Some("111111"));
        assert!(
            !format!("{s:?}").contains("secret"),
            "PrivateKey must be redacted"
        );
        let s: CertificateStateResponse =
            serde_json::from_str(r#"{"Type":"unknow"}"#).expect("parses");
        assert_eq!(s.state, CertificateState::Unknow);
        let r: RenewResponse =
            serde_json::from_str(r#"{"OrderId":"323451222","RequestId":"R"}"#).expect("parses");
        assert_eq!(r.order_id, 323_451_222);
        assert!(serde_json::from_str::<RenewResponse>(r#"{"RequestId":"R"}"#).is_err());
        assert!(serde_json::from_str::<CertificateStateResponse>(r#"{"RequestId":"R"}"#).is_err());
    }

    #[test]
    fn empty_strings_never_fill_required_fields() {
        assert!(serde_json::from_str::<RenewResponse>(r#"{"OrderId": ""}"#).is_err());
        assert!(serde_json::from_str::<OrderPage>(r#"{"TotalCount": ""}"#).is_err());
    }
}
