//! The path normaliser: never panics; its output is absolute, normal (normalising it again changes nothing) and
//! free of dot segments, dot segments with parameters, encoded slashes and NULs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico::normalize::normalize_path;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    let Ok(normal) = normalize_path(path) else { return };
    assert!(normal.starts_with('/'));
    assert_eq!(normalize_path(&normal).as_deref(), Ok(&*normal), "not idempotent");
    for seg in normal.split('/') {
        let before_params = seg.split(';').next().unwrap_or("");
        assert!(
            before_params != "." && before_params != "..",
            "dot segment left in {normal:?}"
        );
    }
    let upper = normal.to_ascii_uppercase();
    assert!(!upper.contains("%2F") && !upper.contains("%5C") && !upper.contains("%00"));
    assert!(!normal.contains('\\') && !normal.contains("//"));
});
