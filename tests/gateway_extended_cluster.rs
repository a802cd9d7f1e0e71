//! Gateway API extended features in cluster mode, end to end with the fake API server: the status each route
//! gets for a `CORS` filter (served, or refused with `UnsupportedValue`), a backend whose `appProtocol` needs TLS
//! (`ResolvedRefs` False, `UnsupportedProtocol`) and filters on one of several backendRefs (`UnsupportedValue`);
//! and a CORS preflight answered on the Gateway's socket.

mod support;

use std::time::Duration;

use portico_fake_apiserver::FakeApiServer;
use support::kube::{self, apply, bounded, pair, start_ready, until, GATEWAY_ONLY};

const SEC10: Duration = Duration::from_secs(10);

async fn start(server: &FakeApiServer) -> portico::app::Running {
    start_ready(server, GATEWAY_ONLY).await
}

/// (status, reason) of our parent entry's condition `type_` on HTTPRoute `team/name`.
fn route_condition(server: &FakeApiServer, name: &str, type_: &str) -> (String, String) {
    kube::route_condition(server, "team", name, type_)
}

fn objects(port: u16) -> String {
    let route = |name: &str, rule: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: team}}\nspec:\n  parentRefs: [{{name: gw, namespace: infra}}]\n  hostnames: [{name}.example.com]\n  rules:\n  - {rule}\n"
        )
    };
    [
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: portico}\nspec: {controllerName: portico.dev/gateway-controller}\n".to_string(),
        format!("---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: infra}}\nspec:\n  gatewayClassName: portico\n  addresses: [{{value: 127.0.0.1}}]\n  listeners:\n  - name: http\n    port: {port}\n    protocol: HTTP\n    allowedRoutes: {{namespaces: {{from: All}}}}\n"),
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: team}\nspec: {ports: [{port: 80}]}\n".to_string(),
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: secure, namespace: team}\nspec: {ports: [{port: 443, appProtocol: kubernetes.io/wss}]}\n".to_string(),
        route(
            "cors",
            "filters: [{type: CORS, cors: {allowOrigins: ['https://*.example.org'], allowMethods: [GET, PUT], maxAge: 60}}]\n    backendRefs: [{name: web, port: 80}]",
        ),
        route(
            "bad-cors",
            "filters: [{type: CORS, cors: {allowOrigins: ['https://a.example.org/path']}}]\n    backendRefs: [{name: web, port: 80}]",
        ),
        route("wss", "backendRefs: [{name: secure, port: 443}]"),
        route(
            "split-filters",
            "backendRefs:\n    - {name: web, port: 80}\n    - {name: web, port: 80, filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x, value: y}]}}]}",
        ),
    ]
    .concat()
}

#[tokio::test]
async fn status_and_serving_of_extended_features() {
    bounded(async {
        let server = FakeApiServer::start().await.unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        apply(&server, &objects(port));
        let gw = start(&server).await;
        let routes = ["cors", "bad-cors", "wss", "split-filters"];
        until("status of every route", SEC10, || {
            routes.iter().all(|name| route_condition(&server, name, "ResolvedRefs") != pair("", ""))
        })
        .await;
        let cases = [
            ("cors", pair("True", "Accepted"), pair("True", "ResolvedRefs")),
            ("bad-cors", pair("False", "UnsupportedValue"), pair("True", "ResolvedRefs")),
            ("wss", pair("True", "Accepted"), pair("False", "UnsupportedProtocol")),
            ("split-filters", pair("False", "UnsupportedValue"), pair("True", "ResolvedRefs")),
        ];
        for (name, accepted, resolved) in &cases {
            assert_eq!(&route_condition(&server, name, "Accepted"), accepted, "{name}");
            assert_eq!(&route_condition(&server, name, "ResolvedRefs"), resolved, "{name}");
        }

        // The CORS route is served on the Gateway's socket: a preflight is answered here.
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut reply = String::new();
        until("the Gateway's socket answers", SEC10, || std::net::TcpStream::connect(addr).is_ok()).await;
        for _ in 0..50 {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(b"OPTIONS /x HTTP/1.1\r\nHost: cors.example.com\r\nOrigin: https://a.b.example.org\r\nAccess-Control-Request-Method: PUT\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut buf = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
            reply = String::from_utf8_lossy(&buf).to_ascii_lowercase();
            if reply.starts_with("http/1.1 200") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(reply.starts_with("http/1.1 200"), "{reply}");
        assert!(reply.contains("access-control-allow-origin: https://a.b.example.org\r\n"), "{reply}");
        assert!(reply.contains("access-control-allow-methods: get, put\r\n"), "{reply}");
        assert!(reply.contains("access-control-max-age: 60\r\n"), "{reply}");
        gw.shutdown().await;
    })
    .await;
}
