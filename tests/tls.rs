//! TLS end to end: certificates from Secrets chosen by SNI, HTTP/1.1 and HTTP/2 over TLS, 421 for a Host the
//! certificate of a connection with SNI does not cover, routing by Host on connections without SNI, certificate
//! replacement without touching open connections, and the plain-HTTP to HTTPS redirect. Clients verify hostnames
//! against a test CA.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico::certs::testing::{accept_any_client, key, TestCa, DAY};
use portico::certs::unix_now;
use portico::echo::EchoServer;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use support::*;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A certificate (PEM) and its key for `names`, issued by `ca`.
fn issue(ca: &TestCa, names: &[&str], not_after: i64) -> (String, String) {
    let k = key(&rcgen::PKCS_ECDSA_P256_SHA256);
    (ca.issue_pem(names, &k, unix_now() - DAY, not_after), k.serialize_pem())
}

struct Setup {
    gw: Gateway,
    ca: TestCa,
    a: EchoServer,
    w: EchoServer,
}

/// `a.example.test` (own certificate, HSTS), `*.example.test` (wildcard certificate), `broken.test` (a Secret
/// whose certificate is for another name), `plain.test` (no TLS), `optout.example.test` (TLS,
/// redirect disabled).
fn manifests(ca: &TestCa, a: &EchoServer, w: &EchoServer, a_cert: &(String, String)) -> String {
    let wild = issue(ca, &["*.example.test"], unix_now() + 30 * DAY);
    let wrong = issue(ca, &["someone-else.test"], unix_now() + 30 * DAY);
    let mut m = service("default", "a", &[a.addr]) + &service("default", "w", &[w.addr]);
    m += &tls_secret("a-tls", &a_cert.0, &a_cert.1);
    m += &tls_secret("wild-tls", &wild.0, &wild.1);
    m += &tls_secret("broken-tls", &wrong.0, &wrong.1);
    m += r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: a
  namespace: default
  annotations: {portico.dev/hsts-max-age: "600"}
spec:
  tls: [{hosts: [a.example.test], secretName: a-tls}]
  rules: [{host: a.example.test, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}]}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: wild, namespace: default}
spec:
  tls: [{hosts: ["*.example.test"], secretName: wild-tls}, {hosts: [broken.test], secretName: broken-tls}]
  rules:
    - {host: "*.example.test", http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: w, port: {number: 80}}}}]}}
    - {host: plain.test, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: w, port: {number: 80}}}}]}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: optout
  namespace: default
  annotations: {portico.dev/ssl-redirect: "false"}
spec:
  tls: [{hosts: [optout.example.test], secretName: wild-tls}]
  rules: [{host: optout.example.test, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: w, port: {number: 80}}}}]}}]
"#;
    m
}

async fn setup() -> Setup {
    let ca = TestCa::new();
    let (a, w) = (
        EchoServer::start("a", "127.0.0.1:0".parse().unwrap()).await.unwrap(),
        EchoServer::start("w", "127.0.0.1:0".parse().unwrap()).await.unwrap(),
    );
    let a_cert = issue(&ca, &["a.example.test"], unix_now() + 30 * DAY);
    let gw = Gateway::start_with(TLS_SET, &manifests(&ca, &a, &w, &a_cert)).await;
    Setup { gw, ca, a, w }
}

impl Setup {
    fn https(&self) -> SocketAddr {
        self.gw.running().https_addrs[0][0]
    }
}

async fn connect(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
    sni: &str,
) -> Result<TlsStream<TcpStream>, std::io::Error> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = match sni.parse::<std::net::IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(sni.to_owned()).unwrap(),
    };
    TlsConnector::from(config).connect(name, tcp).await
}

fn presented_names(tls: &TlsStream<TcpStream>) -> Vec<String> {
    let der = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    portico::certs::CertInfo::from_der(&der, String::new()).unwrap().names()
}

fn serial(tls: &TlsStream<TcpStream>) -> String {
    let der = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    portico::certs::CertInfo::from_der(&der, String::new()).unwrap().serial
}

type H1 = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;
type H2 = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

async fn h1(tls: TlsStream<TcpStream>) -> H1 {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    sender
}

async fn h2(tls: TlsStream<TcpStream>) -> H2 {
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn read(resp: http::Response<hyper::body::Incoming>) -> Reply {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply { status, headers, body }
}

async fn get1(s: &mut H1, host: &str, path: &str) -> Reply {
    let req = http::Request::get(path)
        .header("host", host)
        .body(Empty::new())
        .unwrap();
    read(s.send_request(req).await.unwrap()).await
}

async fn get2(s: &mut H2, host: &str, path: &str) -> Reply {
    let req = http::Request::get(format!("https://{host}{path}"))
        .body(Empty::new())
        .unwrap();
    read(s.send_request(req).await.unwrap()).await
}

#[tokio::test]
async fn sni_picks_the_certificate_and_clients_verify_it() {
    let s = setup().await;
    let verifying = s.ca.client_config(&[b"http/1.1"]);
    // Exact and wildcard certificates verify against the CA for their names.
    let tls = connect(verifying.clone(), s.https(), "a.example.test").await.unwrap();
    assert_eq!(presented_names(&tls), ["a.example.test"]);
    let mut c = h1(tls).await;
    let r = get1(&mut c, "a.example.test", "/x").await;
    assert_eq!((r.status, r.backend().as_deref()), (200, Some("a")));
    let tls = connect(verifying.clone(), s.https(), "b.example.test").await.unwrap();
    assert_eq!(presented_names(&tls), ["*.example.test"]);
    assert_eq!(
        get1(&mut h1(tls).await, "b.example.test", "/")
            .await
            .backend()
            .as_deref(),
        Some("w")
    );
    // Unknown SNI, no SNI, and the host whose Secret is broken get the default (self-signed) certificate: a
    // verifying client refuses it, and it is what the gateway presents.
    for sni in ["unknown.test", "broken.test"] {
        assert!(connect(verifying.clone(), s.https(), sni).await.is_err(), "{sni}");
        let tls = connect(accept_any_client(true), s.https(), sni).await.unwrap();
        assert_eq!(presented_names(&tls), ["portico.invalid"], "{sni}");
    }
    let tls = connect(accept_any_client(false), s.https(), "127.0.0.1").await.unwrap();
    assert_eq!(presented_names(&tls), ["portico.invalid"]);
    // The broken Secret is a diagnostic naming the Ingress, the Secret and the host.
    let t = s.gw.running().shared.last_translation().unwrap();
    assert!(
        t.diagnostics.iter().any(|d| {
            let d = d.to_string();
            d.starts_with("Ingress default/wild: spec.tls: Secret default/broken-tls")
                && d.contains("broken.test uses the default certificate")
        }),
        "{:?}",
        t.diagnostics
    );
    // Forwarded headers reflect the TLS listener.
    let seen = s.a.requests();
    assert_eq!(seen[0].headers["x-forwarded-proto"], "https");
    assert_eq!(
        seen[0].headers["x-forwarded-port"],
        s.https().port().to_string().as_str()
    );
    s.gw.stop().await;
}

#[tokio::test]
async fn http2_over_tls_with_alpn_and_421_on_a_reused_connection() {
    let s = setup().await;
    let tls = connect(s.ca.client_config(&[b"h2", b"http/1.1"]), s.https(), "a.example.test")
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut c = h2(tls).await;
    let r = get2(&mut c, "a.example.test", "/one").await;
    assert_eq!((r.status, r.backend().as_deref()), (200, Some("a")));
    assert_eq!(r.headers["strict-transport-security"], "max-age=600");
    // A second host on the same HTTP/2 connection, with its own (different) certificate: 421, backend untouched.
    let before = s.w.count();
    let r = get2(&mut c, "b.example.test", "/").await;
    assert_eq!(r.status, 421, "{}", r.text());
    // A configured host without any certificate: a new connection would get the default, not this one: 421.
    assert_eq!(get2(&mut c, "plain.test", "/").await.status, 421);
    assert_eq!(s.w.count(), before);
    // The connection still serves its own host.
    assert_eq!(get2(&mut c, "a.example.test", "/two").await.status, 200);

    // HTTP/1.1 over TLS: SNI a.example.test with Host b.example.test: 421.
    let tls = connect(s.ca.client_config(&[b"http/1.1"]), s.https(), "a.example.test")
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut c = h1(tls).await;
    let before = s.w.count();
    assert_eq!(get1(&mut c, "b.example.test", "/").await.status, 421);
    assert_eq!(s.w.count(), before);
    // A connection whose certificate covers the Host by name may serve it (connection reuse as RFC 9113 allows):
    // the wildcard certificate covers a.example.test and c.example.test.
    let tls = connect(s.ca.client_config(&[b"http/1.1"]), s.https(), "b.example.test")
        .await
        .unwrap();
    let mut c = h1(tls).await;
    assert_eq!(
        get1(&mut c, "c.example.test", "/").await.backend().as_deref(),
        Some("w")
    );
    assert_eq!(
        get1(&mut c, "a.example.test", "/").await.backend().as_deref(),
        Some("a")
    );
    s.gw.stop().await;
}

/// A client that sends no SNI (as curl does for `https://IP/`), accepts any certificate and offers `alpn`.
fn no_sni_client(alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut config = Arc::unwrap_or_clone(accept_any_client(false));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

#[tokio::test]
async fn without_sni_the_host_routes_over_http1_and_http2() {
    let s = setup().await;
    let http = s.gw.addr(0);
    // `curl -k -H 'Host: a.example.test' https://127.0.0.1/`: rustls sends no SNI for an IP address, whether SNI is
    // enabled or not; the gateway presents its default certificate and routes by Host.
    for (client, name) in [
        (Arc::unwrap_or_clone(accept_any_client(true)), "127.0.0.1"),
        (Arc::unwrap_or_clone(accept_any_client(false)), "a.example.test"),
    ] {
        let mut client = client;
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tls = connect(Arc::new(client), s.https(), name).await.unwrap();
        assert_eq!(presented_names(&tls), ["portico.invalid"], "{name}");
        let mut c = h1(tls).await;
        let r = get1(&mut c, "a.example.test", "/one").await;
        assert_eq!((r.status, r.backend().as_deref()), (200, Some("a")), "{}", r.text());
        assert_eq!(r.headers["strict-transport-security"], "max-age=600");
        // The same connection serves every host by its Host header: wildcard, no TLS at all, opted out of redirects.
        for host in ["b.example.test", "plain.test", "optout.example.test"] {
            let r = get1(&mut c, host, "/").await;
            assert_eq!(
                (r.status, r.backend().as_deref()),
                (200, Some("w")),
                "{host}: {}",
                r.text()
            );
        }
        // A host with no route answers as it does over plain HTTP (404 here: no default backend).
        assert_eq!(get1(&mut c, "nowhere.test", "/").await.status, 404);
        assert_eq!(get(http, "nowhere.test", "/").await.status, 404);
    }
    let seen = s.a.requests();
    assert_eq!(seen[0].headers["x-forwarded-proto"], "https");
    assert_eq!(seen[0].headers["host"], "a.example.test");

    // HTTP/2 (ALPN h2): one connection without SNI, several hosts.
    let tls = connect(no_sni_client(&[b"h2"]), s.https(), "127.0.0.1").await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut c = h2(tls).await;
    let r = get2(&mut c, "a.example.test", "/").await;
    assert_eq!((r.status, r.backend().as_deref()), (200, Some("a")), "{}", r.text());
    let r = get2(&mut c, "b.example.test", "/").await;
    assert_eq!((r.status, r.backend().as_deref()), (200, Some("w")), "{}", r.text());
    assert_eq!(get2(&mut c, "nowhere.test", "/").await.status, 404);
    assert_eq!(
        get2(&mut c, "a.example.test", "/again").await.backend().as_deref(),
        Some("a")
    );

    // With SNI the rule is unchanged: the Host must be one the connection's certificate stands for.
    let before = (s.a.count(), s.w.count());
    let tls = connect(s.ca.client_config(&[b"h2"]), s.https(), "a.example.test")
        .await
        .unwrap();
    let mut c = h2(tls).await;
    assert_eq!(get2(&mut c, "a.example.test", "/").await.status, 200);
    assert_eq!(get2(&mut c, "b.example.test", "/").await.status, 421);
    let tls = connect(accept_any_client(true), s.https(), "unknown.test")
        .await
        .unwrap();
    assert_eq!(get1(&mut h1(tls).await, "a.example.test", "/").await.status, 421);
    assert_eq!((s.a.count(), s.w.count()), (before.0 + 1, before.1));
    s.gw.stop().await;
}

#[tokio::test]
async fn replacing_a_secret_changes_new_handshakes_and_keeps_open_connections() {
    let s = setup().await;
    let verifying = s.ca.client_config(&[b"http/1.1"]);
    let old = connect(verifying.clone(), s.https(), "a.example.test").await.unwrap();
    let old_serial = serial(&old);
    let mut old_conn = h1(old).await;
    assert_eq!(get1(&mut old_conn, "a.example.test", "/").await.status, 200);

    let renewed = issue(&s.ca, &["a.example.test"], unix_now() + 60 * DAY);
    s.gw.rewrite(&manifests(&s.ca, &s.a, &s.w, &renewed)).await;
    let fresh = connect(verifying, s.https(), "a.example.test").await.unwrap();
    assert_ne!(
        serial(&fresh),
        old_serial,
        "a new handshake should present the new certificate"
    );
    assert_eq!(get1(&mut h1(fresh).await, "a.example.test", "/").await.status, 200);
    // The connection opened before the swap keeps working.
    assert_eq!(get1(&mut old_conn, "a.example.test", "/again").await.status, 200);
    s.gw.stop().await;
}

#[tokio::test]
async fn plain_http_redirects_to_https_for_tls_hosts() {
    let s = setup().await;
    let http = s.gw.addr(0);
    let port = s.https().port();
    let r = get(http, "A.Example.Test", "/p/q?x=1&y=2").await;
    assert_eq!(r.status, 308);
    assert_eq!(
        r.headers["location"],
        format!("https://a.example.test:{port}/p/q?x=1&y=2").as_str()
    );
    assert!(r.headers.get("strict-transport-security").is_none());
    // Wildcard TLS host.
    let r = get(http, "zz.example.test", "/").await;
    assert_eq!(
        r.headers["location"],
        format!("https://zz.example.test:{port}/").as_str()
    );
    // The ACME challenge path is not redirected, a host without TLS is not, and an Ingress that opted out is not.
    assert_eq!(
        get(http, "a.example.test", "/.well-known/acme-challenge/token")
            .await
            .backend()
            .as_deref(),
        Some("a")
    );
    assert_eq!(get(http, "plain.test", "/").await.status, 200);
    assert_eq!(get(http, "optout.example.test", "/").await.status, 200);
    assert_eq!(s.a.count(), 1);
    s.gw.stop().await;
}

#[tokio::test]
async fn redirect_port_is_configurable() {
    let ca = TestCa::new();
    let (a, w) = (
        EchoServer::start("a", "127.0.0.1:0".parse().unwrap()).await.unwrap(),
        EchoServer::start("w", "127.0.0.1:0".parse().unwrap()).await.unwrap(),
    );
    let cert = issue(&ca, &["a.example.test"], unix_now() + DAY);
    let config = TLS_SET.replace(
        "    https: [\"127.0.0.1:0\"]\n",
        "    https: [\"127.0.0.1:0\"]\n    httpsRedirectPort: 443\n",
    );
    let gw = Gateway::start_with(&config, &manifests(&ca, &a, &w, &cert)).await;
    let r = get(gw.addr(0), "a.example.test", "/x").await;
    assert_eq!(r.headers["location"], "https://a.example.test/x");
    gw.stop().await;
}

#[tokio::test]
async fn access_log_records_tls_version_and_sni() {
    let ca = TestCa::new();
    let (a, w) = (
        EchoServer::start("a", "127.0.0.1:0".parse().unwrap()).await.unwrap(),
        EchoServer::start("w", "127.0.0.1:0".parse().unwrap()).await.unwrap(),
    );
    let cert = issue(&ca, &["a.example.test"], unix_now() + DAY);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.yaml"), manifests(&ca, &a, &w, &cert)).unwrap();
    let log = dir.path().join("access.log");
    let running = portico::app::start_with(
        portico::config::Config::from_yaml(TLS_SET).unwrap(),
        portico::app::Source::Manifests {
            dir: dir.path().to_path_buf(),
            poll_interval: std::time::Duration::from_secs(1),
        },
        portico::app::Extras {
            access_log: portico::accesslog::Settings {
                target: portico::accesslog::Target::File(log.clone()),
                sample: 1,
            },
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let tls = connect(
        ca.client_config(&[b"http/1.1"]),
        running.https_addrs[0][0],
        "a.example.test",
    )
    .await
    .unwrap();
    assert_eq!(get1(&mut h1(tls).await, "a.example.test", "/logged").await.status, 200);
    let mut line = String::new();
    for _ in 0..100 {
        line = std::fs::read_to_string(&log).unwrap_or_default();
        if !line.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let json: serde_json::Value = serde_json::from_str(line.lines().next().expect("a log line")).unwrap();
    assert_eq!(json["tls"], true);
    assert_eq!(json["tls_version"], "TLSv1.3");
    assert_eq!(json["sni"], "a.example.test");
    assert_eq!(json["path"], "/logged");
    running.shutdown().await;
}

#[tokio::test]
async fn a_large_body_streamed_in_pieces_arrives_whole_over_tls() {
    // 256 KiB in four pieces with pauses between: each piece leaves the gateway through TLS in vectored writes
    // of its own (frames over 4 KiB are not copied behind the head), with waits for the backend in between.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut head = [0u8; 4096];
                let _ = s.read(&mut head).await;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 262144\r\n\r\n").await;
                for piece in b'a'..=b'd' {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    let _ = s.write_all(&[piece; 65536]).await;
                }
            });
        }
    });
    let ca = TestCa::new();
    let cert = issue(&ca, &["big.test"], unix_now() + 30 * DAY);
    let m = service("default", "big", &[addr])
        + &tls_secret("big-tls", &cert.0, &cert.1)
        + r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: big, namespace: default}
spec:
  tls: [{hosts: [big.test], secretName: big-tls}]
  rules: [{host: big.test, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: big, port: {number: 80}}}}]}}]
"#;
    let gw = Gateway::start_with(TLS_SET, &m).await;
    let https = gw.running().https_addrs[0][0];
    let tls = connect(ca.client_config(&[b"http/1.1"]), https, "big.test")
        .await
        .unwrap();
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        get1(&mut h1(tls).await, "big.test", "/"),
    )
    .await
    .expect("the body did not arrive");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 262_144);
    for (i, piece) in (b'a'..=b'd').enumerate() {
        assert!(
            r.body[i * 65536..(i + 1) * 65536].iter().all(|&b| b == piece),
            "piece {i} damaged"
        );
    }
    gw.stop().await;
}
