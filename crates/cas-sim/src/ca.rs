//! The simulator's certificate authority: a root and an intermediate made fresh
//! at every start, issuing real X.509 v3 certificates from submitted CSRs.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

use super::scenario::KeyFormat;
use keys::KeyPool;
use x509_parser::asn1_rs::{Any, Class, FromDer as _, Tag};

pub mod keys;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("Csr could not be parsed or its signature is invalid: {0}")]
    BadCsr(String),
    #[error("Csr has no domain name (neither a DNS subjectAltName nor a CN)")]
    CsrWithoutName,
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the generated key could not be encoded as {0}")]
    KeyEncoding(&'static str),
}

/// What the CA returns for one issuance.
#[derive(Debug, Clone)]
pub struct Issued {
    pub leaf_pem: String,
    /// Intermediates, leaf's issuer first.
    pub chain_pem: String,
    /// Set when the CA generated the key (renewal without a CSR).
    pub private_key_pem: Option<String>,
    pub serial_hex: String,
    pub names: Vec<String>,
}

/// Everything one issuance needs, so that the world can describe it under its lock
/// and the CA can do it (key and signature) outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueJob {
    /// The applicant's CSR; without one the CA makes the key.
    pub csr: Option<String>,
    pub names: Vec<String>,
    pub algorithm: String,
    pub not_before_ms: i64,
    pub not_after_ms: i64,
    pub twist: Twist,
    /// A key the CA must not hand out (the order's current one).
    pub avoid_key: Option<String>,
}

/// The misbehaviours a scenario can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Twist {
    None,
    WrongKey,
    WrongName,
    Expired,
}

pub struct Ca {
    root_pem: String,
    intermediate_pem: String,
    intermediate: Issuer<'static, KeyPair>,
    key_format: KeyFormat,
    keys: KeyPool,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

fn ca_params(cn: &str, path_len: Option<u8>) -> Result<CertificateParams, CaError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name
        .push(DnType::OrganizationName, "cas-renewd simulator");
    p.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + ::time::Duration::days(3650);
    Ok(p)
}

impl Ca {
    pub fn new() -> Result<Ca, CaError> {
        let root_key = KeyPair::generate()?;
        let root_params = ca_params("cas-renewd simulator root CA", None)?;
        let root_cert = root_params.self_signed(&root_key)?;
        let root = Issuer::new(root_params, root_key);
        let int_key = KeyPair::generate()?;
        let int_params = ca_params("cas-renewd simulator intermediate CA", Some(0))?;
        let int_cert = int_params.signed_by(&int_key, &root)?;
        Ok(Ca {
            root_pem: root_cert.pem(),
            intermediate_pem: int_cert.pem(),
            intermediate: Issuer::new(int_params, int_key),
            key_format: KeyFormat::default(),
            keys: KeyPool::default(),
        })
    }

    /// How the keys this CA makes are handed out (`issuance.key_format`).
    pub fn with_key_format(mut self, key_format: KeyFormat) -> Ca {
        self.key_format = key_format;
        self
    }

    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// Issues a leaf for `csr_pem`'s key and names (or, without a CSR, for a new key
    /// of `algorithm` and `names`), valid from `not_before` to `not_after`.
    pub fn issue(
        &self,
        csr_pem: Option<&str>,
        names: &[String],
        algorithm: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        twist: Twist,
    ) -> Result<Issued, CaError> {
        let ms =
            |t: OffsetDateTime| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        self.issue_job(&IssueJob {
            csr: csr_pem.map(str::to_owned),
            names: names.to_vec(),
            algorithm: algorithm.to_owned(),
            not_before_ms: ms(not_before),
            not_after_ms: ms(not_after),
            twist,
            avoid_key: None,
        })
    }

    /// Does `job`: the CA's key (from the pool) when it has no CSR, and the leaf.
    pub fn issue_job(&self, job: &IssueJob) -> Result<Issued, CaError> {
        let (public_key, mut cert_names, private_key_pem) = match &job.csr {
            Some(pem) => csr_subject(pem)?,
            None => {
                let rsa = job.algorithm.eq_ignore_ascii_case("RSA");
                let k = self.keys.take(rsa, job.avoid_key.as_deref(), |k| {
                    key_pem(k, self.key_format)
                })?;
                (
                    PublicKey::Generated(k.key),
                    job.names.clone(),
                    Some(k.pem.to_string()),
                )
            }
        };
        let mut not_after = ms_offset(job.not_after_ms);
        let mut not_before = ms_offset(job.not_before_ms);
        match job.twist {
            Twist::None => {}
            Twist::WrongName => cert_names = vec!["wrong-name.invalid".into()],
            Twist::Expired => {
                not_after = OffsetDateTime::now_utc() - time::Duration::days(1);
                not_before = not_after - time::Duration::days(90);
            }
            Twist::WrongKey => {}
        }
        let (p, serial) = leaf_params(&cert_names, not_before, not_after)?;
        let cert = if job.twist == Twist::WrongKey {
            let other = KeyPair::generate()?;
            p.signed_by(&other, &self.intermediate)?
        } else {
            match &public_key {
                PublicKey::Csr(k) => p.signed_by(k, &self.intermediate)?,
                PublicKey::Generated(k) => p.signed_by(&**k, &self.intermediate)?,
            }
        };
        Ok(Issued {
            leaf_pem: cert.pem(),
            chain_pem: self.intermediate_pem.clone(),
            private_key_pem,
            serial_hex: hex::encode(&serial),
            names: cert_names,
        })
    }
}

pub(crate) fn ms_offset(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// A key this CA made, as CAS would hand it out in `format`.
/// A CSR's public key and names: its DNS SANs, with its CN first when the SANs
/// lack it.
fn csr_subject(pem: &str) -> Result<(PublicKey, Vec<String>, Option<String>), CaError> {
    let csr = CertificateSigningRequestParams::from_pem(pem)
        .map_err(|e| CaError::BadCsr(e.to_string()))?;
    let mut names: Vec<String> = csr
        .params
        .subject_alt_names
        .iter()
        .filter_map(|s| match s {
            SanType::DnsName(n) => Some(n.to_string()),
            _ => None,
        })
        .collect();
    if let Some(cn) = csr
        .params
        .distinguished_name
        .get(&DnType::CommonName)
        .and_then(dn_value)
        && !names.contains(&cn)
    {
        names.insert(0, cn);
    }
    if names.is_empty() {
        return Err(CaError::CsrWithoutName);
    }
    Ok((PublicKey::Csr(csr.public_key), names, None))
}

/// A TLS server leaf's parameters for `names` (the first is the CN), with a
/// random positive serial, which is returned too.
fn leaf_params(
    names: &[String],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<(CertificateParams, Vec<u8>), CaError> {
    let mut p = CertificateParams::new(names.to_vec())?;
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, names[0].clone());
    p.not_before = not_before;
    p.not_after = not_after;
    let serial: [u8; 16] = rand::random();
    let mut serial = serial.to_vec();
    serial[0] &= 0x7f;
    p.serial_number = Some(SerialNumber::from_slice(&serial));
    // As public CAs issue leaves: BasicConstraints critical and empty (cA
    // defaults to FALSE). rcgen's ExplicitNoCa encodes `cA: FALSE`, which DER
    // forbids for a default value and strict parsers (python-cryptography) refuse.
    p.is_ca = IsCa::NoCa;
    let mut basic_constraints =
        rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 19], vec![0x30, 0x00]);
    basic_constraints.set_criticality(true);
    p.custom_extensions.push(basic_constraints);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    Ok((p, serial))
}

fn key_pem(key: &KeyPair, format: KeyFormat) -> Result<String, CaError> {
    if format == KeyFormat::Pkcs8 {
        return Ok(key.serialize_pem());
    }
    let pkcs8 = key.serialize_der();
    let (label, der, curve) = if key.is_compatible(&rcgen::PKCS_RSA_SHA256) {
        // PrivateKeyInfo { version, algorithm, privateKey OCTET STRING (RSAPrivateKey) }
        let pkcs1 = der_take(&pkcs8, Class::Universal, Tag::Sequence)
            .and_then(|(info, _)| der_take(info, Class::Universal, Tag::Integer))
            .and_then(|(_, rest)| der_take(rest, Class::Universal, Tag::Sequence))
            .and_then(|(_, rest)| der_take(rest, Class::Universal, Tag::OctetString))
            .map(|(key, _)| key.to_vec())
            .ok_or(CaError::KeyEncoding("PKCS#1"))?;
        ("RSA PRIVATE KEY", pkcs1, None)
    } else {
        use aws_lc_rs::encoding::AsDer as _;
        use aws_lc_rs::signature::{
            ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair,
        };
        let ec = [
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            &ECDSA_P384_SHA384_ASN1_SIGNING,
        ]
        .into_iter()
        .find_map(|alg| EcdsaKeyPair::from_pkcs8(alg, &pkcs8).ok())
        .ok_or(CaError::KeyEncoding("SEC1"))?;
        let sec1 = ec
            .private_key()
            .as_der()
            .map_err(|_| CaError::KeyEncoding("SEC1"))?
            .as_ref()
            .to_vec();
        // ECPrivateKey { version, privateKey, [0] parameters (the curve's OID), ... }
        let curve = der_take(&sec1, Class::Universal, Tag::Sequence)
            .and_then(|(k, _)| der_take(k, Class::Universal, Tag::Integer))
            .and_then(|(_, rest)| der_take(rest, Class::Universal, Tag::OctetString))
            .and_then(|(_, rest)| der_take(rest, Class::ContextSpecific, Tag(0)))
            .map(|(params, _)| params.to_vec())
            .ok_or(CaError::KeyEncoding("SEC1 with named curve"))?;
        ("EC PRIVATE KEY", sec1, Some(curve))
    };
    let mut out = String::new();
    if let (KeyFormat::Sec1WithParams, Some(curve)) = (format, &curve) {
        out.push_str(&pem_text("EC PARAMETERS", curve, "\n", true));
    }
    out.push_str(&match format {
        KeyFormat::OneLine => pem_text(label, &der, " ", false),
        KeyFormat::Crlf => pem_text(label, &der, "\r\n", false),
        _ => pem_text(label, &der, "\n", true),
    });
    Ok(out)
}

/// The DER element at the front of `input` if it has `class` and `tag`: its content
/// and what follows it.
fn der_take(input: &[u8], class: Class, tag: Tag) -> Option<(&[u8], &[u8])> {
    let (rest, any) = Any::from_der(input).ok()?;
    (any.class() == class && any.tag() == tag).then_some((any.data, rest))
}

/// A PEM block with 64-column lines separated by `eol`.
fn pem_text(label: &str, der: &[u8], eol: &str, final_eol: bool) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut lines = vec![format!("-----BEGIN {label}-----")];
    lines.extend(
        b64.as_bytes()
            .chunks(64)
            .map(|l| String::from_utf8_lossy(l).into_owned()),
    );
    lines.push(format!("-----END {label}-----"));
    let mut s = lines.join(eol);
    if final_eol {
        s.push_str(eol);
    }
    s
}

enum PublicKey {
    Csr(rcgen::PublicKey),
    Generated(std::sync::Arc<KeyPair>),
}

fn dn_value(v: &rcgen::DnValue) -> Option<String> {
    match v {
        rcgen::DnValue::Utf8String(s) => Some(s.clone()),
        rcgen::DnValue::PrintableString(s) => Some(s.to_string()),
        rcgen::DnValue::Ia5String(s) => Some(s.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::PublicKeyData;
    use x509_parser::prelude::*;

    fn csr(names: &[&str], key: &KeyPair) -> String {
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("params");
        p.distinguished_name.push(DnType::CommonName, names[0]);
        p.serialize_request(key).expect("csr").pem().expect("pem")
    }

    #[test]
    fn issues_for_the_csr_key_and_names_with_chain() {
        let ca = Ca::new().expect("ca");
        let key = KeyPair::generate().expect("key");
        let now = OffsetDateTime::now_utc();
        let issued = ca
            .issue(
                Some(&csr(&["www.example.com", "alt.example.com"], &key)),
                &[],
                "RSA",
                now,
                now + ::time::Duration::days(365),
                Twist::None,
            )
            .expect("issued");
        assert!(issued.private_key_pem.is_none());
        let (_, pem) = parse_x509_pem(issued.leaf_pem.as_bytes()).expect("pem");
        let cert = pem.parse_x509().expect("x509");
        assert_eq!(cert.version(), X509Version::V3);
        assert_eq!(
            cert.public_key().raw,
            key.subject_public_key_info().as_slice()
        );
        let sans: Vec<String> = cert
            .subject_alternative_name()
            .expect("ext")
            .expect("san")
            .value
            .general_names
            .iter()
            .map(|g| g.to_string())
            .collect();
        assert_eq!(
            sans,
            ["DNSName(www.example.com)", "DNSName(alt.example.com)"]
        );
        let (_, int_pem) = parse_x509_pem(issued.chain_pem.as_bytes()).expect("pem");
        let int = int_pem.parse_x509().expect("x509");
        assert_eq!(cert.issuer(), int.subject());
        cert.verify_signature(Some(int.public_key()))
            .expect("signed by the intermediate");
    }

    #[test]
    fn generates_a_key_without_csr_and_twists_on_request() {
        let ca = Ca::new().expect("ca");
        let now = OffsetDateTime::now_utc();
        let names = vec!["a.example.com".to_owned()];
        let issued = ca
            .issue(
                None,
                &names,
                "ECC",
                now,
                now + ::time::Duration::days(30),
                Twist::None,
            )
            .expect("issued");
        let key_pem = issued.private_key_pem.expect("key returned");
        let key = KeyPair::from_pem(&key_pem).expect("key parses");
        let (_, pem) = parse_x509_pem(issued.leaf_pem.as_bytes()).expect("pem");
        assert_eq!(
            pem.parse_x509().expect("x509").public_key().raw,
            key.subject_public_key_info().as_slice()
        );

        let k = KeyPair::generate().expect("key");
        let csr_pem = csr(&["a.example.com"], &k);
        let twisted = |twist| {
            ca.issue(
                Some(&csr_pem),
                &[],
                "ECC",
                now,
                now + ::time::Duration::days(30),
                twist,
            )
            .expect("issued")
        };
        let wrong = twisted(Twist::WrongKey);
        let (_, pem) = parse_x509_pem(wrong.leaf_pem.as_bytes()).expect("pem");
        assert_ne!(
            pem.parse_x509().expect("x509").public_key().raw,
            k.subject_public_key_info().as_slice()
        );
        let expired = twisted(Twist::Expired);
        let (_, pem) = parse_x509_pem(expired.leaf_pem.as_bytes()).expect("pem");
        assert!(!pem.parse_x509().expect("x509").validity().is_valid());
        assert!(
            ca.issue(Some("not a csr"), &[], "ECC", now, now, Twist::None)
                .is_err()
        );
    }

    #[test]
    fn leaf_basic_constraints_are_critical_and_empty_as_der_requires() {
        let ca = Ca::new().expect("ca");
        let now = OffsetDateTime::now_utc();
        let issued = ca
            .issue(
                None,
                &["www.example.com".to_owned()],
                "ECC",
                now,
                now + ::time::Duration::days(30),
                Twist::None,
            )
            .expect("issued");
        let (_, pem) = parse_x509_pem(issued.leaf_pem.as_bytes()).expect("pem");
        let cert = pem.parse_x509().expect("x509");
        let bc: Vec<_> = cert
            .extensions()
            .iter()
            .filter(|e| e.oid.to_id_string() == "2.5.29.19")
            .collect();
        assert_eq!(bc.len(), 1, "one BasicConstraints");
        assert!(bc[0].critical);
        assert_eq!(bc[0].value, [0x30, 0x00], "cA FALSE left to its default");
        assert!(!cert.is_ca());
    }
}
