//! After a reload: a TLS handshake with SNI to see which certificate is served,
//! compared with what is on disk.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot connect to {addr}: {detail}")]
    Connect { addr: String, detail: String },
    #[error("TLS handshake with {addr} (SNI {sni}) failed: {detail}")]
    Handshake {
        addr: String,
        sni: String,
        detail: String,
    },
    #[error("{addr} sent no certificate")]
    NoCertificate { addr: String },
}

/// Accepts any certificate: trust is not the question here, identity with the
/// file on disk is. Handshake signatures are still checked.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The DER of the leaf that `addr` serves for `sni`.
pub async fn served_leaf(addr: &str, sni: &str, timeout: Duration) -> Result<Vec<u8>, VerifyError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| VerifyError::Handshake {
            addr: addr.into(),
            sni: sni.into(),
            detail: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    let name = ServerName::try_from(sni.to_owned()).map_err(|e| VerifyError::Handshake {
        addr: addr.into(),
        sni: sni.into(),
        detail: e.to_string(),
    })?;
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| VerifyError::Connect {
                addr: addr.into(),
                detail: e.to_string(),
            })?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| VerifyError::Handshake {
                addr: addr.into(),
                sni: sni.into(),
                detail: e.to_string(),
            })?;
        let (_, conn) = tls.get_ref();
        conn.peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
            .ok_or_else(|| VerifyError::NoCertificate { addr: addr.into() })
    };
    tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| VerifyError::Connect {
            addr: addr.into(),
            detail: format!("timed out after {timeout:?}"),
        })?
}
