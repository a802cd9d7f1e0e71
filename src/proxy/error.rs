//! The one place that maps a failed request to a status code, a short plain-text body and whose fault it was.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full};

use super::ProxyBody;
use crate::upstream::client::UpstreamError;

/// Why the gateway answered a request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("no route")]
    NoRoute,
    #[error("no ready endpoint")]
    NoEndpoint,
    /// The weights chose a backend reference that cannot be served (Gateway API: missing, not granted).
    #[error("invalid backend")]
    InvalidBackend,
    #[error("host not covered by this connection's certificate")]
    Misdirected,
    #[error("client address not allowed")]
    Forbidden,
    #[error("request body too large")]
    PayloadTooLarge,
    /// The request head (or, over HTTP/2, its fields counted as HTTP/1.1 would send them) is over the header
    /// budget.
    #[error("request header fields too large")]
    HeadersTooLarge,
    /// A transfer coding the gateway does not know (RFC 9112 section 6.1).
    #[error("unknown transfer coding")]
    UnknownCoding,
    /// The client's request body broke its own framing (a malformed chunk) or ended before its length.
    #[error("malformed or incomplete request body")]
    ClientBody,
    /// The client paused its request body longer than the body-read timeout before anything was answered.
    #[error("request body timed out")]
    RequestTimeout,
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

impl From<crate::http1::FramingError> for ProxyError {
    fn from(e: crate::http1::FramingError) -> Self {
        match e {
            crate::http1::FramingError::Malformed(why) => ProxyError::BadRequest(why),
            crate::http1::FramingError::UnknownCoding => ProxyError::UnknownCoding,
        }
    }
}

/// Whose fault a failure was, for logs and (later) metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Client,
    Config,
    Upstream,
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoEndpoint => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::InvalidBackend => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::Forbidden => StatusCode::FORBIDDEN,
            ProxyError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::UnknownCoding => StatusCode::NOT_IMPLEMENTED,
            ProxyError::ClientBody => StatusCode::BAD_REQUEST,
            ProxyError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Upstream(
                UpstreamError::Connect | UpstreamError::Reset | UpstreamError::Tls | UpstreamError::Invalid,
            ) => StatusCode::BAD_GATEWAY,
            ProxyError::Upstream(UpstreamError::ConnectTimeout | UpstreamError::ResponseTimeout) => {
                StatusCode::GATEWAY_TIMEOUT
            }
        }
    }

    pub fn fault(&self) -> Fault {
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::Misdirected
            | ProxyError::Forbidden
            | ProxyError::PayloadTooLarge
            | ProxyError::HeadersTooLarge
            | ProxyError::UnknownCoding
            | ProxyError::ClientBody
            | ProxyError::RequestTimeout => Fault::Client,
            ProxyError::NoRoute | ProxyError::NoEndpoint | ProxyError::InvalidBackend => Fault::Config,
            ProxyError::Upstream(_) => Fault::Upstream,
        }
    }

    fn body(&self) -> Bytes {
        match self {
            ProxyError::BadRequest(why) => Bytes::from(format!("400 Bad Request: {why}\n")),
            ProxyError::NoRoute => Bytes::from_static(b"404 Not Found: no route for this host and path\n"),
            ProxyError::NoEndpoint => Bytes::from_static(b"503 Service Unavailable: no ready endpoint\n"),
            ProxyError::InvalidBackend => Bytes::from_static(b"500 Internal Server Error: invalid backend reference\n"),
            ProxyError::Forbidden => Bytes::from_static(b"403 Forbidden: client address not allowed\n"),
            ProxyError::PayloadTooLarge => Bytes::from_static(b"413 Payload Too Large: request body over this route's limit\n"),
            ProxyError::HeadersTooLarge => {
                Bytes::from_static(b"431 Request Header Fields Too Large: over the header budget\n")
            }
            ProxyError::UnknownCoding => Bytes::from_static(b"501 Not Implemented: unknown transfer coding\n"),
            ProxyError::ClientBody => Bytes::from_static(b"400 Bad Request: malformed or incomplete request body\n"),
            ProxyError::Misdirected => Bytes::from_static(
                b"421 Misdirected Request: this connection's certificate does not cover that host; open a new connection\n",
            ),
            ProxyError::Upstream(UpstreamError::Connect) => {
                Bytes::from_static(b"502 Bad Gateway: upstream connection failed\n")
            }
            ProxyError::Upstream(UpstreamError::Reset) => {
                Bytes::from_static(b"502 Bad Gateway: upstream closed the connection\n")
            }
            ProxyError::Upstream(UpstreamError::Tls) => {
                Bytes::from_static(b"502 Bad Gateway: TLS handshake with the upstream failed\n")
            }
            ProxyError::Upstream(UpstreamError::Invalid) => {
                Bytes::from_static(b"502 Bad Gateway: the upstream's response cannot be forwarded\n")
            }
            ProxyError::RequestTimeout => {
                Bytes::from_static(b"408 Request Timeout: the request body stalled\n")
            }
            ProxyError::Upstream(_) => Bytes::from_static(b"504 Gateway Timeout: upstream did not answer in time\n"),
        }
    }

    pub fn response(&self) -> Response<ProxyBody> {
        let mut resp = Response::new(Either::Right(Full::new(self.body())));
        *resp.status_mut() = self.status();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let ProxyError::BadRequest(_)
        | ProxyError::PayloadTooLarge
        | ProxyError::RequestTimeout
        | ProxyError::HeadersTooLarge
        | ProxyError::UnknownCoding
        | ProxyError::ClientBody = self
        {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(ProxyError::BadRequest("x").status(), 400);
        assert_eq!(ProxyError::NoRoute.status(), 404);
        assert_eq!(ProxyError::NoEndpoint.status(), 503);
        assert_eq!(ProxyError::Misdirected.status(), 421);
        assert_eq!(ProxyError::Forbidden.status(), 403);
        assert_eq!(ProxyError::PayloadTooLarge.status(), 413);
        assert_eq!(ProxyError::from(UpstreamError::Connect).status(), 502);
        assert_eq!(ProxyError::from(UpstreamError::Reset).status(), 502);
        assert_eq!(ProxyError::from(UpstreamError::Tls).status(), 502);
        assert_eq!(ProxyError::RequestTimeout.status(), 408);
        assert_eq!(ProxyError::RequestTimeout.fault(), Fault::Client);
        assert_eq!(ProxyError::HeadersTooLarge.status(), 431);
        assert_eq!(ProxyError::UnknownCoding.status(), 501);
        assert_eq!(
            (ProxyError::ClientBody.status().as_u16(), ProxyError::ClientBody.fault()),
            (400, Fault::Client)
        );
        assert_eq!(ProxyError::from(UpstreamError::Invalid).status(), 502);
        assert_eq!(ProxyError::from(UpstreamError::ConnectTimeout).status(), 504);
        assert_eq!(ProxyError::from(UpstreamError::ResponseTimeout).status(), 504);
        assert_eq!(ProxyError::NoRoute.fault(), Fault::Config);
    }
}
