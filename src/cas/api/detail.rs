//! GetUserCertificateDetail: an issued certificate, its chain and (redacted) key.

use serde::Deserialize;

use super::de::{de_i64, de_opt, de_opt_i64};
use super::{Cas, param};
use crate::cas::client::{ApiError, Idempotence, Response};
use crate::secret::Secret;

/// One entry of GetUserCertificateDetail's `CertChain`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ChainEntry {
    #[serde(default, deserialize_with = "de_opt")]
    pub common_name: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub issuer_common_name: Option<String>,
    #[serde(deserialize_with = "de_opt_i64")]
    pub not_before: Option<i64>,
    #[serde(deserialize_with = "de_opt_i64")]
    pub not_after: Option<i64>,
    #[serde(deserialize_with = "de_opt_i64")]
    pub remain_day: Option<i64>,
}

/// GetUserCertificateDetail's answer. `Key` is a [`Secret`].
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CertificateDetail {
    #[serde(default)]
    pub request_id: String,
    #[serde(deserialize_with = "de_i64")]
    pub id: i64,
    #[serde(default, deserialize_with = "de_opt")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub cert: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub key: Option<Secret>,
    #[serde(default)]
    pub cert_chain: Vec<ChainEntry>,
    #[serde(default, deserialize_with = "de_opt")]
    pub common: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub sans: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub start_date: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub end_date: Option<String>,
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub not_before: Option<i64>,
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub not_after: Option<i64>,
    #[serde(default, deserialize_with = "de_opt")]
    pub expired: Option<bool>,
    #[serde(default, deserialize_with = "de_opt")]
    pub buy_in_aliyun: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub order_id: Option<i64>,
    #[serde(default, deserialize_with = "de_opt")]
    pub instance_id: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub cert_identifier: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub fingerprint: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub sha2: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub serial_no: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub issuer: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub algorithm: Option<String>,
}

impl Cas {
    pub async fn get_user_certificate_detail(
        &self,
        cert_id: i64,
        cert_filter: bool,
    ) -> Result<Response<CertificateDetail>, ApiError> {
        self.client
            .call(
                "GetUserCertificateDetail",
                &[param("CertId", cert_id), param("CertFilter", cert_filter)],
                Idempotence::Idempotent,
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detail_parses_and_redacts_key() {
        let d: CertificateDetail = serde_json::from_str(
            r#"{"Id":121345,"Cert":"PEM","Key":"-----BEGIN RSA PRIVATE KEY-----topsecret","CertChain":[{"CommonName":"a","NotAfter":17326613180000,"RemainDay":3}],"OrderId":"5"}"#,
        )
        .expect("parses");
        assert_eq!(d.id, 121_345);
        assert_eq!(d.order_id, Some(5));
        assert_eq!(d.cert_chain.len(), 1);
        assert!(!format!("{d:?}").contains("topsecret"));
    }

    #[test]
    fn empty_strings_in_a_detail_are_absent() {
        let d: CertificateDetail = serde_json::from_str(
            r#"{"Id": 5, "RequestId": "", "Name": "", "Cert": "", "Key": "", "Common": "", "Sans": "",
                "StartDate": "", "EndDate": "", "NotBefore": "", "NotAfter": "", "Expired": "",
                "BuyInAliyun": "", "OrderId": "", "InstanceId": "", "CertIdentifier": "",
                "Fingerprint": "", "Sha2": "", "SerialNo": "", "Issuer": "", "Algorithm": "",
                "CertChain": [{"CommonName": "", "IssuerCommonName": "", "NotBefore": "", "NotAfter": "", "RemainDay": ""}]}"#,
        )
        .expect("parses");
        assert_eq!(d.id, 5);
        assert!(d.key.is_none() && d.cert.is_none() && d.expired.is_none());
        assert!(d.buy_in_aliyun.is_none() && d.order_id.is_none() && d.not_after.is_none());
        assert!(d.cert_chain[0].common_name.is_none() && d.cert_chain[0].remain_day.is_none());
        let d: CertificateDetail =
            serde_json::from_str(r#"{"Id": 5, "Expired": true, "BuyInAliyun": false}"#)
                .expect("parses");
        assert_eq!((d.expired, d.buy_in_aliyun), (Some(true), Some(false)));
        assert!(
            serde_json::from_str::<CertificateDetail>(r#"{"Id": 5, "Expired": "maybe"}"#).is_err(),
            "a non-empty wrong value is still an error"
        );
    }
}
