//! Shared by the bench targets: cluster states generated in memory and written as manifests.
#![allow(dead_code)] // each bench target uses a different part

use portico::config::Config;
use portico::model::{ClusterState, Ingress, Options, Strings};
use serde_json::json;

/// The host name of Ingress `i`.
pub fn host(i: usize) -> String {
    format!("h{i:05}.bench.example")
}

/// `n` Ingresses, each with one host and one Prefix path `/` to its own Service, each Service with one
/// EndpointSlice of one ready endpoint (addresses cycle through 10.x.y.z so no two backends are equal).
pub fn cluster_state(n: usize) -> ClusterState {
    let mut s = ClusterState::default();
    // Shared as a source shares them.
    let mut strings = Strings::default();
    for i in 0..n {
        let name = format!("svc-{i:05}");
        s.services.push(
            serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": "bench"},
                "spec": {"ports": [{"name": "http", "port": 80}]}
            }))
            .expect("service"),
        );
        let ip = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        s.endpoint_slices.push(
            serde_json::from_value(json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("{name}-1"), "namespace": "bench",
                             "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080}],
                "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}]
            }))
            .expect("endpoint slice"),
        );
        s.ingresses.push(Ingress::from_k8s(
            serde_json::from_value(json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": format!("ing-{i:05}"), "namespace": "bench"},
                "spec": {"rules": [{"host": host(i), "http": {"paths": [
                    {"path": "/", "pathType": "Prefix",
                     "backend": {"service": {"name": name, "port": {"name": "http"}}}}
                ]}}]}
            }))
            .expect("ingress"),
            &mut strings,
        ));
    }
    s
}

/// Translation options of a default file-mode gateway (class `portico`, the default class).
pub fn options() -> Options {
    Options::from_config(&Config::default(), true)
}
