//! Chain signatures: each certificate of a chain must carry a valid signature by
//! the key of the certificate after it. The chain's top is the anchor: CAS sends
//! the leaf and its intermediates (the root is usually absent), and without a
//! configured root store the top is taken as given, so its own signature (a
//! root's self-signature, perhaps SHA-1) is not checked. The cryptography is
//! rustls-webpki's, on aws-lc-rs.

use rustls::pki_types::SubjectPublicKeyInfoDer;
use webpki::{ALL_VERIFICATION_ALGS, RawPublicKeyEntity};

use super::der;

/// Why a certificate does not verify against its issuer's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LinkError {
    /// The signature does not match the issuer's key.
    Invalid,
    /// Neither rustls-webpki nor this build knows the signature algorithm for
    /// that key (SHA-1, DSA, or a key too small).
    Unsupported,
    /// The DER could not be split into its signed parts.
    Malformed,
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LinkError::Invalid => "its signature does not verify with the issuer's public key",
            LinkError::Unsupported => {
                "its signature algorithm is not supported for the issuer's key (SHA-1, DSA, RSA under 2048 bits, ...)"
            }
            LinkError::Malformed => "the certificate or the issuer's public key is malformed",
        })
    }
}

/// The parts of a certificate a signature covers and carries.
struct Signed<'a> {
    /// The TBSCertificate as encoded: what was signed.
    tbs: &'a [u8],
    /// The contents of the signatureAlgorithm AlgorithmIdentifier.
    algorithm: &'a [u8],
    signature: &'a [u8],
}

fn split(cert: &[u8]) -> Option<Signed<'_>> {
    let (outer, _) = der::expect(cert, der::SEQUENCE)?;
    let (tbs, rest) = der::expect(outer.content, der::SEQUENCE)?;
    let (algorithm, rest) = der::expect(rest, der::SEQUENCE)?;
    let (bits, _) = der::expect(rest, der::BIT_STRING)?;
    let (&unused_bits, signature) = bits.content.split_first()?;
    (unused_bits == 0).then_some(Signed {
        tbs: tbs.whole,
        algorithm: algorithm.content,
        signature,
    })
}

/// The SubjectPublicKeyInfo of a certificate, as encoded.
fn spki(cert: &[u8]) -> Option<&[u8]> {
    let (outer, _) = der::expect(cert, der::SEQUENCE)?;
    let (tbs, _) = der::expect(outer.content, der::SEQUENCE)?;
    let mut fields = tbs.content;
    if fields.first() == Some(&der::CONTEXT_0) {
        fields = der::read(fields)?.1;
    }
    // serialNumber, signature, issuer, validity, subject; then the key.
    for _ in 0..5 {
        fields = der::read(fields)?.1;
    }
    der::expect(fields, der::SEQUENCE).map(|(k, _)| k.whole)
}

/// Whether the certificate `child` (DER) is signed by the key of `issuer` (DER).
pub(crate) fn signed_by(child: &[u8], issuer: &[u8]) -> Result<(), LinkError> {
    let signed = split(child).ok_or(LinkError::Malformed)?;
    let spki = SubjectPublicKeyInfoDer::from(spki(issuer).ok_or(LinkError::Malformed)?);
    let key = RawPublicKeyEntity::try_from(&spki).map_err(|_| LinkError::Malformed)?;
    let mut verdict = LinkError::Unsupported;
    // Several algorithms share a signature identifier (ECDSA with SHA-256 on P-256
    // or P-384 keys); the key's own identifier settles which one applies.
    for alg in ALL_VERIFICATION_ALGS
        .iter()
        .filter(|a| a.signature_alg_id().as_ref() == signed.algorithm)
    {
        match key.verify_signature(*alg, signed.tbs, signed.signature) {
            Ok(()) => return Ok(()),
            Err(webpki::Error::InvalidSignatureForPublicKey) => verdict = LinkError::Invalid,
            Err(_) => {}
        }
    }
    Err(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cas_sim::ca::{Ca, Twist};
    use x509_parser::pem::Pem;

    fn ders(pem: &str) -> Vec<Vec<u8>> {
        Pem::iter_from_buffer(pem.as_bytes())
            .map(|p| p.expect("pem").contents)
            .collect()
    }

    fn leaf_and_intermediate(ca: &Ca) -> (Vec<u8>, Vec<u8>) {
        let now = ::time::OffsetDateTime::now_utc();
        let i = ca
            .issue(
                None,
                &["www.example.com".to_owned()],
                "RSA",
                now,
                now + ::time::Duration::days(30),
                Twist::None,
            )
            .expect("issue");
        (ders(&i.leaf_pem).remove(0), ders(&i.chain_pem).remove(0))
    }

    #[test]
    fn a_link_verifies_only_with_the_real_issuer() {
        let ca = Ca::new().expect("ca");
        let other = Ca::new().expect("ca");
        let (leaf, int) = leaf_and_intermediate(&ca);
        let (_, forged) = leaf_and_intermediate(&other);
        let root = ders(ca.root_pem()).remove(0);
        assert_eq!(signed_by(&leaf, &int), Ok(()));
        assert_eq!(signed_by(&int, &root), Ok(()));
        assert_eq!(signed_by(&root, &root), Ok(()), "self-signed");
        assert_eq!(signed_by(&leaf, &forged), Err(LinkError::Invalid));
        assert_eq!(signed_by(&leaf, &root), Err(LinkError::Invalid));
        let mut flipped = leaf.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(signed_by(&flipped, &int), Err(LinkError::Invalid));
        // ecdsa-with-SHA256 (1.2.840.10045.4.3.2) in the outer signatureAlgorithm
        // made into an OID no one knows, of the same length.
        let oid = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
        let at = leaf
            .windows(oid.len())
            .rposition(|w| w == oid)
            .expect("the signature algorithm");
        let mut unknown = leaf.clone();
        unknown[at + oid.len() - 1] = 0x09;
        assert_eq!(signed_by(&unknown, &int), Err(LinkError::Unsupported));
        assert_eq!(signed_by(&leaf[..40], &int), Err(LinkError::Malformed));
        assert_eq!(signed_by(&leaf, b"junk"), Err(LinkError::Malformed));
    }
}
