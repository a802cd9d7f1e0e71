//! The on-prem example (`examples/on-prem`) runs as written on loopback: external on 127.0.0.1 behind a PROXY
//! protocol sender, internal on 127.0.0.2; only the ports are made ephemeral.

use std::net::SocketAddr;
use std::time::Duration;

use portico::config::Config;
use portico::echo::EchoServer;
use portico::proxy::proxy_protocol::{encode_v2, ProxyHeader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn exchange(to: SocketAddr, prefix: &[u8], req: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(to).await.unwrap();
    s.write_all(prefix).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn on_prem_example_serves_each_app_only_on_its_vip() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/on-prem");
    let mut config = Config::from_file(&dir.join("portico.yaml")).unwrap();
    for set in &mut config.listener_sets {
        for a in set.http.iter_mut().chain(set.https.iter_mut()) {
            a.set_port(0);
        }
    }
    config.admin.address = "127.0.0.1:0".parse().unwrap();
    let mut backends = Vec::new();
    for (name, port) in [("jenkins", 9101), ("argocd", 9102), ("blog", 9104)] {
        backends.push(
            EchoServer::start(name, SocketAddr::from(([127, 0, 0, 1], port)))
                .await
                .unwrap(),
        );
    }
    let running = portico::app::start(
        config,
        portico::app::Source::Manifests {
            dir: dir.join("manifests"),
            poll_interval: Duration::from_secs(1),
        },
    )
    .await
    .unwrap();
    let (ext, int) = (running.http_addrs[0][0], running.http_addrs[1][0]);
    assert_eq!(ext.ip().to_string(), "127.0.0.1");
    assert_eq!(int.ip().to_string(), "127.0.0.2");
    let haproxy = encode_v2(&ProxyHeader::Proxied {
        source: "203.0.113.7:40000".parse().unwrap(),
        destination: "192.168.1.240:80".parse().unwrap(),
    });
    let req =
        |host: &str| format!("GET / HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-Host: evil\r\nConnection: close\r\n\r\n");

    let resp = exchange(ext, &haproxy, &req("blog.example.com")).await;
    assert!(
        resp.contains("\"backend\": \"blog\"") && resp.contains("\"x-real-ip\": \"203.0.113.7\""),
        "{resp}"
    );
    for host in ["argocd.lan", "jenkins.local"] {
        let resp = exchange(ext, &haproxy, &req(host)).await;
        assert!(resp.starts_with("HTTP/1.1 404"), "{host} on the external VIP: {resp}");
    }
    let resp = exchange(int, b"", &req("argocd.lan")).await;
    assert!(resp.contains("\"backend\": \"argocd\""), "{resp}");
    let resp = exchange(int, b"", &req("jenkins.local")).await;
    assert!(
        resp.contains("\"backend\": \"jenkins\"") && resp.contains("\"host\": \"jenkins.internal\""),
        "{resp}"
    );
    assert!(!resp.contains("x-forwarded-host"), "{resp}");
    assert_eq!(backends[1].count(), 1);
    running.shutdown().await;
}
