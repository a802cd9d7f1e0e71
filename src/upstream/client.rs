//! The upstream clients: HTTP/1.1 on each endpoint's own keep-alive connections ([`super::pool`]), HTTP/2 with
//! prior knowledge (h2c, gRPC) through hyper-util's pooled client; connect and response-header timeouts.
//! Failures are classified here, by type, never by message.

use std::error::Error as _;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::time::Instant;
use tokio::net::TcpStream;

use super::Endpoint;

use crate::config::UpstreamConfig;

/// A request body sent upstream: the client's streamed body (with a size limit, `usize::MAX` for none), or
/// nothing (so a request without a body can be sent again on another endpoint).
pub type UpstreamBody = http_body_util::Either<http_body_util::Limited<Incoming>, Empty<Bytes>>;

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
}

impl UpstreamClient {
    pub fn new(cfg: &UpstreamConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(cfg.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(cfg.idle_timeout)
            .pool_max_idle_per_host(256)
            .retry_canceled_requests(false)
            .set_host(false);
        let h2c = builder.http2_only(true).timer(TokioTimer::new()).build(connector);
        Self {
            h2c,
            h1: hyper::client::conn::http1::Builder::new(),
            connect_timeout: cfg.connect_timeout,
            idle_timeout: cfg.idle_timeout,
            response_header_timeout: cfg.response_header_timeout,
        }
    }

    /// Sends `req` (its URI in origin form) over HTTP/1.1 on one of `endpoint`'s pooled connections, or a new
    /// one, and waits for the response headers, up to `timeout` or the configured default (connecting included).
    pub async fn send_h1(
        &self,
        endpoint: &Endpoint,
        req: Request<UpstreamBody>,
        timeout: Option<Duration>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let exchange = async {
            let (mut sender, req) = match endpoint.conns.take(Instant::now(), self.idle_timeout) {
                Some(mut pooled) => match pooled.try_send_request(req).await {
                    Ok(resp) => return Ok(self.keep(endpoint, pooled, resp)),
                    // The keep-alive race: the backend closed this idle connection before any of the request was
                    // written. Nothing reached it, so the request goes out once more on a new connection.
                    Err(mut e) => match e.take_message() {
                        Some(req) => (Box::pin(self.connect(endpoint.addr)).await?, req),
                        None => return Err(UpstreamError::Reset),
                    },
                },
                // Boxed: the connecting state is large and rare; inline it would be moved with every request.
                None => (Box::pin(self.connect(endpoint.addr)).await?, req),
            };
            let resp = sender.send_request(req).await.map_err(|_| UpstreamError::Reset)?;
            Ok(self.keep(endpoint, sender, resp))
        };
        match tokio::time::timeout(timeout.unwrap_or(self.response_header_timeout), exchange).await {
            Err(_) => Err(UpstreamError::ResponseTimeout),
            Ok(r) => r,
        }
    }

    /// Puts a connection back on its endpoint's list after its response headers, unless it was upgraded.
    fn keep(
        &self,
        endpoint: &Endpoint,
        sender: SendRequest<UpstreamBody>,
        resp: Response<Incoming>,
    ) -> Response<Incoming> {
        // An upgraded connection belongs to its tunnel; any other goes back, to be reused once its body ends.
        if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            endpoint.conns.put(sender, Instant::now());
        }
        resp
    }

    async fn connect(&self, addr: SocketAddr) -> Result<SendRequest<UpstreamBody>, UpstreamError> {
        let stream = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
            Err(_) => return Err(UpstreamError::ConnectTimeout),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => return Err(UpstreamError::ConnectTimeout),
            Ok(Err(_)) => return Err(UpstreamError::Connect),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = self
            .h1
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|_| UpstreamError::Connect)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::trace!(%addr, error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Sends `req` (its URI in absolute form naming the endpoint) over HTTP/2 with prior knowledge and waits for
    /// the response headers, up to `timeout` or the configured default.
    pub async fn send_h2c(
        &self,
        req: Request<UpstreamBody>,
        timeout: Option<Duration>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(timeout.unwrap_or(self.response_header_timeout), self.h2c.request(req)).await {
            Err(_) => Err(UpstreamError::ResponseTimeout),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) if e.is_connect() => {
                let mut src = e.source();
                while let Some(s) = src {
                    if let Some(io) = s.downcast_ref::<std::io::Error>() {
                        if io.kind() == std::io::ErrorKind::TimedOut {
                            return Err(UpstreamError::ConnectTimeout);
                        }
                    }
                    src = s.source();
                }
                Err(UpstreamError::Connect)
            }
            Ok(Err(_)) => Err(UpstreamError::Reset),
        }
    }
}
