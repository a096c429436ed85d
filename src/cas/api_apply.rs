//! CAS operations for certificates CAS does not renew and for orders that wait in
//! `payed` (pending application): which order kinds cannot be renewed, a new paid
//! application (CreateCertificateForPackageRequest), the resource plan's counters
//! (DescribePackageState), and the V2.0 application calls on an instance
//! (UpdateInstance, ApplyCertificate). Field names are the official SDK's.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use super::api::{Cas, CertificateOrder, Tag, int_from_str, param};
use super::client::{ApiError, Idempotence, Response};

/// Why CAS will not renew an order; a new certificate must be applied for. Sources:
/// "不支持为个人测试证书、混合域名证书和用户上传的第三方证书（即上传证书）续费，需重新购买"
/// (help.aliyun.com/document_detail/28544.html); "Not a multi-domain certificate"
/// (alibabacloud.com ssl-official-certificate-renewal); "免费证书不支持续费"
/// (help.aliyun.com/document_detail/212989.html).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum NotRenewable {
    /// `CertType: FREE` or a `*-free-*` ProductCode: a personal test certificate.
    Free { product_code: Option<String> },
    /// `DomainType` MIX, MULTIPLE or M_WILDCARD (the SDK's documented values).
    MultiDomain { domain_type: String },
    /// An uploaded third-party certificate (`SourceType`/`Upload`).
    Uploaded,
}

impl NotRenewable {
    /// The kind, in words an operator recognises.
    pub fn describe(&self) -> String {
        match self {
            NotRenewable::Free { product_code } => format!(
                "a free personal test certificate{}",
                product_code
                    .as_deref()
                    .map(|p| format!(" ({p})"))
                    .unwrap_or_default()
            ),
            NotRenewable::MultiDomain { domain_type } => {
                format!("a multi-domain certificate (DomainType {domain_type})")
            }
            NotRenewable::Uploaded => "an uploaded certificate".to_owned(),
        }
    }
}

/// Whether `product_code` names a free product (`digicert-free-1-free`,
/// `symantec-free-1-free`): the codes carry `free` as a dash-separated part.
pub fn is_free_product(product_code: &str) -> bool {
    product_code
        .split('-')
        .any(|part| part.eq_ignore_ascii_case("free"))
}

/// The reason CAS would refuse to renew `o`, if its documented fields show one.
pub fn not_renewable(o: &CertificateOrder) -> Option<NotRenewable> {
    let pc = o.product_code.as_deref().filter(|p| !p.is_empty());
    let free_type = o
        .cert_type
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("FREE"));
    if free_type || pc.is_some_and(is_free_product) {
        return Some(NotRenewable::Free {
            product_code: pc.map(str::to_owned),
        });
    }
    if let Some(dt) = o.domain_type.as_deref()
        && ["MIX", "MULTIPLE", "M_WILDCARD"]
            .iter()
            .any(|m| dt.eq_ignore_ascii_case(m))
    {
        return Some(NotRenewable::MultiDomain {
            domain_type: dt.to_ascii_uppercase(),
        });
    }
    let uploaded_source = o
        .source_type
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("upload"));
    if uploaded_source || o.upload == Some(true) {
        return Some(NotRenewable::Uploaded);
    }
    None
}

/// Accepts `123`, `"123"` or an absent field.
fn de_num<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrString {
        Num(i64),
        Str(String),
    }
    match Option::<NumOrString>::deserialize(d)? {
        None => Ok(None),
        Some(NumOrString::Num(n)) => Ok(Some(n)),
        Some(NumOrString::Str(s)) => int_from_str(&s),
    }
}

fn de_required<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    de_num(d)?.ok_or_else(|| de::Error::custom("missing number"))
}

/// CreateCertificateForPackageRequest's parameters (all but ProductCode optional;
/// unset contact fields take the account's most recent contact, per the SDK docs).
#[derive(Debug, Clone, Default)]
pub struct CreateCertificateParams {
    pub product_code: String,
    /// Comma-separated names; with a Csr, CAS uses the Csr's CN.
    pub domain: Option<String>,
    pub csr: Option<String>,
    /// `DNS` or `FILE`.
    pub validate_type: Option<String>,
    pub username: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub company_name: Option<String>,
    pub tags: Vec<Tag>,
}

/// CreateCertificateForPackageRequest's answer: the new order.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateCertificateResponse {
    #[serde(default)]
    pub request_id: String,
    #[serde(deserialize_with = "de_required")]
    pub order_id: i64,
}

/// DescribePackageState's answer: the resource plan's counters for one ProductCode.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct PackageState {
    pub request_id: String,
    pub product_code: Option<String>,
    /// Purchased certificate resource plans of this ProductCode.
    #[serde(deserialize_with = "de_num")]
    pub total_count: Option<i64>,
    /// Applications submitted (each successful Create* call counts, issued or not).
    #[serde(deserialize_with = "de_num")]
    pub used_count: Option<i64>,
    #[serde(deserialize_with = "de_num")]
    pub issued_count: Option<i64>,
}

impl PackageState {
    /// True when the counters say no application is left. Both must be present and
    /// the total positive: what a product never bought (or the free quota) reports
    /// is not documented, and a wrong "none left" would block for ever.
    pub fn exhausted(&self) -> bool {
        matches!((self.total_count, self.used_count), (Some(t), Some(u)) if t > 0 && u >= t)
    }
}

/// UpdateInstance's parameters that cas-renewd sets (SSL Certificate Management V2.0).
#[derive(Debug, Clone, Default)]
pub struct UpdateInstanceParams {
    pub instance_id: String,
    /// With `GenerateCsrMethod: upload`.
    pub csr: Option<String>,
    pub domain: Option<String>,
    /// `DNS` or `HTTP` (V2.0 spelling of file validation).
    pub validation_method: Option<String>,
    /// The CSR's key (`RSA_2048`, `ECC_256`…), for a V2.0 instance's re-issue.
    pub key_algorithm: Option<String>,
}

/// Every request field of UpdateInstance (the official SDK model), for a V2.0
/// instance's application. Unset fields are not sent, so CAS keeps what it has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceApplication {
    pub instance_id: String,
    /// `enable` or `disable` CAS's managed re-issue.
    pub auto_reissue: Option<String>,
    pub certificate_name: Option<String>,
    pub city: Option<String>,
    /// Needed by OV and EV certificates.
    pub company_id: Option<i64>,
    pub contact_id_list: Vec<i64>,
    pub country_code: Option<String>,
    /// Our CSR; sets `GenerateCsrMethod: upload` unless that is given.
    pub csr: Option<String>,
    /// Comma-separated; with a Csr, CAS uses the Csr's CN.
    pub domain: Option<String>,
    /// `online` (CAS makes the key) or `upload`.
    pub generate_csr_method: Option<String>,
    /// `RSA_2048`, `RSA_3072`, `RSA_4096`, `ECC_256` or `SM2`.
    pub key_algorithm: Option<String>,
    pub province: Option<String>,
    pub resource_group_id: Option<String>,
    pub tags: Vec<Tag>,
    /// `DNS` or `HTTP`.
    pub validation_method: Option<String>,
}

impl From<&UpdateInstanceParams> for InstanceApplication {
    fn from(u: &UpdateInstanceParams) -> Self {
        InstanceApplication {
            instance_id: u.instance_id.clone(),
            csr: u.csr.clone(),
            domain: u.domain.clone(),
            validation_method: u.validation_method.clone(),
            key_algorithm: u.key_algorithm.clone(),
            ..Default::default()
        }
    }
}

impl InstanceApplication {
    /// The query parameters, flattened as the SDK does (`ContactIdList.1`,
    /// `Tags.1.TagKey`).
    fn params(&self) -> Vec<(String, String)> {
        let mut p = vec![param("InstanceId", &self.instance_id)];
        let method = self
            .generate_csr_method
            .as_deref()
            .or(self.csr.as_ref().map(|_| "upload"));
        push_opt(&mut p, "AutoReissue", self.auto_reissue.as_deref());
        push_opt(&mut p, "CertificateName", self.certificate_name.as_deref());
        push_opt(&mut p, "City", self.city.as_deref());
        if let Some(c) = self.company_id {
            p.push(param("CompanyId", c));
        }
        for (i, id) in self.contact_id_list.iter().enumerate() {
            p.push(param(&format!("ContactIdList.{}", i + 1), id));
        }
        push_opt(&mut p, "CountryCode", self.country_code.as_deref());
        push_opt(&mut p, "Csr", self.csr.as_deref());
        push_opt(&mut p, "Domain", self.domain.as_deref());
        push_opt(&mut p, "GenerateCsrMethod", method);
        push_opt(&mut p, "KeyAlgorithm", self.key_algorithm.as_deref());
        push_opt(&mut p, "Province", self.province.as_deref());
        push_opt(&mut p, "ResourceGroupId", self.resource_group_id.as_deref());
        for (i, t) in self.tags.iter().enumerate() {
            p.push(param(&format!("Tags.{}.TagKey", i + 1), &t.key));
            p.push(param(&format!("Tags.{}.TagValue", i + 1), &t.value));
        }
        push_opt(
            &mut p,
            "ValidationMethod",
            self.validation_method.as_deref(),
        );
        p
    }
}

/// An answer that carries only `RequestId` (UpdateInstance, ApplyCertificate).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Acknowledged {
    pub request_id: String,
}

fn push_opt(p: &mut Vec<(String, String)>, k: &str, v: Option<&str>) {
    if let Some(v) = v.filter(|v| !v.is_empty()) {
        p.push(param(k, v));
    }
}

impl Cas {
    /// Spends quota (a resource-plan unit, or one of the free certificates): never
    /// repeated when the outcome is unclear; the caller reconciles an
    /// [`ApiError::Ambiguous`] by listing orders.
    pub async fn create_certificate_for_package(
        &self,
        c: &CreateCertificateParams,
    ) -> Result<Response<CreateCertificateResponse>, ApiError> {
        let mut p = vec![param("ProductCode", &c.product_code)];
        push_opt(&mut p, "Domain", c.domain.as_deref());
        push_opt(&mut p, "Csr", c.csr.as_deref());
        push_opt(&mut p, "ValidateType", c.validate_type.as_deref());
        push_opt(&mut p, "Username", c.username.as_deref());
        push_opt(&mut p, "Phone", c.phone.as_deref());
        push_opt(&mut p, "Email", c.email.as_deref());
        push_opt(&mut p, "CompanyName", c.company_name.as_deref());
        if !c.tags.is_empty() {
            let v = serde_json::to_value(&c.tags).unwrap_or_default();
            super::sign::flatten_param("Tags", &v, &mut p);
        }
        self.client()
            .call(
                "CreateCertificateForPackageRequest",
                &p,
                Idempotence::NonIdempotent,
            )
            .await
    }

    pub async fn describe_package_state(
        &self,
        product_code: &str,
    ) -> Result<Response<PackageState>, ApiError> {
        self.client()
            .call(
                "DescribePackageState",
                &[param("ProductCode", product_code)],
                Idempotence::Idempotent,
            )
            .await
    }

    /// Fills in an instance's application (our CSR, the domain, the validation
    /// method). Setting the same values again changes nothing, so it may be retried.
    pub async fn update_instance(
        &self,
        u: &UpdateInstanceParams,
    ) -> Result<Response<Acknowledged>, ApiError> {
        self.update_instance_with(&InstanceApplication::from(u))
            .await
    }

    /// UpdateInstance with any of its request fields (see [`InstanceApplication`]).
    pub async fn update_instance_with(
        &self,
        a: &InstanceApplication,
    ) -> Result<Response<Acknowledged>, ApiError> {
        self.client()
            .call("UpdateInstance", &a.params(), Idempotence::Idempotent)
            .await
    }

    /// Submits an instance's application to the CA. Not repeated when unclear: the
    /// order's state shows whether it was taken up.
    pub async fn apply_certificate(
        &self,
        instance_id: &str,
    ) -> Result<Response<Acknowledged>, ApiError> {
        self.client()
            .call(
                "ApplyCertificate",
                &[param("InstanceId", instance_id)],
                Idempotence::NonIdempotent,
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(cert_type: &str, product: &str, domain_type: &str, source: &str) -> CertificateOrder {
        CertificateOrder {
            cert_type: Some(cert_type.into()),
            product_code: Some(product.into()),
            domain_type: Some(domain_type.into()),
            source_type: Some(source.into()),
            ..Default::default()
        }
    }

    #[test]
    fn documented_kinds_are_not_renewable() {
        assert_eq!(
            not_renewable(&order("DV", "symantec-dv-1-starter", "ONE", "cpack")),
            None
        );
        assert_eq!(
            not_renewable(&order("DV", "geotrust-dv-w-starter", "WILDCARD", "buy")),
            None
        );
        assert!(matches!(
            not_renewable(&order("FREE", "", "ONE", "cpack")),
            Some(NotRenewable::Free { .. })
        ));
        // The simulator used to label free products DV: the ProductCode decides too.
        assert!(matches!(
            not_renewable(&order("DV", "digicert-free-1-free", "ONE", "cpack")),
            Some(NotRenewable::Free { .. })
        ));
        for dt in ["MIX", "MULTIPLE", "m_wildcard"] {
            assert!(
                matches!(
                    not_renewable(&order("OV", "geotrust-ov-1-personal", dt, "cpack")),
                    Some(NotRenewable::MultiDomain { .. })
                ),
                "{dt}"
            );
        }
        assert_eq!(
            not_renewable(&order("DV", "symantec-dv-1-starter", "ONE", "upload")),
            Some(NotRenewable::Uploaded)
        );
        let uploaded = CertificateOrder {
            upload: Some(true),
            ..Default::default()
        };
        assert_eq!(not_renewable(&uploaded), Some(NotRenewable::Uploaded));
        assert!(!is_free_product("freeform-dv-1-starter"));
    }

    #[test]
    fn update_instance_sends_every_set_field_as_the_sdk_does() {
        let a = InstanceApplication {
            instance_id: "cas-ivauto-1".into(),
            csr: Some("CSR".into()),
            domain: Some("www.example.com".into()),
            key_algorithm: Some("ECC_256".into()),
            contact_id_list: vec![7, 8],
            tags: vec![Tag {
                key: "managed-by".into(),
                value: "cas-renewd".into(),
            }],
            city: Some(String::new()),
            ..Default::default()
        };
        let p = a.params();
        let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(
            get("GenerateCsrMethod"),
            Some("upload"),
            "a Csr is uploaded"
        );
        assert_eq!(get("ContactIdList.2"), Some("8"));
        assert_eq!(get("Tags.1.TagKey"), Some("managed-by"));
        assert_eq!(get("KeyAlgorithm"), Some("ECC_256"));
        assert_eq!(get("City"), None, "an empty value is not sent");
        let old = UpdateInstanceParams {
            instance_id: "i".into(),
            validation_method: Some("DNS".into()),
            ..Default::default()
        };
        let p = InstanceApplication::from(&old).params();
        assert_eq!(
            p,
            vec![param("InstanceId", "i"), param("ValidationMethod", "DNS")],
            "without a Csr, CAS's default method stays"
        );
    }

    #[test]
    fn answers_parse() {
        let r: CreateCertificateResponse =
            serde_json::from_str(r#"{"OrderId":"123","RequestId":"R"}"#).expect("parses");
        assert_eq!(r.order_id, 123);
        assert!(serde_json::from_str::<CreateCertificateResponse>(r#"{"RequestId":"R"}"#).is_err());
        let s: PackageState = serde_json::from_str(
            r#"{"RequestId":"R","ProductCode":"digicert-free-1-free","TotalCount":20,"UsedCount":"20","IssuedCount":3}"#,
        )
        .expect("parses");
        assert!(s.exhausted());
        let s: PackageState = serde_json::from_str(r#"{"TotalCount":20}"#).expect("parses");
        assert!(!s.exhausted(), "an absent UsedCount proves nothing");
        let s: PackageState =
            serde_json::from_str(r#"{"TotalCount":0,"UsedCount":0}"#).expect("parses");
        assert!(!s.exhausted(), "a zero total proves nothing");
    }
}
