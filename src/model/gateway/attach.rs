//! Which Gateways, listeners and routes are ours, what each one's status is, and what the data plane should
//! serve: [`attach`], a pure function of a [`ClusterState`].
//!
//! ```text
//!  GatewayClasses (ours: spec.controllerName) ──▶ Gateways of those classes ──▶ listeners validated, conflicts,
//!      certificates resolved (ReferenceGrant), bind addresses
//!  HTTPRoutes, GRPCRoutes ──parentRefs──▶ listeners (sectionName, port, allowedRoutes, hostnames)
//!      rules validated, backendRefs resolved (ReferenceGrant) ──▶ AttachedRule per listener, with Precedence
//!  ──▶ GatewayAttachment { classes, gateways (status + sockets), routes (status.parents), diagnostics }
//! ```
//!
//! Deterministic: the same state always gives the same attachment, in the same order (classes by name,
//! Gateways and routes by namespace/name). Conditions carry the object's `metadata.generation`; transition
//! times are the status writer's business.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::conditions::{observed, reasons, types, Condition};
use super::hostname;
use super::precedence::Precedence;
use super::refs;
use super::routes;
use super::{Gateway, GatewayClass, HttpRouteFilter, Listener, ParentReference, GROUP};
use crate::model::{ClusterState, Diagnostic, ObjectRef};

/// The `spec.controllerName` of GatewayClasses that are ours.
pub const CONTROLLER_NAME: &str = "portico.dev/gateway-controller";

/// Everything [`attach`] found: status for every object that is ours, and what each Gateway serves.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GatewayAttachment {
    /// Our GatewayClasses, by name.
    pub classes: Vec<ClassStatus>,
    /// The Gateways of our classes, by namespace/name.
    pub gateways: Vec<GatewayModel>,
    /// Every route with at least one parentRef to one of our Gateways, by kind then namespace/name: the
    /// `status.parents[]` entries we own.
    pub routes: Vec<RouteStatus>,
    /// Every BackendTLSPolicy, validated, with the Gateways whose routes use it (its `status.ancestors[]`).
    pub backend_tls_policies: Vec<super::backendtls::PolicyState>,
    /// What was refused and why, naming the object and field (for `portico check`, logs and Events).
    pub diagnostics: Vec<Diagnostic>,
}

impl GatewayAttachment {
    pub fn gateway(&self, namespace: &str, name: &str) -> Option<&GatewayModel> {
        self.gateways
            .iter()
            .find(|g| g.namespace == namespace && g.name == name)
    }

    pub fn route(&self, kind: RouteKind, namespace: &str, name: &str) -> Option<&RouteStatus> {
        self.routes
            .iter()
            .find(|r| r.route.kind == kind && r.route.namespace == namespace && r.route.name == name)
    }
}

/// A GatewayClass of ours and its conditions (`Accepted`, `SupportedVersion`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClassStatus {
    pub name: String,
    pub conditions: Vec<Condition>,
}

/// A Gateway of one of our classes: its status and, when accepted, the sockets to bind.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayModel {
    pub namespace: String,
    pub name: String,
    pub class: String,
    /// `Accepted` and `Programmed`.
    pub conditions: Vec<Condition>,
    /// `status.addresses`: the `spec.addresses` of type IPAddress that are bound.
    pub addresses: Vec<IpAddr>,
    /// One per `spec.listeners` entry, in spec order.
    pub listeners: Vec<ListenerStatus>,
    /// What to bind: one socket per (bind address, port) with the listeners that serve on it. Empty when the
    /// Gateway is not accepted. Sorted by address.
    pub sockets: Vec<Socket>,
}

impl GatewayModel {
    pub fn accepted(&self) -> bool {
        self.conditions.iter().any(|c| c.type_ == types::ACCEPTED && c.status)
    }

    pub fn listener(&self, name: &str) -> Option<&ListenerStatus> {
        self.listeners.iter().find(|l| l.name == name)
    }
}

/// `status.listeners[]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerStatus {
    pub name: String,
    /// The route kinds the listener accepts (`supportedKinds`).
    pub supported_kinds: Vec<RouteKind>,
    /// Routes attached: selected by a parentRef and allowed by `allowedRoutes`, with a hostname in common.
    pub attached_routes: u32,
    /// `Accepted`, `Conflicted`, `ResolvedRefs`, `Programmed`.
    pub conditions: Vec<Condition>,
}

impl ListenerStatus {
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// The protocols a listener may have here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http,
    /// TLS terminated with the listener's certificates, then HTTP.
    Https,
    /// TLS passed through by SNI (`tls.mode: Passthrough`), TLSRoutes; may share a port with HTTPS.
    Tls,
    /// Plain TCP forwarding, TCPRoutes; alone on its port.
    Tcp,
}

/// The route kinds Portico attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteKind {
    Http,
    Grpc,
    Tls,
    Tcp,
}

impl RouteKind {
    pub const ALL: [RouteKind; 4] = [RouteKind::Http, RouteKind::Grpc, RouteKind::Tls, RouteKind::Tcp];

    /// `HTTPRoute`, `GRPCRoute`, `TLSRoute` or `TCPRoute`.
    pub fn kind(self) -> &'static str {
        match self {
            RouteKind::Http => "HTTPRoute",
            RouteKind::Grpc => "GRPCRoute",
            RouteKind::Tls => "TLSRoute",
            RouteKind::Tcp => "TCPRoute",
        }
    }

    /// The kinds a listener of `protocol` serves (its `supportedKinds` when `allowedRoutes.kinds` is empty).
    pub fn for_protocol(protocol: Protocol) -> &'static [RouteKind] {
        match protocol {
            Protocol::Http | Protocol::Https => &[RouteKind::Http, RouteKind::Grpc],
            Protocol::Tls => &[RouteKind::Tls],
            Protocol::Tcp => &[RouteKind::Tcp],
        }
    }

    fn from_kind(group: &str, kind: &str) -> Option<Self> {
        if group != GROUP {
            return None;
        }
        RouteKind::ALL.into_iter().find(|k| k.kind() == kind)
    }
}

/// One bound socket of a Gateway: an address and port, and the listeners on it (one protocol; for HTTPS each
/// listener brings its certificates, chosen by SNI).
#[derive(Debug, Clone, PartialEq)]
pub struct Socket {
    pub address: SocketAddr,
    pub protocol: Protocol,
    /// Most specific hostname first (see [`hostname::specificity`]): the order requests are matched in.
    pub listeners: Vec<BoundListener>,
}

impl Socket {
    /// The listener a request for `host` (no port) goes to: the most specific hostname that matches. Requests
    /// for no listener's hostname: none (404; 421 when the TLS name chose another listener).
    pub fn listener_for(&self, host: &str) -> Option<&BoundListener> {
        hostname::most_specific(self.listeners.iter().map(|l| l.hostname.as_deref()), host).map(|i| &self.listeners[i])
    }
}

/// An accepted, programmed listener and the rules attached to it.
#[derive(Debug, Clone, PartialEq)]
pub struct BoundListener {
    pub name: String,
    /// Lower-case; `None`: any host.
    pub hostname: Option<String>,
    /// HTTPS: the certificate Secrets that resolved, in `certificateRefs` order (never empty for HTTPS).
    pub certificates: Vec<SecretRef>,
    /// The rules of every attached route, by route (kind, namespace/name) then rule index. Order the matches
    /// with [`BoundListener::ordered_matches`].
    pub rules: Vec<AttachedRule>,
}

impl BoundListener {
    /// Every (rule, match index) in the order they are tried: by [`Precedence`].
    pub fn ordered_matches(&self) -> Vec<(&AttachedRule, usize)> {
        let mut all: Vec<(&AttachedRule, usize)> = self
            .rules
            .iter()
            .flat_map(|r| (0..r.precedence.len()).map(move |i| (r, i)))
            .collect();
        all.sort_by(|a, b| a.0.precedence[a.1].cmp(&b.0.precedence[b.1]));
        all
    }
}

/// A TLS Secret a listener's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretRef {
    pub namespace: String,
    pub name: String,
}

/// Which route a rule comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteRef {
    pub kind: RouteKind,
    pub namespace: String,
    pub name: String,
}

impl RouteRef {
    pub fn object(&self) -> ObjectRef {
        ObjectRef {
            kind: self.kind.kind(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

impl std::fmt::Display for RouteRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind.kind(), self.namespace, self.name)
    }
}

/// One rule of an accepted route, as attached to one listener.
#[derive(Debug, Clone, PartialEq)]
pub struct AttachedRule {
    pub route: RouteRef,
    /// The route's hostnames intersected with the listener's, most specific first, without those a more
    /// specific listener on the same socket takes (listener isolation). Empty: every host the listener takes.
    pub hostnames: Vec<String>,
    /// The rule's index in `spec.rules`.
    pub index: usize,
    /// `spec.rules[].name`.
    pub name: Option<String>,
    /// With the CRD defaults applied; a GRPCRoute rule without matches has one empty match (everything).
    pub matches: RuleMatches,
    /// One per match, same order.
    pub precedence: Vec<Precedence>,
    pub filters: Vec<RuleFilter>,
    /// Empty when the rule has no backendRefs.
    pub backends: Vec<RuleBackend>,
    pub timeouts: RuleTimeouts,
}

impl AttachedRule {
    /// Whether every request this rule takes answers 500: no redirect answers it and no backend with a weight
    /// is usable (none listed, all invalid, or all weights 0). With some backends invalid, only their share of
    /// requests answers 500 (see [`RuleBackend`]).
    pub fn answers_500(&self) -> bool {
        let redirects = self.filters.iter().any(|f| f.filter.type_ == "RequestRedirect");
        !redirects
            && !self
                .backends
                .iter()
                .any(|b| b.weight > 0 && matches!(b.target, BackendTarget::Service(_)))
    }
}

/// A rule's matches.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleMatches {
    Http(Vec<super::HttpRouteMatch>),
    Grpc(Vec<super::GrpcRouteMatch>),
}

/// A filter of a rule or backend (validated: its type is supported and its fields are set).
#[derive(Debug, Clone, PartialEq)]
pub struct RuleFilter {
    pub filter: HttpRouteFilter,
    /// `RequestMirror`: where to, resolved like a backendRef (an invalid one mirrors nothing).
    pub mirror: Option<BackendTarget>,
}

/// A backendRef: a weight (0 sends nothing) and where to. Requests the weights send to an invalid target
/// answer 500.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleBackend {
    pub weight: u32,
    pub target: BackendTarget,
    pub filters: Vec<RuleFilter>,
}

/// Where a backendRef points, once resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendTarget {
    Service(ServiceBackend),
    /// Refused: the route's `ResolvedRefs` reason (`InvalidKind`, `RefNotPermitted`, `BackendNotFound`) and why.
    Invalid {
        reason: &'static str,
        message: String,
    },
}

/// A Service port (its endpoints come from the EndpointSlices, as for Ingress backends).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceBackend {
    pub namespace: String,
    pub name: String,
    pub port: u16,
    /// The Service port's `appProtocol` (`kubernetes.io/h2c`, `kubernetes.io/ws`, ...), if any.
    pub app_protocol: Option<String>,
    /// TLS to the endpoints, as the BackendTLSPolicy targeting the port says.
    pub tls: Option<std::sync::Arc<super::BackendTls>>,
}

/// `timeouts` of an HTTPRoute rule, parsed (`0s`: disabled, kept as zero).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleTimeouts {
    pub request: Option<std::time::Duration>,
    pub backend_request: Option<std::time::Duration>,
}

impl RuleTimeouts {
    /// The spec's rule: `backendRequest` may not be longer than a `request` that is set and not zero (a try
    /// cannot outlast the whole exchange). Gateway API implementations refuse such a rule.
    pub fn check(&self) -> Option<String> {
        match (self.request, self.backend_request) {
            (Some(r), Some(b)) if !r.is_zero() && b > r => Some(format!(
                "backendRequest ({}) is longer than request ({})",
                humantime_like(b),
                humantime_like(r)
            )),
            _ => None,
        }
    }
}

/// A duration as the manifests write one (`1500ms`, `2s`).
fn humantime_like(d: std::time::Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// A route's status: the `status.parents[]` entries for our Gateways.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteStatus {
    pub route: RouteRef,
    pub parents: Vec<ParentStatus>,
}

/// One `status.parents[]` entry (`controllerName` is [`CONTROLLER_NAME`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ParentStatus {
    /// As written in the route's spec (defaults applied).
    pub parent_ref: ParentReference,
    /// `Accepted` and `ResolvedRefs`.
    pub conditions: Vec<Condition>,
}

impl ParentStatus {
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

// === attach ===

/// Status and serving model for every Gateway API object of `state` that `controller_name` owns.
pub fn attach(state: &ClusterState, controller_name: &str) -> GatewayAttachment {
    let g = &state.gateway;
    let mut out = GatewayAttachment::default();

    let mut classes: Vec<&GatewayClass> = g
        .gateway_classes
        .iter()
        .filter(|c| c.spec.controller_name == controller_name)
        .collect();
    classes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for c in &classes {
        let conditions = vec![
            Condition::new(
                types::ACCEPTED,
                true,
                reasons::ACCEPTED,
                format!("handled by {controller_name}"),
            ),
            Condition::new(
                types::SUPPORTED_VERSION,
                true,
                reasons::SUPPORTED_VERSION,
                "Gateway API v1 (standard channel)",
            ),
        ];
        out.classes.push(ClassStatus {
            name: c.metadata.name.clone().unwrap_or_default(),
            conditions: observed(conditions, c.metadata.generation),
        });
    }
    let ours: HashSet<&str> = out.classes.iter().map(|c| c.name.as_str()).collect();

    // Older Gateways claim their ports first (a later one asking for a taken port gets PortUnavailable).
    let mut gateways: Vec<&Gateway> = g
        .gateways
        .iter()
        .filter(|gw| ours.contains(gw.spec.gateway_class_name.as_str()))
        .collect();
    gateways.sort_by(|a, b| age_key(&a.metadata).cmp(&age_key(&b.metadata)));
    let mut claims: Vec<(IpAddr, u16)> = Vec::new();
    let mut works: Vec<GatewayWork> = gateways
        .iter()
        .map(|gw| GatewayWork::new(gw, state, &mut claims, &mut out.diagnostics))
        .collect();
    works.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));

    (out.routes, out.backend_tls_policies) = routes::attach_routes(state, &mut works, &mut out.diagnostics);

    out.gateways = works.into_iter().map(GatewayWork::finish).collect();
    out
}

/// Oldest first (no timestamp: last), then namespace/name.
fn age_key(
    m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> (bool, Option<k8s_openapi::jiff::Timestamp>, &str, &str) {
    let created = m.creation_timestamp.as_ref().map(|t| t.0);
    (
        created.is_none(),
        created,
        m.namespace.as_deref().unwrap_or_default(),
        m.name.as_deref().unwrap_or_default(),
    )
}

// === Gateways and listeners ===

/// A Gateway being attached to: its listeners' state, filled in by route attachment.
pub(crate) struct GatewayWork {
    pub namespace: String,
    pub name: String,
    pub class: String,
    pub generation: Option<i64>,
    pub conditions: Vec<Condition>,
    pub accepted: bool,
    pub addresses: Vec<IpAddr>,
    pub binds: Vec<IpAddr>,
    pub listeners: Vec<ListenerWork>,
}

pub(crate) struct ListenerWork {
    pub name: String,
    pub port: u16,
    pub hostname: Option<String>,
    pub protocol: Option<Protocol>,
    pub allowed: super::AllowedRoutes,
    pub supported_kinds: Vec<RouteKind>,
    pub certificates: Vec<SecretRef>,
    /// `Accepted` false: reason and message.
    pub refused: Option<(&'static str, String)>,
    pub conflict: Option<(&'static str, String)>,
    pub unresolved: Option<(&'static str, String)>,
    pub attached: u32,
    pub rules: Vec<AttachedRule>,
}

impl ListenerWork {
    /// Accepted, not conflicted and with what it needs (a certificate for HTTPS, a route kind): bound.
    pub fn serving(&self) -> bool {
        self.refused.is_none()
            && self.conflict.is_none()
            && !self.supported_kinds.is_empty()
            && (self.protocol != Some(Protocol::Https) || !self.certificates.is_empty())
    }
}

impl GatewayWork {
    fn new(gw: &Gateway, state: &ClusterState, claims: &mut Vec<(IpAddr, u16)>, diags: &mut Vec<Diagnostic>) -> Self {
        let namespace = gw.metadata.namespace.clone().unwrap_or_default();
        let name = gw.metadata.name.clone().unwrap_or_default();
        let object = ObjectRef {
            kind: "Gateway",
            namespace: namespace.clone(),
            name: name.clone(),
        };
        let mut addresses = Vec::new();
        let mut bad_addresses = Vec::new();
        for (i, a) in gw.spec.addresses.iter().enumerate() {
            match (a.type_.as_str(), a.value.parse::<IpAddr>()) {
                ("IPAddress", Ok(ip)) => addresses.push(ip),
                ("IPAddress", Err(_)) => {
                    bad_addresses.push(format!("spec.addresses[{i}]: {:?} is not an IP address", a.value))
                }
                (t, _) => bad_addresses.push(format!(
                    "spec.addresses[{i}]: address type {t} is not supported (only IPAddress)"
                )),
            }
        }
        let binds = if addresses.is_empty() {
            vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)]
        } else {
            addresses.clone()
        };
        let mut listeners: Vec<ListenerWork> = gw
            .spec
            .listeners
            .iter()
            .map(|l| ListenerWork::new(l, &namespace, state))
            .collect();
        find_conflicts(&mut listeners);
        let accepted_addresses = bad_addresses.is_empty();
        if accepted_addresses {
            // Ports another (older) Gateway holds on an overlapping address.
            for l in listeners.iter_mut().filter(|l| l.serving()) {
                let taken = binds.iter().any(|ip| {
                    claims
                        .iter()
                        .any(|(c, p)| *p == l.port && (c == ip || c.is_unspecified() || ip.is_unspecified()))
                });
                if taken {
                    l.refused = Some((
                        reasons::PORT_UNAVAILABLE,
                        format!("port {} is already bound by another Gateway", l.port),
                    ));
                }
            }
            let mut ports: Vec<u16> = listeners.iter().filter(|l| l.serving()).map(|l| l.port).collect();
            ports.sort_unstable();
            ports.dedup();
            for ip in &binds {
                claims.extend(ports.iter().map(|p| (*ip, *p)));
            }
        }
        for (i, l) in listeners.iter().enumerate() {
            for (_, msg) in [&l.refused, &l.conflict, &l.unresolved].into_iter().flatten() {
                diags.push(Diagnostic::object(
                    object.clone(),
                    format!("spec.listeners[{i}] ({}): {msg}", l.name),
                ));
            }
        }
        for msg in &bad_addresses {
            diags.push(Diagnostic::object(object.clone(), msg.clone()));
        }

        let invalid: Vec<&str> = listeners
            .iter()
            .filter(|l| !l.serving())
            .map(|l| l.name.as_str())
            .collect();
        let serving = listeners.len() - invalid.len();
        let (accepted, accepted_condition) = if !accepted_addresses {
            (
                false,
                Condition::new(
                    types::ACCEPTED,
                    false,
                    reasons::UNSUPPORTED_ADDRESS,
                    bad_addresses.join("; "),
                ),
            )
        } else if invalid.is_empty() {
            (
                true,
                Condition::new(types::ACCEPTED, true, reasons::ACCEPTED, "accepted"),
            )
        } else {
            let msg = format!("listeners not valid: {}", invalid.join(", "));
            (
                serving > 0,
                Condition::new(types::ACCEPTED, serving > 0, reasons::LISTENERS_NOT_VALID, msg),
            )
        };
        let programmed = if accepted {
            Condition::new(types::PROGRAMMED, true, reasons::PROGRAMMED, "programmed")
        } else {
            Condition::new(types::PROGRAMMED, false, reasons::INVALID, "not accepted")
        };
        Self {
            namespace,
            name,
            class: gw.spec.gateway_class_name.clone(),
            generation: gw.metadata.generation,
            conditions: vec![accepted_condition, programmed],
            accepted,
            addresses,
            binds,
            listeners,
        }
    }

    pub fn gateway_ref(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn finish(self) -> GatewayModel {
        let generation = self.generation;
        let mut sockets = Vec::new();
        if self.accepted {
            let mut by_port: BTreeMap<u16, Vec<&ListenerWork>> = BTreeMap::new();
            for l in self.listeners.iter().filter(|l| l.serving()) {
                by_port.entry(l.port).or_default().push(l);
            }
            for ip in &self.binds {
                for (port, ls) in &by_port {
                    let mut bound: Vec<BoundListener> = ls
                        .iter()
                        .map(|l| BoundListener {
                            name: l.name.clone(),
                            hostname: l.hostname.clone(),
                            certificates: l.certificates.clone(),
                            rules: l.rules.clone(),
                        })
                        .collect();
                    bound.sort_by_cached_key(|l| hostname::specificity(l.hostname.as_deref()));
                    isolate(&mut bound);
                    sockets.push(Socket {
                        address: SocketAddr::new(*ip, *port),
                        protocol: super::l4routes::socket_protocol(ls.iter().filter_map(|l| l.protocol)),
                        listeners: bound,
                    });
                }
            }
        }
        let listeners = self
            .listeners
            .into_iter()
            .map(|l| ListenerStatus {
                conditions: observed(l.conditions(), generation),
                name: l.name,
                supported_kinds: l.supported_kinds,
                attached_routes: l.attached,
            })
            .collect();
        GatewayModel {
            namespace: self.namespace,
            name: self.name,
            class: self.class,
            conditions: observed(self.conditions, generation),
            addresses: self.addresses,
            listeners,
            sockets,
        }
    }
}

/// Listener isolation: a hostname of a rule on one listener that a more specific listener of the same socket
/// takes entirely is dropped there (requests for it go to the other listener); a rule left without hostnames
/// is dropped. `listeners` is sorted most specific first.
fn isolate(listeners: &mut [BoundListener]) {
    let names: Vec<Option<String>> = listeners.iter().map(|l| l.hostname.clone()).collect();
    for (i, l) in listeners.iter_mut().enumerate() {
        let more_specific = &names[..i];
        if more_specific.is_empty() {
            continue;
        }
        let taken = |h: &str| {
            more_specific
                .iter()
                .flatten()
                .any(|other| hostname::intersect(Some(other), h).as_deref() == Some(h))
        };
        l.rules.retain_mut(|r| {
            if r.hostnames.is_empty() {
                return true;
            }
            r.hostnames.retain(|h| !taken(h));
            !r.hostnames.is_empty()
        });
    }
}

impl ListenerWork {
    fn new(l: &Listener, gw_ns: &str, state: &ClusterState) -> Self {
        let port = u16::try_from(l.port).ok().filter(|p| *p > 0);
        let protocol = match l.protocol.as_str() {
            "HTTP" => Some(Protocol::Http),
            "HTTPS" => Some(Protocol::Https),
            "TLS" => Some(Protocol::Tls),
            "TCP" => Some(Protocol::Tcp),
            _ => None,
        };
        let mut w = ListenerWork {
            name: l.name.clone(),
            port: port.unwrap_or(0),
            hostname: l
                .hostname
                .as_ref()
                .map(|h| h.to_ascii_lowercase())
                .filter(|h| !h.is_empty()),
            protocol,
            allowed: l.allowed_routes.clone(),
            supported_kinds: Vec::new(),
            certificates: Vec::new(),
            refused: None,
            conflict: None,
            unresolved: None,
            attached: 0,
            rules: Vec::new(),
        };
        if protocol.is_none() {
            w.refused = Some((
                reasons::UNSUPPORTED_PROTOCOL,
                format!(
                    "protocol {} is not supported (HTTP, HTTPS, TLS and TCP are)",
                    l.protocol
                ),
            ));
            return w;
        }
        if let Some(refused) = super::l4routes::check_l4_listener(l) {
            w.refused = Some(refused);
            return w;
        }
        if port.is_none() {
            w.refused = Some((
                reasons::PORT_UNAVAILABLE,
                format!("port {} is not a valid port", l.port),
            ));
        }
        // Route kinds.
        let kinds = protocol.map_or(&[][..], RouteKind::for_protocol);
        if l.allowed_routes.kinds.is_empty() {
            w.supported_kinds = kinds.to_vec();
        } else {
            let mut invalid = Vec::new();
            for k in &l.allowed_routes.kinds {
                match RouteKind::from_kind(&k.group, &k.kind).filter(|k| kinds.contains(k)) {
                    Some(kind) if !w.supported_kinds.contains(&kind) => w.supported_kinds.push(kind),
                    Some(_) => {}
                    None => invalid.push(format!("{}/{}", k.group, k.kind)),
                }
            }
            if !invalid.is_empty() {
                w.unresolved = Some((
                    reasons::INVALID_ROUTE_KINDS,
                    format!(
                        "allowedRoutes.kinds: {} not supported on a {} listener ({} are)",
                        invalid.join(", "),
                        l.protocol,
                        kinds.iter().map(|k| k.kind()).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        if protocol == Some(Protocol::Https) {
            let problem = w.resolve_certificates(l, gw_ns, state);
            if problem.is_some() {
                // A certificate problem is reported before a route kind problem.
                w.unresolved = problem;
            }
        }
        w
    }

    fn resolve_certificates(
        &mut self,
        l: &Listener,
        gw_ns: &str,
        state: &ClusterState,
    ) -> Option<(&'static str, String)> {
        let tls = match &l.tls {
            Some(tls) if tls.mode != "Terminate" => {
                self.refused = Some((
                    reasons::UNSUPPORTED_PROTOCOL,
                    format!("tls.mode {} is not supported for HTTPS (Terminate is)", tls.mode),
                ));
                return None;
            }
            Some(tls) if !tls.certificate_refs.is_empty() => tls,
            _ => {
                return Some((
                    reasons::INVALID_CERTIFICATE_REF,
                    "HTTPS needs tls.certificateRefs".to_string(),
                ))
            }
        };
        let mut first_problem = None;
        for (i, r) in tls.certificate_refs.iter().enumerate() {
            let ns = r.namespace.as_deref().unwrap_or(gw_ns);
            let problem = if !r.group.is_empty() || r.kind != "Secret" {
                Some((
                    reasons::INVALID_CERTIFICATE_REF,
                    format!("tls.certificateRefs[{i}]: {}/{} is not a Secret", r.group, r.kind),
                ))
            } else if !refs::permitted(
                &state.gateway.reference_grants,
                "Gateway",
                gw_ns,
                "",
                "Secret",
                ns,
                &r.name,
            ) {
                Some((
                    reasons::REF_NOT_PERMITTED,
                    format!(
                        "tls.certificateRefs[{i}]: Secret {ns}/{} in another namespace and no ReferenceGrant allows it",
                        r.name
                    ),
                ))
            } else {
                match state.secrets.iter().find(|s| {
                    s.metadata.namespace.as_deref() == Some(ns) && s.metadata.name.as_deref() == Some(&r.name)
                }) {
                    None => Some((
                        reasons::INVALID_CERTIFICATE_REF,
                        format!("tls.certificateRefs[{i}]: Secret {ns}/{} not found", r.name),
                    )),
                    Some(secret) => check_tls_secret(secret).err().map(|e| {
                        (
                            reasons::INVALID_CERTIFICATE_REF,
                            format!("tls.certificateRefs[{i}]: Secret {ns}/{}: {e}", r.name),
                        )
                    }),
                }
            };
            match problem {
                None => self.certificates.push(SecretRef {
                    namespace: ns.to_string(),
                    name: r.name.clone(),
                }),
                Some(p) => {
                    first_problem.get_or_insert(p);
                }
            }
        }
        first_problem
    }

    fn conditions(&self) -> Vec<Condition> {
        let accepted = match (&self.refused, &self.conflict) {
            (Some((reason, msg)), _) => Condition::new(types::ACCEPTED, false, reason, msg.clone()),
            (None, Some((_, msg))) => Condition::new(types::ACCEPTED, false, reasons::INVALID, msg.clone()),
            (None, None) => Condition::new(types::ACCEPTED, true, reasons::ACCEPTED, "accepted"),
        };
        let conflicted = match &self.conflict {
            Some((reason, msg)) => Condition::new(types::CONFLICTED, true, reason, msg.clone()),
            None => Condition::new(types::CONFLICTED, false, reasons::NO_CONFLICTS, "no conflicts"),
        };
        let resolved = match &self.unresolved {
            Some((reason, msg)) => Condition::new(types::RESOLVED_REFS, false, reason, msg.clone()),
            None => Condition::new(
                types::RESOLVED_REFS,
                true,
                reasons::RESOLVED_REFS,
                "references resolved",
            ),
        };
        let programmed = if self.serving() {
            Condition::new(types::PROGRAMMED, true, reasons::PROGRAMMED, "programmed")
        } else {
            let why = [&self.refused, &self.conflict, &self.unresolved]
                .into_iter()
                .flatten()
                .map(|(_, m)| m.as_str())
                .next()
                .unwrap_or("no route kind to serve");
            Condition::new(types::PROGRAMMED, false, reasons::INVALID, why)
        };
        vec![accepted, conflicted, resolved, programmed]
    }
}

/// Whether a Secret holds a certificate and a key in PEM (`data`, or `stringData` as file mode's hand-written
/// manifests have it). Whether the two match is checked where certificates are loaded.
fn check_tls_secret(secret: &k8s_openapi::api::core::v1::Secret) -> Result<(), String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let found = secret.type_.as_deref().unwrap_or("Opaque");
    if found != "kubernetes.io/tls" {
        return Err(format!("type is {found}, not kubernetes.io/tls"));
    }
    let field = |name: &str| crate::pem::secret_field(secret, name).ok_or_else(|| format!("no {name}"));
    let certs = CertificateDer::pem_slice_iter(field("tls.crt")?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.crt: {e}"))?;
    if certs.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    PrivateKeyDer::from_pem_slice(field("tls.key")?).map_err(|e| format!("tls.key: {e}"))?;
    Ok(())
}

/// Marks listeners that are not distinct (supported ones only: an unsupported protocol conflicts with
/// nothing). On one port: HTTP and HTTPS together conflict (`ProtocolConflict`); listeners of one protocol with
/// the same hostname conflict (`HostnameConflict`). All of the conflicting listeners are refused, none wins.
fn find_conflicts(listeners: &mut [ListenerWork]) {
    let mut by_port: HashMap<u16, Vec<usize>> = HashMap::new();
    for (i, l) in listeners.iter().enumerate() {
        if l.refused.is_none() {
            by_port.entry(l.port).or_default().push(i);
        }
    }
    for (port, idx) in by_port {
        let protocols: HashSet<Protocol> = idx.iter().filter_map(|i| listeners[*i].protocol).collect();
        if let Some(what) = super::l4routes::l4_conflict(&protocols, idx.len(), port) {
            for i in &idx {
                listeners[*i].conflict = Some(what.clone());
            }
            continue;
        }
        // HTTPS and TLS passthrough share a port (SNI chooses); HTTP mixes with neither.
        if protocols.len() > 1 && !super::l4routes::sni_shared(&protocols) {
            for i in &idx {
                listeners[*i].conflict = Some((
                    reasons::PROTOCOL_CONFLICT,
                    format!("port {port} has listeners of different protocols"),
                ));
            }
            continue;
        }
        let mut by_host: HashMap<Option<&str>, Vec<usize>> = HashMap::new();
        for i in &idx {
            by_host.entry(listeners[*i].hostname.as_deref()).or_default().push(*i);
        }
        let conflicted: Vec<(usize, String)> = by_host
            .into_iter()
            .filter(|(_, v)| v.len() > 1)
            .flat_map(|(h, v)| {
                let what = match h {
                    Some(h) => format!("hostname {h} on port {port} is used by more than one listener"),
                    None => format!("more than one listener without hostname on port {port}"),
                };
                v.into_iter().map(move |i| (i, what.clone()))
            })
            .collect();
        for (i, what) in conflicted {
            listeners[i].conflict = Some((reasons::HOSTNAME_CONFLICT, what));
        }
    }
}

#[cfg(test)]
mod tests;
