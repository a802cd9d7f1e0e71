//! Reads a TLS ClientHello far enough to learn its server name (SNI), without terminating anything: the bytes
//! read are kept, to be replayed to a passthrough backend or to the gateway's own TLS server.
//!
//! [`parse`] is pure and incremental over what has arrived so far: handshake records split across TCP reads,
//! and a ClientHello spread over several records (each at most 16 KiB, the whole bounded by the caller's
//! limit), are handled. What it accepts is deliberately narrow: TLS records of type handshake whose first
//! message is a ClientHello; anything else (SSLv2 hellos, alerts, plain HTTP) is [`HelloError::NotTls`] or
//! [`HelloError::Malformed`], and the connection is closed. A ClientHello without a `server_name` extension,
//! or one whose name is an IP address (RFC 6066 forbids that; rustls treats it as none too), has no SNI.

use std::fmt;

/// The largest ClientHello (handshake message plus record headers) read before giving up.
pub const MAX_HELLO: usize = 16 * 1024;

/// Record content type of handshake records.
const HANDSHAKE: u8 = 22;
/// Handshake message type of a ClientHello.
const CLIENT_HELLO: u8 = 1;
/// `server_name` extension (RFC 6066).
const SERVER_NAME: u16 = 0;
/// A record's payload may not exceed 2^14 bytes (RFC 8446 5.1).
const MAX_RECORD: usize = 1 << 14;

/// What a complete ClientHello told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// The DNS name the client asked for: lowercase, without a trailing dot. `None`: no SNI.
    pub sni: Option<String>,
    /// Bytes of `buf` the records holding the ClientHello took (the rest is what followed it).
    pub len: usize,
}

/// Why the bytes are not a ClientHello Portico can route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelloError {
    /// The first bytes are not a TLS handshake record.
    NotTls,
    /// A TLS handshake whose first message is not a well-formed ClientHello.
    Malformed(&'static str),
    /// The ClientHello is larger than the limit.
    TooLarge,
}

impl fmt::Display for HelloError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HelloError::NotTls => f.write_str("not a TLS handshake"),
            HelloError::Malformed(what) => write!(f, "malformed ClientHello: {what}"),
            HelloError::TooLarge => write!(f, "ClientHello larger than {MAX_HELLO} bytes"),
        }
    }
}

impl std::error::Error for HelloError {}

/// Parses the ClientHello at the start of `buf`: `Ok(None)` when more bytes are needed, `Ok(Some(hello))` once
/// it is complete, an error as soon as the bytes cannot be one (or the hello would exceed `max` bytes).
pub fn parse(buf: &[u8], max: usize) -> Result<Option<ClientHello>, HelloError> {
    // The handshake bytes of the records seen so far; borrowed while there is one record.
    let mut joined: Vec<u8> = Vec::new();
    let mut first: &[u8] = &[];
    let mut at = 0;
    loop {
        let Some(header) = buf.get(at..at + 5) else {
            if at == 0 && !buf.is_empty() && buf[0] != HANDSHAKE {
                return Err(HelloError::NotTls);
            }
            return need_more(at, max);
        };
        if header[0] != HANDSHAKE {
            return Err(if at == 0 {
                HelloError::NotTls
            } else {
                HelloError::Malformed("a record of another type inside the ClientHello")
            });
        }
        if header[1] != 3 {
            return Err(HelloError::NotTls);
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > MAX_RECORD {
            return Err(HelloError::Malformed("bad record length"));
        }
        if at + 5 + len > max {
            return Err(HelloError::TooLarge);
        }
        let Some(payload) = buf.get(at + 5..at + 5 + len) else {
            return need_more(at + 5 + len, max);
        };
        at += 5 + len;
        let handshake: &[u8] = if at == 5 + len {
            first = payload;
            first
        } else {
            if joined.is_empty() {
                joined.extend_from_slice(first);
            }
            joined.extend_from_slice(payload);
            &joined
        };
        if handshake[0] != CLIENT_HELLO {
            return Err(HelloError::Malformed(
                "the first handshake message is not a ClientHello",
            ));
        }
        let Some(h) = handshake.get(1..4) else {
            continue;
        };
        let body_len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
        if 4 + body_len > max {
            return Err(HelloError::TooLarge);
        }
        let Some(body) = handshake.get(4..4 + body_len) else {
            continue;
        };
        let sni = server_name(body)?;
        return Ok(Some(ClientHello { sni, len: at }));
    }
}

fn need_more(wanted: usize, max: usize) -> Result<Option<ClientHello>, HelloError> {
    if wanted > max {
        Err(HelloError::TooLarge)
    } else {
        Ok(None)
    }
}

/// A cursor over a ClientHello's body; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], HelloError> {
        if self.0.len() < n {
            return Err(HelloError::Malformed(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, HelloError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, HelloError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length.
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], HelloError> {
        let n = self.u8(what)?;
        self.take(usize::from(n), what)
    }

    /// A vector with a two-byte length.
    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], HelloError> {
        let n = self.u16(what)?;
        self.take(usize::from(n), what)
    }
}

/// The server name in a ClientHello body (RFC 8446 4.1.2, RFC 6066 3).
fn server_name(body: &[u8]) -> Result<Option<String>, HelloError> {
    let mut r = Reader(body);
    let version = r.u16("version")?;
    if version >> 8 != 3 {
        return Err(HelloError::Malformed("version"));
    }
    r.take(32, "random")?;
    if r.vec8("session id")?.len() > 32 {
        return Err(HelloError::Malformed("session id"));
    }
    let suites = r.vec16("cipher suites")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(HelloError::Malformed("cipher suites"));
    }
    if r.vec8("compression methods")?.is_empty() {
        return Err(HelloError::Malformed("compression methods"));
    }
    if r.0.is_empty() {
        // No extensions at all (TLS 1.2 allows it): no SNI.
        return Ok(None);
    }
    let mut exts = Reader(r.vec16("extensions")?);
    if !r.0.is_empty() {
        return Err(HelloError::Malformed("bytes after the extensions"));
    }
    let mut sni = None;
    let mut seen = false;
    while !exts.0.is_empty() {
        let kind = exts.u16("extension type")?;
        let data = exts.vec16("extension")?;
        if kind != SERVER_NAME {
            continue;
        }
        if seen {
            return Err(HelloError::Malformed("two server_name extensions"));
        }
        seen = true;
        sni = host_name(data)?;
    }
    Ok(sni)
}

/// The first `host_name` of a `server_name` extension, normalised; `None` for an IP address.
fn host_name(data: &[u8]) -> Result<Option<String>, HelloError> {
    let mut r = Reader(data);
    let mut list = Reader(r.vec16("server name list")?);
    if !r.0.is_empty() || list.0.is_empty() {
        return Err(HelloError::Malformed("server name list"));
    }
    while !list.0.is_empty() {
        let kind = list.u8("server name type")?;
        let name = list.vec16("server name")?;
        if kind != 0 {
            continue;
        }
        let name = name.strip_suffix(b".").unwrap_or(name);
        // Labels of letters, digits, `-` and `_`, none empty (so no leading dot, no `..`, and no second trailing
        // dot: `a..` is not `a.`).
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split(|&b| b == b'.').all(|label| !label.is_empty())
            && name
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if !valid {
            return Err(HelloError::Malformed("server name"));
        }
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        if name.parse::<std::net::IpAddr>().is_ok() {
            return Ok(None);
        }
        return Ok(Some(name));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello body with these extensions (type, data).
    fn body(exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut b = vec![3, 3];
        b.extend_from_slice(&[7; 32]);
        b.push(0); // session id
        b.extend_from_slice(&[0, 2, 0x13, 0x01]); // one suite
        b.extend_from_slice(&[1, 0]); // null compression
        let mut e = Vec::new();
        for (kind, data) in exts {
            e.extend_from_slice(&kind.to_be_bytes());
            e.extend_from_slice(&(data.len() as u16).to_be_bytes());
            e.extend_from_slice(data);
        }
        b.extend_from_slice(&(e.len() as u16).to_be_bytes());
        b.extend_from_slice(&e);
        b
    }

    fn sni_ext(name: &[u8]) -> (u16, Vec<u8>) {
        let mut entry = vec![0];
        entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
        entry.extend_from_slice(name);
        let mut d = (entry.len() as u16).to_be_bytes().to_vec();
        d.extend_from_slice(&entry);
        (SERVER_NAME, d)
    }

    /// The handshake message in records of at most `chunk` bytes each.
    fn records(body: &[u8], chunk: usize) -> Vec<u8> {
        let mut msg = vec![CLIENT_HELLO];
        msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend_from_slice(body);
        let mut out = Vec::new();
        for c in msg.chunks(chunk) {
            out.extend_from_slice(&[HANDSHAKE, 3, 1]);
            out.extend_from_slice(&(c.len() as u16).to_be_bytes());
            out.extend_from_slice(c);
        }
        out
    }

    #[test]
    fn finds_the_server_name_in_one_or_several_records_arriving_in_pieces() {
        let b = body(&[(10, vec![0, 2, 0, 29]), sni_ext(b"App.Example.COM.")]);
        for chunk in [usize::MAX >> 1, 100, 7, 1] {
            let wire = records(&b, chunk.min(MAX_RECORD));
            let want = ClientHello {
                sni: Some("app.example.com".into()),
                len: wire.len(),
            };
            // Every prefix short of the whole is "need more"; the whole (and more after it) is the hello.
            for cut in 0..wire.len() {
                assert_eq!(parse(&wire[..cut], MAX_HELLO), Ok(None), "chunk {chunk} cut {cut}");
            }
            assert_eq!(parse(&wire, MAX_HELLO), Ok(Some(want.clone())));
            let mut more = wire.clone();
            more.extend_from_slice(&[23, 3, 3, 0, 1, 0]);
            assert_eq!(parse(&more, MAX_HELLO), Ok(Some(want)));
        }
    }

    #[test]
    fn no_extension_no_sni_and_ip_addresses_are_no_sni() {
        assert_eq!(parse(&records(&body(&[]), 1000), MAX_HELLO).unwrap().unwrap().sni, None);
        let mut no_exts = body(&[]);
        no_exts.truncate(no_exts.len() - 2);
        assert_eq!(parse(&records(&no_exts, 1000), MAX_HELLO).unwrap().unwrap().sni, None);
        let ip = records(&body(&[sni_ext(b"10.0.0.1")]), 1000);
        assert_eq!(parse(&ip, MAX_HELLO).unwrap().unwrap().sni, None);
    }

    #[test]
    fn what_is_not_a_client_hello_is_refused_early() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n", MAX_HELLO), Err(HelloError::NotTls));
        assert_eq!(parse(b"G", MAX_HELLO), Err(HelloError::NotTls));
        // SSLv2-style hello.
        assert_eq!(parse(&[0x80, 0x2e, 1, 3, 1], MAX_HELLO), Err(HelloError::NotTls));
        // A handshake record holding a ServerHello.
        assert!(matches!(
            parse(&[22, 3, 3, 0, 4, 2, 0, 0, 0], MAX_HELLO),
            Err(HelloError::Malformed(_))
        ));
        // An alert record between two halves of a hello.
        let wire = records(&body(&[sni_ext(b"a.example")]), 20);
        let mut bad = wire[..25].to_vec();
        bad.extend_from_slice(&[21, 3, 3, 0, 2, 2, 40]);
        assert!(matches!(parse(&bad, MAX_HELLO), Err(HelloError::Malformed(_))));
        // Bad names, duplicated extensions, lengths past the end.
        for b in [
            body(&[sni_ext(b"a b")]),
            body(&[sni_ext(b"")]),
            body(&[sni_ext(b".")]),
            body(&[sni_ext(b"a..")]),
            body(&[sni_ext(b"a..b")]),
            body(&[sni_ext(b".a")]),
            body(&[sni_ext(b"a.example"), sni_ext(b"b.example")]),
            body(&[(SERVER_NAME, vec![0, 9, 0, 0, 1, b'a'])]),
        ] {
            assert!(matches!(
                parse(&records(&b, 1000), MAX_HELLO),
                Err(HelloError::Malformed(_))
            ));
        }
    }

    /// The ClientHello a rustls client sends for `name`.
    fn rustls_hello(name: &str) -> Vec<u8> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let server = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), server).unwrap();
        let mut wire = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut wire).unwrap();
        }
        wire
    }

    #[test]
    fn reads_what_rustls_sends() {
        let wire = rustls_hello("App.Example.com");
        let hello = parse(&wire, MAX_HELLO).unwrap().unwrap();
        assert_eq!(hello.sni.as_deref(), Some("app.example.com"));
        assert_eq!(hello.len, wire.len());
        // rustls sends no SNI for an IP address.
        assert_eq!(parse(&rustls_hello("192.0.2.1"), MAX_HELLO).unwrap().unwrap().sni, None);
        // The fuzz target's seed corpus (`PORTICO_BLESS=1` rewrites it).
        if std::env::var_os("PORTICO_BLESS").is_some() {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/client_hello");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("rustls_sni"), &wire).unwrap();
            std::fs::write(dir.join("rustls_ip"), rustls_hello("192.0.2.1")).unwrap();
            std::fs::write(dir.join("split_records"), records(&body(&[sni_ext(b"a.example")]), 16)).unwrap();
            std::fs::write(dir.join("no_extensions"), records(&body(&[]), 1000)).unwrap();
        }
    }

    /// Found by the fuzz target (`fuzz/corpus/client_hello/two_trailing_dots`): a name ending in `..` kept a
    /// trailing dot after normalisation.
    #[test]
    fn a_name_with_two_trailing_dots_is_malformed() {
        let input = [
            22, 3, 1, 0, 16, 1, 0, 0, 61, 3, 3, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 22, 3, 1, 0, 16, 7, 7, 7, 7, 7, 7, 7, 7,
            7, 7, 7, 7, 7, 7, 7, 7, 22, 3, 1, 0, 16, 7, 7, 7, 7, 7, 7, 0, 0, 2, 19, 1, 1, 0, 0, 18, 0, 22, 3, 1, 0, 16,
            0, 0, 14, 0, 12, 0, 0, 9, 97, 108, 95, 45, 120, 109, 97, 46, 22, 3, 1, 0, 1, 46, 101,
        ];
        assert_eq!(parse(&input, MAX_HELLO), Err(HelloError::Malformed("server name")));
    }

    #[test]
    fn oversized_hellos_fail_as_soon_as_their_length_is_known() {
        let big = body(&[(21, vec![0; 20_000]), sni_ext(b"a.example")]);
        let wire = records(&big, MAX_RECORD);
        // The first record's header and the message length are enough to know.
        assert_eq!(parse(&wire[..9], MAX_HELLO), Err(HelloError::TooLarge));
        // A lower limit applies the same way.
        let small = records(&body(&[sni_ext(b"a.example")]), 1000);
        assert_eq!(parse(&small, 20), Err(HelloError::TooLarge));
    }
}
