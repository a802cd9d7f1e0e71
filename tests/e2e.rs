//! End to end over loopback: the gateway in-process, real echo backends, real HTTP clients.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use support::*;

#[tokio::test]
async fn host_and_path_rules_reach_the_right_backend() {
    let (a, b, c, d, e, def) = (
        echo("a").await,
        echo("b").await,
        echo("c").await,
        echo("d").await,
        echo("e").await,
        echo("def").await,
    );
    let mut m = String::new();
    for s in [&a, &b, &c, &d, &e, &def] {
        m += &service("default", &s.name, &[s.addr]);
    }
    m += &ingress(
        "default",
        "rules",
        "portico",
        &[
            ("a.example", "/", "Prefix", "a"),
            ("b.example", "/", "Prefix", "b"),
            ("p.example", "/foo", "Exact", "a"),
            ("p.example", "/foo", "Prefix", "b"),
            ("p.example", "/foo/bar", "Prefix", "c"),
            ("p.example", "/Case", "Prefix", "d"),
            ("*.wild.example", "/", "Prefix", "e"),
            ("", "/", "Prefix", "def"),
        ],
    );
    let gw = Gateway::start(&m).await;
    let addr = gw.addr(0);
    for (host, path, want) in [
        ("a.example", "/", Some("a")),
        ("A.EXAMPLE.", "/x", Some("a")),
        ("b.example:8080", "/", Some("b")),
        ("p.example", "/foo", Some("a")),
        ("p.example", "/foo/", Some("b")),
        ("p.example", "/foo/baz", Some("b")),
        ("p.example", "/foo/bar", Some("c")),
        ("p.example", "/foo/bar/", Some("c")),
        ("p.example", "/foo/barn", Some("b")),
        ("p.example", "/foobar", None),
        ("p.example", "/Case/x", Some("d")),
        ("p.example", "/case/x", None),
        ("x.wild.example", "/", Some("e")),
        ("y.x.wild.example", "/", Some("def")),
        ("wild.example", "/", Some("def")),
        ("other.example", "/anything", Some("def")),
    ] {
        let r = get(addr, host, path).await;
        assert_eq!(r.backend().as_deref(), want, "{host}{path}: {} {}", r.status, r.text());
        if want.is_none() {
            assert_eq!(r.status, 404, "{host}{path}");
        }
    }
    gw.stop().await;
}

#[tokio::test]
async fn default_backend_and_error_statuses() {
    let live = echo("live").await;
    let dead = closed_port().await;
    let mut m = service("default", "live", &[live.addr]);
    m += &service("default", "dead", &[dead]);
    m += &service("default", "empty", &[]);
    m += &ingress(
        "default",
        "errors",
        "portico",
        &[
            ("e.example", "/live", "Prefix", "live"),
            ("e.example", "/dead", "Prefix", "dead"),
            ("e.example", "/empty", "Prefix", "empty"),
            ("e.example", "/missing", "Prefix", "no-such-service"),
        ],
    );
    let gw = Gateway::start(&m).await;
    let addr = gw.addr(0);
    assert_eq!(get(addr, "e.example", "/live").await.status, 200);
    let r = get(addr, "e.example", "/dead").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(get(addr, "e.example", "/empty").await.status, 503);
    assert_eq!(get(addr, "e.example", "/missing").await.status, 503);
    let r = get(addr, "e.example", "/nowhere").await;
    assert_eq!(r.status, 404);
    assert!(r.text().contains("no route"));
    assert_eq!(get(addr, "unknown.example", "/").await.status, 404);
    gw.stop().await;
}

#[tokio::test]
async fn slow_upstream_gets_504() {
    // Accepts and reads, never answers.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow = l.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    let config = format!("{ONE_SET}upstream: {{ responseHeaderTimeout: 300ms }}\n");
    let m = service("default", "slow", &[slow]) + &ingress("default", "s", "portico", &[("", "/", "Prefix", "slow")]);
    let gw = Gateway::start_with(&config, &m).await;
    let started = std::time::Instant::now();
    let r = get(gw.addr(0), "s.example", "/").await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(5));
    gw.stop().await;
    hold.abort();
}

#[tokio::test]
async fn forwarded_headers_are_set_and_hop_by_hop_removed() {
    let b = echo("b").await;
    let m =
        service("default", "b", &[b.addr]) + &ingress("default", "h", "portico", &[("h.example", "/", "Prefix", "b")]);
    let gw = Gateway::start(&m).await;
    let addr = gw.addr(0);
    let r = send(
        addr,
        http::Method::GET,
        "h.example:1234",
        "/p?q=1&r=%2F",
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("connection", "keep-alive, x-forwarded-port, x-private"),
            ("x-private", "secret"),
            ("te", "trailers"),
            ("x-keep", "kept"),
        ],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = b.requests();
    let h = &seen[0].headers;
    assert_eq!(h["host"], "h.example:1234");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "h.example:1234");
    assert_eq!(h["x-forwarded-port"], addr.port().to_string().as_str());
    assert_eq!(h["x-keep"], "kept");
    assert!(h.get("x-private").is_none());
    assert!(h.get("te").is_none());
    assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
    // The query string is forwarded untouched.
    assert_eq!(seen[0].uri.to_string(), "/p?q=1&r=%2F");
    gw.stop().await;
}

#[tokio::test]
async fn request_bodies_stream_through_intact() {
    let b = echo("b").await;
    let m = service("default", "b", &[b.addr]) + &ingress("default", "h", "portico", &[("", "/", "Prefix", "b")]);
    let gw = Gateway::start(&m).await;
    let body: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let r = send(
        gw.addr(0),
        http::Method::POST,
        "x",
        "/upload",
        &[],
        Bytes::from(body.clone()),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_bytes"], 2_000_000);
    assert_eq!(b.requests()[0].body, body);
    gw.stop().await;
}

#[tokio::test]
async fn requests_are_normalised_or_rejected() {
    let b = echo("b").await;
    let m = service("default", "b", &[b.addr])
        + &ingress(
            "default",
            "n",
            "portico",
            &[
                ("n.example", "/", "Prefix", "b"),
                ("n.example", "/admin", "Prefix", "b"),
            ],
        );
    let gw = Gateway::start(&m).await;
    let addr = gw.addr(0);
    for (path, forwarded) in [
        ("/a/./b", "/a/b"),
        ("//a///b", "/a/b"),
        ("/a/b/../c", "/a/c"),
        ("/%61dmin/x", "/admin/x"),
        ("/x/%2e%2e/admin", "/admin"),
        ("/caf%c3%a9", "/caf%C3%A9"),
    ] {
        let before = b.count();
        let r = get(addr, "n.example", path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(b.requests()[before].uri.path(), forwarded, "{path}");
    }
    let before = b.count();
    for req in [
        "GET /a%2Fb HTTP/1.1\r\nHost: n.example\r\n\r\n",
        "GET /a%5cb HTTP/1.1\r\nHost: n.example\r\n\r\n",
        "GET /a%00 HTTP/1.1\r\nHost: n.example\r\n\r\n",
        "GET /a\\b HTTP/1.1\r\nHost: n.example\r\n\r\n",
        "GET /../etc/passwd HTTP/1.1\r\nHost: n.example\r\n\r\n",
        "GET /%2e%2e/x HTTP/1.1\r\nHost: n.example\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: n.example\r\nHost: other.example\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: n.example:99999\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: n.example:x\r\n\r\n",
        "GET http://other.example/ HTTP/1.1\r\nHost: n.example\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: né.example\r\n\r\n",
    ] {
        let resp = raw(addr, req).await;
        let status = raw_status(&resp);
        assert!(status == 400, "{req:?} gave {resp:?}");
    }
    assert_eq!(b.count(), before, "a rejected request reached the backend");
    // Absolute-form that agrees with Host is fine; HTTP/1.0 without Host goes to host-less rules (none: 404).
    let resp = raw(
        addr,
        "GET http://N.example/x HTTP/1.1\r\nHost: n.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&resp), 200, "{resp}");
    let resp = raw(addr, "GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(raw_status(&resp), 404, "{resp}");
    gw.stop().await;
}

#[tokio::test]
async fn several_endpoints_share_the_load_and_a_dead_one_is_skipped() {
    let (x, y, z) = (echo("x").await, echo("y").await, echo("z").await);
    let m = service("default", "pool", &[x.addr, y.addr, z.addr])
        + &ingress("default", "lb", "portico", &[("", "/", "Prefix", "pool")]);
    let gw = Gateway::start(&m).await;
    for _ in 0..30 {
        assert_eq!(get(gw.addr(0), "lb", "/").await.status, 200);
    }
    assert_eq!((x.count(), y.count(), z.count()), (10, 10, 10));

    // One endpoint dies: bodiless requests retry on another endpoint; none fails.
    let dead = closed_port().await;
    gw.rewrite(
        &(service("default", "pool", &[x.addr, dead, z.addr])
            + &ingress("default", "lb", "portico", &[("", "/", "Prefix", "pool")])),
    )
    .await;
    for _ in 0..30 {
        let r = get(gw.addr(0), "lb", "/").await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let metrics = get(gw.running().admin_addr, "admin", "/metrics").await.text();
    let retries: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("portico_upstream_retries_total{set=\"default\"} "))
        .expect("retries metric")
        .parse()
        .unwrap();
    assert!(
        retries >= 5,
        "connection failures to the dead endpoint were retried: {retries}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn manifest_edits_apply_without_restart_or_failed_requests() {
    let (one, two) = (echo("one").await, echo("two").await);
    let mk = |svc: &str| {
        service("default", "one", &[one.addr])
            + &service("default", "two", &[two.addr])
            + &ingress("default", "app", "portico", &[("app.example", "/", "Prefix", svc)])
    };
    let gw = Gateway::start(&mk("one")).await;
    let addr = gw.addr(0);
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, failures, total) = (stop.clone(), failures.clone(), total.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = get(addr, "app.example", "/").await;
                total.fetch_add(1, Ordering::Relaxed);
                if r.status != 200 {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for i in 0..10 {
        gw.rewrite(&mk(if i % 2 == 0 { "two" } else { "one" })).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let r = get(addr, "app.example", "/").await;
    assert_eq!(r.backend().as_deref(), Some("one"));
    gw.rewrite(&mk("two")).await;
    assert_eq!(get(addr, "app.example", "/").await.backend().as_deref(), Some("two"));
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    assert!(total.load(Ordering::Relaxed) > 20);
    assert_eq!(failures.load(Ordering::Relaxed), 0, "requests failed during reloads");

    // A broken edit keeps the last good objects of that file serving.
    let generation = gw.generation();
    write_atomically(
        &gw.manifest_path(),
        "apiVersion: v1\nkind: Service\nmetadata: {name: one\n  broken: [",
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(get(addr, "app.example", "/").await.backend().as_deref(), Some("two"));
    let last = gw.running().shared.last_translation().unwrap();
    assert!(gw.generation() >= generation);
    assert!(
        last.diagnostics.iter().any(|d| d.to_string().contains("invalid YAML")),
        "{:?}",
        last.diagnostics
    );
    gw.stop().await;
}

#[tokio::test]
async fn listener_sets_serve_only_their_own_classes() {
    let (public, admin) = (echo("public").await, echo("admin").await);
    let config = r#"
listenerSets:
  - name: external
    ingressClasses: [portico-external]
    http: ["127.0.0.1:0"]
  - name: internal
    ingressClasses: [portico-internal]
    http: ["127.0.0.1:0"]
admin: { address: "127.0.0.1:0" }
"#;
    let m = service("apps", "public", &[public.addr])
        + &service("apps", "admin", &[admin.addr])
        + &ingress(
            "apps",
            "public",
            "portico-external",
            &[("app.example", "/", "Prefix", "public")],
        )
        + &ingress(
            "apps",
            "admin",
            "portico-internal",
            &[("argocd.example", "/", "Prefix", "admin")],
        );
    let gw = Gateway::start_with(config, &m).await;
    let (ext, int) = (gw.addr(0), gw.addr(1));
    assert_eq!(
        get(int, "argocd.example", "/").await.backend().as_deref(),
        Some("admin")
    );
    assert_eq!(get(ext, "app.example", "/").await.backend().as_deref(), Some("public"));
    // The internal host does not exist on the external listener, however it is asked for.
    assert_eq!(get(ext, "argocd.example", "/").await.status, 404);
    assert_eq!(get(int, "app.example", "/").await.status, 404);
    let resp = raw(
        ext,
        "GET http://argocd.example/ HTTP/1.1\r\nHost: argocd.example\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&resp), 404);
    let resp = raw(
        ext,
        "GET / HTTP/1.1\r\nHost: app.example\r\nX-Forwarded-Host: argocd.example\r\n\r\n",
    )
    .await;
    assert!(resp.contains("\"backend\": \"public\""), "{resp}");
    assert_eq!(admin.count(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn http2_prior_knowledge_on_cleartext() {
    use http_body_util::{BodyExt, Full};
    let b = echo("b").await;
    let m = service("default", "b", &[b.addr])
        + &ingress("default", "h2", "portico", &[("h2.example", "/", "Prefix", "b")]);
    let gw = Gateway::start(&m).await;
    // With :authority naming the host (as browsers send it), HTTP/2 routes by it.
    let (mut sender, conn) = {
        let stream = tokio::net::TcpStream::connect(gw.addr(0)).await.unwrap();
        hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap()
    };
    tokio::spawn(conn);
    for path in ["/a", "/b", "/c"] {
        let req = http::Request::get(format!("http://H2.example{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-backend"], "b");
    }
    // A Host header that disagrees with :authority is refused.
    let mut req = http::Request::get("http://h2.example/d")
        .body(Full::new(Bytes::new()))
        .unwrap();
    req.headers_mut()
        .insert("host", http::HeaderValue::from_static("other.example"));
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    assert_eq!(status, 400);
    let seen = b.requests();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].version, http::Version::HTTP_11);
    // The Host sent upstream is the authority as the client wrote it (routing used its normalised form).
    assert_eq!(seen[0].headers["host"], "H2.example");
    assert_eq!(seen[0].headers["x-forwarded-host"], "H2.example");
    gw.stop().await;
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    // A backend that answers after 500 ms.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow = l.local_addr().unwrap();
    let server = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                        Bytes::from_static(b"done"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let m = service("default", "slow", &[slow]) + &ingress("default", "s", "portico", &[("", "/", "Prefix", "slow")]);
    let gw = Gateway::start(&m).await;
    let addr = gw.addr(0);
    let inflight = tokio::spawn(async move { get(addr, "s", "/").await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let stopped = tokio::spawn(gw.stop());
    let r = inflight.await.unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "done"));
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .unwrap()
        .unwrap();
    // New connections are refused after shutdown.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    server.abort();
}

#[tokio::test]
async fn admin_health_and_readiness() {
    let gw = Gateway::start("").await;
    let admin = gw.running().admin_addr;
    assert_eq!(get(admin, "x", "/healthz").await.status, 200);
    let r = get(admin, "x", "/readyz").await;
    assert_eq!((r.status, r.text().as_str()), (200, "ready\n"));
    assert_eq!(get(admin, "x", "/nope").await.status, 404);
    gw.stop().await;
}

#[tokio::test]
async fn acme_http01_tokens_are_answered_before_routing_on_acme_sets_only() {
    let b = echo("b").await;
    let config = r#"
listenerSets:
  - name: public
    ingressClasses: [portico]
    http: ["127.0.0.1:0"]
    https: ["127.0.0.1:0"]
    acme: { directory: "https://127.0.0.1:1/dir" }
  - name: lan
    ingressClasses: [lan]
    http: ["127.0.0.1:0"]
admin: { address: "127.0.0.1:0" }
"#;
    let m = service("default", "b", &[b.addr])
        + "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: t, namespace: default}\nspec:\n  tls: [{hosts: [t.example], secretName: missing}]\n  rules: [{host: t.example, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: b, port: {number: 80}}}}]}}]\n";
    let gw = Gateway::start_with(config, &m).await;
    gw.running().challenges.insert("tok_EN-1", "tok_EN-1.thumbprint");
    let (public, lan) = (gw.addr(0), gw.addr(1));
    // Any Host (CAs send the order's name), even one that would be redirected to HTTPS.
    for host in ["t.example", "other.example"] {
        let r = get(public, host, "/.well-known/acme-challenge/tok_EN-1").await;
        assert_eq!((r.status, r.text().as_str()), (200, "tok_EN-1.thumbprint"), "{host}");
    }
    // Not a live token: routing as usual (here the TLS host's backend; the challenge path is never redirected).
    let r = get(public, "t.example", "/.well-known/acme-challenge/unknown").await;
    assert_eq!(r.backend().as_deref(), Some("b"));
    assert_eq!(
        get(public, "t.example", "/.well-known/acme-challenge/tok_EN-1/x")
            .await
            .backend()
            .as_deref(),
        Some("b")
    );
    // A set without ACME does not answer tokens.
    assert_eq!(
        get(lan, "t.example", "/.well-known/acme-challenge/tok_EN-1")
            .await
            .status,
        404
    );
    // Other paths of the TLS host redirect.
    assert_eq!(get(public, "t.example", "/").await.status, 308);
    gw.stop().await;
}

/// `shareHostsAcrossNamespaces`: one host, `/` from one namespace and `/api` from another, both served (as
/// ingress-nginx does); without the option the second namespace's rule is not served.
#[tokio::test]
async fn a_host_shared_across_namespaces_when_the_set_allows_it() {
    let (web, api) = (echo("web").await, echo("api").await);
    let mut m = service("frontend", "web", &[web.addr]);
    m += &service("backend", "api", &[api.addr]);
    m += &ingress("frontend", "web", "portico", &[("shop.example", "/", "Prefix", "web")]);
    m += &ingress(
        "backend",
        "api",
        "portico",
        &[("shop.example", "/api", "Prefix", "api")],
    );
    let shared = ONE_SET.replace(
        "    ingressClasses: [portico]\n",
        "    ingressClasses: [portico]\n    shareHostsAcrossNamespaces: true\n",
    );
    let gw = Gateway::start_with(&shared, &m).await;
    let a = gw.addr(0);
    assert_eq!(
        get(a, "shop.example", "/api/orders").await.backend().as_deref(),
        Some("api")
    );
    assert_eq!(get(a, "shop.example", "/cart").await.backend().as_deref(), Some("web"));
    gw.stop().await;

    // The default: the host is the namespace of its oldest Ingress (without timestamps: backend/api, by name);
    // the other namespace's rule is not served.
    let gw = Gateway::start(&m).await;
    let a = gw.addr(0);
    assert_eq!(
        get(a, "shop.example", "/api/orders").await.backend().as_deref(),
        Some("api")
    );
    assert_eq!(get(a, "shop.example", "/cart").await.status, 404);
    gw.stop().await;
}
