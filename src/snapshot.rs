//! The one published snapshot: the routing table of every listener set with each route's live state, the
//! certificates the sets serve, and the upstream policies, behind one `ArcSwap` (`publish::Shared::snapshot`):
//! one swap per publish, one load per request.
//!
//! Routing stays pure: it knows routes and their weighted backends by id. This module sits above routing,
//! upstream and metrics and gives each route its [`Live`] state: the `upstream::Backend` of each of its backends
//! (endpoints, balancer and health state), the request counter of each (origin, backend) pair, and a [`Kept`]
//! slot for state that must outlive republishes (rate-limit buckets). All three are reused by key across
//! builds by [`Builder`]: a backend whose endpoints and balancing did not change keeps its state, a pair keeps
//! its counter, a route keeps its slot.

use std::hash::BuildHasher;
use std::sync::{Arc, Weak};

use crate::certs::SetTls;
use crate::config::UpstreamConfig;
use crate::metrics::{RouteCounter, RouteCounters};
use crate::model::route::{BackendSpec, OneOrMore, RouteSpec};
use crate::model::{FastMap, HostPattern, Translation};
use crate::routing::Lookup;
use crate::upstream::policy::{Policies, PolicyTable};
use crate::upstream::{Backend, HealthPolicy};

/// A listener set's routes with their live state.
pub type SetTable = crate::routing::SetTable<Live>;
/// A route with its live state.
pub type Route = crate::routing::Route<Live>;

/// Everything the proxy needs, published at once: routes with their live state, the certificates they are
/// served with, and the upstream policies.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub sets: Vec<SetTable>,
    /// Per listener set, its certificates and TLS configuration (`None` when it serves no TLS).
    pub tls: Vec<Option<SetTls>>,
    /// TLS to backends and request-body timeouts, by Ingress.
    pub upstream: Arc<PolicyTable>,
    /// Layer-4 routes (TLS passthrough) per listener set; set by the publisher after the build.
    pub l4: Arc<crate::l4::L4Tables>,
}

/// A route's state on the data plane.
#[derive(Debug)]
pub struct Live {
    /// Aligned with the route's `backends`.
    pub backends: OneOrMore<LiveBackend>,
    /// State kept across republishes, for routes whose filters keep some (auth's caches, a rate limit's buckets;
    /// `None` for every other route, so the slot costs nothing where no filter needs it). Reused while a route with
    /// the same origin, host, path and kind exists.
    pub kept: Option<Arc<Kept>>,
}

/// One backend of a route: its endpoints with balancer and health state, and the route's counter for it.
#[derive(Debug)]
pub struct LiveBackend {
    pub backend: Arc<Backend>,
    pub counter: RouteCounter,
}

/// State of a route that must survive republishes (reused by the route's key, see [`Builder`]): auth's caches
/// and the rate limit's per-client buckets and requests in flight (`Filter::RateLimit`; each table bounded, see
/// `crate::ratelimit`).
#[derive(Debug, Default)]
pub struct Kept {
    /// Basic auth's verified credentials.
    pub basic_auth: crate::auth_cache::AuthCache<()>,
    /// Forward auth's answers (`auth-cache-key`).
    pub forward_auth: crate::auth_cache::AuthCache<crate::auth_cache::Answer>,
    /// `limit-rps`.
    pub per_second: crate::ratelimit::RateTable,
    /// `limit-rpm`.
    pub per_minute: crate::ratelimit::RateTable,
    /// `limit-connections`.
    pub connections: crate::ratelimit::ConnTable,
}

impl crate::routing::SetTable<Live> {
    /// Every backend of the set's routes (with repeats).
    pub fn backends(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.routes().flat_map(|r| r.state.backends.iter().map(|b| &b.backend))
    }
}

impl Live {
    /// Whether the affinity cookie value `cookie` names an endpoint of backend `index`.
    pub fn names_endpoint(&self, index: usize, cookie: &str) -> bool {
        self.backends
            .get(index)
            .is_some_and(|b| b.backend.names_endpoint(cookie))
    }
}

impl Snapshot {
    pub fn empty(set_names: &[String]) -> Self {
        Self {
            generation: 0,
            sets: set_names.iter().map(|n| SetTable::empty(n.clone())).collect(),
            tls: set_names.iter().map(|_| None).collect(),
            upstream: Arc::default(),
            l4: Arc::default(),
        }
    }

    /// Builds a snapshot with a fresh [`Builder`] (its own counters, default upstream settings). `tls` has one
    /// entry per listener set (or none when no set serves TLS). Backends whose identity and endpoints did not
    /// change are taken from `previous`, so their balancer state survives the swap.
    pub fn build(t: &Translation, tls: Option<Vec<SetTls>>, generation: u64, previous: Option<&Snapshot>) -> Self {
        let metrics = crate::metrics::Metrics::new(&[]);
        let mut counters = metrics.route_counters();
        Builder::default().build(t, tls, generation, previous.map(|p| (p, None)), &mut counters)
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
        let metrics = crate::metrics::Metrics::new(&[]);
        let mut counters = metrics.route_counters();
        Builder::default().build(
            t,
            tls,
            generation,
            Some((previous, Some(previous_translation))),
            &mut counters,
        )
    }

    /// The route for a normalised host and path in listener set `set` (see [`crate::routing::SetTable::lookup`]).
    pub fn lookup(&self, set: usize, host: &str, path: &str) -> Lookup<'_, Live> {
        match self.sets.get(set) {
            Some(t) => t.lookup(host, path),
            None => Lookup::NotFound,
        }
    }

    /// [`Snapshot::lookup`] checking routes' request conditions (Gateway API matches).
    pub fn lookup_request(
        &self,
        set: usize,
        host: &str,
        path: &str,
        req: &crate::routing::Request<'_>,
    ) -> Lookup<'_, Live> {
        match self.sets.get(set) {
            Some(t) => t.lookup_request(host, path, Some(req)),
            None => Lookup::NotFound,
        }
    }

    /// Every backend of every route (with repeats).
    pub fn backends(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.sets.iter().flat_map(|s| s.backends())
    }
}

// === impl Builder ===

/// What identifies a backend across builds: its id, balancing and active check.
type BackendKey = (
    String,
    crate::model::route::Balance,
    Option<crate::model::route::ActiveCheck>,
);

/// Builds snapshot after snapshot, keeping between builds what makes a rebuild cost O(changed hosts): weak
/// indexes of the backends and kept slots it handed out, so a changed host finds the backend an unchanged host
/// already uses without a walk over every route of the previous snapshot, and the upstream policies of the last
/// build. The publisher keeps one; [`Snapshot::build`] and [`Snapshot::rebuild`] use a fresh one.
///
/// Invariant: the backend index holds (weakly) every backend of the snapshot of generation `indexed`, under a
/// hash of its [`BackendKey`]; an entry whose backend is gone is skipped and pruned now and then, and a hash
/// collision only costs a missed reuse (the backend's own key is compared). A build after a snapshot of another
/// generation indexes that snapshot's backends first, as a fresh builder does. Kept slots are indexed by a 64-bit
/// hash of the route's origin, host, path and kind (the slot holds no key to compare: two routes whose keys
/// collide would share one, a chance of 2^-64 per pair).
pub struct Builder {
    backends: FastMap<u64, Weak<Backend>>,
    kept: FastMap<u64, Weak<Kept>>,
    hasher: std::hash::RandomState,
    /// The indexes' size after their last pruning: pruned again when they have doubled.
    pruned_len: usize,
    indexed: Option<u64>,
    /// The backends of the hosts the last build compiled and of the default routes (with repeats).
    built: Vec<Arc<Backend>>,
    policies: Policies,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new(&UpstreamConfig::default())
    }
}

impl Builder {
    pub fn new(upstream: &UpstreamConfig) -> Self {
        Self {
            backends: FastMap::default(),
            kept: FastMap::default(),
            hasher: std::hash::RandomState::new(),
            pruned_len: 0,
            indexed: None,
            built: Vec::new(),
            policies: Policies::new(upstream),
        }
    }

    /// Builds a snapshot (see [`Snapshot::build`]). With `previous` and the translation it was built from,
    /// unchanged hosts share their compiled routes and their state with it (see [`Snapshot::rebuild`]), and the
    /// per-set host maps are copied from it and edited where hosts changed. Counters come from `counters`.
    pub fn build(
        &mut self,
        t: &Translation,
        tls: Option<Vec<SetTls>>,
        generation: u64,
        previous: Option<(&Snapshot, Option<&Translation>)>,
        counters: &mut RouteCounters,
    ) -> Snapshot {
        self.built.clear();
        let hasher = self.hasher.clone();
        let hash_backend = |id: &str, b: &Backend| hasher.hash_one((id, b.balance, b.check.as_ref()));
        match previous {
            None => {
                self.backends.clear();
                self.kept.clear();
            }
            Some((prev, _)) if self.indexed != Some(prev.generation) => {
                self.backends.clear();
                for b in prev.backends() {
                    self.backends.insert(hash_backend(&b.id, b), Arc::downgrade(b));
                }
            }
            Some(_) => {}
        }
        let upstream = self.policies.publish(t, previous.and_then(|(_, t)| t));
        let mut make = Maker {
            hasher: &self.hasher,
            index: &mut self.backends,
            kept: &mut self.kept,
            built: &mut self.built,
            counters,
            interned: FastMap::default(),
            health: HealthPolicy::default(),
        };
        let before = previous.and_then(|(snap, t)| Some((&snap.sets[..], t?)));
        let sets = crate::routing::build(t, before, &mut make);
        if self.backends.len() + self.kept.len() > 2 * self.pruned_len + 64 {
            self.backends.retain(|_, b| b.strong_count() > 0);
            self.kept.retain(|_, k| k.strong_count() > 0);
            self.pruned_len = self.backends.len() + self.kept.len();
        }
        self.indexed = Some(generation);
        let mut tls = tls.map(Vec::into_iter);
        Snapshot {
            generation,
            tls: sets.iter().map(|_| tls.as_mut().and_then(Iterator::next)).collect(),
            sets,
            upstream,
            l4: Arc::default(),
        }
    }

    /// The backends the last build looked up (with repeats): those of the hosts it compiled and the default
    /// routes. Every backend of its snapshot that is not among them was in the previous snapshot.
    pub fn built_backends(&self) -> &[Arc<Backend>] {
        &self.built
    }
}

/// Makes a route's [`Live`] state during one build.
struct Maker<'b> {
    hasher: &'b std::hash::RandomState,
    index: &'b mut FastMap<u64, Weak<Backend>>,
    kept: &'b mut FastMap<u64, Weak<Kept>>,
    built: &'b mut Vec<Arc<Backend>>,
    counters: &'b mut RouteCounters,
    /// One backend per key within a build, whatever the index holds. Keyed also by service-upstream: the same
    /// Service port by its endpoints and by its ClusterIP are two.
    interned: FastMap<(BackendKey, bool), Arc<Backend>>,
    health: HealthPolicy,
}

impl Maker<'_> {
    fn backend(&mut self, spec: &BackendSpec<'_>, id: &str) -> Arc<Backend> {
        let key: BackendKey = (id.to_string(), spec.balance, spec.check.cloned());
        if let Some(b) = self.interned.get(&(key.clone(), spec.via_cluster_ip)) {
            self.built.push(b.clone());
            return b.clone();
        }
        let h = self.hasher.hash_one((id, spec.balance, spec.check));
        let indexed = self
            .index
            .get(&h)
            .and_then(Weak::upgrade)
            .filter(|b| b.id == key.0 && b.balance == key.1 && b.check == key.2);
        let b = match indexed {
            Some(old) if old.same_as(&spec.model.endpoints, spec.balance, self.health, spec.check) => old,
            _ => {
                let b = Arc::new(Backend::with_check(
                    key.0.clone(),
                    spec.model.endpoints.clone(),
                    spec.balance,
                    self.health,
                    spec.check.cloned(),
                ));
                self.index.insert(h, Arc::downgrade(&b));
                b
            }
        };
        self.interned.insert((key, spec.via_cluster_ip), b.clone());
        self.built.push(b.clone());
        b
    }

    fn kept(&mut self, host: &HostPattern, route: &RouteSpec<'_>) -> Arc<Kept> {
        let h = self
            .hasher
            .hash_one((&*route.origin.name, route.origin.kind, host, route.path, route.kind));
        if let Some(k) = self.kept.get(&h).and_then(Weak::upgrade) {
            return k;
        }
        let k = Arc::new(Kept::default());
        self.kept.insert(h, Arc::downgrade(&k));
        k
    }
}

impl crate::routing::MakeState<Live> for Maker<'_> {
    fn make(&mut self, host: &HostPattern, route: &RouteSpec<'_>) -> Live {
        let backends = route
            .backends
            .iter()
            .map(|(w, spec)| LiveBackend {
                backend: self.backend(spec, &w.id),
                counter: self.counters.counter(&route.origin.name, &w.id),
            })
            .collect();
        let keeps_state = route.filters.iter().any(crate::model::route::Filter::keeps_state);
        Live {
            backends,
            kept: keeps_state.then(|| self.kept(host, route)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BackendModel, HostModel, ObjectRef, PathKind, PathModel, PortRef};

    /// One set; host `hN.example` routes `/` for Ingress `ns/iN` to service `sM`.
    fn translation(hosts: &[(usize, usize)]) -> Translation {
        let hosts = hosts
            .iter()
            .map(|&(ingress, service)| {
                Arc::new(HostModel {
                    host: HostPattern::Exact(format!("h{ingress:03}.example")),
                    paths: vec![PathModel {
                        path: "/".into(),
                        kind: PathKind::Prefix,
                        backend: BackendModel {
                            namespace: "ns".into(),
                            service: format!("s{service}").into(),
                            port: PortRef::Number(80),
                            endpoints: vec!["10.0.0.1:80".parse().unwrap()],
                        },
                        ingress: ObjectRef {
                            kind: "Ingress",
                            namespace: "ns".into(),
                            name: format!("i{ingress}"),
                        },
                        https_redirect: false,
                        policy: Default::default(),
                        canary: None,
                        gateway: None,
                    }],
                })
            })
            .collect();
        Translation::one_set("a", hosts)
    }

    fn route<'s>(s: &'s Snapshot, host: &str) -> &'s Route {
        match s.lookup(0, host, "/") {
            Lookup::Route(r) => r,
            other => panic!("{host}: {other:?}"),
        }
    }

    #[test]
    fn kept_slots_are_reused_by_route_key() {
        let metrics = crate::metrics::Metrics::new(&["a".to_string()]);
        let mut counters = metrics.route_counters();
        let hasher = std::hash::RandomState::new();
        let (mut index, mut kept, mut built) = (FastMap::default(), FastMap::default(), Vec::new());
        let mut maker = Maker {
            hasher: &hasher,
            index: &mut index,
            kept: &mut kept,
            built: &mut built,
            counters: &mut counters,
            interned: FastMap::default(),
            health: HealthPolicy::default(),
        };
        let t = translation(&[(1, 1), (2, 1)]);
        let mut lowering = crate::model::route::Lowering::default();
        let (h1, h2) = (&t.sets[0].hosts[0], &t.sets[0].hosts[1]);
        let first = maker.kept(&h1.host, &lowering.path(&h1.paths[0]));
        assert!(Arc::ptr_eq(&first, &maker.kept(&h1.host, &lowering.path(&h1.paths[0]))));
        assert!(!Arc::ptr_eq(
            &first,
            &maker.kept(&h2.host, &lowering.path(&h2.paths[0]))
        ));
        drop(first);
        // A slot no route holds any more is not handed out again.
        let again = maker.kept(&h1.host, &lowering.path(&h1.paths[0]));
        assert_eq!(Arc::strong_count(&again), 1);
    }

    #[test]
    fn rebuilds_keep_backends_and_counters_by_key() {
        let metrics = crate::metrics::Metrics::new(&["a".to_string()]);
        let mut builder = Builder::default();
        let t1 = translation(&(0..10).map(|i| (i, i)).collect::<Vec<_>>());
        let s1 = builder.build(&t1, None, 1, None, &mut metrics.route_counters());
        // Host 3 now names service 7, host 5 is gone, host 10 is new; the others are the same `Arc`s.
        let mut t2 = t1.clone();
        let edited = translation(&[(3, 7), (10, 10)]);
        t2.sets[0].hosts[3] = edited.sets[0].hosts[0].clone();
        t2.sets[0].hosts.remove(5);
        t2.sets[0].hosts.push(edited.sets[0].hosts[1].clone());
        let s2 = builder.build(&t2, None, 2, Some((&s1, Some(&t1))), &mut metrics.route_counters());
        assert!(matches!(s2.lookup(0, "h005.example", "/"), Lookup::NotFound));
        let (a, b) = (route(&s1, "h003.example"), route(&s2, "h003.example"));
        assert!(!Arc::ptr_eq(&a.state.backends[0].backend, &b.state.backends[0].backend));
        assert!(b.state.kept.is_none(), "no filter keeps state yet: no slot");
        // Host 3's new backend is the one host 7 already used; its counter is its own pair's.
        let seven = route(&s2, "h007.example");
        assert!(Arc::ptr_eq(
            &b.state.backends[0].backend,
            &seven.state.backends[0].backend
        ));
        assert!(!Arc::ptr_eq(
            &b.state.backends[0].counter,
            &seven.state.backends[0].counter
        ));
        // A fresh build of the same translation hands out the same counters (the registry keeps them).
        let fresh = Builder::default().build(&t2, None, 3, None, &mut metrics.route_counters());
        for host in ["h003.example", "h007.example", "h010.example"] {
            let (x, y) = (route(&s2, host), route(&fresh, host));
            assert!(
                Arc::ptr_eq(&x.state.backends[0].counter, &y.state.backends[0].counter),
                "{host}"
            );
        }
        // Every route's state lines up with its backends.
        for r in s2.sets[0].routes() {
            assert_eq!(r.backends.len(), r.state.backends.len());
            assert_eq!(*r.backends[0].id, r.state.backends[0].backend.id);
        }
    }
}
