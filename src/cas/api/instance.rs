//! SSL Certificate Management V2.0 instances: ListInstances (an entry, the page
//! answer, the filters and a pager over every page) and the status names of an
//! instance and of its latest certificate. Times are UNIX seconds here, not the
//! milliseconds of ListUserCertificateOrder.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::de::{de_i64, de_list, de_opt, de_opt_i64};
use super::{Cas, param};
use crate::cas::client::{ApiError, Idempotence, Response};

/// ListInstances' documented maximum `ShowSize` (its default is 10).
pub const MAX_INSTANCE_PAGE_SIZE: u32 = 100;
/// A pager stops after this many pages whatever TotalCount says.
const MAX_PAGES: u32 = 100_000;

/// An instance's status (ListInstances, GetInstanceDetail).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum InstanceStatus {
    /// Pending use: no certificate applied for yet.
    Inactive,
    /// The latest certificate application is under review.
    Pending,
    Normal,
    /// The service period is about to end.
    WillExpire,
    /// The service period is over.
    Expired,
    Refund,
    Closed,
    /// A value this version does not know; kept so a new status cannot break a pass.
    #[serde(other)]
    Unknown,
}

impl InstanceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Inactive => "inactive",
            InstanceStatus::Pending => "pending",
            InstanceStatus::Normal => "normal",
            InstanceStatus::WillExpire => "willExpire",
            InstanceStatus::Expired => "expired",
            InstanceStatus::Refund => "refund",
            InstanceStatus::Closed => "closed",
            InstanceStatus::Unknown => "unknown",
        }
    }
}

impl fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status of an instance's latest certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CertificateStatus {
    Issued,
    Revoked,
    WillExpire,
    Expired,
    #[serde(other)]
    Unknown,
}

impl CertificateStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CertificateStatus::Issued => "issued",
            CertificateStatus::Revoked => "revoked",
            CertificateStatus::WillExpire => "willExpire",
            CertificateStatus::Expired => "expired",
            CertificateStatus::Unknown => "unknown",
        }
    }
}

impl fmt::Display for CertificateStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A UNIX time in seconds as a date, if it is one.
pub fn from_secs(secs: Option<i64>) -> Option<DateTime<Utc>> {
    secs.and_then(|s| DateTime::from_timestamp(s, 0))
}

/// One entry of ListInstances' `InstanceList` (every field of the SDK model).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Instance {
    /// `enable` or `disable`: CAS re-issues the certificate by itself when enabled.
    #[serde(deserialize_with = "de_opt")]
    pub auto_reissue: Option<String>,
    #[serde(deserialize_with = "de_opt")]
    pub brand: Option<String>,
    #[serde(deserialize_with = "de_opt")]
    pub cert_identifier: Option<String>,
    /// The domain of the latest issued certificate.
    #[serde(deserialize_with = "de_opt")]
    pub certificate_domain: Option<String>,
    #[serde(deserialize_with = "de_opt_i64")]
    pub certificate_id: Option<i64>,
    #[serde(deserialize_with = "de_opt")]
    pub certificate_name: Option<String>,
    /// Seconds.
    #[serde(deserialize_with = "de_opt_i64")]
    pub certificate_not_after: Option<i64>,
    /// Seconds.
    #[serde(deserialize_with = "de_opt_i64")]
    pub certificate_not_before: Option<i64>,
    /// Seconds.
    #[serde(deserialize_with = "de_opt_i64")]
    pub certificate_revoke_time: Option<i64>,
    #[serde(deserialize_with = "de_opt")]
    pub certificate_status: Option<CertificateStatus>,
    #[serde(deserialize_with = "de_opt")]
    pub certificate_type: Option<String>,
    /// The domain bound to the instance.
    #[serde(deserialize_with = "de_opt")]
    pub domain: Option<String>,
    #[serde(deserialize_with = "de_opt_i64")]
    pub full_domain_count: Option<i64>,
    /// End of the service period, seconds.
    #[serde(deserialize_with = "de_opt_i64")]
    pub instance_end_time: Option<i64>,
    #[serde(deserialize_with = "de_opt")]
    pub instance_id: Option<String>,
    /// Start of the service period, seconds.
    #[serde(deserialize_with = "de_opt_i64")]
    pub instance_start_time: Option<i64>,
    /// `BUY` or `TEST`.
    #[serde(deserialize_with = "de_opt")]
    pub instance_type: Option<String>,
    /// `RSA_2048`, `RSA_3072`, `RSA_4096`, `ECC_256`, `SM2`.
    #[serde(deserialize_with = "de_opt")]
    pub key_algorithm: Option<String>,
    #[serde(deserialize_with = "de_opt_i64")]
    pub order_end_time: Option<i64>,
    #[serde(deserialize_with = "de_opt_i64")]
    pub order_start_time: Option<i64>,
    /// What the CA said about the last operation.
    #[serde(deserialize_with = "de_opt")]
    pub pending_result: Option<String>,
    #[serde(deserialize_with = "de_opt")]
    pub resource_group_id: Option<String>,
    #[serde(deserialize_with = "de_opt")]
    pub spec: Option<String>,
    #[serde(deserialize_with = "de_opt")]
    pub status: Option<InstanceStatus>,
    #[serde(deserialize_with = "de_list")]
    pub using_product_list: Vec<String>,
    #[serde(deserialize_with = "de_opt")]
    pub version_type: Option<String>,
    #[serde(deserialize_with = "de_opt_i64")]
    pub wildcard_domain_count: Option<i64>,
}

impl Instance {
    /// The instance's domain: the bound one, else the latest certificate's.
    pub fn domain_name(&self) -> Option<&str> {
        self.domain
            .as_deref()
            .or(self.certificate_domain.as_deref())
            .map(|d| d.split(',').next().unwrap_or(d).trim())
            .filter(|d| !d.is_empty())
    }

    /// Whether CAS re-issues this instance's certificate itself.
    pub fn auto_reissue_enabled(&self) -> bool {
        self.auto_reissue
            .as_deref()
            .is_some_and(|a| a.eq_ignore_ascii_case("enable"))
    }

    pub fn certificate_not_after(&self) -> Option<DateTime<Utc>> {
        from_secs(self.certificate_not_after)
    }

    pub fn service_end(&self) -> Option<DateTime<Utc>> {
        from_secs(self.instance_end_time)
    }
}

/// One page of ListInstances.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InstancePage {
    #[serde(default)]
    pub request_id: String,
    #[serde(deserialize_with = "de_i64")]
    pub total_count: i64,
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub current_page: Option<i64>,
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub show_size: Option<i64>,
    /// Instances with managed re-issue disabled.
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub disable_reissue_count: Option<i64>,
    /// Instances with managed re-issue enabled.
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub enable_reissue_count: Option<i64>,
    #[serde(default, deserialize_with = "de_list")]
    pub instance_list: Vec<Instance>,
}

/// Filters of ListInstances (every request field but the paging ones).
#[derive(Debug, Clone, Default)]
pub struct InstanceFilter {
    /// 1 managed, 0 not.
    pub auto_reissue_flag: Option<i64>,
    pub brand: Option<String>,
    pub certificate_status: Option<CertificateStatus>,
    pub certificate_type: Option<String>,
    pub instance_type: Option<String>,
    pub keyword: Option<String>,
    pub resource_group_id: Option<String>,
    pub server_deploy_flag: Option<i64>,
    pub status: Option<InstanceStatus>,
    pub version_type: Option<String>,
}

impl InstanceFilter {
    fn params(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let mut push = |k: &str, v: Option<String>| {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                p.push(param(k, v));
            }
        };
        push(
            "AutoReissueFlag",
            self.auto_reissue_flag.map(|n| n.to_string()),
        );
        push("Brand", self.brand.clone());
        push(
            "CertificateStatus",
            self.certificate_status.map(|s| s.as_str().to_owned()),
        );
        push("CertificateType", self.certificate_type.clone());
        push("InstanceType", self.instance_type.clone());
        push("Keyword", self.keyword.clone());
        push("ResourceGroupId", self.resource_group_id.clone());
        push(
            "ServerDeployFlag",
            self.server_deploy_flag.map(|n| n.to_string()),
        );
        push("Status", self.status.map(|s| s.as_str().to_owned()));
        push("VersionType", self.version_type.clone());
        p
    }
}

impl Cas {
    /// One page of ListInstances (pages count from 1; `page_size` is held to 1..=100).
    pub async fn list_instances_page(
        &self,
        filter: &InstanceFilter,
        page: u32,
        page_size: u32,
    ) -> Result<Response<InstancePage>, ApiError> {
        let size = page_size.clamp(1, MAX_INSTANCE_PAGE_SIZE);
        let mut p = vec![param("CurrentPage", page), param("ShowSize", size)];
        p.extend(filter.params());
        self.client()
            .call("ListInstances", &p, Idempotence::Idempotent)
            .await
    }

    /// Every matching instance, page after page, until `TotalCount` were seen or a
    /// page comes back empty.
    pub async fn list_all_instances(
        &self,
        filter: &InstanceFilter,
        page_size: u32,
    ) -> Result<Vec<Instance>, ApiError> {
        let mut all = Vec::new();
        for page in 1..=MAX_PAGES {
            let resp = self.list_instances_page(filter, page, page_size).await?;
            let body = resp.body;
            let total = usize::try_from(body.total_count.max(0)).unwrap_or(usize::MAX);
            let empty = body.instance_list.is_empty();
            all.extend(body.instance_list);
            if all.len() >= total {
                break;
            }
            if empty {
                tracing::warn!(
                    request_id = %resp.request_id,
                    seen = all.len(),
                    total,
                    "ListInstances returned an empty page before TotalCount was reached"
                );
                break;
            }
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_list_answer_parses_with_string_numbers() {
        let json = r#"{"RequestId":"15C1B5D3","TotalCount":"2","ShowSize":10,"CurrentPage":"1",
            "DisableReissueCount":1,"EnableReissueCount":"1",
            "InstanceList":[
              {"InstanceId":"cas-ivauto-zu6ns9","Domain":"www.example.com","Status":"normal",
               "CertificateStatus":"willExpire","CertificateId":"12345","CertificateNotAfter":1781675381,
               "CertificateNotBefore":1773899381,"InstanceStartTime":"1773899381","InstanceEndTime":1837057781,
               "AutoReissue":"disable","KeyAlgorithm":"RSA_2048","UsingProductList":["SLB","CDN"],
               "Brand":"DigiCert","CertIdentifier":"12345-cn-hangzhou","FullDomainCount":1,"WildcardDomainCount":0},
              {"InstanceId":"cas-ivauto-2","Status":"somethingNew","CertificateStatus":"","Domain":"",
               "CertificateDomain":"api.example.com,api2.example.com","AutoReissue":"enable","UsingProductList":""}
            ]}"#;
        let page: InstancePage = serde_json::from_str(json).expect("parses");
        assert_eq!(page.total_count, 2);
        assert_eq!(page.enable_reissue_count, Some(1));
        let a = &page.instance_list[0];
        assert_eq!(a.status, Some(InstanceStatus::Normal));
        assert_eq!(a.certificate_status, Some(CertificateStatus::WillExpire));
        assert_eq!(a.certificate_id, Some(12_345));
        assert_eq!(a.instance_start_time, Some(1_773_899_381));
        assert_eq!(
            a.service_end().map(|t| t.to_rfc3339()),
            Some("2028-03-19T05:49:41+00:00".to_owned()),
            "seconds, not milliseconds"
        );
        assert_eq!(a.using_product_list, vec!["SLB", "CDN"]);
        assert!(!a.auto_reissue_enabled());
        let b = &page.instance_list[1];
        assert_eq!(b.status, Some(InstanceStatus::Unknown));
        assert_eq!(b.certificate_status, None, "\"\" is absent");
        assert_eq!(b.domain_name(), Some("api.example.com"));
        assert!(b.auto_reissue_enabled());
        assert!(b.using_product_list.is_empty());
    }

    #[test]
    fn malformed_list_answers_are_clear_errors() {
        for (json, want) in [
            (r#"{"RequestId":"x"}"#, "TotalCount"),
            (r#"{"TotalCount":"lots"}"#, "not an integer"),
            (r#"{"TotalCount":1,"InstanceList":"oops"}"#, "not a list"),
            (
                r#"{"TotalCount":1,"InstanceList":[{"CertificateNotAfter":"soon"}]}"#,
                "not an integer",
            ),
            (
                r#"{"TotalCount":1,"InstanceList":[{"InstanceEndTime":1.5}]}"#,
                "not an integer",
            ),
            (r#"{"TotalCount":1,"InstanceList":[7]}"#, "list entry"),
        ] {
            let err = serde_json::from_str::<InstancePage>(json).expect_err(json);
            assert!(err.to_string().contains(want), "{json}: {err}");
        }
    }

    #[test]
    fn filter_sends_only_what_is_set() {
        let f = InstanceFilter {
            keyword: Some("example".into()),
            status: Some(InstanceStatus::WillExpire),
            certificate_status: Some(CertificateStatus::Expired),
            auto_reissue_flag: Some(0),
            brand: Some(String::new()),
            ..Default::default()
        };
        let p = f.params();
        assert_eq!(
            p,
            vec![
                param("AutoReissueFlag", "0"),
                param("CertificateStatus", "expired"),
                param("Keyword", "example"),
                param("Status", "willExpire"),
            ]
        );
    }
}
