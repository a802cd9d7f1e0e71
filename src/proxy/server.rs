//! Listener loops: accept, (for TLS) handshake with the listener set's current certificates, serve HTTP/1.1 and
//! HTTP/2 (ALPN on TLS, prior knowledge on cleartext) with hyper-util's auto builder, and shut down gracefully:
//! stop accepting, let in-flight requests finish up to a deadline. A connection without a request in flight for
//! the listener set's keep-alive timeout is shut down gracefully too (HTTP/2: GOAWAY).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::proxy_protocol::{read_header, ProxyHeader};
use super::{ConnInfo, Proxy, ProxyBody, TlsConn};
use crate::cidr::Cidr;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a proxy may take to send its PROXY protocol header.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

pub fn http_builder(header_read_timeout: Duration) -> Builder<TokioExecutor> {
    let mut b = Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
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
    let builder = Arc::new(http_builder(proxy.set_options(set).header_read_timeout));
    let graceful = GracefulShutdown::new();
    // A permit per open connection, taken before accepting: at the limit, clients wait in the accept queue.
    let limit = proxy
        .set_options(set)
        .max_connections
        .map(|n| Arc::new(tokio::sync::Semaphore::new(n)));
    loop {
        let permit = match &limit {
            None => None,
            Some(sem) => tokio::select! {
                p = sem.clone().acquire_owned() => p.ok(),
                _ = shutdown.wait_for(|s| *s) => break,
            },
        };
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
        let info = ConnInfo::new(set, peer, local);
        let (proxy, builder, watcher) = (proxy.clone(), builder.clone(), graceful.watcher());
        let conn_shutdown = shutdown.clone();
        let open = proxy.metrics().open_connection(set);
        tokio::spawn(async move {
            let _permit = permit;
            let _open = open;
            let Some((stream, info)) = accept_proxy_header(stream, info, &proxy).await else {
                return;
            };
            match transport {
                Transport::Plain => serve_conn(stream, info, proxy, builder, (watcher, conn_shutdown)).await,
                Transport::Tls => serve_tls(stream, info, proxy, builder, (watcher, conn_shutdown)).await,
            }
        });
    }
    drop(listener);
    tracing::info!(%local, "listener closed; draining connections");
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(%local, "grace period over with connections still open");
    }
}

/// On listener sets with the PROXY protocol: only trusted peers, a well-formed header in time, else the
/// connection is closed. The header's source becomes the connection's client.
async fn accept_proxy_header(
    mut stream: TcpStream,
    mut info: ConnInfo,
    proxy: &Proxy,
) -> Option<(TcpStream, ConnInfo)> {
    let opts = proxy.set_options(info.set);
    if !opts.proxy_protocol {
        return Some((stream, info));
    }
    if !Cidr::any_contains(&opts.trusted_proxies, info.peer.ip()) {
        tracing::debug!(peer = %info.peer, "PROXY protocol from an untrusted peer; closing");
        return None;
    }
    match tokio::time::timeout(PROXY_HEADER_TIMEOUT, read_header(&mut stream)).await {
        Ok(Ok(ProxyHeader::Proxied { source, .. })) => info.set_client(source),
        Ok(Ok(ProxyHeader::Local)) => {}
        Ok(Err(e)) => {
            tracing::debug!(peer = %info.peer, error = %e, "bad PROXY header; closing");
            return None;
        }
        Err(_) => {
            tracing::debug!(peer = %info.peer, "no PROXY header in time; closing");
            return None;
        }
    }
    Some((stream, info))
}

async fn serve_tls(
    stream: TcpStream,
    mut info: ConnInfo,
    proxy: Arc<Proxy>,
    builder: Arc<Builder<TokioExecutor>>,
    watcher: (Watcher, watch::Receiver<bool>),
) {
    // The certificates current at accept time serve the whole connection.
    let Some(tls) = proxy.tls_for(info.set) else {
        tracing::warn!(local = %info.local, "no TLS material for this listener set; closing");
        return;
    };
    let acceptor = TlsAcceptor::from(tls.config.clone());
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(s)) => {
            proxy.metrics().tls_handshake(info.set, true);
            s
        }
        Ok(Err(e)) => {
            proxy.metrics().tls_handshake(info.set, false);
            tracing::debug!(peer = %info.peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            proxy.metrics().tls_handshake(info.set, false);
            tracing::debug!(peer = %info.peer, "TLS handshake timed out");
            return;
        }
    };
    let session = stream.get_ref().1;
    let presented = tls.certs.resolve_cert(session.server_name()).clone();
    info.tls = Some(TlsConn {
        presented,
        certs: tls.certs.clone(),
        version: match session.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "TLS",
        },
        sni: session.server_name().map(Arc::from),
    });
    serve_conn(stream, info, proxy, builder, watcher).await;
}

/// Serves one connection until it ends. On shutdown (`watcher.1` turning true) or after the keep-alive timeout
/// without a request in flight, the connection is shut down gracefully: requests in flight finish, HTTP/1.1
/// closes, HTTP/2 sends GOAWAY. The watcher is held until the connection ended, so the listener's grace period
/// waits for it.
async fn serve_conn<S>(
    stream: S,
    info: ConnInfo,
    proxy: Arc<Proxy>,
    builder: Arc<Builder<TokioExecutor>>,
    (watcher, mut shutdown): (Watcher, watch::Receiver<bool>),
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = info.peer;
    let keep_alive = proxy.set_options(info.set).keep_alive_timeout;
    let info = Arc::new(info);
    let activity = Arc::new(Activity::new());
    let svc = {
        let activity = activity.clone();
        service_fn(move |req| {
            let (proxy, info) = (proxy.clone(), info.clone());
            let guard = Activity::start(&activity);
            // Boxed: hyper keeps the service future inside the connection's future, so inline its full size would
            // be copied into every spawned connection task and moved with it.
            Box::pin(async move {
                let resp = proxy.handle(&info, req).await;
                Ok::<_, Infallible>(resp.map(|inner| Tracked { inner, _guard: guard }))
            })
        })
    };
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
        .into_owned();
    let mut conn = std::pin::pin!(conn);
    let idle = tokio::time::sleep(keep_alive);
    let mut idle = std::pin::pin!(idle);
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::trace!(%peer, error = %e, "connection ended with an error");
                }
                break;
            }
            _ = shutdown.wait_for(|s| *s), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = idle.as_mut(), if !closing => match activity.idle_deadline(keep_alive) {
                Some(at) if at <= tokio::time::Instant::now() => {
                    tracing::trace!(%peer, "keep-alive timeout; closing the idle connection");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                Some(at) => idle.as_mut().reset(at),
                // A request is running: look again a timeout from now.
                None => idle.as_mut().reset(tokio::time::Instant::now() + keep_alive),
            },
        }
    }
    drop(watcher);
}

// === keep-alive idle timeout ===

/// The requests of one connection that have not finished (their response body is not done), and since when
/// there have been none.
#[derive(Debug)]
struct Activity {
    active: AtomicU32,
    base: tokio::time::Instant,
    /// Milliseconds after `base` when the last request finished.
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            active: AtomicU32::new(0),
            base: tokio::time::Instant::now(),
            idle_since_ms: AtomicU64::new(0),
        }
    }

    fn start(this: &Arc<Self>) -> ActiveGuard {
        this.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(this.clone())
    }

    /// When the connection will have been idle for `timeout`; `None` while a request is running.
    fn idle_deadline(&self, timeout: Duration) -> Option<tokio::time::Instant> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(self.base + Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed)) + timeout)
    }
}

/// Ends a request's activity when its response body is done (or dropped).
struct ActiveGuard(Arc<Activity>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let a = &self.0;
        a.idle_since_ms
            .store(a.base.elapsed().as_millis() as u64, Ordering::Relaxed);
        a.active.fetch_sub(1, Ordering::Release);
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request active on the connection until it is done.
    struct Tracked {
        #[pin]
        inner: ProxyBody,
        _guard: ActiveGuard,
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = <ProxyBody as Body>::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
