//! Traffic policy end to end over loopback: CORS (preflights answered by the gateway, allowed origins echoed,
//! disallowed ones given nothing), rate and connection limits per client (burst then the status, other clients
//! unaffected, the allowlist exempt, a republish keeping the buckets), and deny lists (route and listener set;
//! deny wins over allow). Clients are told apart by `X-Forwarded-For` from a trusted loopback proxy.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One set, loopback trusted as a proxy (so `X-Forwarded-For` names the client).
const TRUSTING: &str = r#"
listenerSets:
  - name: default
    ingressClasses: [portico]
    http: ["127.0.0.1:0"]
    trustedProxies: [127.0.0.1]
admin: { address: "127.0.0.1:0" }
"#;

async fn from(addr: SocketAddr, host: &str, client: &str) -> Reply {
    send(
        addr,
        Method::GET,
        host,
        "/",
        &[("x-forwarded-for", client)],
        Bytes::new(),
    )
    .await
}

fn header<'a>(r: &'a Reply, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn cors_preflights_are_answered_and_allowed_origins_echoed() {
    let backend = echo("app").await;
    let mut m = service("default", "app", &[backend.addr]);
    m.push_str(&annotated_ingress(
        "default",
        "api",
        "api.example",
        "app",
        &[
            ("nginx.ingress.kubernetes.io/enable-cors", "true"),
            (
                "nginx.ingress.kubernetes.io/cors-allow-origin",
                "https://app.example, https://*.w.example",
            ),
            ("nginx.ingress.kubernetes.io/cors-expose-headers", "X-Total"),
        ],
    ));
    m.push_str(&annotated_ingress(
        "default",
        "open",
        "open.example",
        "app",
        &[
            ("portico.dev/enable-cors", "true"),
            ("portico.dev/cors-allow-origin", "*"),
            ("portico.dev/cors-allow-credentials", "false"),
            ("portico.dev/cors-max-age", "600"),
        ],
    ));
    let gw = Gateway::start(&m).await;
    let addr = gw.addr(0);
    let preflight = |host: &'static str, origin: &'static str| async move {
        send(
            addr,
            Method::OPTIONS,
            host,
            "/items",
            &[("origin", origin), ("access-control-request-method", "PUT")],
            Bytes::new(),
        )
        .await
    };

    // An allowed origin's preflight: 204 from the gateway with the allow headers (ingress-nginx's defaults).
    let r = preflight("api.example", "https://app.example").await;
    assert_eq!(r.status, 204);
    assert_eq!(header(&r, "access-control-allow-origin"), Some("https://app.example"));
    assert_eq!(
        header(&r, "access-control-allow-methods"),
        Some("GET, PUT, POST, DELETE, PATCH, OPTIONS")
    );
    assert!(header(&r, "access-control-allow-headers")
        .unwrap()
        .contains("Authorization"));
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    assert_eq!(header(&r, "access-control-max-age"), Some("1728000"));
    assert_eq!(header(&r, "vary"), Some("Origin"));
    // A disallowed origin's preflight: answered, without any allow header, and the backend never sees it.
    for origin in [
        "https://evil.example",
        "https://w.example",
        "http://app.example",
        "null",
    ] {
        let r = preflight("api.example", origin).await;
        assert_eq!(r.status, 204, "{origin}");
        assert!(
            r.headers.keys().all(|k| !k.as_str().starts_with("access-control-")),
            "{origin}: {:?}",
            r.headers
        );
    }
    assert_eq!(backend.count(), 0, "preflights never reach the backend");

    // Actual requests reach the backend; an allowed origin gets the headers, echoed, with Vary: Origin.
    let r = send(
        addr,
        Method::GET,
        "api.example",
        "/",
        &[("origin", "https://a.w.example")],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "access-control-allow-origin"), Some("https://a.w.example"));
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    assert_eq!(header(&r, "access-control-expose-headers"), Some("X-Total"));
    assert!(r.headers.get_all("vary").iter().any(|v| v == "Origin"));
    let r = send(
        addr,
        Method::GET,
        "api.example",
        "/",
        &[("origin", "https://evil.example")],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    // OPTIONS without Access-Control-Request-Method is not a preflight: the backend answers it.
    let r = send(
        addr,
        Method::OPTIONS,
        "api.example",
        "/",
        &[("origin", "https://app.example")],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(backend.count(), 3);

    // `*` without credentials answers `*`.
    let r = preflight("open.example", "https://anything.example").await;
    assert_eq!(r.status, 204);
    assert_eq!(header(&r, "access-control-allow-origin"), Some("*"));
    assert_eq!(header(&r, "access-control-allow-credentials"), None);
    assert_eq!(header(&r, "access-control-max-age"), Some("600"));
    gw.stop().await;
}

#[tokio::test]
async fn invalid_cors_values_disable_the_ingress() {
    let backend = echo("app").await;
    let mut m = service("default", "app", &[backend.addr]);
    m.push_str(&annotated_ingress(
        "default",
        "bad",
        "bad.example",
        "app",
        &[
            ("nginx.ingress.kubernetes.io/enable-cors", "true"),
            ("nginx.ingress.kubernetes.io/cors-allow-origin", "app.example"),
        ],
    ));
    let gw = Gateway::start(&m).await;
    assert_eq!(get(gw.addr(0), "bad.example", "/").await.status, 404);
    gw.stop().await;
}

fn limited(rpm: &str, status: Option<&str>) -> Vec<(&'static str, String)> {
    let mut a = vec![
        ("nginx.ingress.kubernetes.io/limit-rpm", rpm.to_string()),
        ("nginx.ingress.kubernetes.io/limit-burst-multiplier", "2".to_string()),
        (
            "nginx.ingress.kubernetes.io/limit-whitelist",
            "198.51.100.9/32".to_string(),
        ),
    ];
    if let Some(s) = status {
        a.push(("portico.dev/limit-status", s.to_string()));
    }
    a
}

fn limited_manifests(backend: SocketAddr, status: Option<&str>, extra: &str) -> String {
    let notes = limited("1", status);
    let notes: Vec<(&str, &str)> = notes.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut m = service("default", "app", &[backend]);
    m.push_str(&annotated_ingress("default", "api", "api.example", "app", &notes));
    m.push_str(extra);
    m
}

#[tokio::test]
async fn rate_limit_burst_then_status_per_client_and_kept_across_republishes() {
    let backend = echo("app").await;
    let gw = Gateway::start_with(TRUSTING, &limited_manifests(backend.addr, Some("429"), "")).await;
    let addr = gw.addr(0);
    // 1 per minute with a burst of 1 × 2: three at once, then 429.
    for i in 0..3 {
        assert_eq!(
            from(addr, "api.example", "198.51.100.1").await.status,
            200,
            "request {i}"
        );
    }
    let r = from(addr, "api.example", "198.51.100.1").await;
    assert_eq!(r.status, 429);
    assert_eq!(backend.count(), 3, "a refused request never reaches the backend");
    // Another client has its own bucket; the allowlisted one has none.
    assert_eq!(from(addr, "api.example", "198.51.100.2").await.status, 200);
    for _ in 0..10 {
        assert_eq!(from(addr, "api.example", "198.51.100.9").await.status, 200);
    }

    // A republish that changes the Ingress (and adds another) but keeps the route keeps its buckets: the first
    // client is still over its limit (answered with the new status), the second has two left.
    let other = annotated_ingress("default", "other", "other.example", "app", &[]);
    gw.rewrite(&limited_manifests(backend.addr, None, &other)).await;
    assert_eq!(get(addr, "other.example", "/").await.status, 200);
    assert_eq!(from(addr, "api.example", "198.51.100.1").await.status, 503);
    assert_eq!(from(addr, "api.example", "198.51.100.2").await.status, 200);
    assert_eq!(from(addr, "api.example", "198.51.100.2").await.status, 200);
    assert_eq!(from(addr, "api.example", "198.51.100.2").await.status, 503);
    gw.stop().await;
}

#[tokio::test]
async fn rate_limit_by_portico_names_defaults_to_503() {
    let backend = echo("app").await;
    let mut m = service("default", "app", &[backend.addr]);
    m.push_str(&annotated_ingress(
        "default",
        "api",
        "api.example",
        "app",
        &[
            ("portico.dev/limit-rpm", "2"),
            ("portico.dev/limit-burst-multiplier", "1"),
        ],
    ));
    let gw = Gateway::start_with(TRUSTING, &m).await;
    let addr = gw.addr(0);
    for _ in 0..3 {
        assert_eq!(from(addr, "api.example", "192.0.2.1").await.status, 200);
    }
    assert_eq!(from(addr, "api.example", "192.0.2.1").await.status, 503);
    gw.stop().await;
}

/// A backend that holds every request until `release` gives it a permit, then answers 200 `ok`.
async fn holding_backend() -> (SocketAddr, Arc<AtomicUsize>, Arc<tokio::sync::Semaphore>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let arrived = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let (a, r) = (arrived.clone(), release.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { return };
            let (a, r) = (a.clone(), r.clone());
            tokio::spawn(async move {
                loop {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    a.fetch_add(1, Ordering::SeqCst);
                    r.acquire().await.unwrap().forget();
                    if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, arrived, release)
}

#[tokio::test]
async fn connection_limit_counts_requests_in_flight_per_client() {
    let (backend, arrived, release) = holding_backend().await;
    let mut m = service("default", "app", &[backend]);
    m.push_str(&annotated_ingress(
        "default",
        "api",
        "api.example",
        "app",
        &[
            ("nginx.ingress.kubernetes.io/limit-connections", "1"),
            ("portico.dev/limit-status", "429"),
        ],
    ));
    let gw = Gateway::start_with(TRUSTING, &m).await;
    let addr = gw.addr(0);
    let first = tokio::spawn(async move { from(addr, "api.example", "192.0.2.1").await });
    assert!(eventually(Duration::from_secs(5), || arrived.load(Ordering::SeqCst) == 1).await);
    // The same client again while its first request is in flight: refused; another client: admitted.
    assert_eq!(from(addr, "api.example", "192.0.2.1").await.status, 429);
    let second = tokio::spawn(async move { from(addr, "api.example", "192.0.2.2").await });
    assert!(eventually(Duration::from_secs(5), || arrived.load(Ordering::SeqCst) == 2).await);
    release.add_permits(2);
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(second.await.unwrap().status, 200);
    // The first request ended: the client may send another.
    let third = tokio::spawn(async move { from(addr, "api.example", "192.0.2.1").await });
    assert!(eventually(Duration::from_secs(5), || arrived.load(Ordering::SeqCst) == 3).await);
    release.add_permits(1);
    assert_eq!(third.await.unwrap().status, 200);
    gw.stop().await;
}

#[tokio::test]
async fn deny_lists_win_over_allow_lists() {
    let config = r#"
listenerSets:
  - name: default
    ingressClasses: [portico]
    http: ["127.0.0.1:0"]
    trustedProxies: [127.0.0.1]
    allowSourceRanges: [198.51.100.0/24, 203.0.113.0/24]
    denySourceRanges: [203.0.113.5]
admin: { address: "127.0.0.1:0" }
"#;
    let backend = echo("app").await;
    let mut m = service("default", "app", &[backend.addr]);
    m.push_str(&annotated_ingress(
        "default",
        "nginx-names",
        "a.example",
        "app",
        &[
            ("nginx.ingress.kubernetes.io/whitelist-source-range", "198.51.100.0/24"),
            ("nginx.ingress.kubernetes.io/denylist-source-range", "198.51.100.7"),
        ],
    ));
    m.push_str(&annotated_ingress(
        "default",
        "portico-names",
        "b.example",
        "app",
        &[("portico.dev/deny-source-ranges", "198.51.100.0/25")],
    ));
    let gw = Gateway::start_with(config, &m).await;
    let addr = gw.addr(0);
    assert_eq!(from(addr, "a.example", "198.51.100.8").await.status, 200);
    assert_eq!(from(addr, "a.example", "198.51.100.7").await.status, 403, "deny wins");
    assert_eq!(from(addr, "b.example", "198.51.100.7").await.status, 403);
    assert_eq!(from(addr, "b.example", "198.51.100.200").await.status, 200);
    // The listener set's deny list, over its own allowlist, for every host.
    assert_eq!(from(addr, "b.example", "203.0.113.6").await.status, 200);
    assert_eq!(from(addr, "b.example", "203.0.113.5").await.status, 403);
    assert_eq!(from(addr, "a.example", "203.0.113.5").await.status, 403);
    assert_eq!(backend.count(), 3);
    gw.stop().await;
}
