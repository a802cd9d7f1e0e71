//! Attachment rules, one test per rule of the spec: listeners, conflicts, certificates, allowedRoutes,
//! parentRefs, hostnames, backends, filters, precedence.

use super::*;
use crate::certs::testing::{key, TestCa, DAY};
use crate::certs::unix_now;
use crate::model::ClusterState;
use std::time::Duration;

const PREFIX: &str = "---\napiVersion: gateway.networking.k8s.io/v1\n";

fn state(yaml: &str) -> ClusterState {
    let (s, errors) = crate::source::file::state_from_yaml(yaml, "test.yaml");
    assert!(errors.is_empty(), "{errors:?}");
    s
}

fn run(yaml: &str) -> GatewayAttachment {
    attach(&state(yaml), CONTROLLER_NAME)
}

const CLASS: &str = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: portico, generation: 3}\nspec: {controllerName: portico.dev/gateway-controller}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: other}\nspec: {controllerName: example.com/other}\n";

fn gateway(ns: &str, name: &str, listeners: &str) -> String {
    format!(
        "{PREFIX}kind: Gateway\nmetadata: {{name: {name}, namespace: {ns}, generation: 2}}\nspec:\n  gatewayClassName: portico\n  listeners:\n{listeners}"
    )
}

fn http_route(ns: &str, name: &str, spec: &str) -> String {
    format!("{PREFIX}kind: HTTPRoute\nmetadata: {{name: {name}, namespace: {ns}, generation: 5}}\nspec:\n{spec}")
}

fn service(ns: &str, name: &str, port: u16) -> String {
    format!("---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  ports: [{{port: {port}, appProtocol: kubernetes.io/h2c}}]\n")
}

const HTTP80: &str = "  - {name: http, port: 80, protocol: HTTP}\n";

fn cond<'a>(list: &'a [Condition], type_: &str) -> &'a Condition {
    list.iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} in {list:?}"))
}

/// (status, reason) of a condition.
fn sr<'a>(list: &'a [Condition], type_: &str) -> (bool, &'a str) {
    let c = cond(list, type_);
    (c.status, c.reason)
}

fn parent<'a>(a: &'a GatewayAttachment, name: &str, i: usize) -> &'a ParentStatus {
    let r = a
        .route(RouteKind::Http, "default", name)
        .unwrap_or_else(|| panic!("no status for {name}"));
    &r.parents[i]
}

fn listener<'a>(a: &'a GatewayAttachment, gw: &str, l: &str) -> &'a ListenerStatus {
    a.gateway("default", gw).unwrap().listener(l).unwrap()
}

fn bound<'a>(a: &'a GatewayAttachment, gw: &str, port: u16, l: &str) -> &'a BoundListener {
    let g = a.gateway("default", gw).unwrap();
    let s = g.sockets.iter().find(|s| s.address.port() == port).expect("socket");
    s.listeners.iter().find(|x| x.name == l).expect("bound listener")
}

fn tls_secret(ns: &str, name: &str) -> String {
    let ca = TestCa::new();
    let k = key(&rcgen::PKCS_ECDSA_P256_SHA256);
    let cert = ca.issue_pem(&["example.com"], &k, unix_now() - DAY, unix_now() + 30 * DAY);
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(&cert),
        indent(&k.serialize_pem())
    )
}

// === classes and Gateways ===

#[test]
fn our_classes_are_accepted() {
    let a = run(CLASS);
    assert_eq!(a.classes.len(), 1, "only ours");
    let c = &a.classes[0];
    assert_eq!(c.name, "portico");
    assert_eq!(sr(&c.conditions, "Accepted"), (true, "Accepted"));
    assert_eq!(sr(&c.conditions, "SupportedVersion"), (true, "SupportedVersion"));
    assert!(c.conditions.iter().all(|c| c.observed_generation == Some(3)));
}

#[test]
fn gateway_with_one_route() {
    let yaml = format!(
        "{CLASS}{}{}{}",
        gateway("default", "gw", HTTP80),
        http_route(
            "default",
            "web",
            "  parentRefs: [{name: gw}]\n  hostnames: [web.example.com]\n  rules:\n  - backendRefs: [{name: web, port: 8080}]\n"
        ),
        service("default", "web", 8080)
    );
    let a = run(&yaml);
    let g = a.gateway("default", "gw").unwrap();
    assert_eq!(sr(&g.conditions, "Accepted"), (true, "Accepted"));
    assert_eq!(sr(&g.conditions, "Programmed"), (true, "Programmed"));
    assert!(g.conditions.iter().all(|c| c.observed_generation == Some(2)));
    assert!(g.addresses.is_empty());
    let l = listener(&a, "gw", "http");
    assert_eq!(l.attached_routes, 1);
    assert_eq!(l.supported_kinds, vec![RouteKind::Http, RouteKind::Grpc]);
    assert_eq!(sr(&l.conditions, "Accepted"), (true, "Accepted"));
    assert_eq!(sr(&l.conditions, "Conflicted"), (false, "NoConflicts"));
    assert_eq!(sr(&l.conditions, "ResolvedRefs"), (true, "ResolvedRefs"));
    assert_eq!(sr(&l.conditions, "Programmed"), (true, "Programmed"));

    assert_eq!(g.sockets.len(), 1);
    assert_eq!(g.sockets[0].address, "0.0.0.0:80".parse().unwrap());
    assert_eq!(g.sockets[0].protocol, Protocol::Http);
    let b = bound(&a, "gw", 80, "http");
    assert_eq!(b.rules.len(), 1);
    let rule = &b.rules[0];
    assert_eq!(rule.hostnames, ["web.example.com"]);
    assert_eq!(rule.route.to_string(), "HTTPRoute default/web");
    assert_eq!(
        rule.backends[0].target,
        BackendTarget::Service(ServiceBackend {
            namespace: "default".into(),
            name: "web".into(),
            port: 8080,
            app_protocol: Some("kubernetes.io/h2c".into()),
            tls: None,
        })
    );
    assert_eq!(rule.backends[0].weight, 1);
    assert!(!rule.answers_500());

    let p = parent(&a, "web", 0);
    assert_eq!(p.parent_ref.name, "gw");
    assert_eq!(sr(&p.conditions, "Accepted"), (true, "Accepted"));
    assert_eq!(sr(&p.conditions, "ResolvedRefs"), (true, "ResolvedRefs"));
    assert!(p.conditions.iter().all(|c| c.observed_generation == Some(5)));
    assert!(a.diagnostics.is_empty(), "{:?}", a.diagnostics);
}

#[test]
fn gateways_of_other_classes_and_their_routes_are_not_ours() {
    let yaml = format!(
        "{CLASS}{}{}",
        gateway("default", "gw", HTTP80).replace("gatewayClassName: portico", "gatewayClassName: other"),
        http_route("default", "web", "  parentRefs: [{name: gw}, {name: missing}]\n"),
    );
    let a = run(&yaml);
    assert!(a.gateways.is_empty());
    assert!(a.routes.is_empty(), "no parent of ours: no status written");
}

#[test]
fn addresses_bind_each_ip_and_refuse_other_types() {
    let yaml = format!(
        "{CLASS}{}",
        gateway("default", "gw", HTTP80).replace(
            "  gatewayClassName: portico\n",
            "  gatewayClassName: portico\n  addresses: [{value: 127.0.0.1}, {type: IPAddress, value: '::1'}]\n"
        )
    );
    let a = run(&yaml);
    let g = a.gateway("default", "gw").unwrap();
    let addrs: Vec<String> = g.sockets.iter().map(|s| s.address.to_string()).collect();
    assert_eq!(addrs, ["127.0.0.1:80", "[::1]:80"]);
    assert_eq!(g.addresses.len(), 2);

    let yaml = format!(
        "{CLASS}{}",
        gateway("default", "gw", HTTP80).replace(
            "  gatewayClassName: portico\n",
            "  gatewayClassName: portico\n  addresses: [{type: Hostname, value: lb.example.com}]\n"
        )
    );
    let a = run(&yaml);
    let g = a.gateway("default", "gw").unwrap();
    assert_eq!(sr(&g.conditions, "Accepted"), (false, "UnsupportedAddress"));
    assert_eq!(sr(&g.conditions, "Programmed"), (false, "Invalid"));
    assert!(g.sockets.is_empty());
    assert!(
        a.diagnostics[0].to_string().contains("spec.addresses[0]"),
        "{:?}",
        a.diagnostics
    );
}

#[test]
fn unsupported_protocols() {
    let listeners = "  - {name: http, port: 80, protocol: HTTP}\n  - {name: udp, port: 53, protocol: UDP}\n  - {name: tls, port: 443, protocol: TLS, tls: {mode: Terminate, certificateRefs: [{name: cert}]}}\n  - {name: nomode, port: 8443, protocol: TLS}\n";
    let a = run(&format!("{CLASS}{}", gateway("default", "gw", listeners)));
    let g = a.gateway("default", "gw").unwrap();
    assert_eq!(sr(&g.conditions, "Accepted"), (true, "ListenersNotValid"));
    assert!(cond(&g.conditions, "Accepted").message.contains("udp, tls, nomode"));
    for name in ["udp", "tls", "nomode"] {
        let l = listener(&a, "gw", name);
        assert_eq!(sr(&l.conditions, "Accepted"), (false, "UnsupportedProtocol"), "{name}");
        assert_eq!(sr(&l.conditions, "Programmed"), (false, "Invalid"));
        assert!(l.supported_kinds.is_empty());
    }
    assert_eq!(g.sockets.len(), 1, "only HTTP is bound");

    let only_udp = "  - {name: udp, port: 9000, protocol: UDP}\n";
    let a = run(&format!("{CLASS}{}", gateway("default", "gw", only_udp)));
    let g = a.gateway("default", "gw").unwrap();
    assert_eq!(sr(&g.conditions, "Accepted"), (false, "ListenersNotValid"));
    assert_eq!(sr(&g.conditions, "Programmed"), (false, "Invalid"));
    assert!(g.sockets.is_empty());
}

#[test]
fn conflicts_on_a_port() {
    let listeners = "  - {name: a, port: 80, protocol: HTTP, hostname: a.example.com}\n  - {name: a2, port: 80, protocol: HTTP, hostname: a.example.com}\n  - {name: b, port: 80, protocol: HTTP, hostname: b.example.com}\n  - {name: any, port: 80, protocol: HTTP}\n  - {name: plain, port: 8443, protocol: HTTP}\n  - {name: secure, port: 8443, protocol: HTTPS, tls: {certificateRefs: [{name: cert}]}}\n";
    let yaml = format!(
        "{CLASS}{}{}",
        gateway("default", "gw", listeners),
        tls_secret("default", "cert")
    );
    let a = run(&yaml);
    for name in ["a", "a2"] {
        let l = listener(&a, "gw", name);
        assert_eq!(sr(&l.conditions, "Conflicted"), (true, "HostnameConflict"), "{name}");
        assert_eq!(sr(&l.conditions, "Accepted"), (false, "Invalid"), "{name}");
        assert_eq!(sr(&l.conditions, "Programmed"), (false, "Invalid"), "{name}");
    }
    for name in ["plain", "secure"] {
        let l = listener(&a, "gw", name);
        assert_eq!(sr(&l.conditions, "Conflicted"), (true, "ProtocolConflict"), "{name}");
        assert_eq!(sr(&l.conditions, "Accepted"), (false, "Invalid"), "{name}");
    }
    for name in ["b", "any"] {
        let l = listener(&a, "gw", name);
        assert_eq!(sr(&l.conditions, "Conflicted"), (false, "NoConflicts"), "{name}");
        assert_eq!(sr(&l.conditions, "Programmed"), (true, "Programmed"), "{name}");
    }
    let g = a.gateway("default", "gw").unwrap();
    assert_eq!(sr(&g.conditions, "Accepted"), (true, "ListenersNotValid"));
    assert_eq!(g.sockets.len(), 1, "port 8443 not bound at all");
    let names: Vec<&str> = g.sockets[0].listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["b", "any"], "most specific first, no conflicted listener");
}

#[test]
fn an_older_gateway_keeps_its_port() {
    let older = gateway("default", "older", HTTP80).replace(
        "generation: 2}",
        "generation: 2, creationTimestamp: '2024-01-01T00:00:00Z'}",
    );
    let newer = gateway("default", "a-newer", HTTP80).replace(
        "generation: 2}",
        "generation: 2, creationTimestamp: '2024-02-01T00:00:00Z'}",
    );
    let other_ip = gateway("default", "elsewhere", HTTP80).replace(
        "  gatewayClassName: portico\n",
        "  gatewayClassName: portico\n  addresses: [{value: 127.0.0.2}]\n",
    );
    let a = run(&format!("{CLASS}{newer}{older}{other_ip}"));
    assert_eq!(
        sr(&listener(&a, "older", "http").conditions, "Accepted"),
        (true, "Accepted")
    );
    assert_eq!(
        sr(&listener(&a, "a-newer", "http").conditions, "Accepted"),
        (false, "PortUnavailable")
    );
    assert_eq!(
        sr(&listener(&a, "elsewhere", "http").conditions, "Accepted"),
        (false, "PortUnavailable"),
        "0.0.0.0 overlaps every address"
    );
}

#[test]
fn certificate_refs() {
    let https =
        |refs: &str| format!("  - {{name: https, port: 443, protocol: HTTPS, tls: {{certificateRefs: [{refs}]}}}}\n");
    let grant = "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: certs, namespace: certs}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: default}]\n  to: [{group: '', kind: Secret}]\n";
    let secrets = format!("{}{}", tls_secret("default", "cert"), tls_secret("certs", "shared"));
    let bad_pem = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: bad, namespace: default}\ntype: kubernetes.io/tls\nstringData: {tls.crt: nope, tls.key: nope}\n";
    let check = |refs: &str, extra: &str, want: (bool, &str)| {
        let a = run(&format!(
            "{CLASS}{}{secrets}{extra}",
            gateway("default", "gw", &https(refs))
        ));
        let l = listener(&a, "gw", "https");
        assert_eq!(sr(&l.conditions, "ResolvedRefs"), want, "{refs} {extra}");
        let programmed = sr(&l.conditions, "Programmed").0;
        assert_eq!(programmed, want.0, "{refs}: programmed only with a certificate");
        a
    };
    let a = check("{name: cert}", "", (true, "ResolvedRefs"));
    let b = bound(&a, "gw", 443, "https");
    assert_eq!(
        b.certificates,
        [SecretRef {
            namespace: "default".into(),
            name: "cert".into()
        }]
    );
    check("{name: missing}", "", (false, "InvalidCertificateRef"));
    check("{name: bad}", bad_pem, (false, "InvalidCertificateRef"));
    check("{kind: ConfigMap, name: cert}", "", (false, "InvalidCertificateRef"));
    check("{name: shared, namespace: certs}", "", (false, "RefNotPermitted"));
    check("{name: shared, namespace: certs}", grant, (true, "ResolvedRefs"));
    // One good, one bad: served with the good one, ResolvedRefs false.
    let a = run(&format!(
        "{CLASS}{}{secrets}",
        gateway("default", "gw", &https("{name: cert}, {name: missing}"))
    ));
    let l = listener(&a, "gw", "https");
    assert_eq!(sr(&l.conditions, "ResolvedRefs"), (false, "InvalidCertificateRef"));
    assert_eq!(sr(&l.conditions, "Programmed"), (true, "Programmed"));
    assert_eq!(bound(&a, "gw", 443, "https").certificates.len(), 1);
    assert!(
        a.diagnostics.iter().any(|d| {
            d.to_string()
            == "Gateway default/gw: spec.listeners[0] (https): tls.certificateRefs[1]: Secret default/missing not found"
        }),
        "{:?}",
        a.diagnostics
    );
    // No certificateRefs at all.
    let a = run(&format!(
        "{CLASS}{}",
        gateway("default", "gw", "  - {name: https, port: 443, protocol: HTTPS}\n")
    ));
    assert_eq!(
        sr(&listener(&a, "gw", "https").conditions, "ResolvedRefs"),
        (false, "InvalidCertificateRef")
    );
}

#[test]
fn route_kinds() {
    let listeners = "  - {name: foo, port: 80, protocol: HTTP, allowedRoutes: {kinds: [{kind: FooRoute}]}}\n  - {name: mixed, port: 81, protocol: HTTP, allowedRoutes: {kinds: [{kind: HTTPRoute}, {kind: FooRoute}]}}\n";
    let yaml = format!(
        "{CLASS}{}{}",
        gateway("default", "gw", listeners),
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: grpc, namespace: default}\nspec: {parentRefs: [{name: gw, sectionName: mixed}]}\n"
    );
    let a = run(&yaml);
    let foo = listener(&a, "gw", "foo");
    assert!(foo.supported_kinds.is_empty());
    assert_eq!(sr(&foo.conditions, "ResolvedRefs"), (false, "InvalidRouteKinds"));
    assert_eq!(sr(&foo.conditions, "Programmed"), (false, "Invalid"));
    let mixed = listener(&a, "gw", "mixed");
    assert_eq!(mixed.supported_kinds, [RouteKind::Http]);
    assert_eq!(sr(&mixed.conditions, "ResolvedRefs"), (false, "InvalidRouteKinds"));
    assert_eq!(sr(&mixed.conditions, "Programmed"), (true, "Programmed"));
    let grpc = a.route(RouteKind::Grpc, "default", "grpc").unwrap();
    assert_eq!(
        sr(&grpc.parents[0].conditions, "Accepted"),
        (false, "NotAllowedByListeners")
    );
    assert_eq!(mixed.attached_routes, 0);
}

// === routes ===

#[test]
fn allowed_routes_namespaces() {
    let listeners = "  - {name: same, port: 80, protocol: HTTP, hostname: same.example.com}\n  - {name: all, port: 81, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}\n  - {name: selected, port: 82, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {gateway: shared}}}}}\n";
    let ns = "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: team, labels: {gateway: shared}}\n";
    let route = |ns: &str, name: &str, section: &str| {
        http_route(
            ns,
            name,
            &format!("  parentRefs: [{{name: gw, namespace: default, sectionName: {section}}}]\n"),
        )
    };
    let yaml = format!(
        "{CLASS}{}{ns}{}{}{}{}{}",
        gateway("default", "gw", listeners),
        route("default", "local", "same"),
        route("team", "far", "same"),
        route("team", "any", "all"),
        route("team", "chosen", "selected"),
        route("other", "unlabelled", "selected"),
    );
    let a = run(&yaml);
    let accepted = |ns: &str, name: &str| {
        let r = a.route(RouteKind::Http, ns, name).unwrap();
        sr(&r.parents[0].conditions, "Accepted")
    };
    assert_eq!(accepted("default", "local"), (true, "Accepted"));
    assert_eq!(accepted("team", "far"), (false, "NotAllowedByListeners"));
    assert_eq!(accepted("team", "any"), (true, "Accepted"));
    assert_eq!(accepted("team", "chosen"), (true, "Accepted"));
    assert_eq!(accepted("other", "unlabelled"), (false, "NotAllowedByListeners"));
    assert_eq!(listener(&a, "gw", "same").attached_routes, 1);
    assert_eq!(listener(&a, "gw", "selected").attached_routes, 1);
    let d: Vec<String> = a.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        d.contains(&"HTTPRoute team/far: spec.parentRefs[0] (Gateway default/gw): no listener allows HTTPRoutes from namespace team (allowedRoutes)".to_string()),
        "{d:?}"
    );
}

#[test]
fn section_name_and_port() {
    let listeners = "  - {name: a, port: 80, protocol: HTTP}\n  - {name: b, port: 8080, protocol: HTTP}\n";
    let yaml = format!(
        "{CLASS}{}{}{}{}{}{}",
        gateway("default", "gw", listeners),
        http_route("default", "by-name", "  parentRefs: [{name: gw, sectionName: b}]\n"),
        http_route("default", "by-port", "  parentRefs: [{name: gw, port: 80}]\n"),
        http_route(
            "default",
            "both-wrong",
            "  parentRefs: [{name: gw, sectionName: a, port: 8080}]\n"
        ),
        http_route("default", "no-such", "  parentRefs: [{name: gw, sectionName: c}]\n"),
        http_route(
            "default",
            "whole",
            "  parentRefs: [{name: gw}, {name: gw, sectionName: a}]\n"
        ),
    );
    let a = run(&yaml);
    assert_eq!(sr(&parent(&a, "by-name", 0).conditions, "Accepted"), (true, "Accepted"));
    assert_eq!(sr(&parent(&a, "by-port", 0).conditions, "Accepted"), (true, "Accepted"));
    assert_eq!(
        sr(&parent(&a, "both-wrong", 0).conditions, "Accepted"),
        (false, "NoMatchingParent")
    );
    assert_eq!(
        sr(&parent(&a, "no-such", 0).conditions, "Accepted"),
        (false, "NoMatchingParent")
    );
    let whole = a.route(RouteKind::Http, "default", "whole").unwrap();
    assert_eq!(whole.parents.len(), 2, "one entry per parentRef");
    assert_eq!(whole.parents[1].parent_ref.section_name.as_deref(), Some("a"));
    // a: by-port, whole (counted once); b: by-name, whole.
    assert_eq!(listener(&a, "gw", "a").attached_routes, 2);
    assert_eq!(listener(&a, "gw", "b").attached_routes, 2);
    assert_eq!(bound(&a, "gw", 80, "a").rules.len(), 2, "whole's rules once");
}

#[test]
fn hostnames_and_listener_isolation() {
    let listeners = "  - {name: exact, port: 80, protocol: HTTP, hostname: foo.example.com}\n  - {name: wild, port: 80, protocol: HTTP, hostname: '*.example.com'}\n  - {name: any, port: 80, protocol: HTTP}\n  - {name: other, port: 81, protocol: HTTP, hostname: other.example.net}\n";
    let yaml = format!(
        "{CLASS}{}{}{}{}",
        gateway("default", "gw", listeners),
        http_route(
            "default",
            "many",
            "  parentRefs: [{name: gw, port: 80}]\n  hostnames: [foo.example.com, bar.example.com, '*.example.com', example.org]\n"
        ),
        http_route("default", "none", "  parentRefs: [{name: gw, sectionName: other}]\n  hostnames: [a.example.com]\n"),
        http_route("default", "all-hosts", "  parentRefs: [{name: gw, port: 80}]\n"),
    );
    let a = run(&yaml);
    assert_eq!(
        sr(&parent(&a, "none", 0).conditions, "Accepted"),
        (false, "NoMatchingListenerHostname")
    );
    assert_eq!(listener(&a, "gw", "other").attached_routes, 0);
    assert_eq!(sr(&parent(&a, "many", 0).conditions, "Accepted"), (true, "Accepted"));
    let hosts = |l: &str, route: &str| {
        bound(&a, "gw", 80, l)
            .rules
            .iter()
            .find(|r| r.route.name == route)
            .map(|r| r.hostnames.clone())
    };
    assert_eq!(hosts("exact", "many").unwrap(), ["foo.example.com"]);
    // foo.example.com belongs to the exact listener: isolated away from the wildcard and the catch-all.
    assert_eq!(hosts("wild", "many").unwrap(), ["bar.example.com", "*.example.com"]);
    assert_eq!(hosts("any", "many").unwrap(), ["example.org"]);
    assert_eq!(hosts("exact", "all-hosts").unwrap(), ["foo.example.com"]);
    assert_eq!(hosts("wild", "all-hosts").unwrap(), ["*.example.com"]);
    assert_eq!(hosts("any", "all-hosts").unwrap(), Vec::<String>::new(), "any host");
    let socket = &a.gateway("default", "gw").unwrap().sockets[0];
    assert_eq!(socket.listener_for("foo.example.com").unwrap().name, "exact");
    assert_eq!(socket.listener_for("x.foo.example.com").unwrap().name, "wild");
    assert_eq!(socket.listener_for("example.org").unwrap().name, "any");
}

#[test]
fn backend_refs() {
    let grant = "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: granted}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}]\n  to: [{group: '', kind: Service}]\n";
    let route = |name: &str, backend: &str| {
        http_route(
            "default",
            name,
            &format!("  parentRefs: [{{name: gw}}]\n  rules:\n  - backendRefs: [{backend}]\n"),
        )
    };
    let yaml = format!(
        "{CLASS}{}{}{}{}{grant}{}{}{}{}{}{}{}",
        gateway("default", "gw", HTTP80),
        service("default", "web", 80),
        service("granted", "api", 80),
        service("hidden", "api", 80),
        route("ok", "{name: web, port: 80}"),
        route("kind", "{group: example.com, kind: Bucket, name: b}"),
        route("missing", "{name: nope, port: 80}"),
        route("wrong-port", "{name: web, port: 81}"),
        route("granted", "{name: api, namespace: granted, port: 80}"),
        route("not-granted", "{name: api, namespace: hidden, port: 80}"),
        route("half", "{name: web, port: 80, weight: 3}, {name: nope, port: 80}"),
    );
    let a = run(&yaml);
    let resolved = |name: &str| sr(&parent(&a, name, 0).conditions, "ResolvedRefs");
    assert_eq!(resolved("ok"), (true, "ResolvedRefs"));
    assert_eq!(resolved("kind"), (false, "InvalidKind"));
    assert_eq!(resolved("missing"), (false, "BackendNotFound"));
    assert_eq!(resolved("wrong-port"), (false, "BackendNotFound"));
    assert_eq!(resolved("granted"), (true, "ResolvedRefs"));
    assert_eq!(resolved("not-granted"), (false, "RefNotPermitted"));
    assert_eq!(resolved("half"), (false, "BackendNotFound"));
    for name in ["kind", "missing", "not-granted", "half"] {
        assert_eq!(
            sr(&parent(&a, name, 0).conditions, "Accepted"),
            (true, "Accepted"),
            "{name}"
        );
    }
    let rule = |name: &str| {
        bound(&a, "gw", 80, "http")
            .rules
            .iter()
            .find(|r| r.route.name == name)
            .unwrap()
            .clone()
    };
    assert!(rule("missing").answers_500());
    assert!(rule("not-granted").answers_500());
    let half = rule("half");
    assert!(!half.answers_500(), "the valid backend serves its share");
    assert_eq!(half.backends[0].weight, 3);
    assert!(matches!(
        half.backends[1].target,
        BackendTarget::Invalid {
            reason: "BackendNotFound",
            ..
        }
    ));
    let d: Vec<String> = a.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        d.contains(&"HTTPRoute default/not-granted: spec.rules[0].backendRefs[0]: Service hidden/api is in another namespace and no ReferenceGrant allows it".to_string()),
        "{d:?}"
    );
}

#[test]
fn weights_zero_and_no_backends_answer_500() {
    let yaml = format!(
        "{CLASS}{}{}{}{}{}",
        gateway("default", "gw", HTTP80),
        service("default", "web", 80),
        http_route(
            "default",
            "zero",
            "  parentRefs: [{name: gw}]\n  rules:\n  - backendRefs: [{name: web, port: 80, weight: 0}]\n"
        ),
        http_route("default", "empty", "  parentRefs: [{name: gw}]\n"),
        http_route(
            "default",
            "redirect",
            "  parentRefs: [{name: gw}]\n  rules:\n  - filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 301}}]\n"
        ),
    );
    let a = run(&yaml);
    let rules = &bound(&a, "gw", 80, "http").rules;
    let by = |n: &str| rules.iter().find(|r| r.route.name == n).unwrap();
    assert!(by("zero").answers_500());
    assert!(by("empty").answers_500());
    assert!(!by("redirect").answers_500());
}

#[test]
fn unsupported_values() {
    let rule = |name: &str, rule: &str| {
        http_route(
            "default",
            name,
            &format!("  parentRefs: [{{name: gw}}]\n  rules:\n  - {rule}\n"),
        )
    };
    let yaml = format!(
        "{CLASS}{}{}{}{}{}{}{}{}{}{}{}{}",
        gateway("default", "gw", HTTP80),
        rule("cors", "filters: [{type: CORS, cors: {allowOrigins: ['*']}}]"),
        rule("extension", "filters: [{type: ExtensionRef, extensionRef: {group: x, kind: Y, name: z}}]"),
        rule("both", "filters: [{type: RequestRedirect, requestRedirect: {}}, {type: URLRewrite, urlRewrite: {hostname: x}}]"),
        rule("code", "filters: [{type: RequestRedirect, requestRedirect: {statusCode: 305}}]"),
        rule("regex", "matches: [{path: {type: RegularExpression, value: '(['}}]"),
        rule("timeout", "timeouts: {request: soon}"),
        rule(
            "fine",
            "filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: a, value: b}]}}, {type: ResponseHeaderModifier, responseHeaderModifier: {remove: [x]}}, {type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /v2}}}]\n    matches: [{path: {type: RegularExpression, value: '/a.*'}, method: GET, headers: [{type: RegularExpression, name: x, value: 'a|b'}]}]\n    timeouts: {request: 1m30s, backendRequest: 500ms}"
        ),
        rule("backend-filter", "backendRefs: [{name: web, port: 80, filters: [{type: CORS}]}]"),
        rule(
            "prefix-on-exact",
            "matches: [{path: {type: Exact, value: /a}}]\n    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]"
        ),
        rule("bad-cors", "filters: [{type: CORS, cors: {allowOrigins: ['example.com']}}]"),
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: grpc, namespace: default}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - filters: [{type: RequestRedirect, requestRedirect: {}}]\n",
    );
    let a = run(&yaml);
    let accepted = |name: &str| sr(&parent(&a, name, 0).conditions, "Accepted");
    for name in [
        "extension",
        "code",
        "regex",
        "timeout",
        "backend-filter",
        "prefix-on-exact",
        "bad-cors",
    ] {
        assert_eq!(accepted(name), (false, "UnsupportedValue"), "{name}");
    }
    assert_eq!(accepted("both"), (false, "IncompatibleFilters"));
    assert_eq!(accepted("fine"), (true, "Accepted"));
    assert_eq!(accepted("cors"), (true, "Accepted"));
    let grpc = a.route(RouteKind::Grpc, "default", "grpc").unwrap();
    assert_eq!(sr(&grpc.parents[0].conditions, "Accepted"), (false, "UnsupportedValue"));
    // Refused routes are attached (counted) but not served.
    assert_eq!(listener(&a, "gw", "http").attached_routes, 11);
    let served: Vec<&str> = bound(&a, "gw", 80, "http")
        .rules
        .iter()
        .map(|r| r.route.name.as_str())
        .collect();
    assert_eq!(served, ["cors", "fine"]);
    let fine = &bound(&a, "gw", 80, "http").rules[1];
    assert_eq!(
        fine.timeouts,
        RuleTimeouts {
            request: Some(Duration::from_secs(90)),
            backend_request: Some(Duration::from_millis(500)),
        }
    );
    let d: Vec<String> = a.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        d.contains(&"HTTPRoute default/bad-cors: spec.parentRefs[0] (Gateway default/gw): spec.rules[0].filters[0]: cors.allowOrigins: \"example.com\" is not an origin like https://example.com, https://*.example.com:8443, https://* or *".to_string()),
        "{d:?}"
    );
}

#[test]
fn mirrors_are_resolved() {
    let yaml = format!(
        "{CLASS}{}{}{}",
        gateway("default", "gw", HTTP80),
        service("default", "web", 80),
        http_route(
            "default",
            "m",
            "  parentRefs: [{name: gw}]\n  rules:\n  - backendRefs: [{name: web, port: 80}]\n    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: web, port: 80}, percent: 10}}, {type: RequestMirror, requestMirror: {backendRef: {name: gone, port: 80}}}]\n"
        ),
    );
    let a = run(&yaml);
    assert_eq!(
        sr(&parent(&a, "m", 0).conditions, "ResolvedRefs"),
        (false, "BackendNotFound")
    );
    let r = &bound(&a, "gw", 80, "http").rules[0];
    assert!(matches!(r.filters[0].mirror, Some(BackendTarget::Service(_))));
    assert!(matches!(r.filters[1].mirror, Some(BackendTarget::Invalid { .. })));
}

#[test]
fn precedence_across_routes() {
    let route = |name: &str, created: &str, rules: &str| {
        format!(
            "{PREFIX}kind: HTTPRoute\nmetadata: {{name: {name}, namespace: default, creationTimestamp: '{created}'}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules:\n{rules}"
        )
    };
    let yaml = format!(
        "{CLASS}{}{}{}",
        gateway("default", "gw", HTTP80),
        route(
            "newer",
            "2024-05-01T00:00:00Z",
            "  - matches: [{path: {type: PathPrefix, value: /api}}, {path: {type: Exact, value: /x}}]\n  - matches: [{path: {type: PathPrefix, value: /}}]\n"
        ),
        route(
            "older",
            "2024-01-01T00:00:00Z",
            "  - matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: a, value: b}]}, {path: {type: PathPrefix, value: /}}]\n"
        ),
    );
    let a = run(&yaml);
    let order: Vec<String> = bound(&a, "gw", 80, "http")
        .ordered_matches()
        .into_iter()
        .map(|(r, m)| format!("{}/{}/{}", r.route.name, r.index, m))
        .collect();
    assert_eq!(
        order,
        ["newer/0/1", "older/0/0", "newer/0/0", "older/0/1", "newer/1/0"],
        "Exact, then longest prefix with most headers, then the oldest route"
    );
}

#[test]
fn grpc_routes_attach() {
    let yaml = format!(
        "{CLASS}{}{}{}",
        gateway("default", "gw", HTTP80),
        service("default", "grpc", 9000),
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: g, namespace: default}\nspec:\n  parentRefs: [{name: gw}]\n  hostnames: [grpc.example.com]\n  rules:\n  - matches: [{method: {service: foo.Bar, method: Baz}}]\n    backendRefs: [{name: grpc, port: 9000}]\n  - backendRefs: [{name: grpc, port: 9000}]\n",
    );
    let a = run(&yaml);
    let r = a.route(RouteKind::Grpc, "default", "g").unwrap();
    assert_eq!(sr(&r.parents[0].conditions, "Accepted"), (true, "Accepted"));
    let rules = &bound(&a, "gw", 80, "http").rules;
    assert_eq!(rules.len(), 2);
    assert!(
        matches!(&rules[1].matches, RuleMatches::Grpc(m) if m.len() == 1),
        "no matches: one catch-all"
    );
    let order: Vec<usize> = bound(&a, "gw", 80, "http")
        .ordered_matches()
        .iter()
        .map(|(r, _)| r.index)
        .collect();
    assert_eq!(order, [0, 1]);
}

#[test]
fn deterministic() {
    let yaml = format!(
        "{CLASS}{}{}{}{}",
        gateway("default", "b", HTTP80),
        gateway("default", "a", "  - {name: http, port: 81, protocol: HTTP}\n"),
        http_route("default", "z", "  parentRefs: [{name: a}, {name: b}]\n"),
        http_route("default", "y", "  parentRefs: [{name: b}]\n"),
    );
    let mut s = state(&yaml);
    let first = attach(&s, CONTROLLER_NAME);
    s.gateway.gateways.reverse();
    s.gateway.http_routes.reverse();
    assert_eq!(attach(&s, CONTROLLER_NAME), first);
    let names: Vec<&str> = first.gateways.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    let names: Vec<&str> = first.routes.iter().map(|r| r.route.name.as_str()).collect();
    assert_eq!(names, ["y", "z"]);
}

#[test]
fn durations() {
    use super::super::routes::parse_duration;
    assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
    assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
    assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
    assert_eq!(parse_duration("1h1m1s1ms"), Some(Duration::from_millis(3_661_001)));
    for bad in ["", "10", "1d", "s", "1h1m1s1ms1ms", "123456s", "1.5s"] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
}

#[test]
fn backend_request_longer_than_request_is_refused() {
    let rule = |name: &str, timeouts: &str| {
        http_route(
            "default",
            name,
            &format!("  parentRefs: [{{name: gw}}]\n  rules:\n  - timeouts: {timeouts}\n"),
        )
    };
    let yaml = format!(
        "{CLASS}{}{}{}{}{}",
        gateway("default", "gw", HTTP80),
        rule("longer", "{request: 1s, backendRequest: 1500ms}"),
        rule("equal", "{request: 2s, backendRequest: 2s}"),
        rule("request-off", "{request: 0s, backendRequest: 5s}"),
        rule("alone", "{backendRequest: 5s}"),
    );
    let a = run(&yaml);
    let accepted = |name: &str| sr(&parent(&a, name, 0).conditions, "Accepted");
    assert_eq!(accepted("longer"), (false, "UnsupportedValue"));
    for name in ["equal", "request-off", "alone"] {
        assert_eq!(accepted(name), (true, "Accepted"), "{name}");
    }
    let d: Vec<String> = a.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        d.iter().any(|d| d.contains(
            "HTTPRoute default/longer: spec.parentRefs[0] (Gateway default/gw): spec.rules[0].timeouts: backendRequest (1500ms) is longer than request (1s)"
        )),
        "{d:?}"
    );
}
