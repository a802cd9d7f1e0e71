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
    let child = Command::new(env!("CARGO_BIN_EXE_portico"))
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
    let exit = exit_within(child, Duration::from_secs(15)).await;
    assert_eq!(exit.and_then(|s| s.code()), Some(0));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

/// The exit status of `child` once it exits by itself within `within`; `None` (and killed) if it does not.
async fn exit_within(mut child: std::process::Child, within: Duration) -> Option<std::process::ExitStatus> {
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap()
}

/// Starts the real binary in file mode on `dir` with an HTTP listener on `http`, an admin listener on `admin`
/// and `shutdown` settings; waits until its table is ready.
async fn replica(dir: &std::path::Path, name: &str, shutdown: &str) -> (std::process::Child, std::net::SocketAddr) {
    let (http, admin) = (free_port(), free_port());
    let cfg = dir.join(format!("{name}.config.yaml"));
    std::fs::write(
        &cfg,
        format!(
            "listenerSets: [{{name: default, ingressClasses: [portico], http: [\"127.0.0.1:{http}\"]}}]\nadmin: {{address: \"127.0.0.1:{admin}\"}}\nshutdown: {shutdown}\n"
        ),
    )
    .unwrap();
    let manifests = dir.join("manifests");
    let child = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["run", "--manifests"])
        .arg(&manifests)
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let admin_addr: std::net::SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "replica {name} did not become ready");
        if let Ok(Ok(200)) = tokio::time::timeout(Duration::from_secs(1), try_get(admin_addr, "admin", "/readyz")).await
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, format!("127.0.0.1:{http}").parse().unwrap())
}

/// A rolling replacement as Kubernetes does it, on two real processes: the new replica is ready and joins the
/// endpoints; the old one gets SIGTERM, and the endpoint list (here: the addresses the client picks from) drops
/// it only 500 ms later, as endpoint propagation to kube-proxy or a load balancer takes time. With a drain delay
/// longer than that, not one request fails: the old replica keeps accepting while clients may still pick it,
/// then finishes what it has and exits 0.
#[tokio::test]
async fn a_rolling_replacement_refuses_no_request() {
    let backend = echo("app").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("manifests")).unwrap();
    std::fs::write(
        dir.path().join("manifests/m.yaml"),
        service("default", "app", &[backend.addr])
            + &ingress("default", "app", "portico", &[("", "/", "Prefix", "app")]),
    )
    .unwrap();
    let shutdown = "{drainDelay: 2s, gracePeriod: 10s}";
    let (old, old_addr) = replica(dir.path(), "old", shutdown).await;
    let endpoints = std::sync::Arc::new(std::sync::Mutex::new(vec![old_addr]));

    // Clients: a new connection per request, to an address from the current endpoint list, round robin.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (endpoints, stop) = (endpoints.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let (mut ok, mut failed, mut n) = (0u32, Vec::new(), c);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let addr = {
                    let list = endpoints.lock().unwrap();
                    n += 1;
                    list[n % list.len()]
                };
                match tokio::time::timeout(Duration::from_secs(5), try_get(addr, "app", "/")).await {
                    Ok(Ok(200)) => ok += 1,
                    other => failed.push(format!("{addr}: {other:?}")),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ok, failed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The new replica starts, becomes ready and joins the endpoints.
    let (mut new, new_addr) = replica(dir.path(), "new", shutdown).await;
    endpoints.lock().unwrap().push(new_addr);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The old one is told to stop; the endpoint list catches up 500 ms later.
    let term = Command::new("kill")
        .arg("-TERM")
        .arg(old.id().to_string())
        .status()
        .unwrap();
    assert!(term.success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    endpoints.lock().unwrap().retain(|a| *a != old_addr);
    // Traffic goes on through the rest of the drain and the exit.
    let exit = exit_within(old, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for c in clients {
        let (o, f) = c.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    let _ = new.kill();
    let _ = new.wait();
    assert_eq!(exit.and_then(|s| s.code()), Some(0), "the old replica exits 0");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        ok as usize + failed.len()
    );
    assert!(ok > 100, "too little traffic to show anything: {ok}");
}
