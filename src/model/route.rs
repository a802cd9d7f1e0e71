//! The source-neutral route model: what a route matches, what it does to a request (an ordered list of
//! [`Filter`]s), how it reaches its backends ([`SendPolicy`]), which weighted backends serve it, and where it
//! came from ([`Origin`]). The routing table is built from these values only; what an Ingress is (its
//! annotations, `spec.rules`) stays in `model/`.
//!
//! Ingress translation still emits [`PathModel`]s (they carry the parsed annotations, which the fixtures print);
//! [`Lowering`] turns each into a [`RouteSpec`] when the table is built, once per distinct annotation set. Gateway
//! API rules ride on the same paths with a `GatewayRule` (`model::gateway::serve`), which `Lowering` turns into
//! the route's conditions, filters and weighted backends.
//!
//! Values here are ready for the request path (header names and values parsed, networks compiled), so a
//! request reads them without converting anything.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

pub use super::annotations::retry::NextUpstream;
pub use super::annotations::rewrite::{compile_path, expand};
use super::annotations::{canary as canary_rules, BackendProtocol, IngressPolicy};
pub use super::annotations::{ActiveCheck, Balance};
use super::{BackendModel, DefaultBackendModel, ObjectRef, PathKind, PathModel, Strings};
use crate::cidr::Cidr;

// === Origin ===

/// The object a route came from, for diagnostics, metrics, logs and the dashboard: `Ingress ns/name` today,
/// any kind tomorrow. `name` is `namespace/name` (the metrics label value), shared by the object's routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub kind: &'static str,
    pub name: Arc<str>,
}

impl Origin {
    /// The origin of an object, its `namespace/name` shared through `strings`; other kinds than Ingress are
    /// named with their kind (`HTTPRoute namespace/name`), so metrics labels and logs tell them apart.
    pub fn of(r: &ObjectRef, strings: &mut Strings, scratch: &mut String) -> Self {
        use std::fmt::Write;
        scratch.clear();
        if r.kind != "Ingress" {
            let _ = write!(scratch, "{} ", r.kind);
        }
        let _ = write!(scratch, "{}/{}", r.namespace, r.name);
        Self {
            kind: r.kind,
            name: strings.get(scratch),
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.kind == "Ingress" {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            f.write_str(&self.name) // already `Kind namespace/name`
        }
    }
}

// === Matches ===

/// What a route matches beyond host and path (which the table indexes): the Gateway API's method, header and
/// query matches. Ingress translation never fills it; the table evaluates it, and a route whose conditions fail
/// passes the request to the next candidate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestMatch {
    pub method: Option<http::Method>,
    pub headers: Vec<(HeaderName, ValueMatch)>,
    pub query: Vec<(Box<str>, ValueMatch)>,
}

/// How a header or query parameter's value is matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueMatch {
    Present,
    Exact(Box<str>),
    /// The whole value matches (Gateway API's `RegularExpression`).
    Regex(FullMatch),
}

/// A regular expression anchored at both ends, compared by its source.
#[derive(Debug, Clone)]
pub struct FullMatch(pub Box<regex::Regex>);

impl FullMatch {
    /// `pattern` as a whole-value match, within the size limits of regex paths.
    pub fn new(pattern: &str) -> Result<Self, String> {
        regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(super::annotations::rewrite::REGEX_SIZE_LIMIT)
            .dfa_size_limit(super::annotations::rewrite::REGEX_SIZE_LIMIT)
            .build()
            .map(|re| Self(Box::new(re)))
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(_) => "is a regular expression too large to serve".to_string(),
                other => format!(
                    "is not a valid regular expression: {}",
                    other.to_string().lines().last().unwrap_or("")
                ),
            })
    }

    pub fn is_match(&self, value: &[u8]) -> bool {
        std::str::from_utf8(value).is_ok_and(|v| self.0.is_match(v))
    }
}

impl PartialEq for FullMatch {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for FullMatch {}

// === Filters ===

/// One step a route applies to its requests (and their responses), in list order. The proxy's filter chain
/// (`proxy/filters.rs`) gives each variant's type its behaviour: a new filter is a type here, a variant, and one
/// line there. Room for auth and mirroring.
#[derive(Debug)]
pub enum Filter {
    /// Only clients in these networks are served (403 otherwise).
    AllowSources(AllowSources),
    /// Plain-HTTP requests get 308 to HTTPS (not the ACME challenge path).
    HttpsRedirect(HttpsRedirect),
    /// Every request is answered with this redirect.
    Redirect(Redirect),
    /// Every request is answered with 308 to the same scheme, port, path and query on this host
    /// (`from-to-www-redirect`'s twin).
    HostRedirect(HostRedirect),
    /// A request for `/` is redirected (302) to this path.
    AppRoot(AppRoot),
    /// Request bodies above this size are refused (413).
    BodyLimit(BodyLimit),
    /// The path sent upstream is the route's regex captures expanded into this target.
    Rewrite(Rewrite),
    /// Request header edits, after the gateway's own forwarding headers.
    RequestHeaders(RequestHeaders),
    /// Response header edits.
    ResponseHeaders(ResponseHeaders),
    /// `Strict-Transport-Security` on responses over TLS.
    Hsts(Hsts),
    /// Every request is answered with this status (a Gateway API rule without a usable backend: 500).
    Respond(Respond),
    /// Gateway API `RequestRedirect`: the request's URL with parts replaced.
    UrlRedirect(UrlRedirect),
    /// Gateway API `URLRewrite`'s path (its hostname is the send policy's upstream Host).
    PathRewrite(PathRewrite),
    /// Client certificates (`auth-tls-*`): the handshake's settings must be the host's, a certificate may be
    /// required, and what was verified goes upstream.
    ClientCert(ClientCert),
    /// Forward auth: an auth service decides before the request goes upstream (`model::auth`).
    ForwardAuth(Arc<super::auth::ForwardAuth>),
    /// Basic auth: a password file decides (`model::auth`).
    BasicAuth(Arc<super::auth::BasicAuth>),
    /// Clients in these networks get 403, whatever an allowlist says.
    DenySources(DenySources),
    /// CORS preflights answered here; allowed origins' responses get the CORS headers.
    Cors(Cors),
    /// Rate and concurrency limits per client address (keeps state).
    RateLimit(RateLimit),
    /// Custom error pages: responses with these codes are answered with the route's error backend's page (the
    /// backend marked `error_page`), in the respond phase (`proxy::errors`).
    ErrorPages(ErrorPages),
}

impl Filter {
    /// Whether the filter keeps state between its route's requests (a rate limit's buckets), in the route's kept
    /// slot (`snapshot::Kept`), which then survives republishes. Auth keeps its caches there.
    pub fn keeps_state(&self) -> bool {
        match self {
            Filter::AllowSources(_)
            | Filter::HttpsRedirect(_)
            | Filter::Redirect(_)
            | Filter::HostRedirect(_)
            | Filter::AppRoot(_)
            | Filter::BodyLimit(_)
            | Filter::Rewrite(_)
            | Filter::RequestHeaders(_)
            | Filter::ResponseHeaders(_)
            | Filter::Hsts(_)
            | Filter::Respond(_)
            | Filter::UrlRedirect(_)
            | Filter::PathRewrite(_)
            | Filter::ClientCert(_)
            | Filter::DenySources(_)
            | Filter::Cors(_)
            | Filter::ErrorPages(_) => false,
            // Caches: verified credentials, and forward auth's answers when `auth-cache-key` asks.
            Filter::BasicAuth(_) => true,
            Filter::ForwardAuth(f) => f.cache.is_some(),
            // Per-client buckets and requests in flight.
            Filter::RateLimit(_) => true,
        }
    }
}

pub use super::traffic::{Cors, CorsValue, DenySources, RateLimit};

#[derive(Debug)]
pub struct AllowSources(pub Box<[Cidr]>);

/// A route's client-certificate requirement (see `annotations::client_cert`).
#[derive(Debug)]
pub struct ClientCert {
    /// The client-certificate settings of the handshake this route needs (`ClientCert::tls_id` of the
    /// annotations); a connection whose handshake used other settings (or none) gets 421.
    pub tls_id: u64,
    /// A certificate must have been sent (`verify-client: on`).
    pub required: bool,
    /// The certificate was checked against the CA (`on`, `optional`), not just asked for (`optional_no_ca`).
    pub verified: bool,
    /// Without a required certificate: a 302 here instead of 400.
    pub error_page: Option<HeaderValue>,
    /// Send the certificate upstream as `ssl-client-cert`.
    pub pass_cert: bool,
}

impl Filter {
    /// The client-certificate settings this route's connections need, if any (its `ClientCert` filter's id).
    pub fn client_cert_id(filters: &[Filter]) -> Option<u64> {
        filters.iter().find_map(|f| match f {
            Filter::ClientCert(c) => Some(c.tls_id),
            _ => None,
        })
    }
}

/// A route's custom error pages (see `annotations::errors`). The headers sent to the error backend name the route's
/// origin and main backend, read from the route when a page is fetched.
#[derive(Debug)]
pub struct ErrorPages {
    /// Sorted, unique, 400..=599.
    pub codes: Box<[u16]>,
    /// Upstream answers with these codes are replaced too (else only the gateway's own).
    pub upstream: bool,
}

impl ErrorPages {
    /// Whether a response with `status` gets the error page (`own`: the gateway produced it).
    #[inline]
    pub fn wants(&self, status: StatusCode, own: bool) -> bool {
        (own || self.upstream) && self.codes.binary_search(&status.as_u16()).is_ok()
    }

    /// The route's error pages, if it has them.
    pub fn of(filters: &[Filter]) -> Option<&ErrorPages> {
        filters.iter().find_map(|f| match f {
            Filter::ErrorPages(e) => Some(e),
            _ => None,
        })
    }
}

#[derive(Debug)]
pub struct HttpsRedirect;

#[derive(Debug)]
pub struct Redirect {
    pub location: HeaderValue,
    pub status: StatusCode,
}

#[derive(Debug)]
pub struct HostRedirect(pub Box<str>);

#[derive(Debug)]
pub struct AppRoot(pub Box<str>);

#[derive(Debug)]
pub struct BodyLimit(pub u64);

#[derive(Debug)]
pub struct Rewrite(pub Box<str>);

#[derive(Debug, Default)]
pub struct RequestHeaders {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

#[derive(Debug, Default)]
pub struct ResponseHeaders {
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Appended (Gateway API `add`; none from Ingress annotations).
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

#[derive(Debug)]
pub struct Hsts(pub HeaderValue);

#[derive(Debug)]
pub struct Respond(pub StatusCode);

/// How a Gateway API filter replaces a path: whole, or the part its route's prefix matched.
#[derive(Debug, Clone)]
pub enum PathReplace {
    Full(Box<str>),
    /// `prefix` is the route's matched prefix (no trailing slash but for `/`).
    Prefix {
        prefix: Box<str>,
        with: Box<str>,
    },
}

impl PathReplace {
    /// The new path for a request path the route matched.
    pub fn apply(&self, path: &str) -> String {
        match self {
            PathReplace::Full(p) => p.to_string(),
            PathReplace::Prefix { prefix, with } => {
                let rest = if &**prefix == "/" {
                    path
                } else {
                    path.get(prefix.len()..).unwrap_or("")
                };
                let with = with.trim_end_matches('/');
                let rest = rest.trim_start_matches('/');
                match (with.is_empty(), rest.is_empty()) {
                    (_, true) if with.is_empty() => "/".to_string(),
                    (_, true) => with.to_string(),
                    _ => format!("{with}/{rest}"),
                }
            }
        }
    }
}

#[derive(Debug)]
pub struct UrlRedirect {
    pub scheme: Option<Box<str>>,
    pub hostname: Option<Box<str>>,
    pub port: Option<u16>,
    pub path: Option<PathReplace>,
    pub status: StatusCode,
}

#[derive(Debug)]
pub struct PathRewrite(pub PathReplace);

impl RequestHeaders {
    /// Remove, set, then add.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for n in &self.remove {
            headers.remove(n);
        }
        for (n, v) in &self.set {
            headers.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            headers.append(n.clone(), v.clone());
        }
    }
}

impl ResponseHeaders {
    /// Remove, set, then add.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for n in &self.remove {
            headers.remove(n);
        }
        for (n, v) in &self.set {
            headers.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            headers.append(n.clone(), v.clone());
        }
    }
}

// === Send policy ===

/// How a route's requests reach its backends: upstream Host, protocol, timeouts, retries and the affinity
/// cookie. Read by the proxy's send phase.
#[derive(Debug)]
pub struct SendPolicy {
    /// The Host sent upstream instead of the client's.
    pub upstream_host: Option<HeaderValue>,
    /// Send the client's Host upstream; `false` (and no `upstream_host`) sends the endpoint's address.
    pub pass_host: bool,
    /// Speak HTTP/2 without TLS to the backend (h2c, gRPC).
    pub upstream_h2c: bool,
    /// Time to the response headers and between body reads, instead of the configured one.
    pub upstream_timeout: Option<Duration>,
    /// Gateway API `timeouts.request`: a deadline for the whole exchange, from the request's head received to the
    /// response body's end (connect, every try, the body). Never zero (`0s` is kept as `None`).
    pub request_timeout: Option<Duration>,
    /// Gateway API `timeouts.backendRequest`: a deadline for each try, from its send to its response body's end,
    /// within `request_timeout`. Never zero.
    pub try_timeout: Option<Duration>,
    pub connect_timeout: Option<Duration>,
    /// When to try another endpoint, how often and for how long.
    pub next_upstream: NextUpstream,
    pub tries: u8,
    pub retry_window: Option<Duration>,
    /// Cookie name for cookie affinity (`None` unless the route balances by cookie); shared, so a request can
    /// keep it without copying.
    pub affinity_cookie: Option<Arc<str>>,
    /// The affinity cookie's attributes after `NAME=VALUE` (all but `Expires`), its `Expires` in seconds from the
    /// response, and whether a retried request gets a new cookie.
    pub affinity_attributes: Box<str>,
    pub affinity_expires: Option<u64>,
    pub affinity_change_on_failure: bool,
}

impl SendPolicy {
    /// The upstream Host edit, after the filters' request edits: `upstream_host`, else the endpoint's address
    /// unless the client's Host is passed on.
    pub fn set_host(&self, headers: &mut HeaderMap, endpoint: std::net::SocketAddr) {
        if let Some(h) = &self.upstream_host {
            headers.insert(http::header::HOST, h.clone());
        } else if !self.pass_host {
            if let Ok(v) = HeaderValue::from_str(&endpoint.to_string()) {
                headers.insert(http::header::HOST, v);
            }
        }
    }
}

// === Backends ===

/// One backend of a route as the table keeps it: its identity, its share of the traffic and its origin (a
/// canary's is the canary Ingress).
#[derive(Debug, Clone)]
pub struct WeightedBackend {
    /// `namespace/service:port`.
    pub id: Arc<str>,
    pub weight: u32,
    /// A reference that cannot be served (Gateway API: missing Service, not granted): the requests the weights
    /// send here answer 500.
    pub invalid: bool,
    /// A `RequestMirror` target (weight 0: never serves): the share of requests a copy is sent to, in
    /// millionths.
    pub mirror: Option<u32>,
    /// The route's error pages' backend (weight 0: never serves the request itself).
    pub error_page: bool,
    pub origin: Origin,
    /// Gateway API: requests go over TLS, verified as a BackendTLSPolicy says; the key of its upstream TLS client
    /// in the snapshot's policy table ([`crate::upstream::policy::PolicyTable::backend_tls`]).
    pub tls: Option<Arc<str>>,
}

/// A route's backends, or the state aligned with them: one (most routes) kept inline, more in a boxed slice. Read
/// as a slice.
#[derive(Debug, Clone)]
pub enum OneOrMore<T> {
    One(T),
    More(Box<[T]>),
}

impl<T> std::ops::Deref for OneOrMore<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match self {
            OneOrMore::One(x) => std::slice::from_ref(x),
            OneOrMore::More(xs) => xs,
        }
    }
}

impl<T> FromIterator<T> for OneOrMore<T> {
    /// One element inline, else a slice (no allocation for one).
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut iter = iter.into_iter();
        match (iter.next(), iter.next()) {
            (Some(first), None) => OneOrMore::One(first),
            (first, second) => OneOrMore::More(first.into_iter().chain(second).chain(iter).collect()),
        }
    }
}

/// What the builder of live state needs to know about one of a route's backends.
#[derive(Debug, Clone, Copy)]
pub struct BackendSpec<'a> {
    pub model: &'a BackendModel,
    pub balance: Balance,
    pub check: Option<&'a ActiveCheck>,
    /// Send to the Service's ClusterIP rather than its endpoints (the endpoints are then that one address).
    pub via_cluster_ip: bool,
}

/// Rules that override the weights for one request: a canary's header and cookie rules and its stickiness.
/// Backend 0 is the main one, backend 1 the alternative. Without a rule deciding, the weights do.
#[derive(Debug)]
pub struct Split {
    header: Option<(HeaderName, HeaderRule)>,
    cookie: Option<Box<str>>,
    sticky: bool,
    /// The affinity cookie of the requests backend 1 serves (its own balancing).
    pub affinity_cookie: Option<Arc<str>>,
    /// The rules in words, for `/api/explain`.
    described: Box<str>,
}

#[derive(Debug)]
enum HeaderRule {
    AlwaysNever,
    Value(HeaderValue),
    /// `None`: the expression no longer compiles (it did at translation); it then matches nothing.
    Pattern(Option<Box<regex::Regex>>),
}

/// What a [`Split`]'s rules decided for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitChoice {
    Main,
    Alternative,
    /// No rule decided: the weights do.
    Weights,
}

impl Split {
    fn compile(p: &IngressPolicy, weight: u32, total: u32) -> Self {
        let c = p.canary.as_ref();
        let header = c.and_then(|c| c.header.as_deref()).and_then(|h| {
            let name = HeaderName::from_bytes(h.as_bytes()).ok()?;
            let rule = match &c?.header_match {
                canary_rules::HeaderMatch::AlwaysNever => HeaderRule::AlwaysNever,
                canary_rules::HeaderMatch::Value(v) => HeaderRule::Value(HeaderValue::from_str(v).ok()?),
                canary_rules::HeaderMatch::Pattern(re) => {
                    HeaderRule::Pattern(match canary_rules::compile_pattern(re) {
                        Ok(re) => Some(Box::new(re)),
                        Err(e) => {
                            tracing::warn!(pattern = %re, error = %e, "canary header pattern left out");
                            None
                        }
                    })
                }
            };
            Some((name, rule))
        });
        let mut split = Self {
            header,
            cookie: c.and_then(|c| c.cookie.as_deref()).map(Into::into),
            sticky: c.is_some_and(|c| c.sticky),
            affinity_cookie: (p.balancing.balance == Balance::Cookie).then(|| p.balancing.cookie_name.as_str().into()),
            described: "".into(),
        };
        split.described = split.describe(weight, total).into();
        split
    }

    fn describe(&self, weight: u32, total: u32) -> String {
        let mut parts = Vec::new();
        if let Some((name, rule)) = &self.header {
            parts.push(match rule {
                HeaderRule::AlwaysNever => format!("header {name}: always = canary, never = main"),
                HeaderRule::Value(v) => format!("header {name}: {} = canary", v.to_str().unwrap_or("?")),
                HeaderRule::Pattern(re) => format!(
                    "header {name}: a match of {} = canary",
                    re.as_ref().map_or("(invalid)", |r| r.as_str())
                ),
            });
        }
        if let Some(c) = &self.cookie {
            parts.push(format!("cookie {c}: always = canary, never = main"));
        }
        if self.sticky {
            parts.push("an affinity cookie keeps its side".into());
        }
        parts.push(format!("else {weight} in {total} at random"));
        parts.join("; ")
    }

    /// The rules in words, for `/api/explain` and `/api/routes`.
    pub fn description(&self) -> &str {
        &self.described
    }

    /// The header rule, then the cookie rule, then stickiness: `names(side, value)` says whether an affinity
    /// cookie value names an endpoint of that side's backend (`main_affinity`: the main side's cookie name).
    pub fn choose(
        &self,
        headers: &HeaderMap,
        main_affinity: Option<&str>,
        names: impl Fn(usize, &str) -> bool,
    ) -> SplitChoice {
        if let Some((name, rule)) = &self.header {
            if let Some(v) = headers.get(name) {
                match rule {
                    HeaderRule::AlwaysNever => match v.as_bytes() {
                        b"always" => return SplitChoice::Alternative,
                        b"never" => return SplitChoice::Main,
                        _ => {}
                    },
                    HeaderRule::Value(want) => {
                        if v == want {
                            return SplitChoice::Alternative;
                        }
                    }
                    HeaderRule::Pattern(re) => {
                        if let (Some(re), Ok(v)) = (re, v.to_str()) {
                            if re.is_match(v) {
                                return SplitChoice::Alternative;
                            }
                        }
                    }
                }
            }
        }
        if let Some(name) = &self.cookie {
            match cookie(headers, name) {
                Some("always") => return SplitChoice::Alternative,
                Some("never") => return SplitChoice::Main,
                _ => {}
            }
        }
        if self.sticky {
            let holds = |side: usize, name: Option<&str>| {
                name.and_then(|n| cookie(headers, n))
                    .is_some_and(|value| names(side, value))
            };
            if holds(0, main_affinity) {
                return SplitChoice::Main;
            }
            if holds(1, self.affinity_cookie.as_deref()) {
                return SplitChoice::Alternative;
            }
        }
        SplitChoice::Weights
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

// === The route ===

/// A route's filters and send policy, shared by the routes of one annotation set.
type Rules = (Arc<[Filter]>, Arc<SendPolicy>);

/// A route of the neutral model, as the table builder gets it (host and path are the table's keys).
#[derive(Debug)]
pub struct RouteSpec<'a> {
    pub path: &'a str,
    pub kind: PathKind,
    /// Conditions beyond host and path (none from Ingresses).
    pub matches: Option<Box<RequestMatch>>,
    pub filters: Arc<[Filter]>,
    pub send: Arc<SendPolicy>,
    /// The main backend first; a canary's second.
    pub backends: Vec<(WeightedBackend, BackendSpec<'a>)>,
    /// Rules choosing between the two backends before the weights do (a canary's).
    pub split: Option<Arc<Split>>,
    pub origin: Origin,
}

/// Turns translated Ingress paths into [`RouteSpec`]s, for one table build (its caches are keyed by the
/// translation's pointers, valid while that translation is). Filters, send policy and split rules are made once
/// per annotation set (Ingresses share one `Arc<IngressPolicy>` across their paths) and shared by its routes;
/// origin and backend id strings once per build.
#[derive(Default)]
pub struct Lowering {
    rules: HashMap<(*const IngressPolicy, bool), Rules>,
    splits: HashMap<*const IngressPolicy, Arc<Split>>,
    strings: Strings,
    scratch: String,
    id_scratch: String,
}

impl Lowering {
    /// The route of a translated path.
    pub fn path<'a>(&mut self, p: &'a PathModel) -> RouteSpec<'a> {
        if let Some(g) = &p.gateway {
            return self.gateway_path(p, g);
        }
        let (filters, send) = self.rules(&p.policy, p.https_redirect);
        let origin = Origin::of(&p.ingress, &mut self.strings, &mut self.scratch);
        let mut backends = Vec::with_capacity(1 + usize::from(p.canary.is_some()));
        let mut split = None;
        match &p.canary {
            None => backends.push(self.backend(&p.backend, &p.policy, 1, origin.clone())),
            Some(c) => {
                let rules = c.rules();
                let total = rules.weight_total.max(1);
                let weight = rules.weight.min(total);
                backends.push(self.backend(&p.backend, &p.policy, total - weight, origin.clone()));
                let canary_origin = Origin::of(&c.ingress, &mut self.strings, &mut self.scratch);
                backends.push(self.backend(&c.backend, &c.policy, weight, canary_origin));
                split = Some(self.split(&c.policy, rules.weight, total));
            }
        }
        self.error_backend(&mut backends, &p.policy, origin.clone());
        RouteSpec {
            path: &p.path,
            kind: p.kind,
            matches: None,
            filters,
            send,
            backends,
            split,
            origin,
        }
    }

    /// The route of a Gateway API rule's match.
    fn gateway_path<'a>(&mut self, p: &'a PathModel, g: &'a super::gateway::serve::GatewayRule) -> RouteSpec<'a> {
        let (_, send) = self.rules(&p.policy, false);
        let origin = Origin::of(&p.ingress, &mut self.strings, &mut self.scratch);
        let (filters, upstream_host) = gateway_filters(p, g);
        // `timeouts.request` is a deadline for the whole exchange, `timeouts.backendRequest` one for each try
        // (zero: disabled). The smaller also replaces the configured time to the response headers and between
        // body reads, so the configured defaults never cut a try shorter than the route asked for.
        let nonzero = |t: Option<Duration>| t.filter(|t| !t.is_zero());
        let (request, per_try) = (nonzero(g.timeouts.request), nonzero(g.timeouts.backend_request));
        let timeout = [per_try, request].into_iter().flatten().min();
        let send = match (upstream_host, timeout, g.h2c) {
            (None, None, false) => send,
            (h, t, h2c) => Arc::new(SendPolicy {
                upstream_h2c: h2c || send.upstream_h2c,
                upstream_host: h.or_else(|| send.upstream_host.clone()),
                upstream_timeout: t.or(send.upstream_timeout),
                request_timeout: request,
                try_timeout: per_try,
                affinity_cookie: send.affinity_cookie.clone(),
                affinity_attributes: send.affinity_attributes.clone(),
                ..*send
            }),
        };
        let backends = if g.backends.is_empty() {
            vec![self.backend(&p.backend, &p.policy, 1, origin.clone())]
        } else {
            g.backends
                .iter()
                .zip(&g.backend_tls)
                .map(|((m, w, valid), tls)| {
                    let mut b = self.backend(m, &p.policy, *w, origin.clone());
                    b.0.invalid = !valid;
                    b.0.tls = tls.as_ref().map(|t| {
                        let key = t.key(g.h2c);
                        self.strings.get(&key)
                    });
                    b
                })
                .collect()
        };
        let mut backends = backends;
        for (m, share) in &g.mirrors {
            let mut b = self.backend(m, &p.policy, 0, origin.clone());
            b.0.mirror = Some(*share);
            backends.push(b);
        }
        RouteSpec {
            path: &p.path,
            kind: p.kind,
            matches: g.matches.clone().map(Box::new),
            filters: filters.into(),
            send,
            backends,
            split: None,
            origin,
        }
    }

    /// The route of a listener set's default backend.
    pub fn default_route<'a>(&mut self, d: &'a DefaultBackendModel) -> RouteSpec<'a> {
        let (filters, send) = self.rules(&d.policy, false);
        let origin = Origin::of(&d.ingress, &mut self.strings, &mut self.scratch);
        let mut backends = vec![self.backend(&d.backend, &d.policy, 1, origin.clone())];
        self.error_backend(&mut backends, &d.policy, origin.clone());
        RouteSpec {
            path: "/",
            kind: PathKind::Prefix,
            matches: None,
            filters,
            send,
            backends,
            split: None,
            origin,
        }
    }

    fn backend<'a>(
        &mut self,
        m: &'a BackendModel,
        p: &'a IngressPolicy,
        weight: u32,
        origin: Origin,
    ) -> (WeightedBackend, BackendSpec<'a>) {
        use std::fmt::Write;
        self.id_scratch.clear();
        let _ = write!(self.id_scratch, "{}/{}:{}", m.namespace, m.service, m.port);
        let id = self.strings.get(&self.id_scratch);
        (
            WeightedBackend {
                id,
                weight,
                origin,
                invalid: false,
                mirror: None,
                error_page: false,
                tls: None,
            },
            BackendSpec {
                model: m,
                balance: p.balancing.balance,
                check: p.backend.check.as_ref(),
                via_cluster_ip: p.retry.service_upstream,
            },
        )
    }

    /// The error pages' backend, last (weight 0), when the policy has one.
    fn error_backend<'a>(
        &mut self,
        backends: &mut Vec<(WeightedBackend, BackendSpec<'a>)>,
        p: &'a IngressPolicy,
        origin: Origin,
    ) {
        if let Some(m) = p.error_pages.as_ref().and_then(|e| e.backend.as_ref()) {
            let mut b = self.backend(m, p, 0, origin);
            b.0.error_page = true;
            b.1.check = None;
            b.1.balance = Balance::RoundRobin;
            b.1.via_cluster_ip = false;
            backends.push(b);
        }
    }

    fn rules(&mut self, p: &Arc<IngressPolicy>, https_redirect: bool) -> Rules {
        let key = (Arc::as_ptr(p), https_redirect);
        if let Some((f, s)) = self.rules.get(&key) {
            return (f.clone(), s.clone());
        }
        let made = (filters(p, https_redirect).into(), Arc::new(send_policy(p)));
        self.rules.insert(key, made.clone());
        made
    }

    fn split(&mut self, p: &Arc<IngressPolicy>, weight: u32, total: u32) -> Arc<Split> {
        if let Some(s) = self.splits.get(&Arc::as_ptr(p)) {
            return s.clone();
        }
        let s = Arc::new(Split::compile(p, weight, total));
        self.splits.insert(Arc::as_ptr(p), s.clone());
        s
    }
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

/// An Ingress's annotations as filters, in the order they act: who may use the route, the redirects that answer
/// instead of the backend, the body limit, the rewrite, then the header edits.
fn filters(p: &IngressPolicy, https_redirect: bool) -> Vec<Filter> {
    let mut out = Vec::new();
    if let Some(d) = &p.deny_source_ranges {
        out.push(Filter::DenySources(DenySources(d.clone().into_boxed_slice())));
    }
    if let Some(a) = &p.access.allow_source_ranges {
        out.push(Filter::AllowSources(AllowSources(a.clone().into_boxed_slice())));
    }
    if https_redirect {
        out.push(Filter::HttpsRedirect(HttpsRedirect));
    }
    if let Some(c) = &p.client_cert {
        use super::annotations::client_cert::VerifyClient;
        out.push(Filter::ClientCert(ClientCert {
            tls_id: c.tls_id(),
            required: c.verify == VerifyClient::On,
            verified: c.verify != VerifyClient::OptionalNoCa,
            error_page: c.error_page.as_deref().and_then(|u| HeaderValue::from_str(u).ok()),
            pass_cert: c.pass_to_upstream,
        }));
    }
    if let Some((location, status)) = p
        .rewrite
        .redirect
        .as_ref()
        .and_then(|(url, code)| Some((HeaderValue::from_str(url).ok()?, StatusCode::from_u16(*code).ok()?)))
    {
        out.push(Filter::Redirect(Redirect { location, status }));
    }
    if let Some(host) = &p.rewrite.host_redirect {
        out.push(Filter::HostRedirect(HostRedirect(host.as_str().into())));
    }
    if let Some(root) = &p.rewrite.app_root {
        out.push(Filter::AppRoot(AppRoot(root.as_str().into())));
    }
    // CORS preflights are answered before the limits count them (as ingress-nginx, whose preflight `return`
    // runs before `limit_req`).
    if let Some(c) = &p.cors {
        // Values the parser checked always make header values; were one not to, the route answers 500 rather
        // than go without the CORS policy asked for.
        out.push(Cors::new(c).map_or(
            Filter::Respond(Respond(StatusCode::INTERNAL_SERVER_ERROR)),
            Filter::Cors,
        ));
    }
    if let Some(l) = &p.limit {
        out.push(Filter::RateLimit(RateLimit::new(l)));
    }
    // Auth after the redirects, CORS preflights and limits (nginx's rewrite and preaccess phases come before its
    // access phase), before the body limit, the rewrite and the header edits.
    if let Some(b) = &p.basic_auth {
        match super::auth::BasicAuth::new(&b.realm, b.users.clone()) {
            Ok(f) => out.push(Filter::BasicAuth(Arc::new(f))),
            // Checked by the parser; should it ever fail, nobody gets in.
            Err(_) => out.push(Filter::Respond(Respond(StatusCode::INTERNAL_SERVER_ERROR))),
        }
    }
    if let Some(f) = &p.forward_auth {
        out.push(Filter::ForwardAuth(Arc::new(f.clone())));
    }
    if let Some(max) = p.body.max_bytes {
        out.push(Filter::BodyLimit(BodyLimit(max)));
    }
    if let Some(target) = &p.rewrite.target {
        out.push(Filter::Rewrite(Rewrite(target.as_str().into())));
    }
    let mut set = pairs(&p.headers.request_set);
    if let Some(prefix) = p
        .headers
        .forwarded_prefix
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        set.push((HeaderName::from_static("x-forwarded-prefix"), prefix));
    }
    let request = RequestHeaders {
        set,
        add: pairs(&p.headers.request_add),
        remove: names(&p.headers.request_remove),
    };
    if !(request.set.is_empty() && request.add.is_empty() && request.remove.is_empty()) {
        out.push(Filter::RequestHeaders(request));
    }
    let response = ResponseHeaders {
        set: pairs(&p.headers.response_set),
        add: Vec::new(),
        remove: names(&p.headers.response_remove),
    };
    if !(response.set.is_empty() && response.remove.is_empty()) {
        out.push(Filter::ResponseHeaders(response));
    }
    if let Some(hsts) = p.https.hsts.as_deref().and_then(|h| HeaderValue::from_str(h).ok()) {
        out.push(Filter::Hsts(Hsts(hsts)));
    }
    if let Some(e) = p.error_pages.as_ref().filter(|e| e.backend.is_some()) {
        out.push(Filter::ErrorPages(ErrorPages {
            codes: e.codes.clone().into(),
            upstream: e.upstream,
        }));
    }
    out
}

/// A Gateway API rule's filters, in order, and the upstream Host its `URLRewrite` sets.
fn gateway_filters(p: &PathModel, g: &super::gateway::serve::GatewayRule) -> (Vec<Filter>, Option<HeaderValue>) {
    let mut out = Vec::new();
    let mut host = None;
    if g.answers_500 {
        out.push(Filter::Respond(Respond(StatusCode::INTERNAL_SERVER_ERROR)));
    }
    let replace = |m: &super::gateway::PathModifier| -> Option<PathReplace> {
        match m.type_.as_str() {
            "ReplaceFullPath" => Some(PathReplace::Full(m.replace_full_path.as_deref()?.into())),
            "ReplacePrefixMatch" => Some(PathReplace::Prefix {
                prefix: p.path.as_str().into(),
                with: m.replace_prefix_match.as_deref()?.into(),
            }),
            _ => None,
        }
    };
    for f in &g.filters {
        if let Some(c) = f.cors.as_ref().filter(|_| f.type_ == "CORS") {
            // Checked by attachment (a bad one refuses the route); should it fail here, the rule answers 500.
            out.push(c.lower().map_or(
                Filter::Respond(Respond(StatusCode::INTERNAL_SERVER_ERROR)),
                Filter::Cors,
            ));
        }
        if let Some(m) = &f.request_header_modifier {
            out.push(Filter::RequestHeaders(RequestHeaders {
                set: gateway_pairs(&m.set),
                add: gateway_pairs(&m.add),
                remove: names(&m.remove),
            }));
        }
        if let Some(m) = &f.response_header_modifier {
            out.push(Filter::ResponseHeaders(ResponseHeaders {
                set: gateway_pairs(&m.set),
                add: gateway_pairs(&m.add),
                remove: names(&m.remove),
            }));
        }
        if let Some(r) = &f.request_redirect {
            out.push(Filter::UrlRedirect(UrlRedirect {
                scheme: r.scheme.as_deref().map(Into::into),
                hostname: r.hostname.as_deref().map(Into::into),
                port: r.port.and_then(|p| u16::try_from(p).ok()),
                path: r.path.as_ref().and_then(replace),
                status: u16::try_from(r.status_code)
                    .ok()
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .unwrap_or(StatusCode::FOUND),
            }));
        }
        if let Some(r) = &f.url_rewrite {
            if let Some(h) = r.hostname.as_deref().and_then(|h| HeaderValue::from_str(h).ok()) {
                host = Some(h);
            }
            if let Some(path) = r.path.as_ref().and_then(replace) {
                out.push(Filter::PathRewrite(PathRewrite(path)));
            }
        }
    }
    (out, host)
}

fn gateway_pairs(list: &[super::gateway::HttpHeader]) -> Vec<(HeaderName, HeaderValue)> {
    list.iter()
        .filter_map(|h| {
            Some((
                HeaderName::from_bytes(h.name.as_bytes()).ok()?,
                HeaderValue::from_str(&h.value).ok()?,
            ))
        })
        .collect()
}

fn send_policy(p: &IngressPolicy) -> SendPolicy {
    SendPolicy {
        upstream_host: p
            .headers
            .upstream_host
            .as_deref()
            .and_then(|h| HeaderValue::from_str(h).ok()),
        pass_host: p.headers.pass_host,
        upstream_h2c: p.backend.protocol == BackendProtocol::H2c,
        upstream_timeout: p.backend.timeout,
        request_timeout: None,
        try_timeout: None,
        connect_timeout: p.retry.connect_timeout,
        next_upstream: p.retry.next_upstream,
        tries: p.retry.tries,
        retry_window: p.retry.retry_window,
        affinity_cookie: (p.balancing.balance == Balance::Cookie).then(|| p.balancing.cookie_name.as_str().into()),
        affinity_attributes: p.balancing.cookie.suffix().into(),
        affinity_expires: p.balancing.cookie.expires,
        affinity_change_on_failure: p.balancing.cookie.change_on_failure,
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

    #[test]
    fn filters_keep_the_order_requests_meet_them() {
        use crate::model::annotations::{access::Access, body::RequestBody, headers::HeaderEdits, https::Https};
        let p = IngressPolicy {
            access: Access {
                allow_source_ranges: Some(vec!["10.0.0.0/8".parse().unwrap()]),
            },
            body: RequestBody {
                max_bytes: Some(10),
                ..Default::default()
            },
            https: Https {
                hsts: Some("max-age=1".into()),
                ..Default::default()
            },
            headers: HeaderEdits {
                request_set: vec![("x-a".into(), "1".into())],
                response_remove: vec!["server".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        let kinds: Vec<String> = filters(&p, true)
            .iter()
            .map(|f| format!("{f:?}").split('(').next().unwrap().to_string())
            .collect();
        assert_eq!(
            kinds,
            [
                "AllowSources",
                "HttpsRedirect",
                "BodyLimit",
                "RequestHeaders",
                "ResponseHeaders",
                "Hsts"
            ]
        );
        assert!(
            filters(&IngressPolicy::default(), false).is_empty(),
            "no annotations, no filters"
        );
    }
}
