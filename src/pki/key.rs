//! Private keys: generation, and reading every PEM form a key arrives in (PKCS#8,
//! PKCS#1 RSA, SEC1 EC with or without an `EC PARAMETERS` block, CRLF line ends,
//! all on one line), always kept and written as real PKCS#8 under `PRIVATE KEY`.
//!
//! CAS documents its keys as PKCS#1 (`BEGIN RSA PRIVATE KEY`) and SEC1 (`BEGIN EC
//! PRIVATE KEY`); nginx's `PEM_read_bio_PrivateKey` and most libraries insist that
//! a `PRIVATE KEY` block holds PKCS#8, so a key is re-encoded, never relabelled.

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::KeyPair as RsaKeyPair;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, ECDSA_P521_SHA512_ASN1_SIGNING,
    EcdsaKeyPair, EcdsaSigningAlgorithm,
};
use rcgen::{CertificateParams, DnType, KeyPair, PublicKeyData as _};
use rustls::pki_types::PrivatePkcs8KeyDer;
use sha2::{Digest, Sha256};

use super::{KeyAlgorithm, PkiError};
use crate::secret::Secret;

/// A key file larger than this is refused before parsing.
pub const MAX_KEY_BYTES: usize = 64 * 1024;

/// The curves a SEC1 or PKCS#8 EC key may use (the signing algorithm only picks
/// the curve here).
const EC_CURVES: [&EcdsaSigningAlgorithm; 3] = [
    &ECDSA_P256_SHA256_ASN1_SIGNING,
    &ECDSA_P384_SHA384_ASN1_SIGNING,
    &ECDSA_P521_SHA512_ASN1_SIGNING,
];

const SUPPORTED: &str = "RSA (2048 to 8192 bits) and ECDSA P-256, P-384, P-521 keys are supported";

/// Key material, overwritten before its memory is freed (best effort, as `Secret`).
struct Wiped(Vec<u8>);

impl Drop for Wiped {
    fn drop(&mut self) {
        self.0.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&self.0);
    }
}

fn wipe_string(s: String) {
    drop(Wiped(s.into_bytes()));
}

/// A private key with its PEM (PKCS#8) kept secret.
pub struct Key {
    pair: KeyPair,
    pem: Secret,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("spki_sha256", &self.spki_sha256())
            .finish_non_exhaustive()
    }
}

impl Key {
    /// A new key. RSA generation takes up to seconds: call it off the async
    /// runtime's workers (`spawn_blocking`).
    pub fn generate(alg: KeyAlgorithm) -> Result<Key, PkiError> {
        let gen_err = |e: rcgen::Error| PkiError::Generate(e.to_string());
        let pair = match alg {
            KeyAlgorithm::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyAlgorithm::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            KeyAlgorithm::Rsa2048 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            }
            KeyAlgorithm::Rsa3072 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_3072)
            }
            KeyAlgorithm::Rsa4096 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_4096)
            }
        }
        .map_err(gen_err)?;
        // rcgen's aws-lc-rs backend generates PKCS#8 v1; re-encoding keeps one path.
        Key::from_pkcs8(&Wiped(pair.serialize_der()))
    }

    /// Reads a private key in any PEM form listed in the module doc; the key kept
    /// (and later written) is PKCS#8 whatever form came in. Errors name the form
    /// and the reason, never the key material.
    pub fn from_pem(pem: &str) -> Result<Key, PkiError> {
        if pem.len() > MAX_KEY_BYTES {
            return Err(PkiError::BadKey(format!(
                "the key text is {} bytes; the limit is {MAX_KEY_BYTES}",
                pem.len()
            )));
        }
        let block = private_key_block(pem)?;
        let der = Wiped(block.decode()?);
        let pkcs8 = match block.label {
            // Earlier versions of cas-renewd wrote CAS's PKCS#1 / SEC1 DER under this
            // label (as `openssl pkey` does, accept it); the next install repairs it.
            "PRIVATE KEY" => reencode_pkcs8(&der.0).or_else(|e| {
                pkcs1_to_pkcs8(&der.0)
                    .or_else(|_| sec1_to_pkcs8(&der.0))
                    .map_err(|_| e)
            })?,
            "RSA PRIVATE KEY" => pkcs1_to_pkcs8(&der.0)?,
            "EC PRIVATE KEY" => sec1_to_pkcs8(&der.0)?,
            "ENCRYPTED PRIVATE KEY" => return Err(PkiError::EncryptedKey),
            other => {
                return Err(PkiError::BadKey(format!(
                    "`{other}` keys are not supported; {SUPPORTED}"
                )));
            }
        };
        Key::from_pkcs8(&pkcs8)
    }

    fn from_pkcs8(der: &Wiped) -> Result<Key, PkiError> {
        let pair = KeyPair::try_from(&PrivatePkcs8KeyDer::from(der.0.as_slice()))
            .map_err(|e| PkiError::BadKey(format!("the PKCS#8 key was refused ({e})")))?;
        Ok(Key {
            pem: Secret::new(pkcs8_pem(&der.0)),
            pair,
        })
    }

    /// The key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, 64-column lines).
    pub fn pem(&self) -> &Secret {
        &self.pem
    }

    pub fn spki_der(&self) -> Vec<u8> {
        self.pair.subject_public_key_info()
    }

    /// SHA-256 of the SubjectPublicKeyInfo, hex: how the journal and logs name a key.
    pub fn spki_sha256(&self) -> String {
        hex::encode(Sha256::digest(self.spki_der()))
    }

    /// A CSR with CN = `domain` and every name of `names` (the domain first) as a
    /// DNS subjectAltName.
    pub fn csr_pem(&self, domain: &str, names: &[String]) -> Result<String, PkiError> {
        let mut sans = vec![domain.to_owned()];
        sans.extend(names.iter().filter(|n| *n != domain).cloned());
        let mut p = CertificateParams::new(sans).map_err(|e| PkiError::Csr(e.to_string()))?;
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, domain);
        p.serialize_request(&self.pair)
            .and_then(|c| c.pem())
            .map_err(|e| PkiError::Csr(e.to_string()))
    }
}

/// A PKCS#8 key re-encoded as PKCS#8 v1 by aws-lc-rs: checks the key and drops
/// whatever v2 extras or odd encodings it came with.
fn reencode_pkcs8(der: &[u8]) -> Result<Wiped, PkiError> {
    if let Ok(k) = RsaKeyPair::from_pkcs8(der) {
        return rsa_pkcs8(&k);
    }
    if let Some(k) = EC_CURVES
        .iter()
        .find_map(|alg| EcdsaKeyPair::from_pkcs8(alg, der).ok())
    {
        return ec_pkcs8(&k);
    }
    Err(PkiError::BadKey(format!(
        "the PKCS#8 key is malformed or of an unsupported algorithm (SM2, Ed25519, DSA, ...); {SUPPORTED}"
    )))
}

fn pkcs1_to_pkcs8(der: &[u8]) -> Result<Wiped, PkiError> {
    let k = RsaKeyPair::from_der(der).map_err(|e| {
        PkiError::BadKey(format!("the PKCS#1 RSA key was refused ({e}); {SUPPORTED}"))
    })?;
    rsa_pkcs8(&k)
}

fn sec1_to_pkcs8(der: &[u8]) -> Result<Wiped, PkiError> {
    let k = EC_CURVES
        .iter()
        .find_map(|alg| EcdsaKeyPair::from_private_key_der(alg, der).ok())
        .ok_or_else(|| {
            PkiError::BadKey(format!(
                "the SEC1 EC key is malformed or on an unsupported curve; {SUPPORTED}"
            ))
        })?;
    ec_pkcs8(&k)
}

fn rsa_pkcs8(k: &RsaKeyPair) -> Result<Wiped, PkiError> {
    k.as_der()
        .map(|d| Wiped(d.as_ref().to_vec()))
        .map_err(|_| PkiError::BadKey("the RSA key could not be encoded as PKCS#8".into()))
}

fn ec_pkcs8(k: &EcdsaKeyPair) -> Result<Wiped, PkiError> {
    k.to_pkcs8v1()
        .map(|d| Wiped(d.as_ref().to_vec()))
        .map_err(|_| PkiError::BadKey("the EC key could not be encoded as PKCS#8".into()))
}

fn pkcs8_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 60);
    out.push_str("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END PRIVATE KEY-----\n");
    wipe_string(b64);
    out
}

/// One `-----BEGIN label-----` ... `-----END label-----` block.
struct Block<'a> {
    label: &'a str,
    body: &'a str,
}

impl Block<'_> {
    /// The body's DER. Line breaks (LF or CRLF) and the spaces of a key flattened
    /// onto one line are ignored.
    fn decode(&self) -> Result<Vec<u8>, PkiError> {
        use base64::Engine as _;
        if self.body.contains(':') {
            return Err(PkiError::BadKey(format!(
                "the {} block has PEM headers, which this build does not read",
                self.label
            )));
        }
        let b64: String = self
            .body
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let der = base64::engine::general_purpose::STANDARD.decode(&b64);
        wipe_string(b64);
        der.map_err(|_| PkiError::BadKey(format!("the {} block is not valid base64", self.label)))
    }
}

/// Every PEM block of `text`, found by its markers rather than by lines, so a key
/// on one line (`-----BEGIN RSA PRIVATE KEY----- MII... -----END ...-----`) reads.
fn blocks(text: &str) -> Result<Vec<Block<'_>>, PkiError> {
    const BEGIN: &str = "-----BEGIN ";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(BEGIN) {
        let after = &rest[at + BEGIN.len()..];
        let label_end = after
            .find("-----")
            .ok_or_else(|| PkiError::BadKey("a PEM BEGIN line is not closed by -----".into()))?;
        let label = &after[..label_end];
        // Labels are a few upper-case words; anything else is not PEM (and is not
        // echoed, as it could be key material).
        if label.is_empty()
            || label.len() > 40
            || !label
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b == b' ' || b.is_ascii_digit())
        {
            return Err(PkiError::BadKey(
                "a PEM BEGIN line has a malformed label".into(),
            ));
        }
        let body_and_rest = &after[label_end + 5..];
        let end = format!("-----END {label}-----");
        let body_end = body_and_rest
            .find(&end)
            .ok_or_else(|| PkiError::BadKey(format!("the {label} block has no END line")))?;
        out.push(Block {
            label,
            body: &body_and_rest[..body_end],
        });
        rest = &body_and_rest[body_end + end.len()..];
    }
    Ok(out)
}

/// The one private key block of `text`; other blocks (`EC PARAMETERS`, which
/// `openssl ecparam -genkey` writes first, or certificates) are skipped.
fn private_key_block(text: &str) -> Result<Block<'_>, PkiError> {
    let mut keys: Vec<Block<'_>> = blocks(text)?
        .into_iter()
        .filter(|b| b.label.ends_with("PRIVATE KEY"))
        .collect();
    if keys
        .iter()
        .any(|b| b.label == "ENCRYPTED PRIVATE KEY" || b.body.contains("ENCRYPTED"))
    {
        return Err(PkiError::EncryptedKey);
    }
    match keys.len() {
        0 => Err(PkiError::BadKey("no PEM PRIVATE KEY block found".into())),
        1 => Ok(keys.remove(0)),
        n => Err(PkiError::BadKey(format!(
            "{n} private keys in one file; expected one"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject as _;

    const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/pki/testdata");

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{DATA}/{name}")).expect("fixture")
    }

    fn openssl_spki(name: &str) -> Vec<u8> {
        std::fs::read(format!("{DATA}/{name}.spki.der")).expect("spki fixture")
    }

    /// The written PEM read back as strictly as nginx does: the `PRIVATE KEY` label
    /// and a PKCS#8 structure that aws-lc-rs accepts as such.
    fn assert_strict_pkcs8(k: &Key, what: &str) {
        let pem = k.pem().expose();
        assert!(
            pem.starts_with("-----BEGIN PRIVATE KEY-----\n")
                && pem.ends_with("-----END PRIVATE KEY-----\n"),
            "{what}: label"
        );
        assert!(pem.lines().all(|l| l.len() <= 64), "{what}: 64 columns");
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .unwrap_or_else(|e| panic!("{what}: not a PRIVATE KEY block: {e:?}"));
        let der = der.secret_pkcs8_der();
        let rsa = RsaKeyPair::from_pkcs8(der).is_ok();
        let ec = EC_CURVES
            .iter()
            .any(|alg| EcdsaKeyPair::from_pkcs8(alg, der).is_ok());
        assert!(rsa || ec, "{what}: aws-lc-rs reads it as PKCS#8");
        let (version, _) = super::super::der::expect(der, super::super::der::SEQUENCE)
            .and_then(|(seq, _)| super::super::der::expect(seq.content, super::super::der::INTEGER))
            .expect("PrivateKeyInfo starts with a version");
        assert_eq!(version.content, [0], "{what}: PKCS#8 v1");
    }

    #[test]
    fn every_algorithm_generates_and_round_trips() {
        for alg in [
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP384,
            KeyAlgorithm::Rsa2048,
        ] {
            let k = Key::generate(alg).expect("generate");
            assert_strict_pkcs8(&k, &format!("{alg:?}"));
            let back = Key::from_pem(k.pem().expose()).expect("parse");
            assert_eq!(back.spki_sha256(), k.spki_sha256());
            assert_eq!(back.pem().expose(), k.pem().expose(), "stable encoding");
            assert!(!format!("{k:?}").contains("PRIVATE"), "Debug hides the key");
        }
    }

    #[test]
    fn every_form_cas_may_send_is_read_and_written_as_pkcs8_with_the_same_public_key() {
        let rsa1 = fixture("rsa2048-pkcs1.pem");
        let crlf_no_final_newline = rsa1.replace('\n', "\r\n").trim_end().to_owned();
        // The shape of the GetUserCertificateDetail example: one line, spaces.
        let one_line = rsa1.lines().collect::<Vec<_>>().join(" ");
        let ec_one_line = fixture("p256-sec1-params.pem")
            .lines()
            .collect::<Vec<_>>()
            .join(" ");
        let mut cases: Vec<(&str, String, &str)> = vec![
            ("RSA PKCS#1", rsa1.clone(), "rsa2048-pkcs1"),
            ("RSA PKCS#1 CRLF", crlf_no_final_newline, "rsa2048-pkcs1"),
            ("RSA PKCS#1 one line", one_line, "rsa2048-pkcs1"),
            ("RSA PKCS#8", fixture("rsa2048-pkcs8.pem"), "rsa2048-pkcs1"),
            ("EC P-256 SEC1", fixture("p256-sec1.pem"), "p256-sec1"),
            (
                "EC P-256 SEC1 after EC PARAMETERS",
                fixture("p256-sec1-params.pem"),
                "p256-sec1-params",
            ),
            (
                "EC P-256 SEC1 params one line",
                ec_one_line,
                "p256-sec1-params",
            ),
            ("EC P-384 SEC1", fixture("p384-sec1.pem"), "p384-sec1"),
            ("EC P-384 PKCS#8", fixture("p384-pkcs8.pem"), "p384-sec1"),
        ];
        // What cas-renewd before this fix wrote: PKCS#1 / SEC1 DER labelled PKCS#8.
        let mislabelled_rsa = rsa1.replace("RSA PRIVATE KEY", "PRIVATE KEY");
        let mislabelled_ec = fixture("p256-sec1.pem").replace("EC PRIVATE KEY", "PRIVATE KEY");
        cases.push(("mislabelled PKCS#1", mislabelled_rsa, "rsa2048-pkcs1"));
        cases.push(("mislabelled SEC1", mislabelled_ec, "p256-sec1"));
        for (what, pem, spki) in cases {
            let k = Key::from_pem(&pem).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_strict_pkcs8(&k, what);
            assert_eq!(k.spki_der(), openssl_spki(spki), "{what}: SPKI = OpenSSL's");
            let again = Key::from_pem(k.pem().expose()).expect("re-read");
            assert_eq!(again.pem().expose(), k.pem().expose(), "{what}: idempotent");
        }
    }

    #[test]
    fn encrypted_unsupported_and_broken_keys_get_clear_errors_without_key_material() {
        let rsa1 = fixture("rsa2048-pkcs1.pem");
        let body_line = rsa1.lines().nth(3).expect("a base64 line").to_owned();
        for (name, want) in [
            ("p256-encrypted-pkcs8.pem", "encrypted"),
            ("rsa2048-encrypted-pkcs1.pem", "encrypted"),
            ("ed25519-pkcs8.pem", "unsupported algorithm"),
            ("sm2-pkcs8.pem", "unsupported algorithm"),
        ] {
            let e = Key::from_pem(&fixture(name)).expect_err(name).to_string();
            assert!(e.contains(want), "{name}: {e}");
        }
        let truncated = rsa1.replacen(&body_line, "", 1);
        let broken_b64 = rsa1.replacen(&body_line, &format!("*{}", &body_line[1..]), 1);
        let two = format!("{rsa1}{}", fixture("p256-sec1.pem"));
        let dsa = rsa1.replace("RSA PRIVATE KEY", "DSA PRIVATE KEY");
        for (what, text, want) in [
            (
                "truncated",
                truncated.as_str(),
                "PKCS#1 RSA key was refused",
            ),
            ("bad base64", broken_b64.as_str(), "not valid base64"),
            ("two keys", two.as_str(), "2 private keys"),
            (
                "DSA",
                dsa.as_str(),
                "`DSA PRIVATE KEY` keys are not supported",
            ),
            ("empty", "", "no PEM PRIVATE KEY block"),
            (
                "certificate",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "no PEM PRIVATE KEY block",
            ),
            (
                "no end",
                "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n",
                "no END line",
            ),
            (
                "odd label",
                "-----BEGIN MIIEvQ+/abc-----\n",
                "malformed label",
            ),
        ] {
            let e = Key::from_pem(text).expect_err(what).to_string();
            assert!(e.contains(want), "{what}: {e}");
            assert!(
                !e.contains(&body_line[..20]) && !e.contains("MII"),
                "{what}: no key material in {e}"
            );
        }
        let huge = "A".repeat(MAX_KEY_BYTES + 1);
        assert!(Key::from_pem(&huge).is_err());
    }

    #[test]
    fn ca_made_keys_come_in_the_scenario_key_format() {
        // Moved from the simulator's CA tests: it checks that this parser reads every
        // key form the simulated CAS hands out (`issuance.key_format`).
        use cas_sim::ca::{Ca, Twist};
        use cas_sim::scenario::KeyFormat;
        use x509_parser::pem::parse_x509_pem;
        let now = ::time::OffsetDateTime::now_utc();
        for (format, alg, labels) in [
            (KeyFormat::Pkcs1, "RSA", &["RSA PRIVATE KEY"][..]),
            (KeyFormat::Pkcs1, "ECC", &["EC PRIVATE KEY"]),
            (KeyFormat::Pkcs8, "RSA", &["PRIVATE KEY"]),
            (KeyFormat::Pkcs8, "ECC", &["PRIVATE KEY"]),
            (
                KeyFormat::Sec1WithParams,
                "ECC",
                &["EC PARAMETERS", "EC PRIVATE KEY"],
            ),
            (KeyFormat::Sec1WithParams, "RSA", &["RSA PRIVATE KEY"]),
            (KeyFormat::OneLine, "RSA", &["RSA PRIVATE KEY"]),
            (KeyFormat::Crlf, "ECC", &["EC PRIVATE KEY"]),
        ] {
            let ca = Ca::new().expect("ca").with_key_format(format);
            let issued = ca
                .issue(
                    None,
                    &["k.example.com".to_owned()],
                    alg,
                    now,
                    now + ::time::Duration::days(30),
                    Twist::None,
                )
                .expect("issued");
            let pem = issued.private_key_pem.expect("key");
            let found: Vec<&str> = pem
                .split("-----BEGIN ")
                .skip(1)
                .filter_map(|b| b.split("-----").next())
                .collect();
            assert_eq!(found, labels, "{format:?} {alg}");
            match format {
                KeyFormat::OneLine => assert!(!pem.contains('\n') && pem.contains("----- MII")),
                KeyFormat::Crlf => {
                    assert!(pem.contains("\r\n") && !pem.replace("\r\n", "").contains('\n'));
                    assert!(!pem.ends_with('\n'));
                }
                _ => assert!(pem.ends_with("-----\n") && !pem.contains('\r')),
            }
            let (_, leaf) = parse_x509_pem(issued.leaf_pem.as_bytes()).expect("pem");
            let key = Key::from_pem(&pem).unwrap_or_else(|e| panic!("{format:?} {alg}: {e}"));
            assert_eq!(
                key.spki_der(),
                leaf.parse_x509().expect("x509").public_key().raw,
                "{format:?} {alg}: the key is the certificate's"
            );
        }
    }
}
