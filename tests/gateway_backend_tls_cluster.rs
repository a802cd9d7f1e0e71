//! BackendTLSPolicy in cluster mode with the fake API server: the policy's `status.ancestors[]` (the Gateway,
//! `Accepted`/`ResolvedRefs`), the route's `ResolvedRefs`, a request served over TLS to a real backend, and a
//! CA ConfigMap fixed through the API (the policy becomes accepted, the route resolved, the share served), and
//! one replaced by another CA's (the next requests fail verification).

mod support;

use std::time::Duration;

use portico_fake_apiserver::FakeApiServer;
use serde_json::Value;
use support::kube::{
    self, apply, bounded, condition as find_condition, pair, start_ready, until, GATEWAY_ONLY, GATEWAY_V1 as GROUP_V1,
};

const SEC10: Duration = Duration::from_secs(10);

async fn start(server: &FakeApiServer) -> portico::app::Running {
    start_ready(server, GATEWAY_ONLY).await
}

/// Our parent entry's condition on HTTPRoute `team/name`.
fn route_condition(server: &FakeApiServer, name: &str, type_: &str) -> (String, String) {
    kube::route_condition(server, "team", name, type_)
}

/// BackendTLSPolicy `team/name`'s `status.ancestors`.
fn ancestors(server: &FakeApiServer, name: &str) -> Vec<Value> {
    server
        .get_object(GROUP_V1, "BackendTLSPolicy", "team", name)
        .and_then(|o| o["status"]["ancestors"].as_array().cloned())
        .unwrap_or_default()
}

fn ca_config_map(name: &str, ca_pem: &str) -> String {
    let indent: String = ca_pem.lines().map(|l| format!("    {l}\n")).collect();
    format!("---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: team}}\ndata:\n  ca.crt: |\n{indent}")
}

fn objects(port: u16, backend: std::net::SocketAddr, ca_pem: &str) -> String {
    let route = |name: &str, svc: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: team}}\nspec:\n  parentRefs: [{{name: gw, namespace: infra}}]\n  hostnames: [{name}.example.com]\n  rules:\n  - backendRefs: [{{name: {svc}, port: 443}}]\n"
        )
    };
    let service = |name: &str| {
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: team}}\nspec: {{ports: [{{name: https, port: 443, appProtocol: https}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: team\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: https, port: {}}}]\nendpoints:\n- addresses: [\"{}\"]\n  conditions: {{ready: true}}\n",
            backend.port(),
            backend.ip()
        )
    };
    let policy = |name: &str, cm: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {{name: {name}, namespace: team, generation: 1}}\nspec:\n  targetRefs: [{{group: \"\", kind: Service, name: {name}, sectionName: https}}]\n  validation:\n    hostname: backend.internal\n    caCertificateRefs: [{{group: \"\", kind: ConfigMap, name: {cm}}}]\n"
        )
    };
    [
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: portico}\nspec: {controllerName: portico.dev/gateway-controller}\n".to_string(),
        format!("---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: infra}}\nspec:\n  gatewayClassName: portico\n  addresses: [{{value: 127.0.0.1}}]\n  listeners:\n  - name: http\n    port: {port}\n    protocol: HTTP\n    allowedRoutes: {{namespaces: {{from: All}}}}\n"),
        ca_config_map("backend-ca", ca_pem),
        service("good"),
        policy("good", "backend-ca"),
        route("good", "good"),
        service("missing-ca"),
        policy("missing-ca", "later-ca"),
        route("missing-ca", "missing-ca"),
        service("none"),
        route("none", "none"),
    ]
    .concat()
}

async fn status_of(addr: std::net::SocketAddr, host: &str) -> u16 {
    support::get(addr, host, "/").await.status
}

#[tokio::test]
async fn policy_status_route_status_and_serving() {
    bounded(async {
        let ca = portico::certs::testing::TestCa::new();
        let backend = support::tls_backend(&ca, &["backend.internal"], b"http/1.1").await;
        let server = FakeApiServer::start().await.unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        apply(&server, &objects(port, backend, &ca.pem));
        let gw = start(&server).await;
        until("status of the routes and policies", SEC10, || {
            ["good", "missing-ca", "none"]
                .iter()
                .all(|name| route_condition(&server, name, "ResolvedRefs") != pair("", ""))
                && ["good", "missing-ca"]
                    .iter()
                    .all(|name| !ancestors(&server, name).is_empty())
        })
        .await;
        assert_eq!(
            route_condition(&server, "good", "ResolvedRefs"),
            pair("True", "ResolvedRefs")
        );
        assert_eq!(
            route_condition(&server, "missing-ca", "ResolvedRefs"),
            pair("False", "InvalidBackendTLSPolicy")
        );
        assert_eq!(
            route_condition(&server, "none", "ResolvedRefs"),
            pair("False", "UnsupportedProtocol")
        );
        let good = ancestors(&server, "good");
        assert_eq!(good.len(), 1, "{good:?}");
        assert_eq!(good[0]["controllerName"], "portico.dev/gateway-controller");
        assert_eq!(good[0]["ancestorRef"]["kind"], "Gateway");
        assert_eq!(good[0]["ancestorRef"]["namespace"], "infra");
        assert_eq!(good[0]["ancestorRef"]["name"], "gw");
        assert_eq!(
            find_condition(&good[0]["conditions"], "Accepted"),
            pair("True", "Accepted")
        );
        assert_eq!(
            find_condition(&good[0]["conditions"], "ResolvedRefs"),
            pair("True", "ResolvedRefs")
        );
        assert_eq!(good[0]["conditions"][0]["observedGeneration"], 1);
        let missing = ancestors(&server, "missing-ca");
        assert_eq!(
            find_condition(&missing[0]["conditions"], "Accepted"),
            pair("False", "NoValidCACertificate")
        );
        assert_eq!(
            find_condition(&missing[0]["conditions"], "ResolvedRefs"),
            pair("False", "InvalidCACertificateRef")
        );
        let message = missing[0]["conditions"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains("ConfigMap team/later-ca not found"), "{message}");

        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        until("the Gateway's socket answers", SEC10, || {
            std::net::TcpStream::connect(addr).is_ok()
        })
        .await;
        let r = support::get(addr, "good.example.com", "/").await;
        assert_eq!((r.status, r.text().as_str()), (200, "tls HTTP/1.1"));
        assert_eq!(status_of(addr, "missing-ca.example.com").await, 500);
        assert_eq!(status_of(addr, "none.example.com").await, 500);

        // The missing ConfigMap appears: the policy is accepted, the route resolved, and its share served.
        apply(&server, &ca_config_map("later-ca", &ca.pem));
        until("the policy is accepted", SEC10, || {
            ancestors(&server, "missing-ca")
                .first()
                .is_some_and(|a| find_condition(&a["conditions"], "Accepted") == pair("True", "Accepted"))
                && route_condition(&server, "missing-ca", "ResolvedRefs") == pair("True", "ResolvedRefs")
        })
        .await;
        let mut served = 0;
        for _ in 0..50 {
            served = status_of(addr, "missing-ca.example.com").await;
            if served == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(served, 200);

        // The CA ConfigMap is replaced by one of another CA: the policy's client is rebuilt (no pooled connection
        // verified by the old CA is reused) and the backend's certificate no longer verifies: 502.
        let other = portico::certs::testing::TestCa::new();
        apply(&server, &ca_config_map("backend-ca", &other.pem));
        let mut after = 0;
        for _ in 0..50 {
            after = status_of(addr, "good.example.com").await;
            if after == 502 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(after, 502, "a rotated CA applies to the next requests");
        gw.shutdown().await;
    })
    .await;
}
