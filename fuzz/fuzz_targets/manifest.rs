//! The manifest loader: never panics on any YAML (or anything else); what it does not understand becomes a
//! diagnostic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico::source::file::state_from_yaml;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (_state, _diagnostics) = state_from_yaml(text, "fuzz.yaml");
});
