//! An unmodified `kube::Client` against the fake API server: typed CRUD, patches, conflicts, status
//! subresource, selectors, leases, events, failure injection.

mod common;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event as EventsV1Event;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::ResourceExt;
use portico_fake_apiserver::FakeApiServer;
use serde_json::json;

fn ingress(name: &str, host: &str) -> Ingress {
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {
            "ingressClassName": "portico",
            "rules": [{"host": host, "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "web", "port": {"number": 80}}}
            }]}}]
        }
    }))
    .expect("valid ingress")
}

fn api_code(e: &kube::Error) -> Option<(u16, String)> {
    match e {
        kube::Error::Api(s) => Some((s.code, s.reason.clone())),
        _ => None,
    }
}

#[tokio::test]
async fn ingress_crud_round_trip() {
    let server = FakeApiServer::start().await.unwrap();
    let api: Api<Ingress> = Api::namespaced(server.client(), "default");
    let pp = PostParams::default();

    // create
    let created = api.create(&pp, &ingress("web", "a.example.com")).await.unwrap();
    assert_eq!(created.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.as_deref().is_some_and(|u| u.len() == 36));
    assert!(created.metadata.creation_timestamp.is_some());
    let rv1: u64 = created.resource_version().unwrap().parse().unwrap();

    // create again -> 409 AlreadyExists
    let err = api.create(&pp, &ingress("web", "a.example.com")).await.unwrap_err();
    assert_eq!(api_code(&err), Some((409, "AlreadyExists".into())), "{err:?}");

    // get + list
    let got = api.get("web").await.unwrap();
    assert_eq!(got.metadata.uid, created.metadata.uid);
    api.create(&pp, &ingress("other", "b.example.com")).await.unwrap();
    let list = api.list(&ListParams::default()).await.unwrap();
    let names: Vec<String> = list.items.iter().map(|i| i.name_any()).collect();
    assert_eq!(names, vec!["other", "web"]);
    let list_rv: u64 = list.metadata.resource_version.unwrap().parse().unwrap();
    assert!(list_rv > rv1);

    // replace with a spec change -> generation 2, new resourceVersion
    let mut changed = got.clone();
    changed.spec.as_mut().unwrap().rules.as_mut().unwrap()[0].host = Some("c.example.com".into());
    let replaced = api.replace("web", &pp, &changed).await.unwrap();
    assert_eq!(replaced.metadata.generation, Some(2));
    assert!(replaced.resource_version().unwrap().parse::<u64>().unwrap() > rv1);

    // replace with the stale copy -> 409 Conflict
    let err = api.replace("web", &pp, &changed).await.unwrap_err();
    assert_eq!(api_code(&err), Some((409, "Conflict".into())), "{err:?}");

    // merge patch: labels only, generation unchanged
    let patched = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tier": "edge"}}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.labels().get("tier").map(String::as_str), Some("edge"));
    assert_eq!(patched.labels().get("app").map(String::as_str), Some("web"));
    assert_eq!(patched.metadata.generation, Some(2));

    // JSON patch
    let jp: json_patch::Patch = serde_json::from_value(json!([
        {"op": "add", "path": "/metadata/annotations", "value": {"a": "1"}},
        {"op": "replace", "path": "/spec/rules/0/host", "value": "d.example.com"}
    ]))
    .unwrap();
    let patched = api
        .patch("web", &PatchParams::default(), &Patch::Json::<()>(jp))
        .await
        .unwrap();
    assert_eq!(patched.annotations().get("a").map(String::as_str), Some("1"));
    assert_eq!(
        patched.spec.unwrap().rules.unwrap()[0].host.as_deref(),
        Some("d.example.com")
    );
    assert_eq!(patched.metadata.generation, Some(3));

    // failing JSON patch test op -> 422
    let jp: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/metadata/name", "value": "nope"}])).unwrap();
    let err = api
        .patch("web", &PatchParams::default(), &Patch::Json::<()>(jp))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err).map(|c| c.0), Some(422));

    // merge patch carrying a stale resourceVersion -> 409
    let err = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": rv1.to_string(), "labels": {"x": "y"}}})),
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), Some((409, "Conflict".into())));

    // server-side apply is not supported -> 415
    let err = api
        .patch("web", &PatchParams::apply("test"), &Patch::Apply(ingress("web", "x")))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), Some((415, "UnsupportedMediaType".into())));

    // delete -> Status, then 404
    let deleted = api.delete("web", &DeleteParams::default()).await.unwrap();
    let status = deleted.right().expect("a Status for a deleted ingress");
    assert_eq!(status.details.unwrap().name, "web");
    let err = api.get("web").await.unwrap_err();
    assert_eq!(api_code(&err), Some((404, "NotFound".into())));
    let err = api.delete("web", &DeleteParams::default()).await.unwrap_err();
    assert_eq!(api_code(&err).map(|c| c.0), Some(404));
    assert!(api.get_opt("web").await.unwrap().is_none());
    assert_eq!(server.list_typed::<Ingress>().len(), 1);
}

#[tokio::test]
async fn other_resource_round_trips() {
    let server = FakeApiServer::start().await.unwrap();
    let client = server.client();
    let pp = PostParams::default();

    // Service: status is a subresource, so a create drops .status
    let svcs: Api<Service> = Api::namespaced(client.clone(), "apps");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"ports": [{"port": 80, "targetPort": 8080}], "selector": {"app": "web"}},
        "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}
    }))
    .unwrap();
    let created = svcs.create(&pp, &svc).await.unwrap();
    assert!(created.status.is_none());
    assert_eq!(svcs.get("web").await.unwrap().spec.unwrap().ports.unwrap()[0].port, 80);
    // all-namespaces list
    let all: Api<Service> = Api::all(client.clone());
    assert_eq!(all.list(&ListParams::default()).await.unwrap().items.len(), 1);
    let default_ns: Api<Service> = Api::namespaced(client.clone(), "default");
    assert!(default_ns.list(&ListParams::default()).await.unwrap().items.is_empty());

    // EndpointSlice
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "apps");
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    }))
    .unwrap();
    slices.create(&pp, &slice).await.unwrap();
    let listed = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].endpoints[0].addresses, vec!["10.0.0.1".to_string()]);
    let mut s = listed.items[0].clone();
    s.endpoints[0].addresses = vec!["10.0.0.2".into()];
    slices.replace("web-abc", &pp, &s).await.unwrap();
    assert_eq!(
        server.get_typed::<EndpointSlice>("apps", "web-abc").unwrap().endpoints[0].addresses,
        vec!["10.0.0.2".to_string()]
    );

    // IngressClass: cluster-scoped
    let classes: Api<IngressClass> = Api::all(client.clone());
    let class: IngressClass = serde_json::from_value(json!({
        "metadata": {"name": "portico", "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": "example.com/portico"}
    }))
    .unwrap();
    let created = classes.create(&pp, &class).await.unwrap();
    assert!(created.metadata.namespace.is_none());
    assert_eq!(classes.list(&ListParams::default()).await.unwrap().items.len(), 1);
    assert_eq!(
        classes
            .get("portico")
            .await
            .unwrap()
            .spec
            .unwrap()
            .controller
            .as_deref(),
        Some("example.com/portico")
    );
    classes.delete("portico", &DeleteParams::default()).await.unwrap();
    assert!(classes.list(&ListParams::default()).await.unwrap().items.is_empty());
}

#[tokio::test]
async fn secret_label_and_field_selectors() {
    let server = FakeApiServer::start().await.unwrap();
    let client = server.client();
    for (ns, name, type_, labels) in [
        ("default", "tls1", "kubernetes.io/tls", json!({"app": "web"})),
        ("default", "tls2", "kubernetes.io/tls", json!({"app": "api"})),
        ("default", "opaque", "Opaque", json!({"app": "web", "tier": "db"})),
        ("other", "tls3", "kubernetes.io/tls", json!({"app": "web"})),
    ] {
        server
            .upsert(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": ns, "labels": labels},
                "type": type_, "data": {"k": "dg=="}
            }))
            .unwrap();
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let all: Api<Secret> = Api::all(client.clone());
    let names = |l: kube::core::ObjectList<Secret>| l.items.iter().map(|s| s.name_any()).collect::<Vec<_>>();
    let lp = |l: &str, f: &str| {
        let mut p = ListParams::default();
        if !l.is_empty() {
            p = p.labels(l);
        }
        if !f.is_empty() {
            p = p.fields(f);
        }
        p
    };

    assert_eq!(
        names(secrets.list(&lp("", "type=kubernetes.io/tls")).await.unwrap()),
        ["tls1", "tls2"]
    );
    assert_eq!(
        names(all.list(&lp("", "type=kubernetes.io/tls")).await.unwrap()),
        ["tls1", "tls2", "tls3"]
    );
    assert_eq!(
        names(secrets.list(&lp("", "type!=kubernetes.io/tls")).await.unwrap()),
        ["opaque"]
    );
    assert_eq!(
        names(all.list(&lp("", "metadata.namespace=other")).await.unwrap()),
        ["tls3"]
    );
    assert_eq!(
        names(secrets.list(&lp("", "metadata.name=tls2")).await.unwrap()),
        ["tls2"]
    );
    assert_eq!(
        names(secrets.list(&lp("app=web", "")).await.unwrap()),
        ["opaque", "tls1"]
    );
    assert_eq!(
        names(secrets.list(&lp("app==web", "type=kubernetes.io/tls")).await.unwrap()),
        ["tls1"]
    );
    assert_eq!(names(secrets.list(&lp("app!=web", "")).await.unwrap()), ["tls2"]);
    assert_eq!(
        names(secrets.list(&lp("app in (web,api),!tier", "")).await.unwrap()),
        ["tls1", "tls2"]
    );
    assert_eq!(names(secrets.list(&lp("app notin (web)", "")).await.unwrap()), ["tls2"]);
    assert_eq!(names(secrets.list(&lp("tier", "")).await.unwrap()), ["opaque"]);
    assert!(names(secrets.list(&lp("app=nope", "")).await.unwrap()).is_empty());

    let err = secrets.list(&lp("app in (web", "")).await.unwrap_err();
    assert_eq!(api_code(&err).map(|c| c.0), Some(400));

    // A watch with a field selector: a secret that starts matching is ADDED, one that stops is DELETED.
    let rv = secrets
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = secrets
        .watch(
            &WatchParams::default()
                .fields("type=kubernetes.io/tls")
                .disable_bookmarks(),
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    server
        .upsert(
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "opaque", "namespace": "default"},
                        "type": "kubernetes.io/tls"}),
        )
        .unwrap();
    server
        .upsert(
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tls1", "namespace": "default"},
                        "type": "Opaque"}),
        )
        .unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(ev, Some(WatchEvent::Added(ref s)) if s.name_any() == "opaque"),
        "{ev:?}"
    );
    let ev = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .unwrap()
        .unwrap();
    match ev {
        Some(WatchEvent::Deleted(s)) => {
            assert_eq!(s.name_any(), "tls1");
            // previous content, the change's resourceVersion
            assert_eq!(s.type_.as_deref(), Some("kubernetes.io/tls"));
            assert_eq!(s.resource_version().unwrap(), server.resource_version().to_string());
        }
        other => panic!("expected DELETED, got {other:?}"),
    }
}

async fn next_event(
    stream: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<Ingress>>> + Unpin),
    wait: Duration,
) -> Option<WatchEvent<Ingress>> {
    loop {
        match tokio::time::timeout(wait, stream.next()).await {
            Err(_) => return None,
            Ok(None) => panic!("watch stream ended"),
            Ok(Some(Err(e))) => panic!("watch error {e:?}"),
            Ok(Some(Ok(WatchEvent::Bookmark(_)))) => continue,
            Ok(Some(Ok(ev))) => return Some(ev),
        }
    }
}

#[tokio::test]
async fn ingress_status_subresource() {
    let server = FakeApiServer::start().await.unwrap();
    let api: Api<Ingress> = Api::namespaced(server.client(), "default");
    let created = api
        .create(&PostParams::default(), &ingress("web", "a.example.com"))
        .await
        .unwrap();
    let rv0 = created.resource_version().unwrap();
    let mut events = api.watch(&WatchParams::default(), &rv0).await.unwrap().boxed();
    server.clear_requests();

    let lb = json!({"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}});
    let patched = api
        .patch_status("web", &PatchParams::default(), &Patch::Merge(&lb))
        .await
        .unwrap();
    assert_eq!(
        patched.metadata.generation,
        Some(1),
        "status writes do not bump generation"
    );
    assert_eq!(patched.spec, created.spec);
    let ip = |i: &Ingress| {
        i.status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|v| v.iter().filter_map(|x| x.ip.clone()).collect::<Vec<_>>())
    };
    assert_eq!(ip(&patched), Some(vec!["10.0.0.1".to_string()]));
    let rv1 = patched.resource_version().unwrap();
    assert_ne!(rv1, rv0);

    match next_event(&mut events, Duration::from_secs(5)).await {
        Some(WatchEvent::Modified(i)) => {
            assert_eq!(ip(&i), Some(vec!["10.0.0.1".to_string()]));
            assert_eq!(i.resource_version().as_deref(), Some(rv1.as_str()));
        }
        other => panic!("expected MODIFIED, got {other:?}"),
    }

    // The same patch again is a no-op: same resourceVersion, no event.
    let again = api
        .patch_status("web", &PatchParams::default(), &Patch::Merge(&lb))
        .await
        .unwrap();
    assert_eq!(again.resource_version().unwrap(), rv1);
    assert!(
        next_event(&mut events, Duration::from_millis(600)).await.is_none(),
        "no-op patch emitted an event"
    );

    // A status patch cannot touch spec or labels.
    let sneaky = json!({"metadata": {"labels": {"x": "y"}}, "spec": {"ingressClassName": "other"},
                        "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.2"}]}}});
    let p = api
        .patch_status("web", &PatchParams::default(), &Patch::Merge(&sneaky))
        .await
        .unwrap();
    assert_eq!(p.spec.as_ref().unwrap().ingress_class_name.as_deref(), Some("portico"));
    assert!(!p.labels().contains_key("x"));
    assert_eq!(ip(&p), Some(vec!["10.0.0.2".to_string()]));
    assert!(matches!(
        next_event(&mut events, Duration::from_secs(5)).await,
        Some(WatchEvent::Modified(_))
    ));

    // Writes to the main resource ignore .status, and bump generation only for spec changes.
    let main = json!({"spec": {"ingressClassName": "other"}, "status": {"loadBalancer": {}}});
    let p = api
        .patch("web", &PatchParams::default(), &Patch::Merge(&main))
        .await
        .unwrap();
    assert_eq!(p.metadata.generation, Some(2));
    assert_eq!(ip(&p), Some(vec!["10.0.0.2".to_string()]));
    assert!(matches!(
        next_event(&mut events, Duration::from_secs(5)).await,
        Some(WatchEvent::Modified(_))
    ));

    // replace_status with a full object
    let mut cur = api.get_status("web").await.unwrap();
    cur.status.as_mut().unwrap().load_balancer.as_mut().unwrap().ingress = None;
    let r = api.replace_status("web", &PostParams::default(), &cur).await.unwrap();
    assert_eq!(ip(&r), None);
    assert_eq!(r.metadata.generation, Some(2));

    // The request log shows exactly which status writes were sent.
    let status_writes: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path == "/apis/networking.k8s.io/v1/namespaces/default/ingresses/web/status")
        .collect();
    assert_eq!(status_writes.len(), 5, "{status_writes:#?}");
    assert_eq!(status_writes[0].method, "PATCH");
    assert_eq!(
        status_writes[0].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(status_writes[0].body_json(), lb);
    assert_eq!(status_writes[3].method, "GET");
    assert_eq!(status_writes[4].method, "PUT");
}

#[tokio::test]
async fn lease_leader_election_conflicts() {
    let server = FakeApiServer::start().await.unwrap();
    let leases: Api<Lease> = Api::namespaced(server.client(), "portico-system");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "portico-leader"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "leaseTransitions": 0}
    }))
    .unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    let err = leases.create(&PostParams::default(), &lease).await.unwrap_err();
    assert_eq!(api_code(&err), Some((409, "AlreadyExists".into())));

    // Two candidates read the same version; the first write wins, the second gets 409 Conflict.
    let mut seen_by_a = leases.get("portico-leader").await.unwrap();
    let mut seen_by_b = leases.get("portico-leader").await.unwrap();
    seen_by_a.spec.as_mut().unwrap().lease_duration_seconds = Some(20);
    let renewed = leases
        .replace("portico-leader", &PostParams::default(), &seen_by_a)
        .await
        .unwrap();
    seen_by_b.spec.as_mut().unwrap().holder_identity = Some("b".into());
    seen_by_b.spec.as_mut().unwrap().lease_transitions = Some(1);
    let err = leases
        .replace("portico-leader", &PostParams::default(), &seen_by_b)
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), Some((409, "Conflict".into())));
    let now = leases.get("portico-leader").await.unwrap();
    assert_eq!(now.spec.as_ref().unwrap().holder_identity.as_deref(), Some("a"));
    assert_eq!(now.resource_version(), renewed.resource_version());

    // b retries on the fresh copy and takes over.
    let mut fresh = now.clone();
    fresh.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let taken = leases
        .replace("portico-leader", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert_eq!(taken.spec.unwrap().holder_identity.as_deref(), Some("b"));
}

#[tokio::test]
async fn events_are_accepted_and_listable() {
    let server = FakeApiServer::start().await.unwrap();
    let client = server.client();

    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let ev: CoreEvent = serde_json::from_value(json!({
        "metadata": {"generateName": "web."},
        "involvedObject": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "web", "namespace": "default"},
        "reason": "Sync", "message": "synced", "type": "Normal",
        "source": {"component": "portico"}
    }))
    .unwrap();
    let created = core.create(&PostParams::default(), &ev).await.unwrap();
    assert!(created.name_any().starts_with("web."));
    assert_eq!(created.name_any().len(), "web.".len() + 5);
    let listed = core.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].reason.as_deref(), Some("Sync"));

    // kube's event Recorder (events.k8s.io/v1): first publish creates, the repeat patches the series.
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "portico".into(),
            instance: None,
        },
    );
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("networking.k8s.io/v1".into()),
        kind: Some("Ingress".into()),
        name: Some("web".into()),
        namespace: Some("default".into()),
        uid: Some("1234".into()),
        ..Default::default()
    };
    let e = Event {
        type_: EventType::Warning,
        reason: "BadBackend".into(),
        note: Some("service web not found".into()),
        action: "Route".into(),
        secondary: None,
    };
    recorder.publish(&e, &reference).await.unwrap();
    recorder.publish(&e, &reference).await.unwrap();
    let v1: Api<EventsV1Event> = Api::namespaced(client.clone(), "default");
    let items = v1.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].reason.as_deref(), Some("BadBackend"));
    assert_eq!(items[0].series.as_ref().map(|s| s.count), Some(2));
    // core v1 events are stored separately from events.k8s.io/v1 events
    assert_eq!(core.list(&ListParams::default()).await.unwrap().items.len(), 1);
}

#[tokio::test]
async fn fail_next_n_then_recover() {
    let server = FakeApiServer::start().await.unwrap();
    let api: Api<Ingress> = Api::namespaced(server.client(), "default");
    api.create(&PostParams::default(), &ingress("web", "a.example.com"))
        .await
        .unwrap();

    server.fail_next(2, 500);
    for _ in 0..2 {
        let err = api.get("web").await.unwrap_err();
        assert_eq!(api_code(&err), Some((500, "InternalError".into())), "{err:?}");
    }
    api.get("web").await.unwrap();

    server.fail_next(1, 409);
    let err = api.list(&ListParams::default()).await.unwrap_err();
    assert_eq!(api_code(&err).map(|c| c.0), Some(409));
    assert_eq!(api.list(&ListParams::default()).await.unwrap().items.len(), 1);

    // kube::Client retries 429 by itself: the call succeeds after the injected failures.
    server.clear_requests();
    server.fail_next(2, 429);
    api.get("web").await.unwrap();
    let reqs = server.requests();
    let outcomes: Vec<Option<u16>> = reqs.iter().map(|r| r.injected_failure).collect();
    assert_eq!(outcomes, vec![Some(429), Some(429), None]);
}

#[tokio::test]
async fn kubeconfig_file_works_with_kube() {
    let server = FakeApiServer::start().await.unwrap();
    let path = std::env::temp_dir().join(format!("fake-apiserver-kubeconfig-{}.yaml", std::process::id()));
    server.write_kubeconfig(&path).unwrap();
    let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let info = client.apiserver_version().await.unwrap();
    assert_eq!(info.major, "1");
    let api: Api<Ingress> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &ingress("web", "a.example.com"))
        .await
        .unwrap();
    assert!(server.get_typed::<Ingress>("default", "web").is_some());
}

#[tokio::test]
async fn server_side_apply_approximation_when_enabled() {
    let opts = portico_fake_apiserver::Options {
        apply_as_merge: true,
        ..Default::default()
    };
    let server = FakeApiServer::start_with(opts).await.unwrap();
    let api: Api<Ingress> = Api::namespaced(server.client(), "default");
    let pp = PatchParams::apply("portico").force();

    // apply creates
    let created = api
        .patch("web", &pp, &Patch::Apply(ingress("web", "a.example.com")))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    // apply again unchanged: no-op
    let same = api
        .patch("web", &pp, &Patch::Apply(ingress("web", "a.example.com")))
        .await
        .unwrap();
    assert_eq!(same.resource_version(), created.resource_version());
    // apply a change
    let changed = api
        .patch("web", &pp, &Patch::Apply(ingress("web", "b.example.com")))
        .await
        .unwrap();
    assert_eq!(changed.metadata.generation, Some(2));
    // status apply
    let st = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web"},
                    "status": {"loadBalancer": {"ingress": [{"hostname": "lb.example.com"}]}}});
    let s = api.patch_status("web", &pp, &Patch::Apply(&st)).await.unwrap();
    assert_eq!(s.metadata.generation, Some(2));
    let lb = s.status.unwrap().load_balancer.unwrap().ingress.unwrap();
    assert_eq!(lb[0].hostname.as_deref(), Some("lb.example.com"));
    // status apply on a missing object is 404
    let err = api.patch_status("nope", &pp, &Patch::Apply(&st)).await.unwrap_err();
    assert_eq!(api_code(&err).map(|c| c.0), Some(404));
}

#[tokio::test]
async fn secrets_store_string_data_as_data_and_keep_their_type() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let server = FakeApiServer::start().await.unwrap();
    let client = server.client();
    let pp = PostParams::default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "shop");
    let s: Secret = serde_json::from_value(json!({
        "metadata": {"name": "web-tls"},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": "CERT", "tls.key": "KEY"}
    }))
    .unwrap();
    let created = secrets.create(&pp, &s).await.unwrap();
    // As the real API server: stringData is merged into data and never returned.
    assert!(created.string_data.is_none());
    let data = created.data.clone().unwrap();
    assert_eq!(data["tls.crt"].0, b"CERT");
    assert_eq!(data["tls.key"].0, b"KEY");
    let raw = server.get_object("v1", "Secret", "shop", "web-tls").unwrap();
    assert_eq!(raw["data"]["tls.crt"], "Q0VSVA==");
    assert!(raw.get("stringData").is_none());
    // stringData on update overrides the same key in data.
    let mut next = created.clone();
    next.string_data = Some([("tls.key".to_string(), "KEY2".to_string())].into());
    let updated = secrets.replace("web-tls", &pp, &next).await.unwrap();
    assert_eq!(updated.data.unwrap()["tls.key"].0, b"KEY2");
    // The type is immutable (422), and a Secret without one is Opaque.
    let mut retyped = secrets.get("web-tls").await.unwrap();
    retyped.type_ = Some("Opaque".into());
    let err = secrets.replace("web-tls", &pp, &retyped).await.unwrap_err();
    assert_eq!(api_code(&err).map(|c| c.0), Some(422), "{err}");
    let plain: Secret = serde_json::from_value(json!({"metadata": {"name": "plain"}, "data": {}})).unwrap();
    assert_eq!(
        secrets.create(&pp, &plain).await.unwrap().type_.as_deref(),
        Some("Opaque")
    );
    // A JSON merge patch adds and removes ConfigMap keys (null removes).
    let cms: Api<ConfigMap> = Api::namespaced(client, "portico");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "tokens"}, "data": {"a": "1"}})).unwrap();
    cms.create(&pp, &cm).await.unwrap();
    let add = json!({"data": {"b": "2"}});
    cms.patch("tokens", &PatchParams::default(), &Patch::Merge(&add))
        .await
        .unwrap();
    let remove = json!({"data": {"a": null}});
    let after = cms
        .patch("tokens", &PatchParams::default(), &Patch::Merge(&remove))
        .await
        .unwrap();
    assert_eq!(after.data.unwrap(), [("b".to_string(), "2".to_string())].into());
}
