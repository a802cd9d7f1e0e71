//! The table of resource types the fake API server serves.
//!
//! Adding a resource is one entry in [`BUILTIN_RESOURCES`].

/// One served resource type (group/version/resource plus what the server needs to know about it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResourceDef {
    /// API group; `""` for the core group (served under `/api/v1`).
    pub group: &'static str,
    /// API version, e.g. `v1`.
    pub version: &'static str,
    /// Plural resource name used in URLs, e.g. `ingresses`.
    pub plural: &'static str,
    /// Kind, e.g. `Ingress`.
    pub kind: &'static str,
    /// Namespaced (`true`) or cluster-scoped (`false`).
    pub namespaced: bool,
    /// Whether the resource has a `status` subresource (writes to the main resource then ignore `.status`).
    pub has_status: bool,
}

impl ResourceDef {
    /// `apiVersion` as it appears in objects: `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural` or `plural.group`, as used in error messages (`ingresses.networking.k8s.io "x" not found`).
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// URL prefix of the group version: `/api/v1` or `/apis/{group}/{version}`.
    pub fn group_version_path(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }
}

macro_rules! res {
    ($group:expr, $version:expr, $plural:expr, $kind:expr, $namespaced:expr, $has_status:expr) => {
        ResourceDef {
            group: $group,
            version: $version,
            plural: $plural,
            kind: $kind,
            namespaced: $namespaced,
            has_status: $has_status,
        }
    };
}

/// Resources served by default: `(group, version, plural, kind, namespaced, has_status)`.
pub const BUILTIN_RESOURCES: &[ResourceDef] = &[
    res!("", "v1", "services", "Service", true, true),
    res!("", "v1", "secrets", "Secret", true, false),
    res!("", "v1", "configmaps", "ConfigMap", true, false),
    res!("", "v1", "events", "Event", true, false),
    res!("", "v1", "endpoints", "Endpoints", true, false),
    res!("", "v1", "pods", "Pod", true, true),
    res!("events.k8s.io", "v1", "events", "Event", true, false),
    res!("networking.k8s.io", "v1", "ingresses", "Ingress", true, true),
    res!(
        "networking.k8s.io",
        "v1",
        "ingressclasses",
        "IngressClass",
        false,
        false
    ),
    res!("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", true, false),
    res!("coordination.k8s.io", "v1", "leases", "Lease", true, false),
    res!("", "v1", "namespaces", "Namespace", false, true),
    // Gateway API, standard channel (v1.6): every kind served as v1, with its status subresource.
    res!(
        "gateway.networking.k8s.io",
        "v1",
        "gatewayclasses",
        "GatewayClass",
        false,
        true
    ),
    res!("gateway.networking.k8s.io", "v1", "gateways", "Gateway", true, true),
    res!("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute", true, true),
    res!("gateway.networking.k8s.io", "v1", "grpcroutes", "GRPCRoute", true, true),
    res!(
        "gateway.networking.k8s.io",
        "v1",
        "referencegrants",
        "ReferenceGrant",
        true,
        false
    ),
    res!("gateway.networking.k8s.io", "v1", "tlsroutes", "TLSRoute", true, true),
    res!("gateway.networking.k8s.io", "v1", "tcproutes", "TCPRoute", true, true),
    res!(
        "gateway.networking.k8s.io",
        "v1",
        "backendtlspolicies",
        "BackendTLSPolicy",
        true,
        true
    ),
];

/// Find a resource by group, version and plural (URL form).
pub fn find_by_path<'a>(table: &'a [ResourceDef], group: &str, version: &str, plural: &str) -> Option<&'a ResourceDef> {
    table
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Find a resource by `apiVersion` and `kind` (object form).
pub fn find_by_kind<'a>(table: &'a [ResourceDef], api_version: &str, kind: &str) -> Option<&'a ResourceDef> {
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    table
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_api_kinds_are_served_with_status() {
        for kind in [
            "GatewayClass",
            "Gateway",
            "HTTPRoute",
            "GRPCRoute",
            "TLSRoute",
            "TCPRoute",
            "BackendTLSPolicy",
        ] {
            let r = find_by_kind(BUILTIN_RESOURCES, "gateway.networking.k8s.io/v1", kind).unwrap();
            assert!(r.has_status, "{kind}");
            assert_eq!(r.namespaced, kind != "GatewayClass", "{kind}");
        }
        let g = find_by_kind(BUILTIN_RESOURCES, "gateway.networking.k8s.io/v1", "ReferenceGrant").unwrap();
        assert!(g.namespaced);
        assert!(!find_by_kind(BUILTIN_RESOURCES, "v1", "Namespace").unwrap().namespaced);
    }

    #[test]
    fn lookups() {
        let ing = find_by_path(BUILTIN_RESOURCES, "networking.k8s.io", "v1", "ingresses").unwrap();
        assert_eq!(ing.kind, "Ingress");
        assert_eq!(ing.api_version(), "networking.k8s.io/v1");
        assert_eq!(ing.qualified_plural(), "ingresses.networking.k8s.io");
        let ev = find_by_kind(BUILTIN_RESOURCES, "v1", "Event").unwrap();
        assert_eq!(ev.group, "");
        let ev2 = find_by_kind(BUILTIN_RESOURCES, "events.k8s.io/v1", "Event").unwrap();
        assert_eq!(ev2.group, "events.k8s.io");
        assert!(find_by_kind(BUILTIN_RESOURCES, "v1", "Nope").is_none());
    }
}
