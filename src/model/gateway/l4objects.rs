//! TLSRoute and TCPRoute as Portico reads them (`gateway.networking.k8s.io/v1`, served by the v1.6 standard
//! CRDs; their v1alpha2/v1alpha3 versions are not served). Defaults as the CRDs apply them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::{BackendRef, ParentReference};

/// TLS connections by SNI, passed through still encrypted (listeners of protocol `TLS`, `tls.mode: Passthrough`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsRoute {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: TlsRouteSpec,
    /// As the API server has it (the status writer compares with it); not read by translation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsRouteSpec {
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    /// SNI names, exact or `*.` wildcard (at least one, as the CRD requires).
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// Exactly one in the v1 CRD.
    #[serde(default)]
    pub rules: Vec<L4RouteRule>,
}

/// Every connection to a listener of protocol `TCP`, forwarded to the backends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpRoute {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: TcpRouteSpec,
    /// As the API server has it (the status writer compares with it); not read by translation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpRouteSpec {
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    /// Exactly one in the v1 CRD.
    #[serde(default)]
    pub rules: Vec<L4RouteRule>,
}

/// A TLSRoute or TCPRoute rule: weighted backends (no matches, no filters).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct L4RouteRule {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
}
