//! TLSRoute and TCPRoute (issue #20): their listeners (protocol `TLS` with `tls.mode: Passthrough`, and
//! `TCP`), their attachment (through the same parentRef, `allowedRoutes` and hostname rules as HTTPRoutes, in
//! `routes`), and what a Gateway socket then serves at layer 4 ([`l4_sets`]), for the one layer-4 runtime
//! (`crate::l4`) that also serves `ssl-passthrough` Ingresses and `tcp[]` listeners.
//!
//! - A TLS listener shares its port with HTTPS listeners (SNI chooses; the same hostname on both conflicts);
//!   a TCP listener is alone on its port (another listener there, of any protocol, conflicts with it).
//! - TLSRoute hostnames intersect the listener's as HTTPRoute hostnames do; a name claimed by two routes goes
//!   to the oldest (creation time, then namespace/name). On a TCP listener the oldest TCPRoute takes every
//!   connection; the others stay `Accepted` (they are attached) but carry no traffic.
//! - Rules: exactly one (as the v1 CRDs require), with weighted `backendRefs` to Service ports; an unresolved
//!   reference's share of connections is closed.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::attach::{AttachedRule, BackendTarget, GatewayAttachment, Protocol, RouteKind, RouteRef, RuleMatches};
use super::conditions::reasons;
use super::routes::{Lookup, Prepared};
use super::{L4RouteRule, Listener};
use crate::model::l4::{GatewaySni, L4SetModel, PassthroughRoute, WeightedL4};
use crate::model::translate::Translator;
use crate::model::{BackendModel, ClusterState, HostPattern, Options, PortRef};

/// Why a listener of protocol TLS cannot be served, if it cannot (`tls.mode` other than `Passthrough`).
pub(super) fn check_l4_listener(l: &Listener) -> Option<(&'static str, String)> {
    if l.protocol != "TLS" {
        return None;
    }
    let mode = l.tls.as_ref().map_or("Terminate", |t| t.mode.as_str());
    (mode != "Passthrough").then(|| {
        (
            reasons::UNSUPPORTED_PROTOCOL,
            format!("protocol TLS with tls.mode {mode} is not supported (Passthrough is; HTTPS terminates)"),
        )
    })
}

/// A socket's protocol: HTTPS when it has HTTPS listeners (TLS passthrough listeners beside them), else the
/// listeners' one.
pub(super) fn socket_protocol(protocols: impl Iterator<Item = Protocol>) -> Protocol {
    let mut out = None;
    for p in protocols {
        if p == Protocol::Https || out.is_none() {
            out = Some(p);
        }
    }
    out.unwrap_or(Protocol::Http)
}

/// Whether listeners of these protocols can share a port by SNI: HTTPS and TLS.
pub(super) fn sni_shared(protocols: &HashSet<Protocol>) -> bool {
    protocols.iter().all(|p| matches!(p, Protocol::Https | Protocol::Tls))
}

/// The conflict of `count` listeners with these protocols on one port when a TCP listener is among them: a
/// TCP listener is distinct by port alone, so it conflicts with any other listener there.
pub(super) fn l4_conflict(protocols: &HashSet<Protocol>, count: usize, port: u16) -> Option<(&'static str, String)> {
    if !protocols.contains(&Protocol::Tcp) || count < 2 {
        return None;
    }
    Some(if protocols.len() > 1 {
        (
            reasons::PROTOCOL_CONFLICT,
            format!("port {port} has a TCP listener and listeners of other protocols"),
        )
    } else {
        (
            reasons::HOSTNAME_CONFLICT,
            format!("port {port} has more than one TCP listener (a TCP listener has no hostname to tell them apart)"),
        )
    })
}

/// The TLSRoutes and TCPRoutes of `state`, validated, their backends resolved, ready to attach.
pub(super) fn prepare<'a>(state: &'a ClusterState, lookup: &Lookup) -> Vec<Prepared<'a>> {
    let g = &state.gateway;
    let mut out = Vec::new();
    for r in &g.tls_routes {
        let mut p = Prepared::new(RouteKind::Tls, &r.metadata, &r.spec.parent_refs, &r.spec.hostnames);
        if r.spec.hostnames.is_empty() {
            p.unsupported.get_or_insert((
                reasons::UNSUPPORTED_VALUE,
                "spec.hostnames: a TLSRoute needs at least one hostname (the SNI it takes)".into(),
            ));
        }
        if let Some(h) = r.spec.hostnames.iter().find(|h| h.parse::<std::net::IpAddr>().is_ok()) {
            p.unsupported.get_or_insert((
                reasons::UNSUPPORTED_VALUE,
                format!("spec.hostnames: {h} is an IP address, which SNI never carries"),
            ));
        }
        rules(&mut p, lookup, &r.spec.rules);
        out.push(p);
    }
    for r in &g.tcp_routes {
        let mut p = Prepared::new(RouteKind::Tcp, &r.metadata, &r.spec.parent_refs, &[]);
        rules(&mut p, lookup, &r.spec.rules);
        out.push(p);
    }
    out
}

fn rules(p: &mut Prepared<'_>, lookup: &Lookup, rules: &[L4RouteRule]) {
    if rules.len() != 1 {
        p.unsupported.get_or_insert((
            reasons::UNSUPPORTED_VALUE,
            format!("spec.rules: exactly one rule is required, found {}", rules.len()),
        ));
    }
    for (i, rule) in rules.iter().enumerate() {
        let field = format!("spec.rules[{i}]");
        if rule.backend_refs.is_empty() {
            p.unsupported.get_or_insert((
                reasons::UNSUPPORTED_VALUE,
                format!("{field}.backendRefs: at least one backend is required"),
            ));
        }
        let backends = p.backends(lookup, &rule.backend_refs, &field);
        p.rules.push(AttachedRule {
            route: p.route.clone(),
            hostnames: Vec::new(),
            index: i,
            name: rule.name.clone(),
            // No HTTP match: never lowered into HTTP routes (no precedence entry).
            matches: RuleMatches::Http(Vec::new()),
            precedence: Vec::new(),
            filters: Vec::new(),
            backends,
            timeouts: Default::default(),
        });
    }
}

/// A Gateway socket's layer-4 model.
#[derive(Debug, Clone, PartialEq)]
pub struct L4Socket {
    pub address: SocketAddr,
    pub protocol: Protocol,
    pub model: L4SetModel,
}

/// The layer-4 model of every bound socket of the attached Gateways, in the order and with the sharing rules
/// of `serve::sets` (a socket shared by two Gateways is served by the first); the sockets of a Gateway
/// `served_by` gives a configured listener set come back as `(set index, model)`, to be merged into that set
/// (only their TLS passthrough routes: a configured set has no TCP socket).
pub fn l4_sets(
    state: &ClusterState,
    attachment: &GatewayAttachment,
    served_by: &dyn Fn(&str, &str) -> Option<usize>,
) -> (Vec<L4Socket>, Vec<(usize, L4SetModel)>) {
    let opts = Options::NONE;
    let mut resolver = Translator::new(state, &opts, false);
    let ages = Ages::new(state);
    let mut out: Vec<L4Socket> = Vec::new();
    let mut merged = Vec::new();
    for g in &attachment.gateways {
        let spec = state.gateway.gateways.iter().find(|x| {
            x.metadata.namespace.as_deref() == Some(&g.namespace) && x.metadata.name.as_deref() == Some(&g.name)
        });
        let is_tls = |listener: &str| {
            spec.and_then(|s| s.spec.listeners.iter().find(|l| l.name == listener))
                .is_some_and(|l| l.protocol == "TLS")
        };
        let set = served_by(&g.namespace, &g.name);
        for s in &g.sockets {
            if set.is_none() && out.iter().any(|o| o.address == s.address) {
                continue;
            }
            let mut model = L4SetModel::default();
            match s.protocol {
                Protocol::Http => {}
                Protocol::Tcp => model.tcp = tcp_route(s, &ages, &mut resolver),
                Protocol::Https | Protocol::Tls => {
                    passthrough(s, &is_tls, &ages, &mut resolver, &mut model);
                }
            }
            match set {
                Some(i) => {
                    model.tcp = None;
                    merged.push((i, model));
                }
                None => out.push(L4Socket {
                    address: s.address,
                    protocol: s.protocol,
                    model,
                }),
            }
        }
    }
    out.sort_by_key(|s| s.address);
    (out, merged)
}

/// Adds a Gateway socket's passthrough routes (for names the set does not pass through yet) to a configured
/// set's.
pub fn merge_into(set: &mut L4SetModel, g: L4SetModel) {
    for r in g.passthrough {
        if !set.passthrough.iter().any(|x| x.host == r.host) {
            set.passthrough.push(r);
        }
    }
    set.passthrough.sort_by(|a, b| a.host.cmp(&b.host));
}

/// Creation time and namespace/name of each TLSRoute and TCPRoute: the oldest wins a name or a TCP listener.
struct Ages<'a> {
    by_route: HashMap<(RouteKind, &'a str, &'a str), &'a ObjectMeta>,
}

type Age<'a> = (bool, Option<k8s_openapi::jiff::Timestamp>, &'a str, &'a str);

impl<'a> Ages<'a> {
    fn new(state: &'a ClusterState) -> Self {
        let g = &state.gateway;
        let key = |kind, m: &'a ObjectMeta| {
            (
                (
                    kind,
                    m.namespace.as_deref().unwrap_or_default(),
                    m.name.as_deref().unwrap_or_default(),
                ),
                m,
            )
        };
        let by_route = g
            .tls_routes
            .iter()
            .map(|r| key(RouteKind::Tls, &r.metadata))
            .chain(g.tcp_routes.iter().map(|r| key(RouteKind::Tcp, &r.metadata)))
            .collect();
        Self { by_route }
    }

    /// Oldest first (no timestamp: last), then namespace/name.
    fn of<'b>(&self, r: &'b RouteRef) -> Age<'b> {
        let created = self
            .by_route
            .get(&(r.kind, r.namespace.as_str(), r.name.as_str()))
            .and_then(|m| m.creation_timestamp.as_ref())
            .map(|t| t.0);
        (created.is_none(), created, r.namespace.as_str(), r.name.as_str())
    }
}

fn pattern(name: &str) -> HostPattern {
    match name.strip_prefix("*.") {
        Some(suffix) => HostPattern::Wildcard(suffix.to_ascii_lowercase()),
        None => HostPattern::Exact(name.to_ascii_lowercase()),
    }
}

/// The TLS passthrough routes of an HTTPS or TLS socket, and how its listeners share it.
fn passthrough(
    s: &super::attach::Socket,
    is_tls: &dyn Fn(&str) -> bool,
    ages: &Ages<'_>,
    resolver: &mut Translator<'_>,
    model: &mut L4SetModel,
) {
    let mut sni = GatewaySni::default();
    let mut best: HashMap<HostPattern, &AttachedRule> = HashMap::new();
    for l in &s.listeners {
        let tls = is_tls(&l.name);
        match (&l.hostname, tls) {
            (Some(h), true) => sni.closed.push(pattern(h)),
            (Some(h), false) => sni.terminated.push(pattern(h)),
            (None, false) => sni.terminates_rest = true,
            (None, true) => {}
        }
        if !tls {
            continue;
        }
        for rule in l.rules.iter().filter(|r| r.route.kind == RouteKind::Tls) {
            for h in &rule.hostnames {
                let p = pattern(h);
                match best.get(&p) {
                    Some(other) if ages.of(&other.route) <= ages.of(&rule.route) => {}
                    _ => {
                        best.insert(p, rule);
                    }
                }
            }
        }
    }
    // No TLS listener on the socket: nothing changes for it (it is a plain HTTPS socket).
    if sni.closed.is_empty() && best.is_empty() && !s.listeners.iter().any(|l| is_tls(&l.name)) {
        return;
    }
    for (host, rule) in best {
        model.passthrough.push(route(host, rule, resolver));
    }
    model.passthrough.sort_by(|a, b| a.host.cmp(&b.host));
    model.sni = Some(sni);
}

/// A TCP socket's route: the oldest TCPRoute attached to its listener.
fn tcp_route(s: &super::attach::Socket, ages: &Ages<'_>, resolver: &mut Translator<'_>) -> Option<PassthroughRoute> {
    let rule = s
        .listeners
        .iter()
        .flat_map(|l| &l.rules)
        .filter(|r| r.route.kind == RouteKind::Tcp)
        .min_by(|a, b| ages.of(&a.route).cmp(&ages.of(&b.route)).then(a.index.cmp(&b.index)))?;
    Some(route(HostPattern::Any, rule, resolver))
}

fn route(host: HostPattern, rule: &AttachedRule, resolver: &mut Translator<'_>) -> PassthroughRoute {
    let split: Vec<WeightedL4> = rule
        .backends
        .iter()
        .map(|b| WeightedL4 {
            backend: match &b.target {
                BackendTarget::Service(svc) => {
                    let port = PortRef::Number(i32::from(svc.port));
                    let endpoints = resolver.endpoints(&svc.namespace, &svc.name, &port).unwrap_or_default();
                    Some(BackendModel {
                        namespace: svc.namespace.as_str().into(),
                        service: svc.name.as_str().into(),
                        port,
                        endpoints,
                    })
                }
                BackendTarget::Invalid { .. } => None,
            },
            weight: b.weight,
        })
        .collect();
    let backend = split
        .iter()
        .filter(|w| w.weight > 0)
        .find_map(|w| w.backend.clone())
        .unwrap_or_else(|| BackendModel {
            namespace: rule.route.namespace.as_str().into(),
            service: "".into(),
            port: PortRef::Number(0),
            endpoints: Vec::new(),
        });
    PassthroughRoute {
        host,
        backend,
        balance: crate::model::annotations::Balance::RoundRobin,
        check: None,
        origin: rule.route.object(),
        split,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gateway::{attach, Condition, CONTROLLER_NAME};

    const CLASS: &str = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: portico}\nspec: {controllerName: portico.dev/gateway-controller}\n";

    fn state(yaml: &str) -> ClusterState {
        let (s, errors) = crate::source::file::state_from_yaml(yaml, "test.yaml");
        assert!(errors.is_empty(), "{errors:?}");
        s
    }

    fn gateway(listeners: &str) -> String {
        format!("---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: default}}\nspec:\n  gatewayClassName: portico\n  addresses: [{{value: 127.0.0.1}}]\n  listeners:\n{listeners}")
    }

    fn route(kind: &str, name: &str, created: &str, spec: &str) -> String {
        format!("---\napiVersion: gateway.networking.k8s.io/v1\nkind: {kind}\nmetadata: {{name: {name}, namespace: default, creationTimestamp: \"{created}\"}}\nspec:\n{spec}")
    }

    fn service(name: &str, port: u16, ip: &str) -> String {
        format!("---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {{ports: [{{port: {port}}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{port: {port}}}]\nendpoints: [{{addresses: [{ip}]}}]\n")
    }

    fn sr<'a>(list: &'a [Condition], type_: &str) -> (bool, &'a str) {
        let c = list.iter().find(|c| c.type_ == type_).unwrap();
        (c.status, c.reason)
    }

    fn secret() -> String {
        use crate::certs::testing::{key, TestCa, DAY};
        let now = crate::certs::unix_now();
        let k = key(&rcgen::PKCS_ECDSA_P256_SHA256);
        let cert = TestCa::new().issue_pem(&["web.example.com"], &k, now - DAY, now + DAY);
        let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
        format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: cert, namespace: default}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
            indent(&cert),
            indent(&k.serialize_pem())
        )
    }

    #[test]
    fn tls_passthrough_shares_a_port_with_https_and_tlsroutes_attach_by_sni() {
        let listeners = "  - {name: web, port: 443, protocol: HTTPS, hostname: web.example.com, tls: {certificateRefs: [{name: cert}]}}\n  - {name: pass, port: 443, protocol: TLS, hostname: '*.example.com', tls: {mode: Passthrough}}\n  - {name: narrow, port: 443, protocol: TLS, hostname: '*.db.example.com', tls: {mode: Passthrough}}\n";
        let yaml = [
            CLASS.to_string(),
            gateway(listeners),
            secret(),
            service("argocd", 443, "10.0.0.7"),
            service("db", 5432, "10.0.0.8"),
            route("TLSRoute", "argocd", "2026-01-01T00:00:00Z", "  parentRefs: [{name: gw}]\n  hostnames: [argocd.example.com, '*.apps.example.com']\n  rules: [{backendRefs: [{name: argocd, port: 443}]}]\n"),
            route("TLSRoute", "later", "2026-02-01T00:00:00Z", "  parentRefs: [{name: gw}]\n  hostnames: [argocd.example.com, later.example.com]\n  rules: [{backendRefs: [{name: argocd, port: 443, weight: 3}, {name: missing, port: 443}]}]\n"),
            route("TLSRoute", "db", "2026-01-01T00:00:00Z", "  parentRefs: [{name: gw, sectionName: narrow}]\n  hostnames: [pg.db.example.com]\n  rules: [{backendRefs: [{name: db, port: 5432}]}]\n"),
            route("TLSRoute", "nohost", "2026-01-01T00:00:00Z", "  parentRefs: [{name: gw}]\n  rules: [{backendRefs: [{name: db, port: 5432}]}]\n"),
            route("HTTPRoute", "web", "2026-01-01T00:00:00Z", "  parentRefs: [{name: gw, sectionName: pass}]\n"),
        ]
        .concat();
        let state = state(&yaml);
        let a = attach(&state, CONTROLLER_NAME);
        let g = a.gateway("default", "gw").unwrap();
        assert_eq!(sr(&g.conditions, "Accepted"), (true, "Accepted"), "{:?}", a.diagnostics);
        let pass = g.listener("pass").unwrap();
        assert_eq!(pass.supported_kinds, vec![RouteKind::Tls]);
        assert_eq!(sr(&pass.conditions, "Conflicted"), (false, "NoConflicts"));
        assert_eq!(sr(&pass.conditions, "Programmed"), (true, "Programmed"));
        assert_eq!(
            pass.attached_routes, 3,
            "argocd, later and nohost (counted though not accepted)"
        );
        assert_eq!(g.sockets.len(), 1);
        assert_eq!(g.sockets[0].protocol, Protocol::Https);

        let status = |kind, name| &a.route(kind, "default", name).unwrap().parents[0].conditions;
        assert_eq!(sr(status(RouteKind::Tls, "argocd"), "Accepted"), (true, "Accepted"));
        assert_eq!(
            sr(status(RouteKind::Tls, "argocd"), "ResolvedRefs"),
            (true, "ResolvedRefs")
        );
        assert_eq!(sr(status(RouteKind::Tls, "later"), "Accepted"), (true, "Accepted"));
        assert_eq!(
            sr(status(RouteKind::Tls, "later"), "ResolvedRefs"),
            (false, "BackendNotFound")
        );
        assert_eq!(
            sr(status(RouteKind::Tls, "nohost"), "Accepted"),
            (false, "UnsupportedValue")
        );
        assert_eq!(
            sr(status(RouteKind::Http, "web"), "Accepted"),
            (false, "NotAllowedByListeners")
        );

        let (sockets, merged) = l4_sets(&state, &a, &|_, _| None);
        assert!(merged.is_empty());
        assert_eq!(sockets.len(), 1);
        let m = &sockets[0].model;
        let names: Vec<String> = m.passthrough.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "tls-passthrough argocd.example.com -> default/argocd:443 [10.0.0.7:443] weight 1 (TLSRoute default/argocd)",
                "tls-passthrough later.example.com -> default/argocd:443 [10.0.0.7:443] weight 3, (unresolved) weight 1 (TLSRoute default/later)",
                "tls-passthrough pg.db.example.com -> default/db:5432 [10.0.0.8:5432] weight 1 (TLSRoute default/db)",
                "tls-passthrough *.apps.example.com -> default/argocd:443 [10.0.0.7:443] weight 1 (TLSRoute default/argocd)",
            ]
        );
        let sni = m.sni.as_ref().unwrap();
        assert_eq!(sni.terminated, vec![HostPattern::Exact("web.example.com".into())]);
        assert_eq!(sni.closed.len(), 2);
        assert!(!sni.terminates_rest);
    }

    #[test]
    fn tcp_listeners_are_alone_on_their_port_and_the_oldest_tcproute_serves() {
        let listeners = "  - {name: pg, port: 5432, protocol: TCP}\n  - {name: a, port: 6000, protocol: TCP}\n  - {name: b, port: 6000, protocol: TCP}\n  - {name: web, port: 7000, protocol: HTTP}\n  - {name: raw, port: 7000, protocol: TCP}\n";
        let yaml = [
            CLASS.to_string(),
            gateway(listeners),
            service("db", 5432, "10.0.0.8"),
            service("db2", 5432, "10.0.0.9"),
            route("TCPRoute", "newer", "2026-02-01T00:00:00Z", "  parentRefs: [{name: gw, sectionName: pg}]\n  rules: [{backendRefs: [{name: db2, port: 5432}]}]\n"),
            route("TCPRoute", "older", "2026-01-01T00:00:00Z", "  parentRefs: [{name: gw, sectionName: pg}]\n  rules: [{backendRefs: [{name: db, port: 5432}]}]\n"),
            route("TCPRoute", "tworules", "2026-01-01T00:00:00Z", "  parentRefs: [{name: gw, sectionName: pg}]\n  rules: [{backendRefs: [{name: db, port: 5432}]}, {backendRefs: [{name: db, port: 5432}]}]\n"),
        ]
        .concat();
        let state = state(&yaml);
        let a = attach(&state, CONTROLLER_NAME);
        let g = a.gateway("default", "gw").unwrap();
        for (name, want) in [
            ("a", (true, "HostnameConflict")),
            ("b", (true, "HostnameConflict")),
            ("web", (true, "ProtocolConflict")),
            ("raw", (true, "ProtocolConflict")),
            ("pg", (false, "NoConflicts")),
        ] {
            assert_eq!(sr(&g.listener(name).unwrap().conditions, "Conflicted"), want, "{name}");
        }
        let pg = g.listener("pg").unwrap();
        assert_eq!(pg.supported_kinds, vec![RouteKind::Tcp]);
        assert_eq!(pg.attached_routes, 3);
        let accepted = |name| {
            sr(
                &a.route(RouteKind::Tcp, "default", name).unwrap().parents[0].conditions,
                "Accepted",
            )
        };
        assert_eq!(accepted("older"), (true, "Accepted"));
        assert_eq!(
            accepted("newer"),
            (true, "Accepted"),
            "attached, but carries no traffic"
        );
        assert_eq!(accepted("tworules"), (false, "UnsupportedValue"));

        let (sockets, _) = l4_sets(&state, &a, &|_, _| None);
        assert_eq!(sockets.len(), 1, "only pg is bound");
        assert_eq!(sockets[0].protocol, Protocol::Tcp);
        assert_eq!(
            sockets[0].model.tcp.as_ref().unwrap().to_string(),
            "tcp * -> default/db:5432 [10.0.0.8:5432] weight 1 (TCPRoute default/older)"
        );
    }
}
