//! The immutable routing table the data plane reads: one [`SetTable`] per listener set, built from a
//! [`Translation`] and published whole as a [`Snapshot`] behind one `ArcSwap`.
//!
//! Host lookup is one hash probe for the exact name and one for the wildcard suffix, so its cost does not depend
//! on the number of hosts. A host with a few paths (most hosts: one `/`) keeps them in precedence order and
//! takes the first that matches, without a router. A host with more paths has a matchit router: each path key
//! maps to an [`Entry`] holding the Exact and the Prefix route that end there; matchit's preference for static
//! over catch-all segments makes the deepest (longest) prefix win, and a literal key can only match a path equal
//! to it, so the Exact route wins ties as the semantics require. Both are checked against a brute-force matcher
//! in the tests.

mod canary;
mod policy;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};

pub use canary::{CanaryRoute, CanaryRules};
pub use policy::{cookie, RoutePolicy};

use crate::certs::SetTls;
use crate::model::annotations::{ActiveCheck, Balance};
use crate::model::{changed_hosts, FastMap, HostModel, HostPattern, PathKind, SetModel, Translation};
use crate::upstream::{Backend, HealthPolicy};

/// Everything the proxy needs, published at once: routes and the certificates they are served with.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub sets: Vec<SetTable>,
}

impl Snapshot {
    pub fn empty(set_names: &[String]) -> Self {
        Self {
            generation: 0,
            sets: set_names.iter().map(|n| SetTable::empty(n.clone())).collect(),
        }
    }

    /// Builds a snapshot. `tls` has one entry per listener set (or none when no set serves TLS). Backends whose
    /// identity and endpoints did not change are taken from `previous`, so their balancer state survives the
    /// swap.
    pub fn build(t: &Translation, tls: Option<Vec<SetTls>>, generation: u64, previous: Option<&Snapshot>) -> Self {
        Builder::default().build(t, tls, generation, previous.map(|p| (p, None)))
    }

    /// [`Snapshot::build`] after a previous snapshot and the translation it was built from: a host whose model
    /// did not change keeps its compiled routes (shared, not rebuilt), so a change to one Ingress costs little
    /// more than a comparison per host. (A [`Builder`] kept from one build to the next also skips indexing the
    /// previous snapshot's backends.)
    pub fn rebuild(
        t: &Translation,
        tls: Option<Vec<SetTls>>,
        generation: u64,
        previous: &Snapshot,
        previous_translation: &Translation,
    ) -> Self {
        Builder::default().build(t, tls, generation, Some((previous, Some(previous_translation))))
    }
}

// === impl Builder ===

/// What identifies a backend across builds: its id, balancing and active check.
type BackendKey = (String, Balance, Option<ActiveCheck>);

/// Builds snapshot after snapshot, keeping between builds what makes a rebuild cost O(changed hosts): an index
/// of the backends it handed out, so a changed host finds the backend an unchanged host already uses without a
/// walk over every route of the previous snapshot. The publisher keeps one; [`Snapshot::build`] and
/// [`Snapshot::rebuild`] use a fresh one.
///
/// Invariant: the index holds (weakly) every backend of the snapshot of generation `indexed`, under a hash of
/// its [`BackendKey`]; an entry whose backend is gone is skipped and pruned now and then, and a hash collision
/// only costs a missed reuse (the backend's own key is compared). A build after a snapshot of another
/// generation indexes that snapshot's backends first, as a fresh builder does.
#[derive(Default)]
pub struct Builder {
    backends: FastMap<u64, Weak<Backend>>,
    hasher: std::hash::RandomState,
    /// The index's size after its last pruning: it is pruned again when it has doubled.
    pruned_len: usize,
    indexed: Option<u64>,
    /// The backends of the hosts the last build compiled and of the default backends (with repeats).
    built: Vec<Arc<Backend>>,
}

impl Builder {
    /// Builds a snapshot (see [`Snapshot::build`]). With `previous` and the translation it was built from,
    /// unchanged hosts share their compiled routes with it (see [`Snapshot::rebuild`]), and the per-set host
    /// maps are copied from it and edited where hosts changed.
    pub fn build(
        &mut self,
        t: &Translation,
        tls: Option<Vec<SetTls>>,
        generation: u64,
        previous: Option<(&Snapshot, Option<&Translation>)>,
    ) -> Snapshot {
        use std::hash::BuildHasher;
        self.built.clear();
        let hasher = self.hasher.clone();
        let hash = move |id: &str, balance: Balance, check: Option<&ActiveCheck>| hasher.hash_one((id, balance, check));
        match previous {
            None => self.backends.clear(),
            Some((prev, _)) if self.indexed != Some(prev.generation) => {
                self.backends.clear();
                for b in prev.sets.iter().flat_map(|s| s.backends()) {
                    let h = hash(&b.id, b.balance, b.check.as_ref());
                    self.backends.insert(h, Arc::downgrade(b));
                }
            }
            Some(_) => {}
        }
        let health = HealthPolicy::default();
        // One backend per key within a build, whatever the index holds.
        // Keyed also by service-upstream: the same Service port by its endpoints and by its ClusterIP are two.
        let mut interned: FastMap<(BackendKey, bool), Arc<Backend>> = FastMap::default();
        let (index, built) = (&mut self.backends, &mut self.built);
        let mut backend =
            |m: &crate::model::BackendModel, p: &crate::model::annotations::IngressPolicy| -> Arc<Backend> {
                let key: BackendKey = (m.id(), p.balance, p.active_check.clone());
                let via_cluster_ip = p.retry.service_upstream;
                if let Some(b) = interned.get(&(key.clone(), via_cluster_ip)) {
                    built.push(b.clone());
                    return b.clone();
                }
                let h = hash(&key.0, key.1, key.2.as_ref());
                let indexed = index
                    .get(&h)
                    .and_then(Weak::upgrade)
                    .filter(|b| b.id == key.0 && b.balance == key.1 && b.check == key.2);
                let b = match indexed {
                    Some(old) if old.same_as(&m.endpoints, p.balance, health, p.active_check.as_ref()) => old,
                    _ => {
                        let b = Arc::new(Backend::with_check(
                            key.0.clone(),
                            m.endpoints.clone(),
                            p.balance,
                            health,
                            p.active_check.clone(),
                        ));
                        index.insert(h, Arc::downgrade(&b));
                        b
                    }
                };
                interned.insert((key, via_cluster_ip), b.clone());
                built.push(b.clone());
                b
            };
        let mut tls = tls.map(Vec::into_iter);
        let mut policies = Policies::default();
        let sets = t
            .sets
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let before = previous.and_then(|(snap, t)| Some((t?.sets.get(i)?, snap.sets.get(i)?)));
                let mut table = SetTable::build(s, before, &mut backend, &mut policies);
                table.tls = tls.as_mut().and_then(Iterator::next);
                table
            })
            .collect();
        if self.backends.len() > 2 * self.pruned_len + 64 {
            self.backends.retain(|_, b| b.strong_count() > 0);
            self.pruned_len = self.backends.len();
        }
        self.indexed = Some(generation);
        Snapshot { generation, sets }
    }

    /// The backends the last build looked up (with repeats): those of the hosts it compiled and the default
    /// backends. Every backend of its snapshot that is not among them was in the previous snapshot.
    pub fn built_backends(&self) -> &[Arc<Backend>] {
        &self.built
    }
}

/// Hosts by name, hashed with foldhash seeded per process: the keys come from the configuration and requests only
/// look up (SipHash cost ~230 instructions per request).
type HostSet = HashSet<Keyed, foldhash::fast::RandomState>;

/// One listener set's routes. Invariant: built once, never mutated.
#[derive(Debug)]
pub struct SetTable {
    pub name: String,
    exact: HostSet,
    /// Keyed by the suffix after the first label: `*.example.com` is stored as `example.com`.
    wildcard: HostSet,
    any: Option<Arc<HostRoutes>>,
    /// Number of routes (kept up to date by a rebuild's edits).
    routes: usize,
    default_backend: Option<DefaultRoute>,
    /// The set's certificates and TLS configuration.
    pub tls: Option<SetTls>,
}

/// A route a request matched.
#[derive(Debug)]
pub struct Route {
    pub host: HostPattern,
    /// Shared with the other routes of the build that have the same path.
    pub path: Arc<str>,
    pub kind: PathKind,
    pub backend: Arc<Backend>,
    /// `namespace/name` of the Ingress that defined it (shared by its routes of one build).
    pub ingress: Arc<str>,
    /// Plain-HTTP requests are redirected to HTTPS with 308.
    pub https_redirect: bool,
    /// HSTS, header rewrites and allowlist of the Ingress.
    pub policy: Arc<RoutePolicy>,
    /// The compiled path of a [`PathKind::Regex`] route (boxed: most routes have none).
    regex: Option<Box<regex::Regex>>,
    /// The canary Ingress's backend, chosen per request by its rules (boxed: most routes have none).
    pub canary: Option<Box<CanaryRoute>>,
}

/// A listener set's default backend and the policy of the Ingress that set it.
#[derive(Debug)]
pub struct DefaultRoute {
    pub backend: Arc<Backend>,
    pub policy: Arc<RoutePolicy>,
}

/// The outcome of a lookup.
#[derive(Debug)]
pub enum Lookup<'a> {
    Route(&'a Route),
    /// No rule matched; the listener set's default backend serves.
    Default(&'a DefaultRoute),
    NotFound,
}

/// Compiles each Ingress's policy once per build (Ingresses share one `Arc<IngressPolicy>` across their paths),
/// and shares the routes' path and Ingress strings within a build (every host's `/` is one string).
#[derive(Default)]
struct Policies {
    compiled: HashMap<*const crate::model::annotations::IngressPolicy, Arc<RoutePolicy>>,
    passthrough: Option<Arc<RoutePolicy>>,
    /// Canary rules by the canary Ingress's policy.
    canaries: HashMap<*const crate::model::annotations::IngressPolicy, Arc<CanaryRules>>,
    strings: crate::model::Strings,
    /// Scratch for an Ingress's `namespace/name`.
    scratch: String,
}

impl Policies {
    fn get(&mut self, p: &Arc<crate::model::annotations::IngressPolicy>) -> Arc<RoutePolicy> {
        if **p == crate::model::annotations::IngressPolicy::default() {
            return self
                .passthrough
                .get_or_insert_with(|| Arc::new(RoutePolicy::passthrough()))
                .clone();
        }
        self.compiled
            .entry(Arc::as_ptr(p))
            .or_insert_with(|| Arc::new(RoutePolicy::compile(p)))
            .clone()
    }

    fn canary(&mut self, p: &Arc<crate::model::annotations::IngressPolicy>) -> Arc<CanaryRules> {
        self.canaries
            .entry(Arc::as_ptr(p))
            .or_insert_with(|| Arc::new(CanaryRules::compile(p)))
            .clone()
    }

    /// The shared `namespace/name` of an Ingress.
    fn ingress(&mut self, r: &crate::model::ObjectRef) -> Arc<str> {
        use std::fmt::Write;
        self.scratch.clear();
        let _ = write!(self.scratch, "{}/{}", r.namespace, r.name);
        self.strings.get(&self.scratch)
    }
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
#[derive(Debug, Clone)]
struct Keyed(Arc<HostRoutes>);

impl std::borrow::Borrow<str> for Keyed {
    fn borrow(&self) -> &str {
        self.0.key()
    }
}

impl std::hash::Hash for Keyed {
    /// As the key itself hashes, as `Borrow` requires.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.key().hash(state)
    }
}

impl PartialEq for Keyed {
    fn eq(&self, other: &Self) -> bool {
        self.0.key() == other.0.key()
    }
}

impl Eq for Keyed {}

/// A host's routes. Without a router (at most [`FEW_PATHS`]), `routes` is in precedence order: longest path
/// first (a Prefix path counted without its trailing slash), Exact before Prefix on a tie.
#[derive(Debug)]
struct HostRoutes {
    /// The key when it cannot be read from the first route (a host without routes); see [`HostRoutes::key`].
    own_key: Option<Box<str>>,
    router: Option<Box<matchit::Router<Entry>>>,
    routes: Box<[Route]>,
}

impl HostRoutes {
    fn build(
        host: &HostPattern,
        paths: &[crate::model::PathModel],
        backend: &mut impl FnMut(&crate::model::BackendModel, &crate::model::annotations::IngressPolicy) -> Arc<Backend>,
        policies: &mut Policies,
    ) -> Self {
        let mut routes: Vec<Route> = paths
            .iter()
            .filter_map(|p| {
                let regex = match p.kind {
                    // Compiled at translation already; one that fails here is left out, not served wrongly.
                    PathKind::Regex => match crate::model::annotations::rewrite::compile_path(&p.path) {
                        Ok(re) => Some(Box::new(re)),
                        Err(e) => {
                            tracing::warn!(host = %host, path = %p.path, error = %e, "regex path left out");
                            return None;
                        }
                    },
                    _ => None,
                };
                Some(Route {
                    host: host.clone(),
                    path: policies.strings.get(&p.path),
                    kind: p.kind,
                    backend: backend(&p.backend, &p.policy),
                    ingress: policies.ingress(&p.ingress),
                    https_redirect: p.https_redirect,
                    policy: policies.get(&p.policy),
                    regex,
                    canary: p.canary.as_ref().map(|c| {
                        Box::new(CanaryRoute {
                            backend: backend(&c.backend, &c.policy),
                            ingress: policies.ingress(&c.ingress),
                            rules: policies.canary(&c.policy),
                        })
                    }),
                })
            })
            .collect();
        let key = routes.is_empty().then(|| pattern_key(host).into());
        if routes.iter().any(|r| r.regex.is_some()) {
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

    fn lookup(&self, path: &str) -> Option<&Route> {
        let Some(router) = &self.router else {
            return self.routes.iter().find(|r| r.matches(path));
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

impl Route {
    /// The length that ranks this route: a Prefix path's without its trailing slash (the root's is 0).
    fn match_len(&self) -> usize {
        match self.kind {
            PathKind::Exact => self.path.len(),
            PathKind::Prefix => self.path.trim_end_matches('/').len(),
            PathKind::Regex => self.path.len(),
        }
    }

    /// The path sent upstream for a request path this route matched: `rewrite-target` expanded with the route's
    /// captures; `None` when the route does not rewrite. Not yet normalised (the caller checks it).
    pub fn rewrite(&self, path: &str) -> Option<String> {
        let target = self.policy.rewrite_target.as_deref()?;
        let re = self.regex.as_deref()?;
        Some(crate::model::annotations::rewrite::expand(target, re, path))
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
}

impl SetTable {
    pub fn empty(name: String) -> Self {
        Self {
            name,
            exact: HostSet::default(),
            wildcard: HostSet::default(),
            any: None,
            routes: 0,
            default_backend: None,
            tls: None,
        }
    }

    /// Builds a set's table. With `before` (the set's previous model and the table built from it), the table
    /// starts as a copy of the previous one's host maps (a pointer per host) and only the hosts whose model
    /// changed ([`changed_hosts`](crate::model::changed_hosts)) are compiled, replaced or removed.
    fn build(
        m: &SetModel,
        before: Option<(&SetModel, &SetTable)>,
        backend: &mut impl FnMut(&crate::model::BackendModel, &crate::model::annotations::IngressPolicy) -> Arc<Backend>,
        policies: &mut Policies,
    ) -> Self {
        let mut t = Self::empty(m.name.clone());
        let mut compile = |h: &HostModel| Arc::new(HostRoutes::build(&h.host, &h.paths, backend, policies));
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
        t.default_backend = m.default_backend.as_ref().map(|d| DefaultRoute {
            backend: backend(&d.backend, &d.policy),
            policy: policies.get(&d.policy),
        });
        t
    }

    /// Sets a host's routes, replacing any it had.
    fn put(&mut self, host: &HostPattern, routes: Arc<HostRoutes>) {
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
    pub fn routes_of(&self, host: &HostPattern) -> &[Route] {
        let found = match host {
            HostPattern::Exact(name) => self.exact.get(name.as_str()).map(|k| &k.0),
            HostPattern::Wildcard(suffix) => self.wildcard.get(suffix.as_str()).map(|k| &k.0),
            HostPattern::Any => self.any.as_ref(),
        };
        found.map_or(&[], |h| &h.routes)
    }

    #[cfg(test)]
    fn host_routes(&self, host: &HostPattern) -> Option<&Arc<HostRoutes>> {
        match host {
            HostPattern::Exact(name) => self.exact.get(name.as_str()).map(|k| &k.0),
            HostPattern::Wildcard(suffix) => self.wildcard.get(suffix.as_str()).map(|k| &k.0),
            HostPattern::Any => self.any.as_ref(),
        }
    }

    /// Finds the route for a normalised host (lowercase, no port, no trailing dot; empty when the request had
    /// none) and a normalised path. A host that matched an exact or wildcard rule set does not fall through to
    /// host-less rules.
    pub fn lookup(&self, host: &str, path: &str) -> Lookup<'_> {
        let routes = self
            .exact
            .get(host)
            .or_else(|| {
                let (_, suffix) = host.split_once('.')?;
                self.wildcard.get(suffix)
            })
            .map(|k| &k.0)
            .or(self.any.as_ref());
        match routes.and_then(|r| r.lookup(path)) {
            Some(route) => Lookup::Route(route),
            None => match &self.default_backend {
                Some(b) => Lookup::Default(b),
                None => Lookup::NotFound,
            },
        }
    }

    /// Every backend in the table (with repeats).
    pub fn backends(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.exact
            .iter()
            .chain(self.wildcard.iter())
            .map(|k| &k.0)
            .chain(self.any.iter())
            .flat_map(|h| h.routes.iter())
            .flat_map(|r| std::iter::once(&r.backend).chain(r.canary.iter().map(|c| &c.backend)))
            .chain(self.default_backend.iter().map(|d| &d.backend))
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
