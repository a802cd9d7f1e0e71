//! Gateway API at layer 4 (issue #20), end to end over loopback: TLSRoutes passed through by SNI on a port
//! shared with an HTTPS listener, a TCPRoute forwarding bytes, in file mode; and their status written in
//! cluster mode through the fake API server with an unmodified kube client.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use portico::certs::testing::{key, TestCa, DAY};
use portico::certs::unix_now;
use portico_fake_apiserver::FakeApiServer;
use rustls_pki_types::ServerName;
use serde_json::Value;
use support::kube::condition;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const GATEWAY_ONLY: &str = "listenerSets: []\nadmin: { address: \"127.0.0.1:0\" }\n";

/// A raw TLS backend with a certificate for `names`: echoes what it reads, then, once the client has finished
/// sending, writes `bye` and closes.
async fn tls_echo(ca: &TestCa, names: &[&str]) -> SocketAddr {
    let acceptor = tls_acceptor(ca, names, &[]);
    serve_tls_each(acceptor, |mut tls| async move { echo_until_eof(&mut tls).await }).await
}

/// A plain TCP backend: echoes, then `bye` after the client's half-close.
async fn tcp_echo() -> SocketAddr {
    serve_each(|mut s| async move { echo_until_eof(&mut s).await }).await
}

async fn echo_until_eof<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: &mut S) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = s.write_all(b"bye").await;
    let _ = s.shutdown().await;
}

fn class() -> String {
    "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: portico}\nspec: {controllerName: portico.dev/gateway-controller}\n".into()
}

/// Gateway `gw`: HTTPS `secure.test` and TLS passthrough `*.pass.test` sharing `tls_port`, TCP on `tcp_port`.
fn gateway(tls_port: u16, tcp_port: u16) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: default}}\nspec:\n  gatewayClassName: portico\n  addresses: [{{value: 127.0.0.1}}]\n  listeners:\n  - {{name: https, protocol: HTTPS, port: {tls_port}, hostname: secure.test, tls: {{certificateRefs: [{{name: gw-tls}}]}}}}\n  - {{name: pass, protocol: TLS, port: {tls_port}, hostname: '*.pass.test', tls: {{mode: Passthrough}}}}\n  - {{name: raw, protocol: TCP, port: {tcp_port}}}\n"
    )
}

const ROUTES: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: https}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: app, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [app.pass.test, "*.deep.pass.test"]
  rules: [{backendRefs: [{name: app, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: raw, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: raw}]
  rules: [{backendRefs: [{name: raw, port: 80}]}]
"#;

struct Files {
    gw: Gateway,
    tls: SocketAddr,
    tcp: SocketAddr,
    backend_ca: TestCa,
    gateway_ca: TestCa,
    _web: portico::echo::EchoServer,
}

async fn files() -> Files {
    let (backend_ca, gateway_ca) = (TestCa::new(), TestCa::new());
    let app = tls_echo(&backend_ca, &["app.pass.test", "x.y.deep.pass.test", "backend-app"]).await;
    let raw = tcp_echo().await;
    let web = portico::echo::EchoServer::start("web", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let k = key(&rcgen::PKCS_ECDSA_P256_SHA256);
    let cert = gateway_ca.issue_pem(&["secure.test"], &k, unix_now() - DAY, unix_now() + DAY);
    let (tls_port, tcp_port) = (free_port(), free_port());
    let m = [
        class(),
        gateway(tls_port, tcp_port),
        service("default", "web", &[web.addr]),
        service("default", "app", &[app]),
        service("default", "raw", &[raw]),
        tls_secret("gw-tls", &cert, &k.serialize_pem()),
        ROUTES.to_string(),
    ]
    .concat();
    let gw = Gateway::start_with(GATEWAY_ONLY, &m).await;
    let tls: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    let tcp: SocketAddr = format!("127.0.0.1:{tcp_port}").parse().unwrap();
    for a in [tls, tcp] {
        assert!(
            eventually(Duration::from_secs(10), || std::net::TcpStream::connect(a).is_ok()).await,
            "the Gateway's socket {a} is bound"
        );
    }
    Files {
        gw,
        tls,
        tcp,
        backend_ca,
        gateway_ca,
        _web: web,
    }
}

async fn connect(
    config: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    sni: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), TlsConnector::from(config).connect(name, tcp))
        .await
        .expect("the handshake ends in time")
}

#[tokio::test]
async fn tlsroutes_pass_through_by_sni_beside_https_and_a_tcproute_forwards_bytes() {
    let s = files().await;

    // Passed through: the client trusts only the backend's CA and sees the backend's certificate.
    let backend_trust = s.backend_ca.client_config(&[]);
    for sni in ["app.pass.test", "x.y.deep.pass.test"] {
        let mut tls = connect(backend_trust.clone(), s.tls, sni)
            .await
            .unwrap_or_else(|e| panic!("{sni}: the backend's certificate verifies: {e}"));
        let der = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        let names = portico::certs::CertInfo::from_der(&der, String::new()).unwrap().names();
        assert!(names.contains(&"backend-app".to_string()), "{sni}: {names:?}");
        tls.write_all(b"hello through").await.unwrap();
        tls.shutdown().await.unwrap();
        let mut got = Vec::new();
        tls.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello throughbye", "{sni}");
    }

    // A name under the TLS listener that no TLSRoute has: closed, no handshake.
    assert!(connect(backend_trust.clone(), s.tls, "other.pass.test").await.is_err());
    // A name no listener has, on a socket without an HTTPS listener for every name: closed.
    assert!(connect(backend_trust, s.tls, "unknown.test").await.is_err());

    // The HTTPS listener's name on the same port: terminated by the gateway, HTTP routed.
    let tls = connect(s.gateway_ca.client_config(&[b"http/1.1"]), s.tls, "secure.test")
        .await
        .expect("the gateway's certificate for the HTTPS listener");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/x")
        .header("host", "secure.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-backend"], "web");
    let _ = resp.into_body().collect().await;

    // TCP: 4 MiB through and back, unchanged, half-close carried.
    let data: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let stream = TcpStream::connect(s.tcp).await.unwrap();
    let (mut r, mut w) = stream.into_split();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut got = Vec::new();
    r.read_to_end(&mut got).await.unwrap();
    writer.await.unwrap();
    assert_eq!(got.len(), data.len() + 3);
    assert!(got[..data.len()] == data[..], "bytes through equal bytes in");
    assert_eq!(&got[data.len()..], b"bye");

    // Counted per route, labelled with the TCPRoute.
    let sample = "portico_l4_connections_total{set=\"gateway default/gw 127.0.0.1:";
    let text = reqwest_like_metrics(&s.gw).await;
    assert!(text.contains(sample), "{text}");
    assert!(text.contains("route=\"TCPRoute default/raw\""), "{text}");
    s.gw.stop().await;
}

/// The gateway's `/metrics` text.
async fn reqwest_like_metrics(gw: &Gateway) -> String {
    let admin = gw.running().admin_addr;
    get(admin, "admin", "/metrics").await.text()
}

// === cluster mode: status ===

fn status(server: &FakeApiServer, kind: &str, name: &str) -> Value {
    support::kube::gateway_status(server, kind, "default", name)
}

fn route_condition(server: &FakeApiServer, kind: &str, name: &str, type_: &str) -> (String, String) {
    condition(&status(server, kind, name)["parents"][0]["conditions"], type_)
}

fn pair(s: &str, r: &str) -> (String, String) {
    (s.to_string(), r.to_string())
}

#[tokio::test]
async fn tlsroute_and_tcproute_status_in_cluster_mode() {
    let run = async {
        let server = FakeApiServer::start().await.unwrap();
        let raw = tcp_echo().await;
        let (tls_port, tcp_port) = (free_port(), free_port());
        let objects = [
            class(),
            gateway(tls_port, tcp_port).replace("certificateRefs: [{name: gw-tls}]", "certificateRefs: [{name: missing}]"),
            service("default", "raw", &[raw]),
            service("default", "app", &[raw]),
            ROUTES.to_string(),
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: TLSRoute\nmetadata: {name: dangling, namespace: default}\nspec:\n  parentRefs: [{name: gw, sectionName: pass}]\n  hostnames: [d.pass.test]\n  rules: [{backendRefs: [{name: nowhere, port: 80}]}]\n".to_string(),
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata: {name: misplaced, namespace: default}\nspec:\n  parentRefs: [{name: gw, sectionName: pass}]\n  rules: [{backendRefs: [{name: raw, port: 80}]}]\n".to_string(),
        ]
        .concat();
        support::kube::apply(&server, &objects);
        let gw = support::kube::start_ready(&server, GATEWAY_ONLY).await;
        let end = tokio::time::Instant::now() + Duration::from_secs(30);
        let written = || {
            ["app", "dangling"]
                .iter()
                .all(|n| route_condition(&server, "TLSRoute", n, "Accepted") != pair("", ""))
                && ["raw", "misplaced"]
                    .iter()
                    .all(|n| route_condition(&server, "TCPRoute", n, "Accepted") != pair("", ""))
                && status(&server, "Gateway", "gw")["listeners"]
                    .as_array()
                    .is_some_and(|l| l.len() == 3)
        };
        while !written() {
            assert!(tokio::time::Instant::now() < end, "status written in time");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let cases = [
            ("TLSRoute", "app", "Accepted", pair("True", "Accepted")),
            ("TLSRoute", "app", "ResolvedRefs", pair("True", "ResolvedRefs")),
            ("TLSRoute", "dangling", "Accepted", pair("True", "Accepted")),
            ("TLSRoute", "dangling", "ResolvedRefs", pair("False", "BackendNotFound")),
            ("TCPRoute", "raw", "Accepted", pair("True", "Accepted")),
            (
                "TCPRoute",
                "misplaced",
                "Accepted",
                pair("False", "NotAllowedByListeners"),
            ),
        ];
        for (kind, name, type_, want) in cases {
            assert_eq!(
                route_condition(&server, kind, name, type_),
                want,
                "{kind} {name} {type_}"
            );
        }
        let parent = &status(&server, "TCPRoute", "raw")["parents"][0];
        assert_eq!(parent["controllerName"], "portico.dev/gateway-controller");
        assert_eq!(parent["parentRef"]["sectionName"], "raw");

        let g = status(&server, "Gateway", "gw");
        let listener = |name: &str| {
            g["listeners"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["name"] == name)
                .cloned()
                .unwrap()
        };
        let pass = listener("pass");
        assert_eq!(pass["supportedKinds"][0]["kind"], "TLSRoute");
        assert_eq!(pass["attachedRoutes"], 2, "app and dangling: {pass}");
        assert_eq!(condition(&pass["conditions"], "Accepted"), pair("True", "Accepted"));
        assert_eq!(condition(&pass["conditions"], "Programmed"), pair("True", "Programmed"));
        let raw_listener = listener("raw");
        assert_eq!(raw_listener["supportedKinds"][0]["kind"], "TCPRoute");
        assert_eq!(raw_listener["attachedRoutes"], 1);
        assert_eq!(
            condition(&raw_listener["conditions"], "Programmed"),
            pair("True", "Programmed")
        );
        // The HTTPS listener's certificate is missing: it alone is not programmed; passthrough is unaffected.
        assert_eq!(
            condition(&listener("https")["conditions"], "ResolvedRefs"),
            pair("False", "InvalidCertificateRef")
        );

        // Bytes go through the TCPRoute in cluster mode too.
        let tcp: SocketAddr = format!("127.0.0.1:{tcp_port}").parse().unwrap();
        let mut got = Vec::new();
        while got.is_empty() {
            assert!(tokio::time::Instant::now() < end, "the TCP socket serves in time");
            if let Ok(mut s) = TcpStream::connect(tcp).await {
                let _ = s.write_all(b"ping").await;
                let _ = s.shutdown().await;
                let _ = s.read_to_end(&mut got).await;
            }
            if got.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        assert_eq!(got, b"pingbye");
        gw.shutdown().await;
    };
    tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("test did not finish in time");
}
