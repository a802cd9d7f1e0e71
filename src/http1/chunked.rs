//! The chunked transfer coding (RFC 9112 section 7.1), decoded from a read buffer: chunk-size lines (extensions
//! checked against the grammar, then ignored), data, and the trailer section (fields that may not be trailers
//! dropped). Strict where senders disagree: at most 16 hex digits, CRLF only (a bare CR or LF anywhere in a
//! control line is an error), no bytes outside the grammar in extensions.

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::Frame;

use super::tokens::{is_tchar, is_token};

/// Longest chunk-size line or trailer section (the same budget as a head).
pub const MAX_LINE: usize = super::MAX_HEAD;

/// The body is not valid chunked coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub struct BadChunk;

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Decoder {
    /// At a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk, this many bytes to go.
    Data(u64),
    /// After a chunk's data, at its CRLF.
    DataEnd,
    /// After the last chunk: trailer fields until an empty line.
    Trailers,
    /// The body ended.
    Done,
}

/// What the buffered bytes give.
#[derive(Debug)]
pub enum Step {
    Frame(Frame<Bytes>),
    /// The body ended (no trailers, or they were returned before).
    Done,
    /// More bytes are needed.
    More,
}

/// The size in a chunk-size line (without its CRLF), after checking its extensions.
pub fn size_line(line: &[u8]) -> Result<u64, BadChunk> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(BadChunk);
    }
    extensions(&line[digits..])?;
    Ok(line[..digits].iter().fold(0u64, |n, d| {
        (n << 4) | u64::from((*d as char).to_digit(16).unwrap_or(0))
    }))
}

fn ows(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    &s[n..]
}

/// `*( BWS ";" BWS ext-name [ BWS "=" BWS ext-value ] ) OWS`, the value a token or a quoted string.
fn extensions(mut rest: &[u8]) -> Result<(), BadChunk> {
    loop {
        rest = ows(rest);
        let Some(after) = rest.strip_prefix(b";") else {
            return if rest.is_empty() { Ok(()) } else { Err(BadChunk) };
        };
        rest = ows(after);
        let name = rest.iter().take_while(|&&b| is_tchar(b)).count();
        if name == 0 {
            return Err(BadChunk);
        }
        rest = ows(&rest[name..]);
        if let Some(after) = rest.strip_prefix(b"=") {
            rest = ows(after);
            rest = if let Some(quoted) = rest.strip_prefix(b"\"") {
                quoted_string_rest(quoted)?
            } else {
                let n = rest.iter().take_while(|&&b| is_tchar(b)).count();
                if n == 0 {
                    return Err(BadChunk);
                }
                &rest[n..]
            };
        }
    }
}

/// What follows a quoted string whose opening quote was consumed.
fn quoted_string_rest(s: &[u8]) -> Result<&[u8], BadChunk> {
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'"' => return Ok(&s[i + 1..]),
            b'\\' => match s.get(i + 1) {
                Some(&b) if b == b'\t' || b == b' ' || b.is_ascii_graphic() || b >= 0x80 => i += 2,
                _ => return Err(BadChunk),
            },
            b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => i += 1,
            _ => return Err(BadChunk),
        }
    }
    Err(BadChunk)
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

impl Decoder {
    /// Whether the body has ended.
    pub fn is_done(&self) -> bool {
        *self == Decoder::Done
    }

    /// The next piece of the body from `buf`: a data frame, the trailers, the end, or a need for more.
    /// `controls_only`: stop at data and at trailers (used to consume the framing that follows the last data
    /// without taking anything out).
    pub fn decode(&mut self, buf: &mut BytesMut, controls_only: bool) -> Result<Step, BadChunk> {
        loop {
            match *self {
                Decoder::Done => return Ok(Step::Done),
                Decoder::Size => {
                    let Some(end) = find_crlf(buf) else {
                        // A bare LF, or too long a line, fails now rather than when the line ends.
                        return if buf.len() > MAX_LINE || buf.contains(&b'\n') {
                            Err(BadChunk)
                        } else {
                            Ok(Step::More)
                        };
                    };
                    let size = size_line(&buf[..end])?;
                    buf.advance(end + 2);
                    *self = if size == 0 {
                        Decoder::Trailers
                    } else {
                        Decoder::Data(size)
                    };
                }
                Decoder::Data(rest) => {
                    if controls_only || buf.is_empty() {
                        return Ok(Step::More);
                    }
                    let n = buf.len().min(usize::try_from(rest).unwrap_or(usize::MAX));
                    *self = if n as u64 == rest {
                        Decoder::DataEnd
                    } else {
                        Decoder::Data(rest - n as u64)
                    };
                    return Ok(Step::Frame(Frame::data(buf.split_to(n).freeze())));
                }
                Decoder::DataEnd => {
                    if buf.len() < 2 {
                        return if buf.first().is_some_and(|&b| b != b'\r') {
                            Err(BadChunk)
                        } else {
                            Ok(Step::More)
                        };
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(BadChunk);
                    }
                    buf.advance(2);
                    *self = Decoder::Size;
                }
                Decoder::Trailers => {
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                        *self = Decoder::Done;
                        return Ok(Step::Done);
                    }
                    let mut fields = [httparse::EMPTY_HEADER; 32];
                    return match httparse::parse_headers(buf, &mut fields) {
                        Ok(httparse::Status::Complete((len, fields))) => {
                            if controls_only {
                                // Trailers are a frame of their own: left for the next `decode`.
                                return Ok(Step::More);
                            }
                            let mut map = HeaderMap::with_capacity(fields.len());
                            for f in fields {
                                if !is_token(f.name.as_bytes()) {
                                    return Err(BadChunk);
                                }
                                let (Ok(n), Ok(v)) = (
                                    HeaderName::from_bytes(f.name.as_bytes()),
                                    HeaderValue::from_bytes(f.value),
                                ) else {
                                    return Err(BadChunk);
                                };
                                if !super::framing::is_forbidden_trailer(&n) {
                                    map.append(n, v);
                                }
                            }
                            buf.advance(len);
                            *self = Decoder::Done;
                            Ok(Step::Frame(Frame::trailers(map)))
                        }
                        Ok(httparse::Status::Partial) if buf.len() <= MAX_LINE => Ok(Step::More),
                        _ => Err(BadChunk),
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` whole: the data, the trailers, or the error.
    pub(crate) fn decode_all(input: &[u8]) -> Result<(Vec<u8>, Option<HeaderMap>), BadChunk> {
        let mut d = Decoder::default();
        let mut buf = BytesMut::from(input);
        let mut data = Vec::new();
        loop {
            match d.decode(&mut buf, false)? {
                Step::Frame(f) => match f.into_data() {
                    Ok(bytes) => data.extend_from_slice(&bytes),
                    Err(f) => return Ok((data, f.into_trailers().ok())),
                },
                Step::Done => return Ok((data, None)),
                Step::More => return Err(BadChunk),
            }
        }
    }

    #[test]
    fn sizes_and_extensions() {
        assert_eq!(size_line(b"5"), Ok(5));
        assert_eq!(size_line(b"ffffffffffffffff"), Ok(u64::MAX));
        assert_eq!(size_line(b"5 ; a=b ;c; d=\"x y\""), Ok(5));
        assert_eq!(size_line(b"5;a=\"q\\\"uote\""), Ok(5));
        assert_eq!(size_line(b"5 "), Ok(5));
        for bad in [
            &b""[..],
            b"Z",
            b"0x1",
            b"1_0",
            b"10000000000000000",
            b"-1",
            b"+1",
            b"1\r",
            b"1\nA",
            b"5;a=b\rc",
            b"5;a=\x01",
            b"5; a = \"x\ny\"",
            b"5;=b",
            b"5;a=b c",
            b"5;a=\"unterminated",
            b"5;a=",
            b"5 x",
        ] {
            assert_eq!(size_line(bad), Err(BadChunk), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn bodies() {
        let (data, trailers) =
            decode_all(b"5;x=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Sum: 42\r\nHost: evil\r\n\r\n").unwrap();
        assert_eq!(data, b"hello, world");
        let trailers = trailers.unwrap();
        assert_eq!(trailers["x-sum"], "42");
        assert!(!trailers.contains_key("host"));
        assert_eq!(decode_all(b"0\r\n\r\n").unwrap(), (vec![], None));
        for bad in [
            &b"Z\r\nhello\r\n0\r\n\r\n"[..],
            b"1\nA\r\n0\r\n\r\n",
            b"1\r\rA\r\n0\r\n\r\n",
            b"1\r\nA\r\n0\n\n",
            b"1\r\nAB\r\n0\r\n\r\n",
            b"1\r\nA\n0\r\n\r\n",
            b"0\r\nBad Name: x\r\n\r\n",
        ] {
            assert_eq!(
                decode_all(bad).err(),
                Some(BadChunk),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn input_split_anywhere_decodes_the_same() {
        let input = b"5;x=\"a b\"\r\nhello\r\n1\r\n!\r\n0\r\nX-Sum: 42\r\n\r\n";
        for cut in 0..input.len() {
            let mut d = Decoder::default();
            let mut buf = BytesMut::from(&input[..cut]);
            let mut data = Vec::new();
            let mut rest = &input[cut..];
            let mut trailers = None;
            loop {
                match d.decode(&mut buf, false).unwrap() {
                    Step::Frame(f) => match f.into_data() {
                        Ok(b) => data.extend_from_slice(&b),
                        Err(f) => trailers = f.into_trailers().ok(),
                    },
                    Step::Done => break,
                    Step::More if !rest.is_empty() => {
                        buf.extend_from_slice(rest);
                        rest = &[];
                    }
                    Step::More if trailers.is_some() => break,
                    Step::More => panic!("stuck at cut {cut}"),
                }
            }
            assert_eq!(data, b"hello!", "cut {cut}");
            assert_eq!(trailers.unwrap()["x-sum"], "42", "cut {cut}");
        }
    }
}
