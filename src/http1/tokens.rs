//! Comma-separated list fields (RFC 9110 section 5.6.1) and the two the framing reads: `Connection` options and
//! `Transfer-Encoding` codings. The one parser for them; the server, the client and the proxy's header edits all
//! read lists through [`list`].

/// The elements of a list field value: split on `,`, trimmed of optional whitespace, empty elements skipped
/// (`a, , b` is `a`, `b`).
pub fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Whether a list field value holds `token` (compared case-insensitively).
pub fn has(value: &[u8], token: &[u8]) -> bool {
    list(value).any(|t| t.eq_ignore_ascii_case(token))
}

/// `tchar` of RFC 9110 section 5.6.2.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A non-empty run of `tchar`s.
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// What the `Connection` fields of a message say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionOptions {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
    /// Another option: it names a hop-by-hop field to remove.
    pub names_fields: bool,
}

impl ConnectionOptions {
    /// Adds one `Connection` field's options.
    #[inline(always)]
    pub fn add(&mut self, value: &[u8]) {
        for token in list(value) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                self.upgrade = true;
                self.names_fields = true;
            } else {
                self.names_fields = true;
            }
        }
    }
}

/// What the `Transfer-Encoding` fields of a message say, read field by field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Codings {
    /// `Transfer-Encoding` fields seen.
    pub fields: u32,
    /// Codings listed, over all fields.
    pub codings: u32,
    /// `chunked` listed (any position).
    pub chunked: u32,
    /// The last coding listed is `chunked` (without parameters).
    pub chunked_last: bool,
    /// A registered coding other than `chunked` (`gzip`, `deflate`, `compress`, ...).
    pub other: bool,
    /// A coding nobody registered.
    pub unknown: bool,
    /// A coding with parameters, or an element that is not a coding at all.
    pub malformed: bool,
}

impl Codings {
    /// Adds one `Transfer-Encoding` field.
    pub fn add(&mut self, value: &[u8]) {
        self.fields += 1;
        let mut any = false;
        for element in list(value) {
            any = true;
            self.codings += 1;
            let (name, params) = match element.iter().position(|&b| b == b';') {
                Some(i) => (element[..i].trim_ascii_end(), true),
                None => (element, false),
            };
            let chunked = name.eq_ignore_ascii_case(b"chunked");
            self.chunked_last = chunked && !params;
            if !is_token(name) || (chunked && params) {
                self.malformed = true;
            } else if chunked {
                self.chunked += 1;
            } else if REGISTERED.iter().any(|c| name.eq_ignore_ascii_case(c)) {
                self.other = true;
            } else {
                self.unknown = true;
            }
        }
        if !any {
            // An empty field: no coding at all, which is not a valid value.
            self.malformed = true;
            self.chunked_last = false;
        }
    }

    /// Exactly one `chunked` and nothing else, in one field.
    pub fn is_plain_chunked(&self) -> bool {
        self.fields == 1 && self.codings == 1 && self.chunked == 1 && self.chunked_last && !self.malformed
    }
}

/// The transfer codings of the IANA registry other than `chunked` (RFC 9112 section 7; `identity` was removed
/// but is still sent).
const REGISTERED: [&[u8]; 7] = [
    b"gzip",
    b"x-gzip",
    b"deflate",
    b"compress",
    b"x-compress",
    b"trailers",
    b"identity",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_skip_empty_elements_and_trim_whitespace() {
        let got: Vec<&[u8]> = list(b" a ,, b\t,c ,").collect();
        assert_eq!(got, [&b"a"[..], b"b", b"c"]);
        assert!(has(b"keep-alive, Upgrade", b"upgrade"));
        assert!(!has(b"keep-alive, Upgraded", b"upgrade"));
        assert_eq!(list(b"").count(), 0);
    }

    #[test]
    fn connection_options() {
        let mut c = ConnectionOptions::default();
        c.add(b"keep-alive");
        assert_eq!((c.keep_alive, c.names_fields), (true, false));
        c.add(b"Upgrade, HTTP2-Settings");
        assert!(c.upgrade && c.names_fields && !c.close);
        c.add(b"CLOSE");
        assert!(c.close);
    }

    #[test]
    fn codings() {
        let read = |fields: &[&[u8]]| {
            let mut c = Codings::default();
            for f in fields {
                c.add(f);
            }
            c
        };
        assert!(read(&[b"chunked"]).is_plain_chunked());
        assert!(read(&[b" Chunked "]).is_plain_chunked());
        for bad in [
            &[&b"chunked, chunked"[..]][..],
            &[b"gzip, chunked"],
            &[b"chunked", b"chunked"],
            &[b"chunked;q=1"],
            &[b""],
            &[b","],
            &[b"x-custom, chunked"],
            &[b"chunked, gzip"],
            &[b"chu nked"],
        ] {
            assert!(!read(bad).is_plain_chunked(), "{bad:?}");
        }
        let c = read(&[b"gzip, chunked"]);
        assert!(c.other && c.chunked_last && !c.unknown);
        let c = read(&[b"x-custom"]);
        assert!(c.unknown && !c.chunked_last);
        let c = read(&[b"chunked, gzip"]);
        assert!(!c.chunked_last && c.other);
        assert!(read(&[b"chu nked"]).malformed);
    }
}
