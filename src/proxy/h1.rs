//! The gateway's own HTTP/1.1 server side, for the requests nearly every connection carries: HTTP/1.1, no body,
//! no upgrade.
//!
//! hyper's server connection hands each request to a boxed service future and each response body back through
//! its dispatcher; here the connection's own task parses the request head, awaits [`Proxy::handle`] in place and
//! writes the response, head and small bodies in one write. Header values are slices of the read buffer, not
//! copies, and the buffers live as long as the connection.
//!
//! The head is parsed by [`crate::http1::request`], which decides every request's framing, including those it
//! leaves to hyper: contradictory framing (`Transfer-Encoding` other than one lone `chunked`, with a
//! `Content-Length`, disagreeing lengths) is answered here with 400 (501 for an unknown coding), and a head over
//! [`crate::http1::MAX_HEAD`] with 431; the connection then closes. Anything else hands the connection, with the
//! bytes read and not yet served, to hyper's HTTP/1.1 server for the rest of its life ([`Ended::HandOver`]): a
//! request with a body, `Expect`, an upgrade, HTTP/1.0, `CONNECT`, and every head httparse does not accept
//! (malformed, too many fields). hyper stays the one place that streams request bodies.
//!
//! Response framing: `HEAD`, 1xx, 204 and 304 responses have no body; 1xx and 204 lose any `Content-Length`
//! (RFC 9110 section 8.6), `HEAD` and 304 keep one; otherwise a `Content-Length` field is kept and enforced, a
//! body of known size gets one, and any other body is sent chunked (trailers only to a client that sent
//! `TE: trailers`, and only fields allowed in trailers). A body that fails or ends short of its length ends the
//! connection, so the client sees the truncation. `Date` is added when missing.
//!
//! While a request is in flight the socket is still read: pipelined requests are buffered, and the client closing
//! its side ends the connection and drops the request (hyper's default without half-close support).

use std::cell::RefCell;
use std::future::poll_fn;
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use http::header;
use http::{Method, StatusCode};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Sleep;

use super::error::ProxyError;
use super::server::{Activity, Check, Limits};
use super::{ClientBody, ConnInfo, Proxy, ProxyBody};
use crate::http1::request::{self as head, Parsed};
use crate::http1::{Framing, FramingError, MAX_HEAD};
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
                match head::parse(&mut buf, &mut spans) {
                    Parsed::Request(r) => break r,
                    // Part of a head, maybe read while the last request was in flight: its time counts from now
                    // at the latest.
                    Parsed::Partial => activity.bytes_arrived(),
                    Parsed::ForHyper => return Ended::HandOver(buf),
                    Parsed::Refuse(why) => {
                        refuse(io, &mut out, &mut buf, why, info).await;
                        return Ended::Closed;
                    }
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
        let head::Incoming {
            request,
            close,
            trailers,
        } = incoming;
        let request = request.map(|()| ClientBody::Empty);
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
        crate::http1::maps::give(parts.headers);
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

/// Answers a request the head parser refused, and closes: 431 for a head over the limit, 400 or 501 for its
/// framing. The request is not read further (its body would be framed by guesswork).
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    out: &mut Vec<u8>,
    buf: &mut BytesMut,
    why: Result<(), FramingError>,
    info: &ConnInfo,
) {
    let error = match why {
        Ok(()) => ProxyError::HeadersTooLarge,
        Err(FramingError::UnknownCoding) => ProxyError::UnknownCoding,
        Err(FramingError::Malformed(why)) => ProxyError::BadRequest(why),
    };
    tracing::debug!(peer = %info.peer, error = %error, "request refused before routing");
    let (parts, body) = error.response().into_parts();
    out.clear();
    let framing = encode_head(out, &parts, &body, false, false);
    if write_body(io, out, buf, body, framing, false).await {
        let _ = io.shutdown().await;
    }
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
    let bodiless = crate::http1::framing::bodiless(status, head_request);
    // No length at all on 1xx and 204 (RFC 9110 section 8.6); at most one on HEAD and 304 answers.
    let lengthless = status.is_informational() || status == StatusCode::NO_CONTENT;
    // `Content-Length` fields: one kept on a HEAD or 304 answer, else written below once framing is decided (a
    // single readable one is enforced; otherwise the body's own size decides).
    let (mut length, mut lengths) = (None, 0);
    let mut dated = false;
    for (name, value) in &parts.headers {
        if *name == header::TRANSFER_ENCODING || *name == header::CONNECTION {
            // This side's to decide.
            continue;
        }
        if *name == header::CONTENT_LENGTH {
            lengths += 1;
            if !bodiless {
                length = crate::http1::framing::parse_length(value.as_bytes());
                continue;
            }
            if lengthless || lengths > 1 {
                continue;
            }
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
        Framing::Chunked | Framing::Close => field(out, b"transfer-encoding", b"chunked"),
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
                        if crate::http1::framing::is_forbidden_trailer(name) {
                            continue;
                        }
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
            Framing::None | Framing::Close => continue,
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
