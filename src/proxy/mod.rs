//! The data plane: listeners accept connections ([`server`]), each request is checked and normalised, routed in
//! the table of the listener set that accepted the connection (never by Host or SNI), and forwarded upstream with
//! its body streamed both ways. Failures map to statuses in [`error`].

mod auth;
mod deadline;
pub mod error;
mod errors;
pub(crate) mod filters;
mod h1;
pub mod headers;
pub mod memory;
pub mod proxy_protocol;
pub mod server;
pub mod tcp;
mod traffic;

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri, Version};
use http_body::Body as _;
use http_body_util::{Either, Empty, Full};
use hyper::body::Incoming;

use crate::acme::challenge::{self, ChallengeStore};
use crate::certs::{CertSnapshot, LoadedCert};
use crate::cidr::Cidr;
use crate::model::route::SendPolicy;
use crate::normalize::{normalize_host, normalize_path};
use crate::routing::Lookup;
use crate::snapshot::{Route, Snapshot};
use crate::upstream::body::{BodyProgress, RequestBody, ResponseBody, Tee};
use crate::upstream::client::{SendError, UpstreamBody, UpstreamClient, UpstreamError, Via};
use crate::upstream::PickContext;
use error::ProxyError;

/// The response body: streamed from upstream, or a small body the gateway wrote itself.
pub type ProxyBody = Either<ResponseBody, Full<Bytes>>;

/// A request's body as the server connection received it: streamed by hyper's server, or none (the gateway's own
/// HTTP/1.1 server takes only requests without one).
pub enum ClientBody {
    Hyper(Incoming),
    Empty,
}

impl ClientBody {
    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Hyper(b) => b.is_end_stream(),
            ClientBody::Empty => true,
        }
    }

    fn exact_len(&self) -> Option<u64> {
        match self {
            ClientBody::Hyper(b) => b.size_hint().exact(),
            ClientBody::Empty => Some(0),
        }
    }
}

/// Facts about the connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Index of the listener set whose listener accepted the connection.
    pub set: usize,
    /// The socket's peer.
    pub peer: SocketAddr,
    /// The client as the PROXY protocol header gave it, else the socket's peer.
    pub client: SocketAddr,
    pub local: SocketAddr,
    pub tls: Option<TlsConn>,
    /// `client`'s address and `local`'s port as header values, rendered once for the connection.
    pub hop: headers::HopValues,
}

impl ConnInfo {
    pub fn new(set: usize, peer: SocketAddr, local: SocketAddr) -> Self {
        Self::with_hop(set, peer, local, headers::HopValues::new(peer.ip(), local.port()))
    }

    /// With `hop` already rendered for `peer` and `local`'s port.
    pub fn with_hop(set: usize, peer: SocketAddr, local: SocketAddr, hop: headers::HopValues) -> Self {
        Self {
            set,
            peer,
            client: peer,
            local,
            tls: None,
            hop,
        }
    }

    /// The client as a PROXY protocol header gave it.
    pub fn set_client(&mut self, client: SocketAddr) {
        self.client = client;
        self.hop = headers::HopValues::new(client.ip(), self.local.port());
    }
}

/// What a TLS connection's handshake settled: the certificate it presented, out of the certificate snapshot
/// that was current then (kept, so a later republish does not change what this connection answers for).
#[derive(Clone)]
pub struct TlsConn {
    pub presented: LoadedCert,
    pub certs: Arc<CertSnapshot>,
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: &'static str,
    /// The server name the client asked for.
    pub sni: Option<Arc<str>>,
    /// The client-certificate settings the handshake used (`annotations::client_cert::ClientCert::tls_id`;
    /// 0: none were asked for).
    pub client_auth: u64,
    /// The client's certificate, verified as those settings say (`None`: none was sent).
    pub client_cert: Option<Arc<crate::certs::client_auth::PeerCert>>,
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn")
            .field("presented", &self.presented.info.subject)
            .finish_non_exhaustive()
    }
}

// === impl TlsConn ===

impl TlsConn {
    /// Whether a request for `host` may be answered on this connection, decided before routing.
    ///
    /// - The client sent SNI: the presented certificate must stand for `host`. It covers `host` by name, or it is
    ///   the certificate a new connection for `host` would get anyway (the default, for hosts without one).
    ///   Otherwise 421: the client named another host in its handshake (domain fronting), or reuses an HTTP/2
    ///   connection for a host this certificate does not cover.
    /// - No SNI (clients that connect by IP address; rustls also treats an IP address sent as SNI as none): the
    ///   handshake named no host, so there is nothing for `Host` to contradict, and the request is routed by
    ///   `Host` as ingress-nginx, HAProxy and Traefik do. What the route needs from TLS is checked once the route
    ///   is known, by [`TlsConn::meets_route_tls`].
    ///
    /// Cost: a branch on `sni`, which the connection already holds; with SNI, the coverage check as before.
    fn may_serve(&self, host: &str) -> bool {
        if self.sni.is_none() {
            return true;
        }
        self.presented.covers(host) || Arc::ptr_eq(&self.certs.resolve_cert(Some(host)).key, &self.presented.key)
    }

    /// Whether this connection's handshake gave the route what it requires of TLS: a route with client
    /// certificates (`auth-tls-*`) needs a handshake made with its host's settings. A request can reach a route
    /// without that route's handshake (a connection without SNI, or HTTP/2 reuse across a wildcard certificate
    /// or a certificate naming several hosts); the answer is then 421, and the client opens a connection of its
    /// own for the host.
    ///
    /// Cost: a scan of the route's filters (empty for most routes) on TLS connections.
    #[inline]
    fn meets_route_tls(&self, route: &Route) -> bool {
        crate::model::route::Filter::client_cert_id(&route.filters).is_none_or(|id| id == self.client_auth)
    }
}

/// Shared by every connection: the published table and the upstream client.
pub struct Proxy {
    snapshot: Arc<ArcSwap<Snapshot>>,
    client: UpstreamClient,
    sets: Vec<SetOptions>,
    challenges: ChallengeStore,
    metrics: Arc<crate::metrics::Metrics>,
    access_log: Option<crate::accesslog::AccessLog>,
}

/// What `forward` learnt about a request, for metrics and the access log (owned: refcount bumps only).
#[derive(Default)]
struct Note {
    /// The origin (`namespace/name`) of the route that took the request, the default route's included.
    ingress: Option<Arc<str>>,
    /// The canary Ingress, when its backend served the request.
    canary: Option<Arc<str>>,
    backend: Option<Arc<crate::upstream::Backend>>,
    /// The route's counter for the backend that served.
    counter: Option<crate::metrics::RouteCounter>,
    upstream: Option<SocketAddr>,
    /// Time to the upstream's response headers (last attempt).
    upstream_time: Option<std::time::Duration>,
    /// The upstream failure an error page answered in place of the gateway's own error.
    replaced: Option<UpstreamError>,
}

/// Per listener set settings the proxy needs from the configuration.
#[derive(Debug, Clone, Default)]
pub struct SetOptions {
    /// The port written in HTTPS redirects (`None`: the default 443).
    pub redirect_port: Option<u16>,
    /// Whether plain-HTTP listeners answer ACME HTTP-01 challenges.
    pub acme: bool,
    /// Peers whose PROXY headers and `X-Forwarded-*` are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// Set-wide allowlist of client networks.
    pub allow_source_ranges: Option<Vec<Cidr>>,
    /// Set-wide denylist of client networks (wins over the allowlist).
    pub deny_source_ranges: Option<Vec<Cidr>>,
    /// Connections start with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// Open connections per listener (`None`: unlimited).
    pub max_connections: Option<usize>,
    /// Time allowed for a request's headers.
    pub header_read_timeout: std::time::Duration,
    /// Time a connection may stay without a request in flight.
    pub keep_alive_timeout: std::time::Duration,
    /// Longest pause between two pieces of a request body.
    pub body_read_timeout: std::time::Duration,
    /// Protocols an `Upgrade` may switch to (`None`: WebSocket only, [`crate::http1::upgrade::DEFAULT_ALLOWED`]).
    pub allowed_upgrades: Option<Vec<String>>,
}

/// What the route and filter phases decided, owned so no table reference is held across an await.
struct Target {
    backend: Arc<crate::upstream::Backend>,
    filters: Arc<[crate::model::route::Filter]>,
    send: Arc<SendPolicy>,
    /// TLS to the backend and the request-body timeout, when the route's Ingress has such settings.
    upstream: Option<Arc<crate::upstream::policy::UpstreamPolicy>>,
    /// The backend must be reached over TLS (a BackendTLSPolicy): without a TLS policy the request fails.
    tls_required: bool,
    /// The affinity cookie of the backend that serves (a canary's own when the canary does).
    affinity_cookie: Option<Arc<str>>,
    /// The path a rewrite made of the request's (not yet normalised).
    rewritten: Option<String>,
    /// The largest request body accepted (a body limit filter).
    body_limit: Option<u64>,
    /// `RequestMirror` backends and the share of requests (millionths) copied to each.
    mirrors: Vec<(Arc<crate::upstream::Backend>, u32)>,
    /// What CORS and the rate limit left for the response.
    carry: traffic::Carry,
    /// The route's error pages' backend, when it has error pages (respond phase, [`errors`]).
    error_page: Option<errors::ErrorTarget>,
}

/// The request as it goes upstream, but for its target (kept apart: the route phase borrows it).
struct Outgoing {
    method: http::Method,
    version: Version,
    headers: http::HeaderMap,
    extensions: http::Extensions,
    /// When its head was received: the start of a Gateway API `timeouts.request` deadline.
    received: std::time::Instant,
}

/// The request's header map is kept for the next request parsed on the thread (see `http1::maps`).
impl Drop for Outgoing {
    fn drop(&mut self) {
        crate::http1::maps::give(std::mem::take(&mut self.headers));
    }
}

/// The client as the admit phase established it.
struct Client {
    ip: std::net::IpAddr,
    /// The hop is a trusted proxy (its forwarding headers are kept and extended).
    trusted: bool,
}

static DEFAULT_SET_OPTIONS: SetOptions = SetOptions {
    redirect_port: None,
    acme: false,
    trusted_proxies: Vec::new(),
    allow_source_ranges: None,
    deny_source_ranges: None,
    proxy_protocol: false,
    max_connections: None,
    header_read_timeout: crate::config::DEFAULT_HEADER_READ_TIMEOUT,
    keep_alive_timeout: crate::config::DEFAULT_KEEP_ALIVE_TIMEOUT,
    body_read_timeout: crate::config::DEFAULT_BODY_READ_TIMEOUT,
    allowed_upgrades: None,
};

impl Proxy {
    pub fn new(
        snapshot: Arc<ArcSwap<Snapshot>>,
        client: UpstreamClient,
        sets: Vec<SetOptions>,
        challenges: ChallengeStore,
    ) -> Self {
        let names: Vec<String> = (0..sets.len()).map(|i| i.to_string()).collect();
        Self {
            snapshot,
            client,
            sets,
            challenges,
            metrics: Arc::new(crate::metrics::Metrics::new(&names)),
            access_log: None,
        }
    }

    /// Counts into `metrics` and logs to `access_log` instead of the private defaults.
    pub fn with_observers(
        mut self,
        metrics: Arc<crate::metrics::Metrics>,
        access_log: Option<crate::accesslog::AccessLog>,
    ) -> Self {
        self.metrics = metrics;
        self.access_log = access_log;
        self
    }

    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// A listener set's options.
    pub fn set_options(&self, set: usize) -> &SetOptions {
        self.sets.get(set).unwrap_or(&DEFAULT_SET_OPTIONS)
    }

    /// The current TLS material of a listener set, for a new connection's handshake.
    pub fn tls_for(&self, set: usize) -> Option<crate::certs::SetTls> {
        self.snapshot.load().tls.get(set)?.clone()
    }

    pub async fn handle(&self, conn: &ConnInfo, req: Request<ClientBody>) -> Response<ProxyBody> {
        let started = std::time::Instant::now();
        // Taken before `forward` consumes the request, only when this request will be logged.
        let method = crate::metrics::method_index(req.method());
        let bytes_in = req.body().exact_len().or_else(|| content_length(req.headers()));
        let logged = self.access_log.as_ref().filter(|l| l.sampled()).map(|_| {
            let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok());
            let host = host.or(req.uri().host()).unwrap_or("");
            (req.method().clone(), host.to_string(), req.uri().path().to_string())
        });
        let mut note = Note::default();
        // Pinned in place and awaited through the pin: the forward future is not moved into this one's state.
        let out = {
            let forward = std::pin::pin!(self.forward(conn, req, started, &mut note));
            forward.await
        };
        let (resp, upstream_error) = match out {
            Ok(resp) => (resp, note.replaced.map(crate::metrics::UpstreamErrorKind::from_error)),
            Err(e) => {
                tracing::debug!(set = conn.set, peer = %conn.peer, error = %e, fault = ?e.fault(), "request failed");
                let kind = match e {
                    ProxyError::Upstream(u) => Some(crate::metrics::UpstreamErrorKind::from_error(u)),
                    _ => None,
                };
                (e.response(), kind)
            }
        };
        let elapsed = started.elapsed();
        let status = resp.status().as_u16();
        let bytes_out = resp
            .body()
            .size_hint()
            .exact()
            .or_else(|| content_length(resp.headers()));
        self.metrics.record(&crate::metrics::Outcome {
            set: conn.set,
            counter: note.counter.as_ref(),
            status,
            elapsed,
            upstream_elapsed: note.upstream_time,
            upstream_error,
            method,
            bytes_in,
            bytes_out,
        });
        if let (Some(kind), Some(backend)) = (upstream_error, &note.backend) {
            backend.count_error(kind as usize);
        }
        if let (Some(log), Some((method, host, path))) = (&self.access_log, logged) {
            log.log(crate::accesslog::Entry {
                time: std::time::SystemTime::now()
                    .checked_sub(elapsed)
                    .unwrap_or(std::time::UNIX_EPOCH),
                set: conn.set,
                client: conn.client,
                method,
                host,
                path,
                status,
                bytes_in,
                bytes_out,
                duration: elapsed,
                upstream: note.upstream,
                ingress: note.ingress,
                service: note.backend,
                canary: note.canary,
                tls: conn.tls.is_some(),
                tls_version: conn.tls.as_ref().map(|t| t.version),
                sni: conn.tls.as_ref().and_then(|t| t.sni.clone()),
            });
        }
        resp
    }

    /// The endpoint for another try after `why` on `endpoint`: another usable one, within the backend's retry
    /// budget (both refusals are logged at debug).
    fn next_endpoint<'b>(
        &self,
        backend: &'b crate::upstream::Backend,
        endpoint: &crate::upstream::Endpoint,
        budget: &crate::upstream::budget::RetryBudgetConfig,
        why: impl std::fmt::Display,
    ) -> Option<&'b crate::upstream::Endpoint> {
        let Some(next) = backend.pick_other(endpoint.addr) else {
            tracing::debug!(backend = %backend.id, endpoint = %endpoint.addr, error = %why, "no other endpoint to retry on");
            return None;
        };
        if let Err(spent) = backend.retry_budget.try_retry(budget) {
            tracing::debug!(
                backend = %backend.id,
                endpoint = %endpoint.addr,
                error = %why,
                requests = spent.requests,
                retries = spent.retries,
                allowed = spent.allowed,
                "retry budget spent; not retrying"
            );
            return None;
        }
        tracing::debug!(backend = %backend.id, endpoint = %endpoint.addr, next = %next.addr, error = %why, "retrying on another endpoint");
        Some(next)
    }

    /// A request through its phases: admit, route, filters, send (respond is the send phase's last step). Each
    /// phase may answer or refuse the request; the first error is the response (see [`error`]).
    async fn forward(
        &self,
        conn: &ConnInfo,
        req: Request<ClientBody>,
        received: std::time::Instant,
        note: &mut Note,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let set_opts = self.sets.get(conn.set).unwrap_or(&DEFAULT_SET_OPTIONS);
        if let Some(resp) = self.acme_challenge(set_opts, conn, &req) {
            return Ok(resp);
        }
        let (parts, body) = req.into_parts();
        // What hyper's server parsed meets the framing rules of the gateway's own parser (crate::http1).
        if let (ClientBody::Hyper(_), true) = (&body, parts.version < Version::HTTP_2) {
            crate::http1::request::check(parts.version, &parts.headers)?;
        }
        // Apart, so the normalised path can borrow the target while the headers are edited.
        let http::request::Parts {
            method,
            uri,
            version,
            headers,
            extensions,
            ..
        } = parts;
        let mut parts = Outgoing {
            method,
            version,
            headers,
            extensions,
            received,
        };
        // Admit: the real client and the listener set's allowlist (later: limits).
        let client = admit(set_opts, conn, &parts.headers)?;
        // Route: Host and :authority (400), SNI (421), the normalised path (400), the lookup (404), the backend.
        let host_value = request_host(&parts.version, &uri, &parts.headers)?;
        let host = normal_host(conn, &uri, host_value.as_ref())?;
        let path = normalize_path(uri.path()).map_err(|e| ProxyError::BadRequest(path_reason(e)))?;
        // Assigned in the block (not returned from it as a tuple: a move less of a large value per request).
        let (mut target, deferred);
        {
            // The one snapshot load of the request, read only until the target is owned (no await meanwhile).
            let snap = self.snapshot.load();
            let req = crate::routing::Request {
                method: &parts.method,
                headers: &parts.headers,
                query: uri.query(),
            };
            let routed = route(&snap, conn, &host.name, &path, &req, note)?;
            // Filters: the route's, in order: deny and allow lists, redirects, CORS, limits, auth, body limit, rewrite.
            let mut cx = filters::RequestCx {
                conn,
                set: set_opts,
                client: client.ip,
                route: routed.route,
                host: &host.name,
                host_value: host_value.as_ref(),
                path: &path,
                query: uri.query(),
                headers: &parts.headers,
                rewritten: None,
                body_limit: None,
                deferred: false,
                method: &parts.method,
                carry: traffic::Carry::default(),
            };
            if let Some(resp) = filters::on_request(&routed.route.filters, &mut cx)? {
                return Ok(resp);
            }
            let (rewritten, body_limit, carry) = (cx.rewritten, cx.body_limit, cx.carry);
            // An auth filter's asynchronous step comes after the snapshot is let go (with the route's kept slot).
            deferred = cx.deferred.then(|| routed.route.state.kept.clone());
            target = Target::new(&snap, conn, &routed, rewritten, body_limit, carry);
        }
        if let Some(kept) = deferred {
            let d = auth::Deferred {
                method: &parts.method,
                uri: &uri,
                host: &host.name,
                host_value: host_value.as_ref(),
                client: client.ip,
                hop: &conn.hop,
                trusted: client.trusted,
                tls: conn.tls.is_some(),
                kept: kept.as_deref(),
            };
            // Boxed: a forward-auth subrequest's state is large and rare; inline it would size every request's
            // future and every connection's task.
            let deferred = Box::pin(auth::on_request_deferred(&target.filters, &d, &mut parts.headers));
            if let Some(resp) = deferred.await {
                return Ok(resp);
            }
        }
        // Respond's last step needs the request's Accept, X-Request-ID and target, taken before sending.
        let pending = target
            .error_page
            .take()
            .map(|e| errors::Pending::new(e, target.filters.clone(), &uri, &parts.headers, host_value.as_ref()));
        // Send: pick, upstream headers, retries, upgrades; then respond: the response edits, the error pages.
        let path_unchanged = matches!(path, std::borrow::Cow::Borrowed(_));
        let out = {
            // Pinned in place, as `handle` does with this future.
            let send = std::pin::pin!(self.send(
                conn,
                set_opts,
                &client,
                host_value,
                (&uri, &path, path_unchanged),
                &mut parts,
                body,
                &mut target,
                note,
            ));
            send.await
        };
        let Some(pending) = pending else {
            return out;
        };
        let mut replaced = None;
        // Boxed, like the deferred auth step: only routes with error pages pay for the error backend's exchange.
        let out = Box::pin(self.error_page(conn, pending, out, &mut replaced)).await;
        if let Some(ProxyError::Upstream(u)) = replaced {
            note.replaced = Some(u);
        }
        out
    }

    /// `RequestMirror`: a copy of the request, as sent upstream, to each mirror backend for its share of requests,
    /// in the background; its answer is dropped. A request with a body (`len`: its length, when known) gets back
    /// the [`Tee`] that copies the body's frames to the mirrors as the main request reads them: a mirror falling
    /// behind or failing is abandoned, never the main request.
    #[cold]
    #[inline(never)]
    fn mirror(
        &self,
        mirrors: &[(Arc<crate::upstream::Backend>, u32)],
        method: &http::Method,
        target: &PathAndQuery,
        headers: &http::HeaderMap,
        (with_body, len): (bool, Option<u64>),
    ) -> Tee {
        let mut tee = Tee::default();
        for (backend, share) in mirrors {
            if crate::routing::below_million() >= *share {
                continue;
            }
            let (body, via) = if with_body {
                (Either::Left(RequestBody::mirror(tee.add(), len)), Via::Http1)
            } else {
                (Either::Right(Empty::new()), Via::Http1Bodiless)
            };
            let mut req = Request::new(body);
            *req.method_mut() = method.clone();
            *req.uri_mut() = http::Uri::from(target.clone());
            *req.headers_mut() = headers.clone();
            if !with_body {
                req.headers_mut().remove(header::CONTENT_LENGTH);
            }
            req.headers_mut().remove(header::TRANSFER_ENCODING);
            let (client, backend) = (self.client.clone(), backend.clone());
            tokio::spawn(async move {
                let cx = PickContext {
                    client: None,
                    cookie: None,
                };
                let Some(endpoint) = backend.pick(&cx) else { return };
                match client.send(endpoint, req, None, via).await {
                    Ok(resp) => drop(resp),
                    Err(e) => {
                        tracing::debug!(backend = %backend.id, endpoint = %endpoint.addr, error = ?e, "mirror failed")
                    }
                }
            });
        }
        tee
    }

    /// ACME HTTP-01 first: before host checks, routing, redirects and allowlists; exact tokens only.
    fn acme_challenge(
        &self,
        set: &SetOptions,
        conn: &ConnInfo,
        req: &Request<ClientBody>,
    ) -> Option<Response<ProxyBody>> {
        if !(set.acme && conn.tls.is_none() && req.uri().path().starts_with(challenge::PREFIX)) {
            return None;
        }
        let key_auth = self.challenges.answer(req.uri().path())?;
        let mut resp = Response::new(Either::Right(Full::new(Bytes::from(key_auth))));
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        Some(resp)
    }

    /// Send: pick an endpoint, build the upstream request (the gateway's headers, then the filters' edits), send
    /// it, retry on another endpoint when allowed, tunnel an upgrade; then respond.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        conn: &ConnInfo,
        set_opts: &SetOptions,
        client: &Client,
        host_value: Option<HeaderValue>,
        (uri, path, path_unchanged): (&Uri, &str, bool),
        // By reference: the send future holds two pointers instead of copies of both.
        parts: &mut Outgoing,
        body: ClientBody,
        target: &mut Target,
        note: &mut Note,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let backend = &target.backend;
        let send = &*target.send;
        let affinity_name = target.affinity_cookie.as_deref();
        let affinity = affinity_name
            .and_then(|n| crate::routing::cookie(&parts.headers, n))
            .map(str::to_owned);
        let cx = PickContext {
            client: Some(client.ip),
            cookie: affinity.as_deref(),
        };
        let mut endpoint = backend.pick(&cx).ok_or(ProxyError::NoEndpoint)?;
        note.upstream = Some(endpoint.addr);

        // An allowed upgrade (WebSocket unless the listener set says otherwise) keeps its Upgrade and Connection
        // headers, and is tunnelled only if the backend answers 101 naming it; any other Upgrade (h2c) is removed.
        let upgrade =
            crate::http1::upgrade::requested(parts.version, &parts.headers, set_opts.allowed_upgrades.as_deref());
        let downstream_upgrade = upgrade
            .as_ref()
            .and_then(|_| parts.extensions.remove::<hyper::upgrade::OnUpgrade>());

        // TLS and the request-body timeout come from the Ingress's upstream policy, when it has one.
        let up_policy = target.upstream.as_deref();
        if target.tls_required && !up_policy.is_some_and(|p| p.wants_tls()) {
            return Err(ProxyError::Upstream(UpstreamError::Tls));
        }
        let via = match up_policy {
            Some(p) if p.wants_tls() => match &p.tls {
                Some(c) => Via::Tls(c),
                None => return Err(ProxyError::Upstream(UpstreamError::Tls)),
            },
            _ if send.upstream_h2c => Via::H2c,
            // No body and no upgrade: the gateway's own client, in this task.
            _ if upgrade.is_none() && body.is_end_stream() => Via::Http1Bodiless,
            _ => Via::Http1,
        };
        let h2 = send.upstream_h2c || up_policy.is_some_and(|p| p.h2());
        // gRPC needs `te: trailers` end to end; it is otherwise a hop-by-hop header.
        let te_trailers = h2
            && parts
                .headers
                .get(header::TE)
                .is_some_and(|v| crate::http1::tokens::has(v.as_bytes(), b"trailers"));
        // Headers upstream: hop-by-hop and impostors out, then ours, then the filters' edits.
        headers::strip_hop_by_hop(&mut parts.headers);
        headers::drop_underscore_impostors(&mut parts.headers);
        if te_trailers {
            parts.headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        if let Some(u) = &upgrade {
            parts.headers.insert(header::UPGRADE, u.clone());
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        let host_header = host_value.unwrap_or_else(|| HeaderValue::from_static(""));
        if parts.version == Version::HTTP_2 && !host_header.is_empty() {
            parts.headers.insert(header::HOST, host_header.clone());
        }
        headers::set_forwarded(
            &mut parts.headers,
            &headers::Forwarded {
                client_ip: client.ip,
                hop: &conn.hop,
                trusted: client.trusted,
                proto: if conn.tls.is_some() { "https" } else { "http" },
                host: &host_header,
            },
        );
        filters::on_upstream_request(&target.filters, &mut parts.headers, conn);
        // The target upstream: the client's own path-and-query when normalisation left it as it was (a refcount),
        // else the normalised path with the query.
        let path_and_query = match (target.rewritten.as_deref(), uri.path_and_query()) {
            (Some(rewritten), _) => rewritten_target(rewritten, uri.query())?,
            (None, Some(pq)) if path_unchanged => pq.clone(),
            _ => {
                let joined = match uri.query() {
                    Some(q) => format!("{path}?{q}"),
                    None => path.to_owned(),
                };
                PathAndQuery::try_from(joined).map_err(|_| ProxyError::BadRequest("invalid request target"))?
            }
        };

        let bodiless = body.is_end_stream();
        // Routes without mirrors: one emptiness check. A body's copies are fed by the main request's body.
        let mirror = |len: Option<u64>| {
            let mirrors = &target.mirrors;
            (!mirrors.is_empty()).then(|| {
                let body = (!bodiless, len);
                self.mirror(mirrors, &parts.method, &path_and_query, &parts.headers, body)
            })
        };
        // Gateway API timeouts (none for most routes: no clock read, no timer). The whole exchange's deadline counts
        // from the request's head; with a body, the send phase learns whether the client's body was what the
        // gateway waited on when a deadline passed.
        let received = parts.received;
        let deadlines = deadline::Deadlines::new(send, || tokio::time::Instant::from_std(received));
        let progress = (deadlines.any() && !bodiless).then(BodyProgress::default);
        // Another try needs the headers again (the request is consumed by sending it).
        let retry_headers = (bodiless && backend.endpoints.len() > 1).then(|| parts.headers.clone());
        let idempotent = crate::upstream::client::repeatable(&parts.method);
        let limit = target
            .body_limit
            .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
        let body_timeout = up_policy
            .and_then(|p| p.request_body_timeout)
            .unwrap_or(set_opts.body_read_timeout);
        let mut body: UpstreamBody = match body {
            ClientBody::Hyper(body) if !bodiless => {
                let tee = mirror(body.size_hint().exact());
                let mut body = RequestBody::new(body, limit, body_timeout);
                if let Some(tee) = tee.filter(|t| !t.is_empty()) {
                    body.tee(tee);
                }
                if let Some(p) = &progress {
                    // Bodies are sent once: the first try's deadline is the body's.
                    body.report(p.clone(), deadlines.for_try(tokio::time::Instant::now));
                }
                Either::Left(body)
            }
            _ => {
                // The mirrors get the head only: no body to copy, an empty tee.
                mirror(None);
                Either::Right(Empty::new())
            }
        };
        let read_timeout = send.upstream_timeout.unwrap_or(self.client.read_timeout());
        let budget = self.client.retry_budget();
        backend.retry_budget.record_request(budget);
        let mut headers_now = std::mem::take(&mut parts.headers);
        let mut tries = 0;
        // The route's retry settings (proxy-next-upstream*; Portico's defaults without them).
        let next_upstream = send.next_upstream;
        let max_tries = usize::from(send.tries.max(1));
        let first_try = std::time::Instant::now();
        let may_repeat = idempotent || next_upstream.non_idempotent;
        loop {
            tries += 1;
            send.set_host(&mut headers_now, endpoint.addr);
            // HTTP/1.1 goes out on the endpoint's own connections in origin form; h2c and TLS through their pooled
            // clients, which connect by the URI's authority.
            let uri = match via {
                Via::Http1 | Via::Http1Bodiless => Uri::from(path_and_query.clone()),
                Via::H2c => upstream_uri(http::uri::Scheme::HTTP, endpoint, &path_and_query),
                Via::Tls(_) => upstream_uri(http::uri::Scheme::HTTPS, endpoint, &path_and_query),
            };
            let version = if h2 { Version::HTTP_2 } else { Version::HTTP_11 };
            // Counted until the response body ends, fails or is dropped (the guard travels with it).
            let in_flight = backend.start(endpoint);
            let sent_at = std::time::Instant::now();
            // This try's deadline: the whole exchange's, or its own if that ends first (connect included).
            let try_deadline = deadlines.for_try(|| tokio::time::Instant::from_std(sent_at));
            // The request is built in the call: a local holding it would keep its space in this future's state.
            // Pinned where it is and borrowed by the deadline's wrapper: one move of the future, as a plain await.
            let sent = std::pin::pin!(self.client.send_with(
                endpoint,
                upstream_request(body, parts.method.clone(), uri, version, headers_now),
                send.upstream_timeout,
                send.connect_timeout,
                via,
            ));
            let sent = deadline::Bounded::new(sent, try_deadline).await;
            let sent = match sent {
                Ok(sent) => sent,
                // The deadline passed while the gateway waited on the client's body: the client is slow, not the
                // backend (408, never counted against the endpoint).
                Err(deadline::Elapsed) if progress.as_ref().is_some_and(BodyProgress::waiting_on_client) => {
                    Err(SendError::RequestBodyTimeout)
                }
                Err(deadline::Elapsed) => Err(SendError::Upstream(UpstreamError::ResponseTimeout)),
            };
            note.upstream_time = Some(sent_at.elapsed());
            // Whether another try is allowed at all: a bodiless request (its headers kept), tries and time left
            // (the retry window, the whole exchange's deadline).
            let another = |tries: usize| {
                retry_headers.is_some()
                    && tries < max_tries
                    && send.retry_window.is_none_or(|w| first_try.elapsed() < w)
                    && !deadlines.passed()
            };
            let e = match sent {
                // proxy-next-upstream http_NNN: that answer is dropped and another endpoint asked.
                Ok(resp) if next_upstream.retries_status(resp.status().as_u16()) && may_repeat && another(tries) => {
                    match self.next_endpoint(backend, endpoint, budget, resp.status()) {
                        Some(next) => {
                            backend.record(endpoint, !resp.status().is_server_error());
                            drop(resp);
                            drop(in_flight);
                            endpoint = next;
                            note.upstream = Some(endpoint.addr);
                            self.metrics.retry(conn.set);
                            headers_now = retry_headers.clone().unwrap_or_default();
                            body = Either::Right(Empty::new());
                            continue;
                        }
                        None => Ok(resp),
                    }
                }
                other => other,
            };
            let e = match e {
                Ok(mut resp) => {
                    backend.record(endpoint, !resp.status().is_server_error());
                    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                        // Only a switch to what was asked for opens a tunnel; any other 101 is the backend's error.
                        let asked = upgrade
                            .as_ref()
                            .filter(|u| crate::http1::upgrade::switched_to(u, resp.headers()));
                        let Some(down) = downstream_upgrade.filter(|_| asked.is_some()) else {
                            backend.record(endpoint, false);
                            return Err(ProxyError::Upstream(UpstreamError::Invalid));
                        };
                        {
                            let up = hyper::upgrade::on(&mut resp);
                            // The tunnel counts as in flight on its endpoint until it closes.
                            tokio::spawn(tunnel(down, up, (in_flight, target.carry.hold.take())));
                            let (rparts, rbody) = resp.into_parts();
                            return Ok(Response::from_parts(
                                rparts,
                                Either::Left(ResponseBody::new(rbody, None, None)),
                            ));
                        }
                    }
                    let (mut rparts, rbody) = resp.into_parts();
                    let retried_with_cookie = tries > 1 && affinity.is_some();
                    respond(
                        target,
                        conn,
                        &mut rparts.headers,
                        endpoint,
                        affinity.as_deref(),
                        retried_with_cookie,
                    );
                    let mut rbody = ResponseBody::new(rbody, Some(in_flight), Some(read_timeout));
                    if let Some(at) = try_deadline {
                        rbody.until(at);
                    }
                    if let Some(hold) = target.carry.hold.take() {
                        rbody.hold(Box::new(hold));
                    }
                    return Ok(Response::from_parts(rparts, Either::Left(rbody)));
                }
                Err(SendError::RequestBodyTimeout) => return Err(ProxyError::RequestTimeout),
                Err(SendError::RequestBodyTooLarge) => return Err(ProxyError::PayloadTooLarge),
                // The client's body broke or stopped: its fault, never the endpoint's (no health record, no retry).
                Err(SendError::ClientBody) => return Err(ProxyError::ClientBody),
                Err(SendError::Upstream(e)) => e,
            };
            drop(in_flight);
            backend.record(endpoint, false);
            // Another endpoint, when nothing was sent (any method) or the request may be repeated (idempotent),
            // and only for requests without a body. The response has not started, so the client sees nothing of
            // the failed try.
            let retryable = match e {
                UpstreamError::Connect => next_upstream.error,
                UpstreamError::ConnectTimeout => next_upstream.timeout,
                UpstreamError::Reset => next_upstream.error && may_repeat,
                UpstreamError::ResponseTimeout => next_upstream.header_timeout && may_repeat,
                UpstreamError::Tls | UpstreamError::Invalid => false,
            };
            let Some(h) = retry_headers.as_ref().filter(|_| retryable && another(tries)) else {
                return Err(e.into());
            };
            let Some(next) = self.next_endpoint(backend, endpoint, budget, e) else {
                return Err(e.into());
            };
            endpoint = next;
            note.upstream = Some(endpoint.addr);
            self.metrics.retry(conn.set);
            headers_now = h.clone();
            body = Either::Right(Empty::new());
        }
    }
}

/// Admit: the real client (the hop, i.e. socket peer or PROXY source, or what a trusted proxy says it forwarded)
/// and the listener set's allowlist (later: connection and request limits).
fn admit(set: &SetOptions, conn: &ConnInfo, headers: &http::HeaderMap) -> Result<Client, ProxyError> {
    let hop = conn.client.ip();
    let trusted = Cidr::any_contains(&set.trusted_proxies, hop);
    let ip = headers::client_ip(headers, &set.trusted_proxies, hop);
    if set
        .deny_source_ranges
        .as_ref()
        .is_some_and(|d| Cidr::any_contains(d, ip))
    {
        return Err(ProxyError::Forbidden);
    }
    if let Some(allow) = &set.allow_source_ranges {
        if !Cidr::any_contains(allow, ip) {
            return Err(ProxyError::Forbidden);
        }
    }
    Ok(Client { ip, trusted })
}

/// Route, first half: the host (exactly one Host on HTTP/1.1, agreeing with an absolute-form target or
/// :authority), normalised; on TLS with SNI, the certificate must stand for it (421 otherwise).
fn normal_host<'v>(
    conn: &ConnInfo,
    uri: &Uri,
    host_value: Option<&'v HeaderValue>,
) -> Result<crate::normalize::NormalHost<'v>, ProxyError> {
    let host = match host_value {
        Some(v) => {
            let s = v.to_str().map_err(|_| ProxyError::BadRequest("host is not ASCII"))?;
            normalize_host(s).map_err(|_| ProxyError::BadRequest("malformed host"))?
        }
        None => crate::normalize::NormalHost {
            name: "".into(),
            port: None,
        },
    };
    if let Some(auth) = uri.authority() {
        let a = normalize_host(auth.as_str()).map_err(|_| ProxyError::BadRequest("malformed request target"))?;
        if a != host {
            return Err(ProxyError::BadRequest("request target and Host disagree"));
        }
    }
    // TLS: with SNI, the certificate must stand for the host (421 otherwise); without SNI, Host routes.
    if let Some(tls) = &conn.tls {
        if !tls.may_serve(&host.name) {
            return Err(ProxyError::Misdirected);
        }
    }
    Ok(host)
}

/// What the route phase found: the route, which of its backends serves, and whether it is the default route.
struct Routed<'s> {
    route: &'s Route,
    chosen: usize,
    default: bool,
}

/// Route, second half: the lookup in the accepting listener set's table (404 without a route or default), what
/// the route requires of the connection's TLS (421), and which of its backends serves (a canary's rules, the
/// weights). Notes the route's origin, backend and counter for metrics and the access log.
fn route<'s>(
    snap: &'s Snapshot,
    conn: &ConnInfo,
    host: &str,
    path: &str,
    req: &crate::routing::Request<'_>,
    note: &mut Note,
) -> Result<Routed<'s>, ProxyError> {
    let headers = req.headers;
    let (route, default) = match snap.lookup_request(conn.set, host, path, req) {
        Lookup::Route(r) => (r, false),
        Lookup::Default(d) => (d, true),
        Lookup::NotFound => return Err(ProxyError::NoRoute),
    };
    note.ingress = Some(route.origin.name.clone());
    if let Some(tls) = &conn.tls {
        if !tls.meets_route_tls(route) {
            return Err(ProxyError::Misdirected);
        }
    }
    let chosen = route.backend_for(headers, |i, value| route.state.names_endpoint(i, value));
    if route.backends[chosen].invalid {
        return Err(ProxyError::InvalidBackend);
    }
    let live = &route.state.backends[chosen];
    note.canary = (chosen > 0).then(|| route.backends[chosen].origin.name.clone());
    note.backend = Some(live.backend.clone());
    note.counter = Some(live.counter.clone());
    Ok(Routed { route, chosen, default })
}

// === impl Target ===

impl Target {
    /// What the send and respond phases need of a route, as reference counts.
    fn new(
        snap: &Snapshot,
        conn: &ConnInfo,
        routed: &Routed<'_>,
        rewritten: Option<String>,
        body_limit: Option<u64>,
        carry: traffic::Carry,
    ) -> Self {
        let route = routed.route;
        Self {
            backend: route.state.backends[routed.chosen].backend.clone(),
            filters: route.filters.clone(),
            send: route.send.clone(),
            upstream: match &route.backends[routed.chosen].tls {
                // A Gateway API backend a BackendTLSPolicy governs: its own TLS client, never the route's.
                Some(key) => snap.upstream.backend_tls(key).cloned(),
                None => snap
                    .upstream
                    .lookup(conn.set, (!routed.default).then_some(&*route.origin.name))
                    .cloned(),
            },
            tls_required: route.backends[routed.chosen].tls.is_some(),
            affinity_cookie: match (routed.chosen, &route.split) {
                (0, _) => route.send.affinity_cookie.clone(),
                (_, Some(split)) => split.affinity_cookie.clone(),
                (_, None) => None,
            },
            rewritten,
            body_limit,
            mirrors: route
                .backends
                .iter()
                .zip(route.state.backends.iter())
                .filter_map(|(w, live)| Some((live.backend.clone(), w.mirror?)))
                .collect(),
            carry,
            // Only routes with error pages have more than a main backend and a canary.
            error_page: route
                .backends
                .iter()
                .zip(route.state.backends.iter())
                .skip(1)
                .find(|(w, _)| w.error_page)
                .map(|(_, live)| errors::ErrorTarget {
                    backend: live.backend.clone(),
                    origin: route.origin.name.clone(),
                    service: route.backends[routed.chosen].id.clone(),
                }),
        }
    }
}

/// Respond: the backend's response headers made ours: hop-by-hop fields out, the filters' response edits (header
/// edits, HSTS, CORS), and the affinity cookie naming the endpoint that served. The error pages come after (in
/// `forward`, [`errors`]), over the send phase's outcome, errors included.
fn respond(
    target: &Target,
    conn: &ConnInfo,
    headers: &mut http::HeaderMap,
    endpoint: &crate::upstream::Endpoint,
    affinity: Option<&str>,
    retried_with_cookie: bool,
) {
    headers::strip_hop_by_hop(headers);
    filters::on_response(&target.filters, headers, conn.tls.is_some());
    traffic::on_response(&target.filters, &target.carry, headers);
    let Some(name) = target.affinity_cookie.as_deref() else {
        return;
    };
    let send = &*target.send;
    let value = endpoint.cookie_value();
    // A retried request keeps its cookie unless change-on-failure says otherwise.
    let keep = retried_with_cookie && !send.affinity_change_on_failure;
    if affinity != Some(value.as_str()) && !keep {
        let mut cookie = format!("{name}={value}{}", send.affinity_attributes);
        if let Some(secs) = send.affinity_expires {
            let at = std::time::SystemTime::now() + std::time::Duration::from_secs(secs);
            cookie.push_str("; Expires=");
            cookie.push_str(&httpdate::fmt_http_date(at));
        }
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            headers.append(header::SET_COOKIE, v);
        }
    }
}

/// The request sent upstream, from its parts.
fn upstream_request(
    body: UpstreamBody,
    method: http::Method,
    uri: Uri,
    version: Version,
    headers: http::HeaderMap,
) -> Request<UpstreamBody> {
    let mut up = Request::new(body);
    *up.method_mut() = method;
    *up.uri_mut() = uri;
    *up.version_mut() = version;
    *up.headers_mut() = headers;
    up
}

/// Copies bytes both ways between the client's and the backend's upgraded connections until either side closes.
async fn tunnel(
    down: hyper::upgrade::OnUpgrade,
    up: hyper::upgrade::OnUpgrade,
    _in_flight: (crate::upstream::InFlight, Option<traffic::ConnHold>),
) {
    let (down, up) = match tokio::try_join!(down, up) {
        Ok(x) => x,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let (mut down, mut up) = (hyper_util::rt::TokioIo::new(down), hyper_util::rt::TokioIo::new(up));
    if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
        tracing::debug!(error = %e, "tunnel closed with an error");
    }
}

/// The `Content-Length` of a message, when it has one.
fn content_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// A redirect answered by the gateway itself.
fn redirect(status: http::StatusCode, location: HeaderValue) -> Response<ProxyBody> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(format!("{status}\n")))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::LOCATION, location);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// The upstream target of a rewritten path: its path part normalised and checked like a request's (so a capture
/// cannot climb out of the root or smuggle an encoded slash), its query (from a `?` in the rewrite target)
/// followed by the request's, unless the target ended with `?` (nginx's rule).
fn rewritten_target(rewritten: &str, query: Option<&str>) -> Result<PathAndQuery, ProxyError> {
    let (path, own_query) = match rewritten.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rewritten, None),
    };
    let path = normalize_path(path).map_err(|e| ProxyError::BadRequest(path_reason(e)))?;
    let query = match (own_query, query) {
        (Some(""), _) => None,
        (Some(own), Some(q)) => Some(format!("{own}&{q}")),
        (Some(own), None) => Some(own.to_string()),
        (None, q) => q.map(str::to_string),
    };
    let joined = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.into_owned(),
    };
    PathAndQuery::try_from(joined).map_err(|_| ProxyError::BadRequest("invalid rewritten request target"))
}

/// 308 to the same host, path and query over HTTPS (the port only when it is not 443).
fn redirect_to_https(host: &str, port: Option<u16>, path: &str, query: Option<&str>) -> Response<ProxyBody> {
    let location = absolute_url("https", host, port.filter(|p| *p != 443), path, query);
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from_static(
        b"308 Permanent Redirect to HTTPS\n",
    ))));
    *resp.status_mut() = http::StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// `SCHEME://HOST[:PORT]PATH[?QUERY]`, for the gateway's own redirects.
pub(super) fn absolute_url(scheme: &str, host: &str, port: Option<u16>, path: &str, query: Option<&str>) -> String {
    use std::fmt::Write;
    let mut url = String::with_capacity(16 + host.len() + path.len() + query.map_or(0, str::len));
    url.push_str(scheme);
    url.push_str("://");
    url.push_str(host);
    if let Some(p) = port {
        let _ = write!(url, ":{p}");
    }
    url.push_str(path);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

/// `SCHEME://ENDPOINT/PATH?QUERY`, assembled from parts already parsed (the pooled clients connect by authority).
fn upstream_uri(scheme: http::uri::Scheme, endpoint: &crate::upstream::Endpoint, path_and_query: &PathAndQuery) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(scheme);
    parts.authority = Some(endpoint.authority.clone());
    parts.path_and_query = Some(path_and_query.clone());
    Uri::from_parts(parts).expect("scheme, authority and path make a URI")
}

/// The request's host header value: `Host` on HTTP/1 (exactly one on HTTP/1.1), `:authority` (or `Host`) on
/// HTTP/2. `None` only for HTTP/1.0 without a Host.
fn request_host(version: &Version, uri: &Uri, headers: &http::HeaderMap) -> Result<Option<HeaderValue>, ProxyError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("several Host headers"));
    }
    if *version == Version::HTTP_2 {
        let auth = uri
            .authority()
            .map(|a| HeaderValue::from_str(a.as_str()).map_err(|_| ProxyError::BadRequest("malformed :authority")))
            .transpose()?;
        return match (auth, first) {
            (Some(a), Some(h)) => {
                let same = match (a.to_str(), h.to_str()) {
                    (Ok(x), Ok(y)) => matches!((normalize_host(x), normalize_host(y)), (Ok(p), Ok(q)) if p == q),
                    _ => false,
                };
                if !same {
                    return Err(ProxyError::BadRequest("Host and :authority disagree"));
                }
                Ok(Some(a))
            }
            (Some(a), None) => Ok(Some(a)),
            (None, Some(h)) => Ok(Some(h.clone())),
            (None, None) => Err(ProxyError::BadRequest("missing :authority")),
        };
    }
    match first {
        Some(h) => Ok(Some(h.clone())),
        None if *version == Version::HTTP_11 => Err(ProxyError::BadRequest("missing Host header")),
        None => Ok(None),
    }
}

fn path_reason(e: crate::normalize::PathError) -> &'static str {
    use crate::normalize::PathError::*;
    match e {
        NotAbsolute => "request target is not an absolute path",
        BadEscape => "bad percent-escape in path",
        EncodedSlash => "encoded slash in path",
        EncodedBackslash => "encoded backslash in path",
        EncodedNul => "encoded NUL in path",
        Backslash => "backslash in path",
        ControlChar => "control character in path",
        AboveRoot => "path climbs above the root",
        DotSegmentParameters => "dot segment with parameters in path",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::testing::TestCa;

    /// `a.test` has its own certificate, `*.w.test` a wildcard one, everything else the default.
    fn certs(ca: &TestCa) -> Arc<CertSnapshot> {
        Arc::new(CertSnapshot::new(
            ca.leaf(&["portico.invalid"], "default"),
            [
                ("a.test".to_owned(), ca.leaf(&["a.test"], "a")),
                ("*.w.test".to_owned(), ca.leaf(&["*.w.test"], "w")),
            ],
        ))
    }

    /// The connection a handshake with `sni` would leave.
    fn conn(certs: &Arc<CertSnapshot>, sni: Option<&str>) -> TlsConn {
        TlsConn {
            presented: certs.resolve_cert(sni).clone(),
            certs: certs.clone(),
            version: "TLSv1.3",
            sni: sni.map(Arc::from),
            client_auth: 0,
            client_cert: None,
        }
    }

    #[test]
    fn with_sni_only_hosts_the_certificate_stands_for() {
        let ca = TestCa::new();
        let certs = certs(&ca);
        let a = conn(&certs, Some("a.test"));
        assert!(a.may_serve("a.test"));
        // Domain fronting / HTTP/2 reuse: another host with its own certificate, or one with none.
        assert!(!a.may_serve("x.w.test"));
        assert!(!a.may_serve("plain.test"));
        let w = conn(&certs, Some("x.w.test"));
        assert!(w.may_serve("y.w.test"), "the wildcard certificate covers it by name");
        assert!(!w.may_serve("a.test"));
        // Unknown SNI got the default, which a new connection for a host without a certificate gets too.
        let unknown = conn(&certs, Some("unknown.test"));
        assert!(unknown.may_serve("plain.test"));
        assert!(!unknown.may_serve("a.test") && !unknown.may_serve("x.w.test"));
    }

    #[test]
    fn without_sni_host_routes() {
        // Changed 2026-12-05: a connection without SNI used to get 421 for hosts with their own certificate.
        let ca = TestCa::new();
        let certs = certs(&ca);
        let none = conn(&certs, None);
        for host in ["a.test", "x.w.test", "plain.test", ""] {
            assert!(none.may_serve(host), "{host}");
        }
    }
}
