//! `portico run` with an `acme` listener set and no `--state-dir` stops at once with exit code 2.

use std::process::Command;

#[test]
fn acme_without_state_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portico.yaml");
    std::fs::write(
        &config,
        r#"
listenerSets:
  - name: default
    ingressClasses: [portico]
    http: ["127.0.0.1:0"]
    https: ["127.0.0.1:0"]
    acme: { directory: "https://127.0.0.1:1/dir" }
admin: { address: "127.0.0.1:0" }
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["run", "--manifests"])
        .arg(dir.path())
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--state-dir"), "{err}");
}
