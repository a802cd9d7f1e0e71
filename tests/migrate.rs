//! `portico migrate` as a user runs it: on a directory of ingress-nginx-shaped Ingresses, and read-only against
//! a live (fake) API server through a kubeconfig, as the real binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use portico_fake_apiserver::FakeApiServer;
use serde::Deserialize;

fn example(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/ingress-nginx")
        .join(path)
}

fn migrate(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portico"))
        .arg("migrate")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code(), stdout + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn report_on_the_example_directory() {
    let dir = example("manifests");
    // Default configuration: class nginx is not served, each Ingress is still assessed.
    let (code, out) = migrate(&["--manifests".as_ref(), dir.as_os_str()]);
    assert_eq!(code, Some(1), "{out}");
    for want in [
        "Ingress shop/shop (class nginx): not served by this configuration (no listener set serves class nginx)",
        "classes no listener set serves: nginx: 5",
        "  UNSUPPORTED: nginx.ingress.kubernetes.io/configuration-snippet: snippets are templated configuration",
        "  implemented: nginx.ingress.kubernetes.io/auth-signin, nginx.ingress.kubernetes.io/auth-url",
        "summary: 5 Ingress(es): 4 ready, 1 would be disabled by unsupported annotations, 0 with other problems",
        "verdict: NOT READY",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }

    // With the example configuration the class is served.
    let config = example("portico.yaml");
    let (code, out) = migrate(&[
        "--manifests".as_ref(),
        dir.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("Ingress shop/shop (class nginx): served on listener set default\n"),
        "{out}"
    );
    assert!(
        out.contains("Ingress shop/api-main (class nginx): served on listener set default\n  verdict: ready\n"),
        "{out}"
    );
    assert!(!out.contains("classes no listener set serves"), "{out}");

    // Only implemented and no-op annotations: ready, exit 0.
    let clean = tempfile::tempdir().unwrap();
    let all = std::fs::read_to_string(dir.join("apps.yaml")).unwrap();
    let kept: Vec<&str> = all
        .split("\n---\n")
        .filter(|doc| !doc.contains("configuration-snippet") && !doc.contains("rewrite-target"))
        .collect();
    std::fs::write(clean.path().join("apps.yaml"), kept.join("\n---\n")).unwrap();
    let (code, out) = migrate(&[
        "--manifests".as_ref(),
        clean.path().as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("verdict: READY: nothing would be disabled"), "{out}");

    let (code, _) = migrate(&["--manifests".as_ref(), "/nonexistent/portico".as_ref()]);
    assert_eq!(code, Some(2));
}

#[tokio::test]
async fn report_on_a_live_cluster_writes_nothing() {
    let server = FakeApiServer::start().await.unwrap();
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: nginx}
spec: {controller: k8s.io/ingress-nginx}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: portico}
spec: {controller: portico.dev/ingress-controller}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: team}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: other}
spec: {ports: [{port: 80}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: guarded
  namespace: team
  annotations: {nginx.ingress.kubernetes.io/auth-type: basic, nginx.ingress.kubernetes.io/auth-secret: htpasswd}
spec:
  ingressClassName: portico
  rules: [{host: admin.example, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]
---
apiVersion: v1
kind: Secret
metadata: {name: htpasswd, namespace: team}
type: Opaque
stringData: {auth: "admin:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ="}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: snippet
  namespace: team
  annotations: {nginx.ingress.kubernetes.io/configuration-snippet: "more_set_headers X-A: b;"}
spec:
  ingressClassName: portico
  rules: [{host: snippet.example, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: plain, namespace: team}
spec:
  ingressClassName: portico
  rules: [{host: web.example, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: old, namespace: other}
spec:
  ingressClassName: nginx
  rules: [{host: old.example, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]
"#;
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let v = serde_yaml::Value::deserialize(doc).unwrap();
        server.upsert(serde_json::to_value(v).unwrap()).unwrap();
    }
    let changes_before = server.history().len();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "listenerSets:\n  - name: external\n    ingressClasses: [portico]\n    http: [\"127.0.0.1:0\"]\n",
    )
    .unwrap();

    let run = |args: Vec<std::ffi::OsString>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
            migrate(&args)
        })
    };
    let (code, out) = run(vec![
        "--kubeconfig".into(),
        kubeconfig.clone().into(),
        "--config".into(),
        config.clone().into(),
    ])
    .await
    .unwrap();
    assert_eq!(code, Some(1), "{out}");
    for want in [
        "Ingress team/guarded (class portico): served on listener set external",
        // Basic auth's Opaque Secret is read: the Ingress is ready.
        "  implemented: nginx.ingress.kubernetes.io/auth-secret, nginx.ingress.kubernetes.io/auth-type\n  verdict: ready\n",
        "Ingress team/snippet (class portico): served on listener set external",
        "  UNSUPPORTED: nginx.ingress.kubernetes.io/configuration-snippet",
        "Ingress team/plain (class portico): served on listener set external\n  verdict: ready\n",
        "Ingress other/old (class nginx): not served by this configuration",
        "summary: 4 Ingress(es): 3 ready, 1 would be disabled by unsupported annotations, 0 with other problems",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    assert_eq!(server.history().len(), changes_before, "migrate wrote to the cluster");

    // As if Portico adopted class nginx (whose IngressClass names ingress-nginx's controller).
    let (code, out) = run(vec![
        "--kubeconfig".into(),
        kubeconfig.clone().into(),
        "--config".into(),
        config.clone().into(),
        "--adopt".into(),
        "nginx".into(),
    ])
    .await
    .unwrap();
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("Ingress other/old (class nginx): served on listener set external\n  verdict: ready\n"),
        "{out}"
    );

    // One namespace only.
    let (code, out) = run(vec![
        "--kubeconfig".into(),
        kubeconfig.into(),
        "--config".into(),
        config.into(),
        "--namespace".into(),
        "other".into(),
    ])
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("summary: 1 Ingress(es): 1 ready"), "{out}");
    assert!(!out.contains("team/"), "{out}");
}
