//! The traffic-policy filters' behaviour: deny lists, CORS and rate limits (their configuration:
//! `model::traffic`). What a filter hands to the later phases of its request travels in [`Carry`]: the origin
//! CORS echoes on the response, and the rate limit's count of requests in flight, released when the response body
//! ends (or the request fails).

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response};
use http_body_util::{Either, Full};

use super::error::ProxyError;
use super::filters::{RequestCx, RouteFilter};
use super::ProxyBody;
use crate::cidr::Cidr;
use crate::model::route::{Cors, CorsValue, DenySources, Filter, RateLimit};
use crate::snapshot::Kept;

/// What the request phase's filters leave for the response (empty for routes without these filters).
#[derive(Default)]
pub(super) struct Carry {
    /// The `Access-Control-Allow-Origin` value for the response (the origin was allowed).
    pub cors_origin: Option<HeaderValue>,
    /// A request counted in flight by `limit-connections`.
    pub hold: Option<ConnHold>,
}

/// One request of a client counted in flight on a route; the count drops with this.
pub struct ConnHold {
    kept: Arc<Kept>,
    ip: IpAddr,
}

impl Drop for ConnHold {
    fn drop(&mut self) {
        self.kept.connections.release(self.ip);
    }
}

// === impl DenySources ===

impl RouteFilter for DenySources {
    fn on_request(&self, cx: &mut RequestCx<'_>) -> Result<Option<Response<ProxyBody>>, ProxyError> {
        if Cidr::any_contains(&self.0, cx.client) {
            Err(ProxyError::Forbidden)
        } else {
            Ok(None)
        }
    }
}

// === impl Cors ===

const VARY_ORIGIN: HeaderValue = HeaderValue::from_static("Origin");

fn empty(status: http::StatusCode) -> Response<ProxyBody> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::new())));
    *resp.status_mut() = status;
    resp
}

impl Cors {
    /// The `Access-Control-Allow-Origin` value for an allowed origin: `*` when any origin is allowed without
    /// credentials (not for Gateway API, which echoes), else the origin itself.
    fn allow_origin(&self, origin: &HeaderValue) -> HeaderValue {
        if self.origins.is_none() && !self.credentials && !self.echo_origin {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }
}

/// A preflight's allow header: the fixed value, or the request's own (`Echo`; left out when the request has none).
fn preflight_value(v: &CorsValue, request: Option<&HeaderValue>) -> Option<HeaderValue> {
    match v {
        CorsValue::Fixed(v) => Some(v.clone()),
        CorsValue::Echo => request.cloned(),
    }
}

impl RouteFilter for Cors {
    fn on_request(&self, cx: &mut RequestCx<'_>) -> Result<Option<Response<ProxyBody>>, ProxyError> {
        let Some(origin) = cx.headers.get(header::ORIGIN) else {
            return Ok(None);
        };
        let allowed = origin.to_str().is_ok_and(|o| self.allows(o));
        let preflight = *cx.method == Method::OPTIONS && cx.headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if !preflight {
            if allowed {
                cx.carry.cors_origin = Some(self.allow_origin(origin));
            }
            return Ok(None);
        }
        // A preflight never reaches the backend; without an allowed origin it gets no allow headers.
        let mut resp = empty(self.preflight_status);
        let h = resp.headers_mut();
        h.insert(header::VARY, VARY_ORIGIN);
        if allowed {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin(origin));
            let method = cx.headers.get(header::ACCESS_CONTROL_REQUEST_METHOD);
            if let Some(v) = self.methods.as_ref().and_then(|v| preflight_value(v, method)) {
                h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
            }
            let requested = cx.headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS);
            if let Some(v) = self.headers.as_ref().and_then(|v| preflight_value(v, requested)) {
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
            }
            if let Some(CorsValue::Fixed(e)) = &self.expose {
                if self.echo_origin {
                    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, e.clone());
                }
            }
            h.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
            if self.credentials {
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
        }
        Ok(Some(resp))
    }
}

/// The names of a response's headers, for `Access-Control-Expose-Headers` where `*` may not be sent.
fn header_names(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut names = String::new();
    for name in headers.keys() {
        if !names.is_empty() {
            names.push_str(", ");
        }
        names.push_str(name.as_str());
    }
    HeaderValue::from_str(&names).ok().filter(|_| !names.is_empty())
}

/// The response edits of what the request's filters carried: CORS headers for an allowed origin.
pub(super) fn on_response(filters: &[Filter], carry: &Carry, headers: &mut HeaderMap) {
    let Some(origin) = &carry.cors_origin else {
        return;
    };
    let Some(cors) = filters.iter().find_map(|f| match f {
        Filter::Cors(c) => Some(c),
        _ => None,
    }) else {
        return;
    };
    let expose = match &cors.expose {
        None => None,
        Some(CorsValue::Fixed(e)) => Some(e.clone()),
        Some(CorsValue::Echo) => header_names(headers),
    };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    if cors.credentials {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if let Some(e) = expose {
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, e);
    }
    if !headers.get_all(header::VARY).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("origin")))
    }) {
        headers.append(header::VARY, VARY_ORIGIN);
    }
}

// === impl RateLimit ===

impl RateLimit {
    fn refuse(&self) -> Response<ProxyBody> {
        let mut resp = Response::new(Either::Right(Full::new(Bytes::from(format!("{}\n", self.status)))));
        *resp.status_mut() = self.status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp
    }
}

impl RouteFilter for RateLimit {
    fn on_request(&self, cx: &mut RequestCx<'_>) -> Result<Option<Response<ProxyBody>>, ProxyError> {
        let ip = cx.client;
        if Cidr::any_contains(&self.exempt, ip) {
            return Ok(None);
        }
        // The snapshot gives every route with this filter a slot; without one, refuse rather than not limit.
        let Some(kept) = cx.route.state.kept.as_ref() else {
            return Ok(Some(self.refuse()));
        };
        let now = std::time::Instant::now();
        if let Some((interval, burst)) = self.per_second {
            if !kept.per_second.check(ip, now, interval, burst) {
                return Ok(Some(self.refuse()));
            }
        }
        if let Some((interval, burst)) = self.per_minute {
            if !kept.per_minute.check(ip, now, interval, burst) {
                return Ok(Some(self.refuse()));
            }
        }
        if let Some(max) = self.connections {
            if !kept.connections.acquire(ip, max) {
                return Ok(Some(self.refuse()));
            }
            cx.carry.hold = Some(ConnHold { kept: kept.clone(), ip });
        }
        Ok(None)
    }
}
