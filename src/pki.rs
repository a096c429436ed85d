//! Keys, CSRs and certificate checks: keys in every form CAS sends them (kept as
//! PKCS#8), CSRs, and parsing, ordering and signature checks of issued PEM chains.

pub(crate) mod der;
mod key;
mod signature;

use sha2::{Digest, Sha256};
use x509_parser::prelude::*;

pub use key::{Key, MAX_KEY_BYTES};

/// Key algorithms a certificate can be issued for; the serde names are the
/// configuration's (`key.algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum KeyAlgorithm {
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    #[serde(rename = "rsa-3072")]
    Rsa3072,
    #[serde(rename = "rsa-4096")]
    Rsa4096,
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    #[serde(rename = "ecdsa-p384")]
    EcdsaP384,
}

impl KeyAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::Rsa2048 => "rsa-2048",
            KeyAlgorithm::Rsa3072 => "rsa-3072",
            KeyAlgorithm::Rsa4096 => "rsa-4096",
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
            KeyAlgorithm::EcdsaP384 => "ecdsa-p384",
        }
    }
}

/// Which key a certificate gets: the algorithm, and whether a renewal keeps the
/// current key instead of making a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub algorithm: KeyAlgorithm,
    pub reuse: bool,
}

impl Default for KeySpec {
    /// ECDSA P-256, a new key each renewal: small, fast and accepted everywhere.
    fn default() -> Self {
        KeySpec {
            algorithm: KeyAlgorithm::EcdsaP256,
            reuse: false,
        }
    }
}

/// A chain larger than this is refused before parsing.
pub const MAX_CHAIN_BYTES: usize = 64 * 1024;
/// More certificates than this in one chain is refused.
pub const MAX_CHAIN_CERTS: usize = 10;
/// Clock skew tolerated when checking a certificate's validity window.
const SKEW_SECONDS: i64 = 300;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("key generation failed: {0}")]
    Generate(String),
    #[error("private key is not a PEM key this build can read: {0}")]
    BadKey(String),
    #[error(
        "the private key is encrypted; cas-renewd needs it unencrypted (decrypt it with `openssl pkey`)"
    )]
    EncryptedKey,
    #[error("CSR generation failed: {0}")]
    Csr(String),
    #[error("certificate chain is not valid PEM/X.509: {0}")]
    BadChain(String),
    #[error("certificate chain has no certificate")]
    EmptyChain,
    #[error("certificate chain is {0} bytes; the limit is {MAX_CHAIN_BYTES}")]
    ChainTooLarge(usize),
    #[error("certificate chain has {0} certificates; the limit is {MAX_CHAIN_CERTS}")]
    TooManyCerts(usize),
    #[error(
        "the certificate's public key is not ours (expected SPKI sha256 {expected}, got {got})"
    )]
    WrongKey { expected: String, got: String },
    #[error("the certificate does not cover {domain} (it names {names})")]
    WrongName { domain: String, names: String },
    #[error("the certificate is not valid now (valid {not_before} to {not_after})")]
    NotValidNow {
        not_before: String,
        not_after: String,
    },
    #[error(
        "the certificate expires {new} which is not later than the installed one ({installed})"
    )]
    NotNewer { new: String, installed: String },
    #[error("the chain is out of order and cannot be put in order: {0}")]
    ChainOrder(String),
    #[error("the certificate \"{0}\" is self-issued (its issuer is itself): no CA issued it")]
    SelfIssued(String),
    #[error(
        "the chain does not verify: certificate \"{subject}\" is not signed by the next certificate \"{issuer}\": {reason}"
    )]
    BadSignature {
        subject: String,
        issuer: String,
        reason: String,
    },
}

/// What the checks need to know of one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub der: Vec<u8>,
    pub subject: String,
    pub issuer: String,
    pub serial_hex: String,
    pub not_before: i64,
    pub not_after: i64,
    pub dns_names: Vec<String>,
    pub spki_sha256: String,
    /// `RSA`, `EC`, or the key algorithm's OID.
    pub key_type: String,
    /// SHA-256 of the DER, upper-case hex (as CAS shows `Sha2`).
    pub sha256: String,
}

impl CertInfo {
    pub fn not_after_rfc3339(&self) -> String {
        ts(self.not_after)
    }
}

fn ts(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| secs.to_string())
}

fn info(der: &[u8]) -> Result<CertInfo, PkiError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| PkiError::BadChain(e.to_string()))?;
    let mut dns_names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|g| match g {
                    GeneralName::DNSName(n) => Some(n.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if dns_names.is_empty()
        && let Some(cn) = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
    {
        dns_names.push(cn.to_ascii_lowercase());
    }
    Ok(CertInfo {
        der: der.to_vec(),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial_hex: cert.raw_serial_as_string().replace(':', ""),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        dns_names,
        spki_sha256: hex::encode(Sha256::digest(cert.public_key().raw)),
        key_type: match cert
            .public_key()
            .algorithm
            .algorithm
            .to_id_string()
            .as_str()
        {
            "1.2.840.113549.1.1.1" => "RSA".to_owned(),
            "1.2.840.10045.2.1" => "EC".to_owned(),
            other => other.to_owned(),
        },
        sha256: hex::encode_upper(Sha256::digest(der)),
    })
}

/// A parsed chain, leaf first.
#[derive(Debug, Clone)]
pub struct Chain {
    pub leaf: CertInfo,
    pub intermediates: Vec<CertInfo>,
}

fn pem_block(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

impl Chain {
    /// Parses every certificate of `pem` and puts them in order: the leaf (the one
    /// that issued none of the others) first, then each issuer after its subject.
    /// Each certificate must be signed by the next; the top one is the anchor (see
    /// `signature`). A certificate that is not part of that one chain is refused.
    pub fn parse(pem: &str) -> Result<Chain, PkiError> {
        if pem.len() > MAX_CHAIN_BYTES {
            return Err(PkiError::ChainTooLarge(pem.len()));
        }
        let mut certs = Vec::new();
        for block in Pem::iter_from_buffer(pem.as_bytes()) {
            let block = block.map_err(|e| PkiError::BadChain(e.to_string()))?;
            if block.label != "CERTIFICATE" {
                continue;
            }
            certs.push(info(&block.contents)?);
            if certs.len() > MAX_CHAIN_CERTS {
                return Err(PkiError::TooManyCerts(certs.len()));
            }
        }
        if certs.is_empty() {
            return Err(PkiError::EmptyChain);
        }
        let leaf_idx = certs
            .iter()
            .position(|c| {
                !certs
                    .iter()
                    .any(|o| o.issuer == c.subject && o.der != c.der)
            })
            .ok_or_else(|| PkiError::ChainOrder("every certificate issues another".into()))?;
        let mut rest = certs;
        let leaf = rest.remove(leaf_idx);
        let mut ordered: Vec<CertInfo> = Vec::new();
        loop {
            let child = ordered.last().unwrap_or(&leaf);
            if ordered.last().is_some_and(|c| c.subject == c.issuer) {
                break;
            }
            // Among certificates with the issuer's name, the one whose key signed
            // the child; a name match alone is taken only to be refused below.
            let named: Vec<usize> = (0..rest.len())
                .filter(|&i| rest[i].subject == child.issuer)
                .collect();
            let Some(&first) = named.first() else {
                break;
            };
            let pick = named
                .iter()
                .copied()
                .find(|&i| signature::signed_by(&child.der, &rest[i].der).is_ok())
                .unwrap_or(first);
            ordered.push(rest.remove(pick));
        }
        if !rest.is_empty() {
            return Err(PkiError::ChainOrder(format!(
                "{} certificate(s) do not belong to the leaf's chain",
                rest.len()
            )));
        }
        // The top is the anchor; every certificate below it must verify.
        let mut child = &leaf;
        for issuer in &ordered {
            signature::signed_by(&child.der, &issuer.der).map_err(|e| PkiError::BadSignature {
                subject: child.subject.clone(),
                issuer: issuer.subject.clone(),
                reason: e.to_string(),
            })?;
            child = issuer;
        }
        Ok(Chain {
            leaf,
            intermediates: ordered,
        })
    }

    pub fn leaf_pem(&self) -> String {
        pem_block(&self.leaf.der)
    }

    pub fn chain_pem(&self) -> String {
        self.intermediates
            .iter()
            .map(|c| pem_block(&c.der))
            .collect()
    }

    pub fn fullchain_pem(&self) -> String {
        let mut s = self.leaf_pem();
        s.push_str(&self.chain_pem());
        s
    }
}

/// Whether a certificate naming `names` covers `domain` (exactly, or through a
/// one-label wildcard).
pub fn names_cover(names: &[String], domain: &str) -> bool {
    let domain = domain.to_ascii_lowercase();
    names.iter().any(|n| {
        *n == domain
            || n.strip_prefix("*.").is_some_and(|base| {
                domain
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && label != "*" && rest == base)
            })
    })
}

/// What an issued chain must satisfy before it replaces the installed files.
pub struct Expectations<'a> {
    /// SHA-256 of the SubjectPublicKeyInfo the leaf must carry.
    pub spki_sha256: &'a str,
    pub domain: &'a str,
    /// Unix seconds.
    pub now: i64,
    /// The installed certificate's expiry, if any (Unix seconds).
    pub installed_not_after: Option<i64>,
}

/// Checks the leaf of `chain` against `e`. The chain is already leaf-first.
pub fn check(chain: &Chain, e: &Expectations<'_>) -> Result<(), PkiError> {
    let leaf = &chain.leaf;
    // A bundle whose top is the anchor would otherwise accept a leaf that vouches
    // for itself: installing it is an outage, whatever key it carries.
    if leaf.subject == leaf.issuer {
        return Err(PkiError::SelfIssued(leaf.subject.clone()));
    }
    if leaf.spki_sha256 != e.spki_sha256 {
        return Err(PkiError::WrongKey {
            expected: e.spki_sha256.to_owned(),
            got: leaf.spki_sha256.clone(),
        });
    }
    if !names_cover(&leaf.dns_names, e.domain) {
        return Err(PkiError::WrongName {
            domain: e.domain.to_owned(),
            names: leaf.dns_names.join(", "),
        });
    }
    if e.now + SKEW_SECONDS < leaf.not_before || e.now >= leaf.not_after {
        return Err(PkiError::NotValidNow {
            not_before: ts(leaf.not_before),
            not_after: ts(leaf.not_after),
        });
    }
    if let Some(installed) = e.installed_not_after
        && leaf.not_after <= installed
    {
        return Err(PkiError::NotNewer {
            new: ts(leaf.not_after),
            installed: ts(installed),
        });
    }
    Ok(())
}

/// The leaf of a PEM file on disk (the first certificate in it).
pub fn read_leaf(pem: &str) -> Result<CertInfo, PkiError> {
    let block = Pem::iter_from_buffer(pem.as_bytes())
        .next()
        .ok_or(PkiError::EmptyChain)?
        .map_err(|e| PkiError::BadChain(e.to_string()))?;
    info(&block.contents)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cas_sim::ca::{Ca, Twist};

    fn issue(key: &Key, domain: &str, twist: Twist, days: i64) -> String {
        issue_by(&Ca::new().expect("ca"), key, domain, twist, days)
    }

    fn issue_by(ca: &Ca, key: &Key, domain: &str, twist: Twist, days: i64) -> String {
        let now = ::time::OffsetDateTime::now_utc();
        let i = ca
            .issue(
                Some(&key.csr_pem(domain, &[]).expect("csr")),
                &[],
                "ECC",
                now - ::time::Duration::hours(1),
                now + ::time::Duration::days(days),
                twist,
            )
            .expect("issue");
        format!("{}{}", i.leaf_pem, i.chain_pem)
    }

    fn good_now_minus_days(d: i64) -> i64 {
        chrono::Utc::now().timestamp() - d * 86_400
    }

    fn expect<'a>(key_sha: &'a str, domain: &'a str) -> Expectations<'a> {
        Expectations {
            spki_sha256: key_sha,
            domain,
            now: chrono::Utc::now().timestamp(),
            installed_not_after: None,
        }
    }

    #[test]
    fn a_good_certificate_passes_and_each_bad_one_is_named() {
        let key = Key::generate(KeyAlgorithm::EcdsaP256).expect("key");
        let sha = key.spki_sha256();
        let good = Chain::parse(&issue(&key, "www.example.com", Twist::None, 90)).expect("parse");
        check(&good, &expect(&sha, "www.example.com")).expect("passes");
        assert_eq!(good.intermediates.len(), 1);

        let wrong_key =
            Chain::parse(&issue(&key, "www.example.com", Twist::WrongKey, 90)).expect("parse");
        assert!(matches!(
            check(&wrong_key, &expect(&sha, "www.example.com")),
            Err(PkiError::WrongKey { .. })
        ));
        let wrong_name =
            Chain::parse(&issue(&key, "www.example.com", Twist::WrongName, 90)).expect("parse");
        assert!(matches!(
            check(&wrong_name, &expect(&sha, "www.example.com")),
            Err(PkiError::WrongName { .. })
        ));
        let expired =
            Chain::parse(&issue(&key, "www.example.com", Twist::Expired, 90)).expect("parse");
        assert!(matches!(
            check(&expired, &expect(&sha, "www.example.com")),
            Err(PkiError::NotValidNow { .. })
        ));
        let older = Expectations {
            installed_not_after: Some(good.leaf.not_after + 1),
            ..expect(&sha, "www.example.com")
        };
        assert!(matches!(
            check(&good, &older),
            Err(PkiError::NotNewer { .. })
        ));
    }

    #[test]
    fn a_self_issued_leaf_for_our_key_and_name_is_refused() {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let key = Key::from_pem(&pair.serialize_pem()).expect("our key");
        let params =
            rcgen::CertificateParams::new(vec!["www.example.com".to_owned()]).expect("params");
        let cert = params.self_signed(&pair).expect("self-signed");
        let chain = Chain::parse(&cert.pem()).expect("a one-certificate bundle parses");
        assert!(matches!(
            check(&chain, &expect(&key.spki_sha256(), "www.example.com")),
            Err(PkiError::SelfIssued(_))
        ));
    }

    #[test]
    fn misordered_chains_are_put_in_order_and_junk_is_refused() {
        let key = Key::generate(KeyAlgorithm::EcdsaP256).expect("key");
        let sha = key.spki_sha256();
        let pem = issue(&key, "www.example.com", Twist::None, 90);
        let blocks: Vec<&str> = pem.split_inclusive("-----END CERTIFICATE-----\n").collect();
        let reversed = format!("{}{}", blocks[1], blocks[0]);
        let c = Chain::parse(&reversed).expect("reordered");
        assert_eq!(c.leaf.spki_sha256, key.spki_sha256());
        assert!(c.fullchain_pem().starts_with(&c.leaf_pem()));
        assert!(matches!(Chain::parse(""), Err(PkiError::EmptyChain)));
        assert!(
            Chain::parse("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err()
        );
        assert!(matches!(
            Chain::parse(&"x".repeat(MAX_CHAIN_BYTES + 1)),
            Err(PkiError::ChainTooLarge(_))
        ));
        let leaf_only = blocks[0].repeat(MAX_CHAIN_CERTS + 1);
        assert!(matches!(
            Chain::parse(&leaf_only),
            Err(PkiError::TooManyCerts(_))
        ));
        let not_yet = Expectations {
            now: good_now_minus_days(2),
            ..expect(&sha, "www.example.com")
        };
        let chain = Chain::parse(&pem).expect("parse");
        assert!(
            matches!(check(&chain, &not_yet), Err(PkiError::NotValidNow { .. })),
            "not yet valid"
        );
        let other = issue(&key, "other.example.com", Twist::None, 90);
        assert!(matches!(
            Chain::parse(&format!("{pem}{other}")),
            Err(PkiError::ChainOrder(_))
        ));
    }

    #[test]
    fn a_forged_intermediate_is_refused_and_names_the_certificate() {
        let key = Key::generate(KeyAlgorithm::EcdsaP256).expect("key");
        let ca = Ca::new().expect("ca");
        // Same names as `ca`'s intermediate and root, other keys.
        let forger = Ca::new().expect("ca");
        let good = issue_by(&ca, &key, "www.example.com", Twist::None, 90);
        let forged_chain = issue_by(&forger, &key, "www.example.com", Twist::None, 90);
        let split = |pem: &str| -> Vec<String> {
            pem.split_inclusive("-----END CERTIFICATE-----\n")
                .map(str::to_owned)
                .collect()
        };
        let (leaf, int) = (split(&good)[0].clone(), split(&good)[1].clone());
        let forged_int = split(&forged_chain)[1].clone();

        let c = Chain::parse(&good).expect("a valid leaf + intermediate passes");
        assert_eq!(c.intermediates.len(), 1);
        let with_root = Chain::parse(&format!("{good}{}", ca.root_pem())).expect("with its root");
        assert_eq!(with_root.intermediates.len(), 2);

        for bundle in [format!("{leaf}{forged_int}"), format!("{forged_int}{leaf}")] {
            let e = Chain::parse(&bundle).expect_err("forged intermediate");
            assert!(
                matches!(&e, PkiError::BadSignature { subject, .. } if subject.contains("www.example.com")),
                "{e:?}"
            );
            let msg = e.to_string();
            assert!(
                msg.contains("www.example.com")
                    && msg.contains("intermediate CA")
                    && msg.contains("does not verify"),
                "{msg}"
            );
        }
        // A forged root above a real intermediate: the intermediate is named.
        let e = Chain::parse(&format!("{good}{}", forger.root_pem())).expect_err("forged root");
        assert!(
            matches!(&e, PkiError::BadSignature { subject, .. } if subject.contains("intermediate CA")),
            "{e:?}"
        );
        // Real and forged intermediates together: the real one is chosen whatever
        // the order, and the forged one is junk.
        for bundle in [
            format!("{leaf}{forged_int}{int}"),
            format!("{leaf}{int}{forged_int}"),
        ] {
            assert!(
                matches!(Chain::parse(&bundle), Err(PkiError::ChainOrder(_))),
                "extra certificate refused"
            );
        }
    }

    #[test]
    fn wildcards_cover_one_label() {
        let n = vec!["*.example.com".to_owned()];
        assert!(names_cover(&n, "www.example.com"));
        assert!(names_cover(&n, "*.example.com"));
        assert!(!names_cover(&n, "a.b.example.com"));
        assert!(!names_cover(&n, "example.com"));
        assert!(names_cover(
            &["www.example.com".to_owned()],
            "WWW.example.com"
        ));
    }
}
