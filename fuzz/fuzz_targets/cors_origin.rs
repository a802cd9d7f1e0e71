//! CORS origin patterns (`cors-allow-origin`) and their matching: never panic; a pattern reads back the same
//! from its own rendering; an exact pattern matches its rendering, a wildcard one matches it with a label
//! added and never the bare host. Input: the first line is the annotation value, the others are `Origin`s.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico::model::annotations::cors::{parse_origins, OriginPattern};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines = text.lines();
    let Some(value) = lines.next() else { return };
    let Ok(Some(patterns)) = parse_origins(value) else { return };
    for p in &patterns {
        let rendered = p.to_string();
        assert_eq!(OriginPattern::parse(&rendered).as_ref(), Ok(p), "{rendered}");
        match rendered.split_once("://*.") {
            None => assert!(p.matches(&rendered), "{rendered}"),
            Some((scheme, rest)) => {
                assert!(p.matches(&format!("{scheme}://a.{rest}")), "{rendered}");
                assert!(!p.matches(&format!("{scheme}://{rest}")), "{rendered}");
            }
        }
        for origin in lines.clone() {
            let _ = p.matches(origin);
        }
    }
});
