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
    /// An absolute `http` or `https` URL.
    pub url: Uri,
    /// The subrequest's method (`None`: the request's own).
    pub method: Option<Method>,
    /// Headers of a 2xx answer copied onto the upstream request (replacing the client's, which are removed).
    pub response_headers: Vec<HeaderName>,
    /// `X-Auth-Request-Redirect` sent to the auth service (`None`: the request's URI).
    pub request_redirect: Option<HeaderValue>,
    /// Where a 401 sends the client (302, with `signin_redirect_param=<the request's URL>` added).
    pub signin: Option<String>,
    pub signin_redirect_param: String,
    /// Caching of answers, by key.
    pub cache: Option<CacheSpec>,
    /// Time for the whole subrequest: connecting, the answer's head and its body.
    pub timeout: Duration,
    /// A digest of the settings above: the route's cache is emptied when it changes.
    pub fingerprint: u64,
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
