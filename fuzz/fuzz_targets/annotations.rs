//! The annotation parsers: never panic, whatever keys and values an Ingress author writes. Input: lines of
//! `key=value` (the first `=` splits).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico::model::annotations::catalog::classify;
use portico::model::annotations::IngressPolicy;
use portico::model::ingress::IngressMeta;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let annotations: std::collections::BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let _ = classify(Some(&annotations));
    let meta = IngressMeta {
        annotations: Some(Box::new(annotations)),
        ..Default::default()
    };
    if let Ok(policy) = IngressPolicy::from_meta(&meta) {
        let mut out = String::new();
        policy.describe_into(&mut out);
    }
});
