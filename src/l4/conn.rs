//! One layer-4 connection: read its ClientHello ([`read_hello`]), then either splice it to a backend
//! ([`splice`]) or hand it back to the TLS server with the bytes read replayed first ([`Prefixed`]).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::client_hello::{self, ClientHello, HelloError};
use super::L4Route;
use crate::upstream::PickContext;

/// How long a client may take to send its whole ClientHello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connect to one endpoint may take before the next is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Endpoints tried for one connection.
const CONNECT_ATTEMPTS: usize = 3;

/// Why no ClientHello could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection closed before the ClientHello was complete")]
    Eof,
    #[error("ClientHello not complete within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Hello(#[from] HelloError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads until the ClientHello is complete (at most [`client_hello::MAX_HELLO`] bytes, within `timeout`).
/// Returns every byte read, to be replayed, and what the hello said.
pub async fn read_hello<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Result<(BytesMut, ClientHello), ReadError> {
    let mut buf = BytesMut::with_capacity(2048);
    let read = async {
        loop {
            if let Some(hello) = client_hello::parse(&buf, client_hello::MAX_HELLO)? {
                return Ok(hello);
            }
            if buf.len() == buf.capacity() {
                buf.reserve(buf.len().min(client_hello::MAX_HELLO - buf.len()).max(1024));
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(ReadError::Eof);
            }
        }
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(hello)) => Ok((buf, hello)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ReadError::Timeout(timeout)),
    }
}

/// A stream that first yields `prefix` (bytes already read from it), then the stream itself.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: BytesMut,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: BytesMut, inner: S) -> Self {
        Self { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = buf.remaining().min(self.prefix.len());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // Not kept for the life of the connection.
                self.prefix = BytesMut::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Who the connection is, for balancing and the log line.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The client (after a PROXY header, the client it named).
    pub client: SocketAddr,
    pub local: SocketAddr,
}

/// Connects to an endpoint of `route` (balanced; on failure up to [`CONNECT_ATTEMPTS`] endpoints, each failure
/// counting toward the endpoint's passive ejection), writes `prefix` (a PROXY header, the ClientHello read),
/// then copies both ways until both directions ended: when one side finishes sending, the other side's write
/// half is shut down and the opposite direction goes on (half-close). The route's idle timeout closes a
/// connection quiet both ways for that long. Ends with one log line for the connection.
pub async fn splice(client: TcpStream, prefix: BytesMut, route: Arc<L4Route>, peer: Peer, sni: Option<&str>) {
    let started = Instant::now();
    let _active = route.stats.open();
    let Some(backend) = route.choose() else {
        // A Gateway route's draw fell on a backendRef that did not resolve: its share of connections is closed.
        log(&route, peer, sni, None, (0, 0), started, "backend not resolved");
        return;
    };
    let cx = PickContext {
        client: Some(peer.client.ip()),
        cookie: None,
    };
    let mut tried = 0;
    let mut next = backend.pick(&cx);
    let connected = loop {
        let Some(e) = next else {
            break None;
        };
        tried += 1;
        let result = match tokio::time::timeout(route.connect_timeout, TcpStream::connect(e.addr)).await {
            Ok(r) => r,
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        };
        match result {
            Ok(s) => {
                backend.record(e, true);
                break Some((s, e));
            }
            Err(err) => {
                backend.record(e, false);
                route
                    .stats
                    .connect_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::debug!(route = %route.name, endpoint = %e.addr, error = %err, "layer-4 connect failed");
                next = if tried < CONNECT_ATTEMPTS {
                    backend.pick_other(e.addr)
                } else {
                    None
                };
            }
        }
    };
    let Some((upstream, endpoint)) = connected else {
        log(&route, peer, sni, None, (0, 0), started, "no endpoint reachable");
        return;
    };
    let _in_flight = backend.start(endpoint);
    let addr = endpoint.addr;
    let _ = upstream.set_nodelay(true);
    let sent = prefix.len() as u64;
    let last = Arc::new(LastActivity::new());
    let (mut client, mut upstream) = (client, upstream);
    let result = match upstream.write_all(&prefix).await {
        Ok(()) => {
            drop(prefix);
            let (client_r, mut client_w) = client.split();
            let (upstream_r, mut upstream_w) = upstream.split();
            let mut client_r = Touch {
                inner: client_r,
                last: last.clone(),
            };
            let mut upstream_r = Touch {
                inner: upstream_r,
                last: last.clone(),
            };
            let copy = async {
                tokio::try_join!(
                    copy_one_way(&mut client_r, &mut upstream_w),
                    copy_one_way(&mut upstream_r, &mut client_w),
                )
            };
            match route.idle_timeout {
                None => copy.await.map_err(Closed::Io),
                Some(idle) => tokio::select! {
                    r = copy => r.map_err(Closed::Io),
                    () = last.idle_for(idle) => Err(Closed::Idle),
                },
            }
        }
        Err(e) => Err(Closed::Io(e)),
    };
    let (bytes, reason) = match result {
        Ok((to_backend, to_client)) => ((sent + to_backend, to_client), "closed"),
        Err(Closed::Idle) => ((sent, 0), "idle timeout"),
        Err(Closed::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset => ((sent, 0), "reset"),
        Err(Closed::Io(_)) => ((sent, 0), "error"),
    };
    use std::sync::atomic::Ordering::Relaxed;
    route.stats.bytes_in.fetch_add(bytes.0, Relaxed);
    route.stats.bytes_out.fetch_add(bytes.1, Relaxed);
    log(&route, peer, sni, Some(addr), bytes, started, reason);
}

/// The first read buffer of each direction of a splice.
const COPY_BUF_MIN: usize = 8 * 1024;
/// The largest: a read that fills the buffer doubles it, up to this.
const COPY_BUF_MAX: usize = 256 * 1024;

/// Copies `from` to `to` until `from` ends, then shuts down `to`'s write half (half-close); returns the bytes
/// copied. The buffer is not zeroed (`read_buf` reads into its spare capacity): `tokio::io::copy_bidirectional`
/// zeroes two 8 KiB buffers per connection, 44 % of the instructions of a short connection. It starts at
/// [`COPY_BUF_MIN`] (what an idle connection holds) and doubles while reads fill it, up to [`COPY_BUF_MAX`]
/// (fewer, larger reads and writes for a stream); a read of at most half of [`COPY_BUF_MIN`] takes it back down.
async fn copy_one_way<R, W>(from: &mut R, to: &mut W) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(COPY_BUF_MIN);
    let mut copied = 0u64;
    loop {
        buf.clear();
        let n = from.read_buf(&mut buf).await?;
        if n == 0 {
            break;
        }
        to.write_all(&buf).await?;
        copied += n as u64;
        if n == buf.capacity() && n < COPY_BUF_MAX {
            // A fresh allocation: growing in place would `realloc`, copying the bytes already written.
            buf = BytesMut::with_capacity((2 * n).min(COPY_BUF_MAX));
        } else if n <= COPY_BUF_MIN / 2 && buf.capacity() > COPY_BUF_MIN {
            // The stream went quiet (a watch after a large LIST): a long-lived connection does not keep 256 KiB.
            buf = BytesMut::with_capacity(COPY_BUF_MIN);
        }
    }
    to.shutdown().await?;
    Ok(copied)
}

/// The connection's access-log line (target `portico::l4`).
fn log(
    route: &L4Route,
    peer: Peer,
    sni: Option<&str>,
    backend: Option<SocketAddr>,
    (bytes_in, bytes_out): (u64, u64),
    started: Instant,
    reason: &str,
) {
    tracing::info!(
        target: "portico::l4",
        client = %peer.client,
        local = %peer.local,
        sni = sni.unwrap_or("-"),
        route = %route.name,
        origin = %route.origin,
        backend = %backend.map_or_else(|| "-".to_string(), |a| a.to_string()),
        bytes_in,
        bytes_out,
        duration_ms = started.elapsed().as_millis() as u64,
        close = reason,
        "layer-4 connection"
    );
}

/// How a splice ended early.
enum Closed {
    Io(io::Error),
    Idle,
}

/// When a connection last moved a byte either way (milliseconds after `base`).
struct LastActivity {
    base: tokio::time::Instant,
    ms: std::sync::atomic::AtomicU64,
}

impl LastActivity {
    fn new() -> Self {
        Self {
            base: tokio::time::Instant::now(),
            ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        self.ms.store(
            self.base.elapsed().as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Returns once no byte moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.base + Duration::from_millis(self.ms.load(std::sync::atomic::Ordering::Relaxed));
            let due = last + idle;
            if tokio::time::Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    }
}

/// A stream noting every byte read into its connection's [`LastActivity`] (reads on both sides cover both
/// directions).
struct Touch<S> {
    inner: S,
    last: Arc<LastActivity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Touch<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last.touch();
        }
        r
    }
}
