//! The layer-4 routing model: per listener set, the hosts whose TLS connections are passed through by SNI to a
//! backend, never terminated. Pure, like the rest of `model`: objects in, routes and diagnostics out.
//!
//! Sources: Ingresses with `ssl-passthrough` ([`annotations::passthrough`]), and Gateway API TLSRoutes and
//! TCPRoutes on the Gateway sockets (`model::gateway::l4routes`, which fills the sets after the configured ones).
//! For Ingresses: Such an Ingress is left out
//! of the HTTP model (`Translator::ingress` skips it) and translated here instead: each of its rule hosts
//! becomes a passthrough route to the backend of the rule's `/` path (the Ingress's `spec.defaultBackend` when
//! the rule has none). The oldest Ingress claiming a host in a set wins it, the others get a reason.

use std::fmt;

use super::annotations::{self, passthrough, ActiveCheck, Balance};
use super::translate::{age_key, object_ref, rule_host, Translator};
use super::{BackendModel, ClusterState, Diagnostic, HostPattern, ObjectRef, Options};

/// Per listener set (same order as [`Options::listener_sets`]), its layer-4 routes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct L4Model {
    pub sets: Vec<L4SetModel>,
}

/// A listener set's layer-4 routes. Invariant: passthrough hosts are unique and sorted, never [`HostPattern::Any`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct L4SetModel {
    pub passthrough: Vec<PassthroughRoute>,
    /// Gateway sockets with TLS listeners: SNI matching as Gateway API has it (see [`GatewaySni`]). `None`:
    /// Ingress semantics (a wildcard covers one label; names that are no route go to the HTTP routes).
    pub sni: Option<GatewaySni>,
    /// A Gateway TCP socket's route (host [`HostPattern::Any`]): every connection goes to it.
    pub tcp: Option<PassthroughRoute>,
}

/// How a Gateway socket's TLS listeners and HTTPS listeners share it. A wildcard covers any number of labels,
/// and the most specific entry matching a name decides (exact, then the wildcards with the most labels): a
/// route passes through, a listener's hostname without a route for the name closes (TLS listener) or
/// terminates (HTTPS listener). Names nothing matches are terminated when the socket has an HTTPS listener
/// without hostname, else closed; so is a ClientHello without SNI.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GatewaySni {
    /// Hostnames of the socket's HTTPS listeners.
    pub terminated: Vec<HostPattern>,
    /// Hostnames of the socket's TLS listeners.
    pub closed: Vec<HostPattern>,
    /// The socket has an HTTPS listener without hostname (names nothing else matches are terminated).
    pub terminates_rest: bool,
}

/// One weighted `backendRef` of a TLSRoute or TCPRoute: `None` is a reference that did not resolve (the
/// connections its weight draws are closed).
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedL4 {
    pub backend: Option<BackendModel>,
    pub weight: u32,
}

/// TLS connections whose SNI is `host` go, still encrypted, to `backend`.
#[derive(Debug, Clone, PartialEq)]
pub struct PassthroughRoute {
    pub host: HostPattern,
    pub backend: BackendModel,
    /// Balancing and active check of the backend (`load-balance`, `health-check: tcp`).
    pub balance: Balance,
    pub check: Option<ActiveCheck>,
    /// The object that defined the route.
    pub origin: ObjectRef,
    /// Gateway API routes: every backendRef with its weight (then `backend` is the first usable one, or an
    /// empty one). Empty for Ingresses: `backend` takes every connection.
    pub split: Vec<WeightedL4>,
}

impl L4Model {
    /// Whether no set has a layer-4 route.
    pub fn is_empty(&self) -> bool {
        self.sets.iter().all(|s| s.passthrough.is_empty() && s.tcp.is_none())
    }

    /// One line per route, for `portico check` and tests (nothing when there are none).
    pub fn describe(&self, names: &[String]) -> String {
        let mut out = String::new();
        for (set, name) in self.sets.iter().zip(names) {
            if set.passthrough.is_empty() && set.tcp.is_none() {
                continue;
            }
            out.push_str(&format!("layer 4 of listener set {name}:\n"));
            for r in &set.passthrough {
                out.push_str(&format!("  {r}\n"));
            }
            if let Some(r) = &set.tcp {
                out.push_str(&format!("  {r}\n"));
            }
        }
        out
    }
}

impl fmt::Display for PassthroughRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host == HostPattern::Any {
            f.write_str("tcp * -> ")?;
        } else {
            write!(f, "tls-passthrough {} -> ", self.host)?;
        }
        if self.split.is_empty() {
            write!(f, "{}", self.backend)?;
        }
        for (i, w) in self.split.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match &w.backend {
                Some(b) => write!(f, "{b} weight {}", w.weight)?,
                None => write!(f, "(unresolved) weight {}", w.weight)?,
            }
        }
        write!(f, " ({})", self.origin)
    }
}

/// The layer-4 model of `state`, and the diagnostics of what it rejected.
pub fn translate(state: &ClusterState, opts: &Options) -> (L4Model, Vec<Diagnostic>) {
    let mut model = L4Model {
        sets: vec![L4SetModel::default(); opts.listener_sets.len()],
    };
    let asking: Vec<_> = state
        .ingresses
        .iter()
        .filter(|i| passthrough::leaves_http(&i.metadata))
        .collect();
    if asking.is_empty() {
        return (model, Vec::new());
    }
    let mut t = Translator::new(state, opts, false);
    let classes = t.classes();
    // Class diagnostics are the HTTP translation's to report.
    t.take_diagnostics();
    let mut ingresses = asking;
    ingresses.sort_by(|a, b| age_key(&a.metadata).cmp(&age_key(&b.metadata)));
    for ing in ingresses {
        let (Some(iref), Some(set)) = (object_ref("Ingress", &ing.metadata), classes.set_of(ing)) else {
            continue;
        };
        if let Err(errors) = annotations::check_keys(&ing.metadata) {
            for e in errors {
                t.diag(&iref, format!("{e}; Ingress not served"));
            }
            continue;
        }
        let policy = match passthrough::asked(&ing.metadata).and_then(|_| passthrough::policy(&ing.metadata)) {
            Ok(p) => p,
            Err(reason) => {
                t.diag(&iref, format!("{reason}; Ingress not served"));
                continue;
            }
        };
        let Some(spec) = &ing.spec else {
            t.diag(&iref, "Ingress has no spec".into());
            continue;
        };
        let ns = iref.namespace.clone();
        let routes = &mut model.sets[set].passthrough;
        for (ri, rule) in spec.rules.iter().flatten().enumerate() {
            let host = match rule_host(rule.host.as_deref()) {
                Ok(HostPattern::Any) => {
                    t.diag(
                        &iref,
                        format!("spec.rules[{ri}]: ssl-passthrough needs a host (SNI); rule ignored"),
                    );
                    continue;
                }
                Ok(h) => h,
                Err(reason) => {
                    t.diag(&iref, format!("spec.rules[{ri}]: {reason}; rule ignored"));
                    continue;
                }
            };
            if let Some(owner) = routes.iter().find(|r| r.host == host) {
                let reason = format!(
                    "spec.rules[{ri}]: host {host} is already passed through for the older {}; rule ignored",
                    owner.origin
                );
                t.diag(&iref, reason);
                continue;
            }
            let root = rule
                .http
                .iter()
                .flat_map(|h| h.paths.iter())
                .find(|p| p.path.as_deref().is_none_or(|p| p == "/"));
            let backend = match (root, &spec.default_backend) {
                (Some(p), _) => t.backend(&iref, &ns, &p.backend, &format_args!("spec.rules[{ri}] path /")),
                (None, Some(db)) => t.backend(&iref, &ns, db, &"spec.defaultBackend"),
                (None, None) => {
                    let reason = format!(
                        "spec.rules[{ri}]: ssl-passthrough sends a host to its `/` path's backend, and the rule has no `/` path; rule ignored"
                    );
                    t.diag(&iref, reason);
                    continue;
                }
            };
            if let Some(backend) = backend {
                routes.push(PassthroughRoute {
                    host,
                    backend,
                    balance: policy.balance,
                    check: policy.check.clone(),
                    origin: iref.clone(),
                    split: Vec::new(),
                });
            }
        }
    }
    for set in &mut model.sets {
        set.passthrough.sort_by(|a, b| a.host.cmp(&b.host));
    }
    (model, t.take_diagnostics())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ImplicitClass, SetOptions};

    fn opts() -> Options {
        Options {
            controller: "portico.dev/ingress-controller".into(),
            listener_sets: vec![SetOptions {
                name: "external".into(),
                classes: vec!["portico".into()],
                adopted: vec![],
                share_hosts: false,
                error_pages: None,
            }],
            implicit_classes: vec![ImplicitClass {
                name: "portico".into(),
                default: true,
            }],
            owned_list: false,
        }
    }

    fn state(yaml: &str) -> ClusterState {
        let mut state = ClusterState::default();
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let v = serde_yaml::Value::deserialize(doc).unwrap();
            match v["kind"].as_str() {
                Some("Ingress") => state.ingresses.push(
                    serde_yaml::from_value::<k8s_openapi::api::networking::v1::Ingress>(v)
                        .unwrap()
                        .into(),
                ),
                Some("Service") => state.services.push(serde_yaml::from_value(v).unwrap()),
                Some("EndpointSlice") => state.endpoint_slices.push(serde_yaml::from_value(v).unwrap()),
                other => panic!("kind {other:?}"),
            }
        }
        state
    }

    use serde::Deserialize;

    const OBJECTS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: argocd, namespace: argo}
spec: {ports: [{name: https, port: 443}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: argocd-1, namespace: argo, labels: {kubernetes.io/service-name: argocd}}
addressType: IPv4
ports: [{name: https, port: 8443}]
endpoints: [{addresses: [10.0.0.7]}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: argocd
  namespace: argo
  creationTimestamp: "2026-01-01T00:00:00Z"
  annotations: {nginx.ingress.kubernetes.io/ssl-passthrough: "true"}
spec:
  rules:
  - host: ArgoCD.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: argocd, port: {name: https}}}}]}
  - http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: argocd, port: {name: https}}}}]}
  - host: "*.argo.example.com"
    http: {paths: [{path: /api, pathType: Prefix, backend: {service: {name: argocd, port: {name: https}}}}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: later
  namespace: argo
  creationTimestamp: "2026-02-01T00:00:00Z"
  annotations: {portico.dev/ssl-passthrough: "true"}
spec:
  defaultBackend: {service: {name: argocd, port: {number: 443}}}
  rules:
  - host: argocd.example.com
  - host: "*.argo.example.com"
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: bad
  namespace: argo
  annotations: {portico.dev/ssl-passthrough: "maybe"}
spec:
  rules:
  - host: bad.example.com
"#;

    #[test]
    fn passthrough_ingresses_become_routes_by_host_and_leave_the_http_model() {
        let state = state(OBJECTS);
        let (model, diags) = translate(&state, &opts());
        assert_eq!(
            model.describe(&["external".into()]),
            "layer 4 of listener set external:\n\
             \x20 tls-passthrough argocd.example.com -> argo/argocd:https [10.0.0.7:8443] (Ingress argo/argocd)\n\
             \x20 tls-passthrough *.argo.example.com -> argo/argocd:443 [10.0.0.7:8443] (Ingress argo/later)\n"
        );
        let reasons: Vec<String> = diags.iter().map(ToString::to_string).collect();
        assert_eq!(
            reasons,
            [
                "Ingress argo/bad: annotation portico.dev/ssl-passthrough: \"maybe\" is not \"true\" or \"false\"; Ingress not served".to_string(),
                "Ingress argo/argocd: spec.rules[1]: ssl-passthrough needs a host (SNI); rule ignored".into(),
                "Ingress argo/argocd: spec.rules[2]: ssl-passthrough sends a host to its `/` path's backend, and the rule has no `/` path; rule ignored".into(),
                "Ingress argo/later: spec.rules[0]: host argocd.example.com is already passed through for the older Ingress argo/argocd; rule ignored".into(),
            ]
        );
        // None of them is an HTTP route.
        let http = crate::model::translate(&state, &opts());
        assert!(http.sets[0].hosts.is_empty(), "{}", http.describe());
    }
}
