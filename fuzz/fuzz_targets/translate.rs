//! The whole compile of a manifest directory's objects, as every publish runs it: Ingress translation with its
//! annotations, Gateway API attachment and routes (regular expressions, CORS origins, filters), layer-4 routes,
//! certificates from Secrets. Whatever the objects say, it never panics: what it refuses becomes a diagnostic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portico::config::Config;
use portico::publish::Compiler;
use portico::source::file::state_from_yaml;

/// Two listener sets, one with a default error backend, as a typical configuration has them.
const CONFIG: &str = r#"
listenerSets:
  - name: external
    ingressClasses: [portico]
    http: ["127.0.0.1:0"]
    https: ["127.0.0.1:0"]
    errorPages: {service: pages/errors, codes: [404, 503]}
  - name: internal
    ingressClasses: [portico-internal]
    http: ["127.0.0.2:0"]
"#;

/// One compiler for the whole run (its self-signed fallback certificate is slow to make); its incremental
/// translator carries records from one input to the next, as it does from one publish to the next.
static COMPILER: OnceLock<Compiler> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let compiler =
        COMPILER.get_or_init(|| Compiler::new(&Config::from_yaml(CONFIG).unwrap(), true).unwrap());
    let (state, diagnostics) = state_from_yaml(text, "fuzz.yaml");
    let _ = compiler.compile(&state, diagnostics, 1_765_000_000);
});
