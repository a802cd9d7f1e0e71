//! How an HTTP/1.1 message body is delimited (RFC 9112 section 6), decided once from the framing fields, for
//! requests the gateway receives and responses it reads from backends; plus the trailer fields it passes on.
//!
//! Requests are held to the strict reading (RFC 9112 section 6.1 and 6.3, HAProxy's behaviour): one
//! `Transfer-Encoding` field whose only coding is `chunked`, never together with `Content-Length`; lengths that
//! agree. Anything else is refused before a byte of the body is read, so no two parsers on the path can frame the
//! request differently (request smuggling). A response the gateway cannot frame or re-frame (a transfer coding
//! other than a lone `chunked`, disagreeing lengths) is the backend's error: 502.

use http::header::{self, HeaderMap, HeaderName};
use http::StatusCode;

use super::tokens::Codings;

/// How a body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all (HEAD, 1xx, 204, 304; a request without length or coding).
    None,
    /// Exactly this many bytes.
    Length(u64),
    Chunked,
    /// Until the sender closes the connection (responses only).
    Close,
}

/// Why a message's framing is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// Framing fields that contradict each other or break the grammar: 400 for a request, 502 for a response.
    #[error("{0}")]
    Malformed(&'static str),
    /// A transfer coding nobody registered (RFC 9112 section 6.1: 501 for a request).
    #[error("unknown transfer coding")]
    UnknownCoding,
}

/// The `Content-Length` fields of a message, read field by field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lengths {
    pub fields: u32,
    value: Option<u64>,
    bad: bool,
}

impl Lengths {
    /// Adds one `Content-Length` field: a decimal number, equal to any seen before. A list (`5, 5`), which RFC
    /// 9110 section 8.6 lets a recipient take, is malformed here as it is for hyper's server, so both parsers of
    /// the gateway frame a request the same (tests/differential.rs).
    pub fn add(&mut self, value: &[u8]) {
        self.fields += 1;
        match parse_length(value) {
            Some(n) if self.value.is_none_or(|m| m == n) => self.value = Some(n),
            _ => self.bad = true,
        }
    }

    /// The length, if any field gave one.
    pub fn get(&self) -> Result<Option<u64>, FramingError> {
        if self.bad {
            return Err(FramingError::Malformed("malformed or disagreeing Content-Length"));
        }
        Ok(self.value)
    }
}

/// A `Content-Length` value: 1 to 19 decimal digits (so it fits a u64).
pub fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// A request's framing from its `Transfer-Encoding` (`None`: no such field) and `Content-Length` fields.
pub fn request(codings: Option<&Codings>, lengths: &Lengths, http10: bool) -> Result<Framing, FramingError> {
    if let Some(c) = codings {
        let refuse = |why| Err(FramingError::Malformed(why));
        if http10 {
            return refuse("Transfer-Encoding in an HTTP/1.0 request");
        }
        if lengths.fields > 0 {
            return refuse("both Transfer-Encoding and Content-Length");
        }
        if c.malformed {
            return refuse("malformed Transfer-Encoding");
        }
        if c.fields > 1 {
            return refuse("several Transfer-Encoding fields");
        }
        if c.unknown {
            return Err(FramingError::UnknownCoding);
        }
        if c.other {
            return refuse("transfer coding other than chunked");
        }
        if !c.is_plain_chunked() {
            return refuse("chunked listed more than once, or not last");
        }
        return Ok(Framing::Chunked);
    }
    Ok(match lengths.get()? {
        None | Some(0) => Framing::None,
        Some(n) => Framing::Length(n),
    })
}

/// Whether a response to a request (`head_request`: to `HEAD`) with this status has no body, whatever its fields
/// say (RFC 9112 section 6.3, rules 1 and 2).
pub fn bodiless(status: StatusCode, head_request: bool) -> bool {
    head_request || status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED
}

/// A response's framing, as the gateway reads it from a backend.
pub fn response(
    status: StatusCode,
    head_request: bool,
    codings: Option<&Codings>,
    lengths: &Lengths,
) -> Result<Framing, FramingError> {
    if bodiless(status, head_request) {
        return Ok(Framing::None);
    }
    if let Some(c) = codings {
        // The gateway re-frames every body it forwards; a coding under `chunked` would reach the client
        // unlabelled, and a body without a final `chunked` has no end the gateway can tell.
        return if c.is_plain_chunked() {
            Ok(Framing::Chunked)
        } else {
            Err(FramingError::Malformed("transfer coding the gateway cannot frame"))
        };
    }
    Ok(match lengths.get()? {
        Some(n) => Framing::Length(n),
        None => Framing::Close,
    })
}

/// Checks the framing fields of a backend's response parsed elsewhere (hyper's client) and leaves them with one
/// meaning for the client: `Content-Length` goes when the body is chunked (RFC 9112 section 6.3) and on 1xx and
/// 204 (RFC 9110 section 8.6); equal duplicates become one. Err: a framing the gateway cannot forward (502).
pub fn clean_response(status: StatusCode, headers: &mut HeaderMap) -> Result<(), FramingError> {
    let mut codings = None::<Codings>;
    for v in headers.get_all(header::TRANSFER_ENCODING) {
        codings.get_or_insert_with(Codings::default).add(v.as_bytes());
    }
    if let Some(c) = &codings {
        if !bodiless(status, false) && !c.is_plain_chunked() {
            return Err(FramingError::Malformed("transfer coding the gateway cannot frame"));
        }
        headers.remove(header::CONTENT_LENGTH);
        return Ok(());
    }
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let (Some(first), Some(_)) = (values.next(), values.next()) else {
        if status.is_informational() || status == StatusCode::NO_CONTENT {
            headers.remove(header::CONTENT_LENGTH);
        }
        return Ok(());
    };
    let first = first.clone();
    let mut lengths = Lengths::default();
    for v in headers.get_all(header::CONTENT_LENGTH) {
        lengths.add(v.as_bytes());
    }
    lengths.get()?;
    headers.remove(header::CONTENT_LENGTH);
    if !(status.is_informational() || status == StatusCode::NO_CONTENT) {
        headers.insert(header::CONTENT_LENGTH, first);
    }
    Ok(())
}

/// Whether a field may not travel as a trailer (RFC 9110 section 6.5.1): message framing, routing, request
/// modifiers (controls, conditionals, authentication), response control data and content metadata the recipient
/// would have needed before the body, and connection-specific fields.
pub fn is_forbidden_trailer(name: &HeaderName) -> bool {
    static FORBIDDEN: [HeaderName; 36] = [
        header::AGE,
        header::AUTHORIZATION,
        header::CACHE_CONTROL,
        header::CONNECTION,
        header::CONTENT_ENCODING,
        header::CONTENT_LENGTH,
        header::CONTENT_RANGE,
        header::CONTENT_TYPE,
        header::COOKIE,
        header::DATE,
        header::EXPECT,
        header::EXPIRES,
        header::HOST,
        header::IF_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_NONE_MATCH,
        header::IF_RANGE,
        header::IF_UNMODIFIED_SINCE,
        header::LOCATION,
        header::MAX_FORWARDS,
        header::PRAGMA,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::RANGE,
        header::RETRY_AFTER,
        header::SET_COOKIE,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::VARY,
        header::WARNING,
        header::WWW_AUTHENTICATE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        HeaderName::from_static("http2-settings"),
    ];
    FORBIDDEN.contains(name)
}

/// Removes the fields that may not be trailers from a trailer section.
pub fn retain_trailers(trailers: &mut HeaderMap) {
    if trailers.keys().any(is_forbidden_trailer) {
        let forbidden: Vec<HeaderName> = trailers.keys().filter(|n| is_forbidden_trailer(n)).cloned().collect();
        for name in forbidden {
            trailers.remove(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn codings(fields: &[&str]) -> Codings {
        let mut c = Codings::default();
        for f in fields {
            c.add(f.as_bytes());
        }
        c
    }

    fn lengths(fields: &[&str]) -> Lengths {
        let mut l = Lengths::default();
        for f in fields {
            l.add(f.as_bytes());
        }
        l
    }

    #[test]
    fn requests_take_one_chunked_or_agreeing_lengths() {
        let none = Lengths::default();
        assert_eq!(request(None, &none, false), Ok(Framing::None));
        assert_eq!(request(None, &lengths(&["0"]), false), Ok(Framing::None));
        assert_eq!(request(None, &lengths(&["5", "5"]), false), Ok(Framing::Length(5)));
        assert_eq!(
            request(Some(&codings(&["chunked"])), &none, false),
            Ok(Framing::Chunked)
        );
        for bad in [
            &["5", "6"][..],
            &["5, 6"],
            &["-1"],
            &["+5"],
            &["0x5"],
            &[""],
            &["12345678901234567890"],
        ] {
            assert!(
                matches!(request(None, &lengths(bad), false), Err(FramingError::Malformed(_))),
                "{bad:?}"
            );
        }
        for (te, want) in [
            (
                &["chunked, chunked"][..],
                FramingError::Malformed("chunked listed more than once, or not last"),
            ),
            (
                &["gzip, chunked"],
                FramingError::Malformed("transfer coding other than chunked"),
            ),
            (
                &["chunked", "chunked"],
                FramingError::Malformed("several Transfer-Encoding fields"),
            ),
            (&["x-custom, chunked"], FramingError::UnknownCoding),
            (&["x-custom"], FramingError::UnknownCoding),
            (&["chunked;q=1"], FramingError::Malformed("malformed Transfer-Encoding")),
        ] {
            assert_eq!(request(Some(&codings(te)), &none, false), Err(want), "{te:?}");
        }
        assert!(request(Some(&codings(&["chunked"])), &lengths(&["3"]), false).is_err());
        assert!(request(Some(&codings(&["chunked"])), &none, true).is_err());
    }

    #[test]
    fn responses_the_gateway_can_frame() {
        let ok = StatusCode::OK;
        let none = Lengths::default();
        assert_eq!(response(ok, false, None, &none), Ok(Framing::Close));
        assert_eq!(response(ok, false, None, &lengths(&["0", "0"])), Ok(Framing::Length(0)));
        assert_eq!(
            response(ok, false, Some(&codings(&["chunked"])), &lengths(&["9"])),
            Ok(Framing::Chunked)
        );
        for te in [
            &["gzip"][..],
            &["gzip, chunked"],
            &["chunked, gzip"],
            &["chunked, chunked"],
        ] {
            assert!(response(ok, false, Some(&codings(te)), &none).is_err(), "{te:?}");
        }
        assert_eq!(
            response(StatusCode::NO_CONTENT, false, None, &lengths(&["5"])),
            Ok(Framing::None)
        );
        assert_eq!(response(ok, true, Some(&codings(&["gzip"])), &none), Ok(Framing::None));
    }

    #[test]
    fn response_fields_are_left_with_one_meaning() {
        let clean = |status: u16, fields: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (n, v) in fields {
                h.append(*n, HeaderValue::from_static(v));
            }
            clean_response(StatusCode::from_u16(status).unwrap(), &mut h).map(|()| h)
        };
        let h = clean(200, &[("transfer-encoding", "chunked"), ("content-length", "9")]).unwrap();
        assert!(!h.contains_key("content-length"));
        let h = clean(304, &[("content-length", "0"), ("content-length", "0")]).unwrap();
        assert_eq!(h.get_all("content-length").iter().count(), 1);
        let h = clean(204, &[("content-length", "0")]).unwrap();
        assert!(!h.contains_key("content-length"));
        assert!(clean(200, &[("transfer-encoding", "gzip")]).is_err());
        assert!(clean(200, &[("content-length", "1"), ("content-length", "2")]).is_err());
        let h = clean(200, &[("content-length", "3"), ("x", "y")]).unwrap();
        assert_eq!(h["content-length"], "3");
    }

    #[test]
    fn forbidden_trailers_go_and_others_stay() {
        let mut t = HeaderMap::new();
        for (n, v) in [
            ("content-length", "9"),
            ("host", "evil"),
            ("transfer-encoding", "chunked"),
            ("set-cookie", "a=b"),
            ("x-sum", "42"),
            ("grpc-status", "0"),
            ("server-timing", "db;dur=53"),
        ] {
            t.append(n, HeaderValue::from_static(v));
        }
        retain_trailers(&mut t);
        let mut names: Vec<&str> = t.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["grpc-status", "server-timing", "x-sum"]);
    }
}
