//! The rustls side: a certificate resolver that reads the current [`CertSnapshot`] on every handshake, and the
//! one `ServerConfig` the TLS listeners use.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use super::CertSnapshot;

/// Picks the certificate for each handshake from the snapshot currently published in `source`.
///
/// Publishing a new snapshot (`source.store(..)`) takes effect on the next handshake; connections already
/// established keep the certificate they negotiated. A lookup is one `ArcSwap` load and at most two hash probes;
/// it allocates only for an SNI with uppercase letters, which rustls never passes (it lowercases SNI itself).
#[derive(Debug, Clone)]
pub struct SniResolver {
    source: Arc<ArcSwap<CertSnapshot>>,
}

// === impl SniResolver ===

impl SniResolver {
    pub fn new(source: Arc<ArcSwap<CertSnapshot>>) -> SniResolver {
        SniResolver { source }
    }

    /// The published snapshot, shared with whoever publishes new ones.
    pub fn source(&self) -> &Arc<ArcSwap<CertSnapshot>> {
        &self.source
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let snapshot = self.source.load();
        let sni = client_hello.server_name();
        let cert = snapshot.resolve_cert(sni);
        tracing::trace!(sni = sni.unwrap_or("-"), source = %cert.info.source, "certificate chosen");
        Some(cert.key.clone())
    }
}

/// The server configuration for every TLS listener: the ring provider (explicitly, whatever is installed as the
/// process default), TLS 1.3 and 1.2 only, no client certificates, ALPN `h2` then `http/1.1`.
pub fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}
