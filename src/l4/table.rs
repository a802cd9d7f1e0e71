//! The data plane's layer-4 routes, built from the pure model at each publish: per listener set, passthrough
//! routes by server name (for Ingresses: exact, then wildcard one label deep, as Ingress hosts match; on Gateway
//! sockets: exact, then the most specific wildcard, with the listeners' hostnames deciding the rest), and a
//! Gateway TCP socket's route.

use std::collections::HashMap;
use std::sync::Arc;

use super::stats::{Registry, RouteStats};
use crate::model::l4::L4Model;
use crate::model::HostPattern;
use crate::upstream::{Backend, HealthPolicy};

/// Every listener set's layer-4 routes. Invariant: built once, never mutated; a set without routes has `None`
/// (its TLS listeners never read ahead).
#[derive(Debug, Default)]
pub struct L4Tables {
    sets: Vec<Option<Arc<PassthroughTable>>>,
    /// Per listener set: a Gateway TCP socket's route.
    tcp: Vec<Option<Arc<L4Route>>>,
}

/// A listener set's passthrough routes by server name.
#[derive(Debug, Default)]
pub struct PassthroughTable {
    exact: HashMap<String, Entry>,
    /// By the suffix after the first label: `*.example.com` is stored as `example.com`.
    wildcard: HashMap<String, Entry>,
    /// Gateway API matching: a wildcard covers any number of labels (the most specific wins), and a name no
    /// entry matches is closed unless `terminates_rest`. `false`: Ingress matching (one label; a miss goes to
    /// the set's HTTP routes).
    gateway: bool,
    terminates_rest: bool,
}

/// What a server name matched.
#[derive(Debug, Clone)]
enum Entry {
    Route(Arc<L4Route>),
    /// An HTTPS listener's hostname: terminated.
    Terminate,
    /// A TLS listener's hostname without a route for the name: closed.
    Close,
}

/// What to do with a TLS connection, by its server name.
#[derive(Debug)]
pub enum Verdict<'a> {
    /// Pass it through on this route.
    Pass(&'a Arc<L4Route>),
    /// Terminate it (HTTP routes serve it).
    Terminate,
    /// Close it.
    Close,
    /// No entry: an Ingress set's HTTP routes decide (terminated when they serve the name, else closed).
    Miss,
}

/// One layer-4 route: where its connections go, and its counters. A connection holds its route (and so the
/// backend's state) until it ends, whatever is published meanwhile.
#[derive(Debug)]
pub struct L4Route {
    /// The host pattern, as shown in logs and metrics.
    pub name: Arc<str>,
    /// The object that defined it (`Ingress ns/name`).
    pub origin: Arc<str>,
    pub backend: Arc<Backend>,
    pub stats: Arc<RouteStats>,
    /// Gateway API routes: every backendRef and its weight; each connection draws one (`None`, a reference
    /// that did not resolve: the connection is closed). Empty: `backend` takes every connection.
    pub split: Box<[(Option<Arc<Backend>>, u32)]>,
    /// Per endpoint tried.
    pub connect_timeout: std::time::Duration,
    /// No byte either way for this long closes the connection (`None`: never).
    pub idle_timeout: Option<std::time::Duration>,
}

impl L4Route {
    /// A route named `name` (defined by `origin`) to `backend`, with the default connect timeout and no idle
    /// timeout.
    pub fn new(name: &str, origin: &str, backend: Arc<Backend>, stats: Arc<RouteStats>) -> Self {
        Self {
            name: name.into(),
            origin: origin.into(),
            backend,
            stats,
            split: Box::new([]),
            connect_timeout: super::conn::CONNECT_TIMEOUT,
            idle_timeout: None,
        }
    }

    /// The backend for one connection: `backend`, or one drawn by weight from `split` (`None`: the draw fell
    /// on an unresolved reference, or no weight is above zero).
    pub fn choose(&self) -> Option<&Arc<Backend>> {
        if self.split.is_empty() {
            return Some(&self.backend);
        }
        let total: u64 = self.split.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 {
            return None;
        }
        let mut x = u64::from(crate::routing::weights::below_million()) * total / 1_000_000;
        for (b, w) in &self.split {
            if x < u64::from(*w) {
                return b.as_ref();
            }
            x -= u64::from(*w);
        }
        None
    }

    /// Every backend of the route.
    fn backends(&self) -> impl Iterator<Item = &Arc<Backend>> {
        std::iter::once(&self.backend).chain(self.split.iter().filter_map(|(b, _)| b.as_ref()))
    }
}

/// The backend of `m` (prefixed `id`), reused from `before` when it has the same one.
fn backend_of(
    id: String,
    m: &crate::model::BackendModel,
    r: &crate::model::l4::PassthroughRoute,
    before: Option<&L4Route>,
) -> Arc<Backend> {
    let reused = before
        .into_iter()
        .flat_map(L4Route::backends)
        .find(|b| b.id == id && b.same_as(&m.endpoints, r.balance, HealthPolicy::default(), r.check.as_ref()))
        .cloned();
    reused.unwrap_or_else(|| {
        Arc::new(Backend::with_check(
            id,
            m.endpoints.clone(),
            r.balance,
            HealthPolicy::default(),
            r.check.clone(),
        ))
    })
}

/// The live route of `r`, its backends reused from `before` where unchanged.
fn live_route(
    r: &crate::model::l4::PassthroughRoute,
    prefix: &str,
    name: &str,
    before: Option<&L4Route>,
    stats: Arc<RouteStats>,
) -> L4Route {
    // Prefixed: the same Service port may also be an HTTP backend, whose series must stay apart.
    let backend = backend_of(format!("{prefix}:{}", r.backend.id()), &r.backend, r, before);
    let split = r
        .split
        .iter()
        .map(|w| {
            let b = w.backend.as_ref().map(|m| {
                let id = format!("{prefix}:{}", m.id());
                if id == backend.id
                    && backend.same_as(&m.endpoints, r.balance, HealthPolicy::default(), r.check.as_ref())
                {
                    backend.clone()
                } else {
                    backend_of(id, m, r, before)
                }
            });
            (b, w.weight)
        })
        .collect();
    let mut route = L4Route::new(name, &r.origin.to_string(), backend, stats);
    route.split = split;
    route
}

impl L4Tables {
    /// Builds the tables of `model`, named `set_names`. A route's backend is taken from `previous` when the
    /// same host there has the same endpoints and policies, so balancing and health state survive the swap.
    pub fn build(model: &L4Model, set_names: &[String], previous: &L4Tables, stats: &Registry) -> Self {
        let sets = model
            .sets
            .iter()
            .enumerate()
            .map(|(i, set)| {
                if set.passthrough.is_empty() && set.sni.is_none() {
                    return None;
                }
                let name = set_names.get(i).map_or("", String::as_str);
                let before = previous.passthrough(i);
                let mut table = PassthroughTable::default();
                if let Some(sni) = &set.sni {
                    table.gateway = true;
                    table.terminates_rest = sni.terminates_rest;
                    // Listener hostnames first; a route for the same name replaces its listener's entry.
                    for (hosts, entry) in [(&sni.closed, Entry::Close), (&sni.terminated, Entry::Terminate)] {
                        for h in hosts {
                            table.insert(h, entry.clone());
                        }
                    }
                }
                for r in &set.passthrough {
                    let host = r.host.to_string();
                    let old = before.and_then(|t| t.by_pattern(&r.host)).map(|r| &**r);
                    let live = live_route(
                        r,
                        "passthrough",
                        &host,
                        old,
                        stats.route(name, "tls-passthrough", &host),
                    );
                    table.insert(&r.host, Entry::Route(Arc::new(live)));
                }
                Some(Arc::new(table))
            })
            .collect();
        let tcp = model
            .sets
            .iter()
            .enumerate()
            .map(|(i, set)| {
                let r = set.tcp.as_ref()?;
                let name = set_names.get(i).map_or("", String::as_str);
                let origin = r.origin.to_string();
                let old = previous.tcp(i).map(|r| &**r);
                let live = live_route(r, "tcproute", &origin, old, stats.route(name, "tcp", &origin));
                Some(Arc::new(live))
            })
            .collect();
        Self { sets, tcp }
    }

    /// The route of a Gateway TCP socket, served as listener set `set`.
    #[inline]
    pub fn tcp(&self, set: usize) -> Option<&Arc<L4Route>> {
        self.tcp.get(set)?.as_ref()
    }

    /// The passthrough routes of listener set `set`, if it has any.
    #[inline]
    pub fn passthrough(&self, set: usize) -> Option<&Arc<PassthroughTable>> {
        self.sets.get(set)?.as_ref()
    }

    /// Every backend of every route (for the health checkers and `/metrics`).
    pub fn backends(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.sets
            .iter()
            .flatten()
            .flat_map(|t| t.routes())
            .chain(self.tcp.iter().flatten())
            .flat_map(|r| r.backends())
    }
}

impl PassthroughTable {
    /// The route for a server name (lowercase, no trailing dot): exact, then the wildcard one label up (on a
    /// Gateway socket, every wildcard up, most specific first).
    pub fn lookup(&self, sni: &str) -> Option<&Arc<L4Route>> {
        match self.verdict(sni) {
            Verdict::Pass(r) => Some(r),
            _ => None,
        }
    }

    /// What to do with a connection whose ClientHello named `sni` (lowercase, no trailing dot).
    pub fn verdict(&self, sni: &str) -> Verdict<'_> {
        let entry = self.exact.get(sni).or_else(|| {
            let mut rest = sni;
            loop {
                rest = rest.split_once('.')?.1;
                if let Some(e) = self.wildcard.get(rest) {
                    return Some(e);
                }
                if !self.gateway {
                    return None;
                }
            }
        });
        match entry {
            Some(Entry::Route(r)) => Verdict::Pass(r),
            Some(Entry::Terminate) => Verdict::Terminate,
            Some(Entry::Close) => Verdict::Close,
            None if !self.gateway => Verdict::Miss,
            None if self.terminates_rest => Verdict::Terminate,
            None => Verdict::Close,
        }
    }

    /// What to do with a ClientHello without server name: a Gateway socket terminates it when it has an HTTPS
    /// listener without hostname, else closes it; an Ingress set terminates it (routed by `Host`).
    pub fn without_sni(&self) -> Verdict<'_> {
        if !self.gateway || self.terminates_rest {
            Verdict::Terminate
        } else {
            Verdict::Close
        }
    }

    fn insert(&mut self, host: &HostPattern, entry: Entry) {
        match host {
            HostPattern::Exact(h) => self.exact.insert(h.clone(), entry),
            HostPattern::Wildcard(s) => self.wildcard.insert(s.clone(), entry),
            HostPattern::Any => None,
        };
    }

    fn by_pattern(&self, host: &HostPattern) -> Option<&Arc<L4Route>> {
        let e = match host {
            HostPattern::Exact(h) => self.exact.get(h),
            HostPattern::Wildcard(s) => self.wildcard.get(s),
            HostPattern::Any => None,
        };
        match e {
            Some(Entry::Route(r)) => Some(r),
            _ => None,
        }
    }

    pub fn routes(&self) -> impl Iterator<Item = &Arc<L4Route>> {
        self.exact
            .values()
            .chain(self.wildcard.values())
            .filter_map(|e| match e {
                Entry::Route(r) => Some(r),
                _ => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::l4::{L4SetModel, PassthroughRoute};
    use crate::model::{BackendModel, ObjectRef, PortRef};

    fn model(endpoints: &[&str]) -> L4Model {
        let route = |host: HostPattern| PassthroughRoute {
            host,
            backend: BackendModel {
                namespace: "ns".into(),
                service: "svc".into(),
                port: PortRef::Number(443),
                endpoints: endpoints.iter().map(|e| e.parse().unwrap()).collect(),
            },
            balance: crate::upstream::Balance::RoundRobin,
            check: None,
            split: Vec::new(),
            origin: ObjectRef {
                kind: "Ingress",
                namespace: "ns".into(),
                name: "ing".into(),
            },
        };
        L4Model {
            sets: vec![
                L4SetModel::default(),
                L4SetModel {
                    passthrough: vec![
                        route(HostPattern::Exact("a.example.com".into())),
                        route(HostPattern::Wildcard("example.com".into())),
                    ],
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn exact_then_one_label_wildcard_and_state_kept_across_builds() {
        let names = ["plain".to_string(), "edge".to_string()];
        let reg = Registry::default();
        let t = L4Tables::build(&model(&["10.0.0.1:443"]), &names, &L4Tables::default(), &reg);
        assert!(t.passthrough(0).is_none());
        let p = t.passthrough(1).unwrap();
        assert_eq!(&*p.lookup("a.example.com").unwrap().name, "a.example.com");
        assert_eq!(&*p.lookup("b.example.com").unwrap().name, "*.example.com");
        assert!(p.lookup("c.b.example.com").is_none());
        assert!(p.lookup("example.com").is_none());
        // Same endpoints: the same backend (its balancer and health state) and counters.
        let again = L4Tables::build(&model(&["10.0.0.1:443"]), &names, &t, &reg);
        let (a, b) = (
            p.lookup("a.example.com").unwrap(),
            again.passthrough(1).unwrap().lookup("a.example.com").unwrap(),
        );
        assert!(Arc::ptr_eq(&a.backend, &b.backend));
        assert!(Arc::ptr_eq(&a.stats, &b.stats));
        // Other endpoints: a new backend, the same counters.
        let moved = L4Tables::build(&model(&["10.0.0.2:443"]), &names, &t, &reg);
        let c = moved.passthrough(1).unwrap().lookup("a.example.com").unwrap();
        assert!(!Arc::ptr_eq(&a.backend, &c.backend));
        assert!(Arc::ptr_eq(&a.stats, &c.stats));
        assert_eq!(moved.backends().count(), 2);
    }

    #[test]
    fn gateway_sockets_match_the_most_specific_name_and_their_listeners_decide_the_rest() {
        use crate::model::l4::{GatewaySni, WeightedL4};
        let mut m = model(&["10.0.0.1:443"]);
        let set = &mut m.sets[1];
        // `*.example.com` (any depth) and `a.example.com` pass through; the TLS listener `*.db.example.com` has
        // no route, the HTTPS listener `web.example.com` terminates.
        set.sni = Some(GatewaySni {
            terminated: vec![HostPattern::Exact("web.example.com".into())],
            closed: vec![
                HostPattern::Wildcard("example.com".into()),
                HostPattern::Wildcard("db.example.com".into()),
            ],
            terminates_rest: false,
        });
        let backend = set.passthrough[0].backend.clone();
        set.passthrough[1].split = vec![
            WeightedL4 {
                backend: Some(backend),
                weight: 1,
            },
            WeightedL4 {
                backend: None,
                weight: 0,
            },
        ];
        let names = ["plain".to_string(), "gw".to_string()];
        let t = L4Tables::build(&m, &names, &L4Tables::default(), &Registry::default());
        let p = t.passthrough(1).unwrap();
        let name = |sni: &str| match p.verdict(sni) {
            Verdict::Pass(r) => r.name.to_string(),
            other => format!("{other:?}"),
        };
        assert_eq!(name("a.example.com"), "a.example.com");
        assert_eq!(name("b.example.com"), "*.example.com");
        assert_eq!(
            name("c.b.example.com"),
            "*.example.com",
            "a Gateway wildcard covers several labels"
        );
        assert_eq!(
            name("x.db.example.com"),
            "Close",
            "the more specific TLS listener has no route"
        );
        assert_eq!(name("web.example.com"), "Terminate");
        assert_eq!(name("example.org"), "Close", "no HTTPS listener without hostname");
        assert!(matches!(p.without_sni(), Verdict::Close));
        // Weight 0 on the unresolved reference: every connection draws the Service.
        let w = p.lookup("b.example.com").unwrap();
        assert!((0..100).all(|_| w.choose().is_some()));
        // Ingress sets keep one-label wildcards and leave misses to the HTTP routes.
        let t0 = L4Tables::build(
            &model(&["10.0.0.1:443"]),
            &names,
            &L4Tables::default(),
            &Registry::default(),
        );
        assert!(matches!(
            t0.passthrough(1).unwrap().verdict("c.b.example.com"),
            Verdict::Miss
        ));
        assert!(matches!(t0.passthrough(1).unwrap().without_sni(), Verdict::Terminate));
    }

    #[test]
    fn a_split_draws_by_weight_and_closes_the_unresolved_share() {
        let b = Arc::new(Backend::new("x".into(), vec!["10.0.0.1:1".parse().unwrap()]));
        let mut r = L4Route::new("r", "o", b.clone(), Arc::default());
        r.split = vec![(Some(b), 3), (None, 1)].into_boxed_slice();
        let some = (0..4000).filter(|_| r.choose().is_some()).count();
        assert!((2700..3300).contains(&some), "{some} of 4000");
    }
}
