//! The Host/`:authority` parser: never panics; a host it accepts is lower case, without a trailing dot, and reads
//! back the same from its own rendering.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico::normalize::normalize_host;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    let Ok(host) = normalize_host(raw) else { return };
    assert!(!host.name.ends_with('.') || host.name == ".");
    assert_eq!(host.name.to_ascii_lowercase(), host.name);
    let rendered = match host.port {
        Some(p) => format!("{}:{p}", host.name),
        None => host.name.to_string(),
    };
    let again = normalize_host(&rendered).expect("a normalised host parses");
    assert_eq!(again, host);
});
