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

mod policy;

use std::collections::HashMap;
use std::sync::Arc;

pub use policy::RoutePolicy;

use crate::certs::SetTls;
use crate::model::{FastMap, HostPattern, PathKind, SetModel, Translation};
use crate::upstream::{ActiveCheck, Backend, Balance, HealthPolicy};

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
        Self::build_with(t, tls, generation, previous.map(|p| (p, None)))
    }

    /// [`Snapshot::build`] after a previous snapshot and the translation it was built from: a host whose model
    /// did not change keeps its compiled routes (shared, not rebuilt), so a change to one Ingress costs little
    /// more than a comparison per host.
    pub fn rebuild(
        t: &Translation,
        tls: Option<Vec<SetTls>>,
        generation: u64,
        previous: &Snapshot,
        previous_translation: &Translation,
    ) -> Self {
        Self::build_with(t, tls, generation, Some((previous, Some(previous_translation))))
    }

    fn build_with(
        t: &Translation,
        tls: Option<Vec<SetTls>>,
        generation: u64,
        previous: Option<(&Snapshot, Option<&Translation>)>,
    ) -> Self {
        type Key = (String, Balance, Option<ActiveCheck>);
        // Built on the first backend that is not in a reused host.
        let mut reuse: Option<FastMap<Key, &Arc<Backend>>> = None;
        let health = HealthPolicy::default();
        let mut interned: FastMap<Key, Arc<Backend>> = FastMap::default();
        let mut backend = |m: &crate::model::BackendModel,
                           p: &crate::model::annotations::IngressPolicy|
         -> Arc<Backend> {
            let key: Key = (m.id(), p.balance, p.active_check.clone());
            if let Some(b) = interned.get(&key) {
                return b.clone();
            }
            let reuse = reuse.get_or_insert_with(|| {
                let mut map = FastMap::default();
                for set in previous.iter().flat_map(|(prev, _)| &prev.sets) {
                    for b in set.backends() {
                        map.insert((b.id.clone(), b.balance, b.check.clone()), b);
                    }
                }
                map
            });
            let b = match reuse.get(&key) {
                Some(old) if old.same_as(&m.endpoints, p.balance, health, p.active_check.as_ref()) => Arc::clone(old),
                _ => Arc::new(Backend::with_check(
                    key.0.clone(),
                    m.endpoints.clone(),
                    p.balance,
                    health,
                    p.active_check.clone(),
                )),
            };
            interned.insert(key, b.clone());
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
        Self { generation, sets }
    }
}

/// One listener set's routes. Invariant: built once, never mutated.
#[derive(Debug)]
pub struct SetTable {
    pub name: String,
    exact: HashMap<Box<str>, Arc<HostRoutes>>,
    /// Keyed by the suffix after the first label: `*.example.com` is stored as `example.com`.
    wildcard: HashMap<Box<str>, Arc<HostRoutes>>,
    any: Option<Arc<HostRoutes>>,
    default_backend: Option<DefaultRoute>,
    /// The set's certificates and TLS configuration.
    pub tls: Option<SetTls>,
}

/// A route a request matched.
#[derive(Debug)]
pub struct Route {
    pub host: HostPattern,
    pub path: Box<str>,
    pub kind: PathKind,
    pub backend: Arc<Backend>,
    /// `namespace/name` of the Ingress that defined it.
    pub ingress: Arc<str>,
    /// Plain-HTTP requests are redirected to HTTPS with 308.
    pub https_redirect: bool,
    /// HSTS, header rewrites and allowlist of the Ingress.
    pub policy: Arc<RoutePolicy>,
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

/// Compiles each Ingress's policy once per build (Ingresses share one `Arc<IngressPolicy>` across their paths).
#[derive(Default)]
struct Policies {
    compiled: HashMap<*const crate::model::annotations::IngressPolicy, Arc<RoutePolicy>>,
    passthrough: Option<Arc<RoutePolicy>>,
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
}

#[derive(Debug, Default)]
struct Entry {
    exact: Option<usize>,
    prefix: Option<usize>,
}

/// Hosts with at most this many paths are matched by trying them in order, without a router.
const FEW_PATHS: usize = 4;

/// A host's routes. Without a router (at most [`FEW_PATHS`]), `routes` is in precedence order: longest path
/// first (a Prefix path counted without its trailing slash), Exact before Prefix on a tie.
#[derive(Debug)]
struct HostRoutes {
    router: Option<Box<matchit::Router<Entry>>>,
    routes: Vec<Route>,
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
            .map(|p| Route {
                host: host.clone(),
                path: p.path.as_str().into(),
                kind: p.kind,
                backend: backend(&p.backend, &p.policy),
                ingress: format!("{}/{}", p.ingress.namespace, p.ingress.name).into(),
                https_redirect: p.https_redirect,
                policy: policies.get(&p.policy),
            })
            .collect();
        if routes.len() <= FEW_PATHS {
            routes.sort_by_key(|r| std::cmp::Reverse((r.match_len(), r.kind == PathKind::Exact)));
            return Self { router: None, routes };
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
            router: Some(Box::new(router)),
            routes,
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

impl Route {
    /// The length that ranks this route: a Prefix path's without its trailing slash (the root's is 0).
    fn match_len(&self) -> usize {
        match self.kind {
            PathKind::Exact => self.path.len(),
            PathKind::Prefix => self.path.trim_end_matches('/').len(),
        }
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
        }
    }
}

impl SetTable {
    pub fn empty(name: String) -> Self {
        Self {
            name,
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            any: None,
            default_backend: None,
            tls: None,
        }
    }

    /// Builds a set's table. With `before` (the set's previous model and table), hosts whose model is unchanged
    /// share their routes with the previous table.
    fn build(
        m: &SetModel,
        before: Option<(&SetModel, &SetTable)>,
        backend: &mut impl FnMut(&crate::model::BackendModel, &crate::model::annotations::IngressPolicy) -> Arc<Backend>,
        policies: &mut Policies,
    ) -> Self {
        let mut t = Self::empty(m.name.clone());
        t.exact.reserve(
            m.hosts
                .iter()
                .filter(|h| matches!(h.host, HostPattern::Exact(_)))
                .count(),
        );
        // Both host lists are sorted: walk them side by side.
        let mut old_hosts = before.map(|(old, _)| old.hosts.iter().peekable());
        for h in &m.hosts {
            let same = old_hosts.as_mut().and_then(|old| {
                while old.next_if(|o| o.host < h.host).is_some() {}
                old.next_if(|o| o.host == h.host).filter(|o| *o == h)
            });
            let reused = same
                .and(before)
                .and_then(|(_, table)| table.host_routes(&h.host))
                .cloned();
            let routes = reused.unwrap_or_else(|| Arc::new(HostRoutes::build(&h.host, &h.paths, backend, policies)));
            match &h.host {
                HostPattern::Exact(name) => {
                    t.exact.insert(name.as_str().into(), routes);
                }
                HostPattern::Wildcard(suffix) => {
                    t.wildcard.insert(suffix.as_str().into(), routes);
                }
                HostPattern::Any => t.any = Some(routes),
            }
        }
        t.default_backend = m.default_backend.as_ref().map(|d| DefaultRoute {
            backend: backend(&d.backend, &d.policy),
            policy: policies.get(&d.policy),
        });
        t
    }

    fn host_routes(&self, host: &HostPattern) -> Option<&Arc<HostRoutes>> {
        match host {
            HostPattern::Exact(name) => self.exact.get(name.as_str()),
            HostPattern::Wildcard(suffix) => self.wildcard.get(suffix.as_str()),
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
            .values()
            .chain(self.wildcard.values())
            .chain(self.any.iter())
            .flat_map(|h| h.routes.iter().map(|r| &r.backend))
            .chain(self.default_backend.iter().map(|d| &d.backend))
    }

    /// Number of hosts (exact, wildcard, and the host-less rule set counted as one).
    pub fn host_count(&self) -> usize {
        self.exact.len() + self.wildcard.len() + usize::from(self.any.is_some())
    }

    /// Number of routes.
    pub fn route_count(&self) -> usize {
        self.exact
            .values()
            .chain(self.wildcard.values())
            .chain(self.any.iter())
            .map(|h| h.routes.len())
            .sum()
    }
}

#[cfg(test)]
mod tests;
