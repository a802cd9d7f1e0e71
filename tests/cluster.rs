//! Cluster mode end to end: the gateway in-process fed by the fake API server through an unmodified
//! `kube::Client`, real echo backends, real HTTP clients. Every test is bounded by [`bounded`].

mod support;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use portico::app::{Running, Source};
use portico::certs::testing::{key, TestCa, DAY};
use portico::certs::unix_now;
use portico::config::Config;
use portico::source::kube::{ClusterOptions, LeaseConfig};
use portico_fake_apiserver::FakeApiServer;
use serde::Deserialize;
use serde_json::json;
use support::*;

// === harness ===

/// Fails the test instead of hanging CI.
async fn bounded<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(Duration::from_secs(90), f)
        .await
        .expect("test did not finish in time");
}

/// Polls `f` until it is true; panics naming `what` after `within`.
async fn until<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + within;
    loop {
        if f().await {
            return;
        }
        assert!(tokio::time::Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An IngressClass of ours.
fn class(name: &str) -> String {
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: {name}}}\nspec: {{controller: portico.dev/ingress-controller}}\n"
    )
}

/// Upserts every document of a multi-document YAML text.
fn apply(server: &FakeApiServer, yaml: &str) {
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let v = serde_yaml::Value::deserialize(doc).unwrap();
        if v.is_null() {
            continue;
        }
        server.upsert(serde_json::to_value(v).unwrap()).unwrap();
    }
}

fn opts(identity: &str) -> ClusterOptions {
    ClusterOptions {
        identity: identity.into(),
        retry: Duration::from_millis(200),
        ..Default::default()
    }
}

async fn start(server: &FakeApiServer, config: &str, options: ClusterOptions) -> Running {
    portico::app::start(
        Config::from_yaml(config).unwrap(),
        Source::Kube {
            client: server.client(),
            options,
        },
    )
    .await
    .unwrap()
}

async fn started(server: &FakeApiServer, config: &str, options: ClusterOptions) -> Running {
    let gw = start(server, config, options).await;
    let shared = gw.shared.clone();
    until("first publish", Duration::from_secs(10), || {
        let ready = shared.is_ready();
        async move { ready }
    })
    .await;
    gw
}

async fn backend_of(addr: std::net::SocketAddr, host: &str, path: &str) -> (u16, Option<String>) {
    let r = get(addr, host, path).await;
    (r.status, r.backend())
}

async fn routes_to(addr: std::net::SocketAddr, host: &str, want: (u16, Option<&str>), within: Duration) {
    let what = format!("{host} answers {want:?}");
    until(&what, within, || async {
        let (s, b) = backend_of(addr, host, "/").await;
        s == want.0 && b.as_deref() == want.1
    })
    .await;
}

/// Backends `a` and `b`, Ingress `web` sending `a.example` to `a`, and a gateway that has listed everything:
/// the backends (kept alive by the caller), the gateway and its address.
async fn two_backends_served(
    server: &FakeApiServer,
) -> (
    portico::echo::EchoServer,
    portico::echo::EchoServer,
    Running,
    std::net::SocketAddr,
) {
    let (a, b) = (echo("a").await, echo("b").await);
    apply(
        server,
        &(class("portico")
            + &service("default", "a", &[a.addr])
            + &service("default", "b", &[b.addr])
            + &ingress("default", "web", "portico", &[("a.example", "/", "Prefix", "a")])),
    );
    let gw = started(server, ONE_SET, opts("one")).await;
    let addr = gw.http_addrs[0][0];
    assert!(server.wait_for_watches(5, SEC5).await, "five watches open");
    (a, b, gw, addr)
}

const SEC5: Duration = Duration::from_secs(5);

// === initial sync ===

#[tokio::test]
async fn initial_sync_then_serve() {
    bounded(async {
        let server = FakeApiServer::start().await.unwrap();
        let a = echo("a").await;
        apply(
            &server,
            &(class("portico")
                + &service("default", "a", &[a.addr])
                + &ingress("default", "web", "portico", &[("a.example", "/", "Prefix", "a")])),
        );
        // The first lists fail (a few times per watcher, retried within a second or two): nothing may be
        // published until every watcher has listed.
        server.fail_next(16, 403);
        let gw = start(&server, ONE_SET, opts("one")).await;
        for _ in 0..20 {
            assert!(!gw.shared.is_ready(), "published before every watcher listed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let shared = gw.shared.clone();
        until("ready", Duration::from_secs(15), || {
            let r = shared.is_ready();
            async move { r }
        })
        .await;
        assert_eq!(
            backend_of(gw.http_addrs[0][0], "a.example", "/").await,
            (200, Some("a".into()))
        );
        // The first table already had everything: one publish.
        assert_eq!(gw.shared.snapshot.load().generation, 1);
        // TLS and Opaque (basic auth's) Secrets only, by field selector.
        let reqs = server.requests();
        let mut selectors: Vec<String> = reqs
            .iter()
            .filter(|r| r.path == "/api/v1/secrets" && r.injected_failure.is_none())
            .filter_map(|r| r.query_param("fieldSelector"))
            .collect();
        selectors.sort_unstable();
        selectors.dedup();
        assert_eq!(selectors, ["type=Opaque", "type=kubernetes.io/tls"]);
        gw.shutdown().await;
    })
    .await;
}

/// A cluster without the Gateway API CRDs (their lists answer 404): Ingresses are served all the same.
#[tokio::test]
async fn serves_without_the_gateway_api_crds() {
    bounded(async {
        let resources = portico_fake_apiserver::BUILTIN_RESOURCES
            .iter()
            .filter(|r| r.group != "gateway.networking.k8s.io")
            .copied()
            .collect();
        let server = FakeApiServer::start_with(portico_fake_apiserver::Options {
            resources,
            ..Default::default()
        })
        .await
        .unwrap();
        let a = echo("a").await;
        apply(
            &server,
            &(class("portico")
                + &service("default", "a", &[a.addr])
                + &ingress("default", "web", "portico", &[("a.example", "/", "Prefix", "a")])),
        );
        let gw = started(&server, ONE_SET, opts("one")).await;
        assert_eq!(
            backend_of(gw.http_addrs[0][0], "a.example", "/").await,
            (200, Some("a".into()))
        );
        gw.shutdown().await;
    })
    .await;
}

// === changes reach traffic ===

#[tokio::test]
async fn object_changes_reach_traffic() {
    bounded(async {
        let server = FakeApiServer::start().await.unwrap();
        let (a, b, c) = (echo("a").await, echo("b").await, echo("c").await);
        apply(
            &server,
            &(class("portico")
                + &service("default", "a", &[a.addr])
                + &service("default", "b", &[b.addr])
                + &ingress("default", "web", "portico", &[("a.example", "/", "Prefix", "a")])),
        );
        let gw = started(&server, ONE_SET, opts("one")).await;
        let addr = gw.http_addrs[0][0];
        routes_to(addr, "a.example", (200, Some("a")), SEC5).await;

        // Ingress modified.
        apply(
            &server,
            &ingress("default", "web", "portico", &[("a.example", "/", "Prefix", "b")]),
        );
        routes_to(addr, "a.example", (200, Some("b")), SEC5).await;

        // Ingress added, its Service missing (503), then Service and EndpointSlice added.
        apply(
            &server,
            &ingress("default", "second", "portico", &[("c.example", "/", "Prefix", "c")]),
        );
        routes_to(addr, "c.example", (503, None), SEC5).await;
        apply(&server, &service("default", "c", &[c.addr]));
        routes_to(addr, "c.example", (200, Some("c")), SEC5).await;

        // EndpointSlice deleted: no endpoints.
        server.delete_typed::<EndpointSlice>("default", "c-0").unwrap();
        routes_to(addr, "c.example", (503, None), SEC5).await;
        // Service deleted, then back.
        apply(&server, &service("default", "c", &[c.addr]));
        routes_to(addr, "c.example", (200, Some("c")), SEC5).await;
        server.delete_typed::<Service>("default", "c").unwrap();
        routes_to(addr, "c.example", (503, None), SEC5).await;

        // IngressClass deleted: nothing is ours any more; back: served again.
        server.delete_typed::<IngressClass>("", "portico").unwrap();
        routes_to(addr, "a.example", (404, None), SEC5).await;
        apply(&server, &class("portico"));
        routes_to(addr, "a.example", (200, Some("b")), SEC5).await;

        // Ingress deleted.
        server.delete_typed::<Ingress>("default", "web").unwrap();
        routes_to(addr, "a.example", (404, None), SEC5).await;
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn endpoint_changes_reroute() {
    bounded(async {
        let server = FakeApiServer::start().await.unwrap();
        let (x, y) = (echo("x").await, echo("y").await);
        apply(
            &server,
            &(class("portico")
                + &service("default", "s", &[x.addr])
                + &ingress("default", "web", "portico", &[("s.example", "/", "Prefix", "s")])),
        );
        let gw = started(&server, ONE_SET, opts("one")).await;
        let addr = gw.http_addrs[0][0];
        routes_to(addr, "s.example", (200, Some("x")), SEC5).await;
        // Both endpoints: both get traffic.
        apply(&server, &service("default", "s", &[x.addr, y.addr]));
        until("both endpoints answer", SEC5, || async {
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..10 {
                seen.insert(backend_of(addr, "s.example", "/").await.1);
            }
            seen.len() == 2
        })
        .await;
        // Only y: x never answers again.
        server.delete_typed::<EndpointSlice>("default", "s-0").unwrap();
        server.delete_typed::<EndpointSlice>("default", "s-1").unwrap();
        apply(&server, &service("default", "s", &[y.addr]));
        let shared = gw.shared.clone();
        let (xs, ys) = (x.addr.to_string(), y.addr.to_string());
        until("only y in the table", SEC5, || {
            let d = shared.last_translation().unwrap().describe();
            let done = d.contains(&ys) && !d.contains(&xs);
            async move { done }
        })
        .await;
        for _ in 0..20 {
            assert_eq!(backend_of(addr, "s.example", "/").await, (200, Some("y".into())));
        }
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn tls_secret_changes_reach_the_certificates() {
    bounded(async {
        let server = FakeApiServer::start().await.unwrap();
        let a = echo("a").await;
        apply(
            &server,
            &(class("portico")
                + &service("default", "a", &[a.addr])
                + r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: a, namespace: default}
spec:
  ingressClassName: portico
  tls: [{hosts: [a.example.test], secretName: a-tls}]
  rules: [{host: a.example.test, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}]}}]
"#),
        );
        let gw = started(&server, TLS_SET, opts("one")).await;
        let served = |gw: &Running| {
            let d = gw.shared.last_compiled().unwrap().describe();
            d.lines().any(|l| l.contains("a.example.test: subject") && l.contains("names [a.example.test]"))
        };
        assert!(!served(&gw), "no Secret yet");
        let ca = TestCa::new();
        let k = key(&rcgen::PKCS_ECDSA_P256_SHA256);
        let cert = ca.issue_pem(&["a.example.test"], &k, unix_now() - DAY, unix_now() + 30 * DAY);
        server
            .upsert(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "a-tls", "namespace": "default"},
                "type": "kubernetes.io/tls",
                "stringData": {"tls.crt": cert, "tls.key": k.serialize_pem()},
            }))
            .unwrap();
        until("certificate served", SEC5, || {
            let s = served(&gw);
            async move { s }
        })
        .await;
        // A Secret of another type is not watched at all.
        server
            .upsert(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "release", "namespace": "default"}, "type": "helm.sh/release.v1", "stringData": {"x": "y"}}))
            .unwrap();
        server.delete_typed::<k8s_openapi::api::core::v1::Secret>("default", "a-tls").unwrap();
        until("certificate gone", SEC5, || {
            let s = served(&gw);
            async move { !s }
        })
        .await;
        gw.shutdown().await;
    })
    .await;
}

/// Basic auth's user Secret is Opaque: watched too, so the Ingress is served once it appears (404 before,
/// 401 without credentials after).
#[tokio::test]
async fn opaque_auth_secrets_are_watched() {
    bounded(async {
        let server = FakeApiServer::start().await.unwrap();
        let a = echo("a").await;
        apply(
            &server,
            &(class("portico")
                + &service("default", "a", &[a.addr])
                + &annotated_ingress(
                    "default",
                    "a",
                    "a.example",
                    "a",
                    &[
                        ("nginx.ingress.kubernetes.io/auth-type", "basic"),
                        ("nginx.ingress.kubernetes.io/auth-secret", "users"),
                    ],
                )),
        );
        let gw = started(&server, ONE_SET, opts("one")).await;
        let addr = gw.http_addrs[0][0];
        assert_eq!(backend_of(addr, "a.example", "/").await, (404, None), "no Secret yet");
        server
            .upsert(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "users", "namespace": "default"},
                "type": "Opaque",
                "stringData": {"auth": "sid:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ="},
            }))
            .unwrap();
        routes_to(addr, "a.example", (401, None), SEC5).await;
        let r = send(
            addr,
            http::Method::GET,
            "a.example",
            "/",
            &[("authorization", "Basic c2lkOnNlY3JldA==")],
            bytes::Bytes::new(),
        )
        .await;
        assert_eq!((r.status, r.backend().as_deref()), (200, Some("a")));
        gw.shutdown().await;
    })
    .await;
}

// === watch failures ===

#[tokio::test]
async fn dropped_watches_and_relists_never_fail_a_request() {
    bounded(async {
        let server = FakeApiServer::start().await.unwrap();
        let (_a, _b, gw, addr) = two_backends_served(&server).await;

        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let bad = Arc::new(Mutex::new(Vec::new()));
        let load = {
            let (stop, ok, bad) = (stop.clone(), ok.clone(), bad.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match backend_of(addr, "a.example", "/").await {
                        (200, Some(b)) if b == "a" => ok.fetch_add(1, Ordering::Relaxed),
                        other => {
                            bad.lock().unwrap().push(other);
                            0
                        }
                    };
                }
            })
        };
        let generation = || gw.shared.snapshot.load().generation;
        // Watches dropped: they resume from their resourceVersion; a change made meanwhile still arrives.
        for i in 0..3 {
            server.drop_watches();
            apply(
                &server,
                &ingress(
                    "default",
                    &format!("d{i}"),
                    "portico",
                    &[(&format!("d{i}.example"), "/", "Prefix", "b")],
                ),
            );
            routes_to(addr, &format!("d{i}.example"), (200, Some("b")), SEC5).await;
        }
        // History compacted and watches dropped: every watcher gets 410 and relists; some lists fail too.
        for i in 0..3 {
            let before = generation();
            server.compact_history();
            server.drop_watches();
            server.fail_next(2, 500);
            tokio::time::sleep(Duration::from_millis(300)).await;
            apply(
                &server,
                &ingress(
                    "default",
                    &format!("r{i}"),
                    "portico",
                    &[(&format!("r{i}.example"), "/", "Prefix", "b")],
                ),
            );
            routes_to(
                addr,
                &format!("r{i}.example"),
                (200, Some("b")),
                Duration::from_secs(15),
            )
            .await;
            assert!(generation() > before);
            // Every published table still has every Ingress.
            let t = gw.shared.last_translation().unwrap().describe();
            assert!(t.contains("a.example/ Prefix"), "{t}");
        }
        stop.store(true, Ordering::Relaxed);
        load.await.unwrap();
        let bad = bad.lock().unwrap().clone();
        assert!(bad.is_empty(), "failed requests during watch failures: {bad:?}");
        assert!(
            ok.load(Ordering::Relaxed) > 50,
            "too few requests: {}",
            ok.load(Ordering::Relaxed)
        );
        // The relists really happened: lists after the first ones.
        let lists = server
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && !r.is_watch() && r.path.ends_with("/ingresses"))
            .count();
        assert!(lists >= 2, "ingresses listed {lists} times");
        gw.shutdown().await;
    })
    .await;
}

/// The API server stops for 20 s and comes back restarted, its history compacted (every watch gets 410, as from
/// an API server whose etcd compacted meanwhile): the last table serves throughout, and a change made while it
/// was away and one made after it returned are served within seconds (kube's default backoff took 25-75 s).
#[tokio::test]
async fn watches_recover_within_seconds_after_an_api_server_outage() {
    bounded(async {
        let mut server = FakeApiServer::start().await.unwrap();
        let api_addr = server.addr();
        let (_a, _b, gw, addr) = two_backends_served(&server).await;
        let kinds = [
            ("networking.k8s.io/v1", "IngressClass"),
            ("networking.k8s.io/v1", "Ingress"),
            ("v1", "Service"),
            ("discovery.k8s.io/v1", "EndpointSlice"),
        ];
        let saved: Vec<serde_json::Value> = kinds.iter().flat_map(|(v, k)| server.list_objects(v, k)).collect();
        let old_version = server.resource_version();

        server.shutdown();
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(backend_of(addr, "a.example", "/").await, (200, Some("a".into())));

        // Back on the same address with the same objects, one more made meanwhile, and no history the watches
        // could resume from.
        let server = FakeApiServer::bind(api_addr, Default::default()).await.unwrap();
        for o in saved {
            server.upsert(o).unwrap();
        }
        apply(
            &server,
            &ingress("default", "during", "portico", &[("during.example", "/", "Prefix", "b")]),
        );
        while server.resource_version() <= old_version {
            server.compact_history();
        }
        server.compact_history();
        let back = tokio::time::Instant::now();
        routes_to(addr, "during.example", (200, Some("b")), Duration::from_secs(20)).await;
        let during = back.elapsed();
        let changed = tokio::time::Instant::now();
        apply(
            &server,
            &ingress("default", "after", "portico", &[("after.example", "/", "Prefix", "b")]),
        );
        routes_to(addr, "after.example", (200, Some("b")), Duration::from_secs(20)).await;
        let after = changed.elapsed();
        eprintln!("after a 20 s outage: the change made meanwhile served {during:?} after the API server returned, the next {after:?} after it was made");
        assert!(during < SEC5, "change made during the outage served {during:?} after the return");
        assert!(after < SEC5, "change made after the return served after {after:?}");
        assert_eq!(backend_of(addr, "a.example", "/").await, (200, Some("a".into())));
        gw.shutdown().await;
    })
    .await;
}

// === status ===

const THREE_SETS: &str = r#"
listenerSets:
  - name: public
    ingressClasses: [portico]
    http: ["127.0.0.1:0"]
    publish: {addresses: ["192.0.2.10", "lb.example.com"]}
  - name: internal
    ingressClasses: [internal]
    http: ["127.0.0.1:0"]
    publish: {addresses: ["10.0.0.5"]}
  - name: vip
    ingressClasses: [vip]
    http: ["127.0.0.1:0"]
    publish: {service: portico-system/portico-vip}
admin: { address: "127.0.0.1:0" }
"#;

fn lb_status(server: &FakeApiServer, name: &str) -> serde_json::Value {
    let ing = server
        .get_object("networking.k8s.io/v1", "Ingress", "default", name)
        .unwrap();
    ing.pointer("/status/loadBalancer/ingress")
        .cloned()
        .unwrap_or(json!(null))
}

fn status_patches(server: &FakeApiServer, name: &str) -> usize {
    let path = format!("/apis/networking.k8s.io/v1/namespaces/default/ingresses/{name}/status");
    server
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path == path)
        .count()
}

fn vip_service(ip: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "portico-vip", "namespace": "portico-system"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
        "status": {"loadBalancer": {"ingress": [{"ip": ip}]}},
    })
}

#[tokio::test]
async fn status_per_listener_set_written_once_and_cleared() {
    bounded(async {
        let server = FakeApiServer::start().await.unwrap();
        let a = echo("a").await;
        let mut m = class("portico") + &class("internal") + &class("vip") + &service("default", "a", &[a.addr]);
        for (name, class) in [
            ("pub", "portico"),
            ("int", "internal"),
            ("v", "vip"),
            ("other", "nginx"),
        ] {
            m += &ingress(
                "default",
                name,
                class,
                &[(&format!("{name}.example"), "/", "Prefix", "a")],
            );
        }
        apply(&server, &m);
        server.upsert(vip_service("203.0.113.7")).unwrap();
        // Someone else's Ingress with someone else's status: never touched.
        let mut other = server
            .get_object("networking.k8s.io/v1", "Ingress", "default", "other")
            .unwrap();
        other["status"] = json!({"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}});
        server.upsert(other).unwrap();

        let gw = started(&server, THREE_SETS, opts("one")).await;
        let want_pub = json!([{"ip": "192.0.2.10"}, {"hostname": "lb.example.com"}]);
        let want_int = json!([{"ip": "10.0.0.5"}]);
        until("status written", SEC5, || {
            let done = lb_status(&server, "pub") == want_pub
                && lb_status(&server, "int") == want_int
                && lb_status(&server, "v") == json!([{"ip": "203.0.113.7"}]);
            async move { done }
        })
        .await;

        // Unrelated changes cause rounds, but a status equal to the wanted one is not written again.
        for i in 0..3 {
            apply(&server, &service("default", &format!("extra{i}"), &[a.addr]));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for name in ["pub", "int", "v"] {
            assert_eq!(
                status_patches(&server, name),
                1,
                "{name}: status written more than once"
            );
        }
        assert_eq!(status_patches(&server, "other"), 0);

        // The VIP moves: the vip set's Ingress follows, the others are not rewritten.
        server.upsert(vip_service("203.0.113.8")).unwrap();
        until("VIP followed", SEC5, || {
            let done = lb_status(&server, "v") == json!([{"ip": "203.0.113.8"}]);
            async move { done }
        })
        .await;
        assert_eq!(status_patches(&server, "v"), 2);
        assert_eq!(status_patches(&server, "pub"), 1);

        // Each address written is a `Normal` `Programmed` Event on its Ingress, naming where it is served.
        let programmed = |name: &str| {
            server
                .list_typed::<k8s_openapi::api::events::v1::Event>()
                .into_iter()
                .filter(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                        && e.reason.as_deref() == Some("Programmed")
                })
                .map(|e| (e.type_.unwrap_or_default(), e.note.unwrap_or_default()))
                .collect::<Vec<_>>()
        };
        until("Programmed events", SEC5, || {
            let done = programmed("v").len() == 2 && programmed("pub").len() == 1;
            async move { done }
        })
        .await;
        assert_eq!(
            programmed("pub"),
            [("Normal".to_string(), "served at 192.0.2.10, lb.example.com".to_string())]
        );
        assert!(programmed("v").iter().any(|(_, n)| n == "served at 203.0.113.8"));
        assert!(programmed("other").is_empty());

        // A class change to one that is not ours clears the status we wrote.
        let mut int = server
            .get_object("networking.k8s.io/v1", "Ingress", "default", "int")
            .unwrap();
        int["spec"]["ingressClassName"] = json!("nginx");
        server.upsert(int).unwrap();
        until("status cleared", SEC5, || {
            let done = lb_status(&server, "int").as_array().is_none_or(|l| l.is_empty());
            async move { done }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(status_patches(&server, "int"), 2);
        assert_eq!(lb_status(&server, "other"), json!([{"ip": "198.51.100.1"}]));
        assert_eq!(status_patches(&server, "other"), 0);
        gw.shutdown().await;
    })
    .await;
}

// === adopted classes ===

const ADOPTING: &str = r#"
listenerSets:
  - name: public
    ingressClasses: [portico]
    adoptClasses: [nginx]
    http: ["127.0.0.1:0"]
    publish: {addresses: ["192.0.2.10"]}
  - name: quiet
    adoptClasses: [legacy]
    http: ["127.0.0.1:0"]
admin: { address: "127.0.0.1:0" }
"#;

/// A status someone else (ingress-nginx, say) wrote on Ingress `name`.
fn foreign_status(server: &FakeApiServer, name: &str, ip: &str) {
    let mut ing = server
        .get_object("networking.k8s.io/v1", "Ingress", "default", name)
        .unwrap();
    ing["status"] = json!({"loadBalancer": {"ingress": [{"ip": ip}]}});
    server.upsert(ing).unwrap();
}

#[tokio::test]
async fn adopted_classes_are_served_whatever_their_controller_and_get_status() {
    bounded(async {
        let server = FakeApiServer::start().await.unwrap();
        let a = echo("a").await;
        let rule = |host: &'static str| [(host, "/", "Prefix", "a")];
        let mut m = service("default", "a", &[a.addr])
            + r#"---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: nginx
  annotations: {ingressclass.kubernetes.io/is-default-class: "true"}
spec: {controller: k8s.io/ingress-nginx}
"#;
        m += &ingress("default", "named", "nginx", &rule("named.example"));
        m += &ingress("default", "annotated", "nginx", &rule("annotated.example")).replace(
            "metadata: {name: annotated, namespace: default}\nspec:\n  ingressClassName: nginx\n",
            "metadata: {name: annotated, namespace: default, annotations: {kubernetes.io/ingress.class: nginx}}\nspec:\n",
        );
        m += &ingress("default", "classless", "none", &rule("classless.example")).replace("  ingressClassName: none\n", "");
        m += &ingress("default", "other", "traefik", &rule("other.example"));
        // Moved to another class while no replica ran: it still carries our address.
        m += &ingress("default", "moved", "traefik", &rule("moved.example"));
        // No IngressClass `legacy` exists: adopted by name all the same, on a set that publishes no status.
        m += &ingress("default", "quiet", "legacy", &rule("quiet.example"));
        apply(&server, &m);
        assert!(m.contains("annotations: {kubernetes.io/ingress.class: nginx}") && !m.contains("ingressClassName: none"));
        foreign_status(&server, "other", "198.51.100.1");
        foreign_status(&server, "quiet", "198.51.100.2");
        foreign_status(&server, "moved", "192.0.2.10");

        let gw = started(&server, ADOPTING, opts("one")).await;
        let (public, quiet) = (gw.http_addrs[0][0], gw.http_addrs[1][0]);
        for host in ["named.example", "annotated.example", "classless.example"] {
            routes_to(public, host, (200, Some("a")), SEC5).await;
            assert_eq!(backend_of(quiet, host, "/").await, (404, None), "{host} on the other set");
        }
        assert_eq!(backend_of(public, "other.example", "/").await, (404, None));
        assert_eq!(backend_of(quiet, "quiet.example", "/").await, (200, Some("a".into())));
        assert_eq!(backend_of(public, "quiet.example", "/").await, (404, None));

        // Status: written for the adopted Ingresses of the publishing set, as for our own classes; a set without
        // `publish` leaves the other controller's status alone, and a class not adopted is never touched.
        let want = json!([{"ip": "192.0.2.10"}]);
        until("status of adopted Ingresses", SEC5, || {
            let done = ["named", "annotated", "classless"]
                .iter()
                .all(|n| lb_status(&server, n) == want);
            async move { done }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(lb_status(&server, "quiet"), json!([{"ip": "198.51.100.2"}]));
        assert_eq!(status_patches(&server, "quiet"), 0);
        assert_eq!(lb_status(&server, "other"), json!([{"ip": "198.51.100.1"}]));
        assert_eq!(status_patches(&server, "other"), 0);
        // Our address left behind on an Ingress that is no longer ours: cleared when leadership is gained.
        until("stale status cleared", SEC5, || {
            let done = lb_status(&server, "moved").as_array().is_none_or(|l| l.is_empty());
            async move { done }
        })
        .await;

        // The IngressClass goes (ingress-nginx uninstalled): Ingresses naming it stay ours, but without a
        // default class the class-less one is not, and the status written on it is cleared.
        server.delete_typed::<IngressClass>("", "nginx").unwrap();
        routes_to(public, "classless.example", (404, None), SEC5).await;
        until("class-less status cleared", SEC5, || {
            let done = lb_status(&server, "classless").as_array().is_none_or(|l| l.is_empty());
            async move { done }
        })
        .await;
        for host in ["named.example", "annotated.example"] {
            assert_eq!(backend_of(public, host, "/").await, (200, Some("a".into())), "{host}");
        }
        assert_eq!(lb_status(&server, "named"), want);
        gw.shutdown().await;
    })
    .await;
}

// === leader election ===

fn leader_config(address: &str) -> String {
    format!(
        r#"
listenerSets:
  - name: default
    ingressClasses: [portico]
    http: ["127.0.0.1:0"]
    publish: {{addresses: ["{address}"]}}
admin: {{ address: "127.0.0.1:0" }}
"#
    )
}

fn elected(identity: &str) -> ClusterOptions {
    ClusterOptions {
        leader_election: Some(LeaseConfig {
            name: "portico-leader".into(),
            namespace: Some("portico-system".into()),
            lease_duration: Duration::from_secs(2),
            renew_interval: Duration::from_millis(300),
        }),
        ..opts(identity)
    }
}

fn holder(server: &FakeApiServer) -> Option<String> {
    server
        .get_typed::<Lease>("portico-system", "portico-leader")
        .and_then(|l| l.spec?.holder_identity)
}

#[tokio::test]
async fn only_the_leader_writes_status_and_another_takes_over() {
    bounded(async {
        let server = FakeApiServer::start().await.unwrap();
        let a = echo("a").await;
        apply(
            &server,
            &(class("portico")
                + &service("default", "a", &[a.addr])
                + &ingress("default", "web", "portico", &[("a.example", "/", "Prefix", "a")])),
        );
        // Each replica publishes a different address, so the status shows who wrote it.
        let g1 = started(&server, &leader_config("192.0.2.1"), elected("g1")).await;
        until("g1 leads", SEC5, || {
            let h = holder(&server);
            async move { h.as_deref() == Some("g1") }
        })
        .await;
        let g2 = started(&server, &leader_config("192.0.2.2"), elected("g2")).await;
        until("g1 wrote status", SEC5, || {
            let s = lb_status(&server, "web");
            async move { s == json!([{"ip": "192.0.2.1"}]) }
        })
        .await;
        // Both serve traffic.
        assert_eq!(
            backend_of(g2.http_addrs[0][0], "a.example", "/").await,
            (200, Some("a".into()))
        );
        assert_eq!(
            backend_of(g1.http_addrs[0][0], "a.example", "/").await,
            (200, Some("a".into()))
        );
        // While g1 leads (several renewals, several rounds), g2 never writes.
        for i in 0..4 {
            apply(&server, &service("default", &format!("x{i}"), &[a.addr]));
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert_eq!(holder(&server).as_deref(), Some("g1"));
        let by_g2 = server
            .requests()
            .iter()
            .filter(|r| r.method == "PATCH" && r.body.contains("192.0.2.2"))
            .count();
        assert_eq!(by_g2, 0, "the follower wrote status");
        assert_eq!(lb_status(&server, "web"), json!([{"ip": "192.0.2.1"}]));

        // g1 stops: g2 takes over within the lease duration and rewrites the status with its address.
        let stopped = tokio::time::Instant::now();
        g1.shutdown().await;
        until("g2 took over", Duration::from_secs(3), || {
            let ok =
                holder(&server).as_deref() == Some("g2") && lb_status(&server, "web") == json!([{"ip": "192.0.2.2"}]);
            async move { ok }
        })
        .await;
        assert!(stopped.elapsed() < Duration::from_secs(3));
        g2.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn expired_lease_of_a_vanished_holder_is_taken_over() {
    bounded(async {
        let server = FakeApiServer::start().await.unwrap();
        apply(&server, &class("portico"));
        // A holder that never renews (crashed without releasing).
        server
            .upsert(json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "portico-leader", "namespace": "portico-system"},
                "spec": {"holderIdentity": "ghost", "leaseDurationSeconds": 2, "renewTime": "2020-01-01T00:00:00.000000Z"},
            }))
            .unwrap();
        let started_at = tokio::time::Instant::now();
        let g = started(&server, &leader_config("192.0.2.3"), elected("g")).await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(holder(&server).as_deref(), Some("ghost"), "taken before the lease duration passed");
        until("taken over", Duration::from_secs(5), || {
            let h = holder(&server);
            async move { h.as_deref() == Some("g") }
        })
        .await;
        assert!(started_at.elapsed() >= Duration::from_secs(2));
        g.shutdown().await;
        assert_eq!(holder(&server), None, "released at shutdown");
    })
    .await;
}

// === Events ===

#[tokio::test]
async fn invalid_ingress_gets_one_event() {
    bounded(async {
        let server = FakeApiServer::start().await.unwrap();
        let a = echo("a").await;
        apply(
            &server,
            &(class("portico")
                + &service("default", "a", &[a.addr])
                + &ingress("default", "good", "portico", &[("a.example", "/", "Prefix", "a")])
                + &ingress(
                    "default",
                    "bad",
                    "portico",
                    &[("b.example", "/api/[0-9]+", "ImplementationSpecific", "a")],
                )),
        );
        let gw = started(&server, ONE_SET, opts("one")).await;
        let t = gw.shared.last_translation().unwrap();
        assert!(
            t.diagnostics
                .iter()
                .any(|d| d.to_string().contains("Ingress default/bad")),
            "{}",
            t.describe()
        );
        let events_about = |name: &str| {
            server
                .list_typed::<k8s_openapi::api::events::v1::Event>()
                .into_iter()
                .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
                .collect::<Vec<_>>()
        };
        until("event sent", SEC5, || {
            let n = events_about("bad").len();
            async move { n > 0 }
        })
        .await;
        let ev = &events_about("bad")[0];
        assert_eq!(ev.type_.as_deref(), Some("Warning"));
        assert_eq!(ev.reason.as_deref(), Some("InvalidRule"));
        let regarding = ev.regarding.as_ref().unwrap();
        assert_eq!(regarding.kind.as_deref(), Some("Ingress"));
        assert_eq!(regarding.namespace.as_deref(), Some("default"));
        let uid = server.get_typed::<Ingress>("default", "bad").unwrap().metadata.uid;
        assert_eq!(regarding.uid, uid);
        assert!(
            ev.note.as_deref().unwrap_or("").contains("spec.rules[0]"),
            "{:?}",
            ev.note
        );
        // More rounds: the same diagnostic is not sent again; the good Ingress gets nothing.
        for i in 0..3 {
            apply(&server, &service("default", &format!("x{i}"), &[a.addr]));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(events_about("bad").len(), 1);
        assert!(events_about("good").is_empty());
        gw.shutdown().await;

        // Another replica (or this one restarted) reports the same problem: the same Event, not a new one.
        let gw = started(&server, ONE_SET, opts("two")).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let evs = events_about("bad");
        assert_eq!(evs.len(), 1, "{evs:?}");
        assert!(evs[0].series.is_none(), "within the dedupe window: not even counted");
        gw.shutdown().await;
        // Past the dedupe window: counted in the Event's series.
        let gw = started(
            &server,
            ONE_SET,
            ClusterOptions {
                event_dedupe: Duration::ZERO,
                ..opts("three")
            },
        )
        .await;
        until("series counted", SEC5, || {
            let evs = events_about("bad");
            let counted = evs.len() == 1 && evs[0].series.as_ref().is_some_and(|s| s.count >= 2);
            async move { counted }
        })
        .await;
        gw.shutdown().await;
    })
    .await;
}

// === file mode and cluster mode agree ===

#[tokio::test]
async fn file_mode_and_cluster_mode_agree() {
    bounded(async {
        let (a, b) = (echo("a").await, echo("b").await);
        let config = r#"
listenerSets:
  - name: default
    ingressClasses: [portico, other]
    http: ["127.0.0.1:0"]
  - name: internal
    ingressClasses: [internal]
    http: ["127.0.0.1:0"]
admin: { address: "127.0.0.1:0" }
"#;
        let mut objects = String::from(
            "---\napiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: portico\n  annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}\nspec: {controller: portico.dev/ingress-controller}\n",
        );
        objects += &class("other");
        objects += &class("internal");
        objects += &service("default", "a", &[a.addr]);
        objects += &service("default", "b", &[b.addr]);
        objects += &service("team", "a", &[b.addr]);
        objects += &ingress("default", "web", "portico", &[("a.example", "/", "Prefix", "a"), ("a.example", "/b", "Prefix", "b")]);
        objects += &ingress("default", "other", "other", &[("o.example", "/", "Exact", "b")]);
        objects += &ingress("team", "int", "internal", &[("i.example", "/", "Prefix", "a")]);
        objects += &ingress("team", "bad", "internal", &[("x.example", "/x/[a-z]+", "ImplementationSpecific", "a")]);
        objects += &ingress("team", "missing", "portico", &[("m.example", "/", "Prefix", "nope")]);
        objects += "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: classless, namespace: default}\nspec:\n  rules: [{host: c.example, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: b, port: {number: 80}}}}]}}]\n";
        objects += &ingress("default", "foreign", "nginx", &[("f.example", "/", "Prefix", "a")]);

        let file = Gateway::start_with(config, &objects).await;
        let server = FakeApiServer::start().await.unwrap();
        apply(&server, &objects);
        let cluster = started(&server, config, opts("one")).await;

        let describe_file = file.running().shared.last_translation().unwrap().describe();
        let describe_cluster = cluster.shared.last_translation().unwrap().describe();
        assert_eq!(describe_file, describe_cluster);
        assert!(describe_cluster.contains("c.example/"), "{describe_cluster}");
        assert!(describe_cluster.contains("diagnostic:"), "{describe_cluster}");
        for (set, host, path) in [
            (0, "a.example", "/"),
            (0, "a.example", "/b/x"),
            (0, "o.example", "/"),
            (0, "o.example", "/x"),
            (0, "c.example", "/"),
            (0, "m.example", "/"),
            (0, "f.example", "/"),
            (1, "i.example", "/"),
            (1, "x.example", "/"),
            (1, "a.example", "/"),
        ] {
            let f = backend_of(file.addr(set), host, path).await;
            let c = backend_of(cluster.http_addrs[set][0], host, path).await;
            assert_eq!(f, c, "set {set} {host}{path}");
        }
        cluster.shutdown().await;
        file.stop().await;
    })
    .await;
}

// === the binary ===

#[tokio::test]
async fn binary_runs_in_cluster_mode_with_a_kubeconfig() {
    bounded(async {
        let server = FakeApiServer::start().await.unwrap();
        let a = echo("a").await;
        apply(
            &server,
            &(class("portico")
                + &service("default", "a", &[a.addr])
                + &ingress("default", "web", "portico", &[("a.example", "/", "Prefix", "a")])),
        );
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        server.write_kubeconfig(&kubeconfig).unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, leader_config("192.0.2.9")).unwrap();
        let _child = Child(
            std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
                .arg("run")
                .arg("--config")
                .arg(&config)
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["--namespace", "default", "--leader-elect"])
                .args(["--lease-namespace", "portico-system", "--identity", "cli-test"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        // The binary found the API through the kubeconfig, took the Lease under its identity and wrote status.
        until("the binary leads and wrote status", Duration::from_secs(15), || {
            let ok = holder(&server).as_deref() == Some("cli-test")
                && lb_status(&server, "web") == json!([{"ip": "192.0.2.9"}]);
            async move { ok }
        })
        .await;
        // --namespace limited the watches to that namespace.
        let ns_watch = server
            .requests()
            .iter()
            .any(|r| r.path == "/apis/networking.k8s.io/v1/namespaces/default/ingresses");
        assert!(ns_watch, "ingresses not watched in namespace default");
        assert!(!server
            .requests()
            .iter()
            .any(|r| r.path == "/apis/networking.k8s.io/v1/ingresses"));
    })
    .await;
}

#[tokio::test]
async fn a_replica_that_loses_the_lease_stops_writing_at_once() {
    bounded(async {
        let server = FakeApiServer::start().await.unwrap();
        let a = echo("a").await;
        apply(
            &server,
            &(class("portico")
                + &service("default", "a", &[a.addr])
                + &ingress("default", "web", "portico", &[("a.example", "/", "Prefix", "a")])),
        );
        let mut options = elected("g");
        if let Some(l) = options.leader_election.as_mut() {
            l.lease_duration = Duration::from_secs(4);
        }
        let g = started(&server, &leader_config("192.0.2.4"), options).await;
        until("g leads and wrote status", SEC5, || {
            let ok =
                holder(&server).as_deref() == Some("g") && lb_status(&server, "web") == json!([{"ip": "192.0.2.4"}]);
            async move { ok }
        })
        .await;
        // Another replica takes the Lease (as after a partition): g must step down at its next renewal.
        let mut lease = server
            .get_object("coordination.k8s.io/v1", "Lease", "portico-system", "portico-leader")
            .unwrap();
        lease["spec"]["holderIdentity"] = json!("intruder");
        server.upsert(lease).unwrap();
        tokio::time::sleep(Duration::from_millis(800)).await;
        server.clear_requests();
        let mut web = server
            .get_object("networking.k8s.io/v1", "Ingress", "default", "web")
            .unwrap();
        web["status"] = json!({"loadBalancer": {"ingress": [{"ip": "198.51.100.99"}]}});
        server.upsert(web).unwrap();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let patches = server.requests().iter().filter(|r| r.method == "PATCH").count();
        assert_eq!(patches, 0, "a replica without the Lease wrote status");
        assert_eq!(holder(&server).as_deref(), Some("intruder"));
        // The intruder never renews: g takes the Lease back after it expires and repairs the status.
        until("g leads again", Duration::from_secs(8), || {
            let ok =
                holder(&server).as_deref() == Some("g") && lb_status(&server, "web") == json!([{"ip": "192.0.2.4"}]);
            async move { ok }
        })
        .await;
        g.shutdown().await;
    })
    .await;
}
