//! The upstream clients: HTTP/1.1 on each endpoint's own keep-alive connections ([`super::pool`]), HTTP/2 with
//! prior knowledge (h2c, gRPC) through hyper-util's pooled client, and one pooled client per upstream TLS policy
//! (`HTTPS`, `GRPCS`); connect and response-header timeouts. Failures are classified here, by type, never by
//! message.

use std::error::Error as StdError;
use std::future::Future;

use futures::future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_rustls::{DefaultServerNameResolver, FixedServerNameResolver, HttpsConnector, ResolveServerName};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Builder, Client};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::body::{ClientBodyError, Received, RequestBody, RequestBodyTimeout};
use super::budget::RetryBudgetConfig;
use super::pool::Pooled;
use super::watch::Watch;
use super::{h1, Endpoint};
use crate::config::UpstreamConfig;
use crate::model::annotations::UpstreamTls;

/// A request body sent upstream: the client's streamed body (with a size limit and an idle timeout), or nothing
/// (so a request without a body can be sent again on another endpoint).
pub type UpstreamBody = http_body_util::Either<RequestBody, Empty<Bytes>>;

/// A pooled client speaking TLS to backends.
pub type TlsClient = Client<HttpsConnector<HttpConnector>, UpstreamBody>;

/// Why an upstream exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// Could not connect (refused, unreachable). Nothing was sent: safe to try another endpoint.
    #[error("upstream connection failed")]
    Connect,
    /// Connecting took longer than the connect timeout.
    #[error("upstream connect timed out")]
    ConnectTimeout,
    /// The response headers did not arrive in time.
    #[error("upstream response timed out")]
    ResponseTimeout,
    /// The connection broke after the request was (partly) sent.
    #[error("upstream connection broke before a response")]
    Reset,
    /// The TLS handshake with the backend failed (certificate not trusted, wrong name, no common protocol).
    #[error("upstream TLS handshake failed")]
    Tls,
    /// The backend's response cannot be forwarded: a framing the gateway cannot re-frame (a transfer coding other
    /// than a lone `chunked`, disagreeing lengths), or a 101 to a protocol that was not asked for.
    #[error("upstream response cannot be forwarded")]
    Invalid,
}

impl UpstreamError {
    /// Whether nothing of the request reached the backend.
    pub fn nothing_sent(self) -> bool {
        matches!(
            self,
            UpstreamError::Connect | UpstreamError::ConnectTimeout | UpstreamError::Tls
        )
    }
}

/// Why sending a request failed: the backend, or the client's own body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    Upstream(UpstreamError),
    /// The client paused its body longer than the body-read timeout.
    RequestBodyTimeout,
    /// The client's body went over the route's size limit.
    RequestBodyTooLarge,
    /// The client's body broke its framing or ended early (the client's fault, never the endpoint's).
    ClientBody,
}

/// Which pool a request goes through.
#[derive(Clone, Copy)]
pub enum Via<'a> {
    /// HTTP/1.1 through hyper's client: requests with a body, upgrades.
    Http1,
    /// HTTP/1.1 through the gateway's own client ([`super::h1`]): requests without a body that ask no upgrade.
    Http1Bodiless,
    H2c,
    Tls(&'a TlsClient),
}

#[derive(Clone)]
pub struct UpstreamClient {
    /// HTTP/2 with prior knowledge, for h2c and gRPC backends.
    h2c: Client<HttpConnector, UpstreamBody>,
    /// HTTP/1.1 connections of the endpoints' own pools ([`super::pool`]).
    h1: hyper::client::conn::http1::Builder,
    connect_timeout: Duration,
    idle_timeout: Duration,
    response_header_timeout: Duration,
    read_timeout: Duration,
    /// How often an HTTP/1.1 connection's task looks at its [`Watch`] when no wait has a shorter limit.
    watch_check: Duration,
    retry_budget: RetryBudgetConfig,
}

fn connector(cfg: &UpstreamConfig) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(cfg.connect_timeout));
    connector.set_nodelay(true);
    connector
}

fn builder(cfg: &UpstreamConfig) -> Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(cfg.idle_timeout)
        .pool_max_idle_per_host(256)
        // A request that never started on a pooled connection the backend had closed is sent again on a new
        // one (the keep-alive race): nothing of it reached the backend.
        .retry_canceled_requests(true)
        .set_host(false);
    builder
}

/// A pooled client for one upstream TLS policy: `name` is sent as SNI and verified (`None`: the endpoint's
/// address, no SNI); `h2` offers ALPN `h2` and speaks HTTP/2 only, else `http/1.1`.
pub fn build_tls_client(
    cfg: &UpstreamConfig,
    tls: &UpstreamTls,
    name: Option<String>,
    h2: bool,
) -> Result<TlsClient, String> {
    let roots = match (tls.verify, tls.system_roots, tls.ca_pem.as_deref()) {
        (false, _, _) => super::tls::Roots::Any,
        (true, true, _) => super::tls::Roots::System,
        (true, false, Some(pem)) => super::tls::Roots::Pem(pem),
        (true, false, None) => return Err("verification is on but there is no CA".into()),
    };
    let alpn: &[u8] = if h2 { b"h2" } else { b"http/1.1" };
    let config = super::tls::verifying_config(roots, &tls.subject_alt_names, alpn)?;
    let mut http = connector(cfg);
    http.enforce_http(false);
    let resolver: Arc<dyn ResolveServerName + Send + Sync> = match name {
        Some(n) => Arc::new(FixedServerNameResolver::new(
            rustls_pki_types::ServerName::try_from(n).map_err(|e| e.to_string())?,
        )),
        None => Arc::new(DefaultServerNameResolver::default()),
    };
    let connector = HttpsConnector::new(http, config, true, resolver);
    let mut builder = builder(cfg);
    if h2 {
        builder.http2_only(true).timer(TokioTimer::new());
    }
    Ok(builder.build(connector))
}

impl UpstreamClient {
    pub fn new(cfg: &UpstreamConfig) -> Self {
        let mut http = connector(cfg);
        http.enforce_http(true);
        let h2c = builder(cfg).http2_only(true).timer(TokioTimer::new()).build(http);
        Self {
            h2c,
            h1: hyper::client::conn::http1::Builder::new(),
            connect_timeout: cfg.connect_timeout,
            idle_timeout: cfg.idle_timeout,
            response_header_timeout: cfg.response_header_timeout,
            read_timeout: cfg.read_timeout,
            watch_check: cfg
                .response_header_timeout
                .min(cfg.read_timeout)
                .max(Duration::from_millis(10)),
            retry_budget: cfg.retry_budget,
        }
    }

    /// The default longest pause between two reads of a response body.
    pub fn read_timeout(&self) -> Duration {
        self.read_timeout
    }

    pub fn retry_budget(&self) -> &RetryBudgetConfig {
        &self.retry_budget
    }

    /// Sends `req` to `endpoint` and waits for the response headers, up to `timeout` or the configured default.
    /// HTTP/1.1 takes the URI in origin form and goes out on one of the endpoint's pooled connections, or a new
    /// one; h2c and TLS take it in absolute form and go through their pooled clients. With the response comes,
    /// for HTTP/1.1, what keeps the body's read timeout.
    pub fn send<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        req: Request<UpstreamBody>,
        timeout: Option<Duration>,
        via: Via<'a>,
    ) -> impl Future<Output = Result<Response<Received>, SendError>> + Send + 'a {
        self.send_with(endpoint, req, timeout, None, via)
    }

    /// [`Client::send`] with a connect timeout replacing the configured one (an Ingress's
    /// `proxy-connect-timeout`) for HTTP/1.1; h2c and TLS backends connect through their pooled clients, within
    /// the configured timeout.
    pub fn send_with<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        req: Request<UpstreamBody>,
        timeout: Option<Duration>,
        connect: Option<Duration>,
        via: Via<'a>,
    ) -> impl Future<Output = Result<Response<Received>, SendError>> + Send + 'a {
        let timeout = timeout.unwrap_or(self.response_header_timeout);
        let connect = connect.unwrap_or(self.connect_timeout);
        // Not an async fn: the HTTP/1.1 futures are returned as they are, without a wrapper holding a second copy
        // of the request.
        match via {
            Via::Http1Bodiless => {
                future::Either::Left(future::Either::Left(self.send_own(endpoint, req, timeout, connect)))
            }
            Via::Http1 => future::Either::Left(future::Either::Right(self.send_h1(endpoint, req, timeout, connect))),
            Via::H2c => future::Either::Right(Self::send_pooled(Box::pin(self.h2c.request(req)), timeout)),
            Via::Tls(c) => future::Either::Right(Self::send_pooled(Box::pin(c.request(req)), timeout)),
        }
    }

    /// A request without a body through the gateway's own client, on one of the endpoint's idle connections or a
    /// new one. A reused connection that turns out closed before any of the response arrived (the backend closed
    /// it while idle: the keep-alive race) is replaced by a new one once, for a method that may be repeated.
    async fn send_own(
        &self,
        endpoint: &Endpoint,
        mut req: Request<UpstreamBody>,
        timeout: Duration,
        connect: Duration,
    ) -> Result<Response<Received>, SendError> {
        let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let (mut conn, mut reused) = match endpoint.idle.take(Instant::now(), self.idle_timeout) {
            Some(conn) => (conn, true),
            None => (Box::pin(self.connect_own(endpoint.addr, connect)).await?, false),
        };
        loop {
            match conn.exchange(req.method(), target, req.headers(), timeout).await {
                Ok(head) => {
                    let resp = head.into_response(conn, &endpoint.idle);
                    // The head is written: its map serves the next request parsed on this thread.
                    crate::http1::maps::give(std::mem::take(req.headers_mut()));
                    return Ok(resp.map(Received::Own));
                }
                Err(h1::Failure::Timeout) => return Err(SendError::Upstream(UpstreamError::ResponseTimeout)),
                Err(h1::Failure::Broken { received: false }) if reused && repeatable(req.method()) => {
                    conn = Box::pin(self.connect_own(endpoint.addr, connect)).await?;
                    reused = false;
                }
                Err(h1::Failure::Invalid) => return Err(SendError::Upstream(UpstreamError::Invalid)),
                Err(h1::Failure::Broken { .. }) => return Err(SendError::Upstream(UpstreamError::Reset)),
            }
        }
    }

    async fn connect_own(&self, addr: SocketAddr, connect: Duration) -> Result<Box<h1::Conn>, SendError> {
        Ok(h1::Conn::new(self.dial(addr, connect).await?, self.watch_check))
    }

    /// h2c and TLS through hyper-util's pooled clients (their states are large and rarer than HTTP/1.1: boxed).
    async fn send_pooled(
        sent: Pin<Box<hyper_util::client::legacy::ResponseFuture>>,
        timeout: Duration,
    ) -> Result<Response<Received>, SendError> {
        match tokio::time::timeout(timeout, sent).await {
            Err(_) => Err(SendError::Upstream(UpstreamError::ResponseTimeout)),
            Ok(Ok(mut resp)) => {
                if resp.version() < http::Version::HTTP_2
                    && crate::http1::framing::clean_response(resp.status(), resp.headers_mut()).is_err()
                {
                    return Err(SendError::Upstream(UpstreamError::Invalid));
                }
                Ok(resp.map(Received::hyper))
            }
            Ok(Err(e)) => Err(classify(&e)),
        }
    }

    /// HTTP/1.1 on the endpoint's own connections. No timer per request: the connection's task enforces
    /// `timeout` through its [`Watch`].
    async fn send_h1(
        &self,
        endpoint: &Endpoint,
        req: Request<UpstreamBody>,
        timeout: Duration,
        connect: Duration,
    ) -> Result<Response<Received>, SendError> {
        let now = tokio::time::Instant::now();
        let Some((mut pooled, watch)) = endpoint.conns.take(now.into_std(), self.idle_timeout) else {
            // Boxed, like the keep-alive race below: connecting is rare, and its state inline would be moved with
            // every request.
            return Box::pin(self.send_h1_new(endpoint, req, timeout, connect)).await;
        };
        watch.begin(now, timeout);
        match pooled.try_send_request(req).await {
            Ok(resp) => {
                watch.end();
                self.keep(endpoint, (pooled, watch), resp)
            }
            Err(_) if watch.expired() => Err(SendError::Upstream(UpstreamError::ResponseTimeout)),
            // The keep-alive race: the backend closed this idle connection before any of the request was written.
            // Nothing reached it, so the request goes out once more on a new connection.
            Err(mut e) => match e.take_message() {
                Some(req) => Box::pin(self.send_h1_new(endpoint, req, timeout, connect)).await,
                None => Err(classify_hyper(e.error())),
            },
        }
    }

    /// HTTP/1.1 on a new connection to `endpoint`.
    async fn send_h1_new(
        &self,
        endpoint: &Endpoint,
        req: Request<UpstreamBody>,
        timeout: Duration,
        connect: Duration,
    ) -> Result<Response<Received>, SendError> {
        let (mut sender, watch) = self.connect(endpoint.addr, connect).await?;
        watch.begin(tokio::time::Instant::now(), timeout);
        match sender.send_request(req).await {
            Ok(resp) => {
                watch.end();
                self.keep(endpoint, (sender, watch), resp)
            }
            Err(_) if watch.expired() => Err(SendError::Upstream(UpstreamError::ResponseTimeout)),
            Err(e) => Err(classify_hyper(&e)),
        }
    }

    /// Puts a connection back on its endpoint's list after its response headers, unless it was upgraded (an
    /// upgraded connection belongs to its tunnel, which has no read timeout). Any other goes back, to be reused
    /// once its body ends. The response's framing fields are checked and cleaned first
    /// ([`crate::http1::framing::clean_response`]); a framing the gateway cannot forward fails the exchange, and
    /// the connection is closed.
    fn keep(
        &self,
        endpoint: &Endpoint,
        (sender, watch): Pooled,
        mut resp: Response<Incoming>,
    ) -> Result<Response<Received>, SendError> {
        if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            return Ok(resp.map(Received::hyper));
        }
        if crate::http1::framing::clean_response(resp.status(), resp.headers_mut()).is_err() {
            return Err(SendError::Upstream(UpstreamError::Invalid));
        }
        endpoint.conns.put((sender, watch.clone()), Instant::now());
        Ok(resp.map(|body| Received::Hyper {
            body,
            watch: Some(watch),
        }))
    }

    /// A TCP connection to `addr`, within the connect timeout, without Nagle's delay.
    async fn dial(&self, addr: SocketAddr, connect: Duration) -> Result<TcpStream, SendError> {
        let fail = |e| Err(SendError::Upstream(e));
        let stream = match tokio::time::timeout(connect, TcpStream::connect(addr)).await {
            Err(_) => return fail(UpstreamError::ConnectTimeout),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => return fail(UpstreamError::ConnectTimeout),
            Ok(Err(_)) => return fail(UpstreamError::Connect),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn connect(&self, addr: SocketAddr, connect: Duration) -> Result<Pooled, SendError> {
        let stream = self.dial(addr, connect).await?;
        let (sender, conn) = self
            .h1
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|_| SendError::Upstream(UpstreamError::Connect))?;
        let check = self.watch_check;
        let watch = Arc::new(Watch::new(check));
        let guard = watch.clone();
        tokio::spawn(async move {
            match guard.guard(conn.with_upgrades(), check).await {
                Some(Ok(())) => {}
                Some(Err(e)) => tracing::trace!(%addr, error = %e, "upstream connection ended with an error"),
                None => tracing::debug!(%addr, "upstream wait ran over its timeout; connection closed"),
            }
        });
        Ok((sender, watch))
    }
}

/// Methods whose request may be sent again after a connection broke without an answer (RFC 9110 section 9.2.2,
/// without a body here).
pub fn repeatable(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::TRACE
            | http::Method::PUT
            | http::Method::DELETE
    )
}

/// Finds an error of type `T` in a chain of sources, looking inside `io::Error`s too (their `source` skips the
/// error they wrap).
fn find<'a, T: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<T>() {
            return Some(t);
        }
        if let Some(inner) = err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            if let Some(t) = find::<T>(inner) {
                return Some(t);
            }
        }
        cur = err.source();
    }
    None
}

/// The client's own body failing shows up as the exchange's error.
fn body_error(e: &(dyn StdError + 'static)) -> Option<SendError> {
    if find::<RequestBodyTimeout>(e).is_some() {
        return Some(SendError::RequestBodyTimeout);
    }
    if find::<http_body_util::LengthLimitError>(e).is_some() {
        return Some(SendError::RequestBodyTooLarge);
    }
    if find::<ClientBodyError>(e).is_some() {
        return Some(SendError::ClientBody);
    }
    None
}

/// An exchange on an HTTP/1.1 connection that was established: the client's body, else a reset.
fn classify_hyper(e: &hyper::Error) -> SendError {
    body_error(e).unwrap_or(SendError::Upstream(UpstreamError::Reset))
}

fn classify(e: &hyper_util::client::legacy::Error) -> SendError {
    if let Some(b) = body_error(e) {
        return b;
    }
    if find::<rustls::Error>(e).is_some() {
        return SendError::Upstream(UpstreamError::Tls);
    }
    if e.is_connect() {
        let timed_out = find::<std::io::Error>(e).is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
        return SendError::Upstream(if timed_out {
            UpstreamError::ConnectTimeout
        } else {
            UpstreamError::Connect
        });
    }
    SendError::Upstream(UpstreamError::Reset)
}
