//! The own HTTP/1.1 request-head parser: never panics; what it serves is a bodiless HTTP/1.1 request with sane
//! framing, taken whole out of the buffer; what it leaves to hyper or refuses leaves the buffer untouched.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use portico::http1::request::{parse, Parsed};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut spans = Vec::new();
    match parse(&mut buf, &mut spans) {
        Parsed::Request(r) => {
            assert!(buf.len() < data.len());
            assert_eq!(&data[data.len() - buf.len()..], &buf[..]);
            assert_ne!(r.request.method(), http::Method::CONNECT);
            assert!(r.request.headers().get_all("transfer-encoding").iter().next().is_none());
            // Any length it lets through is zero (`0`, `00`: the same number, as hyper reads it too).
            for v in r.request.headers().get_all("content-length") {
                assert!(v.as_bytes().iter().all(|&b| b == b'0'), "{v:?}");
            }
            // The same rules hold for what hyper would have parsed.
            assert!(portico::http1::request::check(r.request.version(), r.request.headers()).is_ok());
        }
        Parsed::Partial | Parsed::ForHyper | Parsed::Refuse(_) => assert_eq!(&buf[..], data),
    }
});
