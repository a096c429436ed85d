//! GetUserCertificateDetail: an issued certificate, its chain and (redacted) keys,
//! every field of the SDK model (the V1 orders and the V2.0 instances use it alike).

use serde::Deserialize;

use super::de::{de_i64, de_list, de_opt, de_opt_i64};
use super::instance_detail::InstanceTag;
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

/// GetUserCertificateDetail's answer. Every private key (`Key`, and the SM2 pair's
/// `EncryptPrivateKey` and `SignPrivateKey`) is a [`Secret`].
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
    #[serde(default, deserialize_with = "de_list")]
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
    #[serde(default, rename = "CertSha2", deserialize_with = "de_opt")]
    pub cert_sha2: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub city: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub country: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub province: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub org_name: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub resource_group_id: Option<String>,
    /// The SM2 encryption certificate (Chinese cryptographic algorithms).
    #[serde(default, deserialize_with = "de_opt")]
    pub encrypt_cert: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub encrypt_private_key: Option<Secret>,
    /// The SM2 signing certificate.
    #[serde(default, deserialize_with = "de_opt")]
    pub sign_cert: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub sign_private_key: Option<Secret>,
    #[serde(default, deserialize_with = "de_list")]
    pub tags: Vec<InstanceTag>,
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
    fn instance_certificate_detail_parses_every_key_redacted() {
        let d: CertificateDetail = serde_json::from_str(
            r#"{"Id":"500007","InstanceId":"cas-ivauto-1","Cert":"PEM","Key":"-----BEGIN EC PRIVATE KEY-----k1secret",
                "EncryptCert":"E","EncryptPrivateKey":"enc2secret","SignCert":"S","SignPrivateKey":"sign3secret",
                "CertSha2":"AB","OrgName":"","Country":"CN","Tags":[{"TagKey":"owner","TagValue":"ops"}],
                "NotBefore":1773899381000,"NotAfter":"1781675381000","CertChain":""}"#,
        )
        .expect("parses");
        assert_eq!(d.id, 500_007);
        assert_eq!(d.instance_id.as_deref(), Some("cas-ivauto-1"));
        assert_eq!(d.cert_sha2.as_deref(), Some("AB"));
        assert_eq!(d.org_name, None);
        assert_eq!(d.tags[0].tag_key.as_deref(), Some("owner"));
        assert!(d.cert_chain.is_empty(), "\"\" is an empty chain");
        let shown = format!("{d:?}");
        for secret in ["k1secret", "enc2secret", "sign3secret"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(d.key.is_some() && d.sign_private_key.is_some());
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
