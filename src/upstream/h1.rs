//! The gateway's own HTTP/1.1 client, for requests without a body (most of them) on an endpoint's keep-alive
//! connections.
//!
//! hyper's client runs each connection in a task of its own: a request goes to that task through a channel and
//! its response comes back through another, two task wake-ups per request on top of the client connection's
//! codec. Here the request's own task writes the request head to the socket and reads the response head; the
//! response body is read by whoever polls it (hyper's server connection, in the client connection's task), and the
//! connection goes back to its endpoint's idle list the moment the body's last byte has been read. Requests with a
//! body and upgrades keep going through hyper's client ([`super::pool`]), whose dispatcher streams a body while it
//! may already be receiving the response.
//!
//! The read deadlines are the connection's [`Watch`]: a small task per connection holds the one timer and wakes
//! the waiting side when a wait ran over its limit, so a request arms no timer.
//!
//! Framing is [`crate::http1`]'s: the response head is parsed by [`crate::http1::response`] (RFC 9112 section 6.3:
//! no body for `HEAD`, 1xx, 204 and 304; a lone `chunked` coding, decoded by [`crate::http1::chunked`]; a length;
//! else until the backend closes, and the connection is then not reused; any other transfer coding or conflicting
//! lengths are an error), and the request framing written is this client's own: whatever framing fields the
//! request carries, it goes out without a body. Interim 1xx responses are skipped. A connection is reused only
//! after a complete response with nothing left over, on HTTP/1.1 without `Connection: close`.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, Method, Response};
use http_body::{Frame, SizeHint};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::body::ResponseBodyTimeout;
use super::watch::Watch;
use crate::http1::chunked::{Decoder, Step};
use crate::http1::{response, Framing, MAX_HEAD};
/// Free space made in the read buffer before a read, at first and after small reads.
const READ_SPACE: usize = 8 * 1024;
/// Most free space made before a read: reads that fill the space double it up to this (large bodies then move in
/// fewer, larger frames).
const MAX_READ_SPACE: usize = 256 * 1024;
/// Idle connections kept per endpoint; more are closed.
const MAX_IDLE: usize = 256;

/// One connection to a backend.
pub struct Conn {
    io: TcpStream,
    /// Read but not yet consumed.
    buf: BytesMut,
    /// The request head being written (kept to reuse its allocation).
    out: Vec<u8>,
    /// Free space to make before the next read.
    space: usize,
    /// Where a response head's kept fields are in `buf` (kept to reuse its allocation).
    spans: response::Spans,
    watch: Arc<Watch>,
    /// Dropped with the connection, which ends the connection's watch task.
    _task: oneshot::Sender<()>,
}

/// Why an exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A wait ran over its limit (the response-header timeout).
    Timeout,
    /// The connection closed or broke; `received`: part of a response had arrived.
    Broken { received: bool },
    /// The backend sent something that is not an HTTP/1.1 response we can forward.
    Invalid,
}

impl Conn {
    /// Connects to `addr`, with its watch task: `check` is how often its timer fires when no wait has a shorter
    /// limit.
    pub fn new(io: TcpStream, check: Duration) -> Box<Conn> {
        let watch = Arc::new(Watch::new(check));
        let (task, closed) = oneshot::channel::<()>();
        let w = watch.clone();
        tokio::spawn(async move {
            if w.guard(closed, check).await.is_none() {
                tracing::debug!("upstream wait ran over its timeout; connection closed");
            }
        });
        Box::new(Conn {
            io,
            buf: BytesMut::with_capacity(READ_SPACE),
            out: Vec::with_capacity(512),
            space: READ_SPACE,
            spans: Vec::new(),
            watch,
            _task: task,
        })
    }

    /// Whether an idle connection can take a request: not expired, not closed by the backend, nothing unasked
    /// for in it. Costs no system call unless the socket became readable while the connection was idle.
    fn is_reusable(&self) -> bool {
        if self.watch.expired() || !self.buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Sends a request without a body and reads the response head, within `limit`. `target`: the request target
    /// in origin form.
    pub async fn exchange(
        &mut self,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        limit: Duration,
    ) -> Result<Head, Failure> {
        self.write_head(method, target, headers);
        self.watch.begin(tokio::time::Instant::now(), limit);
        let result = self.exchange_inner(*method == Method::HEAD).await;
        self.watch.end();
        result
    }

    async fn exchange_inner(&mut self, head_only: bool) -> Result<Head, Failure> {
        let mut written = 0;
        poll_fn(|cx| self.poll_write(cx, &mut written)).await?;
        loop {
            if !self.buf.is_empty() {
                match self.parse_head(head_only)? {
                    Some(head) if head.0.status.is_informational() => continue,
                    Some(head) => return Ok(head),
                    None => {}
                }
            }
            if self.buf.len() >= MAX_HEAD {
                return Err(Failure::Invalid);
            }
            match poll_fn(|cx| self.poll_fill(cx)).await {
                Ok(0) => {
                    return Err(Failure::Broken {
                        received: !self.buf.is_empty(),
                    })
                }
                Ok(_) => {}
                Err(_) if self.watch.expired() => return Err(Failure::Timeout),
                Err(_) => {
                    return Err(Failure::Broken {
                        received: !self.buf.is_empty(),
                    })
                }
            }
        }
    }

    /// The request head into `out`. The framing is this client's, not the request's: the request has no body, so
    /// its `Content-Length`, `Transfer-Encoding`, `Connection` and `Upgrade` fields (which the proxy removes
    /// anyway) are never copied, and a `POST`, `PUT` or `PATCH` gets `Content-Length: 0`, as a backend expecting
    /// a body needs to know there is none.
    fn write_head(&mut self, method: &Method, target: &str, headers: &HeaderMap) {
        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in headers {
            if *name == header::CONTENT_LENGTH
                || *name == header::TRANSFER_ENCODING
                || *name == header::CONNECTION
                || *name == header::UPGRADE
            {
                continue;
            }
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
            out.extend_from_slice(b"content-length: 0\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, written: &mut usize) -> Poll<Result<(), Failure>> {
        loop {
            match self.io.try_write(&self.out[*written..]) {
                Ok(n) => {
                    *written += n;
                    if *written == self.out.len() {
                        return Poll::Ready(Ok(()));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.watch.register_waiter(cx.waker());
                    if self.watch.expired() {
                        return Poll::Ready(Err(Failure::Timeout));
                    }
                    if ready!(self.io.poll_write_ready(cx)).is_err() {
                        return Poll::Ready(Err(Failure::Broken { received: false }));
                    }
                }
                Err(_) => return Poll::Ready(Err(Failure::Broken { received: false })),
            }
        }
    }

    /// Reads what the socket has into `buf`: the count (0: the backend closed), or an error (also when the
    /// connection's wait ran over: see [`Watch::expired`]).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < self.space / 2 {
            make_room(&mut self.buf, self.space);
        }
        loop {
            let spare = self.buf.capacity() - self.buf.len();
            // A short read drained the socket: its readiness is cleared now (as tokio's own `poll_read` does),
            // against the readiness seen before the read, so an event that came in between is kept. Without
            // this the next read, or the idle check of `is_reusable`, would cost a system call that finds nothing.
            let mut read = None;
            let (io, buf) = (&self.io, &mut self.buf);
            let result = io.try_io(Interest::READABLE, || {
                let n = io.try_read_buf(buf)?;
                read = Some(n);
                if n > 0 && n < spare {
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(n)
                }
            });
            let outcome = match read {
                Some(n) => Ok(n),
                None => result,
            };
            match outcome {
                Ok(n) => {
                    // Adaptive like hyper's read strategy: grow while reads fill the buffer, shrink back after a
                    // small one.
                    if n == spare {
                        self.space = (self.space * 2).min(MAX_READ_SPACE);
                    } else if n < self.space / 4 {
                        self.space = READ_SPACE;
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.watch.register_waiter(cx.waker());
                    if self.watch.expired() {
                        return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
                    }
                    ready!(self.io.poll_read_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// A complete response head at the start of `buf`, taken out of it; `None`: not complete yet.
    fn parse_head(&mut self, head_only: bool) -> Result<Option<Head>, Failure> {
        match response::parse(&mut self.buf, &mut self.spans, head_only) {
            Ok(head) => Ok(head.map(Head)),
            Err(response::Invalid) => Err(Failure::Invalid),
        }
    }
}

/// At least `space` free bytes after what `buf` holds. The buffer's own storage is reused when it is no longer
/// shared and large enough (what was consumed is reclaimed); otherwise only the unconsumed bytes move to new
/// storage. `BytesMut::reserve` would instead grow a unique buffer with `realloc`, copying the consumed bytes too:
/// most of a large body's bytes, once per growth.
pub(crate) fn make_room(buf: &mut BytesMut, space: usize) {
    if buf.try_reclaim(space) {
        return;
    }
    let mut fresh = BytesMut::with_capacity(buf.len() + space);
    fresh.extend_from_slice(buf);
    *buf = fresh;
}

/// A response head read from a backend.
pub struct Head(response::Head);

impl Head {
    /// The response, its body reading the rest from `conn`; the connection goes back to `pool` when the body
    /// has been read completely (if it may be reused).
    pub fn into_response(self, conn: Box<Conn>, pool: &Arc<Pool>) -> Response<Body> {
        let head = self.0;
        let mut body = Body {
            conn: Some(conn),
            pool: head.keep_alive.then(|| pool.clone()),
            framing: match head.framing {
                Framing::None => Framing::Length(0),
                f => f,
            },
            chunks: Decoder::default(),
            read_limit: None,
            waiting: false,
            truncated: false,
        };
        // A body that is already complete (no body, or all of it arrived with the head) gives its connection back
        // now rather than when it is first polled.
        body.settle();
        let mut resp = Response::new(body);
        *resp.status_mut() = head.status;
        *resp.version_mut() = head.version;
        *resp.headers_mut() = head.headers;
        resp
    }
}

/// A response body read from its connection by whoever polls it.
pub struct Body {
    /// `None` once the body ended (the connection went back to its pool, or was closed).
    conn: Option<Box<Conn>>,
    /// Where the connection goes after a complete body; `None`: it is closed instead.
    pool: Option<Arc<Pool>>,
    /// `Length(0)` once a length-delimited body is complete (never `None`).
    framing: Framing,
    /// Where a chunked body's decoding is.
    chunks: Decoder,
    /// Longest wait between two reads (`None`: no limit).
    read_limit: Option<Duration>,
    /// A wait with `read_limit` is registered with the connection's watch.
    waiting: bool,
    /// The backend closed before the end; reported on the next poll.
    truncated: bool,
}

/// The backend closed the connection in the middle of a response body.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("upstream connection closed before the response body ended")]
pub struct Truncated;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Body {
    /// Limits each wait for more of the body to `limit`.
    pub fn set_read_timeout(&mut self, limit: Option<Duration>) {
        self.read_limit = limit;
    }

    /// Ends the body: the connection goes back to its pool when it may, else it is closed.
    fn finish(&mut self, reuse: bool) {
        self.stop_waiting();
        if let Some(mut conn) = self.conn.take() {
            if let (true, Some(pool)) = (reuse && conn.buf.is_empty(), self.pool.take()) {
                // A buffer grown by a large body is not kept by an idle connection.
                if conn.buf.capacity() > 4 * READ_SPACE {
                    conn.buf = BytesMut::new();
                }
                conn.space = READ_SPACE;
                pool.put(conn, Instant::now());
            }
        }
    }

    fn stop_waiting(&mut self) {
        if self.waiting {
            if let Some(c) = &self.conn {
                c.watch.end();
            }
            self.waiting = false;
        }
    }

    /// Consumes the framing that the buffer already holds after the data (a chunk's CRLF, the last chunk and
    /// its trailers), and ends the body if that completes it.
    fn settle(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        match self.framing {
            Framing::Length(0) => self.finish(true),
            Framing::Chunked => {
                if let Ok(Step::Done) = self.chunks.decode(&mut conn.buf, true) {
                    self.finish(true);
                }
            }
            _ => {}
        }
    }

    /// The next frame from the buffered bytes.
    fn step(&mut self) -> Result<Step, BoxError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(Step::Done);
        };
        let buf = &mut conn.buf;
        match &mut self.framing {
            Framing::None | Framing::Length(0) => Ok(Step::Done),
            Framing::Length(rest) => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let n = buf.len().min(usize::try_from(*rest).unwrap_or(usize::MAX));
                *rest -= n as u64;
                Ok(Step::Frame(Frame::data(buf.split_to(n).freeze())))
            }
            Framing::Chunked => Ok(self.chunks.decode(buf, false)?),
            Framing::Close => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                Ok(Step::Frame(Frame::data(buf.split().freeze())))
            }
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            match this.step() {
                Ok(Step::Frame(frame)) => {
                    if frame.is_trailers() {
                        this.finish(true);
                    } else {
                        this.stop_waiting();
                        this.settle();
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Ok(Step::Done) => {
                    this.finish(true);
                    return Poll::Ready(None);
                }
                Ok(Step::More) => {}
                Err(e) => {
                    this.finish(false);
                    return Poll::Ready(Some(Err(e)));
                }
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match conn.poll_fill(cx) {
                Poll::Ready(Ok(0)) if this.framing == Framing::Close => {
                    this.finish(false);
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) if !this.truncated => {
                    // Reported on the next poll: the server connection first writes out what it has of the
                    // response (it drops unwritten data when a body fails), as it would had the end come later.
                    this.truncated = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) => {
                    this.finish(false);
                    return Poll::Ready(Some(Err(Truncated.into())));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    let timed_out = conn.watch.expired();
                    this.finish(false);
                    return Poll::Ready(Some(Err(if timed_out {
                        ResponseBodyTimeout.into()
                    } else {
                        e.into()
                    })));
                }
                Poll::Pending => {
                    if let (false, Some(limit)) = (this.waiting, this.read_limit) {
                        conn.watch.begin(tokio::time::Instant::now(), limit);
                        this.waiting = true;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || self.framing == Framing::Length(0)
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.conn, self.framing) {
            (None, _) => SizeHint::with_exact(0),
            (Some(_), Framing::Length(n)) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        // Dropped before its end (the client went away): the connection is closed, not reused.
        self.stop_waiting();
    }
}

/// An endpoint's idle connections, newest last.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<Vec<(Box<Conn>, Instant)>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("idle", &self.len()).finish()
    }
}

impl Pool {
    /// The newest idle connection that can take a request. Connections idle for longer than `idle_timeout`, and
    /// ones the backend closed, are dropped on the way.
    pub fn take(&self, now: Instant, idle_timeout: Duration) -> Option<Box<Conn>> {
        loop {
            let conn = {
                let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
                let (conn, since) = idle.pop()?;
                if now.saturating_duration_since(since) > idle_timeout {
                    // The rest are older still. Closed outside the lock.
                    let stale = std::mem::take(&mut *idle);
                    drop(idle);
                    drop(stale);
                    return None;
                }
                conn
            };
            if conn.is_reusable() {
                return Some(conn);
            }
        }
    }

    /// Puts a connection whose exchange ended cleanly back.
    pub fn put(&self, conn: Box<Conn>, now: Instant) {
        if conn.watch.expired() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push((conn, now));
        }
    }

    /// Idle connections.
    pub fn len(&self) -> usize {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::{Bytes, BytesMut};
    use http::{Method, Request};
    use http_body_util::{BodyExt, Either, Empty};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::super::body::ResponseBody;
    use super::super::client::{SendError, UpstreamClient, UpstreamError, Via};
    use super::super::Endpoint;
    use crate::config::UpstreamConfig;

    /// What the origin does with the `n`-th request (from 0) on a connection, given its head: the pieces of its
    /// answer, written 20 ms apart (so the client meets heads and chunks split across reads), or `None` to close
    /// without answering.
    type Script = fn(usize, &str) -> Option<Vec<&'static [u8]>>;

    /// A piece that makes the origin close the connection (after what it wrote before).
    const CLOSE: &[u8] = b"";

    /// A hand-written HTTP/1.1 origin that counts its connections and requests; closes a connection after an
    /// answer containing `connection: close`, or when told to.
    async fn origin(script: Script) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (conns, requests) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (c, r) = (conns.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let r = r.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for n in 0.. {
                        let end = loop {
                            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break end;
                            }
                            let mut chunk = [0u8; 1024];
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(k) => buf.extend_from_slice(&chunk[..k]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        buf.drain(..end + 4);
                        r.fetch_add(1, Ordering::SeqCst);
                        let Some(pieces) = script(n, &head) else { return };
                        let mut close = false;
                        for p in pieces {
                            if p == CLOSE {
                                return;
                            }
                            close |= p.windows(17).any(|w| w.eq_ignore_ascii_case(b"connection: close"));
                            if s.write_all(p).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        if close {
                            return;
                        }
                    }
                });
            }
        });
        (addr, conns, requests)
    }

    fn client() -> UpstreamClient {
        let cfg = UpstreamConfig {
            response_header_timeout: Duration::from_millis(300),
            ..Default::default()
        };
        UpstreamClient::new(&cfg)
    }

    fn request(method: Method, path: &'static str) -> Request<super::super::client::UpstreamBody> {
        Request::builder()
            .method(method)
            .uri(path)
            .header("host", "origin")
            .body(Either::Right(Empty::<Bytes>::new()))
            .unwrap()
    }

    /// One exchange: status, body, trailers.
    async fn fetch(
        c: &UpstreamClient,
        ep: &Endpoint,
        method: Method,
        path: &'static str,
    ) -> Result<(u16, Bytes, Option<http::HeaderMap>), SendError> {
        let resp = c.send(ep, request(method, path), None, Via::Http1Bodiless).await?;
        let status = resp.status().as_u16();
        let body = ResponseBody::new(resp.into_body(), None, Some(Duration::from_secs(5)));
        let collected = body
            .collect()
            .await
            .map_err(|_| SendError::Upstream(UpstreamError::Reset))?;
        let trailers = collected.trailers().cloned();
        Ok((status, collected.to_bytes(), trailers))
    }

    #[test]
    fn make_room_moves_only_unconsumed_bytes_and_reuses_storage_it_owns_alone() {
        let mut buf = BytesMut::with_capacity(1024);
        buf.extend_from_slice(&[7u8; 1000]);
        // A frame still held elsewhere: the 40 unconsumed bytes go to new storage, the frame keeps its own.
        let frame = buf.split_to(960).freeze();
        super::make_room(&mut buf, 4096);
        assert_eq!(&buf[..], &[7u8; 40][..]);
        assert!(buf.capacity() - buf.len() >= 4096);
        assert_eq!(frame.len(), 960);
        drop(frame);
        // Sole owner again, with everything consumed: the storage is reused, not reallocated.
        let _ = buf.split_to(40);
        let before = buf.as_ptr() as usize;
        let capacity = buf.capacity();
        super::make_room(&mut buf, capacity + 4);
        assert_eq!(
            buf.capacity(),
            capacity + 40,
            "grew instead of reclaiming the consumed bytes"
        );
        assert_eq!(buf.as_ptr() as usize, before - 40);
    }

    #[tokio::test]
    async fn chunked_bodies_with_extensions_and_trailers_are_decoded_and_the_connection_reused() {
        let (addr, conns, _) = origin(|_, _| {
            Some(vec![
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-a: 1\r\n\r\n5;ext=1\r\nhel",
                b"lo\r\n7\r\n, world\r\n0\r\nx-checksum: abc\r\n\r\n",
            ])
        })
        .await;
        let ep = Endpoint::new(0, addr);
        let c = client();
        for _ in 0..3 {
            let (status, body, trailers) = fetch(&c, &ep, Method::GET, "/").await.unwrap();
            assert_eq!(status, 200);
            assert_eq!(body, "hello, world");
            assert_eq!(trailers.unwrap()["x-checksum"], "abc");
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1, "one connection for all three");
        assert_eq!(ep.idle.len(), 1);
    }

    #[tokio::test]
    async fn lengths_split_across_reads_interim_responses_and_bodiless_statuses() {
        let (addr, conns, requests) = origin(|_, head| {
            Some(if head.starts_with("HEAD") {
                vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n"]
            } else if head.contains("/204") {
                vec![b"HTTP/1.1 204 No Content\r\n\r\n"]
            } else if head.contains("/304") {
                vec![b"HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n"]
            } else {
                vec![
                    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncont",
                    b"ent-length: 10\r\n\r\n01234",
                    b"56789",
                ]
            })
        })
        .await;
        let ep = Endpoint::new(0, addr);
        let c = client();
        let (status, body, _) = fetch(&c, &ep, Method::GET, "/").await.unwrap();
        assert_eq!((status, &body[..]), (200, &b"0123456789"[..]));
        let (status, body, _) = fetch(&c, &ep, Method::HEAD, "/").await.unwrap();
        assert_eq!((status, body.len()), (200, 0));
        let (status, body, _) = fetch(&c, &ep, Method::GET, "/204").await.unwrap();
        assert_eq!((status, body.len()), (204, 0));
        let (status, body, _) = fetch(&c, &ep, Method::GET, "/304").await.unwrap();
        assert_eq!((status, body.len()), (304, 0));
        assert_eq!(requests.load(Ordering::SeqCst), 4);
        assert_eq!(
            conns.load(Ordering::SeqCst),
            1,
            "every response left the connection reusable"
        );
    }

    #[tokio::test]
    async fn close_delimited_bodies_and_connection_close_are_not_reused() {
        let (addr, conns, _) = origin(|_, head| {
            Some(if head.contains("/extra") {
                // More than the length announced: what follows is not a response to anything.
                vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n"]
            } else if head.contains("/eof") {
                // No length: the body runs until the backend closes (the script closes after `connection: close`).
                vec![b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end"]
            } else {
                vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nConnection: Close\r\n\r\nok"]
            })
        })
        .await;
        let ep = Endpoint::new(0, addr);
        let c = client();
        assert_eq!(fetch(&c, &ep, Method::GET, "/extra").await.unwrap().1, "ok");
        assert_eq!(fetch(&c, &ep, Method::GET, "/eof").await.unwrap().1, "until the end");
        assert_eq!(fetch(&c, &ep, Method::GET, "/").await.unwrap().1, "ok");
        assert_eq!(fetch(&c, &ep, Method::GET, "/").await.unwrap().1, "ok");
        assert_eq!(conns.load(Ordering::SeqCst), 4);
        assert!(ep.idle.is_empty());
    }

    #[tokio::test]
    async fn framing_fields_stay_out_of_the_response_and_named_hop_by_hop_fields_are_stripped() {
        let (addr, conns, _) = origin(|_, head| {
            Some(if head.contains("/named") {
                vec![b"HTTP/1.1 200 OK\r\nconnection: keep-alive, x-private\r\nx-private: s\r\nx-keep: k\r\ncontent-length: 2\r\n\r\nok"]
            } else {
                vec![b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nx-keep: k\r\n\r\n2\r\nok\r\n0\r\n\r\n"]
            })
        })
        .await;
        let ep = Endpoint::new(0, addr);
        let c = client();
        for path in ["/", "/named"] {
            let resp = c
                .send(&ep, request(Method::GET, path), None, Via::Http1Bodiless)
                .await
                .unwrap();
            let (mut parts, body) = resp.into_parts();
            crate::proxy::headers::strip_hop_by_hop(&mut parts.headers);
            let names: Vec<&str> = parts.headers.keys().map(|n| n.as_str()).collect();
            let expected: &[&str] = if path == "/" {
                &["x-keep"]
            } else {
                &["x-keep", "content-length"]
            };
            assert_eq!(names, expected, "{path}");
            let body = ResponseBody::new(body, None, None).collect().await.unwrap().to_bytes();
            assert_eq!(body, "ok");
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_large_body_grows_the_reads_and_the_idle_connection_gives_the_buffer_back() {
        static BODY: [u8; 600_000] = [b'x'; 600_000];
        let (addr, conns, _) =
            origin(|_, _| Some(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 600000\r\n\r\n", &BODY])).await;
        let ep = Endpoint::new(0, addr);
        let c = client();
        for _ in 0..2 {
            let (status, body, _) = fetch(&c, &ep, Method::GET, "/").await.unwrap();
            assert_eq!((status, body.len()), (200, 600_000));
            assert!(body.iter().all(|&b| b == b'x'));
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1);
        let idle = ep
            .idle
            .take(std::time::Instant::now(), Duration::from_secs(60))
            .unwrap();
        assert!(idle.buf.capacity() <= 4 * super::READ_SPACE, "{}", idle.buf.capacity());
        assert_eq!(idle.space, super::READ_SPACE);
    }

    #[tokio::test]
    async fn malformed_responses_fail_as_invalid_and_malformed_bodies_as_resets() {
        let (addr, _, _) = origin(|_, head| {
            Some(if head.contains("/lengths") {
                vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok"]
            } else if head.contains("/101") {
                vec![b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n"]
            } else if head.contains("/chunk") {
                vec![b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"]
            } else {
                vec![b"HTTP/1.1 2000 What\r\n\r\n"]
            })
        })
        .await;
        let ep = Endpoint::new(0, addr);
        let c = client();
        for path in ["/lengths", "/101", "/status"] {
            let r = fetch(&c, &ep, Method::GET, path).await;
            assert_eq!(r.err(), Some(SendError::Upstream(UpstreamError::Invalid)), "{path}");
        }
        // The head was fine; the body breaks after it (`fetch` reports a failed body as a reset).
        let r = fetch(&c, &ep, Method::GET, "/chunk").await;
        assert_eq!(r.err(), Some(SendError::Upstream(UpstreamError::Reset)));
    }

    #[tokio::test]
    async fn an_idle_connection_the_backend_closed_is_replaced() {
        // The first request on each connection is answered; the second is read and the connection closed
        // without an answer (the backend's idle close racing the request).
        let (addr, conns, requests) =
            origin(|n, _| (n == 0).then(|| vec![&b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"[..]])).await;
        let ep = Endpoint::new(0, addr);
        let c = client();
        assert_eq!(fetch(&c, &ep, Method::GET, "/").await.unwrap().1, "ok");
        // A GET may be repeated: it goes out again on a new connection.
        assert_eq!(fetch(&c, &ep, Method::GET, "/").await.unwrap().1, "ok");
        assert_eq!((conns.load(Ordering::SeqCst), requests.load(Ordering::SeqCst)), (2, 3));
        // A POST may not: the broken exchange is the answer.
        let r = fetch(&c, &ep, Method::POST, "/").await;
        assert_eq!(r.err(), Some(SendError::Upstream(UpstreamError::Reset)));
        assert_eq!((conns.load(Ordering::SeqCst), requests.load(Ordering::SeqCst)), (2, 4));
        // A connection the backend closed while it sat idle is noticed before use: even a POST, which would not
        // be repeated, is not lost on it.
        let (addr, conns, requests) =
            origin(|_, _| Some(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", CLOSE])).await;
        let ep = Endpoint::new(0, addr);
        assert_eq!(fetch(&c, &ep, Method::GET, "/").await.unwrap().1, "ok");
        assert_eq!(ep.idle.len(), 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(fetch(&c, &ep, Method::POST, "/").await.unwrap().1, "ok");
        assert_eq!((conns.load(Ordering::SeqCst), requests.load(Ordering::SeqCst)), (2, 2));
    }

    #[tokio::test]
    async fn a_backend_that_does_not_answer_times_out() {
        let (addr, _, _) = origin(|_, _| {
            Some(vec![
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n",
                // The head came; the origin's pause before the rest stands for the stall (see `fetch`'s limit).
            ])
        })
        .await;
        let ep = Endpoint::new(0, addr);
        let c = client();
        // The response head never completes within the 300 ms limit.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_ep = Endpoint::new(0, silent.local_addr().unwrap());
        let t = std::time::Instant::now();
        let r = fetch(&c, &silent_ep, Method::GET, "/").await;
        assert_eq!(r.err(), Some(SendError::Upstream(UpstreamError::ResponseTimeout)));
        assert!(t.elapsed() >= Duration::from_millis(300) && t.elapsed() < Duration::from_secs(3));
        assert!(silent_ep.idle.is_empty());
        // A body that stops short of its length and then stalls fails at the read timeout.
        let resp = c
            .send(&ep, request(Method::GET, "/"), None, Via::Http1Bodiless)
            .await
            .unwrap();
        let body = ResponseBody::new(resp.into_body(), None, Some(Duration::from_millis(200)));
        let t = std::time::Instant::now();
        let err = body.collect().await.err().unwrap();
        assert!(err.downcast_ref::<super::ResponseBodyTimeout>().is_some(), "{err}");
        assert!(t.elapsed() >= Duration::from_millis(150) && t.elapsed() < Duration::from_secs(3));
        assert!(ep.idle.is_empty(), "a timed-out connection is not reused");
    }
}
