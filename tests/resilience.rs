//! Resilience over loopback: retries (which requests, where, and the budget that bounds them), the timeouts that
//! cut stalled peers off and free what they held, and in-flight accounting that lasts as long as the response
//! body.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn set_with(extra: &str) -> String {
    ONE_SET.replace(
        "    http: [\"127.0.0.1:0\"]\n",
        &format!("    http: [\"127.0.0.1:0\"]\n{extra}"),
    )
}

fn with_upstream(config: &str, upstream: &str) -> String {
    format!("{config}upstream: {upstream}\n")
}

const RETRIES: &str = "portico_upstream_retries_total{set=\"default\"}";

// === retries ===

#[tokio::test]
async fn connect_failures_are_retried_elsewhere_for_any_method_without_a_body() {
    let good = echo("good").await;
    let dead = closed_port().await;
    let m = service("default", "pool", &[dead, good.addr])
        + &ingress("default", "i", "portico", &[("", "/", "Prefix", "pool")]);
    let gw = Gateway::start(&m).await;
    // Round robin sends every other request to the dead endpoint; each is retried on the good one. Four
    // failures stay under the ejection threshold (five).
    for (i, method) in [
        http::Method::GET,
        http::Method::POST,
        http::Method::DELETE,
        http::Method::PATCH,
    ]
    .into_iter()
    .cycle()
    .take(8)
    .enumerate()
    {
        let r = send(gw.addr(0), method.clone(), "x", "/", &[], Bytes::new()).await;
        assert_eq!(r.status, 200, "request {i} ({method})");
    }
    assert_eq!(good.count(), 8);
    assert_eq!(metric(&gw, RETRIES).await, Some(4.0));
    // A request with a body cannot be sent twice: its connect failure is the answer.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(
            send(
                gw.addr(0),
                http::Method::POST,
                "x",
                "/",
                &[],
                Bytes::from_static(b"payload"),
            )
            .await
            .status,
        );
    }
    statuses.sort();
    assert_eq!(statuses, [200, 502]);
    assert_eq!(metric(&gw, RETRIES).await, Some(4.0));
    gw.stop().await;
}

#[tokio::test]
async fn resets_are_retried_for_idempotent_methods_only() {
    let good = echo("good").await;
    let (resetting, resets) = resetting_backend().await;
    let m = service("default", "pool", &[resetting, good.addr])
        + &ingress("default", "i", "portico", &[("", "/", "Prefix", "pool")]);
    let gw = Gateway::start(&m).await;
    let mut by_method = std::collections::BTreeMap::new();
    for method in [
        http::Method::GET,
        http::Method::GET,
        http::Method::POST,
        http::Method::POST,
    ] {
        let r = send(gw.addr(0), method.clone(), "x", "/", &[], Bytes::new()).await;
        by_method
            .entry(method.to_string())
            .or_insert_with(Vec::new)
            .push(r.status);
    }
    // One GET and one POST met the resetting endpoint: the GET was repeated elsewhere, the POST was not (the
    // backend may have acted on it).
    assert_eq!(by_method["GET"], [200, 200]);
    let mut post = by_method["POST"].clone();
    post.sort();
    assert_eq!(post, [200, 502]);
    assert_eq!(resets.load(std::sync::atomic::Ordering::Relaxed), 2);
    gw.stop().await;
}

#[tokio::test]
async fn a_spent_retry_budget_returns_the_original_error() {
    let good = echo("good").await;
    let dead = closed_port().await;
    let m = service("default", "pool", &[dead, good.addr])
        + &ingress("default", "i", "portico", &[("", "/", "Prefix", "pool")]);
    // No retries at all: neither a share of requests nor a floor.
    let config = with_upstream(ONE_SET, "{retryBudget: {percent: 0, minPerSecond: 0}}");
    let gw = Gateway::start_with(&config, &m).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(get(gw.addr(0), "x", "/").await.status);
    }
    statuses.sort();
    assert_eq!(
        statuses,
        [200, 200, 502, 502],
        "the connect failure itself, not a retry"
    );
    assert_eq!(metric(&gw, RETRIES).await, Some(0.0));
    gw.stop().await;
}

/// A backend that sends response headers and part of the body, then closes the connection.
async fn truncating_backend() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            h.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
                .await;
        }
    });
    (addr, hits)
}

#[tokio::test]
async fn no_retry_once_response_bytes_reached_the_client() {
    let good = echo("good").await;
    let (truncating, hits) = truncating_backend().await;
    let m = service("default", "t", &[truncating, good.addr])
        + &ingress("default", "t", "portico", &[("", "/", "Prefix", "t")]);
    let gw = Gateway::start(&m).await;
    // Round robin: one of two GETs meets the truncating endpoint.
    let mut partial = 0;
    for _ in 0..2 {
        let resp = raw(gw.addr(0), "GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        if resp.ends_with("partial") {
            partial += 1;
        }
    }
    assert_eq!(partial, 1, "the client got the truncated response as it was");
    assert_eq!(hits.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(
        good.count(),
        1,
        "the truncated request was not repeated on the other endpoint"
    );
    assert_eq!(metric(&gw, RETRIES).await, Some(0.0));
    assert!(eventually(Duration::from_secs(5), || in_flight(&gw, truncating) == 0).await);
    gw.stop().await;
}

// === timeouts ===

/// A backend that answers with headers and a first piece of body, then stalls; reports when the gateway closed
/// its connection.
async fn stalling_backend() -> (SocketAddr, tokio::sync::mpsc::Receiver<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nfirst piece")
                    .await;
                // Stall; the next read ends when the gateway gives up on this connection.
                let _ = s.read(&mut buf).await;
                let _ = tx.send(()).await;
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn a_stalled_response_body_is_aborted_after_the_read_timeout() {
    let (stalling, mut closed) = stalling_backend().await;
    let m = service("default", "s", &[stalling])
        + &annotated_ingress(
            "default",
            "s",
            "s.example",
            "s",
            &[("nginx.ingress.kubernetes.io/proxy-read-timeout", "1")],
        );
    let gw = Gateway::start(&m).await;
    let req = http::Request::get(format!("http://{}/", gw.addr(0)))
        .header("host", "s.example")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200, "headers arrived before the stall");
    assert_eq!(in_flight(&gw, stalling), 1);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.data_ref().unwrap().as_ref(), b"first piece");
    // Then the stream is cut: an error, not the missing 989 bytes.
    let rest = tokio::time::timeout(Duration::from_secs(5), body.collect())
        .await
        .unwrap();
    assert!(rest.is_err(), "the truncated body must not look complete");
    // The backend's connection was closed and the endpoint has nothing in flight.
    tokio::time::timeout(Duration::from_secs(5), closed.recv())
        .await
        .unwrap();
    assert_eq!(in_flight(&gw, stalling), 0);
    gw.stop().await;
}

/// A backend that answers every request on a connection with `size` bytes at once.
async fn bulk_backend(size: usize) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n");
                    if s.write_all(head.as_bytes()).await.is_err() || s.write_all(&vec![b'x'; size]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_slow_client_is_not_cut_off_by_the_backend_read_timeout() {
    // The read timeout is about the backend making the gateway wait, not about a client that reads slowly: the
    // backend sends everything at once, the client stops reading for longer than the timeout, then reads it all.
    let size = 8 << 20;
    let backend = bulk_backend(size).await;
    let m = service("default", "bulk", &[backend])
        + &annotated_ingress(
            "default",
            "bulk",
            "bulk.example",
            "bulk",
            &[("nginx.ingress.kubernetes.io/proxy-read-timeout", "1")],
        );
    let gw = Gateway::start(&m).await;
    let req = http::Request::get(format!("http://{}/", gw.addr(0)))
        .header("host", "bulk.example")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let body = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .unwrap()
        .expect("the whole body after the pause")
        .to_bytes();
    assert_eq!(body.len(), size);
    // The connection to the backend survived too: the next request reuses it and completes.
    assert_eq!(get(gw.addr(0), "bulk.example", "/").await.body.len(), size);
    gw.stop().await;
}

#[tokio::test]
async fn a_stalled_request_body_gets_408_and_frees_the_backend() {
    let b = echo("b").await;
    let m = service("default", "b", &[b.addr])
        + &ingress(
            "default",
            "set-wide",
            "portico",
            &[("wide.example", "/", "Prefix", "b")],
        )
        + &annotated_ingress(
            "default",
            "patient",
            "patient.example",
            "b",
            &[("nginx.ingress.kubernetes.io/proxy-send-timeout", "30")],
        );
    let gw = Gateway::start_with(&set_with("    bodyReadTimeout: 300ms\n"), &m).await;
    let start = |host: &'static str| {
        let addr = gw.addr(0);
        async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 20\r\n\r\nten bytes.").as_bytes())
                .await
                .unwrap();
            s
        }
    };
    // The listener set's 300 ms: the stalled body is answered with 408 and the connection closed.
    let mut s = start("wide.example").await;
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut resp))
        .await
        .expect("the gateway answered and closed")
        .unwrap();
    let resp = String::from_utf8_lossy(&resp);
    assert_eq!(raw_status(&resp), 408, "{resp}");
    assert!(eventually(Duration::from_secs(5), || in_flight(&gw, b.addr) == 0).await);
    // The Ingress's own 30 s: a one-second pause is fine and the request completes.
    let mut s = start("patient.example").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(in_flight(&gw, b.addr), 1);
    s.write_all(b"ten more..").await.unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let last = b.requests().pop().unwrap();
    assert_eq!(
        (last.headers["host"].as_bytes(), last.body.len()),
        (&b"patient.example"[..], 20)
    );
    gw.stop().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let b = echo("b").await;
    let m = service("default", "b", &[b.addr]) + &ingress("default", "i", "portico", &[("", "/", "Prefix", "b")]);
    let gw = Gateway::start_with(&set_with("    keepAliveTimeout: 1s\n"), &m).await;
    // HTTP/1.1: a request, its response, then silence: the gateway closes the connection.
    let mut s = TcpStream::connect(gw.addr(0)).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "an idle HTTP/1.1 connection stayed open");
    // HTTP/2: the connection ends once it has no stream for the timeout.
    let stream = TcpStream::connect(gw.addr(0)).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let resp = sender
        .send_request(
            http::Request::get("http://x/")
                .body(http_body_util::Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    drop(resp.into_body().collect().await);
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("an idle HTTP/2 connection stayed open")
        .unwrap()
        .ok();
    gw.stop().await;
}

#[tokio::test]
async fn a_slow_response_keeps_a_connection_alive_past_the_keep_alive_timeout() {
    // A request in flight is not idleness: a response slower than the keep-alive timeout still arrives.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                tokio::time::sleep(Duration::from_millis(800)).await;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow").await;
            });
        }
    });
    let m = service("default", "s", &[slow]) + &ingress("default", "i", "portico", &[("", "/", "Prefix", "s")]);
    let gw = Gateway::start_with(&set_with("    keepAliveTimeout: 200ms\n"), &m).await;
    let r = get(gw.addr(0), "x", "/").await;
    assert_eq!((r.status, r.text().as_str()), (200, "slow"));
    gw.stop().await;
}

// === in flight until the body ends ===

/// A backend named `name`: `/stream` sends one chunk, waits for the returned `Notify`, then sends nine more;
/// anything else answers at once.
async fn streaming_backend(name: &'static str) -> (SocketAddr, std::sync::Arc<tokio::sync::Notify>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let go = std::sync::Arc::new(tokio::sync::Notify::new());
    let go2 = go.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let go = go2.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let go = go.clone();
                    async move {
                        let chunks = if req.uri().path() == "/stream" { 10 } else { 1 };
                        let (tx, rx) = tokio::sync::mpsc::channel(1);
                        tokio::spawn(async move {
                            for i in 0..chunks {
                                if i == 1 {
                                    go.notified().await;
                                }
                                if tx.send(http_body::Frame::data(Bytes::from(name))).await.is_err() {
                                    return;
                                }
                            }
                        });
                        let mut resp = http::Response::new(ChannelBody(rx));
                        resp.headers_mut()
                            .insert("x-backend", http::HeaderValue::from_static(name));
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, go)
}

#[tokio::test]
async fn a_streaming_response_counts_as_in_flight_until_it_ends() {
    let ((a, go_a), (b, go_b)) = (streaming_backend("a").await, streaming_backend("b").await);
    let m = service("default", "pool", &[a, b])
        + &annotated_ingress(
            "default",
            "lr",
            "lr.example",
            "pool",
            &[("portico.dev/load-balance", "least-request")],
        );
    let gw = Gateway::start(&m).await;
    let open = |path: &str| {
        let req = http::Request::get(format!("http://{}{path}", gw.addr(0)))
            .header("host", "lr.example")
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap();
        client().request(req)
    };
    let resp = open("/stream").await.unwrap();
    let busy = resp.headers()["x-backend"].to_str().unwrap().to_string();
    let (busy_addr, idle_name, go) = if busy == "a" { (a, "b", &go_a) } else { (b, "a", &go_b) };
    // Headers are in, the body is still coming: the request is in flight on its endpoint.
    assert_eq!(in_flight(&gw, busy_addr), 1);
    // With two endpoints P2C compares both, so every short request goes to the idle one.
    for _ in 0..5 {
        let r = get(gw.addr(0), "lr.example", "/").await;
        assert_eq!(r.backend().as_deref(), Some(idle_name));
    }
    assert_eq!(in_flight(&gw, busy_addr), 1, "still streaming");
    go.notify_one();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 10);
    assert!(eventually(Duration::from_secs(5), || in_flight(&gw, busy_addr) == 0).await);
    // A client that drops a stream half-way ends it too.
    let resp = open("/stream").await.unwrap();
    let busy_addr = if resp.headers()["x-backend"] == "a" { a } else { b };
    assert_eq!(in_flight(&gw, busy_addr), 1);
    drop(resp);
    assert!(eventually(Duration::from_secs(5), || in_flight(&gw, busy_addr) == 0).await);
    gw.stop().await;
}

// === churn: manifests and endpoints change under load ===

/// A backend that starts and stops like a process: on stop it closes its listener, finishes the requests in
/// flight (as a server does on SIGTERM) and closes its connections.
struct ChurnBackend {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl ChurnBackend {
    async fn start(addr: SocketAddr, name: String) -> Self {
        let l = loop {
            // The port was used by this slot before; binding again can race the old socket's close.
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        };
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let graceful = hyper_util::server::graceful::GracefulShutdown::new();
            loop {
                tokio::select! {
                    a = l.accept() => {
                        let Ok((s, _)) = a else { continue };
                        let name = name.clone();
                        let svc = hyper::service::service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                            let name = name.clone();
                            async move {
                                // A little work, so requests overlap with the changes.
                                tokio::time::sleep(Duration::from_millis(2)).await;
                                Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(Bytes::from(name))))
                            }
                        });
                        let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc);
                        tokio::spawn(graceful.watch(conn));
                    }
                    _ = &mut rx => break,
                }
            }
            drop(l);
            let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
        });
        Self { stop: Some(tx), task }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Where a backend slot is in its life: listed in the EndpointSlice and/or running.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Slot {
    Down,
    /// In the EndpointSlice before its process listens (connections are refused: retried elsewhere).
    ListedNotStarted,
    Up,
    /// Out of the EndpointSlice, still serving until the table without it is published.
    Draining(u32),
}

struct ChurnReport {
    sent: u64,
    failed: u64,
    retries: f64,
    tables: u64,
    starts: u64,
    stops: u64,
}

/// Runs the gateway in file mode with six backend slots (two always up), rewrites the manifests every 100 ms
/// (the Ingress's annotations and hosts change; endpoints are added before their process starts and removed
/// before it stops) while a client sends `rate` GETs per second for `secs` seconds.
async fn churn(secs: u64, rate: u64) -> ChurnReport {
    use std::sync::atomic::{AtomicU64, Ordering};
    let ports: Vec<SocketAddr> = (0..6)
        .map(|_| SocketAddr::from(([127, 0, 0, 1], free_port())))
        .collect();
    let manifests = |n: u64, listed: &[SocketAddr]| {
        let balance = if (n / 10) % 2 == 0 {
            "round-robin"
        } else {
            "least-request"
        };
        let gen = n.to_string();
        let extra = format!("extra-{}.example", n % 3);
        service("default", "churn", listed)
            + &annotated_ingress(
                "default",
                "churn",
                "churn.example",
                "churn",
                &[
                    ("portico.dev/load-balance", balance),
                    ("portico.dev/request-headers-set", &format!("X-Gen: {gen}")),
                ],
            )
            + &ingress("default", "extra", "portico", &[(&extra, "/", "Prefix", "churn")])
    };
    let mut slots = vec![Slot::Down; ports.len()];
    let mut running: Vec<Option<ChurnBackend>> = (0..ports.len()).map(|_| None).collect();
    let (mut starts, mut stops) = (0u64, 0u64);
    // Two slots are always up; the other four cycle.
    for i in 0..2 {
        running[i] = Some(ChurnBackend::start(ports[i], format!("b{i}")).await);
        slots[i] = Slot::Up;
        starts += 1;
    }
    let listed = |slots: &[Slot]| -> Vec<SocketAddr> {
        slots
            .iter()
            .zip(&ports)
            .filter(|(s, _)| matches!(s, Slot::Up | Slot::ListedNotStarted))
            .map(|(_, a)| *a)
            .collect()
    };
    let gw = Gateway::start(&manifests(0, &listed(&slots))).await;
    let first_generation = gw.generation();
    let addr = gw.addr(0);

    let sent = std::sync::Arc::new(AtomicU64::new(0));
    let failed = std::sync::Arc::new(AtomicU64::new(0));
    let load = {
        let (sent, failed) = (sent.clone(), failed.clone());
        tokio::spawn(async move {
            let client = client();
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut inflight = tokio::task::JoinSet::new();
            for _ in 0..secs * rate {
                tick.tick().await;
                let (client, failed) = (client.clone(), failed.clone());
                sent.fetch_add(1, Ordering::Relaxed);
                inflight.spawn(async move {
                    let req = http::Request::get(format!("http://{addr}/"))
                        .header("host", "churn.example")
                        .body(http_body_util::Full::new(Bytes::new()))
                        .unwrap();
                    let ok = match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
                        Ok(Ok(resp)) => {
                            let status = resp.status();
                            let body = resp.into_body().collect().await;
                            status == 200 && body.is_ok()
                        }
                        _ => false,
                    };
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            while inflight.join_next().await.is_some() {}
        })
    };

    // The manifest writer and the backends' lives, one step per 100 ms.
    let mut n = 0u64;
    let mut step = tokio::time::interval(Duration::from_millis(100));
    while !load.is_finished() {
        step.tick().await;
        n += 1;
        // One cycling slot changes state per step, in turn.
        let i = 2 + (n as usize % 4);
        let was = slots[i];
        slots[i] = match was {
            Slot::Down if n % 3 == 0 => Slot::ListedNotStarted,
            Slot::Down => {
                running[i] = Some(ChurnBackend::start(ports[i], format!("b{i}")).await);
                starts += 1;
                Slot::Up
            }
            Slot::ListedNotStarted => {
                running[i] = Some(ChurnBackend::start(ports[i], format!("b{i}")).await);
                starts += 1;
                Slot::Up
            }
            Slot::Up => Slot::Draining(n as u32),
            // Stopped only once the tables without it are out (the writer publishes within ~300 ms).
            Slot::Draining(since) if n as u32 >= since + 5 => {
                if let Some(b) = running[i].take() {
                    b.stop().await;
                    stops += 1;
                }
                Slot::Down
            }
            d @ Slot::Draining(_) => d,
        };
        write_atomically(&gw.manifest_path(), &manifests(n, &listed(&slots)));
    }
    load.await.unwrap();
    let retries = metric(&gw, "portico_upstream_retries_total{set=\"default\"}")
        .await
        .unwrap_or(0.0);
    let tables = gw.generation() - first_generation;
    gw.stop().await;
    for b in running.into_iter().flatten() {
        b.stop().await;
    }
    ChurnReport {
        sent: sent.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        retries,
        tables,
        starts,
        stops,
    }
}

fn print_report(secs: u64, rate: u64, r: &ChurnReport) {
    println!(
        "churn: {secs} s at {rate} requests/s: total {} failed {} | retries {} | tables published {} | backend starts {} stops {}",
        r.sent, r.failed, r.retries, r.tables, r.starts, r.stops
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_fails_while_manifests_and_endpoints_churn() {
    let (secs, rate) = (4, 100);
    let r = churn(secs, rate).await;
    print_report(secs, rate, &r);
    assert_eq!(r.sent, secs * rate);
    assert_eq!(r.failed, 0, "failed requests under churn");
    assert!(r.tables >= secs * 2, "the tables churned: {} published", r.tables);
    assert!(r.starts >= 4 && r.stops >= 2, "backends came and went");
}

/// The load test behind `bench/churn.sh`: 30 s at 200 requests/s (release build recommended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test; run with bench/churn.sh"]
async fn churn_load_test() {
    let (secs, rate) = (30, 200);
    let r = churn(secs, rate).await;
    print_report(secs, rate, &r);
    assert_eq!(r.failed, 0, "failed requests under churn");
}
