//! A stand-in for a Kubernetes API server, for `examples/apiserver-ha` and the tests: TLS with a self-signed
//! certificate for `name` and `127.0.0.1`, HTTP/1.1 with one request per connection. `GET /readyz` answers
//! 200 `ok` while ready (see [`StandIn::set_ready`]) and 500 otherwise; any other path answers 200 with the
//! stand-in's name, so a client can tell which one it reached through the gateway.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A running stand-in. Stops when dropped.
pub struct StandIn {
    pub name: String,
    pub addr: SocketAddr,
    ready: Arc<AtomicBool>,
    readyz: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StandIn {
    /// Binds `addr` and serves until dropped.
    pub async fn start(name: &str, addr: SocketAddr) -> std::io::Result<StandIn> {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_string(), "127.0.0.1".to_string()])
            .map_err(std::io::Error::other)?;
        let chain = vec![cert.cert.der().clone()];
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(std::io::Error::other)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (ready, readyz) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicU64::new(0)));
        let (r, z, n) = (ready.clone(), readyz.clone(), name.to_string());
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let (acceptor, r, z, n) = (acceptor.clone(), r.clone(), z.clone(), n.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(s).await else { return };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => head.extend_from_slice(&buf[..k]),
                        }
                    }
                    let (status, body) = if head.starts_with(b"GET /readyz ") {
                        z.fetch_add(1, Ordering::Relaxed);
                        if r.load(Ordering::Relaxed) {
                            ("200 OK", "ok".to_string())
                        } else {
                            ("500 Internal Server Error", "not ready".to_string())
                        }
                    } else {
                        ("200 OK", n)
                    };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(resp.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Ok(StandIn {
            name: name.to_string(),
            addr,
            ready,
            readyz,
            task,
        })
    }

    /// Whether `/readyz` answers 200 (ready) or 500.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// `/readyz` requests answered so far.
    pub fn readyz_count(&self) -> u64 {
        self.readyz.load(Ordering::Relaxed)
    }
}
