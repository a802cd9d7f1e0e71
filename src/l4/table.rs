//! The data plane's layer-4 routes, built from the pure model at each publish: per listener set, passthrough
//! routes by server name (exact, then wildcard one label deep, as Ingress hosts match).

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
}

/// A listener set's passthrough routes by server name.
#[derive(Debug, Default)]
pub struct PassthroughTable {
    exact: HashMap<String, Arc<L4Route>>,
    /// By the suffix after the first label: `*.example.com` is stored as `example.com`.
    wildcard: HashMap<String, Arc<L4Route>>,
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
            connect_timeout: super::conn::CONNECT_TIMEOUT,
            idle_timeout: None,
        }
    }
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
                if set.passthrough.is_empty() {
                    return None;
                }
                let name = set_names.get(i).map_or("", String::as_str);
                let before = previous.passthrough(i);
                let mut table = PassthroughTable::default();
                for r in &set.passthrough {
                    let host = r.host.to_string();
                    // Prefixed: the same Service port may also be an HTTP backend, whose series must stay apart.
                    let id = format!("passthrough:{}", r.backend.id());
                    let reused = before
                        .and_then(|t| t.by_pattern(&r.host))
                        .map(|old| &old.backend)
                        .filter(|b| {
                            b.id == id
                                && b.same_as(
                                    &r.backend.endpoints,
                                    r.balance,
                                    HealthPolicy::default(),
                                    r.check.as_ref(),
                                )
                        })
                        .cloned();
                    let backend = reused.unwrap_or_else(|| {
                        Arc::new(Backend::with_check(
                            id,
                            r.backend.endpoints.clone(),
                            r.balance,
                            HealthPolicy::default(),
                            r.check.clone(),
                        ))
                    });
                    let stats = stats.route(name, "tls-passthrough", &host);
                    let route = Arc::new(L4Route::new(&host, &r.origin.to_string(), backend, stats));
                    match &r.host {
                        HostPattern::Exact(h) => table.exact.insert(h.clone(), route),
                        HostPattern::Wildcard(s) => table.wildcard.insert(s.clone(), route),
                        HostPattern::Any => None,
                    };
                }
                Some(Arc::new(table))
            })
            .collect();
        Self { sets }
    }

    /// The passthrough routes of listener set `set`, if it has any.
    #[inline]
    pub fn passthrough(&self, set: usize) -> Option<&Arc<PassthroughTable>> {
        self.sets.get(set)?.as_ref()
    }

    /// Every backend of every route (for the health checkers and `/metrics`).
    pub fn backends(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.sets.iter().flatten().flat_map(|t| t.routes().map(|r| &r.backend))
    }
}

impl PassthroughTable {
    /// The route for a server name (lowercase, no trailing dot): exact, then the wildcard one label up.
    pub fn lookup(&self, sni: &str) -> Option<&Arc<L4Route>> {
        self.exact
            .get(sni)
            .or_else(|| self.wildcard.get(sni.split_once('.')?.1))
    }

    fn by_pattern(&self, host: &HostPattern) -> Option<&Arc<L4Route>> {
        match host {
            HostPattern::Exact(h) => self.exact.get(h),
            HostPattern::Wildcard(s) => self.wildcard.get(s),
            HostPattern::Any => None,
        }
    }

    pub fn routes(&self) -> impl Iterator<Item = &Arc<L4Route>> {
        self.exact.values().chain(self.wildcard.values())
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
}
