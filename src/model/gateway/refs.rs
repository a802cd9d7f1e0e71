//! References across namespaces (ReferenceGrant) and the namespace selection of `allowedRoutes`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::{ReferenceGrant, RouteNamespaces};

/// Whether a `from_kind` (of the Gateway API group) in `from_ns` may refer to the `to_group`/`to_kind` named
/// `to_name` in `to_ns`: always within one namespace, else when a ReferenceGrant in `to_ns` allows it.
pub fn permitted(
    grants: &[ReferenceGrant],
    from_kind: &str,
    from_ns: &str,
    to_group: &str,
    to_kind: &str,
    to_ns: &str,
    to_name: &str,
) -> bool {
    from_ns == to_ns
        || grants
            .iter()
            .filter(|g| g.metadata.namespace.as_deref() == Some(to_ns))
            .any(|g| g.allows(super::GROUP, from_kind, from_ns, to_group, to_kind, to_name))
}

/// A namespace's labels, with `kubernetes.io/metadata.name` (which the API server sets on every namespace, and
/// file mode may leave out); just that label for a namespace not in `namespaces`.
pub fn namespace_labels(namespaces: &[Namespace], name: &str) -> BTreeMap<String, String> {
    let mut labels = namespaces
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(name))
        .and_then(|n| n.metadata.labels.clone())
        .unwrap_or_default();
    labels
        .entry("kubernetes.io/metadata.name".into())
        .or_insert_with(|| name.to_string());
    labels
}

/// Whether a route in `route_ns` may attach to a listener of a Gateway in `gateway_ns` by the listener's
/// `allowedRoutes.namespaces`.
pub fn namespace_allowed(from: &RouteNamespaces, gateway_ns: &str, route_ns: &str, namespaces: &[Namespace]) -> bool {
    match from.from.as_str() {
        "All" => true,
        "Same" => gateway_ns == route_ns,
        "Selector" => from
            .selector
            .as_ref()
            .is_some_and(|s| selects(s, &namespace_labels(namespaces, route_ns))),
        _ => false,
    }
}

/// Whether a label selector selects `labels` (an empty selector selects everything; an unknown operator
/// nothing).
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_label = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expression = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_label && by_expression
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(yaml: &str) -> Namespace {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn from(yaml: &str) -> RouteNamespaces {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn allowed_routes_namespaces() {
        let namespaces = vec![
            ns("metadata: {name: apps, labels: {team: a, env: prod}}"),
            ns("metadata: {name: dev, labels: {team: a, env: dev}}"),
            ns("metadata: {name: other}"),
        ];
        let allowed = |f: &str, route_ns: &str| namespace_allowed(&from(f), "infra", route_ns, &namespaces);
        assert!(allowed("{}", "infra"), "Same by default");
        assert!(!allowed("{}", "apps"));
        assert!(allowed("{from: All}", "apps"));
        assert!(allowed("{from: Selector, selector: {matchLabels: {team: a}}}", "apps"));
        assert!(allowed("{from: Selector, selector: {matchLabels: {team: a}}}", "dev"));
        assert!(!allowed(
            "{from: Selector, selector: {matchLabels: {team: a}}}",
            "other"
        ));
        assert!(!allowed(
            "{from: Selector, selector: {matchLabels: {team: a}}}",
            "missing"
        ));
        let prod = "{from: Selector, selector: {matchLabels: {team: a}, matchExpressions: [{key: env, operator: NotIn, values: [dev]}]}}";
        assert!(allowed(prod, "apps"));
        assert!(!allowed(prod, "dev"));
        let exists = "{from: Selector, selector: {matchExpressions: [{key: env, operator: Exists}]}}";
        assert!(allowed(exists, "dev") && !allowed(exists, "other"));
        let absent = "{from: Selector, selector: {matchExpressions: [{key: env, operator: DoesNotExist}]}}";
        assert!(!allowed(absent, "dev") && allowed(absent, "other"));
        let by_in = "{from: Selector, selector: {matchExpressions: [{key: env, operator: In, values: [dev, qa]}]}}";
        assert!(allowed(by_in, "dev") && !allowed(by_in, "apps"));
        let by_name = "{from: Selector, selector: {matchLabels: {kubernetes.io/metadata.name: other}}}";
        assert!(allowed(by_name, "other"), "the name label is implied");
        assert!(
            allowed("{from: Selector, selector: {}}", "missing"),
            "empty selector: all"
        );
        assert!(!allowed("{from: Selector}", "apps"), "no selector: none");
    }

    #[test]
    fn reference_grants() {
        let grant: ReferenceGrant = serde_yaml::from_str(
            "metadata: {name: g, namespace: backends}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: apps}]\n  to: [{group: \"\", kind: Service, name: api}]\n",
        )
        .unwrap();
        let grants = [grant];
        let ok =
            |from_kind, from_ns, to_ns, to_name| permitted(&grants, from_kind, from_ns, "", "Service", to_ns, to_name);
        assert!(
            ok("HTTPRoute", "apps", "apps", "anything"),
            "same namespace needs no grant"
        );
        assert!(ok("HTTPRoute", "apps", "backends", "api"));
        assert!(
            !ok("HTTPRoute", "apps", "backends", "web"),
            "grant names another Service"
        );
        assert!(!ok("GRPCRoute", "apps", "backends", "api"), "grant is for HTTPRoutes");
        assert!(!ok("HTTPRoute", "other", "backends", "api"), "grant is for apps");
        assert!(
            !ok("HTTPRoute", "apps", "elsewhere", "api"),
            "grant lives in the target namespace"
        );
        assert!(!permitted(
            &grants,
            "HTTPRoute",
            "apps",
            "",
            "Secret",
            "backends",
            "api"
        ));
    }
}
