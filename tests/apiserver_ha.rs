//! `examples/apiserver-ha/` as written (addresses and the check interval aside): Portico's TCP listener in
//! front of three TLS "API servers" answering `/readyz`, round robin, a server whose `/readyz` fails taken out
//! after 3 failed checks and back after 2 good ones, and the `balance source` variant keeping a client on one.

use std::net::SocketAddr;
use std::time::Duration;

use portico::config::Config;
use portico::l4::standin::StandIn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const INTERVAL_MS: u64 = 100;

async fn start(file: &str) -> (portico::app::Running, Vec<StandIn>, tempfile::TempDir) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/apiserver-ha");
    let mut text = std::fs::read_to_string(root.join(file)).unwrap();
    let mut standins = Vec::new();
    for (name, port) in [("cp1", 16443), ("cp2", 26443), ("cp3", 36443)] {
        let s = StandIn::start(name, "127.0.0.1:0".parse().unwrap()).await.unwrap();
        text = text.replace(&format!("127.0.0.1:{port}\""), &format!("{}\"", s.addr));
        standins.push(s);
    }
    for (from, to) in [
        ("0.0.0.0:6443", "127.0.0.1:0"),
        ("127.0.0.1:8080", "127.0.0.1:0"),
        ("127.0.0.1:9000", "127.0.0.1:0"),
        ("interval: 2s", &format!("interval: {INTERVAL_MS}ms")),
    ] {
        assert!(text.contains(from), "{file} no longer has {from}");
        text = text.replace(from, to);
    }
    let dir = tempfile::tempdir().unwrap();
    let running = portico::app::start(
        Config::from_yaml(&text).unwrap(),
        portico::app::Source::Manifests {
            dir: dir.path().to_path_buf(),
            poll_interval: Duration::from_millis(50),
        },
    )
    .await
    .unwrap();
    (running, standins, dir)
}

/// `curl -k https://ADDR/version`: which stand-in answered (through the gateway, TLS end to end).
async fn version(addr: SocketAddr) -> String {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let config = portico::certs::testing::accept_any_client(false);
    let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    // The stand-in's own self-signed certificate, not one of Portico's.
    let der = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let names = portico::certs::CertInfo::from_der(&der, String::new()).unwrap().names();
    tls.write_all(b"GET /version HTTP/1.1\r\nhost: kubernetes\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    tokio::time::timeout(Duration::from_secs(5), tls.read_to_string(&mut resp))
        .await
        .unwrap()
        .unwrap();
    let body = resp.rsplit("\r\n\r\n").next().unwrap().to_string();
    assert!(names.contains(&body), "{names:?} {body}");
    body
}

/// The admin listener's `/metrics`.
async fn metrics(admin: SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    text
}

/// Waits for `n` more `/readyz` checks of `s`.
async fn checks(s: &StandIn, n: u64) {
    let target = s.readyz_count() + n;
    for _ in 0..200 {
        if s.readyz_count() >= target {
            return;
        }
        tokio::time::sleep(Duration::from_millis(INTERVAL_MS / 4)).await;
    }
    panic!("{} was not checked", s.name);
}

#[tokio::test]
async fn round_robin_over_three_api_servers_with_readyz_fall_3_rise_2() {
    let (running, s, _dir) = start("portico.yaml").await;
    let addr = running.tcp_addrs[0][0];
    let mut seen: Vec<String> = Vec::new();
    for _ in 0..3 {
        seen.push(version(addr).await);
    }
    seen.sort();
    assert_eq!(seen, ["cp1", "cp2", "cp3"]);
    // cp2 stops being ready: out once three checks in a row have failed.
    s[1].set_ready(false);
    checks(&s[1], 1).await;
    checks(&s[1], 3).await;
    for _ in 0..6 {
        assert_ne!(version(addr).await, "cp2");
    }
    let metrics = metrics(running.admin_addr).await;
    let gauge = format!(
        "portico_endpoint_check_up{{backend=\"tcp/apiserver\",endpoint=\"{}\"}} 0",
        s[1].addr
    );
    assert!(metrics.contains(&gauge), "{metrics}");
    // Ready again: back after two good checks.
    s[1].set_ready(true);
    checks(&s[1], 3).await;
    let mut back = false;
    for _ in 0..6 {
        back |= version(addr).await == "cp2";
    }
    assert!(back, "cp2 did not come back");
    running.shutdown().await;
}

#[tokio::test]
async fn the_balance_source_variant_keeps_a_client_on_one_api_server() {
    let (running, _s, _dir) = start("portico-source.yaml").await;
    let addr = running.tcp_addrs[0][0];
    let first = version(addr).await;
    for _ in 0..5 {
        assert_eq!(version(addr).await, first);
    }
    running.shutdown().await;
}
