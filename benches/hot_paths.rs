//! Micro-benchmarks of the request path's pure parts: `cargo bench --bench hot_paths`.
//!
//! Route lookup (1 host vs 10,000 hosts, requests spread over all of them), translation of 1,000 Ingresses,
//! the upstream header edits (hop-by-hop strip + X-Forwarded-*), path / host normalisation, and choosing a
//! route's canary.

mod common;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::header::{HeaderMap, HeaderValue};
use portico::model::translate;
use portico::normalize::{normalize_host, normalize_path};
use portico::proxy::headers::{set_forwarded, strip_hop_by_hop, Forwarded, HopValues};
use portico::routing::Lookup;
use portico::snapshot::Snapshot;

fn snapshot(n: usize) -> Snapshot {
    let t = translate(&common::cluster_state(n), &common::options());
    assert!(t.diagnostics.is_empty());
    Snapshot::build(&t, None, 1, None)
}

fn lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("lookup");
    let one = snapshot(1);
    let h0 = common::host(0);
    g.bench_function("1_host", |b| {
        b.iter(|| {
            matches!(
                one.sets[0].lookup(black_box(&h0), black_box("/api/items")),
                Lookup::Route(_)
            )
        })
    });
    let many = snapshot(10_000);
    // a stride through all names, so consecutive lookups touch different parts of the table
    let hosts: Vec<String> = (0..10_000).map(|i| common::host((i * 7919) % 10_000)).collect();
    let mut i = 0usize;
    g.bench_function("10k_hosts_spread", |b| {
        b.iter(|| {
            i = (i + 1) % hosts.len();
            matches!(
                many.sets[0].lookup(black_box(&hosts[i]), black_box("/api/items")),
                Lookup::Route(_)
            )
        })
    });
    g.bench_function("10k_hosts_miss", |b| {
        b.iter(|| {
            matches!(
                many.sets[0].lookup(black_box("nope.example"), black_box("/")),
                Lookup::NotFound
            )
        })
    });
    g.finish();
}

fn translation(c: &mut Criterion) {
    let state = common::cluster_state(1_000);
    let opts = common::options();
    let mut g = c.benchmark_group("translate");
    g.sample_size(20);
    g.bench_function("1k_ingresses", |b| b.iter(|| translate(black_box(&state), &opts)));
    let t = translate(&state, &opts);
    g.bench_function("snapshot_build_1k", |b| {
        b.iter(|| Snapshot::build(black_box(&t), None, 2, None))
    });
    g.finish();
}

fn request_headers() -> HeaderMap {
    // what curl / a browser-ish client sends, plus a Connection header naming another one
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("h00001.bench.example"));
    h.insert(
        "user-agent",
        HeaderValue::from_static("Mozilla/5.0 (X11; Linux x86_64) bench/1.0"),
    );
    h.insert(
        "accept",
        HeaderValue::from_static("text/html,application/xhtml+xml,*/*;q=0.8"),
    );
    h.insert("accept-encoding", HeaderValue::from_static("gzip, deflate, br"));
    h.insert("accept-language", HeaderValue::from_static("en-GB,en;q=0.5"));
    h.insert(
        "cookie",
        HeaderValue::from_static("session=0123456789abcdef; theme=dark"),
    );
    h.insert("connection", HeaderValue::from_static("keep-alive"));
    h
}

fn headers(c: &mut Criterion) {
    let mut g = c.benchmark_group("headers");
    let host = HeaderValue::from_static("h00001.bench.example");
    // Rendered once per connection in the gateway.
    let hop = HopValues::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), 8080);
    let fwd = Forwarded {
        client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
        hop: &hop,
        trusted: false,
        proto: "http",
        host: &host,
    };
    g.bench_function("clone_only (baseline)", |b| {
        b.iter_batched(request_headers, black_box, BatchSize::SmallInput)
    });
    g.bench_function("strip_hop_by_hop + set_forwarded", |b| {
        b.iter_batched(
            request_headers,
            |mut h| {
                strip_hop_by_hop(&mut h);
                set_forwarded(&mut h, &fwd);
                h
            },
            BatchSize::SmallInput,
        )
    });
    let mut no_conn = request_headers();
    no_conn.remove("connection");
    g.bench_function("strip_hop_by_hop, no Connection header", |b| {
        b.iter_batched(
            || no_conn.clone(),
            |mut h| {
                strip_hop_by_hop(&mut h);
                h
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn normalisation(c: &mut Criterion) {
    let mut g = c.benchmark_group("normalize");
    g.bench_function("path_clean", |b| {
        b.iter(|| normalize_path(black_box("/api/v1/users/12345/orders")).map(|p| p.len()))
    });
    g.bench_function("path_dirty", |b| {
        b.iter(|| normalize_path(black_box("/api/./v1//users/%7Ebob/../12345/%6Frders")).map(|p| p.len()))
    });
    g.bench_function("host_with_port", |b| {
        b.iter(|| normalize_host(black_box("H00001.Bench.Example:8080")).map(|h| h.name.len()))
    });
    g.bench_function("host_plain_lowercase", |b| {
        b.iter(|| normalize_host(black_box("h00001.bench.example")).map(|h| h.name.len()))
    });
    g.finish();
}

/// A main Ingress on `shop.example` and `plain.example`, and a canary on shop's `/` with header, cookie and weight
/// rules: the route `host` matches.
fn canary_table() -> Snapshot {
    let yaml = r#"# implicit-classes
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {ports: [{port: 80}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: default}
spec:
  rules:
    - {host: shop.example, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}
    - {host: plain.example, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: shop-canary
  namespace: default
  annotations:
    nginx.ingress.kubernetes.io/canary: "true"
    nginx.ingress.kubernetes.io/canary-by-header: X-Canary
    nginx.ingress.kubernetes.io/canary-by-cookie: canary
    nginx.ingress.kubernetes.io/canary-weight: "20"
spec:
  rules:
    - {host: shop.example, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}
"#;
    let (state, _) = portico::source::file::state_from_yaml(yaml, "bench");
    let t = translate(&state, &common::options());
    assert!(t.describe().contains("[canary "), "{}", t.describe());
    Snapshot::build(&t, None, 1, None)
}

/// Choosing between a route's backend and its canary (`Route::backend_for`): a route without one, and a canary
/// decided by its header, its cookie, or the weight.
fn canary(c: &mut Criterion) {
    let mut g = c.benchmark_group("canary");
    let snap = canary_table();
    let route = |host: &str| match snap.sets[0].lookup(host, "/") {
        Lookup::Route(r) => r,
        _ => panic!("no route for {host}"),
    };
    let (plain, shop) = (route("plain.example"), route("shop.example"));
    let base = request_headers();
    let mut by_header = base.clone();
    by_header.insert("x-canary", HeaderValue::from_static("always"));
    let mut by_cookie = base.clone();
    by_cookie.insert(
        "cookie",
        HeaderValue::from_static("session=0123456789abcdef; canary=always"),
    );
    g.bench_function("no_canary", |b| {
        b.iter(|| {
            let r = black_box(plain);
            r.backend_for(black_box(&base), |i, n| r.state.names_endpoint(i, n)) > 0
        })
    });
    for (name, h) in [
        ("by_header", &by_header),
        ("by_cookie", &by_cookie),
        ("by_weight", &base),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let r = black_box(shop);
                r.backend_for(black_box(h), |i, n| r.state.names_endpoint(i, n)) > 0
            })
        });
    }
    g.finish();
}

criterion_group!(benches, lookup, translation, headers, normalisation, canary);
criterion_main!(benches);
