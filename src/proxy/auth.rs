//! The auth filters' behaviour: basic auth and forward auth (their configuration: `model::auth`).
//!
//! Both have a synchronous part in the filter chain ([`RouteFilter::on_request`]) and, when they need one, an
//! asynchronous step run after the chain ([`on_request_deferred`]): the chain marks the request (`cx.deferred`),
//! so a route without an auth filter pays nothing but one flag check.
//!
//! - Basic auth answers 401 at once for a missing or malformed `Authorization`, lets a request through at once
//!   when its credentials are in the route's cache of verified ones (`auth_cache`, in the kept slot), checks an
//!   apr1 or SHA hash at once, and defers a bcrypt check to the blocking pool (milliseconds of CPU; at most
//!   [`BCRYPT_CHECKS`] at once, the others wait their turn).
//! - Forward auth always defers: its cache is looked up there, then the subrequest is sent. 2xx: the answer's
//!   `response_headers` replace the client's on the upstream request. 401/403: the client gets the auth
//!   service's status, `WWW-Authenticate`, `Set-Cookie`, `Location`, `Content-Type` and body (with `signin`, a
//!   401 is a 302 to the sign-in page instead). Any other status is 500; no answer within the timeout (refused,
//!   reset, slow) is 503. Nothing but a 2xx lets a request through.

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Uri};
use http_body_util::{BodyExt as _, Either, Empty, Full};

use super::error::ProxyError;
use super::filters::{RequestCx, RouteFilter};
use super::ProxyBody;
use crate::auth_cache::{self, Answer};
use crate::htpasswd::basic_credentials;
use crate::model::auth::{percent_encode, BasicAuth, ForwardAuth, KeyPart, UrlTemplate, UrlVars};
use crate::model::route::Filter;
use crate::snapshot::Kept;

/// bcrypt checks running at once (each takes milliseconds of CPU on the blocking pool).
static BCRYPT_CHECKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// The most of an auth service's refusal body passed on to the client.
const MAX_AUTH_BODY: usize = 64 * 1024;

/// What the deferred step needs of the request (the snapshot is no longer held).
pub(super) struct Deferred<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    /// The normalised host, and the request's own Host value.
    pub host: &'a str,
    pub host_value: Option<&'a HeaderValue>,
    pub client: IpAddr,
    /// The hop's values, and whether it is a trusted proxy (its forwarding headers kept and extended).
    pub hop: &'a super::headers::HopValues,
    pub trusted: bool,
    pub tls: bool,
    /// The route's kept slot (its caches).
    pub kept: Option<&'a Kept>,
}

impl Deferred<'_> {
    /// The values of a URL template's variables (`host_header`: the Host as sent).
    fn vars<'h>(&'h self, host_header: &'h str) -> UrlVars<'h> {
        UrlVars {
            scheme: if self.tls { "https" } else { "http" },
            host: self.host,
            host_header,
            request_uri: self.uri.path_and_query().map_or("/", http::uri::PathAndQuery::as_str),
        }
    }
}

// === basic auth ===

impl RouteFilter for BasicAuth {
    fn on_request(&self, cx: &mut RequestCx<'_>) -> Result<Option<Response<ProxyBody>>, ProxyError> {
        let Some(value) = cx.headers.get(header::AUTHORIZATION) else {
            return Ok(Some(self.unauthorized()));
        };
        let Some((user, password)) = basic_credentials(value.as_bytes()) else {
            return Ok(Some(self.unauthorized()));
        };
        let key = auth_cache::key([value.as_bytes()]);
        let kept = cx.route.state.kept.as_deref();
        if kept.is_some_and(|k| k.basic_auth.get(self.fingerprint, &key, Instant::now()).is_some()) {
            return Ok(None);
        }
        match self.users.get(&user) {
            None => Ok(Some(self.unauthorized())),
            // bcrypt: in the deferred step, off this thread.
            Some(h) if h.is_slow() => {
                cx.deferred = true;
                Ok(None)
            }
            Some(h) if h.verify(&password) => {
                self.remember(kept, key);
                Ok(None)
            }
            Some(_) => Ok(Some(self.unauthorized())),
        }
    }
}

impl BasicAuth {
    fn unauthorized(&self) -> Response<ProxyBody> {
        let mut resp = text(StatusCode::UNAUTHORIZED, "401 Unauthorized\n");
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, self.www_authenticate.clone());
        resp
    }

    fn remember(&self, kept: Option<&Kept>, key: auth_cache::Key) {
        if let Some(k) = kept {
            k.basic_auth.insert(
                self.fingerprint,
                key,
                (),
                std::time::Duration::from_secs(300),
                Instant::now(),
            );
        }
    }

    /// The deferred check: the bcrypt hash, on the blocking pool.
    async fn check(&self, d: &Deferred<'_>, headers: &HeaderMap) -> Option<Response<ProxyBody>> {
        // The synchronous part answered a request without credentials already; fail closed all the same.
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Some(self.unauthorized());
        };
        let Some((user, password)) = basic_credentials(value.as_bytes()) else {
            return Some(self.unauthorized());
        };
        let key = auth_cache::key([value.as_bytes()]);
        if d.kept
            .is_some_and(|k| k.basic_auth.get(self.fingerprint, &key, Instant::now()).is_some())
        {
            return None;
        }
        let Some(hash) = self.users.get(&user).cloned() else {
            return Some(self.unauthorized());
        };
        // At most a few bcrypt checks at once: a burst of wrong passwords queues here instead of taking a thread
        // each.
        let Ok(_permit) = BCRYPT_CHECKS.acquire().await else {
            return Some(self.unauthorized());
        };
        let ok = tokio::task::spawn_blocking(move || hash.verify(&password))
            .await
            .unwrap_or(false);
        if ok {
            self.remember(d.kept, key);
            None
        } else {
            Some(self.unauthorized())
        }
    }
}

// === forward auth ===

impl RouteFilter for ForwardAuth {
    fn on_request(&self, cx: &mut RequestCx<'_>) -> Result<Option<Response<ProxyBody>>, ProxyError> {
        cx.deferred = true;
        Ok(None)
    }
}

/// The deferred step of the route's auth filters, in order: the first answer ends it; `headers` (the request's,
/// going upstream) get forward auth's response headers.
pub(super) async fn on_request_deferred(
    filters: &[Filter],
    d: &Deferred<'_>,
    headers: &mut HeaderMap,
) -> Option<Response<ProxyBody>> {
    for f in filters {
        let answer = match f {
            Filter::BasicAuth(b) => b.check(d, headers).await,
            Filter::ForwardAuth(f) => f.check(d, headers).await,
            _ => None,
        };
        if answer.is_some() {
            return answer;
        }
    }
    None
}

/// Why the auth service gave no usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Refused, reset, or no answer within the timeout: 503.
    Unavailable,
    /// An answer other than 2xx, 401 or 403: 500.
    Status(u16),
}

impl ForwardAuth {
    async fn check(&self, d: &Deferred<'_>, headers: &mut HeaderMap) -> Option<Response<ProxyBody>> {
        let now = Instant::now();
        let cached = self.cache.as_ref().zip(d.kept).map(|(spec, kept)| {
            let key = self.cache_key(&spec.key, d, headers);
            (kept, key)
        });
        let hit = cached
            .as_ref()
            .and_then(|(kept, key)| kept.forward_auth.get(self.fingerprint, key, now));
        let answer = match hit {
            Some(a) => a,
            None => match self.ask(d, headers).await {
                Ok(a) => {
                    let ttl = self.cache.as_ref().and_then(|c| c.ttl(a.status));
                    if let (Some((kept, key)), Some(ttl)) = (&cached, ttl) {
                        kept.forward_auth.insert(self.fingerprint, *key, a.clone(), ttl, now);
                    }
                    a
                }
                Err(Failure::Unavailable) => {
                    tracing::warn!(auth_url = %self.url, "auth service unavailable or too slow; request refused (503)");
                    return Some(text(StatusCode::SERVICE_UNAVAILABLE, "503 Service Unavailable\n"));
                }
                Err(Failure::Status(s)) => {
                    tracing::warn!(auth_url = %self.url, status = s, "auth service answered neither 2xx, 401 nor 403; request refused (500)");
                    return Some(text(StatusCode::INTERNAL_SERVER_ERROR, "500 Internal Server Error\n"));
                }
            },
        };
        if (200..300).contains(&answer.status) {
            for name in &self.response_headers {
                headers.remove(name);
            }
            for (name, value) in answer.headers {
                headers.append(name, value);
            }
            return None;
        }
        if answer.status == 401 {
            if let Some(signin) = &self.signin {
                let location = self.signin_location(signin, d);
                if let Ok(v) = HeaderValue::from_str(&location) {
                    return Some(super::redirect(StatusCode::FOUND, v));
                }
                return Some(text(StatusCode::INTERNAL_SERVER_ERROR, "500 Internal Server Error\n"));
            }
        }
        let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::FORBIDDEN);
        let mut resp = Response::new(Either::Right(Full::new(answer.body)));
        *resp.status_mut() = status;
        for (name, value) in answer.headers {
            resp.headers_mut().append(name, value);
        }
        Some(resp)
    }

    /// The subrequest and what of its answer matters.
    async fn ask(&self, d: &Deferred<'_>, headers: &HeaderMap) -> Result<Answer, Failure> {
        let Some(req) = self.subrequest(d, headers) else {
            tracing::warn!(auth_url = %self.url, "auth-url with this request's values is not a URL; request refused");
            return Err(Failure::Unavailable);
        };
        let exchange = async {
            let resp = client().request(req).await.map_err(|e| {
                tracing::debug!(auth_url = %self.url, error = %e, "auth subrequest failed");
                Failure::Unavailable
            })?;
            let status = resp.status().as_u16();
            let (parts, body) = resp.into_parts();
            if (200..300).contains(&status) {
                drop(body);
                let headers = self
                    .response_headers
                    .iter()
                    .flat_map(|n| parts.headers.get_all(n).iter().map(move |v| (n.clone(), v.clone())))
                    .collect();
                return Ok(Answer {
                    status,
                    headers,
                    body: Bytes::new(),
                });
            }
            if status != 401 && status != 403 {
                return Err(Failure::Status(status));
            }
            let passed = [
                header::WWW_AUTHENTICATE,
                header::SET_COOKIE,
                header::LOCATION,
                header::CONTENT_TYPE,
            ];
            let headers = passed
                .iter()
                .flat_map(|n| parts.headers.get_all(n).iter().map(move |v| (n.clone(), v.clone())))
                .collect();
            let body = http_body_util::Limited::new(body, MAX_AUTH_BODY)
                .collect()
                .await
                .map(http_body_util::Collected::to_bytes)
                .unwrap_or_default();
            Ok(Answer { status, headers, body })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(Failure::Unavailable))
    }

    /// The auth subrequest: the request's method (or `method`), its headers less hop-by-hop, framing and Host, and
    /// the `X-Original-*`, `X-Forwarded-*` and `X-Auth-Request-Redirect` headers; no body.
    fn subrequest(&self, d: &Deferred<'_>, headers: &HeaderMap) -> Option<http::Request<Empty<Bytes>>> {
        let mut h = headers.clone();
        super::headers::strip_hop_by_hop(&mut h);
        // HTTP/2 may split Cookie in crumbs; HTTP/1.1 wants one field.
        super::headers::join_cookie_crumbs(&mut h);
        for n in [
            header::HOST,
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
            header::EXPECT,
        ] {
            h.remove(n);
        }
        let scheme = if d.tls { "https" } else { "http" };
        let host = d.host_value.and_then(|v| v.to_str().ok()).unwrap_or(d.host);
        // The forwarding headers as the backend gets them: an untrusted client's own removed first (the
        // `X-Forwarded-Uri` below included), a trusted proxy's kept and extended.
        let host_header = d.host_value.cloned().unwrap_or_else(|| HeaderValue::from_static(""));
        super::headers::set_forwarded(
            &mut h,
            &super::headers::Forwarded {
                client_ip: d.client,
                hop: d.hop,
                trusted: d.trusted,
                proto: scheme,
                host: &host_header,
            },
        );
        let request_uri = d.uri.path_and_query().map_or("/", http::uri::PathAndQuery::as_str);
        let original_url = format!("{scheme}://{host}{request_uri}");
        let mut set = |name: &'static str, v: &str| {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(HeaderName::from_static(name), v);
            }
        };
        set("x-original-url", &original_url);
        set("x-original-method", d.method.as_str());
        set("x-forwarded-uri", request_uri);
        match &self.request_redirect {
            Some(v) => {
                h.insert(HeaderName::from_static("x-auth-request-redirect"), v.clone());
            }
            None => set("x-auth-request-redirect", request_uri),
        }
        let uri = match &self.url.fixed {
            Some(u) => u.clone(),
            None => self.url.render(&d.vars(host)).parse().ok()?,
        };
        let mut req = http::Request::new(Empty::new());
        *req.method_mut() = self.method.clone().unwrap_or_else(|| d.method.clone());
        *req.uri_mut() = uri;
        *req.headers_mut() = h;
        Some(req)
    }

    /// `signin` with `PARAM=<the request's URL>` added (unless it has that parameter already).
    fn signin_location(&self, signin: &UrlTemplate, d: &Deferred<'_>) -> String {
        let param = &self.signin_redirect_param;
        let host = d.host_value.and_then(|v| v.to_str().ok()).unwrap_or(d.host);
        let signin = signin.render(&d.vars(host));
        let has = signin
            .split_once('?')
            .is_some_and(|(_, q)| q.split('&').any(|p| p.split('=').next() == Some(param.as_str())));
        if has {
            return signin;
        }
        let scheme = if d.tls { "https" } else { "http" };
        let request_uri = d.uri.path_and_query().map_or("/", http::uri::PathAndQuery::as_str);
        let original = format!("{scheme}://{host}{request_uri}");
        let sep = if signin.contains('?') { '&' } else { '?' };
        format!("{signin}{sep}{param}={}", percent_encode(&original))
    }

    fn cache_key(&self, parts: &[KeyPart], d: &Deferred<'_>, headers: &HeaderMap) -> auth_cache::Key {
        let user = parts
            .contains(&KeyPart::RemoteUser)
            .then(|| {
                headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| basic_credentials(v.as_bytes()))
                    .map(|(u, _)| u)
            })
            .flatten();
        let mut pieces: Vec<&[u8]> = Vec::with_capacity(parts.len() * 2);
        for p in parts {
            match p {
                KeyPart::Text(t) => pieces.push(t.as_bytes()),
                KeyPart::Header(n) => {
                    let values = headers.get_all(n);
                    pieces.push(if values.iter().next().is_some() { b"+" } else { b"-" });
                    pieces.extend(values.iter().map(HeaderValue::as_bytes));
                }
                KeyPart::Cookie(c) => match crate::model::route::cookie(headers, c) {
                    Some(v) => pieces.extend([&b"+"[..], v.as_bytes()]),
                    None => pieces.push(b"-"),
                },
                KeyPart::RemoteUser => pieces.push(user.as_deref().unwrap_or("").as_bytes()),
                KeyPart::Host => pieces.push(d.host.as_bytes()),
                KeyPart::RequestUri => {
                    pieces.push(
                        d.uri
                            .path_and_query()
                            .map_or("/", http::uri::PathAndQuery::as_str)
                            .as_bytes(),
                    );
                }
            }
        }
        auth_cache::key(pieces)
    }
}

// === the auth client ===

type AuthClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Empty<Bytes>,
>;

/// One pooled client for every auth service, made on first use: HTTP/1.1, `http` and `https` (the system's
/// roots).
fn client() -> &'static AuthClient {
    static CLIENT: OnceLock<AuthClient> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth())
            .unwrap_or_else(|_| {
                rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .expect("TLS 1.3 with ring")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
            });
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(30))
            .build(connector)
    })
}

// === helpers ===

fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from_static(body.as_bytes()))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_parameter_is_percent_encoded() {
        assert_eq!(
            percent_encode("https://a.test/x?y=1&z=é"),
            "https%3A%2F%2Fa.test%2Fx%3Fy%3D1%26z%3D%C3%A9"
        );
    }
}
