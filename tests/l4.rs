//! Layer 4 end to end (issue #20): TLS passthrough by SNI on the shared TLS port, over real loopback sockets
//! with real TLS. The backends terminate TLS with certificates of their own CA, so a client that trusts only
//! that CA and sees the backend's names proves the gateway did not terminate.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use portico::certs::testing::{accept_any_client, key, TestCa, DAY};
use portico::certs::unix_now;
use rustls_pki_types::ServerName;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A raw TLS backend with its own certificate for `names`: echoes what it reads; when the client has finished
/// sending (half-close), it writes `bye from NAME` and closes.
async fn tls_echo(ca: &TestCa, names: &[&str]) -> SocketAddr {
    let acceptor = tls_acceptor(ca, names, &[]);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let name = names[names.len() - 1].to_string();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (acceptor, name) = (acceptor.clone(), name.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else { return };
                let mut buf = [0u8; 16 * 1024];
                loop {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tls.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = tls.write_all(format!("bye from {name}").as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

/// A Service `name` whose endpoints are `addrs` (port named `http`, Service port 80).
fn passthrough_ingress(name: &str, host: &str, svc: &str) -> String {
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\n  annotations: {{nginx.ingress.kubernetes.io/ssl-passthrough: \"true\"}}\nspec:\n  rules: [{{host: \"{host}\", http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}]}}}}]\n"
    )
}

struct Setup {
    gw: Gateway,
    /// Signs the backends' certificates.
    backend_ca: TestCa,
    /// Signs the certificate the gateway serves for the terminated host.
    gateway_ca: TestCa,
    echo: portico::echo::EchoServer,
}

/// `app.example.test` and `*.pt.example.test` passed through to TLS echo backends; `web.example.test`
/// terminated by the gateway (its own Secret) on the same port and sent to an HTTP echo backend.
async fn manifests(s_backend: &TestCa, gateway_ca: &TestCa, echo: SocketAddr) -> String {
    let app = tls_echo(s_backend, &["app.example.test", "backend-app"]).await;
    let wild = tls_echo(s_backend, &["*.pt.example.test", "backend-wild"]).await;
    let k = key(&rcgen::PKCS_ECDSA_P256_SHA256);
    let web_cert = gateway_ca.issue_pem(&["web.example.test"], &k, unix_now() - DAY, unix_now() + DAY);
    let mut m = service("default", "app", &[app]) + &service("default", "wild", &[wild]);
    m += &service("default", "web", &[echo]);
    m += &tls_secret("web-tls", &web_cert, &k.serialize_pem());
    m += &passthrough_ingress("app", "app.example.test", "app");
    m += &passthrough_ingress("wild", "*.pt.example.test", "wild");
    m += r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: default}
spec:
  tls: [{hosts: [web.example.test], secretName: web-tls}]
  rules: [{host: web.example.test, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]
"#;
    m
}

async fn setup() -> Setup {
    let (backend_ca, gateway_ca) = (TestCa::new(), TestCa::new());
    let echo = portico::echo::EchoServer::start("web", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let m = manifests(&backend_ca, &gateway_ca, echo.addr).await;
    let gw = Gateway::start_with(TLS_SET, &m).await;
    Setup {
        gw,
        backend_ca,
        gateway_ca,
        echo,
    }
}

impl Setup {
    fn https(&self) -> SocketAddr {
        self.gw.running().https_addrs[0][0]
    }
}

async fn connect(
    config: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    sni: &str,
) -> Result<TlsStream<TcpStream>, std::io::Error> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = match sni.parse::<std::net::IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(sni.to_owned()).unwrap(),
    };
    tokio::time::timeout(Duration::from_secs(10), TlsConnector::from(config).connect(name, tcp))
        .await
        .expect("the handshake ends in time")
}

fn presented_names(tls: &TlsStream<TcpStream>) -> Vec<String> {
    let der = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    portico::certs::CertInfo::from_der(&der, String::new()).unwrap().names()
}

/// Writes `msg`, reads the echo back.
async fn echo_round(tls: &mut TlsStream<TcpStream>, msg: &[u8]) {
    tls.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, msg);
}

/// Half-closes and reads what the backend sends until it closes.
async fn finish(mut tls: TlsStream<TcpStream>) -> String {
    tls.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut rest))
        .await
        .unwrap();
    String::from_utf8(rest).unwrap()
}

#[tokio::test]
async fn passthrough_and_terminated_hosts_share_the_tls_port() {
    let s = setup().await;
    let trusts_backends = s.backend_ca.client_config(&[b"http/1.1"]);
    // Passed through: the client verifies the backend's own certificate, and talks to it end to end.
    let mut tls = connect(trusts_backends.clone(), s.https(), "app.example.test")
        .await
        .unwrap();
    assert_eq!(presented_names(&tls), ["app.example.test", "backend-app"]);
    echo_round(&mut tls, b"hello through").await;
    // Half-close: the client's end of sending reaches the backend, which still answers.
    assert_eq!(finish(tls).await, "bye from backend-app");
    // A wildcard passthrough host, one label deep.
    let mut tls = connect(trusts_backends.clone(), s.https(), "x.pt.example.test")
        .await
        .unwrap();
    assert_eq!(presented_names(&tls), ["*.pt.example.test", "backend-wild"]);
    echo_round(&mut tls, b"wild").await;
    drop(tls);
    // Terminated on the same port: the gateway's certificate for the host, HTTP to the backend behind.
    let tls = connect(
        s.gateway_ca.client_config(&[b"http/1.1"]),
        s.https(),
        "web.example.test",
    )
    .await
    .unwrap();
    assert_eq!(presented_names(&tls), ["web.example.test"]);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/x")
        .header("host", "web.example.test")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(s.echo.requests().len(), 1);
    // A client trusting only the backends' CA refuses the terminated host, and the other way round.
    assert!(connect(trusts_backends.clone(), s.https(), "web.example.test")
        .await
        .is_err());
    assert!(connect(s.gateway_ca.client_config(&[]), s.https(), "app.example.test")
        .await
        .is_err());
    // A server name nothing serves: closed without a handshake (no certificate at all).
    let any = accept_any_client(true);
    for sni in ["nobody.example.test", "a.b.pt.example.test"] {
        assert!(connect(any.clone(), s.https(), sni).await.is_err(), "{sni}");
    }
    // No SNI: terminated with the default certificate, routed by Host as on any TLS listener.
    let tls = connect(accept_any_client(false), s.https(), "127.0.0.1").await.unwrap();
    assert_eq!(presented_names(&tls), ["portico.invalid"]);
    // Garbage instead of a ClientHello: closed.
    let mut raw = TcpStream::connect(s.https()).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nhost: app.example.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut buf))
        .await
        .unwrap();
    assert!(n.is_err() || buf.is_empty(), "{:?}", String::from_utf8_lossy(&buf));
    // The counters of the passthrough routes.
    let connections = metric(
        &s.gw,
        "portico_l4_connections_total{set=\"default\",kind=\"tls-passthrough\",route=\"app.example.test\"}",
    )
    .await;
    assert_eq!(connections, Some(2.0));
    s.gw.stop().await;
}

#[tokio::test]
async fn a_slow_or_oversized_client_hello_is_closed() {
    let s = setup().await;
    // A record header announcing more than the limit: closed at once.
    let mut raw = TcpStream::connect(s.https()).await.unwrap();
    raw.write_all(&[22, 3, 1, 0x40, 0x00, 1, 0, 0x40, 0x00]).await.unwrap();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut buf))
        .await
        .unwrap();
    assert!(r.is_err() || buf.is_empty());
    // Half a ClientHello, then nothing: closed after the hello timeout (10 s), not held open.
    let mut raw = TcpStream::connect(s.https()).await.unwrap();
    raw.write_all(&[22, 3, 1, 0, 100, 1, 0, 0, 96]).await.unwrap();
    let started = std::time::Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(15), raw.read_to_end(&mut buf))
        .await
        .unwrap();
    assert!(r.is_err() || buf.is_empty());
    assert!(started.elapsed() >= Duration::from_secs(9), "{:?}", started.elapsed());
    s.gw.stop().await;
}

#[tokio::test]
async fn a_dead_endpoint_is_retried_on_another_and_a_republish_keeps_open_connections() {
    let (backend_ca, gateway_ca) = (TestCa::new(), TestCa::new());
    let echo = portico::echo::EchoServer::start("web", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = manifests(&backend_ca, &gateway_ca, echo.addr).await;
    let live = tls_echo(&backend_ca, &["multi.example.test", "backend-live"]).await;
    let dead = closed_port().await;
    let with_multi = base.clone()
        + &service("default", "multi", &[dead, live])
        + &passthrough_ingress("multi", "multi.example.test", "multi");
    let gw = Gateway::start_with(TLS_SET, &with_multi).await;
    let https = gw.running().https_addrs[0][0];
    let config = backend_ca.client_config(&[]);
    // Every connection (50 long-lived ones) reaches the live endpoint, whichever the balancer tried first.
    let mut open = Vec::new();
    for i in 0..50 {
        let mut tls = connect(config.clone(), https, "multi.example.test").await.unwrap();
        assert_eq!(presented_names(&tls), ["multi.example.test", "backend-live"]);
        echo_round(&mut tls, format!("conn {i}").as_bytes()).await;
        open.push(tls);
    }
    let errors = metric(
        &gw,
        "portico_l4_connect_errors_total{set=\"default\",kind=\"tls-passthrough\",route=\"multi.example.test\"}",
    )
    .await;
    assert!(errors.is_some_and(|e| e >= 1.0), "{errors:?}");
    // The route goes away: new connections for it are closed, established ones carry on untouched.
    gw.rewrite(&base).await;
    assert!(connect(accept_any_client(true), https, "multi.example.test")
        .await
        .is_err());
    for (i, tls) in open.iter_mut().enumerate() {
        echo_round(tls, format!("still there {i}").as_bytes()).await;
    }
    let active = metric(
        &gw,
        "portico_l4_active_connections{set=\"default\",kind=\"tls-passthrough\",route=\"multi.example.test\"}",
    )
    .await;
    assert_eq!(active, Some(50.0));
    for tls in open {
        assert_eq!(finish(tls).await, "bye from backend-live");
    }
    gw.stop().await;
}

// === plain TCP listeners (`tcp[]`) ===

/// A raw TCP backend expecting a PROXY header first: echoes what follows; when the client has finished sending,
/// writes `bye NAME from CLIENT` (the client the header named) and closes. Aborting the handle stops it.
async fn tcp_backend(name: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let header = portico::proxy::proxy_protocol::read_header(&mut s).await;
                let client = match header {
                    Ok(portico::proxy::proxy_protocol::ProxyHeader::Proxied { source, .. }) => source.to_string(),
                    _ => "?".to_string(),
                };
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.write_all(format!("bye {name} from {client}").as_bytes()).await;
                let _ = w.shutdown().await;
            });
        }
    });
    (addr, task)
}

fn tcp_config(backends: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        "{ONE_SET}tcp:\n  - name: api\n    listen: [\"127.0.0.1:0\"]\n    backends: [{}]\n    sendProxyProtocol: v2\n{extra}",
        list.join(", ")
    )
}

/// Connects, sends `msg`, half-closes, and returns (local address, everything received).
async fn tcp_round(addr: SocketAddr, msg: &str) -> (SocketAddr, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let local = s.local_addr().unwrap();
    s.write_all(msg.as_bytes()).await.unwrap();
    s.shutdown().await.unwrap();
    let mut got = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut got))
        .await
        .unwrap()
        .unwrap();
    (local, got)
}

#[tokio::test]
async fn tcp_listeners_forward_with_a_proxy_header_retry_and_half_close() {
    let (b1, _t1) = tcp_backend("b1").await;
    let (b2, _t2) = tcp_backend("b2").await;
    let dead = closed_port().await;
    let gw = Gateway::start_with(&tcp_config(&[dead, b1, b2], ""), "").await;
    let addr = gw.running().tcp_addrs[0][0];
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..6 {
        let (local, got) = tcp_round(addr, &format!("ping {i};")).await;
        // The echo, then the backend's goodbye after the client's half-close, naming the real client.
        let bye = got
            .strip_prefix(&format!("ping {i};"))
            .unwrap_or_else(|| panic!("{got}"));
        let (name, client) = bye.strip_prefix("bye ").unwrap().split_once(" from ").unwrap();
        assert_eq!(client, local.to_string());
        seen.insert(name.to_string());
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["b1", "b2"]);
    let errors = metric(
        &gw,
        "portico_l4_connect_errors_total{set=\"tcp\",kind=\"tcp\",route=\"api\"}",
    )
    .await;
    assert!(errors.is_some_and(|e| e >= 1.0), "{errors:?}");
    let total = metric(
        &gw,
        "portico_l4_connections_total{set=\"tcp\",kind=\"tcp\",route=\"api\"}",
    )
    .await;
    assert_eq!(total, Some(6.0));
    gw.stop().await;
}

#[tokio::test]
async fn tcp_source_balancing_is_sticky_and_health_checks_take_a_dead_backend_out() {
    let (b1, t1) = tcp_backend("b1").await;
    let (b2, _t2) = tcp_backend("b2").await;
    let extra = "    balance: source\n    healthCheck: {interval: 50ms, timeout: 200ms, fall: 3, rise: 2}\n";
    let gw = Gateway::start_with(&tcp_config(&[b1, b2], extra), "").await;
    let addr = gw.running().tcp_addrs[0][0];
    let mut names = Vec::new();
    for _ in 0..5 {
        let (_, got) = tcp_round(addr, "x").await;
        names.push(got.split(' ').nth(1).unwrap().to_string());
    }
    names.dedup();
    assert_eq!(names.len(), 1, "one client address, one backend: {names:?}");
    // Stop whichever served: after three failed checks it is out, and connections go to the other without a
    // failed connect.
    let (stopped, other) = if names[0] == "b1" { (t1, "b2") } else { (_t2, "b1") };
    stopped.abort();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let before = metric(
        &gw,
        "portico_l4_connect_errors_total{set=\"tcp\",kind=\"tcp\",route=\"api\"}",
    )
    .await;
    for _ in 0..3 {
        let (_, got) = tcp_round(addr, "y").await;
        assert_eq!(got.split(' ').nth(1), Some(other), "{got}");
    }
    let after = metric(
        &gw,
        "portico_l4_connect_errors_total{set=\"tcp\",kind=\"tcp\",route=\"api\"}",
    )
    .await;
    assert_eq!(before, after);
    gw.stop().await;
}

// === shutdown, backends going away, bytes through ===

#[tokio::test]
async fn shutdown_stops_accepting_and_waits_for_spliced_connections() {
    let (backend_ca, gateway_ca) = (TestCa::new(), TestCa::new());
    let echo = portico::echo::EchoServer::start("web", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let m = manifests(&backend_ca, &gateway_ca, echo.addr).await;
    let config = format!("{TLS_SET}shutdown: {{gracePeriod: 10s}}\n");
    let gw = Gateway::start_with(&config, &m).await;
    let https = gw.running().https_addrs[0][0];
    let mut tls = connect(backend_ca.client_config(&[]), https, "app.example.test")
        .await
        .unwrap();
    echo_round(&mut tls, b"before").await;
    let stopping = tokio::spawn(gw.stop());
    // The listener closes at once; the established connection keeps working through the grace period.
    let refused = async {
        for _ in 0..100 {
            if TcpStream::connect(https).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    };
    assert!(refused.await, "still accepting after shutdown");
    echo_round(&mut tls, b"during shutdown").await;
    assert!(!stopping.is_finished());
    assert_eq!(finish(tls).await, "bye from backend-app");
    // Once it ended, shutdown completes (well before the grace period).
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("shutdown waited for nothing else")
        .unwrap();
}

#[tokio::test]
async fn a_backend_killed_mid_stream_closes_the_client_and_bytes_through_equal_bytes_in() {
    // A plain TCP sink: answers with the length and a checksum of everything it read, then closes; or, when
    // the first byte is `k`, dies mid-stream without answering.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = portico::proxy::proxy_protocol::read_header(&mut s).await;
                let (mut len, mut sum) = (0u64, 0u64);
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if len == 0 && buf[0] == b'k' {
                                // Gone as a killed process's socket goes: closed by the kernel, unanswered.
                                return;
                            }
                            for b in &buf[..n] {
                                sum = sum.wrapping_mul(31).wrapping_add(u64::from(*b));
                            }
                            len += n as u64;
                        }
                    }
                }
                let _ = s.write_all(format!("{len} {sum}").as_bytes()).await;
            });
        }
    });
    let gw = Gateway::start_with(&tcp_config(&[backend], ""), "").await;
    let addr = gw.running().tcp_addrs[0][0];
    // 64 MiB of a known pattern through, the checksum as computed here.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let chunk: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let (mut len, mut sum) = (0u64, 0u64);
    let (mut r, mut w) = s.split();
    let send = async {
        for _ in 0..64 {
            w.write_all(&chunk).await.unwrap();
        }
        w.shutdown().await.unwrap();
    };
    let mut got = String::new();
    let (_, read) = tokio::join!(send, r.read_to_string(&mut got));
    read.unwrap();
    for _ in 0..64 {
        for b in &chunk {
            sum = sum.wrapping_mul(31).wrapping_add(u64::from(*b));
        }
        len += chunk.len() as u64;
    }
    assert_eq!(got, format!("{len} {sum}"));
    let received = metric(
        &gw,
        "portico_l4_received_bytes_total{set=\"tcp\",kind=\"tcp\",route=\"api\"}",
    )
    .await;
    // The PROXY v2 header (28 bytes for IPv4) is counted with what the client sent.
    assert_eq!(received, Some((len + 28) as f64));
    // The backend dies mid-stream: the client's side is closed too, not left hanging.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"kill").await.unwrap();
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("the client side is closed");
    assert!(r.is_err() || rest.is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn passthrough_routes_balance_as_their_ingress_asks() {
    let ca = TestCa::new();
    let b1 = tls_echo(&ca, &["sticky.example.test", "backend-1"]).await;
    let b2 = tls_echo(&ca, &["sticky.example.test", "backend-2"]).await;
    let m = service("default", "sticky", &[b1, b2])
        + &passthrough_ingress("sticky", "sticky.example.test", "sticky").replace(
            "annotations: {",
            "annotations: {portico.dev/load-balance: source-hash, portico.dev/health-check: tcp, ",
        );
    let gw = Gateway::start_with(TLS_SET, &m).await;
    let https = gw.running().https_addrs[0][0];
    let mut names = Vec::new();
    for _ in 0..5 {
        let tls = connect(ca.client_config(&[]), https, "sticky.example.test")
            .await
            .unwrap();
        names.push(presented_names(&tls)[1].clone());
    }
    names.dedup();
    assert_eq!(names.len(), 1, "one client address, one backend: {names:?}");
    gw.stop().await;
}

#[tokio::test]
async fn tcp_idle_timeout_closes_quiet_connections_and_max_connections_queues_the_rest() {
    let (b1, _t1) = tcp_backend("b1").await;
    let extra = "    idleTimeout: 300ms\n    maxConnections: 1\n";
    let gw = Gateway::start_with(&tcp_config(&[b1], extra), "").await;
    let addr = gw.running().tcp_addrs[0][0];
    // A connection that keeps talking outlives the idle timeout; once quiet, it is closed.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 4];
    for _ in 0..5 {
        s.write_all(b"tick").await.unwrap();
        s.read_exact(&mut buf).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // While it is open, a second client waits in the accept queue (its bytes are not answered).
    let mut second = TcpStream::connect(addr).await.unwrap();
    second.write_all(b"wait").await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(100), second.read(&mut buf)).await;
    assert!(early.is_err(), "the second connection was served beside the first");
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(r.is_err() || rest.is_empty(), "{rest:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // The first one gone, the second is served.
    tokio::time::timeout(Duration::from_secs(5), second.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"wait");
    gw.stop().await;
}
