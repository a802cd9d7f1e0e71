//! `kube::runtime::watcher` and reflector stores against the fake API server: events, resumption after
//! dropped watches, 410 Expired and relist after history compaction.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{list_calls, wait_until, watch_calls};
use futures::StreamExt;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::ResourceExt;
use portico_fake_apiserver::FakeApiServer;
use serde_json::json;

fn ingress_json(name: &str, host: &str) -> serde_json::Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"rules": [{"host": host}]}
    })
}

/// name -> resourceVersion
type Snapshot = BTreeMap<String, String>;

fn store_snapshot(store: &Store<Ingress>) -> Snapshot {
    store
        .state()
        .iter()
        .map(|i| (i.name_any(), i.resource_version().unwrap_or_default()))
        .collect()
}

fn server_snapshot(server: &FakeApiServer) -> Snapshot {
    server
        .list_typed::<Ingress>()
        .iter()
        .map(|i| (i.name_any(), i.resource_version().unwrap_or_default()))
        .collect()
}

/// Everything a watcher task observed.
#[derive(Default)]
struct Seen {
    applied: Vec<String>,
    deleted: Vec<String>,
    errors: Vec<String>,
    codes: Vec<u16>,
}

/// Run a reflector over `api` in a background task; returns the store and what the stream yielded.
fn start_reflector(api: Api<Ingress>) -> (Store<Ingress>, Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>) {
    let (reader, writer) = reflector::store();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let seen2 = seen.clone();
    let task = tokio::spawn(async move {
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()));
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            let mut s = seen2.lock().unwrap();
            match ev {
                Ok(watcher::Event::Apply(i)) => s.applied.push(i.name_any()),
                Ok(watcher::Event::Delete(i)) => s.deleted.push(i.name_any()),
                Ok(_) => {}
                Err(e) => {
                    if let watcher::Error::WatchError(st) = &e {
                        s.codes.push(st.code);
                    }
                    s.errors.push(e.to_string());
                }
            }
        }
    });
    (reader, seen, task)
}

#[tokio::test]
async fn watcher_sees_added_modified_deleted() {
    let server = FakeApiServer::start().await.unwrap();
    server.upsert(ingress_json("a", "a.example.com")).unwrap();
    server.upsert(ingress_json("b", "b.example.com")).unwrap();
    let api: Api<Ingress> = Api::namespaced(server.client(), "default");
    let (store, seen, task) = start_reflector(api.clone());
    tokio::time::timeout(Duration::from_secs(5), store.wait_until_ready())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.state().len(), 2);
    assert!(server.wait_for_watches(1, Duration::from_secs(5)).await);

    // ADDED through the API
    let i: Ingress = serde_json::from_value(ingress_json("c", "c.example.com")).unwrap();
    api.create(&PostParams::default(), &i).await.unwrap();
    // MODIFIED through the test control
    server.upsert(ingress_json("a", "a2.example.com")).unwrap();
    // DELETED through the API
    api.delete("b", &DeleteParams::default()).await.unwrap();

    wait_until("store converges", 5, || {
        store_snapshot(&store) == server_snapshot(&server)
    })
    .await;
    let a = store.state().into_iter().find(|i| i.name_any() == "a").unwrap();
    assert_eq!(
        a.spec.as_ref().unwrap().rules.as_ref().unwrap()[0].host.as_deref(),
        Some("a2.example.com")
    );
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.applied, vec!["c", "a"]);
        assert_eq!(s.deleted, vec!["b"]);
        assert!(s.errors.is_empty(), "{:?}", s.errors);
    }
    task.abort();
}

#[tokio::test]
async fn watcher_resumes_after_dropped_watches_without_losing_events() {
    let server = FakeApiServer::start().await.unwrap();
    server.upsert(ingress_json("a", "a.example.com")).unwrap();
    server.upsert(ingress_json("b", "b.example.com")).unwrap();
    let api: Api<Ingress> = Api::namespaced(server.client(), "default");
    let (store, seen, task) = start_reflector(api);
    tokio::time::timeout(Duration::from_secs(5), store.wait_until_ready())
        .await
        .unwrap()
        .unwrap();
    assert!(server.wait_for_watches(1, Duration::from_secs(5)).await);

    for round in 0..3 {
        assert_eq!(server.drop_watches(), 1, "round {round}");
        // These run before the watcher task can reconnect (single-threaded test runtime, no await), so
        // the watcher only sees them if the resumed watch replays history.
        server
            .upsert(ingress_json(&format!("new{round}"), "n.example.com"))
            .unwrap();
        server
            .upsert(ingress_json("a", &format!("a{round}.example.com")))
            .unwrap();
        if round == 0 {
            server.delete_typed::<Ingress>("default", "b").unwrap();
        }
        wait_until("store converges", 5, || {
            store_snapshot(&store) == server_snapshot(&server)
        })
        .await;
        assert!(server.wait_for_watches(1, Duration::from_secs(5)).await);
    }

    let reqs = server.requests();
    assert_eq!(list_calls(&reqs, "ingresses"), 1, "resumption must not relist");
    let watches = watch_calls(&reqs, "ingresses");
    assert_eq!(watches.len(), 4);
    for w in &watches {
        let rv = w.query_param("resourceVersion").unwrap_or_default();
        assert!(
            rv.parse::<u64>().unwrap_or(0) > 0,
            "watch resumed from a real resourceVersion: {rv:?}"
        );
        assert_eq!(w.query_param("allowWatchBookmarks").as_deref(), Some("true"));
    }
    {
        let s = seen.lock().unwrap();
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        assert_eq!(s.deleted, vec!["b"]);
    }
    task.abort();
}

#[tokio::test]
async fn watcher_relists_after_410_expired() {
    let server = FakeApiServer::start().await.unwrap();
    for n in ["a", "b", "c"] {
        server.upsert(ingress_json(n, "x.example.com")).unwrap();
    }
    let api: Api<Ingress> = Api::namespaced(server.client(), "default");
    let (store, seen, task) = start_reflector(api);
    tokio::time::timeout(Duration::from_secs(5), store.wait_until_ready())
        .await
        .unwrap()
        .unwrap();
    assert!(server.wait_for_watches(1, Duration::from_secs(5)).await);

    // Forget history, then cut the stream: the watcher's resourceVersion is now too old.
    server.compact_history();
    server.drop_watches();
    // Changes while the watcher is away, including a deletion it can only learn of by relisting.
    server.delete_typed::<Ingress>("default", "b").unwrap();
    server.upsert(ingress_json("a", "a2.example.com")).unwrap();
    server.upsert(ingress_json("d", "d.example.com")).unwrap();

    wait_until("store converges after relist", 10, || {
        store_snapshot(&store) == server_snapshot(&server)
    })
    .await;
    assert_eq!(
        store_snapshot(&store).keys().cloned().collect::<Vec<_>>(),
        vec!["a", "c", "d"]
    );
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.codes, vec![410], "errors: {:?}", s.errors);
    }
    let reqs = server.requests();
    assert_eq!(list_calls(&reqs, "ingresses"), 2, "a 410 must cause exactly one relist");

    // And it keeps watching after the relist.
    assert!(server.wait_for_watches(1, Duration::from_secs(5)).await);
    server.upsert(ingress_json("e", "e.example.com")).unwrap();
    wait_until("store sees post-relist change", 5, || {
        store_snapshot(&store) == server_snapshot(&server)
    })
    .await;
    task.abort();
}
