//! What a Gateway serves, lowered for the data plane: each bound socket of a Gateway of our class becomes one
//! more listener set of the translation ([`sets`]), its attached rules become paths of its hosts (in the order
//! the spec's precedence tries them), and its listeners' certificates become the set's TLS entries. The table,
//! the certificates and the snapshot are then built as for configured listener sets.
//!
//! A rule's Gateway-specific parts (request conditions, filters, weighted backends, the 500 answer) ride on the
//! path as a [`GatewayRule`], which `model::route::Lowering` turns into the route's matches, filters and
//! backends.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::HeaderName;

use super::attach::{BackendTarget, BoundListener, GatewayAttachment, RuleMatches, Socket};
use super::{HttpRouteFilter, HttpRouteMatch};
use crate::model::route::{FullMatch, RequestMatch, ValueMatch};
use crate::model::translate::Translator;
use crate::model::{
    BackendModel, ClusterState, HostModel, HostPattern, ObjectRef, Options, PathKind, PathModel, PortRef, SetModel,
    TlsModel,
};

/// A Gateway socket as a listener set.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewaySet {
    pub address: SocketAddr,
    pub https: bool,
    /// The certificate Secret served to clients without SNI (or whose name no listener has): the first listener
    /// without a hostname's, else the first listener's. `None` for HTTP.
    pub default_certificate: Option<ObjectRef>,
    pub model: SetModel,
}

/// The Gateway-specific parts of a rule's match, carried by its [`PathModel`].
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayRule {
    /// Method, header and query conditions (`None`: path only).
    pub matches: Option<RequestMatch>,
    /// The rule's filters, validated by attachment, in order.
    pub filters: Vec<HttpRouteFilter>,
    /// The backends, their weights and whether each is usable (an unusable one's share answers 500); empty when
    /// the rule answers 500 or redirects.
    pub backends: Vec<(BackendModel, u32, bool)>,
    /// Per backend (aligned with `backends`), TLS to it as a BackendTLSPolicy says.
    pub backend_tls: Vec<Option<Arc<super::BackendTls>>>,
    /// Every request answers 500 (no usable backend, no redirect).
    pub answers_500: bool,
    pub timeouts: super::attach::RuleTimeouts,
    /// Send to the backends over HTTP/2 without TLS (GRPCRoute; appProtocol `kubernetes.io/h2c`).
    pub h2c: bool,
    /// `RequestMirror`s: where to, and the share of requests mirrored in millionths.
    pub mirrors: Vec<(BackendModel, u32)>,
}

impl GatewayRule {
    /// What the rule adds to its path, for `portico check` and the dashboard: ` [method GET] [header x-a=v]
    /// [query q~re] [filters CORS,URLRewrite] [weights a:3,b:1] [mirror c] [answers 500]`.
    pub fn describe_into(&self, out: &mut String) {
        use std::fmt::Write;
        let value = |v: &ValueMatch| match v {
            ValueMatch::Present => String::new(),
            ValueMatch::Exact(e) => format!("={e}"),
            ValueMatch::Regex(re) => format!("~{}", re.0.as_str()),
        };
        if let Some(m) = &self.matches {
            if let Some(method) = &m.method {
                let _ = write!(out, " [method {method}]");
            }
            for (name, v) in &m.headers {
                let _ = write!(out, " [header {name}{}]", value(v));
            }
            for (name, v) in &m.query {
                let _ = write!(out, " [query {name}{}]", value(v));
            }
        }
        if !self.filters.is_empty() {
            let names: Vec<&str> = self.filters.iter().map(|f| f.type_.as_str()).collect();
            let _ = write!(out, " [filters {}]", names.join(","));
        }
        if self.backends.len() > 1 || self.backends.iter().any(|(_, _, ok)| !ok) {
            let list: Vec<String> = self
                .backends
                .iter()
                .map(|(b, w, ok)| match ok {
                    true => format!("{}:{w}", b.service),
                    false => format!("(invalid):{w}"),
                })
                .collect();
            let _ = write!(out, " [weights {}]", list.join(","));
        }
        for (b, _) in &self.mirrors {
            let _ = write!(out, " [mirror {}]", b.service);
        }
        for ((b, _, _), tls) in self.backends.iter().zip(&self.backend_tls) {
            if let Some(t) = tls {
                let _ = write!(out, " [tls {} name={} policy={}]", b.service, t.hostname, t.policy);
            }
        }
        if self.h2c {
            out.push_str(if self.backend_tls.iter().any(Option::is_some) {
                " [h2]"
            } else {
                " [h2c]"
            });
        }
        if self.answers_500 {
            out.push_str(" [answers 500]");
        }
    }
}

/// One listener set per bound socket of the attached Gateways, ordered by address (a socket shared by two
/// Gateways is served by the first). The sockets of a Gateway `served_by` gives a configured listener set's index
/// are not bound: they come back as `(set index, socket)` pairs, to be merged into that set.
pub fn sets(
    state: &ClusterState,
    attachment: &GatewayAttachment,
    served_by: &dyn Fn(&str, &str) -> Option<usize>,
) -> (Vec<GatewaySet>, Vec<(usize, GatewaySet)>) {
    let opts = Options::NONE;
    let mut resolver = Translator::new(state, &opts, false);
    let mut out: Vec<GatewaySet> = Vec::new();
    let mut merged = Vec::new();
    for g in &attachment.gateways {
        if let Some(set) = served_by(&g.namespace, &g.name) {
            for s in &g.sockets {
                let name = format!("gateway {}/{} {}", g.namespace, g.name, s.address);
                merged.push((set, lower_socket(&name, g, s, &mut resolver)));
            }
            continue;
        }
        for s in &g.sockets {
            if out.iter().any(|o| o.address == s.address) {
                continue;
            }
            let name = format!("gateway {}/{} {}", g.namespace, g.name, s.address);
            out.push(lower_socket(&name, g, s, &mut resolver));
        }
    }
    out.sort_by_key(|s| s.address);
    (out, merged)
}

/// Adds a Gateway socket's hosts (those `set` does not have yet) and certificates to a configured set.
pub fn merge_into(set: &mut SetModel, g: GatewaySet) {
    for h in g.model.hosts {
        if !set.hosts.iter().any(|x| x.host == h.host) {
            set.hosts.push(h);
        }
    }
    set.tls.extend(g.model.tls);
}

fn lower_socket(name: &str, g: &super::attach::GatewayModel, s: &Socket, resolver: &mut Translator<'_>) -> GatewaySet {
    let https = s.protocol == super::attach::Protocol::Https;
    let mut hosts: Vec<HostModel> = Vec::new();
    let mut tls = Vec::new();
    for l in &s.listeners {
        lower_listener(l, resolver, &mut hosts);
        if https {
            if let (Some(h), Some(c)) = (&l.hostname, l.certificates.first()) {
                tls.push(TlsModel {
                    hosts: vec![h.clone()],
                    secret: secret(c),
                    ingress: ObjectRef {
                        kind: "Gateway",
                        namespace: g.namespace.clone(),
                        name: g.name.clone(),
                    },
                });
            }
        }
    }
    let default_certificate = https
        .then(|| {
            s.listeners
                .iter()
                .find(|l| l.hostname.is_none())
                .or(s.listeners.first())
                .and_then(|l| l.certificates.first())
                .map(secret)
        })
        .flatten();
    GatewaySet {
        address: s.address,
        https,
        default_certificate,
        model: SetModel {
            name: name.into(),
            hosts: hosts.into_iter().map(Arc::new).collect(),
            default_backend: None,
            tls,
        },
    }
}

fn secret(c: &super::attach::SecretRef) -> ObjectRef {
    ObjectRef {
        kind: "Secret",
        namespace: c.namespace.clone(),
        name: c.name.clone(),
    }
}

fn host_pattern(name: &str) -> HostPattern {
    match name.strip_prefix("*.") {
        Some(suffix) => HostPattern::Wildcard(suffix.to_ascii_lowercase()),
        None => HostPattern::Exact(name.to_ascii_lowercase()),
    }
}

fn lower_listener(l: &BoundListener, resolver: &mut Translator<'_>, hosts: &mut Vec<HostModel>) {
    for (rule, i) in l.ordered_matches() {
        let lowered = match &rule.matches {
            RuleMatches::Http(matches) => matches.get(i).and_then(lower_match),
            RuleMatches::Grpc(matches) => matches.get(i).and_then(lower_grpc_match),
        };
        let Some((path, kind, conditions)) = lowered else {
            continue;
        };
        // gRPC is HTTP/2: to plaintext backends, h2c; an HTTPRoute's backends by their `appProtocol`.
        let h2c = matches!(rule.matches, RuleMatches::Grpc(_))
            || rule.backends.iter().any(|b| {
                matches!(&b.target, BackendTarget::Service(s) if s.app_protocol.as_deref() == Some("kubernetes.io/h2c"))
            });
        let (backends, backend_tls): (Vec<(BackendModel, u32, bool)>, Vec<_>) = if rule.answers_500() {
            Default::default()
        } else {
            rule.backends
                .iter()
                .map(|b| match &b.target {
                    BackendTarget::Service(svc) => ((backend(resolver, svc), b.weight, true), svc.tls.clone()),
                    BackendTarget::Invalid { .. } => ((unusable(&rule.route.namespace), b.weight, false), None),
                })
                .unzip()
        };
        let g = Arc::new(GatewayRule {
            matches: conditions,
            filters: rule.filters.iter().map(|f| f.filter.clone()).collect(),
            answers_500: rule.answers_500(),
            timeouts: rule.timeouts,
            h2c,
            mirrors: rule
                .filters
                .iter()
                .filter_map(|f| {
                    let Some(BackendTarget::Service(svc)) = &f.mirror else {
                        return None;
                    };
                    let m = f.filter.request_mirror.as_ref()?;
                    let share = match (&m.fraction, m.percent) {
                        (Some(fr), _) if fr.denominator > 0 => {
                            i64::from(fr.numerator.clamp(0, fr.denominator)) * 1_000_000 / i64::from(fr.denominator)
                        }
                        (_, Some(p)) => i64::from(p.clamp(0, 100)) * 10_000,
                        _ => 1_000_000,
                    };
                    Some((backend(resolver, svc), u32::try_from(share).unwrap_or(1_000_000)))
                })
                .collect(),
            backends,
            backend_tls,
        });
        let main = g
            .backends
            .first()
            .map_or_else(|| unusable(&rule.route.namespace), |(b, _, _)| b.clone());
        let names: Vec<HostPattern> = if rule.hostnames.is_empty() {
            vec![l.hostname.as_deref().map_or(HostPattern::Any, host_pattern)]
        } else {
            rule.hostnames.iter().map(|h| host_pattern(h)).collect()
        };
        for host in names {
            let p = PathModel {
                path: path.clone(),
                kind,
                backend: main.clone(),
                ingress: rule.route.object(),
                https_redirect: false,
                policy: Arc::default(),
                canary: None,
                gateway: Some(g.clone()),
            };
            match hosts.iter_mut().find(|h| h.host == host) {
                Some(h) => h.paths.push(p),
                None => hosts.push(HostModel { host, paths: vec![p] }),
            }
        }
    }
}

/// The backend of a reference that cannot be served: no Service, no endpoints.
fn unusable(namespace: &str) -> BackendModel {
    BackendModel {
        namespace: namespace.into(),
        service: "".into(),
        port: PortRef::Number(0),
        endpoints: Vec::new(),
    }
}

fn backend(resolver: &mut Translator<'_>, svc: &super::attach::ServiceBackend) -> BackendModel {
    let port = PortRef::Number(i32::from(svc.port));
    let endpoints = resolver.endpoints(&svc.namespace, &svc.name, &port).unwrap_or_default();
    BackendModel {
        namespace: svc.namespace.as_str().into(),
        service: svc.name.as_str().into(),
        port,
        endpoints,
    }
}

/// A path `RegularExpression` as the table's regex path: the whole path, case-sensitive (the table anchors the
/// start and matches regex paths without case).
pub(crate) fn regex_path(pattern: &str) -> String {
    format!("(?-i:{pattern})$")
}

/// A GRPCRoute method match's path: `/service/method`, Exact or regular expressions (either may be left out:
/// any service, any method).
pub(crate) fn grpc_path(m: &super::GrpcMethodMatch) -> (String, PathKind) {
    let (svc, method) = (m.service.as_deref(), m.method.as_deref());
    if m.type_ == "RegularExpression" {
        let svc = svc.unwrap_or("[^/]+");
        let method = method.unwrap_or("[^/]+");
        return (regex_path(&format!("/(?:{svc})/(?:{method})")), PathKind::Regex);
    }
    match (svc, method) {
        (Some(svc), Some(method)) => (format!("/{svc}/{method}"), PathKind::Exact),
        (Some(svc), None) => (format!("/{svc}"), PathKind::Prefix),
        (None, Some(method)) => (
            regex_path(&format!("/[^/]+/{}", regex::escape(method))),
            PathKind::Regex,
        ),
        (None, None) => ("/".to_string(), PathKind::Prefix),
    }
}

fn value_match(type_: &str, value: &str) -> Option<ValueMatch> {
    match type_ {
        "Exact" => Some(ValueMatch::Exact(value.into())),
        "RegularExpression" => FullMatch::new(value).ok().map(ValueMatch::Regex),
        _ => None,
    }
}

fn header_matches(rm: &mut RequestMatch, headers: &[super::HttpHeaderMatch]) -> Option<()> {
    for h in headers {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        rm.headers.push((name, value_match(&h.type_, &h.value)?));
    }
    Some(())
}

/// A match's path (normalised as Ingress paths are), kind and further conditions; `None` when it cannot be
/// served (attachment refuses such routes first: an unparsable header name, method or regular expression).
fn lower_match(m: &HttpRouteMatch) -> Option<(String, PathKind, Option<RequestMatch>)> {
    let kind = match m.path.type_.as_str() {
        "Exact" => PathKind::Exact,
        "PathPrefix" => PathKind::Prefix,
        "RegularExpression" => PathKind::Regex,
        _ => return None,
    };
    let mut path = match kind {
        PathKind::Regex => regex_path(&m.path.value),
        _ => m.path.value.clone(),
    };
    if kind == PathKind::Prefix && path.len() > 1 {
        while path.len() > 1 && path.ends_with('/') {
            path.pop();
        }
    }
    let mut rm = RequestMatch::default();
    if let Some(method) = &m.method {
        rm.method = Some(http::Method::from_bytes(method.as_bytes()).ok()?);
    }
    header_matches(&mut rm, &m.headers)?;
    for q in &m.query_params {
        rm.query
            .push((q.name.as_str().into(), value_match(&q.type_, &q.value)?));
    }
    let conditions = (rm != RequestMatch::default()).then_some(rm);
    Some((path, kind, conditions))
}

/// A GRPCRoute match as a path and conditions: service and method give the Exact path `/service/method`, a
/// service alone the prefix `/service`, a method alone or a regular expression a regex path, neither any path.
fn lower_grpc_match(m: &super::GrpcRouteMatch) -> Option<(String, PathKind, Option<RequestMatch>)> {
    let (path, kind) = match &m.method {
        None => ("/".to_string(), PathKind::Prefix),
        Some(mm) => grpc_path(mm),
    };
    let mut rm = RequestMatch::default();
    header_matches(&mut rm, &m.headers)?;
    let conditions = (rm != RequestMatch::default()).then_some(rm);
    Some((path, kind, conditions))
}
