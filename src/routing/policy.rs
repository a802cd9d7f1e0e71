//! An Ingress's annotations compiled for the request path: header names and values parsed once at table build,
//! applied in place per request.

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue, HOST};

use crate::cidr::Cidr;
use crate::model::annotations::IngressPolicy;

#[derive(Debug)]
pub struct RoutePolicy {
    pub hsts: Option<HeaderValue>,
    upstream_host: Option<HeaderValue>,
    pass_host: bool,
    request_set: Vec<(HeaderName, HeaderValue)>,
    request_add: Vec<(HeaderName, HeaderValue)>,
    request_remove: Vec<HeaderName>,
    response_set: Vec<(HeaderName, HeaderValue)>,
    response_remove: Vec<HeaderName>,
    allow: Option<Box<[Cidr]>>,
    /// Cookie name for cookie affinity (`None` unless the Ingress balances by cookie).
    pub affinity_cookie: Option<Box<str>>,
    pub max_body_bytes: Option<u64>,
    pub upstream_timeout: Option<std::time::Duration>,
    /// Speak HTTP/2 without TLS to the backend (h2c, gRPC).
    pub upstream_h2c: bool,
    /// `rewrite-target`: the path sent upstream, expanded with the route's captures (see `Route::rewrite`).
    pub rewrite_target: Option<Box<str>>,
    /// `app-root`: a request for `/` is redirected (302) to this path.
    pub app_root: Option<Box<str>>,
    /// `permanent-redirect` / `temporal-redirect`: every request is answered with this Location and status.
    pub redirect: Option<(HeaderValue, http::StatusCode)>,
    /// `from-to-www-redirect`'s twin: every request is answered with 308 to this host (same scheme, port, path
    /// and query).
    pub host_redirect: Option<Box<str>>,
    /// `proxy-connect-timeout`, instead of the configured one.
    pub connect_timeout: Option<std::time::Duration>,
    /// When to try another endpoint, how often and for how long (`proxy-next-upstream*`).
    pub next_upstream: crate::model::annotations::retry::NextUpstream,
    pub tries: u8,
    pub retry_window: Option<std::time::Duration>,
    /// The affinity cookie's attributes after `NAME=VALUE` (all but `Expires`), its `Expires` in seconds from the
    /// response, and whether a retried request gets a new cookie.
    pub affinity_attributes: Box<str>,
    pub affinity_expires: Option<u64>,
    pub affinity_change_on_failure: bool,
}

fn pairs(list: &[(String, String)]) -> Vec<(HeaderName, HeaderValue)> {
    // Validated by `IngressPolicy::from_meta`; anything that still fails to convert is skipped.
    list.iter()
        .filter_map(|(n, v)| {
            Some((
                HeaderName::from_bytes(n.as_bytes()).ok()?,
                HeaderValue::from_str(v).ok()?,
            ))
        })
        .collect()
}

fn names(list: &[String]) -> Vec<HeaderName> {
    list.iter()
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect()
}

impl Default for RoutePolicy {
    /// The policy of an Ingress without annotations.
    fn default() -> Self {
        Self::passthrough()
    }
}

/// The value of the cookie `name` in a request's `Cookie` headers (the first, when it is there twice), spaces
/// around it removed; `None` when absent or not visible ASCII. Scanned as bytes: a few instructions per byte of
/// the header (validating and splitting it as `str` first cost about four times as much).
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let name = name.as_bytes();
    for v in headers.get_all(http::header::COOKIE) {
        for pair in v.as_bytes().split(|b| *b == b';') {
            let Some(value) = pair
                .trim_ascii_start()
                .strip_prefix(name)
                .and_then(|r| r.strip_prefix(b"="))
            else {
                continue;
            };
            let value = value.trim_ascii();
            return value
                .iter()
                .all(|b| (0x21..0x7f).contains(b))
                .then(|| std::str::from_utf8(value).ok())
                .flatten();
        }
    }
    None
}

impl RoutePolicy {
    pub fn compile(p: &IngressPolicy) -> Self {
        let mut request_set = pairs(&p.request_set);
        if let Some(prefix) = p
            .forwarded_prefix
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            request_set.push((HeaderName::from_static("x-forwarded-prefix"), prefix));
        }
        Self {
            hsts: p.hsts.as_deref().and_then(|h| HeaderValue::from_str(h).ok()),
            upstream_host: p.upstream_host.as_deref().and_then(|h| HeaderValue::from_str(h).ok()),
            pass_host: p.pass_host,
            request_set,
            request_add: pairs(&p.request_add),
            request_remove: names(&p.request_remove),
            response_set: pairs(&p.response_set),
            response_remove: names(&p.response_remove),
            allow: p.allow_source_ranges.as_ref().map(|a| a.clone().into_boxed_slice()),
            affinity_cookie: (p.balance == crate::model::annotations::Balance::Cookie)
                .then(|| p.affinity_cookie.as_str().into()),
            max_body_bytes: p.max_body_bytes,
            upstream_timeout: p.upstream_timeout,
            upstream_h2c: p.backend_protocol == crate::model::annotations::BackendProtocol::H2c,
            rewrite_target: p.rewrite.target.as_deref().map(Into::into),
            app_root: p.rewrite.app_root.as_deref().map(Into::into),
            redirect: p.rewrite.redirect.as_ref().and_then(|(url, code)| {
                Some((
                    HeaderValue::from_str(url).ok()?,
                    http::StatusCode::from_u16(*code).ok()?,
                ))
            }),
            host_redirect: p.rewrite.host_redirect.as_deref().map(Into::into),
            connect_timeout: p.retry.connect_timeout,
            next_upstream: p.retry.next_upstream,
            tries: p.retry.tries,
            retry_window: p.retry.retry_window,
            affinity_attributes: p.cookie.suffix().into(),
            affinity_expires: p.cookie.expires,
            affinity_change_on_failure: p.cookie.change_on_failure,
        }
    }

    /// The policy of an Ingress without annotations.
    pub fn passthrough() -> Self {
        Self::compile(&IngressPolicy::default())
    }

    /// Whether the client may use this route.
    pub fn allows(&self, client: IpAddr) -> bool {
        self.allow.as_ref().is_none_or(|a| Cidr::any_contains(a, client))
    }

    /// Request edits, after the gateway's own headers: remove, set, add, then the upstream Host.
    pub fn apply_request(&self, headers: &mut HeaderMap, endpoint: std::net::SocketAddr) {
        for n in &self.request_remove {
            headers.remove(n);
        }
        for (n, v) in &self.request_set {
            headers.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.request_add {
            headers.append(n.clone(), v.clone());
        }
        if let Some(h) = &self.upstream_host {
            headers.insert(HOST, h.clone());
        } else if !self.pass_host {
            if let Ok(v) = HeaderValue::from_str(&endpoint.to_string()) {
                headers.insert(HOST, v);
            }
        }
    }

    pub fn apply_response(&self, headers: &mut HeaderMap) {
        for n in &self.response_remove {
            headers.remove(n);
        }
        for (n, v) in &self.response_set {
            headers.insert(n.clone(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_by_name() {
        let mut h = HeaderMap::new();
        assert_eq!(cookie(&h, "canary"), None);
        h.append(http::header::COOKIE, HeaderValue::from_static("canaryx=1; a=b"));
        h.append(
            http::header::COOKIE,
            HeaderValue::from_static("x=y;  canary = never ; canary=always "),
        );
        h.append(http::header::COOKIE, HeaderValue::from_static("canary=never"));
        assert_eq!(
            cookie(&h, "canary"),
            Some("always"),
            "`canary = never` names another cookie; the first `canary` wins"
        );
        assert_eq!(cookie(&h, "a"), Some("b"));
        assert_eq!(cookie(&h, "x"), Some("y"));
        assert_eq!(cookie(&h, "canar"), None, "a prefix of a name is not the name");
        let mut h = HeaderMap::new();
        h.insert(http::header::COOKIE, HeaderValue::from_bytes(b"a=\xff; b=1").unwrap());
        assert_eq!((cookie(&h, "a"), cookie(&h, "b")), (None, Some("1")));
    }
}
