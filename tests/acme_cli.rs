//! `portico run --manifests` with an `acme` listener set and no `--state-dir` stops at once with exit code 2;
//! cluster mode needs no state directory (ACME state lives in Secrets).

mod support;

use std::process::Command;

use support::Child;

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

#[tokio::test]
async fn cluster_mode_runs_acme_without_a_state_dir() {
    let server = portico_fake_apiserver::FakeApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
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
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_portico"))
            .args(["run", "--config"])
            .arg(&config)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--identity", "acme-cli"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // It started ACME in cluster mode: it watches the challenge ConfigMap in its own namespace.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let watching = server.requests().iter().any(|r| {
            r.path == "/api/v1/namespaces/default/configmaps"
                && r.query_param("fieldSelector").as_deref() == Some("metadata.name=portico-acme-challenges")
        });
        if watching {
            break;
        }
        assert!(child.0.try_wait().unwrap().is_none(), "portico exited");
        assert!(std::time::Instant::now() < deadline, "no challenge ConfigMap watch");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(child.0.try_wait().unwrap().is_none(), "portico exited");
}
