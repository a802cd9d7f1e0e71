//! Canaries end to end over loopback (docs/annotations.md, "Canaries"): a canary Ingress's backend takes requests
//! of its main Ingress's routes by header, by cookie, by weight and by affinity, in that order; the main route's
//! policy (allowlist, header edits, rewrite) applies whichever backend serves; metrics, the access log and
//! `/api/explain` say which one did.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use support::*;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// GET `path` of `host` with `headers`, on one kept-alive client (thousands of requests in a test).
async fn fetch(c: &HttpClient, addr: std::net::SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = http::Request::get(format!("http://{addr}{path}")).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = c.request(req.body(Full::new(Bytes::new())).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply { status, headers, body }
}

/// Which echo backend answered `headers` on `host`.
async fn served(c: &HttpClient, addr: std::net::SocketAddr, host: &str, headers: &[(&str, &str)]) -> String {
    let r = fetch(c, addr, host, "/", headers).await;
    assert_eq!(r.status, 200, "{host} {headers:?}: {}", r.text());
    r.backend().unwrap()
}

/// A canary Ingress `name` for `host`'s `/` (Prefix) sending to `svc`, with `annotations` besides `canary: true`.
fn canary(name: &str, host: &str, svc: &str, annotations: &[(&str, &str)]) -> String {
    let mut all = vec![("nginx.ingress.kubernetes.io/canary", "true")];
    all.extend_from_slice(annotations);
    annotated_ingress("default", name, host, svc, &all)
}

/// Backends `web` (main) and `v2` (canary) and their Services.
async fn backends() -> (portico::echo::EchoServer, portico::echo::EchoServer, String) {
    let (web, v2) = (echo("web").await, echo("v2").await);
    let m = service("default", "web", &[web.addr]) + &service("default", "web-v2", &[v2.addr]);
    (web, v2, m)
}

#[tokio::test]
async fn header_then_cookie_then_weight() {
    let (_web, _v2, mut m) = backends().await;
    // always/never by header and cookie, the weight taking the rest (here: all of it).
    m += &annotated_ingress("default", "a", "a.example", "web", &[]);
    m += &canary(
        "a-canary",
        "a.example",
        "web-v2",
        &[
            ("nginx.ingress.kubernetes.io/canary-by-header", "X-Canary"),
            ("nginx.ingress.kubernetes.io/canary-by-cookie", "canary"),
            ("nginx.ingress.kubernetes.io/canary-weight", "100"),
        ],
    );
    // An exact header value; always/never mean nothing then.
    m += &annotated_ingress("default", "b", "b.example", "web", &[]);
    m += &canary(
        "b-canary",
        "b.example",
        "web-v2",
        &[
            ("portico.dev/canary-by-header", "X-Version"),
            ("portico.dev/canary-by-header-value", "v2"),
        ],
    );
    // A pattern (matched anywhere in the value), and the value winning over it on another host.
    m += &annotated_ingress("default", "c", "c.example", "web", &[]);
    m += &canary(
        "c-canary",
        "c.example",
        "web-v2",
        &[
            ("nginx.ingress.kubernetes.io/canary-by-header", "User-Agent"),
            (
                "nginx.ingress.kubernetes.io/canary-by-header-pattern",
                "(?i)firefox/1[0-9]{2}",
            ),
        ],
    );
    m += &annotated_ingress("default", "d", "d.example", "web", &[]);
    m += &canary(
        "d-canary",
        "d.example",
        "web-v2",
        &[
            ("nginx.ingress.kubernetes.io/canary-by-header", "X-Version"),
            ("nginx.ingress.kubernetes.io/canary-by-header-value", "v2"),
            ("nginx.ingress.kubernetes.io/canary-by-header-pattern", ".*"),
        ],
    );
    let gw = Gateway::start(&m).await;
    let (a, c) = (gw.addr(0), client());

    // a: the header decides first, then the cookie, then the weight (100: the canary).
    for (headers, want) in [
        (vec![], "v2"),
        (vec![("x-canary", "always")], "v2"),
        (vec![("x-canary", "never")], "web"),
        (vec![("x-canary", "never"), ("cookie", "canary=always")], "web"),
        (vec![("x-canary", "always"), ("cookie", "canary=never")], "v2"),
        (vec![("x-canary", "Always")], "v2"),
        (vec![("x-canary", "maybe"), ("cookie", "canary=never")], "web"),
        (vec![("cookie", "other=1; canary=never")], "web"),
        (vec![("cookie", "canary=sometimes")], "v2"),
    ] {
        assert_eq!(
            served(&c, a, "a.example", &headers).await,
            want,
            "a.example {headers:?}"
        );
    }
    // b: only the exact value; the weight (0) takes the rest.
    for (headers, want) in [
        (vec![("x-version", "v2")], "v2"),
        (vec![("x-version", "V2")], "web"),
        (vec![("x-version", "always")], "web"),
        (vec![("x-version", "v2x")], "web"),
        (vec![], "web"),
    ] {
        assert_eq!(
            served(&c, a, "b.example", &headers).await,
            want,
            "b.example {headers:?}"
        );
    }
    // c: the pattern.
    for (ua, want) in [
        ("Mozilla/5.0 (X11; Linux) Gecko/20100101 Firefox/128.0", "v2"),
        ("Mozilla/5.0 (X11; Linux) Gecko/20100101 Firefox/99.0", "web"),
        ("curl/8.5.0", "web"),
    ] {
        assert_eq!(served(&c, a, "c.example", &[("user-agent", ua)]).await, want, "{ua}");
    }
    // d: the value wins over the pattern (which would match anything).
    assert_eq!(served(&c, a, "d.example", &[("x-version", "v1")]).await, "web");
    assert_eq!(served(&c, a, "d.example", &[("x-version", "v2")]).await, "v2");
    gw.stop().await;
}

#[tokio::test]
async fn weights_split_at_random_within_bounds() {
    let (web, v2, mut m) = backends().await;
    for (host, weight) in [("w20.example", "20"), ("w0.example", "0"), ("w100.example", "100")] {
        m += &annotated_ingress("default", host.split('.').next().unwrap(), host, "web", &[]);
        m += &canary(
            &format!("{}-canary", host.split('.').next().unwrap()),
            host,
            "web-v2",
            &[("nginx.ingress.kubernetes.io/canary-weight", weight)],
        );
    }
    // 1 in 1000.
    m += &annotated_ingress("default", "w1", "w1.example", "web", &[]);
    m += &canary(
        "w1-canary",
        "w1.example",
        "web-v2",
        &[
            ("portico.dev/canary-weight", "1"),
            ("portico.dev/canary-weight-total", "1000"),
        ],
    );
    let gw = Gateway::start(&m).await;
    let (a, c) = (gw.addr(0), client());

    // 2,000 requests at 20 %: 400 expected, standard deviation sqrt(2000 * 0.2 * 0.8) ~ 17.9; +-100 is more than
    // five of them (a false failure about once in two million runs).
    const N: usize = 2000;
    let mut to_canary = 0;
    for _ in 0..N {
        to_canary += usize::from(served(&c, a, "w20.example", &[]).await == "v2");
    }
    assert!(
        (300..=500).contains(&to_canary),
        "{to_canary} of {N} went to the canary"
    );
    assert_eq!(v2.count(), to_canary, "the echo backends agree");
    assert_eq!(web.count(), N - to_canary);

    for _ in 0..200 {
        assert_eq!(served(&c, a, "w0.example", &[]).await, "web", "weight 0 sends none");
        assert_eq!(served(&c, a, "w100.example", &[]).await, "v2", "weight 100 sends all");
    }
    // 1 in 1000 over 1,000 requests: almost always a few or none, never a share.
    let mut few = 0;
    for _ in 0..1000 {
        few += usize::from(served(&c, a, "w1.example", &[]).await == "v2");
    }
    assert!(few <= 8, "{few} of 1000 at weight 1/1000");
    gw.stop().await;
}

#[tokio::test]
async fn the_main_routes_policy_serves_canary_requests() {
    let (_web, v2, mut m) = backends().await;
    // Header edits and a rewrite on the main Ingress apply to what the canary receives; the canary's own
    // (ignored, with a warning) do not.
    m += r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: shop
  namespace: default
  annotations:
    portico.dev/request-headers-set: "X-Team: blue"
    portico.dev/response-headers-set: "X-Served-By: portico"
    nginx.ingress.kubernetes.io/rewrite-target: /$2
spec:
  ingressClassName: portico
  rules:
    - host: shop.example
      http:
        paths:
          - {path: "/api(/|$)(.*)", pathType: ImplementationSpecific, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: shop-canary
  namespace: default
  annotations:
    nginx.ingress.kubernetes.io/canary: "true"
    nginx.ingress.kubernetes.io/canary-by-header: X-Canary
    portico.dev/request-headers-set: "X-Team: red"
spec:
  ingressClassName: portico
  rules:
    - host: shop.example
      http:
        paths:
          - {path: "/api(/|$)(.*)", pathType: ImplementationSpecific, backend: {service: {name: web-v2, port: {number: 80}}}}
"#;
    // An allowlist on the main Ingress keeps out canary requests too.
    m += &annotated_ingress(
        "default",
        "private",
        "private.example",
        "web",
        &[("portico.dev/allow-source-ranges", "10.0.0.0/8")],
    );
    m += &canary(
        "private-canary",
        "private.example",
        "web-v2",
        &[
            ("nginx.ingress.kubernetes.io/canary-by-header", "X-Canary"),
            ("nginx.ingress.kubernetes.io/canary-weight", "100"),
        ],
    );
    let gw = Gateway::start(&m).await;
    let (a, c) = (gw.addr(0), client());

    let r = fetch(&c, a, "shop.example", "/api/orders?id=7", &[("x-canary", "always")]).await;
    assert_eq!(r.backend().as_deref(), Some("v2"));
    let seen = r.json();
    assert_eq!(seen["uri"], "/orders?id=7", "the main Ingress's rewrite");
    assert_eq!(
        seen["headers"]["x-team"], "blue",
        "the main Ingress's header edit, not the canary's"
    );
    assert_eq!(r.headers["x-served-by"], "portico");
    let r = fetch(&c, a, "shop.example", "/api/orders", &[]).await;
    assert_eq!(
        (r.backend().as_deref(), r.json()["headers"]["x-team"].as_str()),
        (Some("web"), Some("blue"))
    );

    let before = v2.count();
    for headers in [vec![], vec![("x-canary", "always")]] {
        let r = fetch(&c, a, "private.example", "/", &headers).await;
        assert_eq!(r.status, 403, "{headers:?}");
    }
    assert_eq!(v2.count(), before, "nothing reached the canary past the allowlist");

    let diags = get(gw.running().admin_addr, "admin", "/api/diagnostics").await.json();
    let warned = diags["diagnostics"].as_array().unwrap().iter().any(|d| {
        d["severity"] == "warning"
            && d["subject"] == "Ingress default/shop-canary"
            && d["reason"]
                .as_str()
                .unwrap()
                .contains("portico.dev/request-headers-set is ignored on a canary")
    });
    assert!(warned, "{diags}");
    gw.stop().await;
}

#[tokio::test]
async fn an_access_annotation_disables_the_canary_and_the_main_route_keeps_all_traffic() {
    let (_web, v2, mut m) = backends().await;
    m += &annotated_ingress("default", "shop", "shop.example", "web", &[]);
    m += &canary(
        "shop-canary",
        "shop.example",
        "web-v2",
        &[
            ("nginx.ingress.kubernetes.io/canary-weight", "100"),
            ("nginx.ingress.kubernetes.io/whitelist-source-range", "127.0.0.1/32"),
        ],
    );
    let gw = Gateway::start(&m).await;
    let (a, c) = (gw.addr(0), client());
    for _ in 0..20 {
        assert_eq!(served(&c, a, "shop.example", &[]).await, "web");
    }
    assert_eq!(v2.count(), 0);
    // Fixed: the canary takes its share.
    let fixed = m.replace(
        "    nginx.ingress.kubernetes.io/whitelist-source-range: \"127.0.0.1/32\"\n",
        "",
    );
    assert_ne!(fixed, m);
    gw.rewrite(&fixed).await;
    assert_eq!(served(&c, a, "shop.example", &[]).await, "v2");
    gw.stop().await;
}

#[tokio::test]
async fn affinity_keeps_a_client_on_its_side_unless_legacy() {
    let (web, v2, _) = backends().await;
    let web_b = echo("web").await;
    let v2_b = echo("v2").await;
    // Two endpoints per side, cookie affinity on both (each Ingress names its own cookie), half the traffic to the
    // canary: a client keeps its side and its endpoint.
    let mut m =
        service("default", "web", &[web.addr, web_b.addr]) + &service("default", "web-v2", &[v2.addr, v2_b.addr]);
    for (host, behavior) in [("sticky.example", "sticky"), ("legacy.example", "legacy")] {
        let name = host.split('.').next().unwrap();
        m += &annotated_ingress(
            "default",
            name,
            host,
            "web",
            &[
                ("nginx.ingress.kubernetes.io/affinity", "cookie"),
                ("nginx.ingress.kubernetes.io/session-cookie-name", "main_aff"),
            ],
        );
        m += &canary(
            &format!("{name}-canary"),
            host,
            "web-v2",
            &[
                ("nginx.ingress.kubernetes.io/canary-weight", "50"),
                ("nginx.ingress.kubernetes.io/canary-by-header", "X-Canary"),
                ("nginx.ingress.kubernetes.io/affinity", "cookie"),
                ("nginx.ingress.kubernetes.io/session-cookie-name", "canary_aff"),
                ("nginx.ingress.kubernetes.io/affinity-canary-behavior", behavior),
            ],
        );
    }
    let gw = Gateway::start(&m).await;
    let (a, c) = (gw.addr(0), client());

    // Sticky: whichever side a new client lands on, its cookie keeps it there (and on the same endpoint).
    let mut sides = std::collections::HashSet::new();
    for _ in 0..40 {
        let first = fetch(&c, a, "sticky.example", "/", &[]).await;
        let side = first.backend().unwrap();
        let set_cookie = first.headers["set-cookie"].to_str().unwrap().to_string();
        let want = if side == "v2" { "canary_aff=" } else { "main_aff=" };
        assert!(set_cookie.starts_with(want), "{side}: {set_cookie}");
        let cookie = set_cookie.split(';').next().unwrap().to_string();
        // No new cookie: the same endpoint served (its cookie is still right).
        for _ in 0..10 {
            let r = fetch(&c, a, "sticky.example", "/", &[("cookie", &cookie)]).await;
            assert_eq!(r.backend().unwrap(), side, "{cookie}");
            assert!(r.headers.get("set-cookie").is_none(), "the cookie is kept: {cookie}");
        }
        sides.insert(side);
        if sides.len() == 2 {
            break;
        }
    }
    assert_eq!(sides.len(), 2, "both sides served new clients");
    // The header rule decides before stickiness: a client held on the main backend by its cookie is sent to the
    // canary by `always`.
    let main_cookie = loop {
        let r = fetch(&c, a, "sticky.example", "/", &[]).await;
        if r.backend().unwrap() == "web" {
            break r.headers["set-cookie"]
                .to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_string();
        }
    };
    let held = [("cookie", main_cookie.as_str()), ("x-canary", "always")];
    assert_eq!(served(&c, a, "sticky.example", &held).await, "v2");
    assert_eq!(served(&c, a, "sticky.example", &held[..1]).await, "web");

    // Legacy: the weight decides every request, cookie or not.
    let first = fetch(&c, a, "legacy.example", "/", &[("x-none", "1")]).await;
    let cookie = first.headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        seen.insert(served(&c, a, "legacy.example", &[("cookie", &cookie)]).await);
    }
    assert_eq!(seen.len(), 2, "legacy: both sides served a client holding {cookie}");
    gw.stop().await;
}

#[tokio::test]
async fn metrics_access_log_and_explain_name_the_canary() {
    let (_web, _v2, mut m) = backends().await;
    m += &annotated_ingress("default", "shop", "shop.example", "web", &[]);
    m += &canary(
        "shop-canary",
        "shop.example",
        "web-v2",
        &[("nginx.ingress.kubernetes.io/canary-by-header", "X-Canary")],
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.yaml"), &m).unwrap();
    let log_path = dir.path().join("access.log");
    let running = portico::app::start_with(
        portico::config::Config::from_yaml(ONE_SET).unwrap(),
        portico::app::Source::Manifests {
            dir: dir.path().to_path_buf(),
            poll_interval: Duration::from_millis(50),
        },
        portico::app::Extras {
            access_log: portico::accesslog::Settings {
                target: portico::accesslog::Target::File(log_path.clone()),
                sample: 1,
            },
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (a, admin, c) = (running.http_addrs[0][0], running.admin_addr, client());
    assert_eq!(served(&c, a, "shop.example", &[("x-canary", "always")]).await, "v2");
    assert_eq!(served(&c, a, "shop.example", &[("x-canary", "always")]).await, "v2");
    assert_eq!(served(&c, a, "shop.example", &[]).await, "web");

    let text = get(admin, "admin", "/metrics").await.text();
    let sample = |service: &str| {
        let line = format!(
            "portico_requests_total{{set=\"default\",ingress=\"default/shop\",service=\"{service}\",class=\"2xx\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    assert_eq!(sample("default/web-v2:80"), Some(2), "{text}");
    assert_eq!(sample("default/web:80"), Some(1), "{text}");

    let mut lines = Vec::new();
    for _ in 0..300 {
        lines = std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect();
        if lines.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(lines.len(), 3);
    assert_eq!(
        (&lines[0]["ingress"], &lines[0]["service"], &lines[0]["canary"]),
        (
            &"default/shop".into(),
            &"default/web-v2:80".into(),
            &"default/shop-canary".into()
        )
    );
    assert_eq!(lines[2]["service"], "default/web:80");
    assert!(lines[2].get("canary").is_none(), "{}", lines[2]);

    let explain = get(admin, "admin", "/api/explain?host=shop.example&path=/x")
        .await
        .json();
    assert_eq!(explain["backend"]["id"], "default/web:80");
    assert_eq!(explain["canary"]["ingress"], "default/shop-canary");
    assert_eq!(explain["canary"]["backend"]["id"], "default/web-v2:80");
    assert!(explain["reason"]
        .as_str()
        .unwrap()
        .contains("canary Ingress default/shop-canary"));
    let routes = get(admin, "admin", "/api/routes").await.json();
    let path = &routes["sets"][0]["hosts"][0]["paths"][0];
    assert_eq!(path["canary"]["ingress"], "default/shop-canary");
    assert_eq!(path["canary"]["rules"], "weight=0 header=x-canary");
    running.shutdown().await;
}
