//! The route model's auth filters: forward auth (a subrequest to an auth service decides) and basic auth (a
//! password file decides). Made from annotations (`annotations::auth`, `annotations::basic_auth`) and, later,
//! from Gateway API filters; the proxy gives them their behaviour (`proxy/auth.rs`).

use std::hash::{Hash as _, Hasher as _};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, Uri};

use crate::htpasswd::Users;

/// The time an auth service has to answer when nothing says otherwise.
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(5);

/// Forward auth: before a request goes upstream, its head (no body) is sent to `url`; 2xx lets it through, 401
/// and 403 are the client's answer, anything else (or no answer in `timeout`) is 500/503 and never lets it through.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ForwardAuth {
    /// An absolute `http` or `https` URL, possibly with request variables (`$host`...).
    pub url: UrlTemplate,
    /// The subrequest's method (`None`: the request's own).
    pub method: Option<Method>,
    /// Headers of a 2xx answer copied onto the upstream request (replacing the client's, which are removed).
    pub response_headers: Vec<HeaderName>,
    /// `X-Auth-Request-Redirect` sent to the auth service (`None`: the request's URI).
    pub request_redirect: Option<HeaderValue>,
    /// Where a 401 sends the client (302, with `signin_redirect_param=<the request's URL>` added unless the
    /// template has that parameter already).
    pub signin: Option<UrlTemplate>,
    pub signin_redirect_param: String,
    /// Caching of answers, by key.
    pub cache: Option<CacheSpec>,
    /// Time for the whole subrequest: connecting, the answer's head and its body.
    pub timeout: Duration,
    /// A digest of the settings above: the route's cache is emptied when it changes.
    pub fingerprint: u64,
}

/// A URL with nginx's request variables in it: `$scheme`, `$host`, `$http_host`, `$request_uri`,
/// `$escaped_request_uri` (ingress-nginx's `auth-signin: https://auth.example/oauth2/start?rd=$scheme://$host$request_uri`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UrlTemplate {
    /// As written (for logs).
    pub text: String,
    pub parts: Vec<UrlPart>,
    /// Parsed once when the template has no variable.
    pub fixed: Option<Uri>,
}

/// A piece of a [`UrlTemplate`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UrlPart {
    Text(String),
    /// `$scheme`, `$pass_access_scheme`: `http` or `https`, as the client connected.
    Scheme,
    /// `$host`: the request's host name (normalised, no port).
    Host,
    /// `$http_host`, `$best_http_host`: the request's Host header as sent (with its port).
    HostHeader,
    /// `$request_uri`: the request's path and query as sent.
    RequestUri,
    /// `$escaped_request_uri`: the same, percent-encoded for a query parameter.
    EscapedRequestUri,
}

/// What a [`UrlTemplate`]'s variables stand for in one request.
pub struct UrlVars<'a> {
    pub scheme: &'a str,
    pub host: &'a str,
    pub host_header: &'a str,
    pub request_uri: &'a str,
}

impl UrlTemplate {
    /// Parses `text`; `Err` names the variable Portico cannot fill in.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(i) = rest.find('$') {
            lit.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            let (braced, body) = match after.strip_prefix('{') {
                Some(b) => (true, b),
                None => (false, after),
            };
            let end = body
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(body.len());
            let name = &body[..end];
            let mut used = end;
            if braced {
                if !body[end..].starts_with('}') {
                    return Err(format!("unclosed ${{ in {text:?}"));
                }
                used += 1;
            }
            let part = match name {
                "scheme" | "pass_access_scheme" => UrlPart::Scheme,
                "host" => UrlPart::Host,
                "http_host" | "best_http_host" => UrlPart::HostHeader,
                "request_uri" => UrlPart::RequestUri,
                "escaped_request_uri" => UrlPart::EscapedRequestUri,
                _ => {
                    return Err(format!(
                        "${name} is not a variable Portico fills in here; use $scheme, $host, $http_host, $request_uri or $escaped_request_uri"
                    ))
                }
            };
            if !lit.is_empty() {
                parts.push(UrlPart::Text(std::mem::take(&mut lit)));
            }
            parts.push(part);
            rest = &body[used..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(UrlPart::Text(lit));
        }
        let sample = UrlVars {
            scheme: "https",
            host: "example.test",
            host_header: "example.test:8443",
            request_uri: "/path?q=1",
        };
        let uri: Uri = Self::render_parts(&parts, &sample)
            .parse()
            .map_err(|_| format!("{text:?} is not a URL"))?;
        match (uri.scheme_str(), uri.host()) {
            (Some("http" | "https"), Some(h)) if !h.is_empty() => {}
            _ => return Err(format!("{text:?} is not an absolute http:// or https:// URL")),
        }
        let fixed = parts.iter().all(|p| matches!(p, UrlPart::Text(_))).then_some(uri);
        Ok(Self {
            text: text.to_string(),
            parts,
            fixed,
        })
    }

    pub fn render(&self, v: &UrlVars<'_>) -> String {
        Self::render_parts(&self.parts, v)
    }

    fn render_parts(parts: &[UrlPart], v: &UrlVars<'_>) -> String {
        let mut out = String::new();
        for p in parts {
            match p {
                UrlPart::Text(t) => out.push_str(t),
                UrlPart::Scheme => out.push_str(v.scheme),
                UrlPart::Host => out.push_str(v.host),
                UrlPart::HostHeader => out.push_str(v.host_header),
                UrlPart::RequestUri => out.push_str(v.request_uri),
                UrlPart::EscapedRequestUri => out.push_str(&percent_encode(v.request_uri)),
            }
        }
        out
    }
}

impl std::fmt::Display for UrlTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Percent-encodes all but RFC 3986's unreserved characters (a query parameter's value).
pub fn percent_encode(s: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `auth-cache-key` and `auth-cache-duration`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheSpec {
    pub key: Vec<KeyPart>,
    /// How long an answer with this status is kept (statuses not listed are not cached).
    pub durations: Vec<(u16, Duration)>,
}

/// A piece of a cache key: text, or a value of the request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyPart {
    Text(String),
    /// `$http_NAME`: the header's values.
    Header(HeaderName),
    /// `$cookie_NAME`: the cookie's value.
    Cookie(String),
    /// `$remote_user`: the user of a Basic `Authorization`.
    RemoteUser,
    /// `$host`: the request's host.
    Host,
    /// `$request_uri`: the request's path and query.
    RequestUri,
}

impl CacheSpec {
    /// How long an answer with `status` is kept (`None`: not cached).
    pub fn ttl(&self, status: u16) -> Option<Duration> {
        self.durations.iter().find(|(s, _)| *s == status).map(|(_, d)| *d)
    }
}

impl ForwardAuth {
    /// Sets `fingerprint` from the other settings.
    #[must_use]
    pub fn with_fingerprint(mut self) -> Self {
        self.fingerprint = 0;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut h);
        self.fingerprint = h.finish();
        self
    }
}

/// Basic auth: the request's `Authorization: Basic` must name a user of `users` with the right password;
/// otherwise 401 with `www_authenticate`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BasicAuth {
    /// `Basic realm="..."`.
    pub www_authenticate: HeaderValue,
    /// Empty: nobody gets in (a Secret that was never read fails closed).
    pub users: Users,
    /// A digest of the users and their hashes: the route's cache of verified credentials is emptied when it
    /// changes.
    pub fingerprint: u64,
}

impl BasicAuth {
    pub fn new(realm: &str, users: Users) -> Result<Self, String> {
        let www_authenticate = HeaderValue::from_str(&format!("Basic realm=\"{realm}\""))
            .map_err(|_| format!("realm {realm:?} is not a valid header value"))?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        users.hash(&mut h);
        realm.hash(&mut h);
        Ok(Self {
            www_authenticate,
            users,
            fingerprint: h.finish(),
        })
    }
}
