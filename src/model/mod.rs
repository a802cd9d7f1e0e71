//! The routing model: what the cluster's objects mean for each listener set, computed by a pure function.
//!
//! [`translate`] takes a [`ClusterState`] (the objects, from a manifest directory or the Kubernetes API) and
//! [`Options`] (derived from the configuration) and returns a [`Translation`]: per listener set, the hosts,
//! paths and backends to serve, plus a [`Diagnostic`] for everything that was rejected and why. No I/O, no
//! clock, deterministic order: the same input always gives the same output.

mod alias;
pub mod annotations;
pub mod auth;
mod canary;
mod changes;
pub mod gateway;
mod incremental;
pub mod ingress;
pub mod l4;
pub mod route;
pub mod traffic;
mod translate;

use std::fmt;
use std::net::SocketAddr;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::IngressClass;

pub use changes::{changed_hosts, HostChange};
pub use incremental::Incremental;
pub use ingress::{Ingress, Strings};
pub use translate::translate;
pub(crate) use translate::FastMap;

/// Every object translation looks at. Order does not matter: translation sorts what it needs. Ingresses are
/// kept in the compact form of [`ingress`] (there are many); the other kinds as Kubernetes objects.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    pub ingresses: Vec<Ingress>,
    pub ingress_classes: Vec<IngressClass>,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub secrets: Vec<Secret>,
    /// Gateway API objects (and Namespaces), few next to Ingresses: kept together.
    pub gateway: gateway::GatewayObjects,
}

/// What translation needs from the configuration.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `spec.controller` value of our IngressClasses.
    pub controller: String,
    /// Listener sets in configuration order, each with the class names it serves.
    pub listener_sets: Vec<SetOptions>,
    /// File mode: configured classes that count as ours even without an `IngressClass` object. The one marked
    /// default is the default class unless an `IngressClass` object in the input carries the default annotation.
    pub implicit_classes: Vec<ImplicitClass>,
    /// Whether [`Translation::owned`] lists the Ingresses that are ours: cluster mode writes their status; file
    /// mode has no use for the list (10,000 entries, 1 MB at 10,000 Ingresses) and leaves it empty.
    pub owned_list: bool,
}

impl Options {
    /// No class and no listener set: what a `Translator` used only to resolve Gateway API backendRefs needs
    /// (it translates no Ingress).
    pub(crate) const NONE: Options = Options {
        controller: String::new(),
        listener_sets: Vec::new(),
        implicit_classes: Vec::new(),
        owned_list: false,
    };
}

#[derive(Debug, Clone)]
pub struct SetOptions {
    pub name: String,
    /// Classes that are ours when their `IngressClass` names [`Options::controller`].
    pub classes: Vec<String>,
    /// Classes that are ours by name alone: whatever their `IngressClass`'s controller, with or without one.
    pub adopted: Vec<String>,
    /// Ingresses of several namespaces may serve paths of one host (`shareHostsAcrossNamespaces`).
    pub share_hosts: bool,
    /// The set's default error backend (`errorPages`), given to its Ingresses that name none of their own.
    pub error_pages: Option<SetErrorPages>,
}

/// A listener set's default error backend: a Service and the codes it serves pages for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetErrorPages {
    pub namespace: String,
    pub service: String,
    /// `None`: the Service's first port.
    pub port: Option<String>,
    pub codes: Vec<u16>,
}

#[derive(Debug, Clone)]
pub struct ImplicitClass {
    pub name: String,
    pub default: bool,
}

/// The result of translation: one model per listener set (same order as [`Options::listener_sets`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Translation {
    pub sets: Vec<SetModel>,
    pub diagnostics: Vec<Diagnostic>,
    /// The Ingresses that are ours, with the index of the listener set serving them (for status), sorted; empty
    /// unless [`Options::owned_list`]. Shared:
    /// an incremental translation hands out the same list again while no Ingress joined or left a set.
    pub owned: std::sync::Arc<Vec<(ObjectRef, usize)>>,
}

impl Translation {
    /// A translation of one listener set named `name` holding `hosts` (tests build tables from it).
    #[cfg(test)]
    pub(crate) fn one_set(name: &str, hosts: Vec<std::sync::Arc<HostModel>>) -> Translation {
        Translation {
            sets: vec![SetModel {
                name: name.into(),
                hosts,
                default_backend: None,
                tls: vec![],
            }],
            ..Default::default()
        }
    }

    /// A stable, human-readable rendering: one line per route, then one per diagnostic. Used by `portico check`
    /// and by the fixture tests.
    pub fn describe(&self) -> String {
        let mut out = self.describe_routes();
        out.push_str(&self.describe_diagnostics());
        out
    }

    /// The errors among the diagnostics: what was rejected.
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    /// The diagnostics part of [`Translation::describe`].
    pub fn describe_diagnostics(&self) -> String {
        self.diagnostics
            .iter()
            .map(|d| match d.severity {
                Severity::Error => format!("diagnostic: {d}\n"),
                Severity::Warning => format!("warning: {d}\n"),
            })
            .collect()
    }

    /// The routes part of [`Translation::describe`].
    pub fn describe_routes(&self) -> String {
        use fmt::Write;
        let mut out = String::new();
        for set in &self.sets {
            let _ = writeln!(out, "listener set {}:", set.name);
            if set.hosts.is_empty() && set.default_backend.is_none() {
                let _ = writeln!(out, "  (no routes)");
            }
            for host in &set.hosts {
                for p in &host.paths {
                    let _ = write!(
                        out,
                        "  {}{} {} -> {} ({})",
                        host.host, p.path, p.kind, p.backend, p.ingress
                    );
                    if p.https_redirect {
                        out.push_str(" [https-redirect]");
                    }
                    p.policy.describe_into(&mut out);
                    if let Some(g) = &p.gateway {
                        g.describe_into(&mut out);
                    }
                    if let Some(c) = &p.canary {
                        c.describe_into(&mut out);
                    }
                    out.push('\n');
                }
            }
            if let Some(d) = &set.default_backend {
                let _ = writeln!(out, "  default -> {} ({})", d.backend, d.ingress);
            }
            for tls in &set.tls {
                let _ = writeln!(
                    out,
                    "  tls {} secret {} ({})",
                    tls.hosts.join(","),
                    tls.secret,
                    tls.ingress
                );
            }
        }
        out
    }
}

/// A listener set's routes. Invariant: hosts are unique and sorted (exact, then wildcard, then the host-less
/// rules last); paths within a host are unique per (path, kind) and sorted. Each host is shared (`Arc`): an
/// incremental translation hands out the same `HostModel` again for a host none of whose inputs changed, so
/// copying and comparing translations costs a pointer per unchanged host.
#[derive(Debug, Clone, PartialEq)]
pub struct SetModel {
    pub name: String,
    pub hosts: Vec<std::sync::Arc<HostModel>>,
    pub default_backend: Option<DefaultBackendModel>,
    pub tls: Vec<TlsModel>,
}

#[derive(Debug, Clone)]
pub struct HostModel {
    pub host: HostPattern,
    pub paths: Vec<PathModel>,
}

impl PartialEq for HostModel {
    /// By value; the same shared host compares without reading it.
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other) || (self.host == other.host && self.paths == other.paths)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostPattern {
    /// `a.example.com`, lowercase, no trailing dot.
    Exact(String),
    /// `*.example.com`, stored as the suffix `example.com`.
    Wildcard(String),
    /// A rule without a host.
    Any,
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(s) => write!(f, "*.{s}"),
            HostPattern::Any => f.write_str("*"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathKind {
    Exact,
    /// Prefix and ImplementationSpecific.
    Prefix,
    /// A regular expression, matched case-insensitively from the start of the path (ingress-nginx's
    /// `use-regex`/`rewrite-target`; see `annotations::rewrite`). A host with one has only these, in precedence
    /// order: longest first, the first match winning.
    Regex,
}

impl fmt::Display for PathKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathKind::Exact => "Exact",
            PathKind::Prefix => "Prefix",
            PathKind::Regex => "Regex",
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PathModel {
    /// Normalised; for Prefix, without a trailing slash (except the root `/`).
    pub path: String,
    pub kind: PathKind,
    pub backend: BackendModel,
    pub ingress: ObjectRef,
    /// Plain-HTTP requests get a 308 to HTTPS (the host has TLS here and the Ingress did not opt out, or the
    /// Ingress forces it).
    pub https_redirect: bool,
    /// The Ingress's annotations: HSTS, header rewrites, allowlist.
    pub policy: std::sync::Arc<annotations::IngressPolicy>,
    /// The canary attached to this route, if any (boxed: most routes have none).
    pub canary: Option<Box<CanaryModel>>,
    /// A Gateway API rule's conditions, filters and weighted backends (`None` for Ingress paths).
    pub gateway: Option<std::sync::Arc<gateway::serve::GatewayRule>>,
}

/// A canary attached to a main route: another Ingress's backend for the same host, path and path type, chosen per
/// request by the canary's rules. The main route's policy (allowlist, redirects, header edits, rewrite) applies
/// whichever backend serves: a canary changes only the backend.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryModel {
    pub backend: BackendModel,
    /// The canary Ingress.
    pub ingress: ObjectRef,
    /// The canary Ingress's annotations: its rules (`policy.canary`, always set) and how its backend balances and
    /// is checked (`balance`, `affinity_cookie`, `active_check`).
    pub policy: std::sync::Arc<annotations::IngressPolicy>,
}

impl CanaryModel {
    /// The canary's selection rules.
    pub fn rules(&self) -> &annotations::canary::Canary {
        self.policy
            .canary
            .as_ref()
            .expect("a canary's policy carries its rules")
    }

    /// Appends ` [canary BACKEND (INGRESS) RULES]` for `portico check` and fixtures.
    pub fn describe_into(&self, out: &mut String) {
        use fmt::Write;
        let _ = write!(out, " [canary {} ({}) ", self.backend, self.ingress);
        self.rules().describe_into(out);
        if self.policy.balancing.balance != annotations::Balance::RoundRobin {
            let _ = write!(out, " balance {:?}", self.policy.balancing.balance);
        }
        out.push(']');
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DefaultBackendModel {
    pub backend: BackendModel,
    pub ingress: ObjectRef,
    pub policy: std::sync::Arc<annotations::IngressPolicy>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsModel {
    pub hosts: Vec<String>,
    pub secret: ObjectRef,
    pub ingress: ObjectRef,
}

/// A Service port and the endpoints behind it. Invariant: endpoints sorted and unique. The names are shared
/// (`Arc<str>`): a translation holds one string per namespace and Service, not one per backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendModel {
    pub namespace: std::sync::Arc<str>,
    pub service: std::sync::Arc<str>,
    pub port: PortRef,
    pub endpoints: Vec<SocketAddr>,
}

impl BackendModel {
    /// `namespace/service:port`, the backend's identity.
    pub fn id(&self) -> String {
        format!("{}/{}:{}", self.namespace, self.service, self.port)
    }
}

impl fmt::Display for BackendModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{} [", self.namespace, self.service, self.port)?;
        for (i, e) in self.endpoints.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{e}")?;
        }
        f.write_str("]")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortRef {
    Number(i32),
    Name(std::sync::Arc<str>),
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(n) => f.write_str(n),
        }
    }
}

/// A Kubernetes object by kind, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// What a diagnostic is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Object(ObjectRef),
    /// A document in a manifest file that could not be read as an object (index counts from 0).
    Document {
        file: String,
        index: usize,
    },
    File(String),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Object(o) => o.fmt(f),
            Subject::Document { file, index } => write!(f, "{file} document {index}"),
            Subject::File(file) => f.write_str(file),
        }
    }
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Severity {
    /// Something was rejected, and so disabled (an object, a rule, a path, a reference).
    #[default]
    Error,
    /// Served as asked, but something the author wrote has no effect (a listed no-op annotation).
    Warning,
}

/// Something that was rejected (and so disabled) with the reason, or a warning about something served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub subject: Subject,
    pub reason: String,
    pub severity: Severity,
}

impl Diagnostic {
    pub fn object(object: ObjectRef, reason: impl Into<String>) -> Self {
        Self {
            subject: Subject::Object(object),
            reason: reason.into(),
            severity: Severity::Error,
        }
    }

    /// A warning about `object`, which is still served.
    pub fn warning(object: ObjectRef, reason: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::object(object, reason)
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.subject, self.reason)
    }
}
