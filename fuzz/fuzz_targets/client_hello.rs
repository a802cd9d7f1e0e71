//! The ClientHello reader (layer-4 passthrough by SNI): never panics, a complete hello never claims more bytes
//! than it was given and parses the same from exactly those bytes, every prefix of them reads as "need more",
//! and a server name is lowercase ASCII without a trailing dot.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico::l4::client_hello::{parse, MAX_HELLO};

fuzz_target!(|data: &[u8]| {
    let Ok(Some(hello)) = parse(data, MAX_HELLO) else {
        return;
    };
    assert!(hello.len <= data.len() && hello.len <= MAX_HELLO);
    assert_eq!(parse(&data[..hello.len], MAX_HELLO), Ok(Some(hello.clone())));
    for cut in [0, hello.len / 2, hello.len.saturating_sub(1)] {
        if cut < hello.len {
            assert_eq!(parse(&data[..cut], MAX_HELLO), Ok(None));
        }
    }
    if let Some(sni) = &hello.sni {
        assert!(!sni.is_empty() && !sni.ends_with('.'));
        assert!(sni.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()));
    }
});
