//! Gateway API status in cluster mode, end to end: the gateway in-process fed by the fake API server, the
//! leader writing GatewayClass, Gateway and HTTPRoute status through the status subresource, and not writing
//! again while nothing changed.

mod support;

use std::time::Duration;

use portico_fake_apiserver::FakeApiServer;
use serde_json::json;
use support::kube::{
    apply, bounded, condition, gateway_status as status, our_parent, pair, route_condition, start_ready, until,
    GATEWAY_ONLY, GATEWAY_V1 as GROUP_V1,
};

const SEC10: Duration = Duration::from_secs(10);

async fn start(server: &FakeApiServer) -> portico::app::Running {
    start_ready(server, GATEWAY_ONLY).await
}

fn objects(port: u16) -> String {
    let route = |ns: &str, name: &str, backend: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  parentRefs: [{{name: gw, namespace: infra}}]\n  hostnames: [{name}.example.com]\n  rules:\n  - backendRefs: [{backend}]\n"
        )
    };
    let service = |ns: &str, name: &str| {
        format!("---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{ports: [{{port: 80}}]}}\n")
    };
    let namespace = |name: &str, labels: &str| {
        format!("---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {{{labels}}}}}\n")
    };
    [
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: portico}\nspec: {controllerName: portico.dev/gateway-controller}\n".to_string(),
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: theirs}\nspec: {controllerName: example.com/other}\n".to_string(),
        namespace("infra", ""),
        namespace("team", "gateway: shared"),
        namespace("other", ""),
        namespace("backends", ""),
        namespace("hidden", ""),
        format!("---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: infra}}\nspec:\n  gatewayClassName: portico\n  addresses: [{{value: 127.0.0.1}}]\n  listeners:\n  - name: http\n    port: {port}\n    protocol: HTTP\n    hostname: '*.example.com'\n    allowedRoutes: {{namespaces: {{from: Selector, selector: {{matchLabels: {{gateway: shared}}}}}}}}\n  - {{name: udp, port: {port}, protocol: UDP}}\n"),
        service("team", "web"),
        service("backends", "api"),
        service("hidden", "api"),
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: ReferenceGrant\nmetadata: {name: team-routes, namespace: backends}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: team}]\n  to: [{group: '', kind: Service}]\n".to_string(),
        route("team", "ok", "{name: web, port: 80}"),
        route("other", "denied", "{name: web, namespace: team, port: 80}"),
        route("team", "bad-backend", "{name: missing, port: 80}"),
        route("team", "granted", "{name: api, namespace: backends, port: 80}"),
        route("team", "not-granted", "{name: api, namespace: hidden, port: 80}"),
    ]
    .concat()
}

fn status_patches(server: &FakeApiServer) -> Vec<String> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path.contains("gateway.networking.k8s.io"))
        .map(|r| r.path)
        .collect()
}

/// Waits until no status has been written for 700 ms (the first writes and their watch events are done), then
/// forgets the requests seen so far.
async fn quiet(server: &FakeApiServer) {
    let end = tokio::time::Instant::now() + SEC10;
    loop {
        server.clear_requests();
        tokio::time::sleep(Duration::from_millis(700)).await;
        if status_patches(server).is_empty() {
            server.clear_requests();
            return;
        }
        assert!(tokio::time::Instant::now() < end, "status keeps being written");
    }
}

#[tokio::test]
async fn status_of_each_object() {
    bounded(async {
        let server = FakeApiServer::start().await.unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        apply(&server, &objects(port));
        // Another controller's entry on a route is kept.
        let mut ok = server.get_object(GROUP_V1, "HTTPRoute", "team", "ok").unwrap();
        let foreign = json!({"parentRef": {"name": "other-gw"}, "controllerName": "example.com/other", "conditions": []});
        ok["status"] = json!({"parents": [foreign.clone()]});
        server.upsert(ok).unwrap();

        let gw = start(&server).await;
        until("status of every object", SEC10, || {
            let routes = [("team", "ok"), ("other", "denied"), ("team", "bad-backend"), ("team", "granted"), ("team", "not-granted")];
            routes.iter().all(|(ns, name)| route_condition(&server, ns, name, "ResolvedRefs") != pair("", ""))
                && condition(&status(&server, "GatewayClass", "", "portico")["conditions"], "Accepted") != pair("", "")
                && status(&server, "Gateway", "infra", "gw")["listeners"].is_array()
        })
        .await;

        // GatewayClass: ours accepted, theirs untouched.
        let class = status(&server, "GatewayClass", "", "portico");
        assert_eq!(condition(&class["conditions"], "Accepted"), pair("True", "Accepted"));
        assert_eq!(condition(&class["conditions"], "SupportedVersion"), pair("True", "SupportedVersion"));
        assert_eq!(class["conditions"][0]["observedGeneration"], 1);
        assert!(status(&server, "GatewayClass", "", "theirs").is_null());

        // Gateway: accepted with one listener not valid (UDP), addresses, listeners.
        let g = status(&server, "Gateway", "infra", "gw");
        assert_eq!(condition(&g["conditions"], "Accepted"), pair("True", "ListenersNotValid"));
        assert_eq!(condition(&g["conditions"], "Programmed"), pair("True", "Programmed"));
        assert_eq!(g["addresses"], json!([{"type": "IPAddress", "value": "127.0.0.1"}]));
        let http = &g["listeners"][0];
        assert_eq!(http["name"], "http");
        assert_eq!(http["attachedRoutes"], 4, "ok, bad-backend, granted, not-granted: {http}");
        assert_eq!(
            http["supportedKinds"],
            json!([{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}, {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"}])
        );
        for (t, want) in [
            ("Accepted", pair("True", "Accepted")),
            ("Conflicted", pair("False", "NoConflicts")),
            ("ResolvedRefs", pair("True", "ResolvedRefs")),
            ("Programmed", pair("True", "Programmed")),
        ] {
            assert_eq!(condition(&http["conditions"], t), want, "{t}");
        }
        let udp = &g["listeners"][1];
        assert_eq!(condition(&udp["conditions"], "Accepted"), pair("False", "UnsupportedProtocol"));
        assert_eq!(udp["supportedKinds"], json!([]));

        // Routes.
        let cases = [
            ("team", "ok", pair("True", "Accepted"), pair("True", "ResolvedRefs")),
            // Refused by the listener's namespace selector; its cross-namespace backend has no grant either.
            ("other", "denied", pair("False", "NotAllowedByListeners"), pair("False", "RefNotPermitted")),
            ("team", "bad-backend", pair("True", "Accepted"), pair("False", "BackendNotFound")),
            ("team", "granted", pair("True", "Accepted"), pair("True", "ResolvedRefs")),
            ("team", "not-granted", pair("True", "Accepted"), pair("False", "RefNotPermitted")),
        ];
        for (ns, name, accepted, resolved) in &cases {
            assert_eq!(&route_condition(&server, ns, name, "Accepted"), accepted, "{ns}/{name}");
            assert_eq!(&route_condition(&server, ns, name, "ResolvedRefs"), resolved, "{ns}/{name}");
        }
        let ours = our_parent(&server, "team", "ok");
        assert_eq!(
            ours["parentRef"],
            json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "infra", "name": "gw"})
        );
        assert_eq!(ours["conditions"][0]["observedGeneration"], 1);
        let parents = status(&server, "HTTPRoute", "team", "ok")["parents"].clone();
        assert_eq!(parents.as_array().unwrap().len(), 2);
        assert_eq!(parents[0], foreign, "another controller's entry is kept");

        // Unchanged: an unrelated change recompiles, and nothing is written again.
        let accepted_since = our_parent(&server, "team", "not-granted")["conditions"][0]["lastTransitionTime"].clone();
        quiet(&server).await;
        apply(&server, "---\napiVersion: v1\nkind: Service\nmetadata: {name: unrelated, namespace: team}\nspec: {ports: [{port: 81}]}\n");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(status_patches(&server), Vec::<String>::new(), "status rewritten while unchanged");

        // A grant for the hidden namespace: only that route's status changes; Accepted keeps its time.
        tokio::time::sleep(Duration::from_millis(1000)).await; // transition times have a one-second resolution
        quiet(&server).await;
        apply(&server, "---\napiVersion: gateway.networking.k8s.io/v1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: hidden}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: team}]\n  to: [{group: '', kind: Service, name: api}]\n");
        until("not-granted resolves", SEC10, || {
            route_condition(&server, "team", "not-granted", "ResolvedRefs") == pair("True", "ResolvedRefs")
        })
        .await;
        let after = our_parent(&server, "team", "not-granted");
        assert_eq!(after["conditions"][0]["lastTransitionTime"], accepted_since);
        assert_ne!(after["conditions"][1]["lastTransitionTime"], accepted_since, "ResolvedRefs flipped");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut patches = status_patches(&server);
        patches.dedup(); // a write retried after a conflict
        assert_eq!(
            patches,
            ["/apis/gateway.networking.k8s.io/v1/namespaces/team/httproutes/not-granted/status"],
            "only the changed route"
        );

        // The route leaves our Gateway: our entry is removed.
        let mut denied = server.get_object(GROUP_V1, "HTTPRoute", "other", "denied").unwrap();
        denied["spec"]["parentRefs"] = json!([{"name": "somewhere-else"}]);
        server.upsert(denied).unwrap();
        until("our entry removed", SEC10, || our_parent(&server, "other", "denied").is_null()).await;
        gw.shutdown().await;
    })
    .await;
}
