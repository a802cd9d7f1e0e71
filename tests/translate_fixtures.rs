//! Translation fixtures: each `tests/fixtures/translate/NAME.yaml` is translated and compared with
//! `NAME.expected` (the routes and diagnostics as `portico check` prints them). One case per rule of
//! `docs/ingress-semantics.md`. A first line `# implicit-classes` translates as file mode does (configured
//! classes exist without IngressClass objects); otherwise only IngressClass objects count, as in a cluster.
//! The configuration is [`CONFIG`] unless a `NAME.config.yaml` beside the case replaces it.
//! Set PORTICO_BLESS=1 to write missing or changed `.expected` files, then review them.

use std::path::Path;

use portico::config::Config;
use portico::model::{translate, Options};
use portico::source::file::state_from_yaml;

const CONFIG: &str = r#"
listenerSets:
  - name: external
    ingressClasses: [portico, portico-alt]
    http: ["127.0.0.1:0"]
  - name: internal
    ingressClasses: [portico-internal]
    http: ["127.0.0.2:0"]
"#;

fn run_case(yaml: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(yaml).unwrap();
    let name = yaml.file_name().unwrap().to_string_lossy().to_string();
    let own_config = yaml.with_extension("config.yaml");
    let config = match std::fs::read_to_string(&own_config) {
        Ok(text) => Config::from_yaml(&text).unwrap_or_else(|e| panic!("{}: {e}", own_config.display())),
        Err(_) => Config::from_yaml(CONFIG).unwrap(),
    };
    let opts = Options::from_config(&config, text.starts_with("# implicit-classes"));
    let (state, mut diags) = state_from_yaml(&text, &name);
    let mut t = translate(&state, &opts);
    // Determinism: the same input in reverse order gives the same output.
    let mut reversed = state.clone();
    reversed.ingresses.reverse();
    reversed.services.reverse();
    reversed.endpoint_slices.reverse();
    reversed.ingress_classes.reverse();
    let t2 = translate(&reversed, &opts);
    if t2.sets != t.sets || t2.diagnostics != t.diagnostics {
        return Err(format!("{name}: output depends on input order"));
    }
    diags.append(&mut t.diagnostics);
    t.diagnostics = diags;
    let got = t.describe();
    let expected_path = yaml.with_extension("expected");
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
    if got == expected {
        return Ok(());
    }
    if std::env::var_os("PORTICO_BLESS").is_some() {
        std::fs::write(&expected_path, &got).unwrap();
        return Ok(());
    }
    Err(format!(
        "{name}: translation differs\n--- expected\n{expected}--- got\n{got}"
    ))
}

#[test]
fn translation_fixtures() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/translate");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| !p.to_string_lossy().ends_with(".config.yaml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 8, "fixtures missing in {}", dir.display());
    let failures: Vec<String> = cases.iter().filter_map(|c| run_case(c).err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
