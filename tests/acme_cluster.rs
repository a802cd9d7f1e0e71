//! ACME in cluster mode: gateways in-process fed by the fake API server (an unmodified `kube::Client`),
//! certificates from a real Pebble (Debian package `pebble`), everything on 127.0.0.1.
//!
//! - The Kubernetes store on its own: Secrets created or updated only when Portico may, the account Secret,
//!   the challenge ConfigMap and its watch.
//! - Two replicas with leader election, Pebble validating against the **follower's** plain port: the leader
//!   orders, the follower answers from the shared tokens, both serve the issued Secret; the follower takes over
//!   when the leader stops; a restart reuses the Secret.
//! - An invalid challenge writes nothing and leaves the existing Secret untouched.

mod acme_pebble;
mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use acme_pebble::{served_serial, wait_served, Pebble};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use portico::acme::challenge::ChallengeStore;
use portico::acme::kube::{KubeStore, ACCOUNT_SECRET, CHALLENGE_CONFIGMAP};
use portico::acme::store::MANAGED_ANNOTATION;
use portico::acme::{CertStore, Settings, StoreError, StoredCert};
use portico::app::{Extras, Running, Source};
use portico::certs::testing::{key, TestCa, DAY};
use portico::certs::{unix_now, LoadedCert};
use portico::config::Config;
use portico::model::ObjectRef;
use portico::source::kube::{ClusterOptions, LeaseConfig};
use portico_fake_apiserver::FakeApiServer;
use serde::Deserialize;
use support::{echo, free_port, service};

const HOST: &str = "shop.acme.test";
/// Portico's own namespace (the Lease's): the account Secret and the challenge ConfigMap.
const OWN_NS: &str = "portico-system";

// === harness ===

/// Polls `f` until it is true; panics naming `what` (and `context()`) after `within`.
async fn until<F, Fut>(what: &str, within: Duration, context: impl Fn() -> String, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + within;
    loop {
        if f().await {
            return;
        }
        assert!(Instant::now() < end, "timed out waiting for: {what}\n{}", context());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn apply(server: &FakeApiServer, yaml: &str) {
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let v = serde_yaml::Value::deserialize(doc).unwrap();
        if !v.is_null() {
            server.upsert(serde_json::to_value(v).unwrap()).unwrap();
        }
    }
}

const CLASS: &str = "---\napiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: portico}\nspec: {controller: portico.dev/ingress-controller}\n";

fn ingress() -> String {
    format!(
        r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: shop, namespace: default}}
spec:
  ingressClassName: portico
  tls:
  - hosts: ["{HOST}"]
    secretName: shop-tls
  rules:
  - host: "{HOST}"
    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: shop, port: {{number: 80}}}}}}}}]}}
"#
    )
}

fn config(http: &str, pebble: &Pebble) -> Config {
    Config::from_yaml(&format!(
        r#"
listenerSets:
  - name: default
    ingressClasses: [portico]
    http: ["{http}"]
    https: ["127.0.0.1:0"]
    acme:
      directory: "{}"
      email: ops@example.test
      caRoot: "{}"
admin: {{ address: "127.0.0.1:0" }}
"#,
        pebble.directory(),
        pebble.ca_root().display()
    ))
    .unwrap()
}

fn settings() -> Settings {
    Settings {
        check_interval: Duration::from_millis(200),
        backoff_min: Duration::from_millis(400),
        backoff_max: Duration::from_secs(3),
        poll_delay: Duration::from_millis(100),
        poll_timeout: Duration::from_secs(15),
        challenge_propagation: Duration::from_millis(300),
        ..Settings::default()
    }
}

fn options(identity: &str, elect: bool) -> ClusterOptions {
    ClusterOptions {
        identity: identity.into(),
        retry: Duration::from_millis(200),
        leader_election: elect.then(|| LeaseConfig {
            name: "portico-leader".into(),
            namespace: Some(OWN_NS.into()),
            lease_duration: Duration::from_secs(2),
            renew_interval: Duration::from_millis(300),
        }),
        ..Default::default()
    }
}

/// A replica in cluster mode, waited for until its first table is published.
async fn replica(server: &FakeApiServer, config: Config, options: ClusterOptions, settings: Settings) -> Running {
    let running = portico::app::start_with(
        config,
        Source::Kube {
            client: server.client(),
            options,
        },
        Extras {
            acme: settings,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let shared = running.shared.clone();
    until("first publish", Duration::from_secs(10), String::new, || {
        let ready = shared.is_ready();
        async move { ready }
    })
    .await;
    running
}

fn status(r: &Running) -> portico::acme::Status {
    r.acme.as_ref().expect("acme manager running").status()
}

fn holder(server: &FakeApiServer) -> Option<String> {
    server
        .get_typed::<Lease>(OWN_NS, "portico-leader")
        .and_then(|l| l.spec?.holder_identity)
}

fn secret(server: &FakeApiServer) -> Option<Secret> {
    server.get_typed::<Secret>("default", "shop-tls")
}

fn challenge_tokens(server: &FakeApiServer, ns: &str) -> usize {
    server
        .get_typed::<ConfigMap>(ns, CHALLENGE_CONFIGMAP)
        .and_then(|c| c.data)
        .map_or(0, |d| d.len())
}

async fn metrics(admin: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(admin).await.unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).await.unwrap();
    out
}

fn secret_ref(ns: &str, name: &str) -> ObjectRef {
    ObjectRef {
        kind: "Secret",
        namespace: ns.into(),
        name: name.into(),
    }
}

/// A certificate for `hosts` from a throw-away CA, valid from `from` to `until` (unix seconds).
fn test_cert(ca: &TestCa, hosts: &[&str], from: i64, until: i64) -> StoredCert {
    let k = key(&rcgen::PKCS_ECDSA_P256_SHA256);
    StoredCert {
        cert_pem: ca.issue_pem(hosts, &k, from, until),
        key_pem: k.serialize_pem(),
    }
}

fn serial_of(c: &StoredCert) -> String {
    LoadedCert::from_pem(c.cert_pem.as_bytes(), c.key_pem.as_bytes(), String::new())
        .unwrap()
        .info
        .serial
        .clone()
}

fn tls_secret_yaml(name: &str, cert: &StoredCert, annotations: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default, annotations: {{{annotations}}}}}\ntype: kubernetes.io/tls\nstringData: {{tls.crt: {:?}, tls.key: {:?}}}\n",
        cert.cert_pem, cert.key_pem
    )
}

// === the Kubernetes store alone ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_store_writes_only_where_portico_may() {
    let server = FakeApiServer::start().await.unwrap();
    let client = server.client();
    let challenges = ChallengeStore::new();
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(portico::acme::kube::watch_challenges(
        client.clone(),
        OWN_NS.into(),
        challenges.clone(),
        stop,
    ));
    let store = KubeStore::new(client, OWN_NS.into(), challenges.clone(), Duration::ZERO);
    let ca = TestCa::new();
    let now = unix_now();
    let fresh = test_cert(&ca, &["a.test"], now - DAY, now + 60 * DAY);

    // Missing: created as a managed kubernetes.io/tls Secret, readable back.
    let missing = secret_ref("shop", "new-tls");
    assert_eq!(store.load(&missing).await.unwrap(), None);
    store.store(&missing, &fresh).await.unwrap();
    let s = server.get_typed::<Secret>("shop", "new-tls").unwrap();
    assert_eq!(s.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(s.metadata.annotations.unwrap()[MANAGED_ANNOTATION], "true");
    assert_eq!(store.load(&missing).await.unwrap(), Some(fresh.clone()));
    // Managed: updated in place (labels someone added stay).
    let mut labelled = server.get_typed::<Secret>("shop", "new-tls").unwrap();
    labelled.metadata.labels = Some([("team".to_string(), "shop".to_string())].into());
    server.upsert_typed(&labelled).unwrap();
    let renewed = test_cert(&ca, &["a.test"], now - 60, now + 90 * DAY);
    store.store(&missing, &renewed).await.unwrap();
    let s = server.get_typed::<Secret>("shop", "new-tls").unwrap();
    assert_eq!(s.metadata.labels.unwrap()["team"], "shop");
    assert_eq!(store.load(&missing).await.unwrap(), Some(renewed.clone()));

    // Someone else's Secret, valid for the host: refused, untouched.
    let theirs = test_cert(&ca, &["a.test"], now - DAY, now + 10 * DAY);
    apply(
        &server,
        &tls_secret_yaml("theirs", &theirs, "").replace("namespace: default", "namespace: shop"),
    );
    let before = server.get_object("v1", "Secret", "shop", "theirs").unwrap();
    let err = store.store(&secret_ref("shop", "theirs"), &fresh).await.unwrap_err();
    assert!(matches!(err, StoreError::Refused { .. }), "{err}");
    assert_eq!(server.get_object("v1", "Secret", "shop", "theirs").unwrap(), before);
    // Someone else's Secret that is expired: taken over, and marked.
    let expired = test_cert(&ca, &["a.test"], now - 30 * DAY, now - DAY);
    apply(
        &server,
        &tls_secret_yaml("stale", &expired, "").replace("namespace: default", "namespace: shop"),
    );
    store.store(&secret_ref("shop", "stale"), &fresh).await.unwrap();
    let s = server.get_typed::<Secret>("shop", "stale").unwrap();
    assert_eq!(s.metadata.annotations.unwrap()[MANAGED_ANNOTATION], "true");
    // A Secret of another type is never rewritten.
    apply(
        &server,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: opaque, namespace: shop}\ntype: Opaque\ndata: {}\n",
    );
    let err = store.store(&secret_ref("shop", "opaque"), &fresh).await.unwrap_err();
    assert!(err.to_string().contains("type Opaque"), "{err}");

    // Accounts: one Secret in Portico's namespace, one key per directory.
    assert_eq!(store.load_account("https://ca.test/dir").await.unwrap(), None);
    store.store_account("https://ca.test/dir", "{\"id\":1}").await.unwrap();
    store
        .store_account("https://other.test/dir", "{\"id\":2}")
        .await
        .unwrap();
    assert_eq!(
        store.load_account("https://ca.test/dir").await.unwrap().as_deref(),
        Some("{\"id\":1}")
    );
    let account = server.get_typed::<Secret>(OWN_NS, ACCOUNT_SECRET).unwrap();
    assert_eq!(account.data.unwrap().len(), 2);

    // Challenges: published through the ConfigMap, back through the watch, withdrawn.
    let tokens = vec![("tok-1".to_string(), "tok-1.thumb".to_string())];
    store.publish_challenges(&tokens).await.unwrap();
    assert_eq!(challenge_tokens(&server, OWN_NS), 1);
    assert_eq!(
        challenges.answer("/.well-known/acme-challenge/tok-1").as_deref(),
        Some("tok-1.thumb")
    );
    store.withdraw_challenges(&["tok-1".to_string()]).await.unwrap();
    assert_eq!(challenge_tokens(&server, OWN_NS), 0);
    until(
        "the watch withdraws the token",
        Duration::from_secs(5),
        String::new,
        || {
            let gone = challenges.is_empty();
            async move { gone }
        },
    )
    .await;
}

// === two replicas against one API server and a real Pebble ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_orders_follower_answers_both_serve_and_restart_reuses() {
    let server = FakeApiServer::start().await.unwrap();
    let backend = echo("shop").await;
    apply(
        &server,
        &(CLASS.to_string() + &service("default", "shop", &[backend.addr])),
    );
    // Pebble validates HTTP-01 against the follower's plain port only.
    let follower_http = free_port();
    let pebble = Pebble::start(follower_http, "127.0.0.1", &[]).await;
    let root = pebble.issuing_root().await;

    let leader = replica(&server, config("127.0.0.1:0", &pebble), options("a", true), settings()).await;
    until("a holds the Lease", Duration::from_secs(10), String::new, || {
        let h = holder(&server);
        async move { h.as_deref() == Some("a") }
    })
    .await;
    let follower = replica(
        &server,
        config(&format!("127.0.0.1:{follower_http}"), &pebble),
        options("b", true),
        settings(),
    )
    .await;
    assert_ne!(leader.http_addrs[0][0].port(), follower_http);
    until("roles settled", Duration::from_secs(10), String::new, || {
        let (a, b) = (status(&leader).leading, status(&follower).leading);
        async move { a && !b }
    })
    .await;

    // The Ingress arrives with spec.tls and no Secret.
    let started = Instant::now();
    apply(&server, &ingress());
    let ctx = || {
        format!(
            "leader {:?}\nfollower {:?}\n{}",
            status(&leader),
            status(&follower),
            pebble.logs()
        )
    };
    until("a managed Secret through the API", Duration::from_secs(60), ctx, || {
        let s = secret(&server);
        async move { s.is_some() }
    })
    .await;
    let stored = secret(&server).unwrap();
    let issued_in = started.elapsed();
    let serial_a = wait_served(leader.https_addrs[0][0], HOST, &root, Duration::from_secs(10)).await;
    let serial_b = wait_served(follower.https_addrs[0][0], HOST, &root, Duration::from_secs(10)).await;
    let served_in = started.elapsed();
    eprintln!("issued (Secret written) after {issued_in:?}; served by both replicas after {served_in:?}");

    // The Secret: type, marker, the served certificate.
    assert_eq!(stored.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(
        stored.metadata.annotations.as_ref().unwrap()[MANAGED_ANNOTATION],
        "true"
    );
    let loaded = LoadedCert::from_tls_secret(&stored).unwrap();
    assert!(loaded.covers(HOST));
    assert!(loaded.chain().len() >= 2, "chain with the intermediate");
    assert_eq!(loaded.info.serial, serial_a);
    assert_eq!(serial_a, serial_b);
    // The account Secret, in Portico's namespace.
    let account = server
        .get_typed::<Secret>(OWN_NS, ACCOUNT_SECRET)
        .expect("account Secret");
    assert_eq!(account.data.unwrap().len(), 1);
    // Only the leader ordered; the follower answered (Pebble reached nothing else) and never ordered.
    let (a, b) = (status(&leader), status(&follower));
    assert_eq!(a.certificates_issued, 1, "{a:?}");
    assert!(a.orders_started >= 1, "{a:?}");
    assert_eq!((b.orders_started, b.certificates_issued, b.passes), (0, 0, 0), "{b:?}");
    let m = metrics(follower.admin_addr).await;
    assert!(m.contains("\nportico_acme_orders_started_total 0\n"), "{m}");
    let m = metrics(leader.admin_addr).await;
    assert!(m.contains("\nportico_acme_certificates_issued_total 1\n"), "{m}");
    // The issue is a `Normal` Event on the Secret, naming the hosts and the serial.
    until("CertificateIssued event", Duration::from_secs(5), String::new, || {
        let found = server
            .list_typed::<k8s_openapi::api::events::v1::Event>()
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("CertificateIssued"))
            .any(|e| {
                let note = e.note.unwrap_or_default();
                e.type_.as_deref() == Some("Normal")
                    && e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Secret")
                    && note.contains(HOST)
                    && note.contains(&serial_a)
            });
        async move { found }
    })
    .await;
    // The tokens were withdrawn from the ConfigMap and from both replicas.
    assert_eq!(challenge_tokens(&server, OWN_NS), 0);
    until(
        "tokens withdrawn everywhere",
        Duration::from_secs(5),
        String::new,
        || {
            let empty = leader.challenges.is_empty() && follower.challenges.is_empty();
            async move { empty }
        },
    )
    .await;

    // The leader stops (releasing the Lease): the follower takes over ordering, finds the Secret valid and
    // orders nothing.
    leader.shutdown().await;
    until(
        "b leads and examined the Secret",
        Duration::from_secs(10),
        || format!("{:?}", status(&follower)),
        || {
            let s = status(&follower);
            async move { s.leading && s.passes >= 3 }
        },
    )
    .await;
    assert_eq!(holder(&server).as_deref(), Some("b"));
    let b = status(&follower);
    assert_eq!(b.orders_started, 0, "{b:?}");

    // Restart: a fresh single replica (no election: it orders) reuses the stored Secret.
    follower.shutdown().await;
    let rv = stored.metadata.resource_version.clone();
    let again = replica(&server, config("127.0.0.1:0", &pebble), options("c", false), settings()).await;
    assert_eq!(
        served_serial(again.https_addrs[0][0], HOST, &root).await.unwrap(),
        serial_a
    );
    // The manager examined the Secret several times (it leads) and found nothing to do.
    until(
        "three passes",
        Duration::from_secs(10),
        || format!("{:?}", status(&again)),
        || {
            let s = status(&again);
            async move { s.leading && s.passes >= 3 }
        },
    )
    .await;
    let s = status(&again);
    assert_eq!(s.orders_started, 0, "{s:?}");
    assert_eq!(secret(&server).unwrap().metadata.resource_version, rv);
    again.shutdown().await;
}

// === an invalid challenge ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_challenge_writes_nothing_and_keeps_the_secret() {
    let server = FakeApiServer::start().await.unwrap();
    let backend = echo("shop").await;
    // A managed Secret two thirds through its lifetime: due for renewal.
    let ca = TestCa::new();
    let now = unix_now();
    let old = test_cert(&ca, &[HOST], now - 20 * DAY, now + 5 * DAY);
    apply(
        &server,
        &(CLASS.to_string()
            + &service("default", "shop", &[backend.addr])
            + &ingress()
            + &tls_secret_yaml("shop-tls", &old, &format!("{MANAGED_ANNOTATION}: \"true\""))),
    );
    let before = server.get_object("v1", "Secret", "default", "shop-tls").unwrap();
    // Every name resolves to 127.0.0.2, where nothing listens.
    let http = free_port();
    let pebble = Pebble::start(http, "127.0.0.2", &[]).await;
    // Without --leader-elect the sole replica orders.
    let gw = replica(
        &server,
        config(&format!("127.0.0.1:{http}"), &pebble),
        options("solo", false),
        settings(),
    )
    .await;
    let ctx = || format!("{:?}\n{}", status(&gw), pebble.logs());
    until("the invalid order reported", Duration::from_secs(30), ctx, || {
        let s = status(&gw);
        async move { !s.invalid.is_empty() }
    })
    .await;
    let s = status(&gw);
    let d = s.diagnostics();
    assert!(
        d.iter()
            .any(|d| d.reason.contains("urn:ietf:params:acme:error:connection")),
        "{d:?}"
    );
    assert_eq!(s.certificates_issued, 0, "{s:?}");
    // ... and as an Event on the Ingress, with the CA's problem.
    until(
        "an Event about the invalid order",
        Duration::from_secs(10),
        String::new,
        || {
            let found = server
                .list_typed::<k8s_openapi::api::events::v1::Event>()
                .into_iter()
                .any(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("shop")
                        && e.note.as_deref().is_some_and(|n| {
                            n.contains("ACME order") && n.contains("urn:ietf:params:acme:error:connection")
                        })
                });
            async move { found }
        },
    )
    .await;
    // The tokens were published, then withdrawn. Without a Lease, Portico's namespace is the client's
    // default one (the pod's, in a cluster; `default` here).
    assert!(server.get_typed::<ConfigMap>("default", CHALLENGE_CONFIGMAP).is_some());
    until("tokens withdrawn", Duration::from_secs(5), String::new, || {
        let n = challenge_tokens(&server, "default");
        async move { n == 0 }
    })
    .await;
    // Nothing written: the Secret is byte for byte what it was, and still served.
    assert_eq!(
        server.get_object("v1", "Secret", "default", "shop-tls").unwrap(),
        before
    );
    let writes = server
        .requests()
        .into_iter()
        .filter(|r| {
            r.method != "GET"
                && (r.path.ends_with("/secrets/shop-tls")
                    || (r.path.ends_with("/namespaces/default/secrets") && r.body.contains("shop-tls")))
        })
        .count();
    assert_eq!(writes, 0, "writes to default/shop-tls");
    assert_eq!(
        served_serial(gw.https_addrs[0][0], HOST, &ca.der).await.unwrap(),
        serial_of(&old)
    );
    gw.shutdown().await;
}
