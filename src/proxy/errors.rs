//! Custom error pages, the respond phase's last step: when a route with error pages (`Filter::ErrorPages`) ends in
//! one of its codes, the answer is replaced by its error backend's answer to a `GET /` carrying ingress-nginx's
//! headers (`X-Code`, `X-Format`, `X-Original-URI`, `X-Namespace`, `X-Ingress-Name`, `X-Service-Name`,
//! `X-Service-Port`, `X-Request-ID`), with the original status.
//!
//! What is replaced: the backend's responses with a listed code (unless only `default-backend` is set), and the
//! gateway's own answers from the send phase (503 without a ready endpoint, 502 and 504 when the backend fails).
//! Answers of the route's filters (401 of auth, 403 of an allowlist, a limit's status, CORS preflights) are kept:
//! they carry headers the client needs (`WWW-Authenticate`, a sign-in redirect).
//!
//! Fail open to the original: when the error backend has no ready endpoint, cannot be reached, times out or
//! answers 5xx, the original response is served as it was.
//!
//! Cost: routes without error pages pay a branch (`Target::error_page` is `None`); routes with them copy the
//! request's Accept, X-Request-ID and target (reference counts) before sending, and a binary search of the codes
//! per response.

use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Either, Empty};

use super::error::ProxyError;
use super::{filters, headers, ConnInfo, Proxy, ProxyBody};
use crate::model::route::{ErrorPages, Filter};
use crate::upstream::body::ResponseBody;
use crate::upstream::client::Via;
use crate::upstream::{Backend, PickContext};

const X_CODE: HeaderName = HeaderName::from_static("x-code");
const X_FORMAT: HeaderName = HeaderName::from_static("x-format");
const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
const X_NAMESPACE: HeaderName = HeaderName::from_static("x-namespace");
const X_INGRESS_NAME: HeaderName = HeaderName::from_static("x-ingress-name");
const X_SERVICE_NAME: HeaderName = HeaderName::from_static("x-service-name");
const X_SERVICE_PORT: HeaderName = HeaderName::from_static("x-service-port");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the route phase copies out for a route with error pages (reference counts).
pub(super) struct ErrorTarget {
    /// The error backend's live state.
    pub backend: Arc<Backend>,
    /// The route's origin, `namespace/name`.
    pub origin: Arc<str>,
    /// The backend that serves the request, `namespace/service:port`.
    pub service: Arc<str>,
}

/// An error page waiting for the response: the target and what of the request its headers need.
pub(super) struct Pending {
    target: ErrorTarget,
    filters: Arc<[Filter]>,
    accept: Option<HeaderValue>,
    request_id: Option<HeaderValue>,
    original_uri: Option<HeaderValue>,
    host: Option<HeaderValue>,
}

impl Pending {
    pub(super) fn new(
        target: ErrorTarget,
        filters: Arc<[Filter]>,
        uri: &Uri,
        request: &http::HeaderMap,
        host: Option<&HeaderValue>,
    ) -> Self {
        Self {
            target,
            filters,
            accept: request.get(header::ACCEPT).cloned(),
            request_id: request.get(&X_REQUEST_ID).cloned(),
            original_uri: uri
                .path_and_query()
                .and_then(|pq| HeaderValue::from_str(pq.as_str()).ok()),
            host: host.cloned(),
        }
    }

    /// The GET sent to the error backend for `status`.
    fn request(&self, status: StatusCode) -> Request<crate::upstream::client::UpstreamBody> {
        let mut req = Request::new(Either::Right(Empty::new()));
        *req.uri_mut() = Uri::from_static("/");
        let h = req.headers_mut();
        if let Some(host) = &self.host {
            h.insert(header::HOST, host.clone());
        }
        h.insert(X_CODE, HeaderValue::from(status.as_u16()));
        if let Some(v) = &self.accept {
            h.insert(X_FORMAT, v.clone());
        }
        if let Some(v) = &self.original_uri {
            h.insert(X_ORIGINAL_URI, v.clone());
        }
        let origin: &str = &self.target.origin;
        let (namespace, ingress) = origin.split_once('/').unwrap_or(("", origin));
        let service = self
            .target
            .service
            .split_once('/')
            .map_or(&*self.target.service, |(_, s)| s);
        let (service, port) = service.rsplit_once(':').unwrap_or((service, ""));
        for (name, value) in [
            (X_NAMESPACE, namespace),
            (X_INGRESS_NAME, ingress),
            (X_SERVICE_NAME, service),
            (X_SERVICE_PORT, port),
        ] {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(name, v);
            }
        }
        if let Some(v) = &self.request_id {
            h.insert(X_REQUEST_ID, v.clone());
        }
        req
    }
}

impl Proxy {
    /// Respond, last step: the outcome of the send phase, or the error page in its place when the route's error
    /// pages want its status and the error backend answers.
    pub(super) async fn error_page(
        &self,
        conn: &ConnInfo,
        pending: Pending,
        out: Result<Response<ProxyBody>, ProxyError>,
        replaced: &mut Option<ProxyError>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (status, own) = match &out {
            Ok(resp) => (resp.status(), false),
            Err(e) => (e.status(), true),
        };
        if !ErrorPages::of(&pending.filters).is_some_and(|p| p.wants(status, own)) {
            return out;
        }
        match self.fetch_page(conn, &pending, status).await {
            Some(page) => {
                if let Err(e) = out {
                    *replaced = Some(e);
                }
                Ok(page)
            }
            None => out,
        }
    }

    /// The error backend's page for `status` (`None`: no endpoint, unreachable, timed out, or 5xx).
    async fn fetch_page(&self, conn: &ConnInfo, pending: &Pending, status: StatusCode) -> Option<Response<ProxyBody>> {
        let backend = &pending.target.backend;
        let cx = PickContext {
            client: None,
            cookie: None,
        };
        let Some(endpoint) = backend.pick(&cx) else {
            tracing::debug!(backend = %backend.id, %status, "error backend has no ready endpoint; original response served");
            return None;
        };
        let in_flight = backend.start(endpoint);
        let sent = self
            .client
            .send(endpoint, pending.request(status), None, Via::Http1Bodiless)
            .await;
        let resp = match sent {
            Ok(resp) if !resp.status().is_server_error() => resp,
            Ok(resp) => {
                backend.record(endpoint, false);
                tracing::debug!(backend = %backend.id, page_status = %resp.status(), %status, "error backend failed; original response served");
                return None;
            }
            Err(e) => {
                backend.record(endpoint, false);
                tracing::debug!(backend = %backend.id, error = ?e, %status, "error backend unreachable; original response served");
                return None;
            }
        };
        backend.record(endpoint, true);
        let (mut parts, body) = resp.into_parts();
        parts.status = status;
        headers::strip_hop_by_hop(&mut parts.headers);
        filters::on_response(&pending.filters, &mut parts.headers, conn.tls.is_some());
        let body = ResponseBody::new(body, Some(in_flight), Some(self.client.read_timeout()));
        Some(Response::from_parts(parts, Either::Left(body)))
    }
}
