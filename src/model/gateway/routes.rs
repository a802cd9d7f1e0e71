//! Route attachment: each HTTPRoute and GRPCRoute against the listeners its parentRefs select, its rules
//! validated and its backendRefs resolved. Fills the listeners' attached rules and counts, and returns the
//! routes' `status.parents[]` entries.
//!
//! Per parentRef to one of our Gateways, `Accepted` is false with the first of:
//! `NoMatchingParent` (no listener has the sectionName/port), `NotAllowedByListeners` (`allowedRoutes` refuses
//! the route's namespace or kind on every selected listener), `NoMatchingListenerHostname` (no hostname in
//! common), `UnsupportedValue`/`IncompatibleFilters` (a rule uses something Portico does not serve: the route is
//! not served at all). `ResolvedRefs` is false when a backendRef (or mirror) is not a Service (`InvalidKind`),
//! is in another namespace without a ReferenceGrant (`RefNotPermitted`), or names no Service or port
//! (`BackendNotFound`); the route serves all the same, that backend's share answering 500.
//!
//! Filters served: `RequestHeaderModifier`, `ResponseHeaderModifier`, `RequestRedirect`, `URLRewrite`,
//! `RequestMirror`, `CORS` (GRPCRoute: the header modifiers and `RequestMirror`). Not served: `ExtensionRef`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::attach::{
    AttachedRule, BackendTarget, GatewayWork, ParentStatus, RouteKind, RouteRef, RouteStatus, RuleBackend, RuleFilter,
    RuleMatches, RuleTimeouts, ServiceBackend,
};
use super::conditions::{observed, reasons, types, Condition};
use super::precedence::{Precedence, Specificity};
use super::{hostname, refs, serve};
use super::{BackendObjectReference, BackendRef, HttpRouteFilter, ParentReference, GROUP};
use crate::model::route::{compile_path, FullMatch};
use crate::model::{ClusterState, Diagnostic};

type Problem = (&'static str, String);

/// Backend `appProtocol`s that need TLS to the backend: without a BackendTLSPolicy to verify it, such a backendRef
/// is unresolved (`UnsupportedProtocol`) rather than sent plaintext or unverified. Any other value (none, `http`,
/// `kubernetes.io/ws`, `kubernetes.io/h2c`...) is HTTP/1.1 (upgrades included), h2c for `kubernetes.io/h2c`; a
/// BackendTLSPolicy makes any of them TLS (HTTP/2 over TLS for `kubernetes.io/h2c` and GRPCRoutes). Compared
/// without case (IANA service names are; the conformance suite writes `HTTPS`).
const TLS_APP_PROTOCOLS: [&str; 3] = ["kubernetes.io/wss", "https", "tls"];

/// What backendRefs resolve against: Services by namespace and name, and the ReferenceGrants.
pub(super) struct Lookup<'a> {
    services: HashMap<(&'a str, &'a str), &'a Service>,
    grants: &'a [super::ReferenceGrant],
    /// The BackendTLSPolicies, validated.
    pub(super) tls: super::backendtls::Policies,
}

impl<'a> Lookup<'a> {
    fn new(state: &'a ClusterState) -> Self {
        let services = state
            .services
            .iter()
            .filter_map(|s| Some(((s.metadata.namespace.as_deref()?, s.metadata.name.as_deref()?), s)))
            .collect();
        let g = &state.gateway;
        Self {
            services,
            grants: &g.reference_grants,
            tls: super::backendtls::Policies::new(&g.backend_tls_policies, &g.config_maps, &state.secrets),
        }
    }
}

/// A route of either kind, its rules prepared (validated, backends resolved) once for all its parents.
pub(super) struct Prepared<'a> {
    pub(super) route: RouteRef,
    generation: Option<i64>,
    parent_refs: &'a [ParentReference],
    hostnames: &'a [String],
    pub(super) rules: Vec<AttachedRule>,
    /// The first unsupported value: the route is not accepted.
    pub(super) unsupported: Option<Problem>,
    /// Every backend problem.
    unresolved: Vec<Problem>,
    /// The BackendTLSPolicies (indices in [`Lookup::tls`]) governing the route's backends.
    policies: BTreeSet<usize>,
}

/// Attaches every route; returns their status and the BackendTLSPolicies (with the Gateways whose routes use
/// them).
pub(crate) fn attach_routes(
    state: &ClusterState,
    gateways: &mut [GatewayWork],
    diags: &mut Vec<Diagnostic>,
) -> (Vec<RouteStatus>, Vec<super::backendtls::PolicyState>) {
    let g = &state.gateway;
    let mut lookup = Lookup::new(state);
    lookup.tls.diagnostics(&g.backend_tls_policies, diags);
    // A policy for a port the Service does not have attaches to nothing: say so.
    for (p, state) in g.backend_tls_policies.iter().zip(&lookup.tls.states) {
        for (i, t) in p.spec.target_refs.iter().enumerate() {
            let (Some(section), true) = (&t.section_name, t.group.is_empty() && t.kind == "Service") else {
                continue;
            };
            let Some(svc) = lookup.services.get(&(state.namespace.as_str(), t.name.as_str())) else {
                continue;
            };
            let ports = svc.spec.as_ref().and_then(|s| s.ports.as_ref());
            if !ports.is_some_and(|ps| ps.iter().any(|p| p.name.as_deref() == Some(section))) {
                diags.push(Diagnostic::object(
                    state.object(),
                    format!(
                        "spec.targetRefs[{i}]: Service {}/{} has no port named {section}; the policy applies to none of its ports",
                        state.namespace, t.name
                    ),
                ));
            }
        }
    }
    let mut prepared: Vec<Prepared> = Vec::new();
    for r in &g.http_routes {
        let mut p = Prepared::new(RouteKind::Http, &r.metadata, &r.spec.parent_refs, &r.spec.hostnames);
        for (i, rule) in r.spec.rules.iter().enumerate() {
            let field = format!("spec.rules[{i}]");
            let precedence = rule
                .matches
                .iter()
                .enumerate()
                .map(|(m, x)| p.precedence(&r.metadata, Specificity::http(x), i, m))
                .collect();
            for (m, x) in rule.matches.iter().enumerate() {
                p.check(validate_http_match(x).map(|e| format!("{field}.matches[{m}]: {e}")));
            }
            let mut filters = p.filters(&lookup, RouteKind::Http, &rule.filters, &field);
            let mut backends = p.backends(&lookup, &rule.backend_refs, &field);
            p.backend_filters(&mut filters, &mut backends, &field);
            p.check(check_prefix_replacement(&rule.matches, &filters).map(|e| format!("{field}.{e}")));
            let timeouts = match &rule.timeouts {
                None => RuleTimeouts::default(),
                Some(t) => {
                    let parse = |v: &Option<String>, name: &str| match v {
                        None => Ok(None),
                        Some(v) => parse_duration(v)
                            .map(Some)
                            .ok_or_else(|| format!("{field}.timeouts.{name}: {v:?} is not a duration")),
                    };
                    match (
                        parse(&t.request, "request"),
                        parse(&t.backend_request, "backendRequest"),
                    ) {
                        (Ok(request), Ok(backend_request)) => {
                            let timeouts = RuleTimeouts {
                                request,
                                backend_request,
                            };
                            p.check(timeouts.check().map(|e| format!("{field}.timeouts: {e}")));
                            timeouts
                        }
                        (Err(e), _) | (_, Err(e)) => {
                            p.check(Some(e));
                            RuleTimeouts::default()
                        }
                    }
                }
            };
            p.rules.push(AttachedRule {
                route: p.route.clone(),
                hostnames: Vec::new(),
                index: i,
                name: rule.name.clone(),
                matches: RuleMatches::Http(rule.matches.clone()),
                precedence,
                filters,
                backends,
                timeouts,
            });
        }
        prepared.push(p);
    }
    for r in &g.grpc_routes {
        let mut p = Prepared::new(RouteKind::Grpc, &r.metadata, &r.spec.parent_refs, &r.spec.hostnames);
        let rules: Vec<super::GrpcRouteRule> = if r.spec.rules.is_empty() {
            vec![Default::default()]
        } else {
            r.spec.rules.clone()
        };
        for (i, rule) in rules.iter().enumerate() {
            let field = format!("spec.rules[{i}]");
            let matches = if rule.matches.is_empty() {
                vec![super::GrpcRouteMatch::default()]
            } else {
                rule.matches.clone()
            };
            let precedence = matches
                .iter()
                .enumerate()
                .map(|(m, x)| p.precedence(&r.metadata, Specificity::grpc(x), i, m))
                .collect();
            for (m, x) in matches.iter().enumerate() {
                p.check(validate_grpc_match(x).map(|e| format!("{field}.matches[{m}]: {e}")));
            }
            let mut filters = p.filters(&lookup, RouteKind::Grpc, &rule.filters, &field);
            let mut backends = p.backends(&lookup, &rule.backend_refs, &field);
            p.backend_filters(&mut filters, &mut backends, &field);
            p.rules.push(AttachedRule {
                route: p.route.clone(),
                hostnames: Vec::new(),
                index: i,
                name: rule.name.clone(),
                matches: RuleMatches::Grpc(matches),
                precedence,
                filters,
                backends,
                timeouts: RuleTimeouts::default(),
            });
        }
        prepared.push(p);
    }
    prepared.extend(super::l4routes::prepare(state, &lookup));
    prepared.sort_by(|a, b| a.route.cmp(&b.route));

    let mut out = Vec::new();
    for mut p in prepared {
        let used = std::mem::take(&mut p.policies);
        let route_ns = p.route.namespace.clone();
        if let Some(status) = p.attach(state, gateways, diags) {
            for i in used {
                let ancestors = &mut lookup.tls.states[i].ancestors;
                for parent in &status.parents {
                    let ns = parent.parent_ref.namespace.clone().unwrap_or_else(|| route_ns.clone());
                    ancestors.insert((ns, parent.parent_ref.name.clone()));
                }
            }
            out.push(status);
        }
    }
    (out, lookup.tls.states)
}

impl<'a> Prepared<'a> {
    pub(super) fn new(
        kind: RouteKind,
        meta: &ObjectMeta,
        parent_refs: &'a [ParentReference],
        hostnames: &'a [String],
    ) -> Self {
        Self {
            route: RouteRef {
                kind,
                namespace: meta.namespace.clone().unwrap_or_default(),
                name: meta.name.clone().unwrap_or_default(),
            },
            generation: meta.generation,
            parent_refs,
            hostnames,
            rules: Vec::new(),
            unsupported: None,
            unresolved: Vec::new(),
            policies: BTreeSet::new(),
        }
    }

    fn precedence(&self, meta: &ObjectMeta, specificity: Specificity, rule: usize, m: usize) -> Precedence {
        Precedence {
            specificity,
            created: meta.creation_timestamp.as_ref().map(|t| t.0),
            namespace: self.route.namespace.clone(),
            name: self.route.name.clone(),
            rule,
            match_index: m,
        }
    }

    /// Records an unsupported value (the first one is the route's reason).
    fn check(&mut self, problem: Option<String>) {
        if let Some(msg) = problem {
            self.unsupported.get_or_insert((reasons::UNSUPPORTED_VALUE, msg));
        }
    }

    fn filters(
        &mut self,
        lookup: &Lookup,
        kind: RouteKind,
        filters: &[HttpRouteFilter],
        field: &str,
    ) -> Vec<RuleFilter> {
        let types: Vec<&str> = filters.iter().map(|f| f.type_.as_str()).collect();
        if types.contains(&"RequestRedirect") && types.contains(&"URLRewrite") {
            self.unsupported.get_or_insert((
                reasons::INCOMPATIBLE_FILTERS,
                format!("{field}.filters: RequestRedirect and URLRewrite cannot be combined"),
            ));
        }
        let mut out = Vec::new();
        for (i, f) in filters.iter().enumerate() {
            let at = format!("{field}.filters[{i}]");
            self.check(validate_filter(kind, f).map(|e| format!("{at}: {e}")));
            let mirror = f
                .request_mirror
                .as_ref()
                .filter(|_| f.type_ == "RequestMirror")
                .map(|m| {
                    let mirror_at = format!("{at}.requestMirror.backendRef");
                    let mut target = self.resolve(lookup, &m.backend_ref, &mirror_at);
                    if matches!(&target, BackendTarget::Service(s) if s.tls.is_some()) {
                        target = BackendTarget::Invalid {
                            reason: reasons::UNSUPPORTED_PROTOCOL,
                            message: format!(
                                "{mirror_at}: mirroring to a backend that a BackendTLSPolicy sends TLS to is not supported"
                            ),
                        };
                    }
                    if let BackendTarget::Invalid { reason, message } = &target {
                        self.unresolved.push((reason, message.clone()));
                    }
                    target
                });
            out.push(RuleFilter {
                filter: f.clone(),
                mirror,
            });
        }
        out
    }

    pub(super) fn backends(&mut self, lookup: &Lookup, backend_refs: &[BackendRef], field: &str) -> Vec<RuleBackend> {
        let mut out = Vec::new();
        for (i, b) in backend_refs.iter().enumerate() {
            let at = format!("{field}.backendRefs[{i}]");
            let object = BackendObjectReference {
                group: b.group.clone(),
                kind: b.kind.clone(),
                name: b.name.clone(),
                namespace: b.namespace.clone(),
                port: b.port,
            };
            let target = self.resolve(lookup, &object, &at);
            if let BackendTarget::Invalid { reason, message } = &target {
                self.unresolved.push((reason, message.clone()));
            }
            let filters = self.filters(lookup, self.route.kind, &b.filters, &at);
            out.push(RuleBackend {
                weight: u32::try_from(b.weight).unwrap_or(0),
                target,
                filters,
            });
        }
        out
    }

    /// A backendRef's own filters: those of a rule's only backendRef act as the rule's (after them); on one of
    /// several backendRefs they are not served yet, so the route is refused rather than run without them.
    fn backend_filters(&mut self, filters: &mut Vec<RuleFilter>, backends: &mut [RuleBackend], field: &str) {
        if let [only] = backends {
            filters.append(&mut only.filters);
            return;
        }
        if let Some(i) = backends.iter().position(|b| !b.filters.is_empty()) {
            self.check(Some(format!(
                "{field}.backendRefs[{i}].filters: filters on one of several backendRefs are not supported (on a rule's only backendRef, or on the rule, they are)"
            )));
        }
    }

    /// A backendRef (or mirror) to a Service port.
    fn resolve(&mut self, lookup: &Lookup, b: &BackendObjectReference, at: &str) -> BackendTarget {
        let invalid = |reason, message: String| BackendTarget::Invalid { reason, message };
        let route_ns = self.route.namespace.as_str();
        let ns = b.namespace.as_deref().unwrap_or(route_ns);
        if !b.group.is_empty() || b.kind != "Service" {
            let group = if b.group.is_empty() { "core" } else { &b.group };
            return invalid(
                reasons::INVALID_KIND,
                format!("{at}: {group}/{} is not supported (Service is)", b.kind),
            );
        }
        let kind = self.route.kind.kind();
        if !refs::permitted(lookup.grants, kind, route_ns, "", "Service", ns, &b.name) {
            return invalid(
                reasons::REF_NOT_PERMITTED,
                format!(
                    "{at}: Service {ns}/{} is in another namespace and no ReferenceGrant allows it",
                    b.name
                ),
            );
        }
        let Some(svc) = lookup.services.get(&(ns, b.name.as_str())) else {
            return invalid(
                reasons::BACKEND_NOT_FOUND,
                format!("{at}: Service {ns}/{} not found", b.name),
            );
        };
        let Some(port) = b.port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0) else {
            return invalid(
                reasons::BACKEND_NOT_FOUND,
                format!("{at}: a port is required for Service {ns}/{}", b.name),
            );
        };
        let spec = svc.spec.as_ref();
        let external = spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName");
        let ports = spec.and_then(|s| s.ports.as_ref());
        let found = ports.and_then(|ps| ps.iter().find(|p| p.port == i32::from(port)));
        if found.is_none() && !external && ports.is_some_and(|ps| !ps.is_empty()) {
            return invalid(
                reasons::BACKEND_NOT_FOUND,
                format!("{at}: Service {ns}/{} has no port {port}", b.name),
            );
        }
        let app_protocol = found.and_then(|p| p.app_protocol.clone());
        let port_name = found.and_then(|p| p.name.as_deref());
        // BackendTLSPolicy applies to the routes the gateway terminates (not to TCPRoutes and passthrough).
        let policies = match self.route.kind {
            RouteKind::Http | RouteKind::Grpc => lookup.tls.for_port(ns, &b.name, port_name),
            RouteKind::Tls | RouteKind::Tcp => &[],
        };
        // The route's Gateways are ancestors of every policy of the port (the conflicted ones get status too).
        self.policies.extend(policies.iter().copied());
        let tls = match policies.first().map(|&i| &lookup.tls.states[i]) {
            Some(p) => match &p.outcome {
                Ok(t) => Some(t.clone()),
                Err(r) => {
                    return invalid(
                        reasons::INVALID_BACKEND_TLS_POLICY,
                        format!(
                            "{at}: Service {ns}/{} port {port} is targeted by BackendTLSPolicy {}/{}, which cannot be used: {}",
                            b.name, p.namespace, p.name, r.message
                        ),
                    );
                }
            },
            None => None,
        };
        if let Some(tls) = app_protocol
            .as_deref()
            .filter(|p| TLS_APP_PROTOCOLS.iter().any(|t| t.eq_ignore_ascii_case(p)) && tls.is_none())
        {
            return invalid(
                reasons::UNSUPPORTED_PROTOCOL,
                format!(
                    "{at}: Service {ns}/{} port {port} has appProtocol {tls}, and no BackendTLSPolicy says how to verify its certificate",
                    b.name
                ),
            );
        }
        BackendTarget::Service(ServiceBackend {
            namespace: ns.to_string(),
            name: b.name.clone(),
            port,
            app_protocol,
            tls,
        })
    }

    /// Status for each parentRef to one of our Gateways, and the rules onto the listeners. `None`: the route
    /// has no parent of ours.
    fn attach(
        self,
        state: &ClusterState,
        gateways: &mut [GatewayWork],
        diags: &mut Vec<Diagnostic>,
    ) -> Option<RouteStatus> {
        let resolved = match self.unresolved.first() {
            None => Condition::new(
                types::RESOLVED_REFS,
                true,
                reasons::RESOLVED_REFS,
                "references resolved",
            ),
            Some((reason, _)) => {
                let all: Vec<&str> = self.unresolved.iter().map(|(_, m)| m.as_str()).collect();
                Condition::new(types::RESOLVED_REFS, false, reason, all.join("; "))
            }
        };
        let mut parents: Vec<ParentStatus> = Vec::new();
        // (gateway, listener) pairs the route is attached to already (through another parentRef).
        let mut attached: HashSet<(usize, usize)> = HashSet::new();
        let object = self.route.object();
        for (pi, pref) in self.parent_refs.iter().enumerate() {
            if pref.group != GROUP || pref.kind != "Gateway" {
                continue;
            }
            let gw_ns = pref.namespace.as_deref().unwrap_or(&self.route.namespace);
            let Some(gi) = gateways
                .iter()
                .position(|g| g.namespace == gw_ns && g.name == pref.name)
            else {
                continue;
            };
            if parents.iter().any(|p| p.parent_ref == *pref) {
                continue;
            }
            let gw = &mut gateways[gi];
            let accepted = self.accept(pref, gw, gi, state, &mut attached);
            let accepted = match accepted {
                Ok(()) => Condition::new(types::ACCEPTED, true, reasons::ACCEPTED, "accepted"),
                Err((reason, msg)) => {
                    diags.push(Diagnostic::object(
                        object.clone(),
                        format!("spec.parentRefs[{pi}] (Gateway {}): {msg}", gw.gateway_ref()),
                    ));
                    Condition::new(types::ACCEPTED, false, reason, msg)
                }
            };
            parents.push(ParentStatus {
                parent_ref: pref.clone(),
                conditions: observed(vec![accepted, resolved.clone()], self.generation),
            });
        }
        if parents.is_empty() {
            return None;
        }
        for (_, msg) in &self.unresolved {
            diags.push(Diagnostic::object(object.clone(), msg.clone()));
        }
        Some(RouteStatus {
            route: self.route,
            parents,
        })
    }

    /// Attaches to the listeners of `gw` that `pref` selects; why not, when it does not.
    fn accept(
        &self,
        pref: &ParentReference,
        gw: &mut GatewayWork,
        gi: usize,
        state: &ClusterState,
        attached: &mut HashSet<(usize, usize)>,
    ) -> Result<(), Problem> {
        let kind = self.route.kind;
        let route_ns = self.route.namespace.as_str();
        let candidates: Vec<usize> = (0..gw.listeners.len())
            .filter(|i| {
                let l = &gw.listeners[*i];
                pref.section_name.as_deref().is_none_or(|s| s == l.name)
                    && pref.port.is_none_or(|p| p == i32::from(l.port))
            })
            .collect();
        if candidates.is_empty() {
            let mut what = Vec::new();
            if let Some(s) = &pref.section_name {
                what.push(format!("named {s}"));
            }
            if let Some(p) = pref.port {
                what.push(format!("on port {p}"));
            }
            let what = if what.is_empty() {
                "at all".to_string()
            } else {
                what.join(" ")
            };
            return Err((
                reasons::NO_MATCHING_PARENT,
                format!("the Gateway has no listener {what}"),
            ));
        }
        let allowed: Vec<usize> = candidates
            .into_iter()
            .filter(|i| {
                let l = &gw.listeners[*i];
                l.supported_kinds.contains(&kind)
                    && refs::namespace_allowed(
                        &l.allowed.namespaces,
                        &gw.namespace,
                        route_ns,
                        &state.gateway.namespaces,
                    )
            })
            .collect();
        if allowed.is_empty() {
            return Err((
                reasons::NOT_ALLOWED_BY_LISTENERS,
                format!(
                    "no listener allows {}s from namespace {route_ns} (allowedRoutes)",
                    kind.kind()
                ),
            ));
        }
        let matched: Vec<(usize, Vec<String>)> = allowed
            .into_iter()
            .filter_map(|i| hostname::effective(gw.listeners[i].hostname.as_deref(), self.hostnames).map(|h| (i, h)))
            .collect();
        if matched.is_empty() {
            return Err((
                reasons::NO_MATCHING_LISTENER_HOSTNAME,
                format!(
                    "no listener hostname matches the route's hostnames ({})",
                    self.hostnames.join(", ")
                ),
            ));
        }
        let serve = self.unsupported.is_none() && gw.accepted;
        for (li, hostnames) in matched {
            if !attached.insert((gi, li)) {
                continue;
            }
            let l = &mut gw.listeners[li];
            l.attached += 1;
            if serve && l.serving() {
                l.rules.extend(self.rules.iter().map(|r| AttachedRule {
                    hostnames: hostnames.clone(),
                    ..r.clone()
                }));
            }
        }
        match &self.unsupported {
            Some(problem) => Err(problem.clone()),
            None => Ok(()),
        }
    }
}

// === validation ===

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

fn check_regex(what: &str, pattern: &str) -> Option<String> {
    FullMatch::new(pattern).err().map(|e| format!("{what} {pattern:?} {e}"))
}

fn check_regex_path(what: &str, pattern: &str, path: &str) -> Option<String> {
    compile_path(path).err().map(|e| format!("{what} {pattern:?} {e}"))
}

fn check_string_match(what: &str, type_: &str, value: &str) -> Option<String> {
    match type_ {
        "Exact" => None,
        "RegularExpression" => check_regex(what, value),
        t => Some(format!("{what} match type {t} is not supported")),
    }
}

fn validate_http_match(m: &super::HttpRouteMatch) -> Option<String> {
    let path = &m.path;
    let path_problem = match path.type_.as_str() {
        "Exact" | "PathPrefix" if !path.value.starts_with('/') => {
            Some(format!("path {:?} does not start with /", path.value))
        }
        "Exact" | "PathPrefix" => None,
        "RegularExpression" => check_regex_path("path", &path.value, &serve::regex_path(&path.value)),
        t => Some(format!("path match type {t} is not supported")),
    };
    path_problem
        .or_else(|| {
            m.headers
                .iter()
                .find_map(|h| check_string_match(&format!("header {}", h.name), &h.type_, &h.value))
        })
        .or_else(|| {
            m.query_params
                .iter()
                .find_map(|q| check_string_match(&format!("query parameter {}", q.name), &q.type_, &q.value))
        })
        .or_else(|| {
            m.method
                .as_deref()
                .filter(|x| !METHODS.contains(x))
                .map(|x| format!("method {x} is not supported"))
        })
}

fn validate_grpc_match(m: &super::GrpcRouteMatch) -> Option<String> {
    let method = m.method.as_ref().and_then(|x| match x.type_.as_str() {
        "Exact" => None,
        "RegularExpression" => {
            let what = format!(
                "service {:?} and method {:?}",
                x.service.as_deref().unwrap_or(""),
                x.method.as_deref().unwrap_or("")
            );
            let (path, _) = serve::grpc_path(x);
            compile_path(&path).err().map(|e| format!("{what}: the pattern {e}"))
        }
        t => Some(format!("method match type {t} is not supported")),
    });
    method.or_else(|| {
        m.headers
            .iter()
            .find_map(|h| check_string_match(&format!("header {}", h.name), &h.type_, &h.value))
    })
}

/// `ReplacePrefixMatch` (in `URLRewrite` or `RequestRedirect`) needs every match of the rule to be a
/// `PathPrefix` (the spec refuses the route otherwise).
fn check_prefix_replacement(matches: &[super::HttpRouteMatch], filters: &[RuleFilter]) -> Option<String> {
    let replaces_prefix = filters.iter().any(|f| {
        let paths = [
            f.filter.url_rewrite.as_ref().and_then(|r| r.path.as_ref()),
            f.filter.request_redirect.as_ref().and_then(|r| r.path.as_ref()),
        ];
        paths.into_iter().flatten().any(|p| p.type_ == "ReplacePrefixMatch")
    });
    let other = matches.iter().position(|m| m.path.type_ != "PathPrefix");
    match (replaces_prefix, other) {
        (true, Some(i)) => Some(format!(
            "matches[{i}]: ReplacePrefixMatch needs PathPrefix matches, not {}",
            matches[i].path.type_
        )),
        _ => None,
    }
}

/// Why a filter cannot be served, if it cannot.
fn validate_filter(kind: RouteKind, f: &HttpRouteFilter) -> Option<String> {
    let supported: &[&str] = match kind {
        RouteKind::Http => &[
            "RequestHeaderModifier",
            "ResponseHeaderModifier",
            "RequestRedirect",
            "URLRewrite",
            "RequestMirror",
            "CORS",
        ],
        RouteKind::Grpc => &["RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror"],
        RouteKind::Tls | RouteKind::Tcp => &[],
    };
    if !supported.contains(&f.type_.as_str()) {
        return Some(format!("filter {} is not supported", f.type_));
    }
    let missing = |field: &str| Some(format!("filter {} without {field}", f.type_));
    let path_type = |p: &Option<super::PathModifier>| {
        p.as_ref().and_then(|p| match p.type_.as_str() {
            "ReplaceFullPath" | "ReplacePrefixMatch" => None,
            t => Some(format!("path modifier {t} is not supported")),
        })
    };
    match f.type_.as_str() {
        "RequestHeaderModifier" if f.request_header_modifier.is_none() => missing("requestHeaderModifier"),
        "ResponseHeaderModifier" if f.response_header_modifier.is_none() => missing("responseHeaderModifier"),
        "RequestMirror" if f.request_mirror.is_none() => missing("requestMirror"),
        "CORS" => match &f.cors {
            None => missing("cors"),
            Some(c) => c.check(),
        },
        "URLRewrite" => match &f.url_rewrite {
            None => missing("urlRewrite"),
            Some(r) => path_type(&r.path),
        },
        "RequestRedirect" => match &f.request_redirect {
            None => missing("requestRedirect"),
            Some(r) => {
                if let Some(s) = r.scheme.as_deref().filter(|s| !["http", "https"].contains(s)) {
                    Some(format!("redirect scheme {s} is not supported"))
                } else if ![301, 302, 303, 307, 308].contains(&r.status_code) {
                    Some(format!("redirect status code {} is not supported", r.status_code))
                } else if r.port.is_some_and(|p| !(1..=65535).contains(&p)) {
                    Some(format!("redirect port {} is not a port", r.port.unwrap_or_default()))
                } else {
                    path_type(&r.path)
                }
            }
        },
        _ => None,
    }
}

/// A Gateway API duration: one to four `<number><unit>` parts, units `h`, `m`, `s`, `ms` (`1h30m`, `500ms`).
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else {
            return None;
        };
        rest = &rest[len..];
        total += unit * u32::try_from(n).ok()?;
        parts += 1;
    }
    (1..=4).contains(&parts).then_some(total)
}
