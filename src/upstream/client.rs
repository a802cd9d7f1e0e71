//! The upstream HTTP/1.1 client: one keep-alive pool shared by all listener sets, with connect and
//! response-header timeouts. Failures are classified here, by type, never by message.

use std::error::Error as _;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

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
    client: Client<HttpConnector, UpstreamBody>,
    /// HTTP/2 with prior knowledge, for h2c and gRPC backends.
    h2c: Client<HttpConnector, UpstreamBody>,
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
        let client = builder.build(connector.clone());
        let h2c = builder.http2_only(true).timer(TokioTimer::new()).build(connector);
        Self {
            client,
            h2c,
            response_header_timeout: cfg.response_header_timeout,
        }
    }

    /// Sends `req` (its URI in absolute form naming the endpoint) and waits for the response headers, up to
    /// `timeout` or the configured default.
    pub async fn send(
        &self,
        req: Request<UpstreamBody>,
        timeout: Option<Duration>,
        h2c: bool,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let client = if h2c { &self.h2c } else { &self.client };
        match tokio::time::timeout(timeout.unwrap_or(self.response_header_timeout), client.request(req)).await {
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
