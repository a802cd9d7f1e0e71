//! The manifest loader: never panics on any YAML (or anything else); what it does not understand becomes a
//! diagnostic. The Gateway API objects it reads are then attached (BackendTLSPolicy validation, CA bundles from
//! ConfigMaps and Secrets included), which must not panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico::source::file::state_from_yaml;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (state, _diagnostics) = state_from_yaml(text, "fuzz.yaml");
    let _ = portico::model::gateway::attach(&state, portico::model::gateway::CONTROLLER_NAME);
});
