//! The gateway's own HTTP/1.1 server side, for the requests nearly every connection carries: HTTP/1.1, no body,
//! no upgrade.
//!
//! hyper's server connection hands each request to a boxed service future and each response body back through
//! its dispatcher; here the connection's own task parses the request head, awaits [`Proxy::handle`] in place and
//! writes the response, head and small bodies in one write. Header values are slices of the read buffer, not
//! copies, and the buffers live as long as the connection.
//!
//! Anything else hands the connection, with the bytes read and not yet served, to hyper's HTTP/1.1 server for
//! the rest of its life ([`Ended::HandOver`]): a request with a body (`Content-Length` other than 0, or
//! `Transfer-Encoding`), `Expect`, an upgrade, HTTP/1.0, `CONNECT`, and every head this parser does not accept
//! (malformed, too many fields, too large). hyper stays the one place that streams request bodies and answers
//! malformed requests.
//!
//! Response framing: `HEAD`, 1xx, 204 and 304 responses have no body and keep their fields as they are; otherwise
//! a `Content-Length` field is kept and enforced, a body of known size gets one, and any other body is sent
//! chunked (trailers only to a client that sent `TE: trailers`). A body that fails or ends short of its length
//! ends the connection, so the client sees the truncation. `Date` is added when missing.
//!
//! While a request is in flight the socket is still read: pipelined requests are buffered, and the client closing
//! its side ends the connection and drops the request (hyper's default without half-close support).

use std::cell::RefCell;
use std::future::poll_fn;
use std::mem::MaybeUninit;
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Sleep;

use super::server::{Activity, Check, Limits};
use super::{ClientBody, ConnInfo, Proxy, ProxyBody};

/// Request header fields accepted (hyper's server default is 100 too).
const MAX_HEADERS: usize = 100;
/// A head still incomplete at this size goes to hyper, which decides (its own limit is larger).
const MAX_HEAD: usize = 64 * 1024;
/// Fields the proxy adds to a request on its way upstream (`X-Forwarded-*`, `X-Real-IP`).
const FORWARDING_FIELDS: usize = 5;
/// Room made for each read when less than a quarter of it is left.
const READ_SPACE: usize = 4096;
/// Body frames up to this size are copied behind what is buffered, for one write; larger ones go out with it in one
/// vectored write, not copied.
const COALESCE: usize = 4 * 1024;
/// A response buffer grown past this (by bodies copied into it) is not kept by the connection.
const KEEP_OUT: usize = 4 * 1024;
/// Room for a typical response head, made once per connection (not grown a few bytes at a time).
const HEAD_SPACE: usize = 512;
/// Buffered output written before more of a body is copied behind it.
const MAX_OUT: usize = 64 * 1024;

/// How [`serve`] ended.
pub(super) enum Ended {
    /// The connection is done: either side closed it, a timeout or shutdown ended it, or a response failed.
    Closed,
    /// The next request is for hyper: the bytes read and not served, to be replayed to it first.
    HandOver(BytesMut),
}

/// What [`serve`] needs of its connection.
pub(super) struct Conn<'a> {
    pub proxy: &'a Proxy,
    pub info: &'a ConnInfo,
    pub activity: &'a Activity,
    pub limits: &'a Limits,
}

/// Serves requests from `io` (`buf`: what was read already) until the connection ends or a request needs hyper.
/// `timer` is the connection's one timer (keep-alive and header-read deadlines, see [`Activity`]); `shutdown`
/// turning true closes the connection once no request is in flight.
pub(super) async fn serve<S>(
    io: &mut S,
    mut buf: BytesMut,
    conn: Conn<'_>,
    mut timer: Pin<&mut Sleep>,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Ended
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Conn {
        proxy,
        info,
        activity,
        limits,
    } = conn;
    // One future for the connection's life, not one per wait: a closed sender never shuts down.
    let mut shutting_down = pin!(async {
        if shutdown.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
    });
    let mut out = Vec::new();
    let mut spans = Vec::new();
    let mut closing = false;
    loop {
        let incoming = loop {
            if !buf.is_empty() {
                match parse(&mut buf, &mut spans) {
                    Ok(Some(r)) => break r,
                    // Part of a head, maybe read while the last request was in flight: its time counts from now
                    // at the latest.
                    Ok(None) if buf.len() < MAX_HEAD => activity.bytes_arrived(),
                    Ok(None) | Err(ForHyper) => return Ended::HandOver(buf),
                }
            }
            reserve(&mut buf);
            tokio::select! {
                biased;
                r = io.read_buf(&mut buf) => match r {
                    Ok(n) if n > 0 => activity.bytes_arrived(),
                    _ => return Ended::Closed,
                },
                _ = timer.as_mut() => match activity.check(tokio::time::Instant::now(), limits) {
                    Check::HeadTooSlow => {
                        tracing::debug!(peer = %info.peer, "request head not received within the header-read timeout; closing");
                        return Ended::Closed;
                    }
                    Check::Idle => {
                        tracing::trace!(peer = %info.peer, "keep-alive timeout; closing the idle connection");
                        return Ended::Closed;
                    }
                    Check::Later(at) => timer.as_mut().reset(at),
                },
                _ = shutting_down.as_mut() => return Ended::Closed,
            }
        };
        let Incoming {
            request,
            close,
            trailers,
        } = incoming;
        let _active = activity.begin();
        let head_request = request.method() == Method::HEAD;
        let response = {
            let mut handled = pin!(proxy.handle(info, request));
            loop {
                tokio::select! {
                    biased;
                    r = handled.as_mut() => break r,
                    r = io.read_buf(&mut buf), if buf.len() < MAX_HEAD => {
                        if !matches!(r, Ok(n) if n > 0) {
                            tracing::trace!(peer = %info.peer, "client closed with a request in flight");
                            return Ended::Closed;
                        }
                    }
                    _ = shutting_down.as_mut(), if !closing => closing = true,
                }
            }
        };
        let keep_alive = !close && !closing;
        let (parts, body) = response.into_parts();
        out.clear();
        out.reserve(HEAD_SPACE);
        let framing = encode_head(&mut out, &parts, &body, head_request, keep_alive);
        drop(parts);
        if !write_body(io, &mut out, &mut buf, body, framing, trailers).await {
            return Ended::Closed;
        }
        if out.capacity() > KEEP_OUT {
            out = Vec::new();
        }
        if !keep_alive {
            let _ = io.shutdown().await;
            return Ended::Closed;
        }
    }
}

/// Room for the next read. Once the heads read before are gone, the buffer is unique again and its storage is
/// reclaimed instead of allocating (see `make_room`).
fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_SPACE / 4 {
        crate::upstream::h1::make_room(buf, READ_SPACE);
    }
}

/// A request head taken out of the buffer.
struct Incoming {
    request: Request<ClientBody>,
    /// The client asked to close after this response (`Connection: close`).
    close: bool,
    /// The client accepts trailers (`TE: trailers`).
    trailers: bool,
}

/// A request this parser leaves to hyper's server.
struct ForHyper;

/// A complete request head at the start of `buf`, taken out of it when this parser serves it; `None`: not
/// complete yet. `spans`: the connection's scratch space for where the fields are.
fn parse(buf: &mut BytesMut, spans: &mut Vec<(Span, Span)>) -> Result<Option<Incoming>, ForHyper> {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut parsed, buf, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(ForHyper),
    };
    let (Some(method), Some(target), Some(1)) = (parsed.method, parsed.path, parsed.version) else {
        return Err(ForHyper);
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Err(ForHyper);
    };
    if method == Method::CONNECT {
        return Err(ForHyper);
    }
    // Where the target and each field are in the buffer: they become slices of it, not copies.
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
    let target = span(target.as_bytes());
    spans.clear();
    spans.reserve(parsed.headers.len());
    let (mut close, mut trailers) = (false, false);
    for h in parsed.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            if h.value != b"0" {
                return Err(ForHyper);
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Err(ForHyper);
                }
            }
        } else if name.eq_ignore_ascii_case(b"te") {
            trailers |= h
                .value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"));
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
        {
            return Err(ForHyper);
        }
        spans.push((span(name), span(h.value)));
    }
    let head = buf.split_to(len).freeze();
    match build(&head, method, target, spans) {
        Some(request) => Ok(Some(Incoming {
            request,
            close,
            trailers,
        })),
        None => {
            // Put back for hyper (its answer is a 400): a copy, on this rare path only.
            let mut back = BytesMut::with_capacity(head.len() + buf.len());
            back.extend_from_slice(&head);
            back.extend_from_slice(buf);
            *buf = back;
            Err(ForHyper)
        }
    }
}

type Span = (usize, usize);

fn build(head: &Bytes, method: Method, (ts, tl): Span, fields: &[(Span, Span)]) -> Option<Request<ClientBody>> {
    let uri = Uri::from_maybe_shared(head.slice(ts..ts + tl)).ok()?;
    // Room for the forwarding fields the proxy adds, so they do not grow the map.
    let mut headers = HeaderMap::with_capacity(fields.len() + FORWARDING_FIELDS);
    for &((ns, nl), (vs, vl)) in fields {
        let name = HeaderName::from_bytes(&head[ns..ns + nl]).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs..vs + vl)).ok()?;
        headers.append(name, value);
    }
    let mut request = Request::new(ClientBody::Empty);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Some(request)
}

/// How a response body is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body on the wire (HEAD, 1xx, 204, 304).
    None,
    /// Exactly this many bytes.
    Length(u64),
    Chunked,
}

/// The status line and fields into `out`, with the framing fields this side decides.
fn encode_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    body: &ProxyBody,
    head_request: bool,
    keep_alive: bool,
) -> Framing {
    let status = parts.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let bodiless = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    // `Content-Length` fields: kept as they are on a bodiless response, else written below once framing is
    // decided (a single readable one is enforced; otherwise the body's own size decides).
    let (mut length, mut lengths) = (None, 0);
    let mut dated = false;
    for (name, value) in &parts.headers {
        if *name == header::TRANSFER_ENCODING || *name == header::CONNECTION {
            // This side's to decide.
            continue;
        }
        if *name == header::CONTENT_LENGTH && !bodiless {
            lengths += 1;
            length = value.to_str().ok().and_then(|v| v.parse::<u64>().ok());
            continue;
        }
        dated |= *name == header::DATE;
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    let framing = match (bodiless, length.filter(|_| lengths == 1)) {
        (true, _) => Framing::None,
        (false, Some(n)) => Framing::Length(n),
        (false, None) => match body.size_hint().exact() {
            Some(n) => Framing::Length(n),
            None => Framing::Chunked,
        },
    };
    match framing {
        Framing::Length(n) => field(out, b"content-length", digits(n, 10).as_bytes()),
        Framing::Chunked => field(out, b"transfer-encoding", b"chunked"),
        Framing::None => {}
    }
    if !keep_alive {
        field(out, b"connection", b"close");
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        write_date(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    framing
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A number's digits, written without allocating.
struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl Digits {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// `n` in base `radix` (10 or 16, lower case).
fn digits(mut n: u64, radix: u64) -> Digits {
    let mut d = Digits {
        buf: [0; 20],
        start: 20,
    };
    loop {
        d.start -= 1;
        d.buf[d.start] = b"0123456789abcdef"[(n % radix) as usize];
        n /= radix;
        if n == 0 {
            return d;
        }
    }
}

thread_local! {
    /// The current second and its IMF-fixdate, rendered once a second per thread.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

fn write_date(out: &mut Vec<u8>) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|date| {
        let mut date = date.borrow_mut();
        if date.0 != now {
            let text = httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(now));
            if text.len() == 29 {
                date.1.copy_from_slice(text.as_bytes());
                date.0 = now;
            }
        }
        out.extend_from_slice(&date.1);
    });
}

/// Writes the head in `out` and the body after it. False when the connection must end: the body failed or
/// ended short of its length, or the client went away (watched for while the body makes it wait; what the
/// client sends meanwhile goes to `buf`).
async fn write_body<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    out: &mut Vec<u8>,
    buf: &mut BytesMut,
    body: ProxyBody,
    framing: Framing,
    trailers_wanted: bool,
) -> bool {
    let mut body = pin!(body);
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    loop {
        // What the body has now; when it has nothing yet, what is buffered goes out while it waits.
        let frame = match poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if !out.is_empty() {
                    if io.write_all(out).await.is_err() {
                        return false;
                    }
                    out.clear();
                }
                // Also what a TLS stream still holds from a vectored write of a large frame.
                if io.flush().await.is_err() {
                    return false;
                }
                loop {
                    tokio::select! {
                        biased;
                        frame = poll_fn(|cx| body.as_mut().poll_frame(cx)) => break frame,
                        r = io.read_buf(buf), if buf.len() < MAX_HEAD => {
                            if !matches!(r, Ok(n) if n > 0) {
                                tracing::trace!("client closed in the middle of a response");
                                return false;
                            }
                        }
                    }
                }
            }
        };
        let frame = match frame {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "response body failed; closing the connection");
                // What arrived before the failure still reaches the client.
                let _ = io.write_all(out).await;
                let _ = io.flush().await;
                return false;
            }
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let (Framing::Chunked, true, Ok(fields)) = (framing, trailers_wanted, frame.into_trailers()) {
                    out.extend_from_slice(b"0\r\n");
                    for (name, value) in &fields {
                        field(out, name.as_str().as_bytes(), value.as_bytes());
                    }
                    out.extend_from_slice(b"\r\n");
                    return finish(io, out).await;
                }
                continue;
            }
        };
        if data.is_empty() {
            continue;
        }
        match framing {
            Framing::None => continue,
            Framing::Length(_) => {
                let n = data.len() as u64;
                if n > left {
                    tracing::debug!("response body longer than its Content-Length; closing the connection");
                    let _ = io.write_all(out).await;
                    return false;
                }
                left -= n;
            }
            Framing::Chunked => {
                out.extend_from_slice(digits(data.len() as u64, 16).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        if data.len() <= COALESCE && out.len() + data.len() <= MAX_OUT {
            out.extend_from_slice(&data);
        } else {
            if write_both(io, out, &data).await.is_err() {
                return false;
            }
            out.clear();
        }
        if framing == Framing::Chunked {
            out.extend_from_slice(b"\r\n");
        }
    }
    match framing {
        Framing::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
        Framing::Length(_) if left > 0 => {
            tracing::debug!(
                missing = left,
                "response body shorter than its Content-Length; closing the connection"
            );
            let _ = io.write_all(out).await;
            let _ = io.flush().await;
            return false;
        }
        _ => {}
    }
    finish(io, out).await
}

/// `first` then `second`, in vectored writes (one system call when the socket takes both).
async fn write_both<S: AsyncWrite + Unpin>(io: &mut S, mut first: &[u8], mut second: &[u8]) -> std::io::Result<()> {
    while !first.is_empty() {
        let n = io
            .write_vectored(&[std::io::IoSlice::new(first), std::io::IoSlice::new(second)])
            .await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        if n < first.len() {
            first = &first[n..];
        } else {
            second = &second[n - first.len()..];
            first = &[];
        }
    }
    io.write_all(second).await
}

async fn finish<S: AsyncWrite + Unpin>(io: &mut S, out: &mut Vec<u8>) -> bool {
    let ok = io.write_all(out).await.is_ok() && io.flush().await.is_ok();
    out.clear();
    ok
}
