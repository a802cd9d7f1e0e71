//! The immutable routing table the data plane reads: one [`SetTable`] per listener set, built from a
//! [`Translation`] and published whole as a [`Snapshot`] behind one `ArcSwap`.
//!
//! Host lookup is one hash probe for the exact name and one for the wildcard suffix, so its cost does not depend
//! on the number of hosts. Path lookup is one matchit walk per host. Each path key maps to an [`Entry`] holding
//! the Exact and the Prefix route that end there; matchit's preference for static over catch-all segments makes
//! the deepest (longest) prefix win, and a literal key can only match a path equal to it, so the Exact route
//! wins ties as the semantics require (checked against a brute-force matcher in the tests).

mod policy;

use std::collections::HashMap;
use std::sync::Arc;

pub use policy::RoutePolicy;

use crate::certs::SetTls;
use crate::model::{HostPattern, PathKind, SetModel, Translation};
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
        type Key = (String, Balance, Option<ActiveCheck>);
        let mut reuse: HashMap<Key, &Arc<Backend>> = HashMap::new();
        if let Some(prev) = previous {
            for set in &prev.sets {
                for b in set.backends() {
                    reuse.insert((b.id.clone(), b.balance, b.check.clone()), b);
                }
            }
        }
        let health = HealthPolicy::default();
        let mut interned: HashMap<Key, Arc<Backend>> = HashMap::new();
        let mut backend = |m: &crate::model::BackendModel,
                           p: &crate::model::annotations::IngressPolicy|
         -> Arc<Backend> {
            let key: Key = (m.id(), p.balance, p.active_check.clone());
            if let Some(b) = interned.get(&key) {
                return b.clone();
            }
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
            .map(|s| {
                let mut table = SetTable::build(s, &mut backend, &mut policies);
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
    exact: HashMap<Box<str>, HostRoutes>,
    /// Keyed by the suffix after the first label: `*.example.com` is stored as `example.com`.
    wildcard: HashMap<Box<str>, HostRoutes>,
    any: Option<HostRoutes>,
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

#[derive(Debug)]
struct HostRoutes {
    router: matchit::Router<Entry>,
    routes: Vec<Route>,
}

impl HostRoutes {
    fn build(
        host: &HostPattern,
        paths: &[crate::model::PathModel],
        backend: &mut impl FnMut(&crate::model::BackendModel, &crate::model::annotations::IngressPolicy) -> Arc<Backend>,
        policies: &mut Policies,
    ) -> Self {
        let mut keys: std::collections::BTreeMap<String, Entry> = std::collections::BTreeMap::new();
        let mut routes = Vec::with_capacity(paths.len());
        for p in paths {
            let idx = routes.len();
            routes.push(Route {
                host: host.clone(),
                path: p.path.as_str().into(),
                kind: p.kind,
                backend: backend(&p.backend, &p.policy),
                ingress: format!("{}/{}", p.ingress.namespace, p.ingress.name).into(),
                https_redirect: p.https_redirect,
                policy: policies.get(&p.policy),
            });
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
        Self { router, routes }
    }

    fn lookup(&self, path: &str) -> Option<&Route> {
        let m = self.router.at(path).ok()?;
        let idx = m.value.exact.or(m.value.prefix)?;
        Some(&self.routes[idx])
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

    fn build(
        m: &SetModel,
        backend: &mut impl FnMut(&crate::model::BackendModel, &crate::model::annotations::IngressPolicy) -> Arc<Backend>,
        policies: &mut Policies,
    ) -> Self {
        let mut t = Self::empty(m.name.clone());
        for h in &m.hosts {
            let routes = HostRoutes::build(&h.host, &h.paths, backend, policies);
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
