//! SIGTERM on the real binary: keep accepting for the drain delay, stop accepting, finish in-flight requests,
//! exit 0.

mod support;

use std::convert::Infallible;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::*;
use tokio::net::TcpListener;

#[tokio::test]
async fn sigterm_drains_then_finishes_in_flight_requests_and_exits_0() {
    // A backend answering after 1.5 s.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"done"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("m.yaml"),
        service("default", "slow", &[slow]) + &ingress("default", "s", "portico", &[("", "/", "Prefix", "slow")]),
    )
    .unwrap();
    let (http, admin) = (free_port(), free_port());
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listenerSets: [{{name: default, ingressClasses: [portico], http: [\"127.0.0.1:{http}\"]}}]\nadmin: {{address: \"127.0.0.1:{admin}\"}}\nshutdown: {{drainDelay: 1s, gracePeriod: 10s}}\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["run", "--manifests"])
        .arg(dir.path())
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();
    let admin_addr: std::net::SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(admin_addr).await.is_err() {
        assert!(Instant::now() < deadline, "portico did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = tokio::spawn(async move { get(addr, "s", "/").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let term = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(term.success());
    // During the drain delay, new requests are still accepted and served.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = tokio::spawn(async move { get(addr, "s", "/").await });
    let r = first.await.unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "done"));
    let r = during.await.unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "done"));
    // Then it exits 0 by itself.
    let exit = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    assert_eq!(exit.and_then(|s| s.code()), Some(0));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}
