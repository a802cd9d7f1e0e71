//! HTTP layer: routing Kubernetes API paths onto the [`Store`], watch streaming, and `/__control/` endpoints.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::resources::ResourceDef;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{delete_status, event_line, FailRule, RecordedRequest, Store, WatchRequest, WatchStart};
use crate::util::{reason_for, ApiError};

/// Server tuning.
#[derive(Debug, Clone)]
pub struct Options {
    /// Resources served. Defaults to [`crate::BUILTIN_RESOURCES`].
    pub resources: Vec<ResourceDef>,
    /// How often a watch with `allowWatchBookmarks=true` gets a BOOKMARK event.
    pub bookmark_interval: Duration,
    /// Number of changes kept for watch resumption before the oldest are compacted away.
    pub max_history: usize,
    /// Accept server-side apply (`application/apply-patch+yaml`) as an approximation: the applied
    /// configuration is merge-patched onto the object (created if missing); fields dropped from a later
    /// apply are NOT removed and there is no field ownership. Off by default: apply gets `415`.
    pub apply_as_merge: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            resources: crate::resources::BUILTIN_RESOURCES.to_vec(),
            bookmark_interval: Duration::from_secs(1),
            max_history: 10_000,
            apply_as_merge: false,
        }
    }
}

/// State shared by the server tasks and the handle.
pub(crate) struct Shared {
    pub store: Mutex<Store>,
    pub opts: Options,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Response body: a complete buffer or a stream of chunks (watch).
pub enum ResBody {
    /// Whole body at once.
    Full(Option<Bytes>),
    /// Chunks until the sender is dropped.
    Chan(mpsc::UnboundedReceiver<Bytes>),
}

impl Body for ResBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ResBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ResBody::Chan(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ResBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ResBody::Full(None) => SizeHint::with_exact(0),
            ResBody::Chan(_) => SizeHint::default(),
        }
    }
}

type Resp = Response<ResBody>;

fn json_response(code: u16, v: &Value) -> Resp {
    let body = serde_json::to_vec(v).unwrap_or_default();
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(ResBody::Full(Some(Bytes::from(body))))
        .unwrap_or_else(|_| Response::new(ResBody::Full(None)))
}

fn error_response(e: &ApiError) -> Resp {
    json_response(e.code, &e.to_status())
}

fn text_response(code: u16, text: &'static str) -> Resp {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::OK))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(ResBody::Full(Some(Bytes::from_static(text.as_bytes()))))
        .unwrap_or_else(|_| Response::new(ResBody::Full(None)))
}

/// Accept connections until `shutdown` fires.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, mut shutdown: oneshot::Receiver<()>) {
    // Closed on shutdown: every open connection ends with it, as when a real API server stops.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = shared.clone();
                let mut stop = stop_rx.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(shared, req).await) }
                    });
                    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        r = conn => if let Err(e) = r {
                            tracing::debug!("fake-apiserver connection ended: {e}");
                        },
                        _ = stop.wait_for(|s| *s) => {}
                    }
                });
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    shared.lock().drop_watches();
}

struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: &str) -> Self {
        Self(form_urlencoded::parse(q.as_bytes()).into_owned().collect())
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }
    fn flag(&self, k: &str) -> Option<bool> {
        self.get(k).map(|v| v == "true" || v == "1")
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Resp {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error_response(&ApiError::bad_request(format!("reading request body: {e}"))),
    };
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);

    if let Some(rest) = path.strip_prefix("/__control/") {
        return control(&shared, &parts.method, rest, &Query::parse(&query), &body);
    }

    // Record, then maybe fail on purpose.
    let injected = {
        let mut st = shared.lock();
        let injected = if st.fail.remaining > 0 {
            st.fail.remaining -= 1;
            Some((st.fail.code, st.fail.retry_after))
        } else {
            None
        };
        st.requests.push(RecordedRequest {
            method: parts.method.to_string(),
            path: path.clone(),
            query: query.clone(),
            content_type: content_type.clone(),
            body: String::from_utf8_lossy(&body).into_owned(),
            injected_failure: injected.map(|(c, _)| c),
        });
        injected
    };
    if let Some((code, retry_after)) = injected {
        let mut resp = error_response(&ApiError::new(
            code,
            format!("injected failure ({code} {})", reason_for(code)),
        ));
        if let Some(secs) = retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        return resp;
    }

    match route(
        &shared,
        &parts.method,
        &path,
        &Query::parse(&query),
        content_type.as_deref(),
        &body,
    ) {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

/// Where a request points.
enum Target<'a> {
    Collection,
    Object(&'a str),
    Status(&'a str),
}

fn route(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    q: &Query,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Resp, ApiError> {
    match path {
        "/version" => {
            return Ok(json_response(
                200,
                &json!({
                    "major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "gitCommit": "fake",
                    "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24",
                    "compiler": "gc", "platform": "linux/amd64",
                }),
            ))
        }
        "/healthz" | "/livez" | "/readyz" => return Ok(text_response(200, "ok")),
        "/api" => {
            return Ok(json_response(
                200,
                &json!({"kind": "APIVersions", "versions": ["v1"],
                        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
            ))
        }
        "/apis" => return Ok(json_response(200, &api_group_list(&shared.opts.resources))),
        _ => {}
    }
    let not_found = || ApiError::new(404, "the server could not find the requested resource").with_reason("NotFound");
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(not_found()),
    };
    if rest.is_empty() {
        let list = api_resource_list(&shared.opts.resources, group, version).ok_or_else(not_found)?;
        return Ok(json_response(200, &list));
    }
    let st = shared.lock();
    let (res, ns, tail) = match rest {
        ["namespaces", ns, plural, tail @ ..] => {
            let res = st.res_index_by_path(group, version, plural).ok_or_else(not_found)?;
            if !st.def(res).namespaced {
                return Err(not_found());
            }
            (res, Some(*ns), tail)
        }
        [plural, tail @ ..] => {
            let res = st.res_index_by_path(group, version, plural).ok_or_else(not_found)?;
            if st.def(res).namespaced && !tail.is_empty() {
                return Err(not_found());
            }
            (res, None, tail)
        }
        [] => return Err(not_found()),
    };
    let def = *st.def(res);
    let target = match tail {
        [] => Target::Collection,
        [name] => Target::Object(name),
        [name, "status"] if def.has_status => Target::Status(name),
        _ => return Err(not_found()),
    };
    drop(st);
    let ns_str = ns.unwrap_or("");
    let parse_json = |b: &[u8]| -> Result<Value, ApiError> {
        serde_json::from_slice(b).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    };

    match (target, method.clone()) {
        (Target::Collection, Method::GET) => {
            let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or("")).map_err(ApiError::bad_request)?;
            let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or("")).map_err(ApiError::bad_request)?;
            if q.flag("watch") == Some(true) {
                return start_watch(shared, res, ns, labels, fields, q);
            }
            let (items, rv) = shared.lock().list(res, ns, &labels, &fields);
            Ok(json_response(
                200,
                &json!({
                    "kind": format!("{}List", def.kind),
                    "apiVersion": def.api_version(),
                    "metadata": {"resourceVersion": rv.to_string()},
                    "items": items,
                }),
            ))
        }
        (Target::Collection, Method::POST) => {
            if def.namespaced && ns.is_none() {
                return Err(ApiError::new(
                    405,
                    "the server does not allow this method on the requested resource",
                ));
            }
            let obj = parse_json(body)?;
            let created = shared.lock().create(res, ns_str, obj, false)?;
            Ok(json_response(201, &created))
        }
        (Target::Object(name) | Target::Status(name), Method::GET) => {
            Ok(json_response(200, &shared.lock().get(res, ns_str, name)?))
        }
        (Target::Object(name), Method::PUT) => {
            let obj = parse_json(body)?;
            Ok(json_response(
                200,
                &shared.lock().update(res, ns_str, name, obj, false, false)?,
            ))
        }
        (Target::Status(name), Method::PUT) => {
            let obj = parse_json(body)?;
            Ok(json_response(
                200,
                &shared.lock().update(res, ns_str, name, obj, true, false)?,
            ))
        }
        (t @ (Target::Object(_) | Target::Status(_)), Method::PATCH) => {
            let (name, status_only) = match t {
                Target::Object(n) => (n, false),
                Target::Status(n) => (n, true),
                Target::Collection => unreachable!(),
            };
            let ct = content_type.unwrap_or("");
            Ok(json_response(
                200,
                &shared.lock().patch(res, ns_str, name, ct, body, status_only)?,
            ))
        }
        (Target::Object(name), Method::DELETE) => {
            let opts = if body.is_empty() { None } else { Some(parse_json(body)?) };
            let gone = shared.lock().delete(res, ns_str, name, opts.as_ref())?;
            Ok(json_response(200, &delete_status(&def, &gone)))
        }
        _ => Err(ApiError::new(
            405,
            "the server does not allow this method on the requested resource",
        )),
    }
}

fn start_watch(
    shared: &Arc<Shared>,
    res: usize,
    ns: Option<&str>,
    labels: LabelSelector,
    fields: FieldSelector,
    q: &Query,
) -> Result<Resp, ApiError> {
    let timeout = match q.get("timeoutSeconds") {
        Some(t) => Some(
            t.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?,
        ),
        None => None,
    };
    let bookmarks = q.flag("allowWatchBookmarks") == Some(true);
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let (body_tx, body_rx) = mpsc::unbounded_channel();
    let start = shared.lock().register_watch(
        WatchRequest {
            res,
            namespace: ns.map(str::to_string),
            labels,
            fields,
            resource_version: q.get("resourceVersion").map(str::to_string),
            send_initial_events: q.flag("sendInitialEvents"),
        },
        ev_tx,
    )?;
    match start {
        WatchStart::Expired(err) => {
            let _ = body_tx.send(event_line("ERROR", &err.to_status()));
        }
        WatchStart::Registered(id) => {
            tokio::spawn(run_watch(
                shared.clone(),
                id,
                ev_rx,
                body_tx,
                bookmarks,
                timeout.map(Duration::from_secs),
            ));
        }
    }
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(ResBody::Chan(body_rx))
        .unwrap_or_else(|_| Response::new(ResBody::Full(None))))
}

async fn run_watch(
    shared: Arc<Shared>,
    id: u64,
    mut ev_rx: mpsc::UnboundedReceiver<Bytes>,
    body_tx: mpsc::UnboundedSender<Bytes>,
    bookmarks: bool,
    timeout: Option<Duration>,
) {
    let deadline = tokio::time::sleep(timeout.unwrap_or(Duration::from_secs(365 * 24 * 3600)));
    tokio::pin!(deadline);
    let interval = shared.opts.bookmark_interval;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        tokio::select! {
            biased;
            line = ev_rx.recv() => match line {
                Some(l) => if body_tx.send(l).is_err() { break },
                None => break,
            },
            _ = body_tx.closed() => break,
            _ = &mut deadline => break,
            _ = ticker.tick(), if bookmarks => {
                if !shared.lock().bookmark(id) { break }
            }
        }
    }
    shared.lock().remove_watch(id);
}

fn api_group_list(resources: &[ResourceDef]) -> Value {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for r in resources.iter().filter(|r| !r.group.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, vs)) => {
                if !vs.contains(&r.version) {
                    vs.push(r.version)
                }
            }
            None => groups.push((r.group, vec![r.version])),
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "versions": versions, "preferredVersion": versions[0].clone()})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn api_resource_list(resources: &[ResourceDef], group: &str, version: &str) -> Option<Value> {
    let mut out = Vec::new();
    for r in resources.iter().filter(|r| r.group == group && r.version == version) {
        out.push(json!({
            "name": r.plural, "singularName": r.kind.to_lowercase(), "namespaced": r.namespaced, "kind": r.kind,
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
        }));
        if r.has_status {
            out.push(json!({
                "name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced,
                "kind": r.kind, "verbs": ["get", "patch", "update"],
            }));
        }
    }
    if out.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out}))
}

/// `/__control/` endpoints (not recorded, never failed on purpose).
fn control(shared: &Arc<Shared>, method: &Method, rest: &str, q: &Query, body: &[u8]) -> Resp {
    let result: Result<Value, ApiError> = (|| {
        let mut st = shared.lock();
        match (method.clone(), rest.trim_end_matches('/')) {
            (Method::GET, "state") => Ok(json!({
                "resourceVersion": st.resource_version(),
                "historyFloor": st.history_floor(),
                "openWatches": st.open_watches(None),
                "requests": st.requests.len(),
                "failRemaining": st.fail.remaining,
            })),
            (Method::GET, "objects") => {
                let all: Vec<Value> = (0..st.resources.len()).flat_map(|r| st.all_of(r)).collect();
                Ok(Value::Array(all))
            }
            (Method::PUT | Method::POST, "objects") => {
                let obj: Value = serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
                st.upsert(obj)
            }
            (Method::DELETE, "objects") => {
                let av = q.get("apiVersion").unwrap_or("");
                let kind = q.get("kind").unwrap_or("");
                let res = st
                    .res_index_by_kind(av, kind)
                    .ok_or_else(|| ApiError::new(404, format!("no resource served for {av:?} {kind:?}")))?;
                st.delete(res, q.get("namespace").unwrap_or(""), q.get("name").unwrap_or(""), None)
            }
            (Method::POST, "drop-watches") => Ok(json!({"dropped": st.drop_watches()})),
            (Method::POST, "compact") => Ok(json!({"historyFloor": st.compact()})),
            (Method::POST, "fail-next") => {
                let count = q.get("count").and_then(|c| c.parse().ok()).unwrap_or(1);
                let code = q.get("code").and_then(|c| c.parse().ok()).unwrap_or(500);
                let retry_after = q.get("retryAfter").and_then(|c| c.parse().ok());
                st.fail = FailRule {
                    remaining: count,
                    code,
                    retry_after,
                };
                Ok(json!({"failRemaining": count, "code": code}))
            }
            (Method::GET, "requests") => Ok(serde_json::to_value(&st.requests).unwrap_or(Value::Null)),
            (Method::DELETE, "requests") => {
                st.requests.clear();
                Ok(json!({}))
            }
            _ => Err(ApiError::new(
                404,
                format!("unknown control endpoint {method} /__control/{rest}"),
            )),
        }
    })();
    match result {
        Ok(v) => json_response(200, &v),
        Err(e) => error_response(&e),
    }
}
