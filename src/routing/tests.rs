use std::collections::HashMap;

use super::Lookup;
use crate::model::{BackendModel, DefaultBackendModel, HostModel, ObjectRef, PathModel, PortRef, SetModel};
use crate::model::{HostPattern, PathKind, Translation};
use crate::snapshot::{Builder, Live, SetTable, Snapshot};
use crate::upstream::Backend;
use std::sync::Arc;

fn backend(name: &str) -> BackendModel {
    BackendModel {
        namespace: "ns".into(),
        service: name.into(),
        port: PortRef::Number(80),
        endpoints: vec![],
    }
}

fn ing() -> ObjectRef {
    ObjectRef {
        kind: "Ingress",
        namespace: "ns".into(),
        name: "i".into(),
    }
}

/// A set with one host pattern whose paths route to backends named `b0`, `b1`, ... in order. Prefix paths are
/// given as written (trailing slash allowed), as translation would store them after trimming.
fn set_with(hosts: &[(HostPattern, &[(&str, PathKind)])], default: bool) -> SetTable {
    let mut n = 0;
    let hosts = hosts
        .iter()
        .map(|(h, paths)| HostModel {
            host: h.clone(),
            paths: paths
                .iter()
                .map(|(p, k)| {
                    n += 1;
                    let path = match k {
                        PathKind::Prefix if p.len() > 1 => p.trim_end_matches('/').to_string(),
                        _ => p.to_string(),
                    };
                    PathModel {
                        path,
                        kind: *k,
                        backend: backend(&format!("b{}", n - 1)),
                        ingress: ing(),
                        https_redirect: false,
                        policy: Default::default(),
                        canary: None,
                        gateway: None,
                    }
                })
                .collect(),
        })
        .map(Arc::new)
        .collect();
    let model = SetModel {
        name: "s".into(),
        hosts,
        default_backend: default.then(|| DefaultBackendModel {
            backend: backend("default"),
            ingress: ing(),
            policy: Default::default(),
        }),
        tls: vec![],
    };
    let t = Translation {
        sets: vec![model],
        ..Default::default()
    };
    Snapshot::build(&t, None, 1, None).sets.pop().unwrap()
}

fn service_of(l: Lookup<'_, Live>) -> Option<String> {
    match l {
        Lookup::Route(r) => Some(
            r.state.backends[0]
                .backend
                .id
                .split(['/', ':'])
                .nth(1)
                .unwrap()
                .to_string(),
        ),
        Lookup::Default(d) => Some(
            d.state.backends[0]
                .backend
                .id
                .split(['/', ':'])
                .nth(1)
                .unwrap()
                .to_string(),
        ),
        Lookup::NotFound => None,
    }
}

use PathKind::{Exact, Prefix};

/// The path-matching examples table from the Kubernetes Ingress documentation.
#[test]
fn kubernetes_docs_examples() {
    #[allow(clippy::type_complexity)]
    let cases: &[(&[(&str, PathKind)], &str, Option<&str>)] = &[
        (&[("/", Prefix)], "/", Some("b0")),
        (&[("/", Prefix)], "/anything/at/all", Some("b0")),
        (&[("/foo", Exact)], "/foo", Some("b0")),
        (&[("/foo", Exact)], "/bar", None),
        (&[("/foo", Exact)], "/foo/", None),
        (&[("/foo/", Exact)], "/foo", None),
        (&[("/foo", Prefix)], "/foo", Some("b0")),
        (&[("/foo", Prefix)], "/foo/", Some("b0")),
        (&[("/foo/", Prefix)], "/foo", Some("b0")),
        (&[("/foo/", Prefix)], "/foo/", Some("b0")),
        (&[("/aaa/bb", Prefix)], "/aaa/bbb", None),
        (&[("/aaa/bbb", Prefix)], "/aaa/bbb", Some("b0")),
        (&[("/aaa/bbb/", Prefix)], "/aaa/bbb", Some("b0")),
        (&[("/aaa/bbb", Prefix)], "/aaa/bbb/", Some("b0")),
        (&[("/aaa/bbb", Prefix)], "/aaa/bbb/ccc", Some("b0")),
        (&[("/aaa/bbb", Prefix)], "/aaa/bbbxyz", None),
        (&[("/", Prefix), ("/aaa", Prefix)], "/aaa/ccc", Some("b1")),
        (
            &[("/", Prefix), ("/aaa", Prefix), ("/aaa/bbb", Prefix)],
            "/aaa/bbb",
            Some("b2"),
        ),
        (
            &[("/", Prefix), ("/aaa", Prefix), ("/aaa/bbb", Prefix)],
            "/ccc",
            Some("b0"),
        ),
        (&[("/aaa", Prefix)], "/ccc", None),
        (&[("/foo", Prefix), ("/foo", Exact)], "/foo", Some("b1")),
        (&[("/foo", Exact), ("/foo", Prefix)], "/foo", Some("b0")),
    ];
    for (paths, req, want) in cases {
        let t = set_with(&[(HostPattern::Any, paths)], false);
        assert_eq!(
            service_of(t.lookup("", req)).as_deref(),
            *want,
            "paths {paths:?} request {req}"
        );
    }
}

#[test]
fn host_precedence_and_no_fall_through() {
    let t = set_with(
        &[
            (HostPattern::Exact("a.foo.com".into()), &[("/x", Prefix)]),
            (HostPattern::Wildcard("foo.com".into()), &[("/", Prefix)]),
            (HostPattern::Any, &[("/", Prefix), ("/x", Prefix)]),
        ],
        true,
    );
    // Exact host wins over wildcard and host-less.
    assert_eq!(service_of(t.lookup("a.foo.com", "/x/1")).as_deref(), Some("b0"));
    // The exact host matched but no path did: default backend, not the host-less "/" nor the wildcard.
    assert_eq!(service_of(t.lookup("a.foo.com", "/y")).as_deref(), Some("default"));
    // Wildcard matches exactly one label.
    assert_eq!(service_of(t.lookup("b.foo.com", "/y")).as_deref(), Some("b1"));
    assert_eq!(service_of(t.lookup("c.b.foo.com", "/x")).as_deref(), Some("b3"));
    assert_eq!(service_of(t.lookup("foo.com", "/y")).as_deref(), Some("b2"));
    // No host at all: host-less rules.
    assert_eq!(service_of(t.lookup("", "/x")).as_deref(), Some("b3"));
    assert_eq!(t.host_count(), 3);
    assert_eq!(t.route_count(), 4);
}

#[test]
fn serves_host_knows_exact_wildcard_any_and_default() {
    let t = set_with(
        &[
            (HostPattern::Exact("a.example".into()), &[("/x", Exact)]),
            (HostPattern::Wildcard("w.example".into()), &[("/", Prefix)]),
        ],
        false,
    );
    assert!(t.serves_host("a.example"));
    assert!(t.serves_host("b.w.example"));
    assert!(!t.serves_host("c.b.w.example"));
    assert!(!t.serves_host("w.example"));
    assert!(!t.serves_host("other.example"));
    let with_default = set_with(&[(HostPattern::Exact("a.example".into()), &[("/x", Exact)])], true);
    assert!(with_default.serves_host("other.example"));
    let any = set_with(&[(HostPattern::Any, &[("/", Prefix)])], false);
    assert!(any.serves_host("other.example"));
}

#[test]
fn not_found_without_default() {
    let t = set_with(&[(HostPattern::Exact("a".into()), &[("/x", Exact)])], false);
    assert!(matches!(t.lookup("a", "/y"), Lookup::NotFound));
    assert!(matches!(t.lookup("b", "/x"), Lookup::NotFound));
}

#[test]
fn unchanged_backends_are_reused_across_builds() {
    let mk = |eps: Vec<std::net::SocketAddr>| Translation {
        sets: vec![SetModel {
            name: "s".into(),
            hosts: vec![Arc::new(HostModel {
                host: HostPattern::Any,
                paths: vec![PathModel {
                    path: "/".into(),
                    kind: Prefix,
                    backend: BackendModel {
                        endpoints: eps,
                        ..backend("svc")
                    },
                    ingress: ing(),
                    https_redirect: false,
                    policy: Default::default(),
                    canary: None,
                    gateway: None,
                }],
            })],
            default_backend: None,
            tls: vec![],
        }],
        ..Default::default()
    };
    let a: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
    let b: std::net::SocketAddr = "127.0.0.1:2".parse().unwrap();
    let s1 = Snapshot::build(&mk(vec![a]), None, 1, None);
    let s2 = Snapshot::build(&mk(vec![a]), None, 2, Some(&s1));
    let s3 = Snapshot::build(&mk(vec![a, b]), None, 3, Some(&s2));
    let first = |s: &Snapshot| s.sets[0].backends().next().unwrap().clone();
    assert!(Arc::ptr_eq(&first(&s1), &first(&s2)));
    assert!(!Arc::ptr_eq(&first(&s2), &first(&s3)));
}

// === randomized comparison with the specification ===

/// The specification, literally: every route that matches, then longest path, then Exact over Prefix.
fn reference(paths: &[(String, PathKind)], req: &str) -> Option<usize> {
    let mut best: Option<(usize, u8, usize)> = None;
    for (i, (p, k)) in paths.iter().enumerate() {
        let (len, matches, rank) = match k {
            Exact => (p.len(), req == p, 1),
            Prefix => {
                let base = p.trim_end_matches('/');
                let m = base.is_empty() || req == base || (req.starts_with(base) && req.as_bytes()[base.len()] == b'/');
                (base.len(), m, 0)
            }
            PathKind::Regex => unreachable!("the randomized comparison covers Exact and Prefix"),
        };
        if matches && best.is_none_or(|(l, r, _)| (len, rank) > (l, r)) {
            best = Some((len, rank, i));
        }
    }
    best.map(|b| b.2)
}

use crate::test_rng::Rng;

fn random_path(rng: &mut Rng, max_depth: usize) -> String {
    const SEGS: [&str; 6] = ["a", "b", "ab", "aa", "ba", "a.b"];
    let depth = rng.below(max_depth + 1);
    let mut p = String::new();
    for _ in 0..depth {
        p.push('/');
        p.push_str(SEGS[rng.below(SEGS.len())]);
    }
    if p.is_empty() || rng.below(4) == 0 {
        p.push('/');
    }
    p
}

#[test]
fn matches_the_specification_on_random_tables() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    // Tables small enough to go without a router, and tables with one: both must be exercised.
    let mut with_router = [0; 2];
    for _ in 0..1500 {
        // Distinct (trimmed path, kind) pairs, as translation guarantees.
        let mut paths: Vec<(String, PathKind)> = Vec::new();
        for _ in 0..rng.below(7) + 1 {
            let kind = if rng.below(2) == 0 { Exact } else { Prefix };
            let p = random_path(&mut rng, 3);
            let p = match kind {
                Prefix if p.len() > 1 => p.trim_end_matches('/').to_string(),
                _ => p,
            };
            if !paths.iter().any(|(q, k)| *q == p && *k == kind) {
                paths.push((p, kind));
            }
        }
        let spec: Vec<(&str, PathKind)> = paths.iter().map(|(p, k)| (p.as_str(), *k)).collect();
        let t = set_with(&[(HostPattern::Any, &spec)], false);
        with_router[usize::from(t.any.as_ref().unwrap().router.is_some())] += 1;
        for _ in 0..40 {
            let req = random_path(&mut rng, 4);
            let want = reference(&paths, &req).map(|i| format!("b{i}"));
            assert_eq!(service_of(t.lookup("", &req)), want, "table {paths:?} request {req}");
        }
    }
    assert!(with_router.iter().all(|n| *n > 100), "{with_router:?}");
}

// === rebuilding after a change ===

fn random_translation(rng: &mut Rng) -> Translation {
    let mut hosts = Vec::new();
    for h in 0..8 {
        if rng.below(4) == 0 {
            continue;
        }
        let mut paths: Vec<PathModel> = Vec::new();
        for _ in 0..rng.below(7) + 1 {
            let kind = if rng.below(2) == 0 { Exact } else { Prefix };
            let p = random_path(rng, 2);
            let path = match kind {
                Prefix if p.len() > 1 => p.trim_end_matches('/').to_string(),
                _ => p,
            };
            if paths.iter().any(|q| q.path == path && q.kind == kind) {
                continue;
            }
            paths.push(PathModel {
                path,
                kind,
                backend: backend(&format!("b{}", rng.below(3))),
                ingress: ing(),
                https_redirect: rng.below(8) == 0,
                policy: Default::default(),
                canary: None,
                gateway: None,
            });
        }
        paths.sort_by(|a, b| (&a.path, a.kind).cmp(&(&b.path, b.kind)));
        let host = match h {
            7 => HostPattern::Any,
            6 => HostPattern::Wildcard("w.example".into()),
            _ => HostPattern::Exact(format!("h{h}.example")),
        };
        hosts.push(Arc::new(HostModel { host, paths }));
    }
    hosts.sort_by(|a, b| a.host.cmp(&b.host));
    Translation::one_set("s", hosts)
}

/// What a table answers, as (host, path) -> (backend, route path, redirect) over a fixed set of requests.
fn answers(t: &SetTable, rng: &mut Rng) -> Vec<Option<(String, String, bool)>> {
    let mut out = Vec::new();
    for h in ["h0.example", "h3.example", "h5.example", "x.w.example", "other", ""] {
        for _ in 0..30 {
            let req = random_path(rng, 3);
            out.push(match t.lookup(h, &req) {
                Lookup::Route(r) => Some((r.backends[0].id.to_string(), r.path.to_string(), r.redirects_to_https())),
                _ => None,
            });
        }
    }
    out
}

#[test]
fn rebuild_after_a_change_answers_like_a_fresh_build() {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut shared = 0;
    for _ in 0..300 {
        let before = random_translation(&mut rng);
        let mut after = before.clone();
        // Change one host, drop one, or add one; the rest stays equal.
        let hosts = &mut after.sets[0].hosts;
        match (rng.below(3), hosts.len()) {
            (0, n) if n > 0 => Arc::make_mut(&mut hosts[rng.below(n)]).paths[0].backend = backend("changed"),
            (1, n) if n > 0 => {
                hosts.remove(rng.below(n));
            }
            _ => {
                let extra = random_translation(&mut rng).sets.remove(0).hosts;
                for h in extra {
                    if !hosts.iter().any(|o| o.host == h.host) {
                        hosts.push(h);
                    }
                }
                hosts.sort_by(|a, b| a.host.cmp(&b.host));
            }
        }
        let s1 = Snapshot::build(&before, None, 1, None);
        let rebuilt = Snapshot::rebuild(&after, None, 2, &s1, &before);
        let fresh = Snapshot::build(&after, None, 2, None);
        let seed = rng.next();
        assert_eq!(
            answers(&rebuilt.sets[0], &mut Rng(seed)),
            answers(&fresh.sets[0], &mut Rng(seed)),
            "before {before:?}\nafter {after:?}"
        );
        // Unchanged hosts share their routes with the previous table; changed ones do not.
        for h in &after.sets[0].hosts {
            let new = rebuilt.sets[0].host_routes(&h.host).unwrap();
            let unchanged = before.sets[0].hosts.iter().any(|o| o == h);
            let old = s1.sets[0].host_routes(&h.host);
            assert_eq!(old.is_some_and(|o| Arc::ptr_eq(o, new)), unchanged, "{h:?}");
            shared += usize::from(unchanged);
        }
    }
    assert!(shared > 300, "{shared}");
}

/// One random edit of a translation: a host's backend changed, a host dropped, hosts added, a host handed out
/// again as an equal new `Arc`, or a Service's endpoints changed (every host naming it gets a new model).
fn random_edit(t: &Translation, rng: &mut Rng) -> Translation {
    let mut after = t.clone();
    let hosts = &mut after.sets[0].hosts;
    match (rng.below(5), hosts.len()) {
        (0, n) if n > 0 => {
            let h = Arc::make_mut(&mut hosts[rng.below(n)]);
            let p = rng.below(h.paths.len());
            h.paths[p].backend = backend(&format!("b{}", rng.below(4)));
        }
        (1, n) if n > 0 => {
            hosts.remove(rng.below(n));
        }
        (2, n) if n > 0 => {
            let i = rng.below(n);
            hosts[i] = Arc::new((*hosts[i]).clone());
        }
        (3, _) => {
            let service: Arc<str> = format!("b{}", rng.below(4)).into();
            let port = 1 + rng.below(3) as u16;
            let eps: Vec<std::net::SocketAddr> = (0..port).map(|i| ([127, 0, 0, 1], 1000 + i).into()).collect();
            for h in hosts.iter_mut() {
                if h.paths.iter().any(|p| p.backend.service == service) {
                    for p in &mut Arc::make_mut(h).paths {
                        if p.backend.service == service {
                            p.backend.endpoints = eps.clone();
                        }
                    }
                }
            }
        }
        _ => {
            let extra = random_translation(rng).sets.remove(0).hosts;
            for h in extra {
                if !hosts.iter().any(|o| o.host == h.host) {
                    hosts.push(h);
                }
            }
            hosts.sort_by(|a, b| a.host.cmp(&b.host));
        }
    }
    // A Service has the same endpoints on every path naming it (as translation makes it).
    let mut eps: HashMap<Arc<str>, Vec<std::net::SocketAddr>> = HashMap::new();
    for h in &after.sets[0].hosts {
        for p in &h.paths {
            eps.entry(p.backend.service.clone())
                .or_insert_with(|| p.backend.endpoints.clone());
        }
    }
    for h in &mut after.sets[0].hosts {
        if h.paths.iter().any(|p| p.backend.endpoints != eps[&p.backend.service]) {
            for p in &mut Arc::make_mut(h).paths {
                p.backend.endpoints = eps[&p.backend.service].clone();
            }
        }
    }
    after
}

#[test]
fn a_kept_builder_rebuilds_like_fresh_builds_after_random_edits() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..40 {
        let mut builder = Builder::default();
        let metrics = crate::metrics::Metrics::new(&["s".to_string()]);
        let mut t = random_translation(&mut rng);
        let mut snap = builder.build(&t, None, 1, None, &mut metrics.route_counters());
        for generation in 2..40 {
            let after = random_edit(&t, &mut rng);
            let rebuilt = builder.build(
                &after,
                None,
                generation,
                Some((&snap, Some(&t))),
                &mut metrics.route_counters(),
            );
            let fresh = Snapshot::build(&after, None, generation, None);
            let (r, f) = (&rebuilt.sets[0], &fresh.sets[0]);
            let seed = rng.next();
            assert_eq!(
                answers(r, &mut Rng(seed)),
                answers(f, &mut Rng(seed)),
                "after {after:?}"
            );
            assert_eq!((r.host_count(), r.route_count()), (f.host_count(), f.route_count()));
            // One backend per id; the previous table's backend when its endpoints did not change; every backend
            // that was not in the previous table is among those the build reports.
            let old: HashMap<&str, &Arc<Backend>> = snap.sets[0].backends().map(|b| (b.id.as_str(), b)).collect();
            let mut seen: HashMap<&str, &Arc<Backend>> = HashMap::new();
            for b in r.backends() {
                let first = seen.entry(b.id.as_str()).or_insert(b);
                assert!(Arc::ptr_eq(first, b), "two backends for {}", b.id);
                let before = old.get(b.id.as_str());
                let same = before.is_some_and(|o| {
                    o.endpoints
                        .iter()
                        .map(|e| e.addr)
                        .eq(b.endpoints.iter().map(|e| e.addr))
                });
                assert_eq!(before.is_some_and(|o| Arc::ptr_eq(o, b)), same, "{}", b.id);
                if !before.is_some_and(|o| Arc::ptr_eq(o, b)) {
                    assert!(builder.built_backends().iter().any(|x| Arc::ptr_eq(x, b)), "{}", b.id);
                }
            }
            // Unchanged hosts share their routes.
            for h in &after.sets[0].hosts {
                if t.sets[0].hosts.iter().any(|o| o == h) {
                    assert!(Arc::ptr_eq(
                        snap.sets[0].host_routes(&h.host).unwrap(),
                        r.host_routes(&h.host).unwrap()
                    ));
                }
            }
            (t, snap) = (after, rebuilt);
        }
    }
}

/// Gateway API paths: tried in the given (precedence) order; a candidate whose method, header or query
/// conditions fail passes the request to the next, then to shorter prefixes and less specific hosts.
#[test]
fn gateway_conditions_fall_to_the_next_candidate() {
    use crate::model::gateway::serve::GatewayRule;
    use crate::model::route::{RequestMatch, ValueMatch};
    let rule = |service: &str, m: Option<RequestMatch>| {
        Some(Arc::new(GatewayRule {
            matches: m,
            filters: vec![],
            backends: vec![(backend(service), 1, true)],
            backend_tls: vec![None],
            answers_500: false,
            timeouts: Default::default(),
            h2c: false,
            mirrors: vec![],
        }))
    };
    let path = |p: &str, kind, service: &str, m: Option<RequestMatch>| PathModel {
        path: p.into(),
        kind,
        backend: backend(service),
        ingress: ing(),
        https_redirect: false,
        policy: Default::default(),
        canary: None,
        gateway: rule(service, m),
    };
    let post = RequestMatch {
        method: Some(http::Method::POST),
        ..Default::default()
    };
    let header = RequestMatch {
        headers: vec![(http::HeaderName::from_static("x-v"), ValueMatch::Exact("2".into()))],
        ..Default::default()
    };
    let query = RequestMatch {
        query: vec![("debug".into(), ValueMatch::Exact("1".into()))],
        ..Default::default()
    };
    let hosts = vec![
        Arc::new(HostModel {
            host: HostPattern::Exact("a.example".into()),
            paths: vec![
                path("/api", Prefix, "post", Some(post)),
                path("/api", Prefix, "header", Some(header)),
                path("/api", Prefix, "query", Some(query)),
                path("/", Prefix, "root", None),
            ],
        }),
        Arc::new(HostModel {
            host: HostPattern::Wildcard("example".into()),
            paths: vec![path("/", Prefix, "wild", None)],
        }),
    ];
    let t = Translation::one_set("g", hosts);
    let table = Snapshot::build(&t, None, 1, None).sets.pop().unwrap();
    let headers = |pairs: &[(&'static str, &'static str)]| {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, http::HeaderValue::from_static(v));
        }
        h
    };
    let look = |method: http::Method, h: &http::HeaderMap, query: Option<&str>, host: &str, p: &str| {
        let req = super::Request {
            method: &method,
            headers: h,
            query,
        };
        service_of(table.lookup_request(host, p, Some(&req)))
    };
    let none = headers(&[]);
    let get = http::Method::GET;
    assert_eq!(
        look(http::Method::POST, &none, None, "a.example", "/api/x").as_deref(),
        Some("post")
    );
    assert_eq!(
        look(get.clone(), &headers(&[("x-v", "2")]), None, "a.example", "/api").as_deref(),
        Some("header")
    );
    assert_eq!(
        look(get.clone(), &headers(&[("x-v", "3")]), None, "a.example", "/api").as_deref(),
        Some("root")
    );
    assert_eq!(
        look(get.clone(), &none, Some("a=b&debug=1"), "a.example", "/api").as_deref(),
        Some("query")
    );
    assert_eq!(
        look(get.clone(), &none, Some("debug=2"), "a.example", "/api").as_deref(),
        Some("root")
    );
    // Several labels under a wildcard.
    assert_eq!(
        look(get.clone(), &none, None, "x.y.example", "/").as_deref(),
        Some("wild")
    );
    assert_eq!(look(get, &none, None, "example", "/").as_deref(), None);
}
