//! Gateway API status: what [`attach`](crate::model::gateway::attach) found, written by the leader through the
//! status subresource of each GatewayClass, Gateway, HTTPRoute, GRPCRoute, TLSRoute and TCPRoute of ours, and
//! of each BackendTLSPolicy (`status.ancestors[]`: the Gateways of ours whose routes use it).
//!
//! - Written only when it changed: the wanted status is compared with the object's, ignoring
//!   `lastTransitionTime`; a condition whose status did not change keeps the time already there.
//! - A merge patch carrying the object's `resourceVersion`: a concurrent write by someone else fails (409) and
//!   is retried on the next round instead of being overwritten.
//! - Routes: only `status.parents[]` entries whose `controllerName` is ours are touched; other controllers'
//!   entries are kept. Our entries on routes that no longer name one of our Gateways are removed.
//! - GatewayClasses and Gateways: conditions of types we do not set (another tool's) are kept.

use std::collections::HashMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::{json, Map, Value};

use super::Objects;
use crate::model::gateway::attach::{ClassStatus, GatewayModel, ParentStatus, RouteStatus};
use crate::model::gateway::backendtls::PolicyState;
use crate::model::gateway::{
    BackendTlsPolicy, Condition, Gateway, GatewayAttachment, GatewayClass, GrpcRoute, HttpRoute, ParentReference,
    TcpRoute, TlsRoute, CONTROLLER_NAME,
};
use crate::model::ObjectRef;

/// An object's status as the stores have it.
#[derive(Debug, Clone, PartialEq)]
pub struct Current {
    pub resource_version: Option<String>,
    /// `Null` when the object has none.
    pub status: Value,
}

impl Current {
    pub fn new(meta: &ObjectMeta, status: Option<&Value>) -> Self {
        Self {
            resource_version: meta.resource_version.clone(),
            status: status.cloned().unwrap_or(Value::Null),
        }
    }
}

/// Writes Gateway API status. Remembers what it wrote until the watch shows it, so a round that runs before the
/// object's watch event does not write the same thing twice.
pub struct StatusWriter {
    client: kube::Client,
    /// What was written (without transition times), with the resourceVersion the store had then.
    written: HashMap<ObjectRef, (Value, Option<String>)>,
}

impl StatusWriter {
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            written: HashMap::new(),
        }
    }

    /// One round. Returns false when a write failed (the caller retries later). `leader` is checked before
    /// every write.
    pub async fn reconcile(
        &mut self,
        attachment: &GatewayAttachment,
        objects: &dyn Objects,
        leader: &tokio::sync::watch::Receiver<bool>,
    ) -> bool {
        if !*leader.borrow() {
            self.written.clear();
            return true;
        }
        let mut ok = true;
        for (r, current, want) in plan(attachment, objects, &now()) {
            if !*leader.borrow() {
                return true;
            }
            ok &= self.write(&r, &current, want).await;
        }
        ok
    }

    async fn write(&mut self, r: &ObjectRef, current: &Current, want: Value) -> bool {
        let bare = without_transition_times(&want);
        let rv = current.resource_version.clone();
        if self.written.get(r) == Some(&(bare.clone(), rv.clone())) {
            // Written already; the store has not seen it yet.
            return true;
        }
        let mut body = json!({ "status": want });
        if let Some(rv) = &rv {
            body["metadata"] = json!({ "resourceVersion": rv });
        }
        let params = PatchParams::default();
        let patch = Patch::Merge(&body);
        let client = self.client.clone();
        let (ns, name) = (r.namespace.as_str(), r.name.as_str());
        let result = match r.kind {
            "GatewayClass" => Api::<GatewayClass>::all(client)
                .patch_status(name, &params, &patch)
                .await
                .map(drop),
            "Gateway" => Api::<Gateway>::namespaced(client, ns)
                .patch_status(name, &params, &patch)
                .await
                .map(drop),
            "HTTPRoute" => Api::<HttpRoute>::namespaced(client, ns)
                .patch_status(name, &params, &patch)
                .await
                .map(drop),
            "GRPCRoute" => Api::<GrpcRoute>::namespaced(client, ns)
                .patch_status(name, &params, &patch)
                .await
                .map(drop),
            "TLSRoute" => Api::<TlsRoute>::namespaced(client, ns)
                .patch_status(name, &params, &patch)
                .await
                .map(drop),
            "TCPRoute" => Api::<TcpRoute>::namespaced(client, ns)
                .patch_status(name, &params, &patch)
                .await
                .map(drop),
            "BackendTLSPolicy" => Api::<BackendTlsPolicy>::namespaced(client, ns)
                .patch_status(name, &params, &patch)
                .await
                .map(drop),
            _ => return true,
        };
        match result {
            Ok(()) => {
                tracing::info!(object = %r, "status written");
                self.written.insert(r.clone(), (bare, rv));
                true
            }
            Err(kube::Error::Api(s)) if s.code == 404 => true,
            Err(e) => {
                tracing::warn!(object = %r, error = %e, "writing status failed");
                false
            }
        }
    }
}

fn now() -> String {
    let now = Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now());
    match serde_json::to_value(Time(now)) {
        Ok(Value::String(s)) => s,
        _ => now.to_string(),
    }
}

// === what to write (pure) ===

/// Every object whose status should change, with its current status and the status to write.
pub fn plan(attachment: &GatewayAttachment, objects: &dyn Objects, now: &str) -> Vec<(ObjectRef, Current, Value)> {
    let mut out = Vec::new();
    let mut push = |r: ObjectRef, want: &dyn Fn(&Value) -> Value| {
        if let Some(current) = objects.gateway_status(&r) {
            let want = want(&current.status);
            if differs(&want, &current.status) {
                out.push((r, current, want));
            }
        }
    };
    for c in &attachment.classes {
        let r = object("GatewayClass", "", &c.name);
        push(r, &|cur| class_status(c, cur, now));
    }
    for g in &attachment.gateways {
        let r = object("Gateway", &g.namespace, &g.name);
        push(r, &|cur| gateway_status(g, cur, now));
    }
    let mut ours: HashMap<ObjectRef, &RouteStatus> = HashMap::new();
    for route in &attachment.routes {
        ours.insert(route.route.object(), route);
    }
    for r in objects.gateway_routes() {
        let route = ours.get(&r).copied();
        push(r, &|cur| route_status(route, cur, now));
    }
    // Every BackendTLSPolicy in the state is in the attachment (without ancestors when no route of ours uses
    // it: our entries are then removed).
    for p in &attachment.backend_tls_policies {
        push(p.object(), &|cur| policy_status(p, cur, now));
    }
    out
}

/// `status.ancestors`: other controllers' entries as they are, then ours, one per Gateway of ours whose routes
/// use a Service port the policy targets (at most 16 in all, as the CRD allows).
pub fn policy_status(p: &PolicyState, current: &Value, now: &str) -> Value {
    let current: &[Value] = current
        .get("ancestors")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let is_ours = |a: &&Value| a.get("controllerName").and_then(Value::as_str) == Some(CONTROLLER_NAME);
    let mut ancestors: Vec<Value> = current.iter().filter(|a| !is_ours(a)).cloned().collect();
    let conditions = p.conditions();
    for (ns, name) in &p.ancestors {
        if ancestors.len() >= 16 {
            break;
        }
        let ancestor_ref = json!({
            "group": crate::model::gateway::GROUP,
            "kind": "Gateway",
            "namespace": ns,
            "name": name,
        });
        let have = current
            .iter()
            .filter(is_ours)
            .find(|a| a.get("ancestorRef").is_some_and(|r| same_parent_ref(r, &ancestor_ref)))
            .and_then(|a| a.get("conditions"))
            .unwrap_or(&Value::Null);
        ancestors.push(json!({
            "ancestorRef": ancestor_ref,
            "controllerName": CONTROLLER_NAME,
            "conditions": conditions_json(&conditions, have, now, false),
        }));
    }
    json!({ "ancestors": ancestors })
}

fn object(kind: &'static str, namespace: &str, name: &str) -> ObjectRef {
    ObjectRef {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

/// Whether any field of `want` differs from `current`'s, transition times aside (`null` in `want`, which
/// removes a field, equals a missing one).
pub fn differs(want: &Value, current: &Value) -> bool {
    let Some(want) = want.as_object() else {
        return true;
    };
    want.iter().any(|(k, v)| {
        let have = current.get(k).unwrap_or(&Value::Null);
        without_transition_times(v) != without_transition_times(have)
    })
}

fn without_transition_times(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| *k != "lastTransitionTime")
                .map(|(k, v)| (k.clone(), without_transition_times(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_transition_times).collect()),
        other => other.clone(),
    }
}

/// `conditions` as JSON, each keeping the `lastTransitionTime` of the current condition of its type when the
/// status is the same (else `now`); with `keep_foreign`, current conditions of other types follow.
fn conditions_json(conditions: &[Condition], current: &Value, now: &str, keep_foreign: bool) -> Value {
    let current: &[Value] = current.as_array().map(Vec::as_slice).unwrap_or_default();
    let find = |t: &str| {
        current
            .iter()
            .find(|c| c.get("type").and_then(Value::as_str) == Some(t))
    };
    let mut out: Vec<Value> = conditions
        .iter()
        .map(|c| {
            let since = find(c.type_)
                .filter(|have| have.get("status").and_then(Value::as_str) == Some(c.status_str()))
                .and_then(|have| have.get("lastTransitionTime").cloned())
                .unwrap_or_else(|| Value::String(now.to_string()));
            let mut v = json!({
                "type": c.type_,
                "status": c.status_str(),
                "reason": c.reason,
                "message": c.message,
                "lastTransitionTime": since,
            });
            if let Some(g) = c.observed_generation {
                v["observedGeneration"] = json!(g);
            }
            v
        })
        .collect();
    if keep_foreign {
        out.extend(
            current
                .iter()
                .filter(|have| {
                    let t = have.get("type").and_then(Value::as_str);
                    !conditions.iter().any(|c| Some(c.type_) == t)
                })
                .cloned(),
        );
    }
    Value::Array(out)
}

pub fn class_status(c: &ClassStatus, current: &Value, now: &str) -> Value {
    json!({ "conditions": conditions_json(&c.conditions, current.get("conditions").unwrap_or(&Value::Null), now, true) })
}

pub fn gateway_status(g: &GatewayModel, current: &Value, now: &str) -> Value {
    let addresses: Vec<Value> = g
        .addresses
        .iter()
        .map(|ip| json!({"type": "IPAddress", "value": ip.to_string()}))
        .collect();
    let current_listeners: &[Value] = current
        .get("listeners")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let listeners: Vec<Value> = g
        .listeners
        .iter()
        .map(|l| {
            let have = current_listeners
                .iter()
                .find(|c| c.get("name").and_then(Value::as_str) == Some(&l.name))
                .and_then(|c| c.get("conditions"))
                .unwrap_or(&Value::Null);
            let kinds: Vec<Value> = l
                .supported_kinds
                .iter()
                .map(|k| json!({"group": crate::model::gateway::GROUP, "kind": k.kind()}))
                .collect();
            json!({
                "name": l.name,
                "supportedKinds": kinds,
                "attachedRoutes": l.attached_routes,
                "conditions": conditions_json(&l.conditions, have, now, false),
            })
        })
        .collect();
    json!({
        "addresses": if addresses.is_empty() { Value::Null } else { Value::Array(addresses) },
        "conditions": conditions_json(&g.conditions, current.get("conditions").unwrap_or(&Value::Null), now, true),
        "listeners": listeners,
    })
}

/// `status.parents`: other controllers' entries as they are, then ours (none when `route` is `None`).
pub fn route_status(route: Option<&RouteStatus>, current: &Value, now: &str) -> Value {
    let current: &[Value] = current
        .get("parents")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let is_ours = |p: &&Value| p.get("controllerName").and_then(Value::as_str) == Some(CONTROLLER_NAME);
    let mut parents: Vec<Value> = current.iter().filter(|p| !is_ours(p)).cloned().collect();
    for p in route.map(|r| r.parents.as_slice()).unwrap_or_default() {
        parents.push(parent_json(p, current.iter().filter(is_ours), now));
    }
    json!({ "parents": parents })
}

fn parent_json<'a>(p: &ParentStatus, mut current: impl Iterator<Item = &'a Value>, now: &str) -> Value {
    let parent_ref = parent_ref_json(&p.parent_ref);
    let have = current
        .find(|c| c.get("parentRef").is_some_and(|r| same_parent_ref(r, &parent_ref)))
        .and_then(|c| c.get("conditions"))
        .unwrap_or(&Value::Null);
    json!({
        "parentRef": parent_ref,
        "controllerName": CONTROLLER_NAME,
        "conditions": conditions_json(&p.conditions, have, now, false),
    })
}

fn parent_ref_json(r: &ParentReference) -> Value {
    let mut m = Map::new();
    m.insert("group".into(), json!(r.group));
    m.insert("kind".into(), json!(r.kind));
    if let Some(ns) = &r.namespace {
        m.insert("namespace".into(), json!(ns));
    }
    m.insert("name".into(), json!(r.name));
    if let Some(s) = &r.section_name {
        m.insert("sectionName".into(), json!(s));
    }
    if let Some(p) = r.port {
        m.insert("port".into(), json!(p));
    }
    Value::Object(m)
}

/// Parent references compare with the defaults the API server may have filled in.
fn same_parent_ref(a: &Value, b: &Value) -> bool {
    let field = |v: &Value, k: &str, default: &str| -> Value {
        v.get(k).cloned().unwrap_or_else(|| {
            if default.is_empty() {
                Value::Null
            } else {
                json!(default)
            }
        })
    };
    [
        ("group", crate::model::gateway::GROUP),
        ("kind", "Gateway"),
        ("namespace", ""),
        ("name", ""),
        ("sectionName", ""),
        ("port", ""),
    ]
    .iter()
    .all(|(k, d)| field(a, k, d) == field(b, k, d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gateway::{attach, CONTROLLER_NAME as OURS};
    use crate::model::ClusterState;

    const YAML: &str = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: portico, generation: 1}\nspec: {controllerName: portico.dev/gateway-controller}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default, generation: 1}\nspec:\n  gatewayClassName: portico\n  listeners: [{name: http, port: 80, protocol: HTTP}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web, namespace: default, generation: 4}\nspec:\n  parentRefs: [{name: gw}]\n";

    fn state(yaml: &str) -> ClusterState {
        crate::source::file::state_from_yaml(yaml, "t.yaml").0
    }

    /// Applies the planned statuses to the state as the API server would store them.
    fn apply(state: &mut ClusterState, planned: &[(ObjectRef, Current, Value)]) {
        for (r, _, want) in planned {
            let g = &mut state.gateway;
            let slot = match r.kind {
                "GatewayClass" => {
                    &mut g
                        .gateway_classes
                        .iter_mut()
                        .find(|o| o.metadata.name.as_deref() == Some(&r.name))
                        .unwrap()
                        .status
                }
                "Gateway" => {
                    &mut g
                        .gateways
                        .iter_mut()
                        .find(|o| o.metadata.name.as_deref() == Some(&r.name))
                        .unwrap()
                        .status
                }
                "HTTPRoute" => {
                    &mut g
                        .http_routes
                        .iter_mut()
                        .find(|o| o.metadata.name.as_deref() == Some(&r.name))
                        .unwrap()
                        .status
                }
                _ => unreachable!(),
            };
            let mut merged = slot.clone().unwrap_or(json!({}));
            for (k, v) in want.as_object().unwrap() {
                if v.is_null() {
                    merged.as_object_mut().unwrap().remove(k);
                } else {
                    merged[k] = v.clone();
                }
            }
            *slot = Some(merged);
        }
    }

    #[test]
    fn written_once_then_unchanged() {
        let mut s = state(YAML);
        let a = attach(&s, OURS);
        let planned = plan(&a, &s, "2026-01-01T00:00:00Z");
        let kinds: Vec<&str> = planned.iter().map(|(r, _, _)| r.kind).collect();
        assert_eq!(kinds, ["GatewayClass", "Gateway", "HTTPRoute"]);
        let route = &planned[2].2;
        assert_eq!(route["parents"][0]["controllerName"], OURS);
        assert_eq!(
            route["parents"][0]["parentRef"],
            json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"})
        );
        let accepted = &route["parents"][0]["conditions"][0];
        assert_eq!(
            (
                accepted["type"].as_str(),
                accepted["status"].as_str(),
                accepted["observedGeneration"].as_i64()
            ),
            (Some("Accepted"), Some("True"), Some(4))
        );
        let gw = &planned[1].2;
        assert_eq!(gw["listeners"][0]["attachedRoutes"], 1);
        assert_eq!(gw["listeners"][0]["supportedKinds"][1]["kind"], "GRPCRoute");
        assert!(gw["addresses"].is_null());
        apply(&mut s, &planned);
        assert!(
            plan(&a, &s, "2026-01-02T00:00:00Z").is_empty(),
            "nothing changed: nothing written"
        );

        // A condition that flips gets a new time; one that holds keeps its time.
        s.gateway.http_routes[0].spec.rules[0].backend_refs =
            vec![serde_yaml::from_str("{name: gone, port: 80}").unwrap()];
        let a = attach(&s, OURS);
        let planned = plan(&a, &s, "2026-01-03T00:00:00Z");
        assert_eq!(planned.len(), 1, "only the route");
        let conds = &planned[0].2["parents"][0]["conditions"];
        assert_eq!(conds[0]["reason"], "Accepted");
        assert_eq!(conds[0]["lastTransitionTime"], "2026-01-01T00:00:00Z");
        assert_eq!(conds[1]["reason"], "BackendNotFound");
        assert_eq!(conds[1]["lastTransitionTime"], "2026-01-03T00:00:00Z");
    }

    #[test]
    fn other_controllers_entries_and_conditions_are_kept() {
        let mut s = state(YAML);
        let foreign = json!({"parentRef": {"name": "theirs"}, "controllerName": "example.com/other", "conditions": []});
        let stale_ours = json!({"parentRef": {"name": "old"}, "controllerName": OURS, "conditions": []});
        s.gateway.http_routes[0].status = Some(json!({"parents": [foreign.clone(), stale_ours]}));
        s.gateway.gateways[0].status = Some(
            json!({"conditions": [{"type": "example.com/Audited", "status": "True", "reason": "Ok", "message": "", "lastTransitionTime": "2020-01-01T00:00:00Z"}]}),
        );
        let a = attach(&s, OURS);
        let planned = plan(&a, &s, "2026-01-01T00:00:00Z");
        let route = &planned.iter().find(|(r, _, _)| r.kind == "HTTPRoute").unwrap().2;
        let parents = route["parents"].as_array().unwrap();
        assert_eq!(parents.len(), 2);
        assert_eq!(parents[0], foreign);
        assert_eq!(parents[1]["parentRef"]["name"], "gw", "our stale entry replaced");
        let gw = &planned.iter().find(|(r, _, _)| r.kind == "Gateway").unwrap().2;
        let types: Vec<&str> = gw["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["Accepted", "Programmed", "example.com/Audited"]);

        // The route leaves our Gateway: our entry goes, theirs stays.
        apply(&mut s, &planned);
        s.gateway.http_routes[0].spec.parent_refs[0].name = "elsewhere".into();
        let a = attach(&s, OURS);
        let planned = plan(&a, &s, "2026-01-01T00:00:00Z");
        let route = &planned.iter().find(|(r, _, _)| r.kind == "HTTPRoute").unwrap().2;
        assert_eq!(route["parents"], json!([foreign]));
    }

    #[test]
    fn backend_tls_policy_ancestors() {
        let yaml = format!(
            "{YAML}---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc, namespace: default}}\nspec: {{ports: [{{name: https, port: 443}}]}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: tls, namespace: default}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules: [{{backendRefs: [{{name: svc, port: 443}}]}}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {{name: p, namespace: default, generation: 2}}\nspec:\n  targetRefs: [{{group: \"\", kind: Service, name: svc}}]\n  validation: {{hostname: svc.internal, caCertificateRefs: [{{group: \"\", kind: ConfigMap, name: nowhere}}]}}\n"
        );
        let s = state(&yaml);
        let a = attach(&s, OURS);
        let p = &a.backend_tls_policies[0];
        assert_eq!(p.ancestors.len(), 1);
        let foreign = json!({"ancestorRef": {"name": "gw", "namespace": "default"}, "controllerName": "other.example/c", "conditions": []});
        let stale =
            json!({"ancestorRef": {"name": "old", "namespace": "default"}, "controllerName": OURS, "conditions": []});
        let current = json!({"ancestors": [foreign.clone(), stale]});
        let want = policy_status(p, &current, "2024-01-01T00:00:00Z");
        let list = want["ancestors"].as_array().unwrap();
        assert_eq!(list.len(), 2, "{want}");
        assert_eq!(list[0], foreign, "other controllers' entries are kept");
        assert_eq!(
            list[1]["ancestorRef"]["name"], "gw",
            "ours: the route's Gateway (the stale entry gone)"
        );
        let conditions = &list[1]["conditions"];
        assert_eq!(conditions[0]["reason"], "NoValidCACertificate");
        assert_eq!(conditions[1]["reason"], "InvalidCACertificateRef");
        assert_eq!(conditions[0]["observedGeneration"], 2);
        assert!(conditions[0]["message"]
            .as_str()
            .unwrap()
            .contains("ConfigMap default/nowhere not found"));
        // No route of ours uses it any more: our entries go.
        let mut unused = p.clone();
        unused.ancestors.clear();
        assert_eq!(policy_status(&unused, &want, "now")["ancestors"], json!([foreign]));
    }

    #[test]
    fn parent_refs_compare_with_defaults() {
        assert!(same_parent_ref(
            &json!({"name": "gw"}),
            &json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"})
        ));
        assert!(!same_parent_ref(
            &json!({"name": "gw"}),
            &json!({"name": "gw", "sectionName": "a"})
        ));
    }
}
