//! Listener loops: accept, (for TLS) handshake with the listener set's current certificates, serve HTTP/1.1 and
//! HTTP/2 (ALPN on TLS, prior knowledge on cleartext) with hyper-util's auto builder, and shut down gracefully:
//! stop accepting, let in-flight requests finish up to a deadline.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::{ConnInfo, Proxy, TlsConn};

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub fn http_builder() -> Builder<TokioExecutor> {
    let mut b = Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    b.http2().timer(TokioTimer::new()).max_concurrent_streams(256);
    b
}

/// Plain HTTP or TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Plain,
    Tls,
}

/// Serves `listener` for listener set `set` until `shutdown` turns true, then waits up to `grace` for open
/// connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    set: usize,
    transport: Transport,
    proxy: Arc<Proxy>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "listener has no local address");
            return;
        }
    };
    let builder = Arc::new(http_builder());
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and similar: back off briefly rather than spin.
                tracing::warn!(%local, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let mut info = ConnInfo {
            set,
            peer,
            local,
            tls: None,
        };
        let (proxy, builder, watcher) = (proxy.clone(), builder.clone(), graceful.watcher());
        match transport {
            Transport::Plain => {
                tokio::spawn(serve_conn(stream, info, proxy, builder, watcher));
            }
            Transport::Tls => {
                tokio::spawn(async move {
                    // The certificates current at accept time serve the whole connection.
                    let Some(tls) = proxy.tls_for(set) else {
                        tracing::warn!(%local, "no TLS material for this listener set; closing");
                        return;
                    };
                    let acceptor = TlsAcceptor::from(tls.config.clone());
                    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let presented = tls.certs.resolve_cert(stream.get_ref().1.server_name()).clone();
                    info.tls = Some(TlsConn {
                        presented,
                        certs: tls.certs.clone(),
                    });
                    serve_conn(stream, info, proxy, builder, watcher).await;
                });
            }
        }
    }
    drop(listener);
    tracing::info!(%local, "listener closed; draining connections");
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(%local, "grace period over with connections still open");
    }
}

async fn serve_conn<S>(
    stream: S,
    info: ConnInfo,
    proxy: Arc<Proxy>,
    builder: Arc<Builder<TokioExecutor>>,
    watcher: Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = info.peer;
    let info = Arc::new(info);
    let svc = service_fn(move |req| {
        let (proxy, info) = (proxy.clone(), info.clone());
        async move { Ok::<_, Infallible>(proxy.handle(&info, req).await) }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        tracing::trace!(%peer, error = %e, "connection ended with an error");
    }
}
