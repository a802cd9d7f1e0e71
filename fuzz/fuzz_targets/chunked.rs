//! The chunked decoder: never panics; the same bytes give the same data whether they arrive whole or cut in two
//! anywhere; data it accepts, re-encoded, decodes to itself.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use portico::http1::chunked::{Decoder, Step};

/// Decodes `pieces` fed one after another: the data and whether the body ended, or None on an error.
fn decode(pieces: &[&[u8]]) -> Option<(Vec<u8>, bool)> {
    let mut d = Decoder::default();
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    let mut pieces = pieces.iter();
    loop {
        match d.decode(&mut buf, false).ok()? {
            Step::Frame(f) => {
                if let Ok(bytes) = f.into_data() {
                    data.extend_from_slice(&bytes);
                } else {
                    return Some((data, true));
                }
            }
            Step::Done => return Some((data, true)),
            Step::More => match pieces.next() {
                Some(p) => buf.extend_from_slice(p),
                None => return Some((data, false)),
            },
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    let whole = decode(&[input]);
    let cut = usize::from(cut).min(input.len());
    let split = decode(&[&input[..cut], &input[cut..]]);
    if let (Some((a, true)), Some((b, done))) = (&whole, &split) {
        assert!(*done);
        assert_eq!(a, b);
    }
    if let Some((body, true)) = whole {
        let mut encoded = Vec::new();
        for chunk in body.chunks(7) {
            encoded.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            encoded.extend_from_slice(chunk);
            encoded.extend_from_slice(b"\r\n");
        }
        encoded.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(decode(&[&encoded]), Some((body, true)));
    }
});
