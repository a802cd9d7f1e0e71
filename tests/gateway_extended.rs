//! Gateway API extended features served in file mode, end to end over loopback: HTTPRoute's `CORS` filter
//! (the cases of the conformance suite's `HTTPRouteCORS` and `CORSAllowCredentialsBehavior`), regular-expression
//! matches (paths, headers, GRPCRoute services and methods), a backendRef's own filters, parentRef `port` (a
//! route attached to one listener's port is not served on the other's), WebSocket backends, and backends whose
//! `appProtocol` needs TLS (unresolved: their rule answers 500).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

const GATEWAY_ONLY: &str = r#"
listenerSets: []
admin: { address: "127.0.0.1:0" }
"#;

const CLASS: &str = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: portico}\nspec: {controllerName: portico.dev/gateway-controller}\n";

/// A Gateway with two HTTP listeners, `http` and `other`, on two ports.
fn gateway(http: u16, other: u16) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: default}}\nspec:\n  gatewayClassName: portico\n  addresses: [{{type: IPAddress, value: 127.0.0.1}}]\n  listeners:\n  - {{name: http, protocol: HTTP, port: {http}}}\n  - {{name: other, protocol: HTTP, port: {other}}}\n"
    )
}

/// A Service like `support::service`'s whose port has an `appProtocol`.
fn service_with_protocol(name: &str, addr: SocketAddr, protocol: &str) -> String {
    service("default", name, &[addr]).replace(
        "spec: {ports: [{name: http, port: 80}]}",
        &format!("spec: {{ports: [{{name: http, port: 80, appProtocol: {protocol}}}]}}"),
    )
}

struct Setup {
    gw: Gateway,
    http: SocketAddr,
    other: SocketAddr,
    _backends: Vec<portico::echo::EchoServer>,
}

async fn setup(extra: &str, routes: &str) -> Setup {
    let (a, b) = (echo("a").await, echo("b").await);
    let (http, other) = (free_port(), free_port());
    let m = format!(
        "{CLASS}{}{}{extra}{}{routes}",
        service("default", "a", &[a.addr]),
        service("default", "b", &[b.addr]),
        gateway(http, other)
    );
    let gw = Gateway::start_with(GATEWAY_ONLY, &m).await;
    let (http, other) = (bound(http).await, bound(other).await);
    Setup {
        gw,
        http,
        other,
        _backends: vec![a, b],
    }
}

async fn req(addr: SocketAddr, method: http::Method, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    send(addr, method, host, path, headers, Bytes::new()).await
}

fn header<'a>(r: &'a Reply, name: &str) -> Option<&'a str> {
    r.headers.get(name).map(|v| v.to_str().unwrap())
}

// === CORS ===

const CORS: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cors, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [cors.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /cors-1}}]
    filters:
    - type: CORS
      cors:
        allowOrigins: ["https://www.foo.com", "https://*.bar.com"]
        allowMethods: [GET, OPTIONS]
        allowHeaders: [x-header-1, x-header-2]
        exposeHeaders: [x-header-3, x-header-4]
        allowCredentials: true
        maxAge: 3600
    backendRefs: [{name: a, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /cors-2}}]
    filters:
    - type: CORS
      cors: {allowOrigins: ["https://www.foo.com"], allowMethods: ["*"], allowHeaders: ["*"]}
    backendRefs: [{name: a, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /creds-true}}]
    filters: [{type: CORS, cors: {allowCredentials: true}}]
    backendRefs: [{name: a, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /creds-false}}]
    filters: [{type: CORS, cors: {allowCredentials: false}}]
    backendRefs: [{name: a, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bad-cors, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [bad-cors.test]
  rules:
  - filters: [{type: CORS, cors: {allowOrigins: ["www.foo.com"]}}]
    backendRefs: [{name: a, port: 80}]
"#;

fn preflight<'a>(origin: &'a str, method: &'a str, headers: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![("origin", origin), ("access-control-request-method", method)];
    if let Some(v) = headers {
        h.push(("access-control-request-headers", v));
    }
    h
}

#[tokio::test]
async fn cors_filter_answers_preflights_and_marks_responses() {
    let s = setup("", CORS).await;
    let options = http::Method::OPTIONS;
    // Preflights from an exact origin, a one-label and a two-label wildcard match: answered here, 200.
    for origin in ["https://www.foo.com", "https://www.bar.com", "https://xpto.www.bar.com"] {
        let r = req(
            s.http,
            options.clone(),
            "cors.test",
            "/cors-1",
            &preflight(origin, "GET", Some("x-header-1, x-header-2")),
        )
        .await;
        assert_eq!(r.status, 200, "{origin}");
        assert_eq!(r.backend(), None, "{origin}: the backend never sees a preflight");
        assert_eq!(header(&r, "access-control-allow-origin"), Some(origin));
        assert_eq!(header(&r, "access-control-allow-methods"), Some("GET, OPTIONS"));
        assert_eq!(
            header(&r, "access-control-allow-headers"),
            Some("x-header-1, x-header-2")
        );
        assert_eq!(
            header(&r, "access-control-expose-headers"),
            Some("x-header-3, x-header-4")
        );
        assert_eq!(header(&r, "access-control-max-age"), Some("3600"));
        assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    }
    // An origin not allowed: no CORS headers, on a preflight or a request (which the backend serves).
    let r = req(
        s.http,
        options.clone(),
        "cors.test",
        "/cors-1",
        &preflight("https://foobar.com", "GET", None),
    )
    .await;
    assert!(matches!(r.status, 200 | 204 | 403), "{}", r.status);
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    let r = req(
        s.http,
        http::Method::GET,
        "cors.test",
        "/cors-1",
        &[("origin", "https://foobar.com")],
    )
    .await;
    assert_eq!((r.status, r.backend().as_deref()), (200, Some("a")));
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    // A request from an allowed origin reaches the backend; its response gets the CORS headers.
    let r = req(
        s.http,
        http::Method::GET,
        "cors.test",
        "/cors-1",
        &[("origin", "https://www.bar.com")],
    )
    .await;
    assert_eq!((r.status, r.backend().as_deref()), (200, Some("a")));
    assert_eq!(header(&r, "access-control-allow-origin"), Some("https://www.bar.com"));
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    assert_eq!(
        header(&r, "access-control-expose-headers"),
        Some("x-header-3, x-header-4")
    );
    assert!(r.headers.get_all("vary").iter().any(|v| v == "Origin"));
    // Wildcard methods and headers answer what the preflight asks; no credentials header without credentials.
    let r = req(
        s.http,
        options.clone(),
        "cors.test",
        "/cors-2",
        &preflight("https://www.foo.com", "POST", Some("x-custom")),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "access-control-allow-origin"), Some("https://www.foo.com"));
    assert_eq!(header(&r, "access-control-allow-methods"), Some("POST"));
    assert_eq!(header(&r, "access-control-allow-headers"), Some("x-custom"));
    assert_eq!(header(&r, "access-control-allow-credentials"), None);
    assert_eq!(header(&r, "access-control-max-age"), Some("5"), "the default maxAge");
    // allowCredentials on a filter without allowOrigins (CORSAllowCredentialsBehavior).
    let creds = [
        ("origin", "https://app.example"),
        ("cookie", "sid=abc123"),
        ("authorization", "Bearer test"),
    ];
    let r = req(s.http, http::Method::GET, "cors.test", "/creds-true", &creds).await;
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    assert_eq!(header(&r, "access-control-allow-origin"), Some("https://app.example"));
    let r = req(s.http, http::Method::GET, "cors.test", "/creds-false", &creds).await;
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "access-control-allow-credentials"), None);
    // A CORS filter that cannot be served refuses its route: nothing is served without it.
    let r = req(
        s.http,
        http::Method::GET,
        "bad-cors.test",
        "/",
        &[("origin", "https://www.foo.com")],
    )
    .await;
    assert_eq!(r.status, 404);
    // The dashboard's API lists the Gateway's sockets as listener sets, with their routes and the diagnostics.
    let admin = s.gw.running().admin_addr;
    let routes = get(admin, "admin", "/api/routes").await.json();
    let name = format!("gateway default/gw {}", s.http);
    let set = routes["sets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == name.as_str())
        .unwrap_or_else(|| panic!("no set {name} in {routes}"));
    assert_eq!(set["http"][0], s.http.to_string());
    let host = set["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "cors.test")
        .unwrap();
    let paths = host["paths"].as_array().unwrap();
    let cors1 = paths.iter().find(|p| p["path"] == "/cors-1").unwrap();
    assert_eq!(cors1["ingress"], "default/cors");
    assert_eq!(cors1["policy"], "[filters CORS]");
    let diags = get(admin, "admin", "/api/diagnostics").await.json();
    assert!(
        diags["diagnostics"].as_array().unwrap().iter().any(|d| d["message"]
            .as_str()
            .unwrap()
            .contains("HTTPRoute default/bad-cors: spec.parentRefs[0]")),
        "{diags}"
    );
    let explain = get(
        admin,
        "admin",
        &format!(
            "/api/explain?set={}&host=cors.test&path=/cors-2/x",
            name.replace(' ', "%20")
        ),
    )
    .await
    .json();
    assert_eq!(explain["set"], name.as_str(), "{explain}");
    s.gw.stop().await;
}

/// `portico check` prints a Gateway's routes with what their rules add, and names a refused route's field.
#[test]
fn check_shows_gateway_routes_and_refusals() {
    let m = format!(
        "{CLASS}{}{}{}{CORS}",
        service("default", "a", &["127.0.0.1:9".parse().unwrap()]),
        service("default", "b", &["127.0.0.1:9".parse().unwrap()]),
        gateway(18080, 18081)
    );
    let (code, text) = portico_check(&m, GATEWAY_ONLY);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("listener set gateway default/gw 127.0.0.1:18080:"),
        "{text}"
    );
    assert!(
        text.contains("cors.test/cors-1 Prefix -> default/a:80 [127.0.0.1:9] (HTTPRoute default/cors) [filters CORS]"),
        "{text}"
    );
    assert!(
        text.contains("HTTPRoute default/bad-cors: spec.parentRefs[0] (Gateway default/gw): spec.rules[0].filters[0]: cors.allowOrigins"),
        "{text}"
    );
}

// === Regular expressions, method-only gRPC matches ===

const REGEX: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: regex, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  hostnames: [regex.test]
  rules:
  - matches: [{path: {type: RegularExpression, value: "/items/[0-9]+"}}]
    backendRefs: [{name: b, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /h}, headers: [{type: RegularExpression, name: x-tier, value: "gold|silver"}]}]
    backendRefs: [{name: b, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /q}, queryParams: [{type: RegularExpression, name: v, value: "[0-9]+"}]}]
    backendRefs: [{name: b, port: 80}]
  - backendRefs: [{name: a, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: grpc, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  hostnames: [grpc.test]
  rules:
  - matches: [{method: {type: RegularExpression, service: "pkg\\.v[0-9]+\\.Orders", method: "Get.*"}}]
    backendRefs: [{name: b, port: 80}]
  - matches: [{method: {method: Ping}}]
    backendRefs: [{name: b, port: 80}]
  - backendRefs: [{name: a, port: 80}]
"#;

#[tokio::test]
async fn regular_expression_matches_and_method_only_grpc_matches() {
    let s = setup("", REGEX).await;
    let get = http::Method::GET;
    let backend = |r: Reply| r.backend();
    for (path, headers, want) in [
        ("/items/42", &[][..], "b"),
        ("/items/42/more", &[], "a"),
        ("/items/x", &[], "a"),
        ("/ITEMS/42", &[], "a"),
        ("/h", &[("x-tier", "gold")][..], "b"),
        ("/h", &[("x-tier", "golden")], "a"),
        ("/q?v=12", &[], "b"),
        ("/q?v=1x", &[], "a"),
    ] {
        let r = req(s.http, get.clone(), "regex.test", path, headers).await;
        assert_eq!(backend(r).as_deref(), Some(want), "{path} {headers:?}");
    }
    let post = http::Method::POST;
    let grpc = [("content-type", "application/grpc")];
    for (path, want) in [
        ("/pkg.v2.Orders/GetOne", "b"),
        ("/pkg.v2.Orders/List", "a"),
        ("/pkgxv2.Orders/GetOne", "a"),
        ("/any.Service/Ping", "b"),
        ("/any.Service/Pings", "a"),
    ] {
        let r = req(s.http, post.clone(), "grpc.test", path, &grpc).await;
        assert_eq!(backend(r).as_deref(), Some(want), "{path}");
    }
    s.gw.stop().await;
}

// === backendRef filters, parentRef port ===

const BACKEND_FILTERS_AND_PORTS: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend-filter, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [bf.test]
  rules:
  - backendRefs:
    - name: b
      port: 80
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: x-backend-filter, value: "on"}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: two-backends-filtered, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [bf2.test]
  rules:
  - backendRefs:
    - {name: a, port: 80}
    - name: b
      port: 80
      filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-only-b, value: "on"}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: by-port, namespace: default}
spec:
  parentRefs: [{name: gw, port: PORT}]
  hostnames: [port.test]
  rules:
  - backendRefs: [{name: b, port: 80}]
"#;

#[tokio::test]
async fn backend_ref_filters_and_parent_ref_ports() {
    // The route `by-port` names the second listener's port; its port is only known once chosen.
    let other = free_port();
    let (a, b) = (echo("a").await, echo("b").await);
    let http = free_port();
    let m = format!(
        "{CLASS}{}{}{}{}",
        service("default", "a", &[a.addr]),
        service("default", "b", &[b.addr]),
        gateway(http, other),
        BACKEND_FILTERS_AND_PORTS.replace("PORT", &other.to_string())
    );
    let gw = Gateway::start_with(GATEWAY_ONLY, &m).await;
    let http: SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();
    let other: SocketAddr = format!("127.0.0.1:{other}").parse().unwrap();
    for addr in [http, other] {
        assert!(eventually(Duration::from_secs(5), || std::net::TcpStream::connect(addr).is_ok()).await);
    }
    let get = http::Method::GET;
    let r = req(http, get.clone(), "bf.test", "/", &[]).await;
    assert_eq!(r.backend().as_deref(), Some("b"));
    assert_eq!(
        r.json()["headers"]["x-backend-filter"],
        "on",
        "the backendRef's filter ran"
    );
    // Filters on one of several backendRefs are not served: the route is refused, not run without them.
    assert_eq!(req(http, get.clone(), "bf2.test", "/", &[]).await.status, 404);
    // parentRef port: served on that listener's port only.
    let r = req(other, get.clone(), "port.test", "/", &[]).await;
    assert_eq!(r.backend().as_deref(), Some("b"));
    assert_eq!(req(http, get.clone(), "port.test", "/", &[]).await.status, 404);
    gw.stop().await;
    drop((a, b));
}

// === WebSocket and TLS backends ===

/// A backend that answers `Upgrade: websocket` with 101 and then echoes bytes.
async fn websocket_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(serve_websocket_echo(s, b"plain"));
        }
    });
    addr
}

const PROTOCOLS: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: protocols, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  hostnames: [ws.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /socket}}]
    backendRefs: [{name: ws, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /secure}}]
    backendRefs: [{name: wss, port: 80}]
"#;

#[tokio::test]
async fn websocket_backends_tunnel_and_tls_backends_are_unresolved() {
    let ws = websocket_backend().await;
    let wss = echo("wss").await;
    let extra = format!(
        "{}{}",
        service_with_protocol("ws", ws, "kubernetes.io/ws"),
        service_with_protocol("wss", wss.addr, "kubernetes.io/wss")
    );
    let s = setup(&extra, PROTOCOLS).await;
    let mut c = TcpStream::connect(s.http).await.unwrap();
    c.write_all(
        b"GET /socket HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_response_head(&mut c).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_tunnel_echoes(&mut c, 3).await;
    // appProtocol kubernetes.io/wss needs TLS to the backend: unresolved, its rule answers 500 (never plaintext).
    let r = req(s.http, http::Method::GET, "ws.test", "/secure", &[]).await;
    assert_eq!(r.status, 500);
    assert!(
        wss.requests().is_empty(),
        "nothing was sent to the TLS backend in plaintext"
    );
    s.gw.stop().await;
    let _ = s.other;
}
