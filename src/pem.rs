//! PEM bundles of CA certificates (an Ingress's backend CA Secret, `ca.crt`): parsed and checked to be usable
//! trust anchors. Imports nothing from the crate, so the pure model can check a bundle while translating and the
//! upstream client can trust it.

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// The CA certificates in a PEM bundle; an error when there is none or one does not parse.
pub fn parse_ca_bundle(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("ca.crt is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("ca.crt holds no certificate".into());
    }
    let mut roots = RootCertStore::empty();
    let (_, bad) = roots.add_parsable_certificates(certs.iter().cloned());
    if bad > 0 {
        return Err(format!("ca.crt: {bad} certificate(s) are not usable trust anchors"));
    }
    Ok(certs)
}

/// A verifier of client certificates chaining to the CAs of `ca_pem`, refusing those revoked by `crl_pem` (the
/// CRLs of a `ca.crl`), and accepting a client without a certificate (the route decides whether one is
/// required, so it can answer 400 or redirect instead of failing the handshake).
pub fn client_verifier(
    ca_pem: &[u8],
    crl_pem: Option<&[u8]>,
) -> Result<std::sync::Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(parse_ca_bundle(ca_pem)?);
    let crls = match crl_pem {
        None => Vec::new(),
        Some(pem) => {
            let crls: Vec<rustls_pki_types::CertificateRevocationListDer<'static>> =
                rustls_pki_types::CertificateRevocationListDer::pem_slice_iter(pem)
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("ca.crl is not PEM: {e}"))?;
            if crls.is_empty() {
                return Err("ca.crl holds no revocation list".into());
            }
            crls
        }
    };
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::server::WebPkiClientVerifier::builder_with_provider(std::sync::Arc::new(roots), provider)
        .with_crls(crls)
        .allow_unauthenticated()
        .build()
        .map_err(|e| format!("ca.crt/ca.crl: {e}"))
}

/// A non-empty field of a Secret, from `stringData` (as written in a manifest) or `data`.
pub fn secret_field<'a>(secret: &'a k8s_openapi::api::core::v1::Secret, name: &str) -> Option<&'a [u8]> {
    let from_string = secret
        .string_data
        .as_ref()
        .and_then(|m| m.get(name))
        .map(|s| s.as_bytes());
    let from_data = secret.data.as_ref().and_then(|m| m.get(name)).map(|b| b.0.as_slice());
    from_string.or(from_data).filter(|v| !v.is_empty())
}
