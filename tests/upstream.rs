//! Upstream behaviour over loopback: upgrades (WebSocket-style tunnels) that survive table swaps, limits,
//! balancing policies, passive health, and per-route timeouts.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend that answers `Upgrade: echo` with 101 and then echoes bytes; anything else gets 200 "plain".
async fn upgrade_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|mut req: http::Request<hyper::body::Incoming>| async move {
                    if req.headers().get("upgrade").is_some_and(|v| v == "echo") {
                        tokio::spawn(async move {
                            if let Ok(up) = hyper::upgrade::on(&mut req).await {
                                let mut io = TokioIo::new(up);
                                let mut buf = [0u8; 1024];
                                while let Ok(n) = io.read(&mut buf).await {
                                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        });
                        let mut r = http::Response::new(Full::new(Bytes::new()));
                        *r.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
                        r.headers_mut()
                            .insert("upgrade", http::HeaderValue::from_static("echo"));
                        r.headers_mut()
                            .insert("connection", http::HeaderValue::from_static("upgrade"));
                        return Ok::<_, Infallible>(r);
                    }
                    Ok(http::Response::new(Full::new(Bytes::from_static(b"plain"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// Reads an HTTP/1.1 response head from a raw stream.
async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test]
async fn upgrades_tunnel_after_101_and_survive_table_swaps() {
    let ws = upgrade_backend().await;
    let other = echo("other").await;
    let mk = |n: usize| {
        service("default", "ws", &[ws])
            + &service("default", "other", &[other.addr])
            + &ingress("default", "ws", "portico", &[("ws.example", "/", "Prefix", "ws")])
            + &ingress(
                "default",
                "churn",
                "portico",
                &[(&format!("churn{n}.example"), "/", "Prefix", "other")],
            )
    };
    // `echo` is not WebSocket: the listener set allows it by name.
    let config = ONE_SET.replace(
        "    http: [\"127.0.0.1:0\"]\n",
        "    http: [\"127.0.0.1:0\"]\n    allowedUpgrades: [websocket, echo]\n",
    );
    let gw = Gateway::start_with(&config, &mk(0)).await;
    let mut s = TcpStream::connect(gw.addr(0)).await.unwrap();
    s.write_all(b"GET /socket HTTP/1.1\r\nHost: ws.example\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_ascii_lowercase().contains("upgrade: echo"), "{head}");
    for i in 1..=50 {
        gw.rewrite(&mk(i)).await;
        let msg = format!("message {i}");
        s.write_all(msg.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(buf, msg.as_bytes());
    }
    // An upgrade the backend does not accept stays plain HTTP.
    let resp = raw(
        gw.addr(0),
        "GET / HTTP/1.1\r\nHost: ws.example\r\nConnection: Upgrade\r\nUpgrade: other\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200") && resp.ends_with("plain"), "{resp}");
    gw.stop().await;
    // Without the listener set's word, `echo` is not forwarded: the backend sees a plain request.
    let gw = Gateway::start(&mk(0)).await;
    let resp = raw(
        gw.addr(0),
        "GET / HTTP/1.1\r\nHost: ws.example\r\nConnection: Upgrade\r\nUpgrade: echo\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200") && resp.ends_with("plain"), "{resp}");
    gw.stop().await;
}

#[tokio::test]
async fn body_and_header_limits() {
    let b = echo("b").await;
    let m = service("default", "b", &[b.addr])
        + "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: small\n  namespace: default\n  annotations: {nginx.ingress.kubernetes.io/proxy-body-size: 1k}\nspec:\n  rules: [{host: small.example, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: b, port: {number: 80}}}}]}}]\n"
        + &ingress("default", "big", "portico", &[("big.example", "/", "Prefix", "b")]);
    let gw = Gateway::start(&m).await;
    let addr = gw.addr(0);
    let post =
        |host: &'static str, n: usize| send(addr, http::Method::POST, host, "/", &[], Bytes::from(vec![b'x'; n]));
    assert_eq!(post("small.example", 1024).await.status, 200);
    let r = post("small.example", 1025).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(post("big.example", 100_000).await.status, 200);
    assert_eq!(b.count(), 2, "the oversized body never reached the backend");
    // A large but legitimate cookie passes; absurd headers get 431.
    let cookie = format!("session={}", "c".repeat(16 * 1024));
    let r = send(
        addr,
        http::Method::GET,
        "big.example",
        "/",
        &[("cookie", &cookie)],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(b.requests().last().unwrap().headers["cookie"].len(), cookie.len());
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: big.example\r\nX-Huge: {}\r\n\r\n",
        "h".repeat(1 << 20)
    );
    let resp = raw(addr, &huge).await;
    assert_eq!(raw_status(&resp), 431, "{}", &resp[..resp.len().min(200)]);
    gw.stop().await;
}

#[tokio::test]
async fn cookie_affinity_and_client_hashing() {
    let (x, y, z) = (echo("x").await, echo("y").await, echo("z").await);
    let svc = service("default", "pool", &[x.addr, y.addr, z.addr]);
    let m = svc
        + "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: sticky\n  namespace: default\n  annotations: {nginx.ingress.kubernetes.io/affinity: cookie}\nspec:\n  rules: [{host: sticky.example, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: pool, port: {number: 80}}}}]}}]\n"
        + "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: hashed\n  namespace: default\n  annotations: {portico.dev/load-balance: source-hash}\nspec:\n  rules: [{host: hashed.example, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: pool, port: {number: 80}}}}]}}]\n";
    let gw = Gateway::start(&m).await;
    let addr = gw.addr(0);
    let first = get(addr, "sticky.example", "/").await;
    let set_cookie = first.headers["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set_cookie.starts_with("PORTICO_AFFINITY=") && set_cookie.contains("HttpOnly"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let pinned = first.backend().unwrap();
    for _ in 0..12 {
        let r = send(
            addr,
            http::Method::GET,
            "sticky.example",
            "/",
            &[("cookie", &cookie)],
            Bytes::new(),
        )
        .await;
        assert_eq!(r.backend().unwrap(), pinned);
        assert!(
            r.headers.get("set-cookie").is_none(),
            "no new cookie while the pinned endpoint serves"
        );
    }
    // The same client address always reaches the same endpoint.
    let first = get(addr, "hashed.example", "/").await.backend().unwrap();
    for _ in 0..12 {
        assert_eq!(get(addr, "hashed.example", "/").await.backend().unwrap(), first);
    }
    gw.stop().await;
}

/// A backend that always answers 500.
async fn failing_backend() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let h = h.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    h.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    async {
                        let mut r = http::Response::new(Full::new(Bytes::from_static(b"boom")));
                        *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, hits)
}

#[tokio::test]
async fn failing_endpoint_is_ejected_and_others_take_the_load() {
    let (x, y) = (echo("x").await, echo("y").await);
    let (bad, bad_hits) = failing_backend().await;
    let m = service("default", "pool", &[x.addr, y.addr, bad])
        + &ingress("default", "p", "portico", &[("", "/", "Prefix", "pool")]);
    let gw = Gateway::start(&m).await;
    let mut failures = 0;
    for _ in 0..60 {
        if get(gw.addr(0), "p", "/").await.status != 200 {
            failures += 1;
        }
    }
    // Five consecutive failures eject it (the default); after that it gets nothing.
    assert_eq!(bad_hits.load(std::sync::atomic::Ordering::Relaxed), 5);
    assert_eq!(failures, 5);
    assert_eq!(x.count() + y.count(), 55);
    // The ejection shows in the metrics.
    let metrics = get(gw.running().admin_addr, "admin", "/metrics").await.text();
    assert!(
        metrics.contains(&format!(
            "portico_endpoint_ejected{{backend=\"default/pool:80\",endpoint=\"{bad}\"}} 1"
        )),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "portico_endpoint_ejected{{backend=\"default/pool:80\",endpoint=\"{}\"}} 0",
        x.addr
    )));
    assert!(
        metrics.contains("portico_backend_ejections_total{backend=\"default/pool:80\"} 1"),
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_lone_failing_endpoint_is_ejected_in_the_metrics_and_still_served() {
    let (bad, bad_hits) = failing_backend().await;
    let dead = closed_port().await;
    let m = service("default", "lone", &[bad])
        + &service("default", "dead", &[dead])
        + &ingress(
            "default",
            "l",
            "portico",
            &[("lone", "/", "Prefix", "lone"), ("dead", "/", "Prefix", "dead")],
        );
    let gw = Gateway::start(&m).await;
    for _ in 0..8 {
        assert_eq!(get(gw.addr(0), "lone", "/").await.status, 500);
    }
    // Ejected after five failures, yet its only endpoint still takes the requests (no other to send them to).
    assert_eq!(bad_hits.load(std::sync::atomic::Ordering::Relaxed), 8);
    for _ in 0..3 {
        assert_eq!(get(gw.addr(0), "dead", "/").await.status, 502);
    }
    let metrics = get(gw.running().admin_addr, "admin", "/metrics").await.text();
    for line in [
        format!("portico_endpoint_ejected{{backend=\"default/lone:80\",endpoint=\"{bad}\"}} 1"),
        "portico_backend_ejections_total{backend=\"default/lone:80\"} 1".to_string(),
        // Upstream errors per backend, exact codes by method, and the Ingress's own latency histogram.
        "portico_backend_upstream_errors_total{backend=\"default/dead:80\",kind=\"connect\"} 3".to_string(),
        "portico_responses_total{set=\"default\",method=\"GET\",code=\"500\"} 8".to_string(),
        "portico_responses_total{set=\"default\",method=\"GET\",code=\"502\"} 3".to_string(),
        "portico_route_request_duration_seconds_count{ingress=\"default/l\",service=\"default/lone:80\"} 8".to_string(),
        "portico_route_upstream_duration_seconds_count{ingress=\"default/l\",service=\"default/lone:80\"} 8"
            .to_string(),
        "portico_route_request_duration_seconds_count{ingress=\"default/l\",service=\"default/dead:80\"} 3".to_string(),
    ] {
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
    assert!(!metrics.contains("portico_backend_upstream_errors_total{backend=\"default/lone:80\""));
    gw.stop().await;
}

#[tokio::test]
async fn per_route_upstream_timeout() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    let m = service("default", "slow", &[slow])
        + "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: s\n  namespace: default\n  annotations: {portico.dev/upstream-timeout: 500ms}\nspec:\n  rules: [{host: s.example, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: slow, port: {number: 80}}}}]}}]\n";
    let gw = Gateway::start(&m).await;
    let t = Instant::now();
    assert_eq!(get(gw.addr(0), "s.example", "/").await.status, 504);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the route's 500 ms applied, not the 60 s default"
    );
    gw.stop().await;
}

/// An h2c "gRPC" server: echoes the request's `te`, streams three messages 150 ms apart, then trailers.
async fn grpc_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    assert_eq!(req.version(), http::Version::HTTP_2);
                    let te = req.headers().get("te").cloned();
                    let (tx, rx) = tokio::sync::mpsc::channel(4);
                    tokio::spawn(async move {
                        for i in 0..3u8 {
                            let _ = tx
                                .send(http_body::Frame::data(Bytes::from(vec![0, 0, 0, 0, 1, b'0' + i])))
                                .await;
                            tokio::time::sleep(Duration::from_millis(150)).await;
                        }
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                        let _ = tx.send(http_body::Frame::trailers(trailers)).await;
                    });
                    let mut r = http::Response::new(ChannelBody(rx));
                    r.headers_mut()
                        .insert("content-type", http::HeaderValue::from_static("application/grpc"));
                    if let Some(te) = te {
                        r.headers_mut().insert("x-seen-te", te);
                    }
                    Ok::<_, Infallible>(r)
                });
                let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn grpc_streams_and_trailers_through_an_h2c_backend() {
    use http_body_util::BodyExt;
    let backend = grpc_backend().await;
    let m = service("default", "grpc", &[backend])
        + "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: g\n  namespace: default\n  annotations: {nginx.ingress.kubernetes.io/backend-protocol: GRPC}\nspec:\n  rules: [{host: grpc.example, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: grpc, port: {number: 80}}}}]}}]\n";
    let gw = Gateway::start(&m).await;
    let stream = TcpStream::connect(gw.addr(0)).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for call in 0..2 {
        let req = http::Request::post("http://grpc.example/echo.Echo/Stream")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
            .unwrap();
        let started = Instant::now();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200, "call {call}");
        assert_eq!(resp.headers()["x-seen-te"], "trailers");
        let mut body = resp.into_body();
        let mut messages = Vec::new();
        let mut trailers = None;
        let mut first_at = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.unwrap();
            if let Some(d) = frame.data_ref() {
                first_at.get_or_insert(started.elapsed());
                messages.push(d.clone());
            } else if let Some(t) = frame.trailers_ref() {
                trailers = Some(t.clone());
            }
        }
        let all: Vec<u8> = messages.iter().flat_map(|m| m.iter().copied()).collect();
        assert_eq!(all, [0, 0, 0, 0, 1, b'0', 0, 0, 0, 0, 1, b'1', 0, 0, 0, 0, 1, b'2']);
        assert!(
            first_at.unwrap() < Duration::from_millis(250),
            "the first message arrived before the stream ended"
        );
        assert_eq!(trailers.expect("trailers passed through")["grpc-status"], "0");
    }
    gw.stop().await;
}

/// An echo backend `b` behind a gateway whose one listener set has `extra` lines (YAML, indented by four).
async fn echo_behind_set_with(extra: &str) -> (portico::echo::EchoServer, Gateway) {
    let b = echo("b").await;
    let config = ONE_SET.replace(
        "    http: [\"127.0.0.1:0\"]\n",
        &format!("    http: [\"127.0.0.1:0\"]\n{extra}"),
    );
    let gw = Gateway::start_with(
        &config,
        &(service("default", "b", &[b.addr]) + &ingress("default", "i", "portico", &[("", "/", "Prefix", "b")])),
    )
    .await;
    (b, gw)
}

#[tokio::test]
async fn max_connections_makes_excess_clients_wait() {
    let (_b, gw) = echo_behind_set_with("    maxConnections: 2\n").await;
    let addr = gw.addr(0);
    let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(req).await.unwrap();
        let head = read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        held.push(s);
    }
    // The third connection is not served while two are open...
    let mut third = TcpStream::connect(addr).await.unwrap();
    third.write_all(req).await.unwrap();
    let mut byte = [0u8; 1];
    assert!(tokio::time::timeout(Duration::from_millis(500), third.read(&mut byte))
        .await
        .is_err());
    // ...and is served as soon as one closes.
    drop(held.pop());
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut third))
        .await
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    gw.stop().await;
}

/// A backend whose `/readyz` answers 200 or 503 by a switch; every other path answers 200 with its name.
async fn switchable_backend(
    name: &'static str,
) -> (
    SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let ready = std::sync::Arc::new(AtomicBool::new(true));
    let served = std::sync::Arc::new(AtomicUsize::new(0));
    let (r, sv) = (ready.clone(), served.clone());
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (r, sv) = (r.clone(), sv.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (r, sv) = (r.clone(), sv.clone());
                    async move {
                        let mut resp = http::Response::new(Full::new(Bytes::from_static(name.as_bytes())));
                        if req.uri().path() == "/readyz" {
                            if !r.load(Ordering::Relaxed) {
                                *resp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                            }
                        } else {
                            sv.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, ready, served)
}

#[tokio::test]
async fn active_checks_take_endpoints_out_and_back() {
    use std::sync::atomic::Ordering;
    let (a, _a_ready, a_served) = switchable_backend("a").await;
    let (b, b_ready, b_served) = switchable_backend("b").await;
    let m = service("default", "pool", &[a, b])
        + "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: checked\n  namespace: default\n  annotations:\n    portico.dev/health-check: http\n    portico.dev/health-check-path: /readyz\n    portico.dev/health-check-interval: 100ms\n    portico.dev/health-check-fall: \"2\"\n    portico.dev/health-check-rise: \"2\"\nspec:\n  rules: [{host: c.example, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: pool, port: {number: 80}}}}]}}]\n";
    let gw = Gateway::start(&m).await;
    let burst = || async {
        for _ in 0..20 {
            assert_eq!(get(gw.addr(0), "c.example", "/").await.status, 200);
        }
    };
    burst().await;
    assert!(a_served.load(Ordering::Relaxed) > 0 && b_served.load(Ordering::Relaxed) > 0);
    // b fails its check: after 2 failed checks (~200 ms) it gets no traffic.
    b_ready.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = get(gw.running().admin_addr, "admin", "/metrics").await.text();
    assert!(
        metrics.contains(&format!(
            "portico_endpoint_check_up{{backend=\"default/pool:80\",endpoint=\"{b}\"}} 0"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "portico_endpoint_check_up{{backend=\"default/pool:80\",endpoint=\"{a}\"}} 1"
        )),
        "{metrics}"
    );
    let before = b_served.load(Ordering::Relaxed);
    burst().await;
    assert_eq!(b_served.load(Ordering::Relaxed), before, "a down endpoint got traffic");
    // It recovers: after 2 good checks it is back in rotation.
    b_ready.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    burst().await;
    assert!(
        b_served.load(Ordering::Relaxed) > before,
        "a recovered endpoint got no traffic"
    );
    gw.stop().await;
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let (b, gw) = echo_behind_set_with("    headerReadTimeout: 500ms\n").await;
    let mut s = TcpStream::connect(gw.addr(0)).await.unwrap();
    let started = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // A byte every 200 ms never completes the headers; the gateway closes the connection.
    let mut closed = false;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if s.write_all(b"X").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 512];
        if let Ok(Ok(0)) | Ok(Err(_)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "a slowloris client was not cut off");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(b.count(), 0);
    gw.stop().await;
}

#[tokio::test]
async fn the_header_read_timeout_spares_idle_keep_alive_connections_but_not_silent_new_ones() {
    let (_b, gw) = echo_behind_set_with("    headerReadTimeout: 300ms\n    keepAliveTimeout: 5s\n").await;
    async fn exchange(s: &mut TcpStream) -> String {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "connection closed; got {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    }
    // Between requests a connection is idle, not slow: it lives by the keep-alive timeout.
    let mut s = TcpStream::connect(gw.addr(0)).await.unwrap();
    assert!(exchange(&mut s).await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(exchange(&mut s).await.starts_with("HTTP/1.1 200"));
    // A new connection that sends nothing is due its first request head within the header-read timeout.
    let mut silent = TcpStream::connect(gw.addr(0)).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("a silent connection was not closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    gw.stop().await;
}

// === TLS to backends ===

#[tokio::test]
async fn https_upstreams_with_and_without_verification() {
    let ca = portico::certs::testing::TestCa::new();
    let other_ca = portico::certs::testing::TestCa::new();
    let backend = tls_backend(&ca, &["backend.internal"], b"http/1.1").await;
    let by_host = tls_backend(&ca, &["secure.example"], b"http/1.1").await;
    let https = [("nginx.ingress.kubernetes.io/backend-protocol", "HTTPS")];
    let verified_by_host = [
        ("portico.dev/backend-protocol", "HTTPS"),
        ("portico.dev/proxy-ssl-verify", "on"),
        ("portico.dev/proxy-ssl-secret", "upstream-ca"),
    ];
    let verified = [
        ("portico.dev/backend-protocol", "HTTPS"),
        ("nginx.ingress.kubernetes.io/proxy-ssl-verify", "on"),
        ("nginx.ingress.kubernetes.io/proxy-ssl-secret", "default/upstream-ca"),
        ("nginx.ingress.kubernetes.io/proxy-ssl-name", "backend.internal"),
    ];
    let wrong_ca = [
        ("portico.dev/backend-protocol", "HTTPS"),
        ("portico.dev/proxy-ssl-verify", "on"),
        ("portico.dev/proxy-ssl-secret", "other-ca"),
        ("portico.dev/proxy-ssl-name", "backend.internal"),
    ];
    let wrong_name = [
        ("portico.dev/backend-protocol", "HTTPS"),
        ("portico.dev/proxy-ssl-verify", "on"),
        ("portico.dev/proxy-ssl-secret", "upstream-ca"),
        ("portico.dev/proxy-ssl-name", "someone.else"),
    ];
    let m = service("default", "tls", &[backend])
        + &service("default", "by-host", &[by_host])
        + &ca_secret("default", "upstream-ca", &ca.pem)
        + &ca_secret("default", "other-ca", &other_ca.pem)
        + &annotated_ingress("default", "by-host", "secure.example", "by-host", &verified_by_host)
        + &annotated_ingress("default", "plain", "plain.example", "tls", &https)
        + &annotated_ingress("default", "verified", "verified.example", "tls", &verified)
        + &annotated_ingress("default", "wrong-ca", "wrong-ca.example", "tls", &wrong_ca)
        + &annotated_ingress("default", "wrong-name", "wrong-name.example", "tls", &wrong_name);
    let gw = Gateway::start(&m).await;
    let addr = gw.addr(0);
    // Verification off (the default): any certificate, over TLS, HTTP/1.1.
    let r = get(addr, "plain.example", "/").await;
    assert_eq!((r.status, r.text().as_str()), (200, "tls HTTP/1.1"));
    // Verification on with the CA that issued the backend's certificate, and the name in it.
    let r = get(addr, "verified.example", "/").await;
    assert_eq!((r.status, r.text().as_str()), (200, "tls HTTP/1.1"));
    // Without proxy-ssl-name, an Ingress with one host sends and verifies that host (the upstream Host).
    let r = get(addr, "secure.example", "/").await;
    assert_eq!((r.status, r.text().as_str()), (200, "tls HTTP/1.1"));
    // An untrusted issuer or a name the certificate does not carry: 502, counted as a TLS error.
    for host in ["wrong-ca.example", "wrong-name.example"] {
        let r = get(addr, host, "/").await;
        assert_eq!(r.status, 502, "{host}: {}", r.text());
        assert!(r.text().contains("TLS"), "{}", r.text());
    }
    assert_eq!(
        metric(&gw, "portico_upstream_errors_total{set=\"default\",kind=\"tls\"}").await,
        Some(2.0)
    );
    gw.stop().await;
}

#[tokio::test]
async fn upstream_tls_annotations_that_cannot_be_served_disable_only_their_ingress() {
    let ca = portico::certs::testing::TestCa::new();
    let backend = tls_backend(&ca, &["backend.internal"], b"http/1.1").await;
    let b = echo("b").await;
    let cross = [
        ("portico.dev/backend-protocol", "HTTPS"),
        ("portico.dev/proxy-ssl-verify", "on"),
        ("portico.dev/proxy-ssl-secret", "elsewhere/upstream-ca"),
    ];
    let missing = [
        ("portico.dev/backend-protocol", "HTTPS"),
        ("portico.dev/proxy-ssl-verify", "on"),
        ("portico.dev/proxy-ssl-secret", "no-such-secret"),
    ];
    let m = service("default", "tls", &[backend])
        + &service("default", "b", &[b.addr])
        + &ca_secret("elsewhere", "upstream-ca", &ca.pem)
        + &annotated_ingress("default", "cross", "cross.example", "tls", &cross)
        + &annotated_ingress("default", "missing", "missing.example", "tls", &missing)
        + &ingress("default", "fine", "portico", &[("fine.example", "/", "Prefix", "b")]);
    let gw = Gateway::start(&m).await;
    assert_eq!(get(gw.addr(0), "fine.example", "/").await.status, 200);
    assert_eq!(get(gw.addr(0), "cross.example", "/").await.status, 404);
    assert_eq!(get(gw.addr(0), "missing.example", "/").await.status, 404);
    let diagnostics = gw.running().shared.last_translation().unwrap().describe_diagnostics();
    assert!(
        diagnostics.contains("Ingress default/cross: annotation portico.dev/proxy-ssl-secret: Secret elsewhere/upstream-ca is in namespace elsewhere"),
        "{diagnostics}"
    );
    assert!(
        diagnostics.contains("Ingress default/missing: CA Secret default/no-such-secret (annotation portico.dev/proxy-ssl-secret) not found"),
        "{diagnostics}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn grpcs_unary_through_a_tls_h2_backend() {
    let ca = portico::certs::testing::TestCa::new();
    let backend = tls_backend(&ca, &["grpc.internal"], b"h2").await;
    let m = service("default", "grpc", &[backend])
        + &ca_secret("default", "grpc-ca", &ca.pem)
        + &annotated_ingress(
            "default",
            "g",
            "grpc.example",
            "grpc",
            &[
                ("nginx.ingress.kubernetes.io/backend-protocol", "GRPCS"),
                ("nginx.ingress.kubernetes.io/proxy-ssl-verify", "on"),
                ("nginx.ingress.kubernetes.io/proxy-ssl-secret", "grpc-ca"),
                ("nginx.ingress.kubernetes.io/proxy-ssl-name", "grpc.internal"),
            ],
        );
    let gw = Gateway::start(&m).await;
    let r = grpc_unary(gw.addr(0), "http://grpc.example/echo.Echo/Unary").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/grpc");
    assert_eq!(r.trailers["grpc-status"], "0", "trailers passed through");
    assert_eq!(r.body.as_ref(), &[0, 0, 0, 0, 2, b'o', b'k']);
    gw.stop().await;
}
