//! The own HTTP/1.1 response-head parser: never panics; a head it accepts has one framing and keeps at most one
//! `Content-Length`, none with `chunked` or on a 204, and no `Transfer-Encoding`.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use portico::http1::response::parse;
use portico::http1::Framing;

fuzz_target!(|data: &[u8]| {
    let (head_only, data) = match data.split_first() {
        Some((flag, rest)) => (flag & 1 == 1, rest),
        None => return,
    };
    let mut buf = BytesMut::from(data);
    let mut spans = Vec::new();
    if let Ok(Some(head)) = parse(&mut buf, &mut spans, head_only) {
        let h = &head.headers;
        assert!(h.get("transfer-encoding").is_none());
        let lengths = h.get_all("content-length").iter().count();
        assert!(lengths <= 1);
        if head.framing == Framing::Chunked || head.status == 204 {
            assert_eq!(lengths, 0);
        }
        if head_only {
            assert_eq!(head.framing, Framing::None);
        }
    }
});
