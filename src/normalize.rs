//! Normalisation of request paths and hosts, shared by translation (to validate Ingress paths) and the proxy (to
//! route and forward requests). The path that is matched is the path that is forwarded.
//!
//! Paths: percent-decode unreserved characters, uppercase the remaining escapes, merge repeated slashes, remove
//! `.` and `..` segments. Rejected: an encoded `/` or `\`, an encoded NUL, a raw backslash, control bytes, a bad
//! escape, `..` that would climb above the root, and a segment whose part before its parameters (`;`, or `%3B`)
//! is `.` or `..` in any encoding (`..;`, `%2e%2e;`, `.;x`, `..%3B`): Tomcat and Jetty strip path parameters
//! and then treat the segment as a dot segment, so `/public/..;/private` would reach `/private` behind a route
//! that exposes `/public` only. Hosts: ASCII only, lowercased, port removed and checked,
//! trailing dot removed.

use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is not absolute")]
    NotAbsolute,
    #[error("bad percent-escape in path")]
    BadEscape,
    #[error("encoded slash (%2F) in path")]
    EncodedSlash,
    #[error("encoded backslash (%5C) in path")]
    EncodedBackslash,
    #[error("encoded NUL (%00) in path")]
    EncodedNul,
    #[error("backslash in path")]
    Backslash,
    #[error("control character in path")]
    ControlChar,
    #[error("path climbs above the root")]
    AboveRoot,
    #[error("dot segment with parameters (`..;`) in path")]
    DotSegmentParameters,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("empty host")]
    Empty,
    #[error("host is not ASCII or has a character not allowed in a host name")]
    BadChar,
    #[error("malformed port in host")]
    BadPort,
    #[error("malformed IPv6 literal in host")]
    BadIpv6,
    #[error("empty label in host")]
    EmptyLabel,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// True when `path` certainly needs no rewriting: no escapes, no empty or dot segments, no backslash.
fn is_clean(path: &[u8]) -> bool {
    let mut prev_slash = false;
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        match b {
            b'%' | b'\\' => return false,
            0..=0x1f | 0x7f => return false,
            b'/' => {
                if prev_slash {
                    return false;
                }
                prev_slash = true;
            }
            b'.' if prev_slash => {
                // "/." followed by end, "/" or ";" (or "." then one of those, for "/..") is a dot segment, with
                // or without parameters.
                match path.get(i + 1) {
                    None | Some(b'/' | b';') => return false,
                    Some(b'.') if matches!(path.get(i + 2), None | Some(b'/' | b';')) => return false,
                    _ => prev_slash = false,
                }
            }
            _ => prev_slash = false,
        }
        i += 1;
    }
    true
}

/// Normalises a request path (without the query string). Borrows when nothing changes, which is the common case.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_clean(bytes) {
        return Ok(Cow::Borrowed(path));
    }
    // Pass 1: escapes.
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\\' => return Err(PathError::Backslash),
            0..=0x1f | 0x7f => return Err(PathError::ControlChar),
            b'%' => {
                let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(hex_val),
                    bytes.get(i + 2).copied().and_then(hex_val),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let v = h * 16 + l;
                match v {
                    b'/' => return Err(PathError::EncodedSlash),
                    b'\\' => return Err(PathError::EncodedBackslash),
                    0 => return Err(PathError::EncodedNul),
                    v if is_unreserved(v) => decoded.push(v),
                    _ => {
                        decoded.push(b'%');
                        decoded.push(bytes[i + 1].to_ascii_uppercase());
                        decoded.push(bytes[i + 2].to_ascii_uppercase());
                    }
                }
                i += 3;
            }
            _ => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    // Pass 2: segments. Empty segments merge; "." drops; ".." pops.
    let mut segments: Vec<&[u8]> = Vec::new();
    let mut trailing_slash = false;
    for seg in decoded[1..].split(|&b| b == b'/') {
        if seg.len() > 1 && is_dot_segment_with_parameters(seg) {
            return Err(PathError::DotSegmentParameters);
        }
        match seg {
            b"" => trailing_slash = true,
            b"." => trailing_slash = true,
            b".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                trailing_slash = true;
            }
            s => {
                segments.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        // Every byte came from a &str or is an ASCII escape, and splitting on '/' keeps UTF-8 sequences whole.
        out.push_str(std::str::from_utf8(s).map_err(|_| PathError::BadEscape)?);
    }
    if segments.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// Whether a segment (unreserved escapes already decoded, so `%2e` is `.`) is `.` or `..` followed by parameters:
/// `;` or its escape `%3B` (servers that decode before splitting parameters see `;` there too).
fn is_dot_segment_with_parameters(seg: &[u8]) -> bool {
    let dots = seg.iter().take_while(|&&b| b == b'.').count();
    if dots == 0 || dots > 2 {
        return false;
    }
    let rest = &seg[dots..];
    rest.first() == Some(&b';') || (rest.len() >= 3 && rest[0] == b'%' && rest[1] == b'3' && rest[2] == b'B')
}

/// A pchar or '/', per RFC 3986; used to decide whether an Ingress path is a clean absolute path.
fn is_path_char(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'/' | b'%' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b':' | b'@'
        )
}

/// Validates a path written in an Ingress: it must be absolute, made of URI path characters, and already in
/// normal form (so the path an Ingress names is the path requests are matched against).
pub fn validate_ingress_path(path: &str) -> Result<(), String> {
    if let Some(b) = path.bytes().find(|&b| !is_path_char(b)) {
        return Err(format!("path {path:?} has the character {:?}, which is not allowed in a URI path (regular expressions are not supported)", b as char));
    }
    match normalize_path(path) {
        Err(e) => Err(format!("path {path:?} is invalid: {e}")),
        Ok(n) if n != path => Err(format!("path {path:?} is not in normal form (it would be {n:?})")),
        Ok(_) => Ok(()),
    }
}

/// A host as received, split and normalised: lowercase, no port, no trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalHost<'a> {
    pub name: Cow<'a, str>,
    pub port: Option<u16>,
}

/// Parses a `Host` header or `:authority` value (no userinfo).
pub fn normalize_host(raw: &str) -> Result<NormalHost<'_>, HostError> {
    if raw.is_empty() {
        return Err(HostError::Empty);
    }
    let (name, port) = if raw.starts_with('[') {
        let end = raw.find(']').ok_or(HostError::BadIpv6)?;
        let inner = &raw[1..end];
        if inner.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(HostError::BadIpv6);
        }
        let rest = &raw[end + 1..];
        let port = match rest {
            "" => None,
            r => Some(parse_port(r.strip_prefix(':').ok_or(HostError::BadPort)?)?),
        };
        (&raw[..end + 1], port)
    } else {
        match raw.rsplit_once(':') {
            Some((n, p)) => (n, Some(parse_port(p)?)),
            None => (raw, None),
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err(HostError::Empty);
    }
    if !name.starts_with('[') {
        // One pass: the characters of a host name, and no empty label. One trailing dot (the root label) was
        // removed above; any other empty label (`a..`, `.a`, `a..b`) is no DNS name, and normalising would not be
        // idempotent (`a..` would become `a.`, a name of its own).
        let mut after_dot = true;
        for b in name.bytes() {
            if b == b'.' {
                if after_dot {
                    return Err(HostError::EmptyLabel);
                }
                after_dot = true;
            } else if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_') {
                after_dot = false;
            } else {
                return Err(HostError::BadChar);
            }
        }
        if after_dot {
            return Err(HostError::EmptyLabel);
        }
    }
    let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    };
    Ok(NormalHost { name, port })
}

fn parse_port(p: &str) -> Result<u16, HostError> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HostError::BadPort);
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(HostError::BadPort),
        Ok(n) => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths_borrow() {
        for p in ["/", "/a", "/a/", "/a/b.c/d", "/.well-known/x", "/a..b", "/a/.b"] {
            assert!(matches!(normalize_path(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn normalises() {
        for (input, want) in [
            ("//a///b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/b/..", "/a/"),
            ("/a/b/../c", "/a/c"),
            ("/a/.", "/a/"),
            ("/%61%62c", "/abc"),
            ("/%7e%2d", "/~-"),
            ("/a%2fb".replace("2f", "3a").as_str(), "/a%3Ab"),
            ("/%e2%82%ac", "/%E2%82%AC"),
            ("/a/%2E%2E/b", "/b"),
            ("/a/%2e/", "/a/"),
            ("/..a", "/..a"),
            ("/a//", "/a/"),
        ] {
            assert_eq!(normalize_path(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn dot_segments_with_parameters_are_rejected_in_every_encoding() {
        for p in [
            "/public/..;/private",
            "/..;/",
            "/public/..;x=1/private",
            "/public/%2e%2e;/private",
            "/public/%2E%2E;/private",
            "/public/.%2e;/x",
            "/public/%2e.;/x",
            "/public/.;/x",
            "/public/.;",
            "/public/%2e;/x",
            "/public/..%3b/private",
            "/public/..%3B/private",
            "/public/.%3B/x",
            "/a/b/..;",
        ] {
            assert_eq!(normalize_path(p), Err(PathError::DotSegmentParameters), "{p}");
        }
        for (p, want) in [
            ("/public/a;b/c", "/public/a;b/c"),
            ("/public/..a;/x", "/public/..a;/x"),
            ("/public/a..;/x", "/public/a..;/x"),
            ("/public/;/x", "/public/;/x"),
            ("/public/...;/x", "/public/...;/x"),
            ("/public/%3B/x", "/public/%3B/x"),
        ] {
            assert_eq!(normalize_path(p).unwrap(), want, "{p}");
        }
    }

    #[test]
    fn rejects() {
        for (input, err) in [
            ("a", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
            ("/a%2Fb", PathError::EncodedSlash),
            ("/a%2fb", PathError::EncodedSlash),
            ("/a%5cb", PathError::EncodedBackslash),
            ("/a%00", PathError::EncodedNul),
            ("/a\\b", PathError::Backslash),
            ("/..", PathError::AboveRoot),
            ("/a/../..", PathError::AboveRoot),
            ("/%2e%2e/etc", PathError::AboveRoot),
            ("/%zz", PathError::BadEscape),
            ("/%4", PathError::BadEscape),
            ("/a\u{1}", PathError::ControlChar),
        ] {
            assert_eq!(normalize_path(input).unwrap_err(), err, "{input}");
        }
    }

    #[test]
    fn ingress_paths() {
        assert!(validate_ingress_path("/api/v1").is_ok());
        assert!(validate_ingress_path("/api/").is_ok());
        assert!(validate_ingress_path("/").is_ok());
        for bad in [
            "api",
            "/a//b",
            "/a/../b",
            "/a/./b",
            "/api(/|$)(.*)",
            "/a b",
            "/a?x=1",
            "/a#f",
            "/{x}",
            "/%2e",
        ] {
            assert!(validate_ingress_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts() {
        let h = normalize_host("Foo.Example.COM.:8080").unwrap();
        assert_eq!(h.name, "foo.example.com");
        assert_eq!(h.port, Some(8080));
        assert!(matches!(normalize_host("a.example").unwrap().name, Cow::Borrowed(_)));
        assert_eq!(normalize_host("a.example.").unwrap().name, "a.example");
        assert_eq!(normalize_host("[::1]:80").unwrap().name, "[::1]");
        assert_eq!(normalize_host("127.0.0.1").unwrap().port, None);
        for bad in [
            "",
            "a:",
            "a:x",
            "a:99999",
            "a:0",
            "é.example",
            "a b",
            "[::1",
            "[zz]",
            "a:80:80",
            ".",
            "a/b",
        ] {
            assert!(normalize_host(bad).is_err(), "{bad}");
        }
        // Found by fuzz/host (corpus crash-empty-label): `a..` normalised to `a.`, which normalised again to `a`.
        for bad in ["a..", "..", ".a", "a..b", "a..:80", ".a.example."] {
            assert_eq!(normalize_host(bad), Err(HostError::EmptyLabel), "{bad}");
        }
    }
}
