//! Gateway API served in file mode, end to end over loopback: a Gateway of our class binds its listeners'
//! sockets (HTTP and HTTPS by SNI), HTTPRoutes route by path, method and header in the spec's precedence,
//! split by weight, edit headers, redirect and rewrite; a rule without a usable backend answers 500, nothing
//! matching 404; a Gateway added or removed at runtime binds or unbinds its port.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use portico::certs::testing::{accept_any_client, key, TestCa, DAY};
use rustls_pki_types::ServerName;
use support::*;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const GATEWAY_ONLY: &str = r#"
listenerSets: []
admin: { address: "127.0.0.1:0" }
"#;

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn class() -> String {
    "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: portico}\nspec: {controllerName: portico.dev/gateway-controller}\n".into()
}

fn gateway(name: &str, http: u16, https: Option<u16>) -> String {
    let mut g = format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  gatewayClassName: portico\n  addresses: [{{type: IPAddress, value: 127.0.0.1}}]\n  listeners:\n  - {{name: http, protocol: HTTP, port: {http}}}\n"
    );
    if let Some(p) = https {
        g += &format!("  - name: https\n    protocol: HTTPS\n    port: {p}\n    hostname: secure.test\n    tls: {{mode: Terminate, certificateRefs: [{{name: gw-tls}}]}}\n");
    }
    g
}

const ROUTES: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: app, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [app.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: a, port: 80}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-set, value: "1"}], add: [{name: x-added, value: "2"}]}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {set: [{name: x-resp, value: "3"}]}
  - matches: [{path: {type: PathPrefix, value: /api}, method: POST}]
    backendRefs: [{name: b, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: x-version, value: v2}]}]
    backendRefs: [{name: b, port: 80}]
  - matches: [{path: {type: Exact, value: /api/exact}}]
    backendRefs: [{name: b, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /split}}]
    backendRefs: [{name: a, port: 80, weight: 3}, {name: b, port: 80, weight: 1}]
  - matches: [{path: {type: PathPrefix, value: /broken}}]
    backendRefs: [{name: missing, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /half}}]
    backendRefs: [{name: a, port: 80}, {name: missing, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: edits, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [edits.test, secure.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {hostname: new.test, statusCode: 301, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
  - matches: [{path: {type: PathPrefix, value: /v1}}]
    filters:
    - type: URLRewrite
      urlRewrite: {hostname: rewritten.test, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
    backendRefs: [{name: b, port: 80}]
  - matches: [{path: {type: Exact, value: /full}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /elsewhere}}
    backendRefs: [{name: a, port: 80}]
  - backendRefs: [{name: a, port: 80}]
"#;

struct Setup {
    gw: Gateway,
    http: SocketAddr,
    https: SocketAddr,
    ca: TestCa,
    _a: portico::echo::EchoServer,
    b: portico::echo::EchoServer,
    base: String,
}

async fn setup() -> Setup {
    setup_with(ROUTES).await
}

async fn setup_with(routes: &str) -> Setup {
    let (a, b) = (echo("a").await, echo("b").await);
    let ca = TestCa::new();
    let k = key(&rcgen::PKCS_ECDSA_P256_SHA256);
    let cert = ca.issue_pem(&["secure.test"], &k, unix_now() - DAY, unix_now() + 30 * DAY);
    let (http, https) = (free_port(), free_port());
    let base = format!(
        "{}{}{}{}",
        class(),
        service("default", "a", &[a.addr]),
        service("default", "b", &[b.addr]),
        tls_secret("gw-tls", &cert, &k.serialize_pem())
    );
    let m = format!("{base}{}{routes}", gateway("gw", http, Some(https)));
    let gw = Gateway::start_with(GATEWAY_ONLY, &m).await;
    let http = bound(http).await;
    let https: SocketAddr = format!("127.0.0.1:{https}").parse().unwrap();
    Setup {
        gw,
        http,
        https,
        ca,
        _a: a,
        b,
        base,
    }
}

async fn req(addr: SocketAddr, method: http::Method, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    send(addr, method, host, path, headers, Bytes::new()).await
}

#[tokio::test]
async fn httproutes_route_edit_redirect_and_rewrite() {
    let s = setup().await;
    let get = http::Method::GET;
    // Path, method and header precedence.
    let r = req(s.http, get.clone(), "app.test", "/api/x", &[]).await;
    assert_eq!(
        (r.status, r.backend().as_deref()),
        (200, Some("a")),
        "no condition met: the / rule"
    );
    let r = req(s.http, http::Method::POST, "app.test", "/api/x", &[]).await;
    assert_eq!(r.backend().as_deref(), Some("b"), "method match");
    let r = req(s.http, get.clone(), "app.test", "/api/x", &[("x-version", "v2")]).await;
    assert_eq!(r.backend().as_deref(), Some("b"), "header match");
    let r = req(s.http, get.clone(), "app.test", "/api/exact", &[]).await;
    assert_eq!(r.backend().as_deref(), Some("b"), "exact path");
    // Header modifiers: seen by the backend, and on the response.
    let r = req(s.http, get.clone(), "app.test:8080", "/", &[("x-set", "0")]).await;
    let h = &r.json()["headers"];
    assert_eq!(h["x-set"], "1", "{h}");
    assert_eq!(h["x-added"], "2", "{h}");
    assert_eq!(r.headers["x-resp"], "3");
    // Weighted split: 3:1.
    let mut a = 0;
    for _ in 0..200 {
        if req(s.http, get.clone(), "app.test", "/split", &[])
            .await
            .backend()
            .as_deref()
            == Some("a")
        {
            a += 1;
        }
    }
    assert!((120..=180).contains(&a), "a served {a} of 200 (expected ~150)");
    // A rule whose backends are all invalid: 500; the rest of the route serves.
    assert_eq!(req(s.http, get.clone(), "app.test", "/broken", &[]).await.status, 500);
    // With one of two equal backends invalid, about half the requests answer 500.
    let mut failed = 0;
    for _ in 0..100 {
        if req(s.http, get.clone(), "app.test", "/half", &[]).await.status == 500 {
            failed += 1;
        }
    }
    assert!(
        (25..=75).contains(&failed),
        "{failed} of 100 answered 500 (expected ~50)"
    );
    // Nothing matches: 404.
    assert_eq!(req(s.http, get.clone(), "other.test", "/", &[]).await.status, 404);
    // Redirect.
    let r = req(s.http, get.clone(), "edits.test", "/old/page?q=1", &[]).await;
    assert_eq!(r.status, 301);
    let port = s.http.port();
    assert_eq!(
        r.headers["location"],
        format!("http://new.test:{port}/new/page?q=1").as_str()
    );
    // Rewrite: prefix and host, full path.
    let r = req(s.http, get.clone(), "edits.test", "/v1/items", &[]).await;
    assert_eq!(r.backend().as_deref(), Some("b"));
    assert_eq!(r.json()["uri"], "/v2/items");
    assert_eq!(r.json()["headers"]["host"], "rewritten.test");
    let r = req(s.http, get.clone(), "edits.test", "/full", &[]).await;
    assert_eq!(r.json()["uri"], "/elsewhere");
    // Metrics name the route and count under the `gateway` set.
    let sample =
        r#"portico_requests_total{set="gateway",ingress="HTTPRoute default/app",service="default/b:80",class="2xx"}"#;
    assert!(metric(&s.gw, sample).await.is_some_and(|v| v >= 3.0), "{sample}");
    s.gw.stop().await;
}

#[tokio::test]
async fn https_listener_presents_its_certificate_by_sni() {
    let s = setup().await;
    assert!(eventually(Duration::from_secs(5), || std::net::TcpStream::connect(s.https).is_ok()).await);
    let config = s.ca.client_config(&[b"http/1.1"]);
    let tcp = TcpStream::connect(s.https).await.unwrap();
    let name = ServerName::try_from("secure.test".to_string()).unwrap();
    let tls = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("the listener's certificate verifies");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/any")
        .header("host", "secure.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-backend"], "a");
    let _ = resp.into_body().collect().await;
    // Without SNI, Host routes.
    let tcp = TcpStream::connect(s.https).await.unwrap();
    let ip = ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
    let tls = TlsConnector::from(accept_any_client(false))
        .connect(ip, tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/any")
        .header("host", "secure.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), 200);
    s.gw.stop().await;
}

#[tokio::test]
async fn gateways_added_and_removed_at_runtime_bind_and_unbind() {
    let s = setup().await;
    let extra = free_port();
    let extra_addr: SocketAddr = format!("127.0.0.1:{extra}").parse().unwrap();
    let with = format!(
        "{}{}{}{ROUTES}",
        s.base,
        gateway("gw", s.http.port(), Some(s.https.port())),
        gateway("second", extra, None)
    );
    s.gw.rewrite(&with).await;
    assert!(
        eventually(Duration::from_secs(5), || std::net::TcpStream::connect(extra_addr)
            .is_ok())
        .await
    );
    // The routes name only `gw`: the second Gateway serves nothing yet.
    assert_eq!(
        req(extra_addr, http::Method::GET, "app.test", "/", &[]).await.status,
        404
    );
    let without = format!(
        "{}{}{ROUTES}",
        s.base,
        gateway("gw", s.http.port(), Some(s.https.port()))
    );
    s.gw.rewrite(&without).await;
    assert!(
        eventually(Duration::from_secs(5), || std::net::TcpStream::connect(extra_addr)
            .is_err())
        .await,
        "the removed Gateway's port is closed"
    );
    assert_eq!(
        req(s.http, http::Method::GET, "app.test", "/", &[])
            .await
            .backend()
            .as_deref(),
        Some("a")
    );
    s.gw.stop().await;
}

const WILDCARDS: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wild, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  hostnames: ["*.wild.test"]
  rules:
  - backendRefs: [{name: a, port: 80}]
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier: {add: [{name: x-more, value: "1"}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: deep, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  hostnames: [x.y.wild.test]
  rules:
  - matches: [{path: {type: Exact, value: /only}}]
    backendRefs: [{name: b, port: 80}]
"#;

#[tokio::test]
async fn wildcard_hostnames_cover_several_labels_and_less_specific_hosts_take_what_others_do_not() {
    let s = setup_with(WILDCARDS).await;
    let get = http::Method::GET;
    let r = req(s.http, get.clone(), "x.y.wild.test", "/only", &[]).await;
    assert_eq!(r.backend().as_deref(), Some("b"));
    let r = req(s.http, get.clone(), "x.y.wild.test", "/other", &[]).await;
    assert_eq!(
        (r.status, r.backend().as_deref()),
        (200, Some("a")),
        "falls to *.wild.test"
    );
    assert_eq!(r.headers["x-more"], "1");
    let r = req(s.http, get.clone(), "z.wild.test", "/", &[]).await;
    assert_eq!(r.backend().as_deref(), Some("a"));
    assert_eq!(req(s.http, get.clone(), "wild.test", "/", &[]).await.status, 404);
    s.gw.stop().await;
}

const GRPC: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: grpc, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  hostnames: [grpc.test]
  rules:
  - matches: [{method: {service: pkg.Orders, method: Get}}]
    backendRefs: [{name: b, port: 80}]
  - matches: [{method: {service: pkg.Orders}, headers: [{name: x-tenant, value: blue}]}]
    backendRefs: [{name: b, port: 80}]
  - backendRefs: [{name: a, port: 80}]
"#;

#[tokio::test]
async fn grpcroutes_match_service_and_method_and_reach_backends_over_h2c() {
    let s = setup_with(GRPC).await;
    let post = http::Method::POST;
    let grpc = [("content-type", "application/grpc")];
    let r = req(s.http, post.clone(), "grpc.test", "/pkg.Orders/Get", &grpc).await;
    assert_eq!((r.status, r.backend().as_deref()), (200, Some("b")));
    let seen = s.b.requests();
    assert_eq!(seen.last().unwrap().version, http::Version::HTTP_2, "sent over h2c");
    let r = req(s.http, post.clone(), "grpc.test", "/pkg.Orders/List", &grpc).await;
    assert_eq!(r.backend().as_deref(), Some("a"), "another method");
    let tenant = [("content-type", "application/grpc"), ("x-tenant", "blue")];
    let r = req(s.http, post.clone(), "grpc.test", "/pkg.Orders/List", &tenant).await;
    assert_eq!(r.backend().as_deref(), Some("b"), "service and header");
    s.gw.stop().await;
}

/// The README's Gateway API quickstart: `examples/gateway-api` with the example backends on their documented
/// ports answers the documented curl lines (the Gateway's ports moved to free ones).
#[tokio::test]
async fn gateway_api_example_answers_as_documented() {
    let mut backends = Vec::new();
    for (name, port) in [
        ("jenkins", 9101),
        ("argocd", 9102),
        ("shop-api", 9103),
        ("shop-web", 9104),
        ("preview", 9105),
        ("fallback", 9106),
    ] {
        backends.push(echo_on(name, port).await);
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gateway-api");
    let (http, https) = (free_port(), free_port());
    let mut manifests = String::new();
    for f in ["backends.yaml", "secure-tls.yaml", "gateway.yaml", "routes.yaml"] {
        let text = std::fs::read_to_string(root.join("manifests").join(f)).unwrap();
        manifests += "\n---\n";
        manifests += &text
            .replace("port: 8080", &format!("port: {http}"))
            .replace("port: 8443", &format!("port: {https}"));
    }
    let config = std::fs::read_to_string(root.join("config.yaml"))
        .unwrap()
        .replace("127.0.0.1:9000", "127.0.0.1:0");
    let gw = Gateway::start_with(&config, &manifests).await;
    let addr: SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();
    assert!(eventually(Duration::from_secs(5), || std::net::TcpStream::connect(addr).is_ok()).await);
    let (get, post) = (http::Method::GET, http::Method::POST);
    let r = req(addr, get.clone(), "shop.local", "/api/orders", &[("x-preview", "true")]).await;
    assert_eq!(r.backend().as_deref(), Some("preview"));
    let r = req(addr, get.clone(), "shop.local", "/api/orders", &[]).await;
    assert_eq!(r.backend().as_deref(), Some("shop-api"));
    assert_eq!(r.json()["headers"]["x-shop-tier"], "api");
    let r = req(addr, get.clone(), "shop.local", "/old-cart/items", &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.headers["location"],
        format!("http://shop.local:{http}/cart/items").as_str()
    );
    let r = req(addr, get.clone(), "shop.local", "/v1/orders", &[]).await;
    assert_eq!(r.json()["uri"], "/api/orders");
    let r = req(addr, post, "tools.local", "/", &[]).await;
    assert_eq!(r.backend().as_deref(), Some("argocd"));
    let r = req(addr, get.clone(), "shop.local", "/cart", &[]).await;
    assert_eq!(r.backend().as_deref(), Some("shop-web"));
    assert_eq!(r.headers["x-served-by"], "portico");
    let ready = get_admin(gw.running().admin_addr).await;
    assert_eq!(ready, 200);
    gw.stop().await;
    drop(backends);
}

async fn echo_on(name: &str, port: u16) -> portico::echo::EchoServer {
    portico::echo::EchoServer::start(name, SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap()
}

async fn get_admin(admin: SocketAddr) -> u16 {
    req(admin, http::Method::GET, "localhost", "/readyz", &[]).await.status
}

/// A Gateway named in a configured listener set's `gateways` is served on the set's sockets (with its options)
/// and its own sockets are not bound; the set's Ingresses keep serving beside it.
#[tokio::test]
async fn a_gateway_attached_to_a_listener_set_is_served_on_its_sockets() {
    let (a, b) = (echo("a").await, echo("b").await);
    let port = free_port();
    let config = r#"
listenerSets:
  - name: internal
    ingressClasses: [portico]
    gateways: [default/gw]
    http: ["127.0.0.1:0"]
admin: { address: "127.0.0.1:0" }
"#;
    let m = format!(
        "{}{}{}{}{ROUTES}{}",
        class(),
        service("default", "a", &[a.addr]),
        service("default", "b", &[b.addr]),
        gateway("gw", port, None),
        ingress("default", "legacy", "portico", &[("legacy.test", "/", "Prefix", "b")])
    );
    let gw = Gateway::start_with(config, &m).await;
    let addr = gw.addr(0);
    let r = req(addr, http::Method::POST, "app.test", "/api/x", &[]).await;
    assert_eq!(r.backend().as_deref(), Some("b"), "the HTTPRoute's method match");
    let r = req(addr, http::Method::GET, "app.test", "/", &[]).await;
    assert_eq!(r.backend().as_deref(), Some("a"));
    let r = req(addr, http::Method::GET, "legacy.test", "/", &[]).await;
    assert_eq!(r.backend().as_deref(), Some("b"), "the set's Ingress");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let own: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(
        std::net::TcpStream::connect(own).is_err(),
        "the Gateway's own socket is not bound"
    );
    gw.stop().await;
}

const MIRROR: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mirror, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  hostnames: [mirror.test]
  rules:
  - backendRefs: [{name: a, port: 80}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: b, port: 80}}
  - matches: [{path: {type: PathPrefix, value: /never}}]
    backendRefs: [{name: a, port: 80}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: b, port: 80}, percent: 0}
"#;

#[tokio::test]
async fn request_mirror_copies_requests_to_its_backend() {
    let s = setup_with(MIRROR).await;
    let r = req(
        s.http,
        http::Method::GET,
        "mirror.test",
        "/mirrored?x=1",
        &[("x-trace", "t1")],
    )
    .await;
    assert_eq!(r.backend().as_deref(), Some("a"), "the backendRef answers");
    let r = req(s.http, http::Method::GET, "mirror.test", "/never", &[]).await;
    assert_eq!(r.backend().as_deref(), Some("a"));
    let b = &s.b;
    assert!(
        eventually(Duration::from_secs(5), || b.requests().iter().any(|q| q.uri
            == "/mirrored?x=1"
            && q.headers.get("x-trace").is_some_and(|v| v == "t1")))
        .await,
        "the mirror got a copy"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !b.requests().iter().any(|q| q.uri.path() == "/never"),
        "percent 0 mirrors nothing"
    );
    s.gw.stop().await;
}
