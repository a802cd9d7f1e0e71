//! CORS origin patterns (`cors-allow-origin`, and Gateway API's `allowOrigins` entries) and their matching:
//! never panic; a pattern reads back the same from its own rendering; an exact pattern matches its rendering, a
//! wildcard one matches it with a label added (Gateway API: one or two) and never the bare host. Input: the first
//! line is the annotation value (its comma-separated items are also read as Gateway API entries), the others are
//! `Origin`s.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico::model::annotations::cors::{parse_origins, OriginPattern};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines = text.lines();
    let Some(value) = lines.next() else { return };
    for item in value.split(',') {
        let Ok(p) = OriginPattern::parse_gateway(item.trim()) else { continue };
        let rendered = p.to_string();
        assert_eq!(OriginPattern::parse_gateway(&rendered).as_ref(), Ok(&p), "{rendered}");
        match rendered.split_once("://*") {
            None => assert!(p.matches(&rendered), "{rendered}"),
            Some((scheme, rest)) => {
                let rest = rest.strip_prefix('.').map_or(rest.to_string(), |r| format!(".{r}"));
                assert!(p.matches(&format!("{scheme}://a{rest}")), "{rendered}");
                assert!(p.matches(&format!("{scheme}://a.b{rest}")), "{rendered}");
                if !rest.starts_with(':') && !rest.is_empty() {
                    assert!(!p.matches(&format!("{scheme}://{}", &rest[1..])), "{rendered}");
                }
            }
        }
        for origin in lines.clone() {
            let _ = p.matches(origin);
        }
    }
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
