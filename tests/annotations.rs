//! Fail closed on annotations, end to end: every unsupported or unknown key under `portico.dev/` and
//! `nginx.ingress.kubernetes.io/` keeps its Ingress off the routing table (the host answers 404 over a real
//! socket), listed no-ops are served with a warning, and the other Ingresses keep serving. `portico check`
//! exits 1 naming the annotation.

mod support;

use std::process::Command;

use portico::model::annotations::catalog::{Support, TABLE};
use support::*;

/// Keys that are not in the table, one per prefix.
const UNKNOWN: [&str; 2] = [
    "portico.dev/ssl-redirct",
    "nginx.ingress.kubernetes.io/made-up-annotation",
];

#[tokio::test]
async fn every_unsupported_annotation_disables_only_its_ingress() {
    let backend = echo("app").await;
    let mut manifests = service("default", "app", &[backend.addr]);
    manifests.push_str(&annotated_ingress("default", "clean", "clean.example", "app", &[]));
    let unsupported: Vec<&str> = TABLE
        .iter()
        .filter(|e| e.support == Support::Unsupported)
        .map(|e| e.key)
        .chain(UNKNOWN)
        .collect();
    let no_ops: Vec<&str> = TABLE
        .iter()
        .filter(|e| e.support == Support::NoOp)
        .map(|e| e.key)
        .collect();
    // A sanity floor: the catalog lists dozens of each (it shrinks as features land).
    assert!(unsupported.len() > 30 && no_ops.len() > 10);
    for (i, key) in unsupported.iter().enumerate() {
        let host = format!("u{i}.example");
        manifests.push_str(&annotated_ingress(
            "default",
            &format!("u{i}"),
            &host,
            "app",
            &[(key, "true")],
        ));
    }
    for (i, key) in no_ops.iter().enumerate() {
        let host = format!("n{i}.example");
        manifests.push_str(&annotated_ingress(
            "default",
            &format!("n{i}"),
            &host,
            "app",
            &[(key, "true")],
        ));
    }
    let gw = Gateway::start(&manifests).await;
    let addr = gw.addr(0);

    assert_eq!(get(addr, "clean.example", "/").await.status, 200);
    for (i, key) in unsupported.iter().enumerate() {
        let r = get(addr, &format!("u{i}.example"), "/x").await;
        assert_eq!(r.status, 404, "an Ingress with {key} must not be served");
    }
    for (i, key) in no_ops.iter().enumerate() {
        let r = get(addr, &format!("n{i}.example"), "/").await;
        assert_eq!(r.status, 200, "an Ingress with the no-op {key} is served");
    }

    // Each unsupported key is named in an error, each no-op in a warning; only errors count as rejected.
    let diags = get(gw.running().admin_addr, "admin", "/api/diagnostics").await.json();
    let list = diags["diagnostics"].as_array().unwrap();
    for key in &unsupported {
        assert!(
            list.iter()
                .any(|d| d["severity"] == "error" && d["reason"].as_str().unwrap().contains(key)),
            "no error names {key}"
        );
    }
    for key in &no_ops {
        assert!(
            list.iter()
                .any(|d| d["severity"] == "warning" && d["reason"].as_str().unwrap().contains(key)),
            "no warning names {key}"
        );
    }
    assert_eq!(
        metric(&gw, "portico_rejected_objects").await,
        Some(unsupported.len() as f64)
    );

    // Taking the annotation away serves the Ingress again.
    let fixed = manifests.replace(&format!("    {}: \"true\"\n", unsupported[0]), "");
    gw.rewrite(&fixed).await;
    assert_eq!(get(addr, "u0.example", "/").await.status, 200);
    gw.stop().await;
}

fn check(manifests: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.yaml"), manifests).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_portico"))
        .arg("check")
        .arg("--manifests")
        .arg(dir.path())
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The reproduction: auth and a rate limit used to pass `check` and serve 200 unauthenticated (auth is
/// implemented since; its options Portico does not take still refuse).
#[test]
fn check_exits_1_naming_security_annotations_and_0_for_no_ops() {
    let svc =
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: app, namespace: default}\nspec: {ports: [{port: 80}]}\n";
    let protected = annotated_ingress(
        "default",
        "admin",
        "admin.example",
        "app",
        &[
            ("nginx.ingress.kubernetes.io/auth-keepalive", "10"),
            (
                "nginx.ingress.kubernetes.io/auth-proxy-set-headers",
                "default/auth-headers",
            ),
            ("nginx.ingress.kubernetes.io/limit-rate", "5"),
        ],
    );
    let (code, out) = check(&format!("{svc}{protected}"));
    assert_eq!(code, Some(1), "{out}");
    for key in ["auth-keepalive", "auth-proxy-set-headers", "limit-rate"] {
        assert!(
            out.contains(&format!(
                "diagnostic: Ingress default/admin: annotation nginx.ingress.kubernetes.io/{key} is not supported"
            )),
            "{out}"
        );
    }
    assert!(!out.contains("admin.example/"), "the Ingress has no routes: {out}");
    assert!(out.contains("3 problem(s) found"), "{out}");

    let typo = annotated_ingress(
        "default",
        "web",
        "web.example",
        "app",
        &[("portico.dev/ssl-redirct", "false")],
    );
    let (code, out) = check(&format!("{svc}{typo}"));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("did you mean portico.dev/ssl-redirect?"), "{out}");

    let buffered = annotated_ingress(
        "default",
        "web",
        "web.example",
        "app",
        &[("nginx.ingress.kubernetes.io/proxy-buffering", "off")],
    );
    let (code, out) = check(&format!("{svc}{buffered}"));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(
            "warning: Ingress default/web: annotation nginx.ingress.kubernetes.io/proxy-buffering has no effect"
        ),
        "{out}"
    );
    assert!(out.contains("ok: no object rejected (1 warning(s))"), "{out}");
}
