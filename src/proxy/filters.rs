//! The filter chain: what each of a route's [`Filter`]s does to a request, to the request sent upstream and to the
//! response. A filter's configuration is a type in `model::route`; its behaviour is an impl of [`RouteFilter`]
//! here; [`RouteFilter::of`] has one line per filter. Filters run in the route's list order; a route without
//! annotations has an empty list and pays one length check per hook.
//!
//! Adding one (say CORS): a type and a `Filter` variant in `model/route.rs`, made from its annotations there; an
//! `impl RouteFilter` here with the hooks it needs; its line in [`RouteFilter::of`].

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderValue};
use http::Response;

use super::error::ProxyError;
use super::{redirect, redirect_to_https, ConnInfo, ProxyBody, SetOptions};
use crate::acme::challenge;
use crate::cidr::Cidr;
use crate::model::route::{
    AllowSources, AppRoot, BodyLimit, ClientCert, ErrorPages, Filter, HostRedirect, Hsts, HttpsRedirect, PathRewrite,
    Redirect, RequestHeaders, Respond, ResponseHeaders, Rewrite, UrlRedirect,
};
use crate::snapshot::Route;

/// What the filters of a request see, and what they leave for sending it.
pub(super) struct RequestCx<'a> {
    pub conn: &'a ConnInfo,
    pub set: &'a SetOptions,
    /// The real client (after PROXY protocol and trusted forwarding headers).
    pub client: IpAddr,
    pub route: &'a Route,
    /// The normalised host (empty when the request had none) and the request's own Host value.
    pub host: &'a str,
    pub host_value: Option<&'a HeaderValue>,
    /// The normalised path and the request's query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// Set by a rewrite: the path sent upstream (not yet normalised).
    pub rewritten: Option<String>,
    /// Set by a body limit: the largest request body accepted.
    pub body_limit: Option<u64>,
    /// Set by a filter with an asynchronous step (auth, `proxy/auth.rs`): run it before sending.
    pub deferred: bool,
    pub method: &'a http::Method,
    /// What CORS and the rate limit leave for the response (`proxy/traffic.rs`).
    pub carry: super::traffic::Carry,
}

/// A filter's hooks; each does nothing unless the filter implements it.
pub(super) trait RouteFilter {
    /// Before sending: answer the request instead of the backend (`Ok(Some)`), refuse it (`Err`), or let it
    /// through, possibly leaving something in `cx`.
    fn on_request(&self, cx: &mut RequestCx<'_>) -> Result<Option<Response<ProxyBody>>, ProxyError> {
        let _ = cx;
        Ok(None)
    }

    /// The headers sent upstream, after the gateway's own (hop-by-hop removed, forwarding headers set).
    fn on_upstream_request(&self, headers: &mut HeaderMap, conn: &ConnInfo) {
        let _ = (headers, conn);
    }

    /// The headers of a backend's response, hop-by-hop fields removed (`tls`: the client's connection is TLS).
    fn on_response(&self, headers: &mut HeaderMap, tls: bool) {
        let _ = (headers, tls);
    }
}

impl dyn RouteFilter {
    /// The behaviour of a filter: one line per filter.
    fn of(f: &Filter) -> &dyn RouteFilter {
        match f {
            Filter::AllowSources(f) => f,
            Filter::HttpsRedirect(f) => f,
            Filter::Redirect(f) => f,
            Filter::HostRedirect(f) => f,
            Filter::AppRoot(f) => f,
            Filter::BodyLimit(f) => f,
            Filter::Rewrite(f) => f,
            Filter::RequestHeaders(f) => f,
            Filter::ResponseHeaders(f) => f,
            Filter::Hsts(f) => f,
            Filter::Respond(f) => f,
            Filter::UrlRedirect(f) => f,
            Filter::PathRewrite(f) => f,
            Filter::ClientCert(f) => f,
            Filter::ForwardAuth(f) => &**f,
            Filter::BasicAuth(f) => &**f,
            Filter::DenySources(f) => f,
            Filter::Cors(f) => f,
            Filter::RateLimit(f) => f,
            Filter::ErrorPages(f) => f,
        }
    }
}

// === the chain ===

/// Runs the request hooks in order; the first answer or refusal ends the chain.
pub(super) fn on_request(
    filters: &[Filter],
    cx: &mut RequestCx<'_>,
) -> Result<Option<Response<ProxyBody>>, ProxyError> {
    for f in filters {
        if let Some(resp) = <dyn RouteFilter>::of(f).on_request(cx)? {
            return Ok(Some(resp));
        }
    }
    Ok(None)
}

pub(super) fn on_upstream_request(filters: &[Filter], headers: &mut HeaderMap, conn: &ConnInfo) {
    for f in filters {
        <dyn RouteFilter>::of(f).on_upstream_request(headers, conn);
    }
}

pub(super) fn on_response(filters: &[Filter], headers: &mut HeaderMap, tls: bool) {
    for f in filters {
        <dyn RouteFilter>::of(f).on_response(headers, tls);
    }
}

// === the filters ===

/// No request hooks: the error pages act in the respond phase, over the send phase's outcome (`proxy/errors.rs`).
impl RouteFilter for ErrorPages {}

/// The headers ingress-nginx sends a backend about the client's certificate; a client's own are dropped.
const SSL_CLIENT_VERIFY: header::HeaderName = header::HeaderName::from_static("ssl-client-verify");
const SSL_CLIENT_SUBJECT: header::HeaderName = header::HeaderName::from_static("ssl-client-subject-dn");
const SSL_CLIENT_ISSUER: header::HeaderName = header::HeaderName::from_static("ssl-client-issuer-dn");
const SSL_CLIENT_CERT: header::HeaderName = header::HeaderName::from_static("ssl-client-cert");

impl RouteFilter for ClientCert {
    /// The handshake's settings were checked when routing (`TlsConn::meets_route_tls`, 421); here: a required
    /// certificate is there, else 400 or the error page.
    fn on_request(&self, cx: &mut RequestCx<'_>) -> Result<Option<Response<ProxyBody>>, ProxyError> {
        if !self.required || cx.conn.tls.as_ref().is_some_and(|t| t.client_cert.is_some()) {
            return Ok(None);
        }
        match &self.error_page {
            Some(location) => Ok(Some(redirect(http::StatusCode::FOUND, location.clone()))),
            None => Err(ProxyError::BadRequest("no required SSL certificate was sent")),
        }
    }

    fn on_upstream_request(&self, headers: &mut HeaderMap, conn: &ConnInfo) {
        for name in [
            &SSL_CLIENT_VERIFY,
            &SSL_CLIENT_SUBJECT,
            &SSL_CLIENT_ISSUER,
            &SSL_CLIENT_CERT,
        ] {
            headers.remove(name);
        }
        let Some(cert) = conn.tls.as_ref().and_then(|t| t.client_cert.as_deref()) else {
            headers.insert(SSL_CLIENT_VERIFY, HeaderValue::from_static("NONE"));
            return;
        };
        headers.insert(
            SSL_CLIENT_VERIFY,
            HeaderValue::from_static(if self.verified {
                "SUCCESS"
            } else {
                "FAILED:not verified (optional_no_ca)"
            }),
        );
        headers.insert(SSL_CLIENT_SUBJECT, cert.subject.clone());
        headers.insert(SSL_CLIENT_ISSUER, cert.issuer.clone());
        if self.pass_cert {
            headers.insert(SSL_CLIENT_CERT, cert.escaped_pem.clone());
        }
    }
}

impl RouteFilter for AllowSources {
    fn on_request(&self, cx: &mut RequestCx<'_>) -> Result<Option<Response<ProxyBody>>, ProxyError> {
        if Cidr::any_contains(&self.0, cx.client) {
            Ok(None)
        } else {
            Err(ProxyError::Forbidden)
        }
    }
}

impl RouteFilter for HttpsRedirect {
    fn on_request(&self, cx: &mut RequestCx<'_>) -> Result<Option<Response<ProxyBody>>, ProxyError> {
        if cx.conn.tls.is_some() || cx.path.starts_with(challenge::PREFIX) {
            return Ok(None);
        }
        Ok(Some(redirect_to_https(
            cx.host,
            cx.set.redirect_port,
            cx.path,
            cx.query,
        )))
    }
}

impl RouteFilter for Redirect {
    fn on_request(&self, _: &mut RequestCx<'_>) -> Result<Option<Response<ProxyBody>>, ProxyError> {
        Ok(Some(redirect(self.status, self.location.clone())))
    }
}

impl RouteFilter for HostRedirect {
    fn on_request(&self, cx: &mut RequestCx<'_>) -> Result<Option<Response<ProxyBody>>, ProxyError> {
        let port = cx
            .host_value
            .and_then(|v| v.to_str().ok())
            .and_then(|h| crate::normalize::normalize_host(h).ok())
            .and_then(|h| h.port);
        let scheme = if cx.conn.tls.is_some() { "https" } else { "http" };
        let location = super::absolute_url(scheme, &self.0, port, cx.path, cx.query);
        let location =
            HeaderValue::from_str(&location).map_err(|_| ProxyError::BadRequest("malformed request target"))?;
        Ok(Some(redirect(http::StatusCode::PERMANENT_REDIRECT, location)))
    }
}

impl RouteFilter for AppRoot {
    fn on_request(&self, cx: &mut RequestCx<'_>) -> Result<Option<Response<ProxyBody>>, ProxyError> {
        if cx.path != "/" {
            return Ok(None);
        }
        let scheme = if cx.conn.tls.is_some() { "https" } else { "http" };
        let host = cx.host_value.and_then(|v| v.to_str().ok()).unwrap_or(cx.host);
        let location = HeaderValue::from_str(&format!("{scheme}://{host}{}", self.0))
            .map_err(|_| ProxyError::BadRequest("malformed host"))?;
        Ok(Some(redirect(http::StatusCode::FOUND, location)))
    }
}

impl RouteFilter for BodyLimit {
    fn on_request(&self, cx: &mut RequestCx<'_>) -> Result<Option<Response<ProxyBody>>, ProxyError> {
        if super::content_length(cx.headers).is_some_and(|len| len > self.0) {
            return Err(ProxyError::PayloadTooLarge);
        }
        // A streamed body is counted as it goes (`upstream::body::RequestBody`).
        cx.body_limit = Some(self.0);
        Ok(None)
    }
}

impl RouteFilter for Rewrite {
    fn on_request(&self, cx: &mut RequestCx<'_>) -> Result<Option<Response<ProxyBody>>, ProxyError> {
        cx.rewritten = cx.route.rewrite(&self.0, cx.path);
        Ok(None)
    }
}

impl RouteFilter for RequestHeaders {
    fn on_upstream_request(&self, headers: &mut HeaderMap, _: &ConnInfo) {
        self.apply(headers);
    }
}

impl RouteFilter for ResponseHeaders {
    fn on_response(&self, headers: &mut HeaderMap, _: bool) {
        self.apply(headers);
    }
}

impl RouteFilter for Hsts {
    fn on_response(&self, headers: &mut HeaderMap, tls: bool) {
        if tls {
            headers.insert(header::STRICT_TRANSPORT_SECURITY, self.0.clone());
        }
    }
}

impl RouteFilter for Respond {
    fn on_request(&self, _: &mut RequestCx<'_>) -> Result<Option<Response<ProxyBody>>, ProxyError> {
        let mut resp = Response::new(http_body_util::Either::Right(http_body_util::Full::new(
            bytes::Bytes::new(),
        )));
        *resp.status_mut() = self.0;
        Ok(Some(resp))
    }
}

impl RouteFilter for UrlRedirect {
    fn on_request(&self, cx: &mut RequestCx<'_>) -> Result<Option<Response<ProxyBody>>, ProxyError> {
        let scheme = self
            .scheme
            .as_deref()
            .unwrap_or(if cx.conn.tls.is_some() { "https" } else { "http" });
        let host = self.hostname.as_deref().unwrap_or(cx.host);
        // The port: the one asked for; else the scheme's when the scheme changes; else the listener's.
        let port = match (self.port, &self.scheme) {
            (Some(p), _) => Some(p),
            (None, None) => Some(cx.conn.local.port()),
            (None, Some(_)) => None,
        };
        let port = port.filter(|p| !matches!((scheme, *p), ("http", 80) | ("https", 443)));
        let path = self.path.as_ref().map(|p| p.apply(cx.path));
        let location = super::absolute_url(scheme, host, port, path.as_deref().unwrap_or(cx.path), cx.query);
        let location =
            HeaderValue::from_str(&location).map_err(|_| ProxyError::BadRequest("malformed request target"))?;
        Ok(Some(redirect(self.status, location)))
    }
}

impl RouteFilter for PathRewrite {
    fn on_request(&self, cx: &mut RequestCx<'_>) -> Result<Option<Response<ProxyBody>>, ProxyError> {
        cx.rewritten = Some(self.0.apply(cx.path));
        Ok(None)
    }
}
