//! The PROXY protocol v1/v2 reader: never panics, never reads past the header it returns, and a v2 header it
//! accepts encodes back to one it reads the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico::proxy::proxy_protocol::{encode_v2, read_header, ProxyHeader};

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    if let Ok(header) = futures::executor::block_on(read_header(&mut input)) {
        if let ProxyHeader::Proxied { .. } = header {
            let encoded = encode_v2(&header);
            let mut again = &encoded[..];
            let back = futures::executor::block_on(read_header(&mut again)).expect("an encoded header reads back");
            assert_eq!(back, header);
            assert!(again.is_empty());
        }
    }
});
