//! Gateway API extended features served in file mode, end to end over loopback: HTTPRoute's `CORS` filter
//! (the cases of the conformance suite's `HTTPRouteCORS` and `CORSAllowCredentialsBehavior`), regular-expression
//! matches (paths, headers, GRPCRoute services and methods), a backendRef's own filters, parentRef `port` (a
//! route attached to one listener's port is not served on the other's), WebSocket backends, and backends whose
//! `appProtocol` needs TLS (unresolved: their rule answers 500), HTTPRoute `timeouts` (`request` a deadline for
//! the whole exchange, `backendRequest` one per try), and `RequestMirror` copying request bodies.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
    serve_each(|s| serve_websocket_echo(s, b"plain")).await
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

// === Timeouts ===

/// A backend that reads a request, waits `delay`, then closes the connection without an answer.
async fn closing_after(delay: Duration) -> SocketAddr {
    serve_each(move |mut s| async move {
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        tokio::time::sleep(delay).await;
    })
    .await
}

/// A backend that answers headers at once (`Content-Length: 20`), then one body byte every 100 ms (2 s in all).
async fn trickling_backend() -> SocketAddr {
    serve_each(|mut s| async move {
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if s.write_all(b"x").await.is_err() {
                return;
            }
        }
        let _ = s.read(&mut buf).await;
    })
    .await
}

const TIMEOUTS: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: timeouts, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  hostnames: [timeouts.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /retries}}]
    timeouts: {request: 1s, backendRequest: 900ms}
    backendRefs: [{name: closing, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /silent}}]
    timeouts: {backendRequest: 500ms}
    backendRefs: [{name: silent, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /trickle/whole}}]
    timeouts: {request: 1s}
    backendRefs: [{name: trickle, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /trickle/try}}]
    timeouts: {backendRequest: 1s}
    backendRefs: [{name: trickle, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /trickle/off}}]
    timeouts: {request: 0s, backendRequest: 0s}
    backendRefs: [{name: trickle, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /upload}}]
    timeouts: {request: 1s}
    backendRefs: [{name: a, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: too-long, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  hostnames: [too-long.test]
  rules:
  - timeouts: {request: 1s, backendRequest: 2s}
    backendRefs: [{name: a, port: 80}]
"#;

/// A GET through the gateway: the status, and the body or why it failed.
async fn get_body(addr: SocketAddr, host: &str, path: &str) -> (u16, Result<Bytes, String>) {
    let req = http::Request::get(format!("http://{addr}{path}"))
        .header("host", host)
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await;
    (status, body.map(|b| b.to_bytes()).map_err(|e| format!("{e:?}")))
}

#[tokio::test]
async fn request_timeout_is_a_deadline_for_the_whole_exchange() {
    let closing = [
        closing_after(Duration::from_millis(600)).await,
        closing_after(Duration::from_millis(600)).await,
        closing_after(Duration::from_millis(600)).await,
    ];
    let silent = closing_after(Duration::from_secs(30)).await;
    let trickle = trickling_backend().await;
    let extra = format!(
        "{}{}{}",
        service("default", "closing", &closing),
        service("default", "silent", &[silent]),
        service("default", "trickle", &[trickle])
    );
    let s = setup(&extra, TIMEOUTS).await;
    let host = "timeouts.test";
    let bounded = |f| tokio::time::timeout(Duration::from_secs(10), f);

    // Three endpoints, each breaking after 600 ms: retried, but the whole exchange ends at its 1 s deadline with
    // 504, not after three tries (1.8 s, then 502) nor three backendRequest timeouts (2.7 s).
    let started = std::time::Instant::now();
    let (status, _) = bounded(get_body(s.http, host, "/retries")).await.unwrap();
    let took = started.elapsed();
    assert_eq!(status, 504);
    // The status tells the deadline from the tries (those end in 502 at 1.8 s); the bound leaves room for a loaded
    // machine.
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    let sample = "portico_upstream_errors_total{set=\"gateway\",kind=\"timeout\"}";
    assert_eq!(metric(&s.gw, sample).await, Some(1.0), "counted as an upstream timeout");

    // backendRequest alone: a try without response headers ends with 504 after it.
    let started = std::time::Instant::now();
    let (status, _) = bounded(get_body(s.http, host, "/silent")).await.unwrap();
    assert_eq!(status, 504);
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());

    // Headers at once, then a body trickling for 2 s: the deadline (the whole exchange's, or the try's) cuts the
    // body: an error, never a short body that looks complete.
    for path in ["/trickle/whole", "/trickle/try"] {
        let started = std::time::Instant::now();
        let (status, body) = bounded(get_body(s.http, host, path)).await.unwrap();
        assert_eq!(status, 200, "{path}: the headers came in time");
        assert!(body.is_err(), "{path}: {body:?}");
        // An uncut body would end cleanly at 2 s; the bound only keeps the cut from being a later timeout's.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{path}: {:?}",
            started.elapsed()
        );
    }
    assert!(eventually(Duration::from_secs(5), || in_flight(&s.gw, trickle) == 0).await);
    // `0s` disables both: the whole body, after its 2 s.
    let (status, body) = bounded(get_body(s.http, host, "/trickle/off")).await.unwrap();
    assert_eq!((status, body.unwrap().len()), (200, 20));

    // backendRequest longer than request: the rule is refused, not served with either.
    let r = req(s.http, http::Method::GET, "too-long.test", "/", &[]).await;
    assert_eq!(r.status, 404);
    s.gw.stop().await;
}

#[tokio::test]
async fn a_slow_upload_past_the_request_deadline_is_the_clients_fault() {
    let s = setup("", TIMEOUTS).await;
    // Half of the body, then nothing: the gateway waits on the client when the 1 s deadline passes.
    let started = std::time::Instant::now();
    let mut c = TcpStream::connect(s.http).await.unwrap();
    c.write_all(b"POST /upload HTTP/1.1\r\nHost: timeouts.test\r\nContent-Length: 20\r\n\r\nten bytes.")
        .await
        .unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut resp))
        .await
        .expect("the gateway answered and closed")
        .unwrap();
    let resp = String::from_utf8_lossy(&resp);
    assert_eq!(raw_status(&resp), 408, "{resp}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // Not the backend's fault: no upstream error, nothing left in flight, and the backend still serves.
    let a = s._backends[0].addr;
    assert!(eventually(Duration::from_secs(5), || in_flight(&s.gw, a) == 0).await);
    for kind in ["timeout", "reset"] {
        let sample = format!("portico_upstream_errors_total{{set=\"gateway\",kind=\"{kind}\"}}");
        assert_eq!(metric(&s.gw, &sample).await, Some(0.0), "{sample}");
    }
    assert!(
        s._backends[0]
            .requests()
            .iter()
            .all(|q| q.uri.path() != "/upload" || q.body.len() < 20),
        "the backend's request was aborted, never completed"
    );
    // A whole body in time: served.
    let r = send(
        s.http,
        http::Method::POST,
        "timeouts.test",
        "/upload",
        &[],
        Bytes::from_static(b"twenty bytes of body"),
    )
    .await;
    assert_eq!((r.status, r.backend().as_deref()), (200, Some("a")));
    s.gw.stop().await;
}

// === RequestMirror with bodies ===

/// A mirror backend that reads the first bytes of a request, pauses `pause`, then reads to the end of the
/// connection; reports how many bytes it got in all.
async fn slow_reader(pause: Duration) -> (SocketAddr, tokio::sync::mpsc::Receiver<usize>) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let addr = serve_each(move |mut s| {
        let tx = tx.clone();
        async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = s.read(&mut buf).await.unwrap_or(0);
            tokio::time::sleep(pause).await;
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                total += n;
            }
            let _ = tx.send(total).await;
        }
    })
    .await;
    (addr, rx)
}

const MIRRORS: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mirror-body, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  hostnames: [mirror.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /same}}]
    backendRefs: [{name: a, port: 80}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: b, port: 80}}}]
  - matches: [{path: {type: PathPrefix, value: /slow}}]
    backendRefs: [{name: a, port: 80}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: slow, port: 80}}}]
  - matches: [{path: {type: PathPrefix, value: /down}}]
    backendRefs: [{name: a, port: 80}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: down, port: 80}}}]
"#;

/// What the backend `of` saw of its request for `path` (waiting for it a while).
async fn seen(of: &portico::echo::EchoServer, path: &str) -> portico::echo::Seen {
    let found = eventually(Duration::from_secs(5), || {
        of.requests().iter().any(|q| q.uri.path() == path)
    })
    .await;
    assert!(found, "{} saw no {path}", of.name);
    of.requests().into_iter().find(|q| q.uri.path() == path).unwrap()
}

#[tokio::test]
async fn request_mirror_copies_request_bodies() {
    let pause = Duration::from_secs(8);
    let (slow, mut slow_total) = slow_reader(pause).await;
    let down = closed_port().await;
    let extra = format!(
        "{}{}",
        service("default", "slow", &[slow]),
        service("default", "down", &[down])
    );
    let s = setup(&extra, MIRRORS).await;
    let (a, b) = (&s._backends[0], &s._backends[1]);

    // A body with a Content-Length: the same bytes and length at the backend and at the mirror.
    let body = Bytes::from_static(b"a body with a length, mirrored");
    let r = send(
        s.http,
        http::Method::POST,
        "mirror.test",
        "/same/length",
        &[],
        body.clone(),
    )
    .await;
    assert_eq!((r.status, r.backend().as_deref()), (200, Some("a")));
    let (main, copy) = (seen(a, "/same/length").await, seen(b, "/same/length").await);
    assert_eq!((&main.body, &copy.body), (&body, &body));
    assert_eq!(copy.headers.get("content-length"), main.headers.get("content-length"));
    assert_eq!(copy.method, http::Method::POST);

    // A chunked body: the same bytes at both.
    let resp = raw(
        s.http,
        "POST /same/chunked HTTP/1.1\r\nHost: mirror.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n8\r\n, chunks\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&resp), 200, "{resp}");
    let (main, copy) = (seen(a, "/same/chunked").await, seen(b, "/same/chunked").await);
    assert_eq!(&main.body[..], b"hello, chunks");
    assert_eq!(copy.body, main.body);

    // A mirror that is down changes nothing for the client.
    let big = Bytes::from(vec![b'd'; 1 << 20]);
    let r = send(s.http, http::Method::POST, "mirror.test", "/down", &[], big.clone()).await;
    assert_eq!((r.status, r.backend().as_deref()), (200, Some("a")));
    assert_eq!(seen(a, "/down").await.body.len(), big.len());

    // A large body, a mirror that stops reading for 8 s: the main backend gets it all before the mirror reads
    // again (the mirror, too far behind, is abandoned), and the mirror's request is cut short, never completed.
    let size = 24 << 20;
    let started = std::time::Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        send(
            s.http,
            http::Method::POST,
            "mirror.test",
            "/slow",
            &[],
            Bytes::from(vec![b's'; size]),
        ),
    )
    .await
    .unwrap();
    let took = started.elapsed();
    assert_eq!((r.status, r.backend().as_deref()), (200, Some("a")));
    assert_eq!(seen(a, "/slow").await.body.len(), size);
    assert!(
        took < pause.saturating_sub(Duration::from_millis(500)),
        "the main request waited for the mirror: {took:?}"
    );
    let total = tokio::time::timeout(Duration::from_secs(20), slow_total.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        total < size,
        "the abandoned mirror got {total} bytes of a {size}-byte body"
    );
    s.gw.stop().await;
}
