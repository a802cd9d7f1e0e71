//! TLS to backends (`backend-protocol: HTTPS` and `GRPCS`): the rustls client configuration for one upstream TLS
//! policy. Verification is off unless the Ingress names a CA (as ingress-nginx's `proxy-ssl-verify` defaults to
//! off): backends inside a cluster mostly present self-signed certificates. Signatures are checked either way, so
//! the backend must hold the key of the certificate it presents.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// Moved to [`crate::pem`]; kept here so callers of `upstream::tls::parse_ca_bundle` compile.
pub use crate::pem::parse_ca_bundle;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration offering `alpn`, verifying against `ca` (PEM) when given, else accepting any
/// certificate.
pub fn client_config(ca: Option<&[u8]>, alpn: &[u8]) -> Result<ClientConfig, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut config = match ca {
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(parse_ca_bundle(pem)?);
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// `proxy-ssl-verify: off`: any certificate is accepted; handshake signatures are still verified. (Also what the
/// test clients use to look at the certificate a listener presents.)
#[derive(Debug)]
pub struct NoVerify(pub Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_bundles() {
        let ca = crate::certs::testing::TestCa::new();
        assert_eq!(parse_ca_bundle(ca.pem.as_bytes()).unwrap().len(), 1);
        assert!(parse_ca_bundle(b"").unwrap_err().contains("no certificate"));
        assert!(client_config(Some(ca.pem.as_bytes()), b"h2").is_ok());
        let c = client_config(None, b"http/1.1").unwrap();
        assert_eq!(c.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
