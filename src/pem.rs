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
