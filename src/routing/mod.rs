//! The immutable routing table the data plane reads: one [`SetTable`] per listener set, built from a
//! [`Translation`] through the source-neutral route model ([`crate::model::route`]).
//!
//! The table is generic over `S`, the state the data plane attaches to each route (its live backends, counters
//! and kept state, made by `snapshot`): routing decides which route a request takes and which of its weighted
//! backends serves, and knows nothing of endpoints, connections or counters.
//!
//! Host lookup is one hash probe for the exact name and one for the wildcard suffix, so its cost does not depend
//! on the number of hosts. A host with a few paths (most hosts: one `/`) keeps them in precedence order and
//! takes the first that matches, without a router. A host with more paths has a matchit router: each path key
//! maps to an [`Entry`] holding the Exact and the Prefix route that end there; matchit's preference for static
//! over catch-all segments makes the deepest (longest) prefix win, and a literal key can only match a path equal
//! to it, so the Exact route wins ties as the semantics require. Both are checked against a brute-force matcher
//! in the tests.

pub mod weights;

pub use weights::below_million;

use std::collections::HashSet;
use std::sync::Arc;

use http::header::HeaderMap;

pub use crate::model::route::{cookie, Origin};
use crate::model::route::{
    Filter, Lowering, OneOrMore, RequestMatch, RouteSpec, SendPolicy, Split, SplitChoice, ValueMatch, WeightedBackend,
};
use crate::model::{changed_hosts, HostModel, HostPattern, PathKind, SetModel, Translation};

/// Makes the state of a route from its spec (the data plane's live backends and counters, reused by key).
pub trait MakeState<S> {
    fn make(&mut self, host: &HostPattern, route: &RouteSpec<'_>) -> S;
}

impl<S, F: FnMut(&HostPattern, &RouteSpec<'_>) -> S> MakeState<S> for F {
    fn make(&mut self, host: &HostPattern, route: &RouteSpec<'_>) -> S {
        self(host, route)
    }
}

/// Builds the tables of every listener set. With `previous` (the tables built from `previous_translation`), a
/// host whose model did not change keeps its compiled routes, and their state (shared, not rebuilt); the host
/// maps are copied from the previous tables and edited where hosts changed. Only changed hosts and the default
/// routes call `make`.
pub fn build<S>(
    t: &Translation,
    previous: Option<(&[SetTable<S>], &Translation)>,
    make: &mut impl MakeState<S>,
) -> Vec<SetTable<S>> {
    let mut lowering = Lowering::default();
    t.sets
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let before = previous.and_then(|(tables, t)| Some((t.sets.get(i)?, tables.get(i)?)));
            SetTable::build(s, before, make, &mut lowering)
        })
        .collect()
}

/// Hosts by name, hashed with foldhash seeded per process: the keys come from the configuration and requests only
/// look up (SipHash cost ~230 instructions per request).
type HostSet<S> = HashSet<Keyed<S>, foldhash::fast::RandomState>;

/// One listener set's routes. Invariant: built once, never mutated.
#[derive(Debug)]
pub struct SetTable<S> {
    pub name: String,
    exact: HostSet<S>,
    /// Keyed by the suffix after the first label: `*.example.com` is stored as `example.com`.
    wildcard: HostSet<S>,
    any: Option<Arc<HostRoutes<S>>>,
    /// Number of routes (kept up to date by a rebuild's edits).
    routes: usize,
    /// The listener set's default backend, as a route matching anything (host `*`, path `/`).
    default_backend: Option<Box<Route<S>>>,
    /// Gateway API host matching: a wildcard covers any number of labels, and a request whose host's most
    /// specific rule set has no route for it falls to less specific ones (exact, wildcards from the longest
    /// suffix, host-less).
    gateway: bool,
}

/// A route: what it matches, the filters its requests go through, how they are sent, the weighted backends
/// that serve it, where it came from, and the data plane's state for it.
#[derive(Debug)]
pub struct Route<S> {
    pub host: HostPattern,
    /// Shared with the other routes of the build that have the same path.
    pub path: Arc<str>,
    pub kind: PathKind,
    /// Conditions beyond host and path (room for the Gateway API; none from Ingresses, not evaluated yet).
    pub matches: Option<Box<RequestMatch>>,
    /// Applied in order (see `proxy::filters`); shared by the routes of one annotation set.
    pub filters: Arc<[Filter]>,
    pub send: Arc<SendPolicy>,
    /// The main backend first; a canary's second. Never empty.
    pub backends: OneOrMore<WeightedBackend>,
    /// Rules that pick a backend before the weights do (a canary's header, cookie and stickiness).
    pub split: Option<Arc<Split>>,
    /// The object that defined the route.
    pub origin: Origin,
    /// The compiled path of a [`PathKind::Regex`] route (boxed: most routes have none).
    regex: Option<Box<regex::Regex>>,
    /// The data plane's state for this route (live backends aligned with `backends`, counters, kept state).
    pub state: S,
}

/// What a route's conditions beyond host and path look at.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a http::Method,
    pub headers: &'a HeaderMap,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
}

/// The outcome of a lookup.
#[derive(Debug)]
pub enum Lookup<'a, S> {
    Route(&'a Route<S>),
    /// No rule matched; the listener set's default backend serves.
    Default(&'a Route<S>),
    NotFound,
}

#[derive(Debug, Default)]
struct Entry {
    exact: Option<usize>,
    prefix: Option<usize>,
}

/// Hosts with at most this many paths are matched by trying them in order, without a router.
const FEW_PATHS: usize = 4;

/// A host's routes as an element of a set's host map, found by [`HostRoutes::key`]: the map holds one pointer
/// per host, so copying it for a rebuild costs one reference count per host.
#[derive(Debug)]
struct Keyed<S>(Arc<HostRoutes<S>>);

impl<S> Clone for Keyed<S> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<S> std::borrow::Borrow<str> for Keyed<S> {
    fn borrow(&self) -> &str {
        self.0.key()
    }
}

impl<S> std::hash::Hash for Keyed<S> {
    /// As the key itself hashes, as `Borrow` requires.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.key().hash(state)
    }
}

impl<S> PartialEq for Keyed<S> {
    fn eq(&self, other: &Self) -> bool {
        self.0.key() == other.0.key()
    }
}

impl<S> Eq for Keyed<S> {}

/// A host's routes. Without a router (at most [`FEW_PATHS`]), `routes` is in precedence order: longest path
/// first (a Prefix path counted without its trailing slash), Exact before Prefix on a tie.
#[derive(Debug)]
struct HostRoutes<S> {
    /// The key when it cannot be read from the first route (a host without routes); see [`HostRoutes::key`].
    own_key: Option<Box<str>>,
    router: Option<Box<matchit::Router<Entry>>>,
    routes: Box<[Route<S>]>,
}

impl<S> Route<S> {
    /// A route of `host` from its spec, with its state made by `make`.
    fn new(host: &HostPattern, spec: &RouteSpec<'_>, path: Arc<str>, make: &mut impl MakeState<S>) -> Option<Self> {
        let regex = match spec.kind {
            // Compiled at translation already; one that fails here is left out, not served wrongly.
            PathKind::Regex => match crate::model::route::compile_path(spec.path) {
                Ok(re) => Some(Box::new(re)),
                Err(e) => {
                    tracing::warn!(host = %host, path = %spec.path, error = %e, "regex path left out");
                    return None;
                }
            },
            _ => None,
        };
        Some(Route {
            host: host.clone(),
            path,
            kind: spec.kind,
            matches: spec.matches.clone(),
            filters: spec.filters.clone(),
            send: spec.send.clone(),
            backends: spec.backends.iter().map(|(w, _)| w.clone()).collect(),
            split: spec.split.clone(),
            origin: spec.origin.clone(),
            regex,
            state: make.make(host, spec),
        })
    }
}

impl<S> HostRoutes<S> {
    fn build(
        host: &HostPattern,
        paths: &[crate::model::PathModel],
        make: &mut impl MakeState<S>,
        lowering: &mut Lowering,
        paths_shared: &mut crate::model::Strings,
    ) -> Self {
        let mut routes: Vec<Route<S>> = paths
            .iter()
            .filter_map(|p| {
                let spec = lowering.path(p);
                Route::new(host, &spec, paths_shared.get(&p.path), make)
            })
            .collect();
        let key = routes.is_empty().then(|| pattern_key(host).into());
        if routes.iter().any(|r| r.regex.is_some()) || paths.iter().any(|p| p.gateway.is_some()) {
            // A Gateway host's paths come in the spec's precedence order, as do a regex host's: the first whose
            // path and conditions match wins.
            // A regex host (translation made every path a regex, in precedence order): the first match wins.
            return Self {
                own_key: key,
                router: None,
                routes: routes.into_boxed_slice(),
            };
        }
        if routes.len() <= FEW_PATHS {
            routes.sort_by_key(|r| std::cmp::Reverse((r.match_len(), r.kind == PathKind::Exact)));
            return Self {
                own_key: key,
                router: None,
                routes: routes.into_boxed_slice(),
            };
        }
        let mut keys: std::collections::BTreeMap<String, Entry> = std::collections::BTreeMap::new();
        for (idx, p) in paths.iter().enumerate() {
            match p.kind {
                PathKind::Exact => keys.entry(p.path.clone()).or_default().exact = Some(idx),
                PathKind::Prefix => {
                    let base = p.path.trim_end_matches('/');
                    let literal = [format!("{base}/"), base.to_string()];
                    for k in literal.iter().filter(|k| !k.is_empty()) {
                        keys.entry(k.clone()).or_default().prefix = Some(idx);
                    }
                    keys.entry(format!("{base}/{{*rest}}")).or_default().prefix = Some(idx);
                }
                PathKind::Regex => unreachable!("regex hosts have no router"),
            }
        }
        let mut router = matchit::Router::new();
        for (k, e) in keys {
            // Paths are validated to hold no '{' or '}', so inserting cannot fail but for a matchit limitation;
            // such a key is skipped rather than taking the table down.
            if let Err(err) = router.insert(k.clone(), e) {
                tracing::warn!(host = %host, key = %k, error = %err, "route key rejected by the router");
            }
        }
        Self {
            own_key: key,
            router: Some(Box::new(router)),
            routes: routes.into_boxed_slice(),
        }
    }

    /// The exact host name, or a wildcard's suffix (empty for host-less rules): its key in the set's map. Read
    /// from the first route's host (every route has the host's pattern), so it costs no string of its own.
    fn key(&self) -> &str {
        match (&self.own_key, self.routes.first()) {
            (Some(key), _) => key,
            (None, Some(r)) => pattern_key(&r.host),
            (None, None) => "",
        }
    }

    fn lookup(&self, path: &str, req: Option<&Request<'_>>) -> Option<&Route<S>> {
        let Some(router) = &self.router else {
            return self
                .routes
                .iter()
                .find(|r| r.matches(path) && req.is_none_or(|q| r.conditions_hold(q)));
        };
        let m = router.at(path).ok()?;
        let idx = m.value.exact.or(m.value.prefix)?;
        Some(&self.routes[idx])
    }
}

/// A host pattern's key in a set's host map.
fn pattern_key(host: &HostPattern) -> &str {
    match host {
        HostPattern::Exact(name) => name,
        HostPattern::Wildcard(suffix) => suffix,
        HostPattern::Any => "",
    }
}

impl<S> Route<S> {
    /// The length that ranks this route: a Prefix path's without its trailing slash (the root's is 0).
    fn match_len(&self) -> usize {
        match self.kind {
            PathKind::Exact => self.path.len(),
            PathKind::Prefix => self.path.trim_end_matches('/').len(),
            PathKind::Regex => self.path.len(),
        }
    }

    /// The path sent upstream for a request path this route matched: `target` expanded with the route's
    /// captures; `None` when the route's path is not a regex. Not yet normalised (the caller checks it).
    pub fn rewrite(&self, target: &str, path: &str) -> Option<String> {
        let re = self.regex.as_deref()?;
        Some(crate::model::route::expand(target, re, path))
    }

    /// Whether a normalised request path matches this route's path by itself (precedence aside).
    fn matches(&self, path: &str) -> bool {
        match self.kind {
            PathKind::Exact => path == &*self.path,
            PathKind::Prefix => {
                let base = self.path.trim_end_matches('/');
                path.strip_prefix(base)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || base.is_empty())
            }
            PathKind::Regex => self.regex.as_ref().is_some_and(|re| re.is_match(path)),
        }
    }

    /// Whether the request meets the route's conditions beyond host and path (method, headers, query).
    fn conditions_hold(&self, req: &Request<'_>) -> bool {
        let Some(m) = &self.matches else { return true };
        if m.method.as_ref().is_some_and(|method| method != req.method) {
            return false;
        }
        let value_ok = |v: Option<&[u8]>, want: &ValueMatch| match (v, want) {
            (None, _) => false,
            (Some(_), ValueMatch::Present) => true,
            (Some(v), ValueMatch::Exact(e)) => v == e.as_bytes(),
            (Some(v), ValueMatch::Regex(re)) => re.is_match(v),
        };
        m.headers
            .iter()
            .all(|(name, want)| value_ok(req.headers.get(name).map(http::HeaderValue::as_bytes), want))
            && m.query.iter().all(|(name, want)| {
                let found = req.query.and_then(|q| {
                    q.split('&')
                        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
                        .find(|(k, _)| k == &&**name)
                        .map(|(_, v)| v.as_bytes())
                });
                value_ok(found, want)
            })
    }

    /// Whether plain-HTTP requests are redirected to HTTPS.
    pub fn redirects_to_https(&self) -> bool {
        self.filters.iter().any(|f| matches!(f, Filter::HttpsRedirect(_)))
    }

    /// Which of the route's backends serves this request (an index into `backends` and the state's live
    /// backends): the split's rules first, then the weights. `names(i, value)` says whether an affinity cookie
    /// value names an endpoint of backend `i`. A route with one backend costs a branch.
    pub fn backend_for(&self, headers: &HeaderMap, names: impl Fn(usize, &str) -> bool) -> usize {
        if self.backends.len() < 2 {
            return 0;
        }
        if let Some(split) = &self.split {
            match split.choose(headers, self.send.affinity_cookie.as_deref(), names) {
                SplitChoice::Main => return 0,
                SplitChoice::Alternative => return 1,
                SplitChoice::Weights => {}
            }
        }
        weights::pick(&self.backends)
    }
}

impl<S> SetTable<S> {
    pub fn empty(name: String) -> Self {
        Self {
            name,
            exact: HostSet::default(),
            wildcard: HostSet::default(),
            any: None,
            routes: 0,
            default_backend: None,
            gateway: false,
        }
    }

    /// Builds a set's table. With `before` (the set's previous model and the table built from it), the table
    /// starts as a copy of the previous one's host maps (a pointer per host) and only the hosts whose model
    /// changed ([`changed_hosts`](crate::model::changed_hosts)) are compiled, replaced or removed.
    fn build(
        m: &SetModel,
        before: Option<(&SetModel, &SetTable<S>)>,
        make: &mut impl MakeState<S>,
        lowering: &mut Lowering,
    ) -> Self {
        let mut t = Self::empty(m.name.clone());
        t.gateway = m.hosts.iter().any(|h| h.paths.iter().any(|p| p.gateway.is_some()));
        let mut paths = crate::model::Strings::default();
        let mut compile = |h: &HostModel| Arc::new(HostRoutes::build(&h.host, &h.paths, make, lowering, &mut paths));
        match before {
            None => {
                t.exact.reserve(
                    m.hosts
                        .iter()
                        .filter(|h| matches!(h.host, HostPattern::Exact(_)))
                        .count(),
                );
                for h in &m.hosts {
                    t.put(&h.host, compile(h));
                }
            }
            Some((old_model, old)) => {
                t.exact.clone_from(&old.exact);
                t.wildcard.clone_from(&old.wildcard);
                t.any.clone_from(&old.any);
                t.routes = old.routes;
                for (before, after) in changed_hosts(old_model, m) {
                    match (before, after) {
                        (_, Some(h)) => t.put(&h.host, compile(h)),
                        (Some(h), None) => t.take(&h.host),
                        (None, None) => {}
                    }
                }
            }
        }
        t.default_backend = m.default_backend.as_ref().and_then(|d| {
            let spec = lowering.default_route(d);
            Route::new(&HostPattern::Any, &spec, paths.get("/"), make).map(Box::new)
        });
        t
    }

    /// Sets a host's routes, replacing any it had.
    fn put(&mut self, host: &HostPattern, routes: Arc<HostRoutes<S>>) {
        self.routes += routes.routes.len();
        let old = match host {
            HostPattern::Exact(_) => self.exact.replace(Keyed(routes)).map(|k| k.0),
            HostPattern::Wildcard(_) => self.wildcard.replace(Keyed(routes)).map(|k| k.0),
            HostPattern::Any => self.any.replace(routes),
        };
        self.routes -= old.map_or(0, |o| o.routes.len());
    }

    /// Removes a host's routes.
    fn take(&mut self, host: &HostPattern) {
        let old = match host {
            HostPattern::Exact(name) => self.exact.take(name.as_str()).map(|k| k.0),
            HostPattern::Wildcard(suffix) => self.wildcard.take(suffix.as_str()).map(|k| k.0),
            HostPattern::Any => self.any.take(),
        };
        self.routes -= old.map_or(0, |o| o.routes.len());
    }

    /// The routes of a host (as its model names it), in precedence order when it has a few; empty when the
    /// set has no such host.
    pub fn routes_of(&self, host: &HostPattern) -> &[Route<S>] {
        let found = match host {
            HostPattern::Exact(name) => self.exact.get(name.as_str()).map(|k| &k.0),
            HostPattern::Wildcard(suffix) => self.wildcard.get(suffix.as_str()).map(|k| &k.0),
            HostPattern::Any => self.any.as_ref(),
        };
        found.map_or(&[], |h| &h.routes)
    }

    #[cfg(test)]
    fn host_routes(&self, host: &HostPattern) -> Option<&Arc<HostRoutes<S>>> {
        match host {
            HostPattern::Exact(name) => self.exact.get(name.as_str()).map(|k| &k.0),
            HostPattern::Wildcard(suffix) => self.wildcard.get(suffix.as_str()).map(|k| &k.0),
            HostPattern::Any => self.any.as_ref(),
        }
    }

    /// Finds the route for a normalised host (lowercase, no port, no trailing dot; empty when the request had
    /// none) and a normalised path. A host that matched an exact or wildcard rule set does not fall through to
    /// host-less rules.
    pub fn lookup(&self, host: &str, path: &str) -> Lookup<'_, S> {
        self.lookup_request(host, path, None)
    }

    /// [`SetTable::lookup`] that also checks routes' conditions on the request (`None`: ignored): a route whose
    /// conditions fail passes the request to the next candidate.
    pub fn lookup_request(&self, host: &str, path: &str, req: Option<&Request<'_>>) -> Lookup<'_, S> {
        if self.gateway {
            return self.lookup_gateway(host, path, req);
        }
        let routes = self
            .exact
            .get(host)
            .or_else(|| {
                let (_, suffix) = host.split_once('.')?;
                self.wildcard.get(suffix)
            })
            .map(|k| &k.0)
            .or(self.any.as_ref());
        match routes.and_then(|r| r.lookup(path, req)) {
            Some(route) => Lookup::Route(route),
            None => match &self.default_backend {
                Some(b) => Lookup::Default(b),
                None => Lookup::NotFound,
            },
        }
    }

    /// Gateway API host matching (see [`SetTable::gateway`]).
    fn lookup_gateway(&self, host: &str, path: &str, req: Option<&Request<'_>>) -> Lookup<'_, S> {
        let exact = self.exact.get(host).map(|k| &k.0);
        let wildcards = std::iter::successors(host.split_once('.').map(|(_, s)| s), |s| {
            s.split_once('.').map(|(_, rest)| rest)
        })
        .filter_map(|suffix| self.wildcard.get(suffix).map(|k| &k.0));
        exact
            .into_iter()
            .chain(wildcards)
            .chain(self.any.as_ref())
            .find_map(|r| r.lookup(path, req))
            .map_or(Lookup::NotFound, Lookup::Route)
    }

    /// Whether a request for `host` (normalised) could be answered by a route of this set rather than the 404 of
    /// a set with nothing for it: `host` is one of its hosts (exact, or under a wildcard as lookups match them),
    /// or the set has host-less rules or a default backend. The TLS listener asks this of a server name that is
    /// not passed through, on sets with layer-4 routes only.
    pub fn serves_host(&self, host: &str) -> bool {
        if self.any.is_some() || self.default_backend.is_some() || self.exact.contains(host) {
            return true;
        }
        let mut suffixes = std::iter::successors(host.split_once('.').map(|(_, s)| s), |s| {
            s.split_once('.').map(|(_, rest)| rest)
        });
        if self.gateway {
            suffixes.any(|s| self.wildcard.contains(s))
        } else {
            suffixes.next().is_some_and(|s| self.wildcard.contains(s))
        }
    }

    /// Every route in the table, the default route last.
    pub fn routes(&self) -> impl Iterator<Item = &Route<S>> {
        self.exact
            .iter()
            .chain(self.wildcard.iter())
            .map(|k| &k.0)
            .chain(self.any.iter())
            .flat_map(|h| h.routes.iter())
            .chain(self.default_backend.as_deref())
    }

    /// The default route, when the set has a default backend.
    pub fn default_route(&self) -> Option<&Route<S>> {
        self.default_backend.as_deref()
    }

    /// Number of hosts (exact, wildcard, and the host-less rule set counted as one).
    pub fn host_count(&self) -> usize {
        self.exact.len() + self.wildcard.len() + usize::from(self.any.is_some())
    }

    /// Number of routes.
    pub fn route_count(&self) -> usize {
        self.routes
    }
}

#[cfg(test)]
mod tests;
