//! Listener loops: accept, (for TLS) handshake with the listener set's current certificates, serve HTTP/1.1 and
//! HTTP/2 (ALPN on TLS, prior knowledge on cleartext) with hyper-util's auto builder, and shut down gracefully:
//! stop accepting, let in-flight requests finish up to a deadline. A connection without a request in flight for
//! the listener set's keep-alive timeout is closed ([`IdleIo`]).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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
        let info = ConnInfo {
            set,
            peer,
            client: peer,
            local,
            tls: None,
        };
        let (proxy, builder, watcher) = (proxy.clone(), builder.clone(), graceful.watcher());
        let open = proxy.metrics().open_connection(set);
        tokio::spawn(async move {
            let _permit = permit;
            let _open = open;
            let Some((stream, info)) = accept_proxy_header(stream, info, &proxy).await else {
                return;
            };
            match transport {
                Transport::Plain => serve_conn(stream, info, proxy, builder, watcher).await,
                Transport::Tls => serve_tls(stream, info, proxy, builder, watcher).await,
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
        Ok(Ok(ProxyHeader::Proxied { source, .. })) => info.client = source,
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
    watcher: Watcher,
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
    let keep_alive = proxy.set_options(info.set).keep_alive_timeout;
    let info = Arc::new(info);
    let activity = Arc::new(Activity::default());
    let io = IdleIo::new(stream, activity.clone(), keep_alive);
    let svc = service_fn(move |req| {
        let (proxy, info, activity) = (proxy.clone(), info.clone(), activity.clone());
        activity.active.fetch_add(1, Ordering::Relaxed);
        let guard = ActiveGuard(activity);
        async move {
            let resp = proxy.handle(&info, req).await;
            if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                // The connection becomes a tunnel: it is idle only when its two ends say so.
                guard.0.upgraded.store(true, Ordering::Relaxed);
            }
            Ok::<_, Infallible>(resp.map(|inner| Tracked { inner, _guard: guard }))
        }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        tracing::trace!(%peer, error = %e, "connection ended with an error");
    }
}

// === keep-alive idle timeout ===

/// Requests of one connection that have not finished (their response body is not done).
#[derive(Debug, Default)]
struct Activity {
    active: AtomicU32,
    upgraded: AtomicBool,
}

/// Ends a request's activity when the response body is done (or dropped).
struct ActiveGuard(Arc<Activity>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
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

/// The connection's stream, reading as closed once no request has been active and no byte has moved for the
/// keep-alive timeout. HTTP/1.1 then closes the idle connection; HTTP/2 closes a connection without streams.
/// One timer per connection, re-armed lazily: a read or write only records the time.
struct IdleIo<S> {
    inner: S,
    activity: Arc<Activity>,
    idle: Duration,
    last: tokio::time::Instant,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl<S> IdleIo<S> {
    fn new(inner: S, activity: Arc<Activity>, idle: Duration) -> Self {
        let now = tokio::time::Instant::now();
        Self {
            inner,
            activity,
            idle,
            last: now,
            sleep: Box::pin(tokio::time::sleep_until(now + idle)),
        }
    }

    /// Ready when the connection has been idle for the timeout.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.activity.upgraded.load(Ordering::Relaxed) {
                return Poll::Pending;
            }
            let deadline = self.last + self.idle;
            if self.sleep.deadline() != deadline {
                self.sleep.as_mut().reset(deadline);
            }
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if self.activity.active.load(Ordering::Relaxed) == 0 {
                return Poll::Ready(());
            }
            // A request is still running: the idle time starts over from now.
            self.last = tokio::time::Instant::now();
        }
    }
}

use std::future::Future as _;

impl<S: AsyncRead + Unpin> AsyncRead for IdleIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.last = tokio::time::Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.poll_idle(cx) {
                // Reads as end of stream: the HTTP layer closes the connection as if the client had.
                Poll::Ready(()) => Poll::Ready(Ok(())),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.last = tokio::time::Instant::now();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.last = tokio::time::Instant::now();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
