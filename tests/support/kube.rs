//! Cluster-mode helpers: the gateway in-process against the fake API server, objects applied from YAML, and
//! the status the leader wrote.

use std::future::Future;
use std::time::Duration;

use portico::app::{Running, Source};
use portico::config::Config;
use portico::source::kube::ClusterOptions;
use portico_fake_apiserver::FakeApiServer;
use serde::Deserialize;
use serde_json::Value;

/// A configuration that serves only Gateways.
pub const GATEWAY_ONLY: &str = "listenerSets: []\nadmin: { address: \"127.0.0.1:0\" }\n";
pub const GATEWAY_V1: &str = "gateway.networking.k8s.io/v1";

/// Runs `f`, failing the test if it takes more than 90 s.
pub async fn bounded<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(Duration::from_secs(90), f)
        .await
        .expect("test did not finish in time");
}

/// Waits until `f` holds, failing the test after `within`.
pub async fn until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + within;
    while !f() {
        assert!(tokio::time::Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Upserts every document of a multi-document YAML text.
pub fn apply(server: &FakeApiServer, yaml: &str) {
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let v = serde_yaml::Value::deserialize(doc).unwrap();
        if !v.is_null() {
            server.upsert(serde_json::to_value(v).unwrap()).unwrap();
        }
    }
}

/// The gateway in cluster mode on `config`, with a 200 ms watch retry, once it has published its first table.
pub async fn start_ready(server: &FakeApiServer, config: &str) -> Running {
    let options = ClusterOptions {
        identity: "gw-test".into(),
        retry: Duration::from_millis(200),
        ..Default::default()
    };
    let gw = portico::app::start(
        Config::from_yaml(config).unwrap(),
        Source::Kube {
            client: server.client(),
            options,
        },
    )
    .await
    .unwrap();
    let shared = gw.shared.clone();
    until("first publish", Duration::from_secs(10), || shared.is_ready()).await;
    gw
}

/// The `status` of a Gateway API object; `null` when it has none.
pub fn gateway_status(server: &FakeApiServer, kind: &str, ns: &str, name: &str) -> Value {
    server
        .get_object(GATEWAY_V1, kind, ns, name)
        .and_then(|o| o.get("status").cloned())
        .unwrap_or(Value::Null)
}

/// (status, reason) of condition `type_` in `conditions`; empty strings when there is none.
pub fn condition(conditions: &Value, type_: &str) -> (String, String) {
    let found = conditions
        .as_array()
        .and_then(|l| l.iter().find(|c| c["type"] == type_));
    let field = |k: &str| found.and_then(|c| c[k].as_str()).unwrap_or_default().to_string();
    (field("status"), field("reason"))
}

/// `("True", "Accepted")` as the owned pair [`condition`] returns.
pub fn pair(s: &str, r: &str) -> (String, String) {
    (s.to_string(), r.to_string())
}

/// Our `status.parents[]` entry (controllerName `portico.dev/gateway-controller`) of HTTPRoute `ns/name`; `null`
/// when there is none.
pub fn our_parent(server: &FakeApiServer, ns: &str, name: &str) -> Value {
    gateway_status(server, "HTTPRoute", ns, name)["parents"]
        .as_array()
        .and_then(|ps| {
            ps.iter()
                .find(|p| p["controllerName"] == "portico.dev/gateway-controller")
                .cloned()
        })
        .unwrap_or(Value::Null)
}

/// (status, reason) of condition `type_` in our parent entry of HTTPRoute `ns/name`.
pub fn route_condition(server: &FakeApiServer, ns: &str, name: &str, type_: &str) -> (String, String) {
    condition(&our_parent(server, ns, name)["conditions"], type_)
}
