//! The edge: internal/external isolation whatever the client sends, the real client address (PROXY protocol,
//! trusted X-Forwarded-For), source allowlists, and header rewriting, over real loopback sockets.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use portico::echo::EchoServer;
use portico::proxy::proxy_protocol::{encode_v2, ProxyHeader};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Two sets as in the on-prem example: `external` behind HAProxy (PROXY protocol from 127.0.0.1 only) and
/// `internal` for LAN clients, which trusts X-Forwarded-For from 127.0.0.1 and allows only 127.0.0.0/8.
const EDGE: &str = r#"
listenerSets:
  - name: external
    ingressClasses: [portico-external]
    http: ["127.0.0.1:0"]
    proxyProtocol: true
    trustedProxies: [127.0.0.1]
  - name: internal
    ingressClasses: [portico-internal]
    http: ["127.0.0.1:0"]
    https: ["127.0.0.1:0"]
    trustedProxies: [127.0.0.1]
    allowSourceRanges: [127.0.0.0/8]
admin: { address: "127.0.0.1:0" }
"#;

struct Edge {
    gw: Gateway,
    public: EchoServer,
    admin: EchoServer,
}

async fn edge() -> Edge {
    let (public, admin) = (echo("public").await, echo("admin").await);
    let m = service("apps", "public", &[public.addr])
        + &service("apps", "admin", &[admin.addr])
        + &ingress(
            "apps",
            "public",
            "portico-external",
            &[("app.example", "/", "Prefix", "public")],
        )
        + &ingress(
            "apps",
            "argocd",
            "portico-internal",
            &[("argocd.example", "/", "Prefix", "admin")],
        );
    Edge {
        gw: Gateway::start_with(EDGE, &m).await,
        public,
        admin,
    }
}

/// Connects from a chosen loopback source address.
async fn connect_from(src: &str, to: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(format!("{src}:0").parse().unwrap()).unwrap();
    sock.connect(to).await.unwrap()
}

/// Writes `prefix` then an HTTP request, returns the raw response ("" if the gateway closed the connection).
async fn exchange(mut s: TcpStream, prefix: &[u8], request: &str) -> String {
    let _ = s.write_all(prefix).await;
    let _ = s.write_all(request.as_bytes()).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(8), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

const GET_APP: &str = "GET / HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n";

fn proxied(src: &str) -> Vec<u8> {
    encode_v2(&ProxyHeader::Proxied {
        source: src.parse().unwrap(),
        destination: "192.0.2.1:80".parse().unwrap(),
    })
}

#[tokio::test]
async fn proxy_protocol_gives_the_client_address_or_closes_the_connection() {
    let e = edge().await;
    let ext = e.gw.addr(0);
    // v1 and v2, IPv4 and IPv6, from the trusted proxy: the backend sees the client from the header.
    for (prefix, client) in [
        (b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 80\r\n".to_vec(), "203.0.113.7"),
        (
            b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 80\r\n".to_vec(),
            "2001:db8::7",
        ),
        (proxied("198.51.100.4:4000"), "198.51.100.4"),
        (proxied("[2001:db8::9]:4000"), "2001:db8::9"),
    ] {
        let before = e.public.count();
        let resp = exchange(connect_from("127.0.0.1", ext).await, &prefix, GET_APP).await;
        assert_eq!(raw_status(&resp), 200, "{client}: {resp}");
        let seen = &e.public.requests()[before];
        assert_eq!(seen.headers["x-real-ip"], client);
        assert_eq!(seen.headers["x-forwarded-for"], client);
    }
    // v2 LOCAL (the proxy's own health check) keeps the socket address.
    let before = e.public.count();
    let resp = exchange(
        connect_from("127.0.0.1", ext).await,
        &encode_v2(&ProxyHeader::Local),
        GET_APP,
    )
    .await;
    assert_eq!(raw_status(&resp), 200);
    assert_eq!(e.public.requests()[before].headers["x-real-ip"], "127.0.0.1");

    // Never a forwarded request with a spoofed address: untrusted peer, no header, truncated, oversized, garbage.
    let before = e.public.count();
    let mut long = b"PROXY TCP4 ".to_vec();
    long.extend(std::iter::repeat_n(b'9', 300));
    let truncated = proxied("203.0.113.7:1")[..20].to_vec();
    for (src, prefix) in [
        ("127.0.0.2", proxied("203.0.113.7:1")),
        ("127.0.0.1", Vec::new()),
        ("127.0.0.1", long),
        ("127.0.0.1", b"PROXY TCP4 1.2.3.4\r\n".to_vec()),
        ("127.0.0.1", b"PROXY TCP4 999.2.3.4 5.6.7.8 1 2\r\n".to_vec()),
    ] {
        let resp = exchange(connect_from(src, ext).await, &prefix, GET_APP).await;
        assert_eq!(resp, "", "{src} {:?} got a response", String::from_utf8_lossy(&prefix));
    }
    // Truncated and then silent: closed after the header timeout, nothing forwarded.
    let mut s = connect_from("127.0.0.1", ext).await;
    s.write_all(&truncated).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(8), s.read_to_end(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "a slow PROXY header should get the connection closed: {read:?}"
    );
    assert_eq!(e.public.count(), before);
    e.gw.stop().await;
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let e = edge().await;
    let int = e.gw.addr(1);
    let req = "GET / HTTP/1.1\r\nHost: argocd.example\r\nX-Forwarded-For: 6.6.6.6, 127.0.0.77\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n";
    // From 127.0.0.1 (trusted): the rightmost untrusted entry is the client; the chain is extended.
    let resp = exchange(connect_from("127.0.0.1", int).await, b"", req).await;
    assert_eq!(raw_status(&resp), 200, "{resp}");
    let seen = e.admin.requests().pop().unwrap();
    assert_eq!(seen.headers["x-real-ip"], "127.0.0.77");
    assert_eq!(seen.headers["x-forwarded-for"], "6.6.6.6, 127.0.0.77, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    // From 127.0.0.2 (not trusted): replaced by the peer; its X-Forwarded-Proto is not believed either. The
    // `Connection: X-Forwarded-For` trick and underscore look-alikes do not get through.
    let req = "GET / HTTP/1.1\r\nHost: argocd.example\r\nX-Forwarded-For: 6.6.6.6\r\nX_Forwarded_For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nConnection: close, X-Forwarded-For, X-Real-IP\r\n\r\n";
    let resp = exchange(connect_from("127.0.0.2", int).await, b"", req).await;
    assert_eq!(raw_status(&resp), 200, "{resp}");
    let seen = e.admin.requests().pop().unwrap();
    assert_eq!(seen.headers["x-real-ip"], "127.0.0.2");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.2");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert!(seen.headers.get("x_forwarded_for").is_none());
    e.gw.stop().await;
}

#[tokio::test]
async fn allowlists_decide_on_the_real_client_address() {
    let e = edge().await;
    let int = e.gw.addr(1);
    let req = |xff: &str| {
        format!("GET / HTTP/1.1\r\nHost: argocd.example\r\nX-Forwarded-For: {xff}\r\nConnection: close\r\n\r\n")
    };
    // The set allows 127.0.0.0/8. Via the trusted proxy, a LAN-external client is refused...
    let resp = exchange(connect_from("127.0.0.1", int).await, b"", &req("203.0.113.50")).await;
    assert_eq!(raw_status(&resp), 403, "{resp}");
    // ...and a client inside the range is served.
    let resp = exchange(connect_from("127.0.0.1", int).await, b"", &req("127.0.0.9")).await;
    assert_eq!(raw_status(&resp), 200, "{resp}");
    // An untrusted peer cannot talk its way in with X-Forwarded-For (its own address counts: allowed here).
    let resp = exchange(connect_from("127.0.0.2", int).await, b"", &req("203.0.113.50")).await;
    assert_eq!(raw_status(&resp), 200, "{resp}");
    e.gw.stop().await;

    // Per Ingress: portico.dev/allow-source-ranges (and ingress-nginx's whitelist-source-range).
    let b = echo("b").await;
    let m = service("default", "b", &[b.addr])
        + "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: only-two\n  namespace: default\n  annotations: {nginx.ingress.kubernetes.io/whitelist-source-range: \"127.0.0.2/32\"}\nspec:\n  rules: [{host: a.example, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: b, port: {number: 80}}}}]}}]\n";
    let gw = Gateway::start(&m).await;
    let get_a = "GET / HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n";
    assert_eq!(
        raw_status(&exchange(connect_from("127.0.0.1", gw.addr(0)).await, b"", get_a).await),
        403
    );
    assert_eq!(
        raw_status(&exchange(connect_from("127.0.0.2", gw.addr(0)).await, b"", get_a).await),
        200
    );
    assert_eq!(b.count(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn header_rewrites_reach_the_backend_and_the_client() {
    let b = echo("jenkins").await;
    let m = service("default", "jenkins", &[b.addr])
        + r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: jenkins
  namespace: default
  annotations:
    portico.dev/upstream-host: jenkins.internal
    portico.dev/request-headers-remove: X-Forwarded-Host, X-Forwarded-Proto
    portico.dev/request-headers-set: |
      X-Team: ci
    portico.dev/request-headers-add: "Via: portico"
    nginx.ingress.kubernetes.io/x-forwarded-prefix: /jenkins
    portico.dev/response-headers-set: "X-Frame-Options: DENY"
    portico.dev/response-headers-remove: X-Backend
spec:
  rules: [{host: jenkins.local, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: jenkins, port: {number: 80}}}}]}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: endpoint-host
  namespace: default
  annotations: {portico.dev/pass-host: "false"}
spec:
  rules: [{host: raw.local, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: jenkins, port: {number: 80}}}}]}}]
"#;
    let gw = Gateway::start(&m).await;
    let r = send(
        gw.addr(0),
        http::Method::GET,
        "jenkins.local",
        "/job/x",
        &[("x-team", "spoofed"), ("via", "client")],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-frame-options"], "DENY");
    assert!(r.headers.get("x-backend").is_none(), "response header removed");
    let seen = b.requests().pop().unwrap();
    assert_eq!(seen.headers["host"], "jenkins.internal");
    assert!(seen.headers.get("x-forwarded-host").is_none());
    assert!(seen.headers.get("x-forwarded-proto").is_none());
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-team"], "ci");
    let via: Vec<_> = seen
        .headers
        .get_all("via")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(via, ["client", "portico"]);
    assert_eq!(seen.headers["x-forwarded-prefix"], "/jenkins");
    // pass-host false: the endpoint's address is the Host.
    get(gw.addr(0), "raw.local", "/").await;
    assert_eq!(b.requests().pop().unwrap().headers["host"], b.addr.to_string().as_str());
    gw.stop().await;
}

#[tokio::test]
async fn an_internal_host_never_answers_on_the_external_listener() {
    let e = edge().await;
    let ext = e.gw.addr(0);
    let via_haproxy = proxied("203.0.113.7:1");
    for req in [
        "GET / HTTP/1.1\r\nHost: argocd.example\r\nConnection: close\r\n\r\n",
        "GET http://argocd.example/ HTTP/1.1\r\nHost: argocd.example\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: app.example\r\nX-Forwarded-Host: argocd.example\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: ARGOCD.example.\r\nConnection: close\r\n\r\n",
    ] {
        let resp = exchange(connect_from("127.0.0.1", ext).await, &via_haproxy, req).await;
        assert!(
            !resp.contains("\"backend\": \"admin\""),
            "{req:?} reached the internal app: {resp}"
        );
    }
    assert_eq!(e.admin.count(), 0);
    // TLS on the internal set with SNI of the internal host, then Host of the public app: not served there.
    let public_before = e.public.count();
    let int_tls = e.gw.running().https_addrs[1][0];
    let tcp = TcpStream::connect(int_tls).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(portico::certs::testing::accept_any_client(true))
        .connect(rustls_pki_types::ServerName::try_from("argocd.example").unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/")
        .header("host", "app.example")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), 404);
    assert_eq!(e.public.count(), public_before);
    // The same requests on the internal listener work.
    let resp = exchange(
        connect_from("127.0.0.1", e.gw.addr(1)).await,
        b"",
        "GET / HTTP/1.1\r\nHost: argocd.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&resp), 200);
    e.gw.stop().await;
}
