//! Gateway API objects as Portico reads them (standard channel, `gateway.networking.k8s.io/v1`): the fields
//! translation uses, with the CRDs' defaults applied where a field is left out (so file mode, which has no API
//! server to default them, and cluster mode agree). Unknown fields are ignored: the API server validated them.

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::{Deserialize, Serialize};

/// The group of every Gateway API kind.
pub const GROUP: &str = "gateway.networking.k8s.io";

/// Every Gateway API object (and Namespace, whose labels `allowedRoutes` selects on) of a snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GatewayObjects {
    pub gateway_classes: Vec<GatewayClass>,
    pub gateways: Vec<Gateway>,
    pub http_routes: Vec<HttpRoute>,
    pub grpc_routes: Vec<GrpcRoute>,
    pub tls_routes: Vec<super::TlsRoute>,
    pub tcp_routes: Vec<super::TcpRoute>,
    pub reference_grants: Vec<ReferenceGrant>,
    pub backend_tls_policies: Vec<super::BackendTlsPolicy>,
    pub namespaces: Vec<Namespace>,
    /// ConfigMaps: the CA bundles BackendTLSPolicies name.
    pub config_maps: Vec<ConfigMap>,
}

impl GatewayObjects {
    pub fn is_empty(&self) -> bool {
        self.gateway_classes.is_empty()
            && self.gateways.is_empty()
            && self.http_routes.is_empty()
            && self.grpc_routes.is_empty()
            && self.tls_routes.is_empty()
            && self.tcp_routes.is_empty()
            && self.reference_grants.is_empty()
            && self.backend_tls_policies.is_empty()
            && self.namespaces.is_empty()
            && self.config_maps.is_empty()
    }

    /// Appends `other`'s objects.
    pub fn extend(&mut self, other: &GatewayObjects) {
        self.gateway_classes.extend(other.gateway_classes.iter().cloned());
        self.gateways.extend(other.gateways.iter().cloned());
        self.http_routes.extend(other.http_routes.iter().cloned());
        self.grpc_routes.extend(other.grpc_routes.iter().cloned());
        self.tls_routes.extend(other.tls_routes.iter().cloned());
        self.tcp_routes.extend(other.tcp_routes.iter().cloned());
        self.reference_grants.extend(other.reference_grants.iter().cloned());
        self.backend_tls_policies
            .extend(other.backend_tls_policies.iter().cloned());
        self.namespaces.extend(other.namespaces.iter().cloned());
        self.config_maps.extend(other.config_maps.iter().cloned());
    }
}

// === GatewayClass ===

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayClass {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: GatewayClassSpec,
    /// As the API server has it (the status writer compares with it); not read by translation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayClassSpec {
    #[serde(default)]
    pub controller_name: String,
}

// === Gateway ===

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gateway {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: GatewaySpec,
    /// As the API server has it (the status writer compares with it); not read by translation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    #[serde(default)]
    pub gateway_class_name: String,
    #[serde(default)]
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub addresses: Vec<GatewayAddress>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayAddress {
    /// `IPAddress` (the default), `Hostname` or an implementation-specific type.
    #[serde(default = "ip_address", rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub value: String,
}

fn ip_address() -> String {
    "IPAddress".into()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub port: i32,
    /// `HTTP`, `HTTPS`, `TLS`, `TCP`, `UDP`.
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    /// Defaults to routes of the listener's protocol from the Gateway's own namespace.
    #[serde(default)]
    pub allowed_routes: AllowedRoutes,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerTls {
    /// `Terminate` (the default) or `Passthrough`.
    #[serde(default = "terminate")]
    pub mode: String,
    #[serde(default)]
    pub certificate_refs: Vec<SecretObjectReference>,
}

fn terminate() -> String {
    "Terminate".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretObjectReference {
    /// `""` (core, the default).
    #[serde(default)]
    pub group: String,
    /// `Secret` by default.
    #[serde(default = "secret_kind")]
    pub kind: String,
    pub name: String,
    /// The Gateway's namespace when left out.
    #[serde(default)]
    pub namespace: Option<String>,
}

fn secret_kind() -> String {
    "Secret".into()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllowedRoutes {
    #[serde(default)]
    pub namespaces: RouteNamespaces,
    /// Empty: the kinds the listener's protocol supports.
    #[serde(default)]
    pub kinds: Vec<RouteGroupKind>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteNamespaces {
    /// `Same` (the default), `All` or `Selector`.
    #[serde(default = "same")]
    pub from: String,
    #[serde(default)]
    pub selector: Option<LabelSelector>,
}

impl Default for RouteNamespaces {
    fn default() -> Self {
        Self {
            from: same(),
            selector: None,
        }
    }
}

fn same() -> String {
    "Same".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteGroupKind {
    /// `gateway.networking.k8s.io` by default.
    #[serde(default = "gateway_group")]
    pub group: String,
    pub kind: String,
}

fn gateway_group() -> String {
    GROUP.into()
}

// === routes: common parts ===

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    /// `gateway.networking.k8s.io` by default.
    #[serde(default = "gateway_group")]
    pub group: String,
    /// `Gateway` by default.
    #[serde(default = "gateway_kind")]
    pub kind: String,
    /// The route's namespace when left out.
    #[serde(default)]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(default)]
    pub section_name: Option<String>,
    #[serde(default)]
    pub port: Option<i32>,
}

fn gateway_kind() -> String {
    "Gateway".into()
}

/// A backend: a Service (or another kind, which is refused with `InvalidKind`) and a port, with a weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    /// `""` (core) by default.
    #[serde(default)]
    pub group: String,
    /// `Service` by default.
    #[serde(default = "service_kind")]
    pub kind: String,
    pub name: String,
    /// The route's namespace when left out (another needs a ReferenceGrant).
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub port: Option<i32>,
    /// 1 by default; 0 sends nothing.
    #[serde(default = "one")]
    pub weight: i32,
    /// Filters applied when this backend is chosen.
    #[serde(default)]
    pub filters: Vec<HttpRouteFilter>,
}

fn service_kind() -> String {
    "Service".into()
}

fn one() -> i32 {
    1
}

/// A header to set or add.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HeaderModifier {
    #[serde(default)]
    pub set: Vec<HttpHeader>,
    #[serde(default)]
    pub add: Vec<HttpHeader>,
    #[serde(default)]
    pub remove: Vec<String>,
}

// === HTTPRoute ===

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: HttpRouteSpec,
    /// As the API server has it (the status writer compares with it); not read by translation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteSpec {
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// One rule matching `/` (PathPrefix) and sending nowhere when left out, as the CRD defaults it.
    #[serde(default = "default_rules")]
    pub rules: Vec<HttpRouteRule>,
}

fn default_rules() -> Vec<HttpRouteRule> {
    vec![HttpRouteRule::default()]
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteRule {
    #[serde(default)]
    pub name: Option<String>,
    /// One match of PathPrefix `/` when left out.
    #[serde(default = "default_matches")]
    pub matches: Vec<HttpRouteMatch>,
    #[serde(default)]
    pub filters: Vec<HttpRouteFilter>,
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
    #[serde(default)]
    pub timeouts: Option<HttpRouteTimeouts>,
}

impl Default for HttpRouteRule {
    fn default() -> Self {
        Self {
            name: None,
            matches: default_matches(),
            filters: Vec::new(),
            backend_refs: Vec::new(),
            timeouts: None,
        }
    }
}

fn default_matches() -> Vec<HttpRouteMatch> {
    vec![HttpRouteMatch::default()]
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteMatch {
    /// PathPrefix `/` when left out.
    #[serde(default)]
    pub path: HttpPathMatch,
    #[serde(default)]
    pub headers: Vec<HttpHeaderMatch>,
    #[serde(default)]
    pub query_params: Vec<HttpQueryParamMatch>,
    #[serde(default)]
    pub method: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpPathMatch {
    /// `Exact`, `PathPrefix` (the default) or `RegularExpression`.
    #[serde(default = "path_prefix", rename = "type")]
    pub type_: String,
    #[serde(default = "slash")]
    pub value: String,
}

impl Default for HttpPathMatch {
    fn default() -> Self {
        Self {
            type_: path_prefix(),
            value: slash(),
        }
    }
}

fn path_prefix() -> String {
    "PathPrefix".into()
}

fn slash() -> String {
    "/".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpHeaderMatch {
    /// `Exact` (the default) or `RegularExpression`.
    #[serde(default = "exact", rename = "type")]
    pub type_: String,
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpQueryParamMatch {
    /// `Exact` (the default) or `RegularExpression`.
    #[serde(default = "exact", rename = "type")]
    pub type_: String,
    pub name: String,
    pub value: String,
}

fn exact() -> String {
    "Exact".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteFilter {
    /// `RequestHeaderModifier`, `ResponseHeaderModifier`, `RequestRedirect`, `URLRewrite`, `RequestMirror`,
    /// `CORS`, `ExtensionRef`.
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub request_header_modifier: Option<HeaderModifier>,
    #[serde(default)]
    pub response_header_modifier: Option<HeaderModifier>,
    #[serde(default)]
    pub request_redirect: Option<RequestRedirect>,
    #[serde(default, rename = "urlRewrite")]
    pub url_rewrite: Option<UrlRewrite>,
    #[serde(default)]
    pub request_mirror: Option<RequestMirror>,
    #[serde(default)]
    pub cors: Option<super::cors::HttpCors>,
    #[serde(default)]
    pub extension_ref: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRedirect {
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub path: Option<PathModifier>,
    #[serde(default)]
    pub port: Option<i32>,
    /// 302 by default.
    #[serde(default = "found")]
    pub status_code: i32,
}

fn found() -> i32 {
    302
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UrlRewrite {
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub path: Option<PathModifier>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathModifier {
    /// `ReplaceFullPath` or `ReplacePrefixMatch`.
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub replace_full_path: Option<String>,
    #[serde(default)]
    pub replace_prefix_match: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestMirror {
    pub backend_ref: BackendObjectReference,
    #[serde(default)]
    pub percent: Option<i32>,
    #[serde(default)]
    pub fraction: Option<Fraction>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendObjectReference {
    #[serde(default)]
    pub group: String,
    #[serde(default = "service_kind")]
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub port: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fraction {
    pub numerator: i32,
    /// 100 by default.
    #[serde(default = "hundred")]
    pub denominator: i32,
}

fn hundred() -> i32 {
    100
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteTimeouts {
    /// A Gateway API duration (`10s`, `1m`, `500ms`, `1h30m`); `0s` disables.
    #[serde(default)]
    pub request: Option<String>,
    #[serde(default)]
    pub backend_request: Option<String>,
}

// === GRPCRoute ===

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRoute {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: GrpcRouteSpec,
    /// As the API server has it (the status writer compares with it); not read by translation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRouteSpec {
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    #[serde(default)]
    pub hostnames: Vec<String>,
    #[serde(default)]
    pub rules: Vec<GrpcRouteRule>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRouteRule {
    #[serde(default)]
    pub name: Option<String>,
    /// Empty: every request.
    #[serde(default)]
    pub matches: Vec<GrpcRouteMatch>,
    #[serde(default)]
    pub filters: Vec<HttpRouteFilter>,
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRouteMatch {
    #[serde(default)]
    pub method: Option<GrpcMethodMatch>,
    #[serde(default)]
    pub headers: Vec<HttpHeaderMatch>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcMethodMatch {
    /// `Exact` (the default) or `RegularExpression`.
    #[serde(default = "exact", rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
}

// === ReferenceGrant ===

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrant {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ReferenceGrantSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrantSpec {
    #[serde(default)]
    pub from: Vec<ReferenceGrantFrom>,
    #[serde(default)]
    pub to: Vec<ReferenceGrantTo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceGrantFrom {
    #[serde(default)]
    pub group: String,
    pub kind: String,
    pub namespace: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceGrantTo {
    #[serde(default)]
    pub group: String,
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
}

impl ReferenceGrant {
    /// Whether this grant (in the target's namespace) lets a `from_kind` of `from_namespace` refer to the
    /// `to_kind` named `to_name`.
    pub fn allows(
        &self,
        from_group: &str,
        from_kind: &str,
        from_namespace: &str,
        to_group: &str,
        to_kind: &str,
        to_name: &str,
    ) -> bool {
        self.spec
            .from
            .iter()
            .any(|f| f.group == from_group && f.kind == from_kind && f.namespace == from_namespace)
            && self
                .spec
                .to
                .iter()
                .any(|t| t.group == to_group && t.kind == to_kind && t.name.as_deref().is_none_or(|n| n == to_name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_as_the_crds_apply_them() {
        let r: HttpRoute = serde_yaml::from_str(
            "metadata: {name: r, namespace: ns}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - backendRefs: [{name: svc, port: 80}]\n  - matches: [{headers: [{name: x, value: y}]}]\n    filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]\n",
        )
        .unwrap();
        let p = &r.spec.parent_refs[0];
        assert_eq!(
            (p.group.as_str(), p.kind.as_str(), p.namespace.as_deref()),
            (GROUP, "Gateway", None)
        );
        let rule = &r.spec.rules[0];
        assert_eq!(rule.matches, vec![HttpRouteMatch::default()], "one match: PathPrefix /");
        assert_eq!(
            (rule.matches[0].path.type_.as_str(), rule.matches[0].path.value.as_str()),
            ("PathPrefix", "/")
        );
        let b = &rule.backend_refs[0];
        assert_eq!(
            (b.kind.as_str(), b.group.as_str(), b.weight, b.port),
            ("Service", "", 1, Some(80))
        );
        let m = &r.spec.rules[1].matches[0];
        assert_eq!(m.path.value, "/");
        assert_eq!(m.headers[0].type_, "Exact");
        let redirect = r.spec.rules[1].filters[0].request_redirect.as_ref().unwrap();
        assert_eq!(redirect.status_code, 302);

        let empty: HttpRoute = serde_yaml::from_str("metadata: {name: r}\nspec: {parentRefs: [{name: gw}]}\n").unwrap();
        assert_eq!(empty.spec.rules.len(), 1, "a route without rules has the default one");

        let g: Gateway = serde_yaml::from_str(
            "metadata: {name: gw}\nspec:\n  gatewayClassName: portico\n  addresses: [{value: 127.0.0.1}]\n  listeners:\n  - {name: http, port: 80, protocol: HTTP}\n  - {name: https, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: cert}]}}\n",
        )
        .unwrap();
        assert_eq!(g.spec.addresses[0].type_, "IPAddress");
        let l = &g.spec.listeners[0];
        assert_eq!(
            (l.allowed_routes.namespaces.from.as_str(), l.allowed_routes.kinds.len()),
            ("Same", 0)
        );
        let tls = g.spec.listeners[1].tls.as_ref().unwrap();
        assert_eq!(
            (tls.mode.as_str(), tls.certificate_refs[0].kind.as_str()),
            ("Terminate", "Secret")
        );
    }

    #[test]
    fn reference_grants() {
        let g: ReferenceGrant = serde_yaml::from_str(
            "metadata: {name: g, namespace: backends}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: apps}]\n  to: [{group: \"\", kind: Service}]\n",
        )
        .unwrap();
        assert!(g.allows(GROUP, "HTTPRoute", "apps", "", "Service", "any"));
        assert!(!g.allows(GROUP, "HTTPRoute", "other", "", "Service", "any"));
        assert!(!g.allows(GROUP, "GRPCRoute", "apps", "", "Service", "any"));
        assert!(!g.allows(GROUP, "HTTPRoute", "apps", "", "Secret", "any"));
    }
}
