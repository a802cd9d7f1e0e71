//! The gateway's own HTTP/1.1 response-head parser (the client side's): a complete response head at the start of
//! the read buffer becomes its status, fields (slices of the buffer) and [`Framing`], or an error when the backend
//! sent something the gateway cannot forward.
//!
//! The framing fields this client consumes are left out of the fields it returns: `Transfer-Encoding`,
//! `Content-Length` when the body is chunked or the status has none (204, 1xx) and any repeat of it, and
//! `Connection`/`Keep-Alive` when they only say close or keep-alive (other `Connection` options name hop-by-hop
//! fields, so that field stays for the proxy's strip to read).

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};

use super::framing::{self, Framing, Lengths};
use super::tokens::{Codings, ConnectionOptions};
use super::{MAX_FIELDS, MAX_HEAD};

/// The backend sent something that is not an HTTP/1.1 response the gateway can forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid response from the backend")]
pub struct Invalid;

/// A response head read from a backend.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// The connection may carry another exchange after this one.
    pub keep_alive: bool,
}

/// Where a kept field's name and value are in the buffer.
pub type Spans = Vec<(u32, u32, u32, u32)>;

/// The complete response head at the start of `buf`, taken out of it; `None`: not complete yet. `head_only`: the
/// request was `HEAD`. `spans`: the connection's scratch space. An interim (1xx) head other than 101 is returned
/// with no fields (the caller skips it); 101 is an error here (upgrades go through hyper's client).
pub fn parse(buf: &mut BytesMut, spans: &mut Spans, head_only: bool) -> Result<Option<Head>, Invalid> {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut parsed, buf, &mut fields)
    {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(None),
        _ => return Err(Invalid),
    };
    let status = parsed.code.and_then(|c| StatusCode::from_u16(c).ok()).ok_or(Invalid)?;
    let http10 = parsed.version == Some(0);
    if status.is_informational() {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(Invalid);
        }
        // 100 Continue, 103 Early Hints: skipped.
        let _ = buf.split_to(len);
        return Ok(Some(Head {
            status,
            version: Version::HTTP_11,
            headers: HeaderMap::new(),
            framing: Framing::None,
            keep_alive: true,
        }));
    }
    // Where each field is in the buffer: the values are then slices of it, not copies.
    let base = buf.as_ptr() as usize;
    spans.clear();
    spans.reserve(parsed.headers.len());
    let mut lengths = Lengths::default();
    let mut codings = None::<Codings>;
    let mut connection = ConnectionOptions::default();
    // The first `Content-Length` field, kept unless the framing says otherwise.
    let mut length_span = None;
    for h in parsed.headers.iter() {
        let name = h.name.as_bytes();
        let mut keep = true;
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths.add(h.value);
            keep = false;
            if length_span.is_none() {
                length_span = Some(spans.len());
                keep = true;
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            codings.get_or_insert_with(Codings::default).add(h.value);
            keep = false;
        } else if name.eq_ignore_ascii_case(b"connection") {
            let mut own = ConnectionOptions::default();
            own.add(h.value);
            connection.close |= own.close;
            connection.keep_alive |= own.keep_alive;
            // Kept only when it names fields (the proxy's strip reads it, then removes it).
            keep = own.names_fields;
        } else if name.eq_ignore_ascii_case(b"keep-alive") {
            keep = false;
        }
        if keep {
            spans.push((
                (name.as_ptr() as usize - base) as u32,
                name.len() as u32,
                (h.value.as_ptr() as usize - base) as u32,
                h.value.len() as u32,
            ));
        }
    }
    let framing = framing::response(status, head_only, codings.as_ref(), &lengths).map_err(|_| Invalid)?;
    // The length field stays where it tells the client something true: a length-framed body, or a HEAD or 304
    // answer (the length a GET would get).
    let keep_length = match framing {
        Framing::Length(_) => true,
        Framing::None => codings.is_none() && status != StatusCode::NO_CONTENT,
        Framing::Chunked | Framing::Close => false,
    };
    if let (Some(i), false) = (length_span, keep_length) {
        spans.remove(i);
    }
    let head = buf.split_to(len).freeze();
    let mut headers = super::maps::take(spans.len());
    for &(ns, nl, vs, vl) in spans.iter() {
        let (ns, nl, vs, vl) = (ns as usize, nl as usize, vs as usize, vl as usize);
        let name = HeaderName::from_bytes(&head[ns..ns + nl]).map_err(|_| Invalid)?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs..vs + vl)).map_err(|_| Invalid)?;
        headers.append(name, value);
    }
    let close = connection.close || (http10 && !connection.keep_alive) || framing == Framing::Close;
    Ok(Some(Head {
        status,
        version: if http10 { Version::HTTP_10 } else { Version::HTTP_11 },
        headers,
        framing,
        keep_alive: !close,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &[u8], head_only: bool) -> Result<Option<Head>, Invalid> {
        parse(&mut BytesMut::from(s), &mut Vec::new(), head_only)
    }

    fn names(h: &Head) -> Vec<&str> {
        h.headers.keys().map(HeaderName::as_str).collect()
    }

    #[test]
    fn framing_and_the_fields_kept() {
        let h = parse_str(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\nX: y\r\n\r\nok",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(2), true));
        assert_eq!(h.headers.get_all("content-length").iter().count(), 1);
        let h = parse_str(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\nConnection: keep-alive, x-p\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        assert_eq!(names(&h), ["connection"]);
        let h = parse_str(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, names(&h).len()), (Framing::None, 0));
        let h = parse_str(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, names(&h)), (Framing::None, vec!["content-length"]));
        let h = parse_str(b"HTTP/1.0 200 OK\r\n\r\nuntil close", false)
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        let h = parse_str(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, names(&h)), (Framing::None, vec!["content-length"]));
    }

    #[test]
    fn what_the_gateway_cannot_forward() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
            b"HTTP/1.1 2000 What\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Field: x\r\n\r\n",
        ] {
            assert!(parse_str(bad, false).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let big = [&b"HTTP/1.1 200 OK\r\nX: "[..], &vec![b'x'; MAX_HEAD]].concat();
        assert!(parse_str(&big, false).is_err());
        assert!(parse_str(b"HTTP/1.1 200 OK\r\nX", false).unwrap().is_none());
    }
}
