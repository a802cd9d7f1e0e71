//! The admin listener: health (`/healthz`, `/readyz`), Prometheus metrics (`/metrics`), a read-only JSON API
//! over the published configuration (`/api/*`, see [`api`]) and a dashboard (`/`) that renders that API in the
//! browser. Nothing here is on the request path: handlers read the last published compilation and snapshot.
//!
//! ```text
//! curl http://127.0.0.1:9090/metrics
//! curl http://127.0.0.1:9090/api/routes
//! curl 'http://127.0.0.1:9090/api/explain?set=default&host=a.example&path=/x'
//! ```

pub mod api;
mod process;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::publish::Shared;

const DASHBOARD_HTML: &str = include_str!("../../assets/dashboard.html");
const DASHBOARD_JS: &str = include_str!("../../assets/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("../../assets/dashboard.css");

/// What the admin listener serves from: the shared state and the addresses each listener set bound.
pub struct Admin {
    pub shared: Arc<Shared>,
    pub sets: Vec<SetAddrs>,
    /// This listener serves the JSON API and the dashboard (else health and metrics only).
    pub api: bool,
    /// When the admin listener was made (the dashboard's uptime).
    pub started: std::time::Instant,
}

/// A listener set's name and bound addresses.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SetAddrs {
    pub name: String,
    pub http: Vec<SocketAddr>,
    pub https: Vec<SocketAddr>,
}

impl Admin {
    pub fn new(shared: Arc<Shared>, names: &[String], http: &[Vec<SocketAddr>], https: &[Vec<SocketAddr>]) -> Self {
        let sets = names
            .iter()
            .enumerate()
            .map(|(i, name)| SetAddrs {
                name: name.clone(),
                http: http.get(i).cloned().unwrap_or_default(),
                https: https.get(i).cloned().unwrap_or_default(),
            })
            .collect();
        Self {
            shared,
            sets,
            api: true,
            started: std::time::Instant::now(),
        }
    }
}

type Resp = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn text(status: StatusCode, body: &'static str) -> Resp {
    reply(status, "text/plain; charset=utf-8", body)
}

/// A JSON answer (pretty-printed: it is read by people as often as by programs).
pub(crate) fn json(status: StatusCode, v: &serde_json::Value) -> Resp {
    let body = serde_json::to_vec_pretty(v).unwrap_or_default();
    reply(status, "application/json", body)
}

fn route(admin: &Admin, req: &Request<Incoming>) -> Resp {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    }
    let shared = &admin.shared;
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if shared.is_ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no routing table published yet\n",
        ),
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            shared.metrics.render()
                + &{
                    // HTTP and layer-4 backends (ids of the latter are prefixed: passthrough:, tcp/).
                    let snap = shared.snapshot.load();
                    let tcp = shared.metrics.l4.backends();
                    crate::metrics::render_backends(snap.backends().chain(snap.l4.backends()).chain(tcp.iter()))
                }
                + &shared
                    .acme
                    .get()
                    .map(|a| crate::metrics::render_acme(&a.status()))
                    .unwrap_or_default()
                + &{
                    let mut p = String::new();
                    process::render(&mut p);
                    p
                },
        ),
        path if !admin.api
            && (path.starts_with("/api/")
                || path == "/"
                || path.starts_with("/dashboard")
                || path == "/index.html") =>
        {
            text(
                StatusCode::NOT_FOUND,
                "not found: the API and dashboard are on admin.apiAddress\n",
            )
        }
        "/api/routes" => json(StatusCode::OK, &api::routes(admin)),
        "/api/certificates" => json(StatusCode::OK, &api::certificates(admin)),
        "/api/diagnostics" => json(StatusCode::OK, &api::diagnostics(admin)),
        "/api/overview" => json(StatusCode::OK, &api::overview(admin)),
        "/api/explain" => api::explain(admin, req.uri().query().unwrap_or("")),
        "/" | "/index.html" => reply(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD_HTML),
        "/dashboard.js" => reply(StatusCode::OK, "text/javascript; charset=utf-8", DASHBOARD_JS),
        "/dashboard.css" => reply(StatusCode::OK, "text/css; charset=utf-8", DASHBOARD_CSS),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

pub async fn serve(listener: TcpListener, admin: Admin, mut shutdown: watch::Receiver<bool>) {
    let admin = Arc::new(admin);
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let resp = route(&admin, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
