//! Active health checks of layer-4 backends: every interval, a TCP connect to each endpoint, or an HTTPS
//! `GET path` (HAProxy's `option httpchk` over `check-ssl`; certificate verified against a CA, or not at all
//! as with `verify none`) that must answer 2xx. Results go through the same fall/rise bookkeeping as the HTTP
//! backends' checks (`upstream::health::update`), so a down endpoint is skipped by every balancer.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::upstream::{ActiveCheck, Backend};

/// What to probe and how often.
#[derive(Clone)]
pub struct Check {
    pub interval: Duration,
    pub timeout: Duration,
    pub fall: u32,
    pub rise: u32,
    /// `Some`: HTTPS GET of this path with this client configuration; `None`: TCP connect.
    pub https: Option<(String, Arc<rustls::ClientConfig>)>,
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Check")
            .field("interval", &self.interval)
            .field("fall", &self.fall)
            .field("rise", &self.rise)
            .field("path", &self.https.as_ref().map(|h| &h.0))
            .finish_non_exhaustive()
    }
}

/// Probes `backend`'s endpoints until it is dropped or `shutdown` turns true.
pub async fn run(backend: Weak<Backend>, check: Check, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let marks = ActiveCheck {
        http_path: None,
        interval: check.interval,
        timeout: check.timeout,
        fall: check.fall,
        rise: check.rise,
    };
    loop {
        tokio::select! {
            () = tokio::time::sleep(check.interval) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let Some(b) = backend.upgrade() else { return };
        let probes = b.endpoints.iter().map(|e| probe(e.addr, &check));
        let results = futures::future::join_all(probes).await;
        for (e, ok) in b.endpoints.iter().zip(results) {
            crate::upstream::health::update(&b, e, &marks, ok);
        }
    }
}

/// One probe, bounded by the check's timeout.
pub async fn probe(addr: SocketAddr, check: &Check) -> bool {
    let attempt = async {
        let tcp = TcpStream::connect(addr).await.ok()?;
        let Some((path, config)) = &check.https else {
            return Some(true);
        };
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let mut tls = TlsConnector::from(config.clone()).connect(name, tcp).await.ok()?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: portico-health-check\r\nConnection: close\r\n\r\n"
        );
        tls.write_all(req.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        tls.read_exact(&mut head).await.ok()?;
        // "HTTP/1.1 200"
        let code = std::str::from_utf8(&head[9..12]).ok()?.parse::<u16>().ok()?;
        Some((200..300).contains(&code))
    };
    matches!(tokio::time::timeout(check.timeout, attempt).await, Ok(Some(true)))
}
