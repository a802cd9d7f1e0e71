//! The rustls side: a certificate resolver that reads the current [`CertSnapshot`] on every handshake, and the
//! one `ServerConfig` the TLS listeners use.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use super::CertSnapshot;

/// Picks the certificate for each handshake from a [`CertSnapshot`].
///
/// - [`SniResolver::new`] reads the snapshot currently published in an `ArcSwap` on every handshake:
///   publishing a new one (`source.store(..)`) takes effect on the next handshake, and connections already
///   established keep the certificate they negotiated.
/// - [`SniResolver::pinned`] always reads one snapshot. Build one `server_config` per published snapshot and
///   keep them together: a connection that loads the pair once can then look up exactly the certificate its
///   handshake presented (`snapshot.resolve_cert(conn.server_name())`) to answer 421 Misdirected Request, with
///   no window in which a swap makes the two disagree.
///
/// A lookup is at most one `ArcSwap` load and two hash probes; it allocates only for an SNI with uppercase
/// letters, which rustls never passes (it lowercases SNI itself).
#[derive(Debug, Clone)]
pub struct SniResolver {
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    Live(Arc<ArcSwap<CertSnapshot>>),
    Pinned(Arc<CertSnapshot>),
}

// === impl SniResolver ===

impl SniResolver {
    /// Follows whatever snapshot `source` holds at each handshake.
    pub fn new(source: Arc<ArcSwap<CertSnapshot>>) -> SniResolver {
        SniResolver {
            source: Source::Live(source),
        }
    }

    /// Always serves from `snapshot`.
    pub fn pinned(snapshot: Arc<CertSnapshot>) -> SniResolver {
        SniResolver {
            source: Source::Pinned(snapshot),
        }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = client_hello.server_name();
        let pick = |snapshot: &CertSnapshot| {
            let cert = snapshot.resolve_cert(sni);
            tracing::trace!(sni = sni.unwrap_or("-"), source = %cert.info.source, "certificate chosen");
            cert.key.clone()
        };
        Some(match &self.source {
            Source::Live(source) => pick(&source.load()),
            Source::Pinned(snapshot) => pick(snapshot),
        })
    }
}

/// The server configuration for every TLS listener: the ring provider (explicitly, whatever is installed as the
/// process default), TLS 1.3 and 1.2 only, no client certificates, ALPN `h2` then `http/1.1`.
pub fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> Arc<ServerConfig> {
    server_config_with_sessions(resolver, None)
}

/// As [`server_config`], sharing one session cache across configurations, so resumption survives a republish.
pub fn server_config_with_sessions(
    resolver: Arc<dyn ResolvesServerCert>,
    sessions: Option<Arc<dyn rustls::server::StoresServerSessions>>,
) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if let Some(s) = sessions {
        config.session_storage = s;
    }
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use rustls::pki_types::{CertificateDer, ServerName};
    use rustls::{ClientConfig, ProtocolVersion, RootCertStore};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::client::TlsStream;
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;
    use crate::certs::testing::{accept_any_client, TestCa};
    use crate::certs::LoadedCert;

    /// A TLS echo server on 127.0.0.1 using `server_config(SniResolver)`.
    async fn echo_server(source: Arc<ArcSwap<CertSnapshot>>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(server_config(Arc::new(SniResolver::new(source))));
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = [0u8; 1024];
                    while let Ok(n @ 1..) = tls.read(&mut buf).await {
                        if tls.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// A client that trusts `ca`, offers h2 and http/1.1, and never resumes (so every handshake shows the
    /// certificate the server picks now).
    fn trusting_client(ca: &TestCa) -> Arc<ClientConfig> {
        ca.client_config(&[b"h2", b"http/1.1"])
    }

    async fn connect(config: Arc<ClientConfig>, addr: SocketAddr, sni: &str) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from(sni.to_owned()).unwrap();
        TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .unwrap_or_else(|e| panic!("handshake for {sni}: {e}"))
    }

    fn presented(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
        tls.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
    }

    fn leaf_der(cert: &LoadedCert) -> CertificateDer<'static> {
        cert.chain()[0].clone()
    }

    async fn echo(tls: &mut TlsStream<TcpStream>, msg: &[u8]) {
        tls.write_all(msg).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        tls.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, msg);
    }

    #[tokio::test]
    async fn presents_the_certificate_for_each_sni() {
        let ca = TestCa::new();
        let exact = ca.leaf(&["a.example.test"], "exact");
        let wild = ca.leaf(&["*.example.test"], "wild");
        let default = ca.leaf(&["default.invalid"], "default");
        let snapshot = CertSnapshot::new(
            default.clone(),
            [
                ("a.example.test".to_owned(), exact.clone()),
                ("*.example.test".to_owned(), wild.clone()),
            ],
        );
        let addr = echo_server(Arc::new(ArcSwap::from_pointee(snapshot))).await;
        let client = trusting_client(&ca);

        let mut tls = connect(client.clone(), addr, "a.example.test").await;
        assert_eq!(presented(&tls), leaf_der(&exact));
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        echo(&mut tls, b"hello").await;

        let tls = connect(client.clone(), addr, "b.example.test").await;
        assert_eq!(presented(&tls), leaf_der(&wild));

        // An uppercase / trailing-dot name from a client still finds the exact certificate.
        let tls = connect(client, addr, "A.Example.Test.").await;
        assert_eq!(presented(&tls), leaf_der(&exact));

        for (sni, send_sni) in [
            ("unknown.test", true),
            ("x.b.example.test", true),
            ("a.example.test", false),
        ] {
            let tls = connect(accept_any_client(send_sni), addr, sni).await;
            assert_eq!(presented(&tls), leaf_der(&default), "sni {sni} sent: {send_sni}");
        }
    }

    #[tokio::test]
    async fn negotiates_http1_and_tls12_when_that_is_all_the_client_has() {
        let ca = TestCa::new();
        let exact = ca.leaf(&["a.example.test"], "exact");
        let addr = echo_server(Arc::new(ArcSwap::from_pointee(CertSnapshot::only_default(exact)))).await;

        let mut roots = RootCertStore::empty();
        roots.add(ca.der.clone()).unwrap();
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut tls = connect(Arc::new(config), addr, "a.example.test").await;
        assert_eq!(tls.get_ref().1.protocol_version(), Some(ProtocolVersion::TLSv1_2));
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        echo(&mut tls, b"ok").await;

        let tls = connect(trusting_client(&ca), addr, "a.example.test").await;
        assert_eq!(tls.get_ref().1.protocol_version(), Some(ProtocolVersion::TLSv1_3));
    }

    #[tokio::test]
    async fn a_new_snapshot_applies_to_the_next_handshake_only() {
        let ca = TestCa::new();
        let old = ca.leaf(&["a.example.test"], "old");
        let new = ca.leaf(&["a.example.test"], "new");
        let default = ca.leaf(&["default.invalid"], "default");
        let source = Arc::new(ArcSwap::from_pointee(CertSnapshot::new(
            default.clone(),
            [("a.example.test".to_owned(), old.clone())],
        )));
        let addr = echo_server(source.clone()).await;
        let client = trusting_client(&ca);

        let mut before = connect(client.clone(), addr, "a.example.test").await;
        assert_eq!(presented(&before), leaf_der(&old));
        echo(&mut before, b"one").await;

        source.store(Arc::new(CertSnapshot::new(
            default,
            [("a.example.test".to_owned(), new.clone())],
        )));

        let mut after = connect(client, addr, "a.example.test").await;
        assert_eq!(presented(&after), leaf_der(&new));
        echo(&mut after, b"two").await;

        // The connection opened before the swap carries on with its certificate.
        echo(&mut before, b"three").await;
        assert_eq!(presented(&before), leaf_der(&old));
    }

    #[tokio::test]
    async fn a_pinned_snapshot_tells_the_connection_which_certificate_it_presented() {
        let ca = TestCa::new();
        let exact = ca.leaf(&["a.example.test"], "exact");
        let wild = ca.leaf(&["*.example.test"], "wild");
        let snapshot = Arc::new(CertSnapshot::new(
            ca.leaf(&["default.invalid"], "default"),
            [
                ("a.example.test".to_owned(), exact.clone()),
                ("*.example.test".to_owned(), wild.clone()),
            ],
        ));
        // What the proxy would publish: the snapshot and the config built on it, swapped together.
        let config = server_config(Arc::new(SniResolver::pinned(snapshot.clone())));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut handles = Vec::new();
            for _ in 0..2 {
                let (tcp, _) = listener.accept().await.unwrap();
                let tls = TlsAcceptor::from(config.clone()).accept(tcp).await.unwrap();
                let handle = snapshot.resolve_cert(tls.get_ref().1.server_name()).clone();
                handles.push((leaf_der(&handle), handle));
            }
            handles
        });

        let client = trusting_client(&ca);
        let first = connect(client.clone(), addr, "a.example.test").await;
        let second = connect(client, addr, "b.example.test").await;
        let handles = server.await.unwrap();

        assert_eq!(handles[0].0, presented(&first));
        assert_eq!(handles[1].0, presented(&second));
        let (on_a, on_b) = (&handles[0].1, &handles[1].1);
        assert!(on_a.covers("a.example.test"));
        assert!(
            !on_a.covers("b.example.test"),
            "a request for b on the a connection gets 421"
        );
        assert!(on_b.covers("b.example.test") && on_b.covers("c.example.test"));
        assert!(!on_b.covers("example.test"));
        assert_eq!(handles[0].0, leaf_der(&exact));
        assert_eq!(handles[1].0, leaf_der(&wild));
    }
}
