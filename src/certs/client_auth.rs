//! Client certificates per host: the TLS configurations that ask for them, picked by the ClientHello's SNI.
//!
//! A listener set's hosts without `auth-tls-*` annotations share the set's one configuration, which asks for no
//! client certificate. Each host with them gets a configuration of its own (same certificates, same resolver)
//! whose verifier asks for a certificate and checks it against the Ingress's CA (and CRL) and depth, or, for
//! `optional_no_ca`, only checks that the client holds the certificate's key. A client without a certificate
//! completes the handshake; the route's `ClientCert` filter decides (400, a redirect, or on to the backend).
//! A certificate that fails verification fails the handshake.
//!
//! These configurations never resume a session: a session made under other settings (or none) must not skip
//! the client's certificate. The connection records which settings its handshake used (their id), and a
//! request whose route needs other settings gets 421 (HTTP/2 reuse across hosts, or a connection without SNI).

use std::collections::HashMap;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoServerSessionStorage, ResolvesServerCert};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};

use crate::model::annotations::client_cert::{ClientCert, VerifyClient};
use crate::model::{Diagnostic, HostPattern, SetModel};

/// One listener set's per-host client-certificate configurations. Empty for most sets, so the accept path
/// checks `is_empty` and uses the set's one configuration without reading the ClientHello first.
#[derive(Default)]
pub struct ClientAuthConfigs {
    exact: HashMap<Box<str>, (u64, Arc<ServerConfig>)>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<Box<str>, (u64, Arc<ServerConfig>)>,
    /// Rules without a host: any other SNI, and connections without one.
    any: Option<(u64, Arc<ServerConfig>)>,
}

impl ClientAuthConfigs {
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.any.is_none()
    }

    /// The settings' id and configuration for a ClientHello's SNI: the exact host, else its one-label wildcard,
    /// else the rules without a host; `None`: the set's own configuration (no client certificate).
    pub fn lookup(&self, sni: Option<&str>) -> Option<(u64, Arc<ServerConfig>)> {
        if let Some(sni) = sni {
            let sni = sni.to_ascii_lowercase();
            let sni = sni.trim_end_matches('.');
            if let Some(c) = self.exact.get(sni) {
                return Some(c.clone());
            }
            if let Some(c) = sni.split_once('.').and_then(|(_, parent)| self.wildcard.get(parent)) {
                return Some(c.clone());
            }
        }
        self.any.clone()
    }

    /// The configurations for `set`'s hosts, sharing `resolver` (the set's certificates). A host whose Ingresses
    /// ask for different client-certificate settings keeps the first (in the translation's order) and the other
    /// Ingress gets a diagnostic: its paths answer 421, never without its settings.
    pub fn build(
        set: &SetModel,
        resolver: &Arc<dyn ResolvesServerCert>,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> ClientAuthConfigs {
        let mut out = ClientAuthConfigs::default();
        for host in &set.hosts {
            let mut chosen: Option<(u64, &ClientCert)> = None;
            for p in &host.paths {
                let Some(c) = &p.policy.client_cert else { continue };
                let id = c.tls_id();
                match chosen {
                    None => chosen = Some((id, c)),
                    Some((first, _)) if first == id => {}
                    Some(_) => diagnostics.push(Diagnostic::object(
                        p.ingress.clone(),
                        format!(
                            "host {}: its auth-tls-* settings differ from another Ingress's for the same host; requests for its paths get 421 (give both Ingresses the same settings)",
                            host.host
                        ),
                    )),
                }
            }
            let Some((id, c)) = chosen else { continue };
            let config = match config_for(c, resolver.clone()) {
                Ok(config) => config,
                Err(e) => {
                    // Translation checked the CA; a failure here leaves the host without client certificates
                    // at the TLS layer, and its routes answer 421 (fail closed).
                    tracing::warn!(host = %host.host, error = %e, "client-certificate configuration failed");
                    continue;
                }
            };
            match &host.host {
                HostPattern::Exact(h) => {
                    out.exact.insert(h.as_str().into(), (id, config));
                }
                HostPattern::Wildcard(h) => {
                    out.wildcard.insert(h.as_str().into(), (id, config));
                }
                HostPattern::Any => out.any = Some((id, config)),
            }
        }
        out
    }
}

/// A configuration like the set's (`certs::server_config`), asking for client certificates as `c` says.
fn config_for(c: &ClientCert, resolver: Arc<dyn ResolvesServerCert>) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(ClientVerifier {
        ca: match c.verify {
            VerifyClient::On | VerifyClient::Optional => {
                Some(crate::pem::client_verifier(&c.ca_pem, c.crl_pem.as_deref())?)
            }
            VerifyClient::OptionalNoCa => None,
        },
        depth: c.depth,
        provider: provider.clone(),
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// Asks for a client certificate without requiring one. With `ca` (`on`, `optional`): the certificate must
/// chain to it within `depth` (1: signed by the CA itself). Without (`optional_no_ca`): any certificate is taken
/// and the backend decides. Either way the client must prove it holds the certificate's key.
#[derive(Debug)]
struct ClientVerifier {
    ca: Option<Arc<dyn ClientCertVerifier>>,
    depth: u32,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.ca.as_ref().map_or(&[], |ca| ca.root_hint_subjects())
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let Some(ca) = &self.ca else {
            return Ok(ClientCertVerified::assertion());
        };
        if intermediates.len() >= self.depth as usize {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        }
        ca.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// What the backend is told of a verified client certificate (as ingress-nginx's `ssl-client-*` headers).
#[derive(Debug)]
pub struct PeerCert {
    /// The subject and issuer, RFC 2253 style (`CN=client,O=Example`).
    pub subject: http::HeaderValue,
    pub issuer: http::HeaderValue,
    /// The certificate as PEM, URL-encoded (`ssl-client-cert`).
    pub escaped_pem: http::HeaderValue,
}

impl PeerCert {
    /// From the client's end-entity certificate, once per connection; `None` if it does not parse (it was
    /// verified, so that does not happen with the CA verifier).
    pub fn from_der(der: &CertificateDer<'_>) -> Option<PeerCert> {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
        let dn = |name: &x509_parser::x509::X509Name<'_>| {
            // RFC 2253 lists the most specific RDN first, the reverse of the certificate's order.
            let mut parts: Vec<String> = name
                .iter_rdn()
                .map(|rdn| {
                    rdn.iter()
                        .map(|atv| {
                            let key = short_name(&atv.attr_type().to_id_string());
                            let value = atv.as_str().unwrap_or("");
                            format!("{key}={}", escape_dn(value))
                        })
                        .collect::<Vec<_>>()
                        .join("+")
                })
                .collect();
            parts.reverse();
            http::HeaderValue::from_str(&parts.join(",")).ok()
        };
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).ok()?);
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
        Some(PeerCert {
            subject: dn(cert.subject())?,
            issuer: dn(cert.issuer())?,
            escaped_pem: http::HeaderValue::from_str(&url_escape(&pem)).ok()?,
        })
    }
}

/// RFC 4514's short names for the usual attribute types; others as the dotted OID.
fn short_name(oid: &str) -> String {
    match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "emailAddress",
        other => other,
    }
    .to_string()
}

/// RFC 2253 escaping of an attribute value, then anything a header value cannot hold as `\XX`.
fn escape_dn(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i + 1 == v.chars().count() => out.push_str("\\ "),
            c if c.is_ascii_graphic() || c == ' ' => out.push(c),
            c => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:02X}"));
                }
            }
        }
    }
    out
}

/// Percent-encoding of everything but unreserved characters (nginx's `$ssl_client_escaped_cert`).
fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinguished_names_and_escapes() {
        assert_eq!(escape_dn("a,b"), "a\\,b");
        assert_eq!(escape_dn(" x "), "\\ x\\ ");
        assert_eq!(escape_dn("é"), "\\C3\\A9");
        assert_eq!(url_escape("-----BEGIN A-----\n+/="), "-----BEGIN%20A-----%0A%2B%2F%3D");
    }
}
