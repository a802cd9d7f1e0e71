//! Listener loops: accept, (for TLS) handshake with the listener set's current certificates, serve HTTP/1.1 and
//! HTTP/2 (ALPN on TLS, prior knowledge on cleartext, told apart by the first bytes), and shut down gracefully:
//! stop accepting, let in-flight requests finish up to a deadline. A connection without a request in flight for
//! the listener set's keep-alive timeout is shut down gracefully too (HTTP/2: GOAWAY), and an HTTP/1.1 request
//! whose head does not arrive within the header-read timeout (counted from its first byte, or from the accept for
//! the first request) ends its connection. Both deadlines share one timer per connection, which is not touched per
//! request.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::h1::{self, Ended};
use super::headers::HopCache;
use super::proxy_protocol::{read_header, ProxyHeader};
use super::{ClientBody, ConnInfo, Proxy, ProxyBody, TlsConn};
use crate::cidr::Cidr;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a proxy may take to send its PROXY protocol header.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The HTTP/1.1 and HTTP/2 connection builders of a listener.
pub struct Builders {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

impl Builders {
    pub fn new() -> Self {
        let mut h1 = http1::Builder::new();
        // The header-read timeout is kept by `serve_conn`, not by hyper: hyper's arms a timer for every request,
        // and runs it while a keep-alive connection waits for its next request, so idle connections would close at
        // the header-read timeout instead of the keep-alive timeout.
        h1.header_read_timeout(None).keep_alive(true);
        // One header budget for every parser (crate::http1::MAX_HEAD): a head still incomplete at that size is
        // answered 431 by hyper as by the own parser (hyper's default is about 400 KB).
        h1.max_buf_size(crate::http1::MAX_HEAD);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        // HTTP/2 counts 32 bytes per field on top of name and value, so a cookie split in crumbs (as browsers send
        // it) would be over a list size equal to the budget while the same cookie over HTTP/1.1 is not. The
        // transport limit is left above the budget, and the budget counted as HTTP/1.1 would
        // (`headers::over_budget`).
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(256)
            .max_header_list_size(4 * crate::http1::MAX_HEAD as u32);
        Self { h1, h2 }
    }
}

impl Default for Builders {
    fn default() -> Self {
        Self::new()
    }
}

/// How a connection's HTTP version is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    H1,
    H2,
    /// Cleartext, or TLS without ALPN: HTTP/2 with prior knowledge starts with its connection preface, anything
    /// else is HTTP/1.x.
    Sniff,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads a connection's first bytes until they are, or cannot be, HTTP/2's connection preface. Returns what was
/// read (it is handed to the HTTP codec first) and whether it is HTTP/2. One read for an HTTP/1.x request, which
/// usually arrives whole.
async fn sniff<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<(BytesMut, bool)> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let k = buf.len().min(H2_PREFACE.len());
        if buf[..k] != H2_PREFACE[..k] {
            return Ok((buf, false));
        }
        if buf.len() >= H2_PREFACE.len() {
            return Ok((buf, true));
        }
        if buf.len() == buf.capacity() {
            buf.reserve(H2_PREFACE.len());
        }
    }
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
    let builder = Arc::new(Builders::new());
    // The last client address's header value, reused while connections keep coming from it (as they do from a
    // load balancer in front): rendering an address is most of what a connection costs before its first byte.
    let mut hop_cache = HopCache::new(local.port());
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
        let info = ConnInfo::with_hop(set, peer, local, hop_cache.get(peer.ip()));
        let (proxy, builder, watcher) = (proxy.clone(), builder.clone(), graceful.watcher());
        let conn_shutdown = shutdown.clone();
        let open = (proxy.metrics().open_connection(set), super::memory::Counted::open());
        // Boxed before spawning, one future per transport: a connection's future is large (a TLS one the
        // largest), and tokio would otherwise copy all of it into the task and again when it completes.
        match transport {
            Transport::Plain => tokio::spawn(Box::pin(async move {
                let _permit = permit;
                let _open = open;
                let Some((stream, info)) = accept_proxy_header(stream, info, &proxy).await else {
                    return;
                };
                serve_conn(stream, info, proxy, builder, Version::Sniff, (watcher, conn_shutdown)).await
            })),
            Transport::Tls => tokio::spawn(Box::pin(async move {
                let _permit = permit;
                let _open = open;
                let Some((stream, info)) = accept_proxy_header(stream, info, &proxy).await else {
                    return;
                };
                serve_tls(stream, info, proxy, builder, (watcher, conn_shutdown)).await
            })),
        };
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
    info: ConnInfo,
    proxy: Arc<Proxy>,
    builder: Arc<Builders>,
    watcher: (Watcher, watch::Receiver<bool>),
) {
    // The certificates and layer-4 routes current at accept time serve the whole connection (one load).
    let (tls, passthrough) = {
        let snap = proxy.snapshot.load();
        (
            snap.tls.get(info.set).cloned().flatten(),
            snap.l4.passthrough(info.set).cloned(),
        )
    };
    // A set without passthrough routes goes straight to the handshake: nothing is read ahead.
    let Some(passthrough) = passthrough else {
        return terminate(stream, tls, info, proxy, builder, watcher).await;
    };
    let mut stream = stream;
    let (prefix, hello) = match crate::l4::conn::read_hello(&mut stream, crate::l4::conn::HELLO_TIMEOUT).await {
        Ok(read) => read,
        Err(e) => {
            proxy.metrics().tls_handshake(info.set, false);
            tracing::debug!(peer = %info.peer, error = %e, "no usable ClientHello; closing");
            return;
        }
    };
    use crate::l4::table::Verdict;
    let verdict = match hello.sni.as_deref() {
        Some(sni) => passthrough.verdict(sni),
        None => passthrough.without_sni(),
    };
    let route = match verdict {
        Verdict::Pass(route) => Some(route.clone()),
        Verdict::Close => {
            tracing::debug!(peer = %info.peer, sni = ?hello.sni, "server name not served on this Gateway socket; closing");
            return;
        }
        Verdict::Terminate | Verdict::Miss => None,
    };
    let ingress_rules = matches!(verdict, Verdict::Miss);
    drop(passthrough);
    if let Some(route) = route {
        let peer = crate::l4::conn::Peer {
            client: info.client,
            local: info.local,
        };
        // The watcher is held until the splice ends: a shutdown waits for it up to the grace period.
        let _watcher = watcher;
        Box::pin(crate::l4::conn::splice(
            stream,
            prefix,
            route,
            peer,
            hello.sni.as_deref(),
        ))
        .await;
        return;
    }
    // Not passed through: terminated here when the set has something for the name (or the client sent none,
    // then routed by Host as on any TLS listener); otherwise closed, as no route could answer.
    if let Some(sni) = hello.sni.as_deref().filter(|_| ingress_rules) {
        let served = proxy
            .snapshot
            .load()
            .sets
            .get(info.set)
            .is_some_and(|t| t.serves_host(sni));
        if !served {
            tracing::debug!(peer = %info.peer, sni, "server name neither passed through nor served; closing");
            return;
        }
    }
    let stream = crate::l4::conn::Prefixed::new(prefix, stream);
    Box::pin(terminate(stream, tls, info, proxy, builder, watcher)).await;
}

/// The TLS handshake with the set's certificates, then HTTP.
async fn terminate<S>(
    stream: S,
    tls: Option<crate::certs::SetTls>,
    mut info: ConnInfo,
    proxy: Arc<Proxy>,
    builder: Arc<Builders>,
    watcher: (Watcher, watch::Receiver<bool>),
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(tls) = tls else {
        tracing::warn!(local = %info.local, "no TLS material for this listener set; closing");
        return;
    };
    let handshake = async {
        if tls.client_auth.is_empty() {
            return TlsAcceptor::from(tls.config.clone())
                .accept(stream)
                .await
                .map(|s| (s, 0));
        }
        // Some host asks for client certificates: read the ClientHello, then pick that host's settings.
        let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
        let (id, config) = tls
            .client_auth
            .lookup(start.client_hello().server_name())
            .unwrap_or_else(|| (0, tls.config.clone()));
        start.into_stream(config).await.map(|s| (s, id))
    };
    let (stream, client_auth) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
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
    let client_cert = match (client_auth, session.peer_certificates().and_then(|c| c.first())) {
        (0, _) | (_, None) => None,
        (_, Some(leaf)) => crate::certs::client_auth::PeerCert::from_der(leaf).map(Arc::new),
    };
    info.tls = Some(TlsConn {
        presented,
        certs: tls.certs.clone(),
        version: match session.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "TLS",
        },
        sni: session.server_name().map(Arc::from),
        client_auth,
        client_cert,
    });
    // ALPN settles the version; without it, the first bytes do.
    let version = match session.alpn_protocol() {
        Some(b"h2") => Version::H2,
        Some(b"http/1.1") => Version::H1,
        _ => Version::Sniff,
    };
    serve_conn(stream, info, proxy, builder, version, watcher).await;
}

/// Serves one connection until it ends. On shutdown (`watcher.1` turning true) or after the keep-alive timeout
/// without a request in flight, the connection is shut down gracefully: requests in flight finish, HTTP/1.1
/// closes, HTTP/2 sends GOAWAY. An HTTP/1.1 request head that takes longer than the header-read timeout closes
/// the connection at once. The watcher is held until the connection ended, so the listener's grace period waits
/// for it.
async fn serve_conn<S>(
    mut stream: S,
    info: ConnInfo,
    proxy: Arc<Proxy>,
    builders: Arc<Builders>,
    version: Version,
    (watcher, mut shutdown): (Watcher, watch::Receiver<bool>),
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = info.peer;
    let opts = proxy.set_options(info.set);
    let limits = Limits {
        keep_alive: opts.keep_alive_timeout,
        header_read: opts.header_read_timeout,
    };
    let timer = tokio::time::sleep(limits.first_check());
    let mut timer = std::pin::pin!(timer);
    let (prefix, h2) = match version {
        Version::H1 => (BytesMut::new(), false),
        Version::H2 => (BytesMut::new(), true),
        Version::Sniff => tokio::select! {
            r = sniff(&mut stream) => match r {
                Ok(sniffed) => sniffed,
                Err(e) => {
                    tracing::trace!(%peer, error = %e, "connection closed before a request");
                    return;
                }
            },
            _ = timer.as_mut() => {
                tracing::debug!(%peer, "nothing received within the header-read timeout; closing");
                return;
            }
            _ = shutdown.wait_for(|s| *s) => return,
        },
    };
    let activity = Arc::new(Activity::new());
    // HTTP/1.1 is served by the gateway's own codec until a request needs hyper's.
    let prefix = if h2 {
        activity.http2();
        prefix
    } else {
        let conn = h1::Conn {
            proxy: &proxy,
            info: &info,
            activity: &activity,
            limits: &limits,
        };
        match h1::serve(&mut stream, prefix, conn, timer.as_mut(), &mut shutdown).await {
            Ended::Closed => return,
            Ended::HandOver(rest) => rest,
        }
    };
    let info = Arc::new(info);
    let svc = {
        let activity = activity.clone();
        service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let (proxy, info) = (proxy.clone(), info.clone());
            let guard = Activity::start(&activity);
            // Boxed: hyper keeps the service future inside the connection's future, so inline its full size would
            // be copied into every spawned connection task and moved with it.
            Box::pin(async move {
                let mut req = req;
                if req.version() == http::Version::HTTP_2 {
                    if super::headers::over_budget(req.method(), req.uri(), req.headers()) {
                        tracing::debug!(peer = %info.peer, "HTTP/2 request over the header budget");
                        let resp = super::error::ProxyError::HeadersTooLarge.response();
                        return Ok(resp.map(|inner| Tracked { inner, _guard: guard }));
                    }
                    super::headers::join_cookie_crumbs(req.headers_mut());
                }
                let resp = proxy.handle(&info, req.map(ClientBody::Hyper)).await;
                Ok::<_, Infallible>(resp.map(|inner| Tracked { inner, _guard: guard }))
            })
        })
    };
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
        prefix,
    });
    // The connection until it ends; on shutdown or the keep-alive timeout it is shut down gracefully, a request
    // head that is too slow ends it at once.
    macro_rules! drive {
        ($conn:ident) => {{
            let mut closing = false;
            loop {
                tokio::select! {
                    r = $conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::trace!(%peer, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    _ = shutdown.wait_for(|s| *s), if !closing => {
                        $conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    _ = timer.as_mut(), if !closing => match activity.check(tokio::time::Instant::now(), &limits) {
                        Check::HeadTooSlow => {
                            tracing::debug!(%peer, "request head not received within the header-read timeout; closing");
                            break;
                        }
                        Check::Idle => {
                            tracing::trace!(%peer, "keep-alive timeout; closing the idle connection");
                            $conn.as_mut().graceful_shutdown();
                            closing = true;
                        }
                        Check::Later(at) => timer.as_mut().reset(at),
                    },
                }
            }
        }};
    }
    if h2 {
        // Boxed: HTTP/2's connection state is large, and inline it would size every connection's task.
        let mut conn = Box::pin(builders.h2.serve_connection(io, svc));
        drive!(conn);
    } else {
        let mut conn = std::pin::pin!(builders.h1.serve_connection(io, svc).with_upgrades());
        drive!(conn);
    }
    drop(watcher);
}

/// A connection's two deadlines.
pub(super) struct Limits {
    keep_alive: Duration,
    header_read: Duration,
}

impl Limits {
    /// The first request's head is due within the header-read timeout of the accept.
    fn first_check(&self) -> Duration {
        self.keep_alive.min(self.header_read)
    }
}

/// What the connection's timer found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Check {
    /// An HTTP/1.1 request head has been arriving for longer than the header-read timeout.
    HeadTooSlow,
    /// No request for the keep-alive timeout.
    Idle,
    /// Nothing due: look again then.
    Later(tokio::time::Instant),
}

/// The connection's stream, first replaying what was read to tell its HTTP version, and noting when the bytes of
/// an HTTP/1.1 request head start to arrive (the first bytes read while no request is in flight).
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
    prefix: BytesMut,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let this = &mut *self;
            let n = buf.remaining().min(this.prefix.len());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                this.prefix = BytesMut::new();
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_arrived();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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

// === keep-alive idle timeout ===

/// The requests of one connection that have not finished (their response body is not done), since when there
/// have been none, and since when a request head has been arriving.
#[derive(Debug)]
pub(super) struct Activity {
    active: AtomicU32,
    base: tokio::time::Instant,
    /// Milliseconds after `base` when the last request finished.
    idle_since_ms: AtomicU64,
    /// Milliseconds after `base`, plus one, when the bytes of the next request head started to arrive (0: none
    /// arriving). Starts at 1: the first request is due within the header-read timeout of the accept.
    head_since_ms: AtomicU64,
    /// HTTP/2: there are no request heads to time (streams have their own limits).
    h2: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            active: AtomicU32::new(0),
            base: tokio::time::Instant::now(),
            idle_since_ms: AtomicU64::new(0),
            head_since_ms: AtomicU64::new(1),
            h2: AtomicBool::new(false),
        }
    }

    fn start(this: &Arc<Self>) -> ActiveGuard {
        this.enter();
        ActiveGuard(this.clone())
    }

    /// A request is in flight until the returned guard drops.
    pub(super) fn begin(&self) -> Active<'_> {
        self.enter();
        Active(self)
    }

    /// A request started: no head is arriving any more, one more in flight (undone by [`Activity::end`]).
    fn enter(&self) {
        self.head_since_ms.store(0, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    fn end(&self) {
        self.idle_since_ms
            .store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.active.fetch_sub(1, Ordering::Release);
    }

    fn http2(&self) {
        self.h2.store(true, Ordering::Relaxed);
        self.head_since_ms.store(0, Ordering::Relaxed);
    }

    /// Bytes were read: with no request in flight, they are the start of the next request's head.
    pub(super) fn bytes_arrived(&self) {
        if self.active.load(Ordering::Relaxed) == 0
            && self.head_since_ms.load(Ordering::Relaxed) == 0
            && !self.h2.load(Ordering::Relaxed)
        {
            self.head_since_ms
                .store(self.base.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
        }
    }

    fn at(&self, ms: u64) -> tokio::time::Instant {
        self.base + Duration::from_millis(ms)
    }

    /// What is due at `now`. Nothing is re-armed per request: when the timer fires it finds the earliest live
    /// deadline; a head that started after the last look is caught because the timer never sleeps longer than
    /// the header-read timeout.
    pub(super) fn check(&self, now: tokio::time::Instant, limits: &Limits) -> Check {
        if self.active.load(Ordering::Acquire) > 0 {
            return Check::Later(now + limits.first_check());
        }
        let head = self.head_since_ms.load(Ordering::Relaxed);
        if head != 0 {
            let due = self.at(head - 1) + limits.header_read;
            return if now >= due {
                Check::HeadTooSlow
            } else {
                Check::Later(due)
            };
        }
        let idle = self.at(self.idle_since_ms.load(Ordering::Relaxed)) + limits.keep_alive;
        if now >= idle {
            Check::Idle
        } else {
            Check::Later(idle.min(now + limits.header_read))
        }
    }
}

/// Ends a request's activity when its response body is done (or dropped).
struct ActiveGuard(Arc<Activity>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// A request in flight on a connection served by the gateway's own HTTP/1.1 codec.
pub(super) struct Active<'a>(&'a Activity);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.end();
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn the_first_bytes_tell_http2_prior_knowledge_from_http1() {
        // HTTP/1.1 whose method shares the preface's first letter: decided on the first read.
        let (mut client, mut server) = tokio::io::duplex(4096);
        client.write_all(b"PUT / HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
        let (read, h2) = sniff(&mut server).await.unwrap();
        assert!(!h2);
        assert_eq!(&read[..], b"PUT / HTTP/1.1\r\nhost: a\r\n\r\n");
        // The preface arriving in pieces: read until it is whole.
        let (mut client, mut server) = tokio::io::duplex(4096);
        let writer = tokio::spawn(async move {
            for piece in [&H2_PREFACE[..3], &H2_PREFACE[3..10], &H2_PREFACE[10..]] {
                client.write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            client
        });
        let (read, h2) = sniff(&mut server).await.unwrap();
        assert!(h2);
        assert_eq!(&read[..], H2_PREFACE);
        drop(writer.await.unwrap());
        // A peer that closes first is an error, not a request.
        let (client, mut server) = tokio::io::duplex(64);
        drop(client);
        assert!(sniff(&mut server).await.is_err());
    }

    #[tokio::test]
    async fn the_sniffed_bytes_are_replayed_before_the_stream() {
        let (mut client, server) = tokio::io::duplex(4096);
        let mut io = Watched {
            inner: server,
            activity: Arc::new(Activity::new()),
            prefix: BytesMut::from(&b"GET / HT"[..]),
        };
        client.write_all(b"TP/1.1\r\n\r\n").await.unwrap();
        drop(client);
        // A small buffer takes the prefix in two reads, then the stream follows.
        let mut small = [0u8; 5];
        let mut got = Vec::new();
        loop {
            let n = io.read(&mut small).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&small[..n]);
        }
        assert_eq!(got, b"GET / HTTP/1.1\r\n\r\n");
    }
}
