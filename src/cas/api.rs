//! Typed CAS operations (API version 2020-04-07), named after the API's own fields.
//!
//! Numbers may arrive as JSON numbers or numeric strings (older docs show both), so
//! every integer field accepts either.

use std::fmt;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use super::client::{ApiClient, ApiError, Idempotence, Response};
use crate::secret::Secret;

/// CAS API version.
pub const CAS_VERSION: &str = "2020-04-07";
/// The documented default page size of ListUserCertificateOrder. The maximum is not
/// documented; callers may ask for more and the server decides.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// A pager stops after this many pages whatever TotalCount says, so a server that
/// keeps answering full pages cannot hold a pass forever.
const MAX_PAGES: u32 = 100_000;

/// Accepts `123`, `"123"`, `null` or an absent field.
fn de_opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrString {
        Num(i64),
        Float(f64),
        Str(String),
    }
    match Option::<NumOrString>::deserialize(d)? {
        None => Ok(None),
        Some(NumOrString::Num(n)) => Ok(Some(n)),
        Some(NumOrString::Float(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Some(f as i64)),
        Some(NumOrString::Float(f)) => Err(de::Error::custom(format!("{f} is not an integer"))),
        Some(NumOrString::Str(s)) if s.trim().is_empty() => Ok(None),
        Some(NumOrString::Str(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| de::Error::custom(format!("{s:?} is not an integer"))),
    }
}

/// Like [`de_opt_i64`] but the field must be there.
fn de_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    de_opt_i64(d)?.ok_or_else(|| de::Error::custom("missing number"))
}

/// Accepts a string or a number (CertId is a string here and an integer elsewhere);
/// `""` is absent.
fn de_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum StrOrNum {
        Str(String),
        Num(i64),
    }
    Ok(match Option::<StrOrNum>::deserialize(d)? {
        None => None,
        Some(StrOrNum::Str(s)) if s.trim().is_empty() => None,
        Some(StrOrNum::Str(s)) => Some(s),
        Some(StrOrNum::Num(n)) => Some(n.to_string()),
    })
}

/// Any optional scalar field (string, [`Secret`], bool, enum): Alibaba sends `""`
/// for a value it does not have (`"PrivateKey": ""`, `"Domain": ""`), so `""`, a
/// blank string, `null` and an absent field all read as `None`. Numbers go through
/// [`de_opt_i64`], which does the same.
pub(crate) fn de_opt<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    use serde::de::IntoDeserializer;
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Bool(bool),
        Int(i64),
        Float(f64),
        Str(String),
    }
    match Option::<Scalar>::deserialize(d)? {
        None => Ok(None),
        Some(Scalar::Str(s)) if s.trim().is_empty() => Ok(None),
        Some(Scalar::Str(s)) => T::deserialize(s.into_deserializer()).map(Some),
        Some(Scalar::Bool(b)) => T::deserialize(b.into_deserializer()).map(Some),
        Some(Scalar::Int(n)) => T::deserialize(n.into_deserializer()).map(Some),
        Some(Scalar::Float(f)) => T::deserialize(f.into_deserializer()).map(Some),
    }
}

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

/// One page of ListUserCertificateOrder.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OrderPage {
    #[serde(default)]
    pub request_id: String,
    #[serde(deserialize_with = "de_i64")]
    pub total_count: i64,
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub show_size: Option<i64>,
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub current_page: Option<i64>,
    #[serde(default)]
    pub certificate_order_list: Vec<CertificateOrder>,
}

/// Filters of ListUserCertificateOrder.
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    pub keyword: Option<String>,
    pub status: Option<OrderStatus>,
    pub order_type: Option<OrderType>,
    pub resource_group_id: Option<String>,
}

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

fn param(k: &str, v: impl ToString) -> (String, String) {
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

    /// One page of ListUserCertificateOrder (pages count from 1).
    pub async fn list_orders_page(
        &self,
        filter: &OrderFilter,
        page: u32,
        page_size: u32,
    ) -> Result<Response<OrderPage>, ApiError> {
        let mut p = vec![param("CurrentPage", page), param("ShowSize", page_size)];
        if let Some(k) = &filter.keyword {
            p.push(param("Keyword", k));
        }
        if let Some(s) = filter.status {
            p.push(param("Status", s.as_str()));
        }
        if let Some(t) = filter.order_type {
            p.push(param("OrderType", t.as_str()));
        }
        if let Some(g) = &filter.resource_group_id {
            p.push(param("ResourceGroupId", g));
        }
        self.client
            .call("ListUserCertificateOrder", &p, Idempotence::Idempotent)
            .await
    }

    /// A pager over every matching entry.
    pub fn list_orders(&self, filter: OrderFilter, page_size: u32) -> OrderPager<'_> {
        OrderPager {
            cas: self,
            filter,
            page_size: page_size.max(1),
            next_page: 1,
            seen: 0,
            done: false,
        }
    }

    /// Every matching entry, page after page.
    pub async fn list_all_orders(
        &self,
        filter: OrderFilter,
        page_size: u32,
    ) -> Result<Vec<CertificateOrder>, ApiError> {
        let mut pager = self.list_orders(filter, page_size);
        let mut all = Vec::new();
        while let Some(page) = pager.next_page().await? {
            all.extend(page);
        }
        Ok(all)
    }

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

/// Walks ListUserCertificateOrder page by page until `TotalCount` entries were seen
/// (or a page comes back empty).
pub struct OrderPager<'a> {
    cas: &'a Cas,
    filter: OrderFilter,
    page_size: u32,
    next_page: u32,
    seen: u64,
    done: bool,
}

impl OrderPager<'_> {
    /// The next page's entries, or `None` after the last.
    pub async fn next_page(&mut self) -> Result<Option<Vec<CertificateOrder>>, ApiError> {
        if self.done {
            return Ok(None);
        }
        let resp = self
            .cas
            .list_orders_page(&self.filter, self.next_page, self.page_size)
            .await?;
        let page = resp.body;
        let total = u64::try_from(page.total_count.max(0)).unwrap_or(0);
        self.seen += page.certificate_order_list.len() as u64;
        self.next_page += 1;
        if self.seen >= total
            || page.certificate_order_list.is_empty()
            || self.next_page > MAX_PAGES
        {
            if self.seen < total {
                tracing::warn!(
                    request_id = %resp.request_id,
                    seen = self.seen,
                    total,
                    "ListUserCertificateOrder returned an empty page before TotalCount was reached"
                );
            }
            self.done = true;
        }
        if page.certificate_order_list.is_empty() {
            return Ok(None);
        }
        Ok(Some(page.certificate_order_list))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_page_parses_documented_sample_and_string_numbers() {
        let json = r#"{"ShowSize": 10, "CurrentPage": "1", "TotalCount": "2", "RequestId": "R1",
            "CertificateOrderList": [
              {"Algorithm": "RSA", "AliyunOrderId": 234567, "BuyDate": 1634283958000, "CertEndTime": 1665819958000,
               "CertStartTime": 1665819958000, "CertType": "FREE", "Domain": "aliyundoc.com", "DomainCount": 1,
               "DomainType": "ONE", "OrderId": "2345687", "Status": "WILLEXPIRED", "SourceType": "buy"},
              {"Status": "SOMETHING_NEW", "CommonName": "a.example.com", "Sans": "a.example.com,b.example.com",
               "EndDate": "2022-11-17", "CertificateId": 896521, "Expired": false}
            ]}"#;
        let page: OrderPage = serde_json::from_str(json).expect("parses");
        assert_eq!(page.total_count, 2);
        let a = &page.certificate_order_list[0];
        assert_eq!(a.order_id, Some(2_345_687));
        assert_eq!(a.status, Some(OrderStatus::Willexpired));
        assert_eq!(a.not_after_ms(), Some(1_665_819_958_000));
        let b = &page.certificate_order_list[1];
        assert_eq!(b.status, Some(OrderStatus::Unknown));
        assert_eq!(b.domain_name(), Some("a.example.com"));
        assert_eq!(b.names(), vec!["a.example.com", "b.example.com"]);
        assert!(b.not_after_ms().is_some());
    }

    #[test]
    fn missing_total_count_is_an_error() {
        let err =
            serde_json::from_str::<OrderPage>(r#"{"RequestId":"x","CertificateOrderList":[]}"#)
                .expect_err("TotalCount is required");
        assert!(err.to_string().contains("TotalCount"), "{err}");
        assert!(serde_json::from_str::<OrderPage>(r#"{"TotalCount":"many"}"#).is_err());
    }

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

    #[test]
    fn empty_strings_never_fill_required_fields() {
        assert!(serde_json::from_str::<RenewResponse>(r#"{"OrderId": ""}"#).is_err());
        assert!(serde_json::from_str::<OrderPage>(r#"{"TotalCount": ""}"#).is_err());
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
