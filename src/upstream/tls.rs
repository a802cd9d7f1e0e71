//! TLS to backends (`backend-protocol: HTTPS` and `GRPCS`): the rustls client configuration for one upstream TLS
//! policy. Verification is off unless the Ingress names a CA (as ingress-nginx's `proxy-ssl-verify` defaults to
//! off): backends inside a cluster mostly present self-signed certificates. Signatures are checked either way, so
//! the backend must hold the key of the certificate it presents.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
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

/// What an upstream TLS client verifies the backend's certificate against.
#[derive(Debug, Clone, Copy)]
pub enum Roots<'a> {
    /// Nothing: any certificate (`proxy-ssl-verify: off`).
    Any,
    /// The CA bundle (PEM).
    Pem(&'a [u8]),
    /// The system's roots (as `rustls-native-certs` finds them; none found: every handshake fails).
    System,
}

/// A client configuration offering `alpn` and verifying against `roots`; with `alt_names`, the certificate must
/// be valid for one of them (instead of the name the connection is made to).
pub fn verifying_config(roots: Roots<'_>, alt_names: &[String], alpn: &[u8]) -> Result<ClientConfig, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut store = RootCertStore::empty();
    match roots {
        Roots::Any if alt_names.is_empty() => return client_config(None, alpn),
        Roots::Any => return Err("subject alternative names need verification".into()),
        Roots::Pem(pem) => {
            store.add_parsable_certificates(parse_ca_bundle(pem)?);
        }
        Roots::System => {
            store.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    let mut config = if alt_names.is_empty() {
        builder.with_root_certificates(store).with_no_client_auth()
    } else if store.is_empty() {
        return Err("no root certificate to verify against".into());
    } else {
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider)
            .build()
            .map_err(|e| e.to_string())?;
        let names = alt_names
            .iter()
            .map(|n| ServerName::try_from(n.clone()).map_err(|e| format!("{n:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AltNames { inner, names }))
            .with_no_client_auth()
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// Verification as webpki does it, the certificate valid for one of `names` rather than for the name connected
/// to (BackendTLSPolicy `subjectAltNames`; the SNI is still the policy's hostname).
#[derive(Debug)]
struct AltNames {
    inner: Arc<WebPkiServerVerifier>,
    names: Vec<ServerName<'static>>,
}

impl ServerCertVerifier for AltNames {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut last = rustls::Error::General("no subject alternative name to verify".into());
        for name in &self.names {
            match self
                .inner
                .verify_server_cert(end_entity, intermediates, name, ocsp, now)
            {
                Ok(v) => return Ok(v),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
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

    #[test]
    fn verifying_configs() {
        let ca = crate::certs::testing::TestCa::new();
        let pem = Roots::Pem(ca.pem.as_bytes());
        let names = vec!["a.internal".to_string()];
        assert!(verifying_config(pem, &[], b"h2").is_ok());
        assert!(verifying_config(pem, &names, b"h2").is_ok());
        // System roots: whatever the machine has (none: a config that fails every handshake, still built).
        assert!(verifying_config(Roots::System, &[], b"http/1.1").is_ok());
        // Names to verify need something to verify against.
        assert!(verifying_config(Roots::Any, &names, b"h2").is_err());
        assert!(verifying_config(Roots::Pem(b"junk"), &[], b"h2").is_err());
    }
}
