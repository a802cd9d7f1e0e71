//! Custom error pages end to end over loopback: `custom-http-errors` + `default-backend` (both names), the
//! listener set's `errorPages`, the gateway's own 502/503 replaced, codes not in the list untouched, an error
//! backend that is down (the original response is served), and a missing error Service (the Ingress is not
//! served). The error backend is the echo server, which answers with the headers it received.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::Method;
use http_body_util::Full;
use support::*;

/// An application that answers `/status/NNN` with status NNN (body `app NNN`), anything else with 200.
async fn app() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let code = req
                        .uri()
                        .path()
                        .strip_prefix("/status/")
                        .and_then(|c| c.parse::<u16>().ok())
                        .unwrap_or(200);
                    let mut resp = http::Response::new(Full::new(Bytes::from(format!("app {code}"))));
                    *resp.status_mut() = http::StatusCode::from_u16(code).unwrap();
                    resp.headers_mut()
                        .insert("x-app", http::HeaderValue::from_static("yes"));
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, task)
}

fn header<'a>(r: &'a Reply, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

/// What the error backend (echo) received, from the page it answered with.
fn seen(r: &Reply, name: &str) -> Option<String> {
    r.json()["headers"][name].as_str().map(str::to_string)
}

#[tokio::test]
async fn listed_codes_get_the_error_backends_page_with_the_original_status() {
    let (app_addr, _app) = app().await;
    let errors = echo("errors").await;
    let mut m = service("default", "app", &[app_addr]);
    m.push_str(&service("default", "errors", &[errors.addr]));
    m.push_str(&annotated_ingress(
        "default",
        "web",
        "web.example",
        "app",
        &[
            ("nginx.ingress.kubernetes.io/custom-http-errors", "404,503"),
            ("nginx.ingress.kubernetes.io/default-backend", "errors"),
            ("portico.dev/response-headers-set", "X-Route: web"),
        ],
    ));
    m.push_str(&annotated_ingress(
        "default",
        "typed",
        "typed.example",
        "app",
        &[
            ("portico.dev/custom-http-errors", "418"),
            ("portico.dev/default-backend", "errors:80"),
        ],
    ));
    let gw = Gateway::start(&m).await;
    let addr = gw.addr(0);

    // A listed code from the backend: the error backend's page, the original status, ingress-nginx's headers.
    let r = send(
        addr,
        Method::GET,
        "web.example",
        "/status/404?q=1",
        &[("accept", "application/json"), ("x-request-id", "req-7")],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.backend().as_deref(), Some("errors"), "{}", r.text());
    assert_eq!(header(&r, "x-app"), None, "nothing of the original response is kept");
    assert_eq!(
        header(&r, "x-route"),
        Some("web"),
        "the route's response edits apply to the page"
    );
    assert_eq!(r.json()["method"], "GET");
    assert_eq!(r.json()["uri"], "/");
    for (name, want) in [
        ("x-code", "404"),
        ("x-format", "application/json"),
        ("x-original-uri", "/status/404?q=1"),
        ("x-namespace", "default"),
        ("x-ingress-name", "web"),
        ("x-service-name", "app"),
        ("x-service-port", "80"),
        ("x-request-id", "req-7"),
        ("host", "web.example"),
    ] {
        assert_eq!(seen(&r, name).as_deref(), Some(want), "{name}: {}", r.text());
    }
    assert_eq!(errors.count(), 1);

    // Codes not in the list, and successes, are the backend's own; the error backend is not asked.
    for (path, status) in [("/status/500", 500), ("/status/418", 418), ("/", 200)] {
        let r = get(addr, "web.example", path).await;
        assert_eq!(r.status, status, "{path}");
        assert_eq!(header(&r, "x-app"), Some("yes"), "{path}");
        assert_eq!(r.text(), format!("app {status}"));
    }
    assert_eq!(errors.count(), 1);

    // The portico.dev names, with an explicit port; no Accept, no request id: those headers are not sent.
    let r = get(addr, "typed.example", "/status/418").await;
    assert_eq!(r.status, 418);
    assert_eq!(seen(&r, "x-code").as_deref(), Some("418"));
    assert_eq!(seen(&r, "x-ingress-name").as_deref(), Some("typed"));
    assert_eq!(seen(&r, "x-request-id"), None);
    assert_eq!(get(addr, "typed.example", "/status/404").await.text(), "app 404");
    gw.stop().await;
}

#[tokio::test]
async fn the_gateways_own_errors_get_the_page_too() {
    let errors = echo("errors").await;
    let down = closed_port().await;
    let mut m = service("default", "errors", &[errors.addr]);
    m.push_str(&service("default", "empty", &[]));
    m.push_str(&service("default", "down", &[down]));
    for (name, svc) in [("empty", "empty"), ("down", "down")] {
        m.push_str(&annotated_ingress(
            "default",
            name,
            &format!("{name}.example"),
            svc,
            &[
                ("portico.dev/custom-http-errors", "502,503"),
                ("portico.dev/default-backend", "errors"),
            ],
        ));
    }
    // default-backend alone: the gateway's own 503 (no ready endpoint), as ingress-nginx uses it.
    m.push_str(&annotated_ingress(
        "default",
        "alone",
        "alone.example",
        "empty",
        &[("nginx.ingress.kubernetes.io/default-backend", "errors")],
    ));
    let gw = Gateway::start(&m).await;
    let addr = gw.addr(0);

    // No ready endpoint: 503, the page.
    let r = get(addr, "empty.example", "/x").await;
    assert_eq!(r.status, 503);
    assert_eq!(seen(&r, "x-code").as_deref(), Some("503"), "{}", r.text());
    assert_eq!(seen(&r, "x-service-name").as_deref(), Some("empty"));
    // The backend refuses connections: 502, the page.
    let r = get(addr, "down.example", "/y").await;
    assert_eq!(r.status, 502);
    assert_eq!(seen(&r, "x-code").as_deref(), Some("502"), "{}", r.text());
    assert_eq!(seen(&r, "x-original-uri").as_deref(), Some("/y"));
    let r = get(addr, "alone.example", "/").await;
    assert_eq!(r.status, 503);
    assert_eq!(seen(&r, "x-code").as_deref(), Some("503"), "{}", r.text());
    gw.stop().await;
}

#[tokio::test]
async fn an_error_backend_that_is_down_leaves_the_original_response() {
    let (app_addr, _app) = app().await;
    let down = closed_port().await;
    let mut m = service("default", "app", &[app_addr]);
    m.push_str(&service("default", "errors-down", &[down]));
    m.push_str(&service("default", "errors-empty", &[]));
    for (name, errors) in [("refused", "errors-down"), ("empty", "errors-empty")] {
        m.push_str(&annotated_ingress(
            "default",
            name,
            &format!("{name}.example"),
            "app",
            &[
                ("portico.dev/custom-http-errors", "404"),
                ("portico.dev/default-backend", errors),
            ],
        ));
    }
    let gw = Gateway::start(&m).await;
    let addr = gw.addr(0);
    for host in ["refused.example", "empty.example"] {
        let r = get(addr, host, "/status/404").await;
        assert_eq!(r.status, 404, "{host}");
        assert_eq!(r.text(), "app 404", "{host}");
        assert_eq!(header(&r, "x-app"), Some("yes"), "{host}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_missing_error_service_disables_the_ingress() {
    let (app_addr, _app) = app().await;
    let mut m = service("default", "app", &[app_addr]);
    m.push_str(&annotated_ingress(
        "default",
        "missing",
        "missing.example",
        "app",
        &[
            ("nginx.ingress.kubernetes.io/custom-http-errors", "404"),
            ("nginx.ingress.kubernetes.io/default-backend", "no-such-errors"),
        ],
    ));
    m.push_str(&annotated_ingress(
        "default",
        "nobackend",
        "nobackend.example",
        "app",
        &[("portico.dev/custom-http-errors", "404")],
    ));
    m.push_str(&annotated_ingress("default", "plain", "plain.example", "app", &[]));
    let gw = Gateway::start(&m).await;
    let addr = gw.addr(0);
    assert_eq!(get(addr, "missing.example", "/").await.status, 404);
    assert!(get(addr, "missing.example", "/").await.text().contains("no route"));
    assert!(get(addr, "nobackend.example", "/").await.text().contains("no route"));
    assert_eq!(get(addr, "plain.example", "/").await.status, 200);
    let diagnostics = gw.running().shared.last_translation().unwrap().describe_diagnostics();
    assert!(
        diagnostics.contains(
            "Ingress default/missing: annotation portico.dev/default-backend: Service default/no-such-errors not found; Ingress not served"
        ),
        "{diagnostics}"
    );
    assert!(
        diagnostics
            .contains("Ingress default/nobackend: annotation portico.dev/custom-http-errors: no default-backend"),
        "{diagnostics}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn the_listener_sets_error_backend_serves_ingresses_without_their_own() {
    let (app_addr, _app) = app().await;
    let errors = echo("set-errors").await;
    let own = echo("own-errors").await;
    let mut m = service("default", "app", &[app_addr]);
    m.push_str(&service("pages", "errors", &[errors.addr]));
    m.push_str(&service("default", "own", &[own.addr]));
    m.push_str(&annotated_ingress("default", "plain", "plain.example", "app", &[]));
    // Its own codes, the set's backend.
    m.push_str(&annotated_ingress(
        "default",
        "codes",
        "codes.example",
        "app",
        &[("portico.dev/custom-http-errors", "500")],
    ));
    // Its own codes and backend.
    m.push_str(&annotated_ingress(
        "default",
        "own",
        "own.example",
        "app",
        &[
            ("portico.dev/custom-http-errors", "404"),
            ("portico.dev/default-backend", "own"),
        ],
    ));
    let config = r#"
listenerSets:
  - name: default
    ingressClasses: [portico]
    http: ["127.0.0.1:0"]
    errorPages:
      service: pages/errors
      codes: [404, 503]
admin: { address: "127.0.0.1:0" }
"#;
    let gw = Gateway::start_with(config, &m).await;
    let addr = gw.addr(0);

    let r = get(addr, "plain.example", "/status/404").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.backend().as_deref(), Some("set-errors"), "{}", r.text());
    assert_eq!(seen(&r, "x-ingress-name").as_deref(), Some("plain"));
    assert_eq!(seen(&r, "x-namespace").as_deref(), Some("default"));
    assert_eq!(get(addr, "plain.example", "/status/500").await.text(), "app 500");

    assert_eq!(get(addr, "codes.example", "/status/404").await.text(), "app 404");
    let r = get(addr, "codes.example", "/status/500").await;
    assert_eq!((r.status, r.backend().as_deref()), (500, Some("set-errors")));

    let r = get(addr, "own.example", "/status/404").await;
    assert_eq!((r.status, r.backend().as_deref()), (404, Some("own-errors")));
    gw.stop().await;
}

#[tokio::test]
async fn a_bad_error_pages_option_is_a_configuration_error() {
    for (bad, want) in [
        ("{service: errors, codes: [404]}", "errorPages.service"),
        ("{service: pages/errors, codes: [200]}", "errorPages.codes"),
        ("{service: pages/errors, codes: []}", "errorPages.codes"),
    ] {
        let config = format!(
            "listenerSets:\n  - name: default\n    ingressClasses: [portico]\n    http: [\"127.0.0.1:0\"]\n    errorPages: {bad}\n"
        );
        let e = portico::config::Config::from_yaml(&config).unwrap_err().to_string();
        assert!(e.contains(want), "{bad}: {e}");
    }
}
