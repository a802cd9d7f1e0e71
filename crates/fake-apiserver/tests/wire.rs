//! Wire-level checks with raw HTTP: watch stream framing, 410 Expired, bookmarks, timeoutSeconds,
//! initial events, discovery, error Status objects, `/__control/` endpoints, and the binary.

mod common;

use std::io::BufRead;
use std::time::{Duration, Instant};

use common::raw;
use portico_fake_apiserver::{FakeApiServer, Options};
use serde_json::{json, Value};

const ING: &str = "/apis/networking.k8s.io/v1/namespaces/default/ingresses";
const T: Duration = Duration::from_secs(5);

fn ingress(name: &str) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "metadata": {"name": name, "namespace": "default", "labels": {"app": name}}, "spec": {}})
}

#[tokio::test]
async fn list_shape_and_errors() {
    let server = FakeApiServer::start().await.unwrap();
    server.upsert(ingress("a")).unwrap();
    let r = raw(server.addr(), "GET", ING, None, b"", T).await;
    assert_eq!(r.status, 200);
    let list = r.json();
    assert_eq!(list["kind"], "IngressList");
    assert_eq!(list["apiVersion"], "networking.k8s.io/v1");
    assert_eq!(
        list["metadata"]["resourceVersion"],
        server.resource_version().to_string()
    );
    assert_eq!(list["items"][0]["kind"], "Ingress");
    assert_eq!(list["items"][0]["apiVersion"], "networking.k8s.io/v1");
    // limit is accepted; everything is returned without a continue token
    let r = raw(server.addr(), "GET", &format!("{ING}?limit=1"), None, b"", T).await;
    assert!(r.json()["metadata"].get("continue").is_none());

    let r = raw(server.addr(), "GET", &format!("{ING}/nope"), None, b"", T).await;
    assert_eq!(r.status, 404);
    let st = r.json();
    assert_eq!(st["kind"], "Status");
    assert_eq!(st["reason"], "NotFound");
    assert_eq!(st["code"], 404);
    assert_eq!(st["message"], "ingresses.networking.k8s.io \"nope\" not found");

    let r = raw(
        server.addr(),
        "GET",
        "/apis/example.com/v1/namespaces/default/widgets",
        None,
        b"",
        T,
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["kind"], "Status");

    let r = raw(
        server.addr(),
        "PATCH",
        &format!("{ING}/a"),
        Some("application/apply-patch+yaml"),
        b"{}",
        T,
    )
    .await;
    assert_eq!(r.status, 415);
    assert_eq!(r.json()["reason"], "UnsupportedMediaType");

    let r = raw(server.addr(), "POST", ING, Some("application/json"), b"not json", T).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["reason"], "BadRequest");

    // namespace mismatch between URL and body
    let body = serde_json::to_vec(&ingress("b")).unwrap();
    let r = raw(
        server.addr(),
        "POST",
        "/apis/networking.k8s.io/v1/namespaces/other/ingresses",
        Some("application/json"),
        &body,
        T,
    )
    .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn discovery_endpoints() {
    let server = FakeApiServer::start().await.unwrap();
    let v = raw(server.addr(), "GET", "/version", None, b"", T).await.json();
    assert_eq!(v["major"], "1");
    assert_eq!(v["minor"], "33");
    let api = raw(server.addr(), "GET", "/api", None, b"", T).await.json();
    assert_eq!(api["versions"], json!(["v1"]));
    let apis = raw(server.addr(), "GET", "/apis", None, b"", T).await.json();
    let names: Vec<&str> = apis["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    for g in [
        "networking.k8s.io",
        "discovery.k8s.io",
        "coordination.k8s.io",
        "events.k8s.io",
    ] {
        assert!(names.contains(&g), "{g} missing from {names:?}");
    }
    let rl = raw(server.addr(), "GET", "/apis/networking.k8s.io/v1", None, b"", T)
        .await
        .json();
    let res: Vec<&str> = rl["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(res, vec!["ingresses", "ingresses/status", "ingressclasses"]);
}

#[tokio::test]
async fn watch_from_expired_version_gets_410_in_stream() {
    let server = FakeApiServer::start().await.unwrap();
    server.upsert(ingress("a")).unwrap();
    let old = server.resource_version();
    server.upsert(ingress("b")).unwrap();
    let floor = server.compact_history();
    let r = raw(
        server.addr(),
        "GET",
        &format!("{ING}?watch=true&resourceVersion={old}"),
        None,
        b"",
        T,
    )
    .await;
    assert_eq!(r.status, 200);
    let lines = r.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["type"], "ERROR");
    let st = &lines[0]["object"];
    assert_eq!(st["kind"], "Status");
    assert_eq!(st["code"], 410);
    assert_eq!(st["reason"], "Expired");
    assert_eq!(st["message"], format!("too old resource version: {old} ({floor})"));

    // From the floor itself it is fine (and times out cleanly).
    let r = raw(
        server.addr(),
        "GET",
        &format!("{ING}?watch=1&resourceVersion={floor}&timeoutSeconds=1"),
        None,
        b"",
        T,
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.lines().is_empty());
}

#[tokio::test]
async fn watch_replays_history_and_times_out() {
    let server = FakeApiServer::start().await.unwrap();
    server.upsert(ingress("a")).unwrap();
    let start = server.resource_version();
    server.upsert(ingress("b")).unwrap();
    let mut a2 = ingress("a");
    a2["spec"] = json!({"ingressClassName": "x"});
    server.upsert(a2).unwrap();
    server
        .delete_object("networking.k8s.io/v1", "Ingress", "default", "b")
        .unwrap();
    let t0 = Instant::now();
    let r = raw(
        server.addr(),
        "GET",
        &format!("{ING}?watch=true&resourceVersion={start}&timeoutSeconds=1"),
        None,
        b"",
        T,
    )
    .await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(r.header("transfer-encoding").is_some_and(|v| v.contains("chunked")));
    let lines = r.lines();
    let kinds: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["type"].as_str().unwrap(),
                l["object"]["metadata"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(kinds, vec![("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]);
    assert_eq!(lines[1]["object"]["metadata"]["generation"], 2);
    assert_eq!(
        lines[2]["object"]["metadata"]["resourceVersion"],
        server.resource_version().to_string()
    );

    // resourceVersion unset / "0": current state as ADDED, then live; label selector applies.
    for rv in ["", "&resourceVersion=0"] {
        let r = raw(
            server.addr(),
            "GET",
            &format!("{ING}?watch=true&timeoutSeconds=1&labelSelector=app%3Da{rv}"),
            None,
            b"",
            T,
        )
        .await;
        let lines = r.lines();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["type"], "ADDED");
        assert_eq!(lines[0]["object"]["metadata"]["name"], "a");
    }

    let r = raw(
        server.addr(),
        "GET",
        &format!("{ING}?watch=true&resourceVersion=abc"),
        None,
        b"",
        T,
    )
    .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn bookmarks_and_initial_events() {
    let opts = Options {
        bookmark_interval: Duration::from_millis(100),
        ..Options::default()
    };
    let server = FakeApiServer::start_with(opts).await.unwrap();
    server.upsert(ingress("a")).unwrap();
    let rv = server.resource_version();
    let r = raw(
        server.addr(),
        "GET",
        &format!("{ING}?watch=true&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=1"),
        None,
        b"",
        T,
    )
    .await;
    let lines = r.lines();
    assert!(lines.len() >= 3, "expected several bookmarks, got {lines:?}");
    for l in &lines {
        assert_eq!(l["type"], "BOOKMARK");
        assert_eq!(l["object"]["kind"], "Ingress");
        assert_eq!(l["object"]["apiVersion"], "networking.k8s.io/v1");
        assert_eq!(l["object"]["metadata"]["resourceVersion"], rv.to_string());
        assert!(l["object"].get("spec").is_none());
    }

    // Streaming list (sendInitialEvents): state as ADDED, then a bookmark marking the end.
    let r = raw(
        server.addr(),
        "GET",
        &format!(
            "{ING}?watch=true&timeoutSeconds=1&allowWatchBookmarks=true&sendInitialEvents=true\
             &resourceVersionMatch=NotOlderThan&resourceVersion=0"
        ),
        None,
        b"",
        T,
    )
    .await;
    let lines = r.lines();
    assert_eq!(lines[0]["type"], "ADDED");
    assert_eq!(lines[1]["type"], "BOOKMARK");
    assert_eq!(
        lines[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
}

#[tokio::test]
async fn control_endpoints() {
    let server = FakeApiServer::start().await.unwrap();
    let a = server.addr();
    let body = serde_json::to_vec(&ingress("a")).unwrap();
    let r = raw(a, "PUT", "/__control/objects", Some("application/json"), &body, T).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["metadata"]["generation"], 1);
    let objs = raw(a, "GET", "/__control/objects", None, b"", T).await.json();
    assert_eq!(objs.as_array().unwrap().len(), 1);

    let r = raw(
        a,
        "POST",
        "/__control/fail-next?count=1&code=503&retryAfter=2",
        None,
        b"",
        T,
    )
    .await;
    assert_eq!(r.status, 200);
    let r = raw(a, "GET", ING, None, b"", T).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("2"));
    assert_eq!(r.json()["reason"], "ServiceUnavailable");
    assert_eq!(raw(a, "GET", ING, None, b"", T).await.status, 200);

    let reqs = raw(a, "GET", "/__control/requests", None, b"", T).await.json();
    let reqs = reqs.as_array().unwrap();
    assert_eq!(reqs.len(), 2, "control calls are not recorded: {reqs:?}");
    assert_eq!(reqs[0]["injected_failure"], 503);

    let state = raw(a, "GET", "/__control/state", None, b"", T).await.json();
    let floor = raw(a, "POST", "/__control/compact", None, b"", T).await.json()["historyFloor"].clone();
    assert!(floor.as_u64().unwrap() > state["resourceVersion"].as_u64().unwrap());
    assert_eq!(
        raw(a, "POST", "/__control/drop-watches", None, b"", T).await.json()["dropped"],
        0
    );
    let r = raw(
        a,
        "DELETE",
        "/__control/objects?apiVersion=networking.k8s.io/v1&kind=Ingress&namespace=default&name=a",
        None,
        b"",
        T,
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(server.list_objects("networking.k8s.io/v1", "Ingress").is_empty());
    assert_eq!(raw(a, "GET", "/__control/nope", None, b"", T).await.status, 404);
}

#[tokio::test]
async fn binary_serves_and_prints_kubeconfig() {
    let path = std::env::temp_dir().join(format!("fake-apiserver-bin-{}.yaml", std::process::id()));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fake-apiserver"))
        .args(["--addr", "127.0.0.1:0", "--kubeconfig"])
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stderr).read_line(&mut line).map(|_| line)
    })
    .await
    .unwrap()
    .unwrap();
    let result = async {
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_string();
        let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
        assert_eq!(
            kc.clusters[0].cluster.as_ref().unwrap().server.as_deref(),
            Some(url.as_str())
        );
        let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap();
        let client = kube::Client::try_from(config).unwrap();
        let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::default_namespaced(client);
        let cm: k8s_openapi::api::core::v1::ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": "x"}, "data": {"k": "v"}})).unwrap();
        api.create(&Default::default(), &cm).await.unwrap();
        assert_eq!(api.get("x").await.unwrap().data.unwrap()["k"], "v");
    };
    let outcome = tokio::time::timeout(Duration::from_secs(20), result).await;
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&path);
    outcome.expect("binary test timed out");
}
