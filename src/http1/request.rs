//! The gateway's own HTTP/1.1 request-head parser (the server side's first stage): a complete head at the start
//! of the read buffer becomes a request whose target and field values are slices of that buffer, not copies.
//! It serves HTTP/1.1 requests without a body; it refuses (with the status to answer) heads whose framing is
//! wrong or which are too large; anything else is left to hyper's server ([`Parsed::ForHyper`]).

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri, Version};

use super::framing::{self, Framing, FramingError, Lengths};
use super::tokens::{self, Codings, ConnectionOptions};
use super::{MAX_FIELDS, MAX_HEAD};

/// Fields the proxy adds to a request on its way upstream (`X-Forwarded-*`, `X-Real-IP`).
const FORWARDING_FIELDS: usize = 5;

/// Where a field's name and value are in the buffer: (start, length) each.
pub type Span = (usize, usize);

/// A request head this parser serves.
#[derive(Debug)]
pub struct Incoming {
    pub request: Request<()>,
    /// The client asked to close after this response (`Connection: close`).
    pub close: bool,
    /// The client accepts trailers (`TE: trailers`).
    pub trailers: bool,
}

/// What the head at the start of the buffer is.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // Moved once per request; boxing the request would allocate for each.
pub enum Parsed {
    /// Not complete yet.
    Partial,
    /// Served here: taken out of the buffer.
    Request(Incoming),
    /// Left to hyper's server, with the buffer as it was: a body, an upgrade, `Expect`, HTTP/1.0, `CONNECT`, a
    /// head httparse or `http` refuses (hyper answers those).
    ForHyper,
    /// Refused: answer and close. The framing is contradictory (`Err(Malformed)`: 400; `Err(UnknownCoding)`:
    /// 501), or the head is over [`MAX_HEAD`] (`Ok(())`: 431).
    Refuse(Result<(), FramingError>),
}

/// Parses the head at the start of `buf`. `spans`: the connection's scratch space for where the fields are.
pub fn parse(buf: &mut BytesMut, spans: &mut Vec<(Span, Span)>) -> Parsed {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut parsed, buf, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Parsed::Refuse(Ok(())),
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::ForHyper,
    };
    if len > MAX_HEAD {
        return Parsed::Refuse(Ok(()));
    }
    let (Some(method), Some(target), Some(version)) = (parsed.method, parsed.path, parsed.version) else {
        return Parsed::ForHyper;
    };
    // Where the target and each field are in the buffer: they become slices of it, not copies.
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
    let target = span(target.as_bytes());
    spans.clear();
    spans.reserve(parsed.headers.len());
    let mut connection = ConnectionOptions::default();
    let mut trailers = false;
    let mut codings = None::<Codings>;
    let mut lengths = Lengths::default();
    let mut hyper = false;
    for h in parsed.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths.add(h.value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            codings.get_or_insert_with(Codings::default).add(h.value);
        } else if name.eq_ignore_ascii_case(b"connection") {
            connection.add(h.value);
        } else if name.eq_ignore_ascii_case(b"te") {
            trailers |= tokens::has(h.value, b"trailers");
        } else if name.eq_ignore_ascii_case(b"upgrade") || name.eq_ignore_ascii_case(b"expect") {
            hyper = true;
        }
        spans.push((span(name), span(h.value)));
    }
    // The framing is decided here for every request, including those hyper will serve: what this parser refuses,
    // no later parser gets to read differently.
    match framing::request(codings.as_ref(), &lengths, version == 0) {
        Err(e) => return Parsed::Refuse(Err(e)),
        Ok(Framing::None) => {}
        Ok(_) => hyper = true,
    }
    if hyper || connection.upgrade || version != 1 {
        return Parsed::ForHyper;
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::ForHyper;
    };
    if method == Method::CONNECT {
        return Parsed::ForHyper;
    }
    let head = buf.split_to(len).freeze();
    match build(&head, method, target, spans) {
        Some(request) => Parsed::Request(Incoming {
            request,
            close: connection.close,
            trailers,
        }),
        None => {
            // Put back for hyper (its answer is a 400): a copy, on this rare path only.
            let mut back = BytesMut::with_capacity(head.len() + buf.len());
            back.extend_from_slice(&head);
            back.extend_from_slice(buf);
            *buf = back;
            Parsed::ForHyper
        }
    }
}

fn build(head: &Bytes, method: Method, (ts, tl): Span, fields: &[(Span, Span)]) -> Option<Request<()>> {
    let uri = Uri::from_maybe_shared(head.slice(ts..ts + tl)).ok()?;
    // Room for the forwarding fields the proxy adds, so they do not grow the map.
    let mut headers = super::maps::take(fields.len() + FORWARDING_FIELDS);
    for &((ns, nl), (vs, vl)) in fields {
        let name = HeaderName::from_bytes(&head[ns..ns + nl]).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs..vs + vl)).ok()?;
        headers.append(name, value);
    }
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Some(request)
}

/// Checks the framing fields of a request that hyper's server parsed (a connection handed over to it): the same
/// rules as [`parse`], so a request is framed the same whichever parser read it.
pub fn check(version: Version, headers: &HeaderMap) -> Result<(), FramingError> {
    let mut codings = None::<Codings>;
    for v in headers.get_all(http::header::TRANSFER_ENCODING) {
        codings.get_or_insert_with(Codings::default).add(v.as_bytes());
    }
    let mut lengths = Lengths::default();
    for v in headers.get_all(http::header::CONTENT_LENGTH) {
        lengths.add(v.as_bytes());
    }
    framing::request(codings.as_ref(), &lengths, version == Version::HTTP_10).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> (Parsed, BytesMut) {
        let mut buf = BytesMut::from(s.as_bytes());
        let mut spans = Vec::new();
        (parse(&mut buf, &mut spans), buf)
    }

    #[test]
    fn bodiless_requests_are_served_and_taken_out_of_the_buffer() {
        let (p, rest) = parse_str("GET /a?b HTTP/1.1\r\nHost: h\r\nConnection: close\r\nTE: trailers\r\n\r\nGET");
        let Parsed::Request(r) = p else { panic!("{p:?}") };
        assert_eq!(r.request.uri(), "/a?b");
        assert_eq!(r.request.headers()["host"], "h");
        assert!(r.close && r.trailers);
        assert_eq!(&rest[..], b"GET");
        let (p, _) = parse_str("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
        assert!(matches!(p, Parsed::Request(_)), "{p:?}");
        // Found by fuzz/request_head (corpus crash-cl-00-and-0): two spellings of zero are one length, and the
        // request has no body (hyper's server agrees).
        let (p, _) =
            parse_str("POST / HTTP/1.1\r\nHost: xample.tert\r\nContent-Length: 00\r\nContent-Length: 0\r\n\r\n");
        assert!(matches!(p, Parsed::Request(_)), "{p:?}");
    }

    #[test]
    fn bodies_upgrades_and_the_unusual_go_to_hyper_untouched() {
        for head in [
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.0\r\n\r\n",
            "CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
            "GET /a b HTTP/1.1\r\n\r\n",
        ] {
            let (p, rest) = parse_str(head);
            assert!(matches!(p, Parsed::ForHyper), "{head:?}: {p:?}");
            assert_eq!(&rest[..], head.as_bytes());
        }
    }

    #[test]
    fn contradictory_framing_and_huge_heads_are_refused() {
        for (head, want) in [
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", false),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", false),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                false,
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
                false,
            ),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", false),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: x-custom\r\n\r\n", true),
        ] {
            let (p, _) = parse_str(head);
            match p {
                Parsed::Refuse(Err(FramingError::UnknownCoding)) => assert!(want, "{head:?}"),
                Parsed::Refuse(Err(FramingError::Malformed(_))) => assert!(!want, "{head:?}"),
                other => panic!("{head:?}: {other:?}"),
            }
        }
        let big = format!("GET / HTTP/1.1\r\nCookie: {}", "x".repeat(MAX_HEAD));
        assert!(matches!(parse_str(&big).0, Parsed::Refuse(Ok(()))));
        let (p, _) = parse_str("GET / HTTP/1.1\r\nHo");
        assert!(matches!(p, Parsed::Partial));
    }

    #[test]
    fn hyper_parsed_requests_meet_the_same_rules() {
        let mut h = HeaderMap::new();
        h.append("transfer-encoding", HeaderValue::from_static("chunked"));
        assert!(check(Version::HTTP_11, &h).is_ok());
        h.append("transfer-encoding", HeaderValue::from_static("chunked"));
        assert!(check(Version::HTTP_11, &h).is_err());
        let mut h = HeaderMap::new();
        h.append("transfer-encoding", HeaderValue::from_static("x-custom, chunked"));
        assert_eq!(check(Version::HTTP_11, &h), Err(FramingError::UnknownCoding));
    }
}
