//! One entry of ListUserCertificateOrder (an order or a certificate) and its
//! status and type names.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::de::{de_opt, de_opt_i64};

/// Order and certificate status of ListUserCertificateOrder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Payed,
    Checking,
    CheckedFail,
    Issued,
    Willexpired,
    Expired,
    Notactivated,
    Revoked,
    /// A value this version does not know; kept so a new status cannot break a pass.
    #[serde(other)]
    Unknown,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 8] = [
        OrderStatus::Payed,
        OrderStatus::Checking,
        OrderStatus::CheckedFail,
        OrderStatus::Issued,
        OrderStatus::Willexpired,
        OrderStatus::Expired,
        OrderStatus::Notactivated,
        OrderStatus::Revoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Payed => "PAYED",
            OrderStatus::Checking => "CHECKING",
            OrderStatus::CheckedFail => "CHECKED_FAIL",
            OrderStatus::Issued => "ISSUED",
            OrderStatus::Willexpired => "WILLEXPIRED",
            OrderStatus::Expired => "EXPIRED",
            OrderStatus::Notactivated => "NOTACTIVATED",
            OrderStatus::Revoked => "REVOKED",
            OrderStatus::Unknown => "UNKNOWN",
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for OrderStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        OrderStatus::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let all: Vec<&str> = OrderStatus::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown status {s:?}; one of {}", all.join(", "))
            })
    }
}

/// `OrderType` of ListUserCertificateOrder: orders (`CPACK`, `BUY`) or certificates
/// (`CERT`, `UPLOAD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderType {
    Cpack,
    Buy,
    Upload,
    Cert,
}

impl OrderType {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderType::Cpack => "CPACK",
            OrderType::Buy => "BUY",
            OrderType::Upload => "UPLOAD",
            OrderType::Cert => "CERT",
        }
    }
}

/// One entry of `CertificateOrderList`. Which fields are set depends on the
/// `OrderType` asked for (orders or certificates).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct CertificateOrder {
    #[serde(deserialize_with = "de_opt_i64")]
    pub order_id: Option<i64>,
    #[serde(default, deserialize_with = "de_opt")]
    pub instance_id: Option<String>,
    #[serde(deserialize_with = "de_opt_i64")]
    pub aliyun_order_id: Option<i64>,
    #[serde(default, deserialize_with = "de_opt")]
    pub partner_order_id: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub status: Option<OrderStatus>,
    #[serde(default, deserialize_with = "de_opt")]
    pub product_code: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub product_name: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub algorithm: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub cert_type: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub domain: Option<String>,
    #[serde(deserialize_with = "de_opt_i64")]
    pub domain_count: Option<i64>,
    #[serde(deserialize_with = "de_opt_i64")]
    pub wild_domain_count: Option<i64>,
    #[serde(default, deserialize_with = "de_opt")]
    pub domain_type: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub root_brand: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub source_type: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub trustee_status: Option<String>,
    /// Milliseconds since the epoch.
    #[serde(deserialize_with = "de_opt_i64")]
    pub buy_date: Option<i64>,
    /// Milliseconds since the epoch.
    #[serde(deserialize_with = "de_opt_i64")]
    pub cert_start_time: Option<i64>,
    /// Milliseconds since the epoch.
    #[serde(deserialize_with = "de_opt_i64")]
    pub cert_end_time: Option<i64>,
    #[serde(deserialize_with = "de_opt_i64")]
    pub certificate_id: Option<i64>,
    #[serde(default, deserialize_with = "de_opt")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub common_name: Option<String>,
    /// Comma-separated.
    #[serde(default, deserialize_with = "de_opt")]
    pub sans: Option<String>,
    /// `YYYY-MM-DD`.
    #[serde(default, deserialize_with = "de_opt")]
    pub start_date: Option<String>,
    /// `YYYY-MM-DD`.
    #[serde(default, deserialize_with = "de_opt")]
    pub end_date: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub expired: Option<bool>,
    #[serde(default, deserialize_with = "de_opt")]
    pub upload: Option<bool>,
    #[serde(default, deserialize_with = "de_opt")]
    pub issuer: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub fingerprint: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub sha2: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub serial_no: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub org_name: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub country: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub province: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub city: Option<String>,
    #[serde(default, deserialize_with = "de_opt")]
    pub resource_group_id: Option<String>,
}

impl CertificateOrder {
    /// The domain, from `Domain` (orders) or `CommonName` (certificates).
    pub fn domain_name(&self) -> Option<&str> {
        self.domain
            .as_deref()
            .or(self.common_name.as_deref())
            .filter(|d| !d.is_empty())
    }

    /// Whether this entry is for `domain` (compared case-insensitively).
    pub fn is_for(&self, domain: &str) -> bool {
        self.domain_name()
            .is_some_and(|d| d.eq_ignore_ascii_case(domain))
    }

    /// Expiry in ms since the epoch: `CertEndTime`, or the end of `EndDate` (UTC).
    pub fn not_after_ms(&self) -> Option<i64> {
        self.cert_end_time.or_else(|| {
            let d =
                chrono::NaiveDate::parse_from_str(self.end_date.as_deref()?, "%Y-%m-%d").ok()?;
            Some(d.and_hms_opt(23, 59, 59)?.and_utc().timestamp_millis())
        })
    }

    /// The names a certificate for this order covers: `Sans`, else the domain.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .sans
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        if let Some(d) = self.domain_name() {
            let d = d.to_ascii_lowercase();
            if !names.contains(&d) {
                names.insert(0, d);
            }
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cas::api::OrderPage;

    /// Every optional field of an order as Alibaba sends it when it has no value.
    const EMPTY_ORDER: &str = r#"{"OrderId": 7, "Status": "PAYED", "Domain": "", "PartnerOrderId": "",
        "InstanceId": "", "AliyunOrderId": "", "ProductCode": "", "ProductName": "", "Algorithm": "",
        "CertType": "", "DomainCount": "", "WildDomainCount": "", "DomainType": "", "RootBrand": "",
        "SourceType": "", "TrusteeStatus": "", "BuyDate": "", "CertStartTime": "", "CertEndTime": "",
        "CertificateId": "", "Name": "", "CommonName": "", "Sans": "", "StartDate": "", "EndDate": "",
        "Expired": "", "Upload": "", "Issuer": "", "Fingerprint": "", "Sha2": "", "SerialNo": "",
        "OrgName": "", "Country": "", "Province": "", "City": "", "ResourceGroupId": ""}"#;

    #[test]
    fn empty_strings_in_an_order_are_absent() {
        let o: CertificateOrder = serde_json::from_str(EMPTY_ORDER).expect("parses");
        assert_eq!(
            o,
            CertificateOrder {
                order_id: Some(7),
                status: Some(OrderStatus::Payed),
                ..CertificateOrder::default()
            }
        );
        assert_eq!(o.domain_name(), None);
        assert!(o.names().is_empty());
        // `"Domain": ""` must not hide `CommonName`.
        let o: CertificateOrder =
            serde_json::from_str(r#"{"Domain": "", "CommonName": "a.example.com", "Status": ""}"#)
                .expect("parses");
        assert_eq!(o.domain_name(), Some("a.example.com"));
        assert_eq!(o.status, None, "an empty Status is no status, not Unknown");
        let page: OrderPage = serde_json::from_str(&format!(
            r#"{{"TotalCount": 1, "ShowSize": "", "CurrentPage": "", "RequestId": "", "CertificateOrderList": [{EMPTY_ORDER}]}}"#
        ))
        .expect("a page of empty fields parses");
        assert_eq!(page.show_size, None);
        assert_eq!(page.certificate_order_list.len(), 1);
    }

    #[test]
    fn status_names_round_trip() {
        for s in OrderStatus::ALL {
            assert_eq!(s.as_str().parse::<OrderStatus>(), Ok(s));
        }
        assert_eq!(
            "willexpired".parse::<OrderStatus>(),
            Ok(OrderStatus::Willexpired)
        );
        assert!("SOON".parse::<OrderStatus>().is_err());
    }
}
