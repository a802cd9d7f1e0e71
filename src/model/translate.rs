//! `translate`: objects in, routing model and diagnostics out. See `docs/ingress-semantics.md`: each rule there
//! is implemented here and has a fixture under `tests/fixtures/translate/`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::IngressClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use std::sync::Arc;

use super::annotations::IngressPolicy;
use super::ingress::{IngressBackend, IngressMeta};
use super::*;
use crate::normalize::validate_ingress_path;

pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Translates the cluster's objects into a routing model per listener set. Pure and deterministic.
pub fn translate(state: &ClusterState, opts: &Options) -> Translation {
    let mut t = Translator::new(state, opts, false);
    let classes = t.classes();
    let mut sets: Vec<SetBuilder> = opts.listener_sets.iter().map(SetBuilder::for_set).collect();
    let mut owned = Vec::new();

    let mut ingresses: Vec<&Ingress> = state.ingresses.iter().collect();
    ingresses.sort_by(|a, b| age_key(&a.metadata).cmp(&age_key(&b.metadata)));
    for ing in ingresses.iter().copied() {
        let Some(iref) = object_ref("Ingress", &ing.metadata) else {
            continue;
        };
        let Some(set_idx) = classes.set_of(ing) else {
            continue;
        };
        if opts.owned_list {
            owned.push((iref.clone(), set_idx));
        }
        t.ingress(ing, &iref, &mut sets[set_idx]);
    }
    // Canaries attach once every main route is known; their diagnostics go back among their Ingress's.
    let before = t.diagnostics.len();
    for set in &mut sets {
        t.attach_canaries(set);
    }
    // Other names once every set's own rules are claimed (see `model::alias`).
    for ing in ingresses
        .iter()
        .copied()
        .filter(|i| annotations::alias::asked(&i.metadata))
    {
        if let (Some(iref), Some(set_idx)) = (object_ref("Ingress", &ing.metadata), classes.set_of(ing)) {
            t.aliases(ing, &iref, &mut sets[set_idx]);
        }
    }
    if t.diagnostics.len() > before {
        super::canary::order_by_age(&mut t.diagnostics, &ingresses);
    }

    let sets = opts
        .listener_sets
        .iter()
        .zip(sets)
        .map(|(o, b)| b.finish(o.name.clone()))
        .collect();
    owned.sort();
    owned.shrink_to_fit();
    Translation {
        sets,
        diagnostics: t.diagnostics,
        owned: Arc::new(owned),
    }
}

/// A hash map for translation's own indexes. Their keys come from the cluster's objects (never from requests),
/// are short, and are hashed several times per Ingress: FxHash (rustc's multiply-rotate hash) instead of
/// SipHash.
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;
type FastSet<K> = HashSet<K, BuildHasherDefault<FxHasher>>;

#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Oldest first: creation time, then namespace/name. Objects without a timestamp (hand-written manifests) sort
/// as the oldest, by name.
pub(super) fn age_key(m: &IngressMeta) -> (Option<i64>, &str, &str) {
    (
        m.creation_timestamp.as_ref().map(|t| t.0.as_second()),
        namespace_of(m),
        m.name.as_deref().unwrap_or(""),
    )
}

/// The metadata translation reads of any object: a Kubernetes object's, or a kept Ingress's.
pub(super) trait Meta {
    fn namespace(&self) -> Option<&str>;
    fn annotations(&self) -> Option<&BTreeMap<String, String>>;
}

impl Meta for ObjectMeta {
    fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    fn annotations(&self) -> Option<&BTreeMap<String, String>> {
        self.annotations.as_ref()
    }
}

impl Meta for IngressMeta {
    fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    fn annotations(&self) -> Option<&BTreeMap<String, String>> {
        self.annotations.as_deref()
    }
}

pub(super) fn namespace_of(m: &impl Meta) -> &str {
    m.namespace().unwrap_or("default")
}

pub(super) fn object_ref(kind: &'static str, m: &IngressMeta) -> Option<ObjectRef> {
    Some(ObjectRef {
        kind,
        namespace: namespace_of(m).to_string(),
        name: m.name.as_deref()?.to_string(),
    })
}

fn annotation<'a>(m: &'a impl Meta, key: &str) -> Option<&'a str> {
    m.annotations()?.get(key).map(String::as_str)
}

// === classes ===

#[derive(PartialEq)]
pub(super) struct Classes {
    /// Our class name (own or adopted) -> listener set index.
    ours: HashMap<String, usize>,
    /// The cluster's default class, when it is ours (own or adopted).
    default: Option<String>,
}

impl Classes {
    pub(super) fn set_of(&self, ing: &Ingress) -> Option<usize> {
        let named = ing
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref())
            .filter(|s| !s.is_empty())
            .or_else(|| annotation(&ing.metadata, LEGACY_CLASS_ANNOTATION).filter(|s| !s.is_empty()));
        match named {
            Some(class) => self.ours.get(class).copied(),
            None => self.ours.get(self.default.as_deref()?).copied(),
        }
    }
}

// === the translator ===

pub(super) struct Translator<'a> {
    pub(super) state: &'a ClusterState,
    opts: &'a Options,
    diagnostics: Vec<Diagnostic>,
    emitted: FastSet<(ObjectRef, String)>,
    /// Services by (namespace, name), and EndpointSlices by (namespace, `kubernetes.io/service-name`), so
    /// resolving a backend does not scan them all. Built on the first backend (an incremental translation of one
    /// host resolves a few).
    service_index: Option<FastMap<(&'a str, &'a str), &'a Service>>,
    slice_index: Option<FastMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>>,
    last_policy: Option<Arc<IngressPolicy>>,
    /// One string per namespace, Service and port name met, shared by the backends (see [`BackendModel`]).
    names: HashSet<Arc<str>>,
    /// Incremental translation: every diagnostic, not deduplicated, with where in its Ingress it was found, so
    /// that a translation of some hosts only can put each back in place (see `model::incremental`).
    pub(super) tagged: Option<Vec<Tagged>>,
    pub(super) at: Tag,
    /// The host of the rule being translated (`None` outside rules and for a rule whose host is invalid).
    pub(super) at_host: Option<HostPattern>,
    /// Translate only the rules of this host (no default backend, no TLS entries).
    pub(super) only_host: Option<HostPattern>,
    /// The Ingress being translated sends to its Services' ClusterIPs (`service-upstream`).
    pub(super) service_upstream: bool,
}

/// Where a diagnostic arises in its Ingress, in the order translation finds them: (stage, index, sequence).
/// Stage 0: the Ingress as a whole (spec, annotations); 1: `spec.defaultBackend`; 2: `spec.rules[index]`;
/// 3: `spec.tls[index]`; 4: attaching a canary's path `spec.rules[index].http.paths[sequence]`; 5: the
/// Ingress's `index`th other name (`model::alias`).
pub(super) type Tag = (u8, u32, u32);

/// A diagnostic of an incremental pass: where it arose, the rule's host for stage 2, the diagnostic.
pub(super) type Tagged = (Tag, Option<HostPattern>, Diagnostic);

#[derive(Default)]
pub(super) struct SetBuilder {
    /// (host, path, kind) -> path model and the policy of its Ingress. The first (oldest) claim wins.
    pub(super) paths: BTreeMap<(HostPattern, String, PathKind), (PathModel, Arc<IngressPolicy>)>,
    /// host -> namespace that owns it (unused when the set shares hosts across namespaces).
    pub(super) host_owner: FastMap<HostPattern, String>,
    pub(super) share_hosts: bool,
    /// Other names (`server-alias`, `www` twins) -> the Ingress that took them (see `model::alias`).
    pub(super) alias_owner: FastMap<HostPattern, ObjectRef>,
    pub(super) default_backend: Option<DefaultBackendModel>,
    pub(super) tls: Vec<TlsModel>,
    /// Canary paths waiting to attach to the main routes (`Translator::attach_canaries`), oldest Ingress first.
    pub(super) canaries: Vec<super::canary::CanaryClaim>,
    /// The set's default error backend (`errorPages`).
    pub(super) error_pages: Option<super::SetErrorPages>,
}

/// The hosts listed in `spec.tls` entries, as patterns (to tell which rule hosts redirect to HTTPS).
pub(super) fn tls_hosts<'t>(tls: impl IntoIterator<Item = &'t TlsModel>) -> Vec<HostPattern> {
    tls.into_iter()
        .flat_map(|t| t.hosts.iter())
        .map(|h| match h.strip_prefix("*.") {
            Some(s) => HostPattern::Wildcard(s.to_string()),
            None => HostPattern::Exact(h.clone()),
        })
        .collect()
}

/// A path's kind and its path as written (`/` for an `ImplementationSpecific` path left empty). `regex`: the
/// Ingress's paths are regexes (ingress-nginx's use-regex or rewrite-target makes every path type one).
pub(super) fn path_kind(p: &super::ingress::IngressPath, regex: bool) -> Result<(PathKind, &str), String> {
    let kind = match &*p.path_type {
        "Exact" | "Prefix" | "ImplementationSpecific" if regex => PathKind::Regex,
        "Exact" => PathKind::Exact,
        "Prefix" | "ImplementationSpecific" => PathKind::Prefix,
        other => return Err(format!("unknown pathType {other:?}")),
    };
    let raw = match p.path.as_deref() {
        Some(path) if !path.is_empty() => path,
        _ if &*p.path_type == "ImplementationSpecific" => "/",
        _ => return Err(format!("path is required for pathType {}", p.path_type)),
    };
    Ok((kind, raw))
}

/// A host with a regex path matches as ingress-nginx makes it: every path a regex (the others as literal text,
/// so `/a.b` stays `/a.b`), tried longest first (by the path as written; ties keep the order of their keys), the
/// first match winning. A literal path equal to an earlier one is dropped (it could never match).
fn to_regex_host(paths: &mut Vec<PathModel>) {
    paths.sort_by_key(|p| std::cmp::Reverse(p.path.len()));
    let mut seen: HashSet<String> = HashSet::new();
    paths.retain_mut(|p| {
        if p.kind != PathKind::Regex {
            p.path = regex::escape(&p.path);
            p.kind = PathKind::Regex;
        }
        seen.insert(p.path.clone())
    });
}

impl SetBuilder {
    /// An empty builder for a set with these options.
    pub(super) fn for_set(o: &SetOptions) -> Self {
        Self {
            share_hosts: o.share_hosts,
            error_pages: o.error_pages.clone(),
            ..Self::default()
        }
    }

    /// The model of each host with paths, in order, `https_redirect` set against `tls_hosts`.
    pub(super) fn hosts(
        paths: BTreeMap<(HostPattern, String, PathKind), (PathModel, Arc<IngressPolicy>)>,
        tls_hosts: &[HostPattern],
    ) -> Vec<HostModel> {
        let mut hosts: Vec<HostModel> = Vec::new();
        for ((host, path, _), (mut p, policy)) in paths {
            p.path = path;
            p.https_redirect = policy.https.force_redirect || (policy.https.redirect && tls_covers(tls_hosts, &host));
            p.policy = policy;
            match hosts.last_mut() {
                Some(h) if h.host == host => h.paths.push(p),
                _ => hosts.push(HostModel { host, paths: vec![p] }),
            }
        }
        for h in &mut hosts {
            if h.paths.iter().any(|p| p.kind == PathKind::Regex) {
                to_regex_host(&mut h.paths);
            }
        }
        hosts
    }

    /// Splits the builder: its paths, default backend and TLS entries.
    #[allow(clippy::type_complexity)]
    pub(super) fn into_parts(
        self,
    ) -> (
        BTreeMap<(HostPattern, String, PathKind), (PathModel, Arc<IngressPolicy>)>,
        Option<DefaultBackendModel>,
        Vec<TlsModel>,
    ) {
        (self.paths, self.default_backend, self.tls)
    }

    fn finish(self, name: String) -> SetModel {
        let tls_hosts = tls_hosts(&self.tls);
        let hosts = Self::hosts(self.paths, &tls_hosts);
        SetModel {
            name,
            hosts: hosts.into_iter().map(Arc::new).collect(),
            default_backend: self.default_backend,
            tls: self.tls,
        }
    }
}

impl<'a> Translator<'a> {
    pub(super) fn new(state: &'a ClusterState, opts: &'a Options, tagged: bool) -> Self {
        Translator {
            state,
            opts,
            diagnostics: Vec::new(),
            emitted: FastSet::default(),
            service_index: None,
            slice_index: None,
            last_policy: None,
            names: HashSet::new(),
            tagged: tagged.then(Vec::new),
            at: (0, 0, 0),
            at_host: None,
            only_host: None,
            service_upstream: false,
        }
    }

    /// Diagnostics found so far (those of `classes`, in a tagged translator).
    pub(super) fn take_diagnostics(&mut self) -> Vec<Diagnostic> {
        std::mem::take(&mut self.diagnostics)
    }

    fn stage(&mut self, stage: u8, index: usize) {
        self.at = (stage, index as u32, 0);
        self.at_host = None;
    }

    /// One `Arc` for equal policies met in a row (most Ingresses have none at all), rather than one per Ingress:
    /// the translation is kept for as long as it is published.
    pub(super) fn share_policy(&mut self, p: IngressPolicy) -> Arc<IngressPolicy> {
        match &self.last_policy {
            Some(last) if **last == p => last.clone(),
            _ => self.last_policy.insert(Arc::new(p)).clone(),
        }
    }

    /// `s` as a string shared with the backends translated before.
    fn shared(&mut self, s: &str) -> Arc<str> {
        match self.names.get(s) {
            Some(shared) => shared.clone(),
            None => {
                let shared: Arc<str> = s.into();
                self.names.insert(shared.clone());
                shared
            }
        }
    }

    pub(super) fn diag(&mut self, object: &ObjectRef, reason: String) {
        self.push_diag(Diagnostic::object(object.clone(), reason));
    }

    /// A warning about something that is still served.
    pub(super) fn warn(&mut self, object: &ObjectRef, reason: String) {
        self.push_diag(Diagnostic::warning(object.clone(), reason));
    }

    fn push_diag(&mut self, d: Diagnostic) {
        let Subject::Object(object) = &d.subject else {
            unreachable!("translation reports on objects")
        };
        if let Some(tagged) = &mut self.tagged {
            if object.kind == "Ingress" {
                tagged.push((self.at, self.at_host.clone(), d));
                self.at.2 += 1;
                return;
            }
        }
        if self.emitted.insert((object.clone(), d.reason.clone())) {
            self.diagnostics.push(d);
        }
    }

    pub(super) fn classes(&mut self) -> Classes {
        let mut ours = HashMap::new();
        let mut by_name: Vec<&IngressClass> = self.state.ingress_classes.iter().collect();
        by_name.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let set_of_class = |name: &str| {
            self.opts
                .listener_sets
                .iter()
                .position(|s| s.classes.iter().any(|c| c == name))
        };
        // Adopted classes are ours by name alone: with or without an IngressClass, whatever its controller.
        let is_adopted = |name: &str| {
            self.opts
                .listener_sets
                .iter()
                .any(|s| s.adopted.iter().any(|c| c == name))
        };
        for (idx, set) in self.opts.listener_sets.iter().enumerate() {
            for name in &set.adopted {
                ours.insert(name.clone(), idx);
            }
        }

        // The default class, as the admission plugin picks it: newest, then by name.
        let mut default: Option<(Option<i64>, &str, bool)> = None;
        for class in &by_name {
            let Some(name) = class.metadata.name.as_deref() else {
                continue;
            };
            let adopted = is_adopted(name);
            let our_controller =
                class.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(&self.opts.controller);
            let is_ours = adopted || our_controller;
            if our_controller && !adopted {
                match set_of_class(name) {
                    Some(idx) => {
                        ours.insert(name.to_string(), idx);
                    }
                    None => {
                        let r = ObjectRef {
                            kind: "IngressClass",
                            namespace: "".into(),
                            name: name.into(),
                        };
                        self.diag(
                            &r,
                            "IngressClass names our controller but no listener set in the configuration serves it"
                                .into(),
                        );
                    }
                }
            }
            if annotation(&class.metadata, DEFAULT_CLASS_ANNOTATION) == Some("true") {
                let key = (
                    class.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()),
                    name,
                );
                let newer = match default {
                    None => true,
                    Some((ts, n, _)) => key.0 > ts || (key.0 == ts && name > n),
                };
                if newer {
                    default = Some((key.0, name, is_ours));
                }
            }
        }
        let mut default = default.filter(|d| d.2).map(|d| d.1.to_string());
        let any_declared_default = by_name
            .iter()
            .any(|c| annotation(&c.metadata, DEFAULT_CLASS_ANNOTATION) == Some("true"));
        for implicit in &self.opts.implicit_classes {
            if ours.contains_key(&implicit.name)
                || by_name
                    .iter()
                    .any(|c| c.metadata.name.as_deref() == Some(&implicit.name))
            {
                continue;
            }
            if let Some(idx) = set_of_class(&implicit.name) {
                ours.insert(implicit.name.clone(), idx);
                if implicit.default && !any_declared_default {
                    default = Some(implicit.name.clone());
                }
            }
        }
        Classes { ours, default }
    }

    pub(super) fn ingress(&mut self, ing: &Ingress, iref: &ObjectRef, set: &mut SetBuilder) {
        self.stage(0, 0);
        let Some(spec) = ing.spec.as_ref() else {
            self.diag(iref, "Ingress has no spec".into());
            return;
        };
        // Served at layer 4 (`model::l4`), not as HTTP routes.
        if annotations::passthrough::leaves_http(&ing.metadata) {
            return;
        }
        let ns = iref.namespace.as_str();
        // Fail closed: an unsupported or unknown annotation disables the Ingress before any value is read.
        match annotations::check_keys(&ing.metadata) {
            Ok(warnings) => {
                for w in warnings {
                    self.warn(iref, w);
                }
            }
            Err(errors) => {
                for e in errors {
                    self.diag(iref, format!("{e}; Ingress not served"));
                }
                return;
            }
        }
        let policy = match IngressPolicy::from_meta(&ing.metadata).and_then(|mut p| {
            // The Secrets annotations name (CAs, basic-auth users) are read here, like TLS Secrets: pure, from the same snapshot.
            p.resolve_secrets(ns, &self.state.secrets)?;
            // So is the error pages' Service (a missing one disables the Ingress).
            self.error_pages(iref, ns, &mut p, set.error_pages.as_ref())?;
            Ok(p)
        }) {
            Ok(p) => self.share_policy(p),
            Err(reason) => {
                self.diag(iref, format!("{reason}; Ingress not served"));
                return;
            }
        };
        self.service_upstream = policy.retry.service_upstream;
        let canary = policy.canary.is_some();
        if !self.canary_annotations(iref, &ing.metadata, canary) || !self.check_aliases(iref, spec, &policy) {
            return;
        }

        if let Some(db) = spec.default_backend.as_ref().filter(|_| self.only_host.is_none()) {
            self.stage(1, 0);
            match &set.default_backend {
                _ if canary => self.diag(iref, super::canary::DEFAULT_BACKEND_IGNORED.into()),
                Some(existing) => {
                    let reason = format!(
                        "spec.defaultBackend ignored: the listener set's default backend is already set by the older {}",
                        existing.ingress
                    );
                    self.diag(iref, reason);
                }
                None => {
                    if let Some(backend) = self.backend(iref, ns, db, &"spec.defaultBackend") {
                        set.default_backend = Some(DefaultBackendModel {
                            backend,
                            ingress: iref.clone(),
                            policy: policy.clone(),
                        });
                    }
                }
            }
        }

        for (ri, rule) in spec.rules.iter().flatten().enumerate() {
            self.stage(2, ri);
            let host = match rule_host(rule.host.as_deref()) {
                Ok(h) => h,
                Err(reason) => {
                    self.diag(iref, format!("spec.rules[{ri}]: {reason}; rule ignored"));
                    continue;
                }
            };
            if self.only_host.as_ref().is_some_and(|only| *only != host) {
                continue;
            }
            if self.tagged.is_some() {
                self.at_host = Some(host.clone());
            }
            // A canary owns no host: its paths attach to the main Ingress's, in the same namespace.
            match set.host_owner.get(&host) {
                // ingress-nginx's behaviour, opted into per set: paths of one host from several namespaces, the
                // same path still going to the oldest Ingress.
                _ if set.share_hosts => {}
                _ if canary => {}
                Some(owner) if owner != ns => {
                    let reason = format!(
                        "spec.rules[{ri}]: host {host} is already served for namespace {owner}; another namespace cannot take it over; rule ignored"
                    );
                    self.diag(iref, reason);
                    continue;
                }
                Some(_) => {}
                None => {
                    set.host_owner.insert(host.clone(), ns.to_string());
                }
            }
            if let Some(http) = &rule.http {
                self.rule_paths(iref, &host, ri, http, &policy, None, set);
            }
        }

        let all_tls = self.only_host.is_none();
        for (ti, tls) in spec.tls.iter().flatten().filter(|_| all_tls).enumerate() {
            self.stage(3, ti);
            if canary {
                self.warn(iref, super::canary::TLS_IGNORED.into());
                break;
            }
            let Some(secret) = tls.secret_name.as_deref().filter(|s| !s.is_empty()) else {
                continue;
            };
            let mut hosts = Vec::new();
            for h in tls.hosts.iter().flatten() {
                match parse_rule_host(h) {
                    Ok(p) => hosts.push(p.to_string()),
                    Err(reason) => self.diag(iref, format!("spec.tls[{ti}]: {reason}; host ignored")),
                }
            }
            set.tls.push(TlsModel {
                hosts,
                secret: ObjectRef {
                    kind: "Secret",
                    namespace: iref.namespace.clone(),
                    name: secret.into(),
                },
                ingress: iref.clone(),
            });
        }
    }

    /// The paths of a rule, claimed on `host`: the rule's own host, or (`alias_of` that host) one of the Ingress's
    /// other names (see `model::alias`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn rule_paths(
        &mut self,
        iref: &ObjectRef,
        host: &HostPattern,
        ri: usize,
        http: &super::ingress::HttpRule,
        policy: &Arc<IngressPolicy>,
        alias_of: Option<&HostPattern>,
        set: &mut SetBuilder,
    ) {
        let canary = policy.canary.is_some();
        for (pi, p) in http.paths.iter().enumerate() {
            // Formatted only into a diagnostic.
            let at = PathAt { rule: ri, path: pi };
            if canary {
                self.canary_path(iref, host, p, at, policy, set);
                continue;
            }
            let (kind, raw) = match path_kind(p, policy.rewrite.regex) {
                Ok(x) => x,
                Err(reason) => {
                    self.diag(iref, format!("{at}: {reason}; path ignored"));
                    continue;
                }
            };
            let checked = match kind {
                PathKind::Regex if !raw.starts_with('/') => Err(format!("path {raw:?} does not start with /")),
                PathKind::Regex => annotations::rewrite::compile_path(raw)
                    .map(drop)
                    .map_err(|e| format!("path {raw:?} {e}")),
                _ => validate_ingress_path(raw),
            };
            if let Err(reason) = checked {
                self.diag(iref, format!("{at}: {reason}; path ignored"));
                continue;
            }
            let path = match kind {
                PathKind::Prefix if raw.len() > 1 => raw.trim_end_matches('/').to_string(),
                _ => raw.to_string(),
            };
            let slot = match set.paths.entry((host.clone(), path, kind)) {
                std::collections::btree_map::Entry::Occupied(o) => {
                    let reason = match alias_of {
                        None => format!(
                            "{at}: {host}{} ({kind}) is already claimed by the older {}; path ignored",
                            o.key().1,
                            o.get().0.ingress
                        ),
                        Some(own) => format!(
                            "{at}: alias {host} of {own}: {host}{} ({kind}) is already claimed by the older {}; path not served under the alias",
                            o.key().1,
                            o.get().0.ingress
                        ),
                    };
                    self.diag(iref, reason);
                    continue;
                }
                std::collections::btree_map::Entry::Vacant(v) => v,
            };
            let Some(backend) = self.backend(iref, &iref.namespace, &p.backend, &at) else {
                continue;
            };
            slot.insert((
                PathModel {
                    // Taken from the key in `finish`.
                    path: String::new(),
                    kind,
                    backend,
                    ingress: iref.clone(),
                    https_redirect: false,
                    policy: policy.clone(),
                    canary: None,
                    gateway: None,
                },
                policy.clone(),
            ));
        }
    }

    /// Resolves a backend in the Ingress's own namespace. `None` when the reference cannot be served at all (a
    /// resource backend, no service); a missing Service or port gives a backend without endpoints (503) and a
    /// diagnostic.
    pub(super) fn backend(
        &mut self,
        iref: &ObjectRef,
        ns: &str,
        b: &IngressBackend,
        at: &dyn fmt::Display,
    ) -> Option<BackendModel> {
        if b.resource.is_some() {
            self.diag(iref, format!("{at}: resource backends are not supported; ignored"));
            return None;
        }
        let Some(svc) = &b.service else {
            self.diag(iref, format!("{at}: backend names no service; ignored"));
            return None;
        };
        let port = match svc.port.as_ref().map(|p| (p.number, p.name.as_deref())) {
            Some((Some(n), _)) => PortRef::Number(n),
            Some((None, Some(name))) if !name.is_empty() => PortRef::Name(self.shared(name)),
            _ => {
                self.diag(
                    iref,
                    format!("{at}: service {} has no port number or name; ignored", svc.name),
                );
                return None;
            }
        };
        let mut model = BackendModel {
            namespace: self.shared(ns),
            service: self.shared(&svc.name),
            port,
            endpoints: Vec::new(),
        };
        let endpoints = if self.service_upstream {
            self.cluster_ip(ns, &svc.name, &model.port)
        } else {
            self.endpoints(ns, &svc.name, &model.port)
        };
        match endpoints {
            Ok(eps) => model.endpoints = eps,
            Err(reason) => self.diag(iref, format!("{at}: {reason}; requests get 503")),
        }
        Some(model)
    }

    /// Resolves the error pages' Service: the Ingress's `default-backend` (in its namespace; missing: `Err`, the
    /// Ingress is not served), else the listener set's `errorPages` for Ingresses with none of their own or with
    /// `custom-http-errors` alone (missing: a warning, and the original responses are served). A Service without
    /// ready endpoints is an error backend that is down: the original responses are served.
    fn error_pages(
        &mut self,
        iref: &ObjectRef,
        ns: &str,
        p: &mut IngressPolicy,
        set: Option<&super::SetErrorPages>,
    ) -> Result<(), String> {
        use annotations::errors::{ErrorPages, DEFAULT_BACKEND};
        let own = p.error_pages.as_ref().and_then(|e| e.service.clone());
        match (own, set) {
            (Some((name, port)), _) => {
                let backend = self
                    .error_backend(ns, &name, port.as_deref())
                    .map_err(|e| format!("annotation {}: {e}", DEFAULT_BACKEND[0]))?;
                if let Some(e) = &mut p.error_pages {
                    e.backend = Some(backend);
                }
            }
            (None, None) if p.error_pages.is_some() => {
                return Err(format!(
                    "annotation {}: no default-backend annotation names the Service that serves the pages, and the \
                     listener set has no errorPages; add portico.dev/default-backend",
                    annotations::errors::CUSTOM_HTTP_ERRORS[0]
                ));
            }
            (None, None) => {}
            (None, Some(set)) => match self.error_backend(&set.namespace, &set.service, set.port.as_deref()) {
                Ok(backend) => {
                    let codes = match &p.error_pages {
                        Some(e) => e.codes.clone(),
                        None => set.codes.clone(),
                    };
                    p.error_pages = Some(ErrorPages {
                        codes,
                        upstream: true,
                        service: None,
                        backend: Some(backend),
                    });
                }
                Err(e) => {
                    self.warn(
                        iref,
                        format!("the listener set's errorPages: {e}; error pages are not served"),
                    );
                    p.error_pages = None;
                }
            },
        }
        Ok(())
    }

    /// An error pages' Service: it must exist; its `port`, else its first port. No ready endpoint is not an error.
    fn error_backend(&mut self, ns: &str, name: &str, port: Option<&str>) -> Result<BackendModel, String> {
        self.build_indexes();
        let Some(services) = &self.service_index else {
            unreachable!("built above");
        };
        let Some(service) = services.get(&(ns, name)).copied() else {
            return Err(format!("Service {ns}/{name} not found"));
        };
        let port = match port {
            Some(p) => match p.parse::<i32>() {
                Ok(n) => PortRef::Number(n),
                Err(_) => PortRef::Name(self.shared(p)),
            },
            None => {
                let first = service
                    .spec
                    .as_ref()
                    .and_then(|s| s.ports.as_deref())
                    .and_then(|ports| ports.first())
                    .map(|p| p.port);
                PortRef::Number(first.ok_or_else(|| format!("Service {ns}/{name} has no ports"))?)
            }
        };
        let endpoints = self.endpoints(ns, name, &port)?;
        Ok(BackendModel {
            namespace: self.shared(ns),
            service: self.shared(name),
            port,
            endpoints,
        })
    }

    fn build_indexes(&mut self) {
        let state = self.state;
        self.service_index.get_or_insert_with(|| {
            let mut idx = FastMap::with_capacity_and_hasher(state.services.len(), Default::default());
            for s in &state.services {
                if let Some(name) = s.metadata.name.as_deref() {
                    idx.insert((namespace_of(&s.metadata), name), s);
                }
            }
            idx
        });
        self.slice_index.get_or_insert_with(|| {
            let mut idx: FastMap<(&str, &str), Vec<&EndpointSlice>> =
                FastMap::with_capacity_and_hasher(state.endpoint_slices.len(), Default::default());
            for slice in &state.endpoint_slices {
                if let Some(svc) = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) {
                    idx.entry((namespace_of(&slice.metadata), svc.as_str()))
                        .or_default()
                        .push(slice);
                }
            }
            idx
        });
    }

    /// `service-upstream`: the Service's ClusterIP and port, as the one endpoint (kube-proxy balances).
    fn cluster_ip(&mut self, ns: &str, name: &str, port: &PortRef) -> Result<Vec<SocketAddr>, String> {
        self.build_indexes();
        let Some(services) = &self.service_index else {
            unreachable!("built above");
        };
        let Some(service) = services.get(&(ns, name)).copied() else {
            return Err(format!("Service {ns}/{name} not found"));
        };
        let spec = service.spec.as_ref();
        let sp = spec
            .and_then(|s| s.ports.as_deref())
            .unwrap_or_default()
            .iter()
            .find(|p| match port {
                PortRef::Number(n) => p.port == *n,
                PortRef::Name(n) => p.name.as_deref() == Some(&**n),
            });
        let Some(sp) = sp else {
            return Err(format!("Service {ns}/{name} has no port {port}"));
        };
        let ip = spec
            .and_then(|s| s.cluster_ip.as_deref())
            .filter(|ip| !ip.is_empty() && *ip != "None")
            .and_then(|ip| ip.parse::<IpAddr>().ok())
            .ok_or_else(|| format!("Service {ns}/{name} has no ClusterIP (headless?), which service-upstream needs"))?;
        let port = u16::try_from(sp.port).map_err(|_| format!("Service {ns}/{name} has an invalid port"))?;
        Ok(vec![SocketAddr::new(ip, port)])
    }

    pub(super) fn endpoints(&mut self, ns: &str, name: &str, port: &PortRef) -> Result<Vec<SocketAddr>, String> {
        self.build_indexes();
        let (Some(services), Some(slices)) = (&self.service_index, &self.slice_index) else {
            unreachable!("built above");
        };
        let Some(service) = services.get(&(ns, name)).copied() else {
            return Err(format!("Service {ns}/{name} not found"));
        };
        let spec = service.spec.as_ref();
        if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
            return Err(format!(
                "Service {ns}/{name} is an ExternalName service, which is not supported"
            ));
        }
        let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
        let sp = ports.iter().find(|p| match port {
            PortRef::Number(n) => p.port == *n,
            PortRef::Name(n) => p.name.as_deref() == Some(&**n),
        });
        let Some(sp) = sp else {
            return Err(format!("Service {ns}/{name} has no port {port}"));
        };
        let port_name = sp.name.as_deref().unwrap_or("");

        let mut ready = Vec::new();
        let mut terminating = Vec::new();
        for slice in slices.get(&(ns, name)).into_iter().flatten() {
            if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
                continue;
            }
            let Some(target) = slice
                .ports
                .iter()
                .flatten()
                .find(|p| {
                    p.name.as_deref().unwrap_or("") == port_name && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
                })
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok())
            else {
                continue;
            };
            for ep in &slice.endpoints {
                let c = ep.conditions.as_ref();
                let is_ready = c.and_then(|c| c.ready) != Some(false);
                let is_serving_terminating =
                    c.and_then(|c| c.serving) == Some(true) && c.and_then(|c| c.terminating) == Some(true);
                let bucket = if is_ready {
                    &mut ready
                } else if is_serving_terminating {
                    &mut terminating
                } else {
                    continue;
                };
                for addr in &ep.addresses {
                    if let Ok(ip) = addr.parse::<IpAddr>() {
                        bucket.push(SocketAddr::new(ip, target));
                    }
                }
            }
        }
        let mut eps = if ready.is_empty() { terminating } else { ready };
        eps.sort();
        eps.dedup();
        // Kept for as long as the translation is published: no room for growth (pushed one by one, a single
        // endpoint sat in room for four).
        eps.shrink_to_fit();
        Ok(eps)
    }
}

/// Where a path sits in its Ingress, as diagnostics name it: `spec.rules[1].http.paths[0]`.
pub(super) struct PathAt {
    pub(super) rule: usize,
    pub(super) path: usize,
}

impl fmt::Display for PathAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spec.rules[{}].http.paths[{}]", self.rule, self.path)
    }
}

/// Whether a rule host is covered by the hosts listed in `spec.tls` (of any Ingress of the set).
fn tls_covers(tls: &[HostPattern], host: &HostPattern) -> bool {
    tls.iter().any(|t| match (t, host) {
        (HostPattern::Exact(a), HostPattern::Exact(b)) => a == b,
        (HostPattern::Wildcard(s), HostPattern::Exact(b)) => b.split_once('.').is_some_and(|(_, rest)| rest == s),
        (HostPattern::Wildcard(a), HostPattern::Wildcard(b)) => a == b,
        _ => false,
    })
}

/// A rule's host: none or empty is the host-less rule set.
pub(super) fn rule_host(raw: Option<&str>) -> Result<HostPattern, String> {
    match raw {
        None | Some("") => Ok(HostPattern::Any),
        Some(h) => parse_rule_host(h),
    }
}

/// Validates and normalises an Ingress rule host: lowercase DNS name, trailing dot removed, optionally one
/// leading `*.` label.
fn parse_rule_host(raw: &str) -> Result<HostPattern, String> {
    let lower: std::borrow::Cow<'_, str> = if raw.bytes().any(|b| b.is_ascii_uppercase()) {
        raw.to_ascii_lowercase().into()
    } else {
        raw.into()
    };
    let h = lower.strip_suffix('.').unwrap_or(&lower);
    let (wild, name) = match h.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, h),
    };
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid {
        return Err(format!(
            "host {raw:?} is not a valid DNS name (a wildcard is allowed only as the whole first label)"
        ));
    }
    Ok(if wild {
        HostPattern::Wildcard(name.to_string())
    } else {
        HostPattern::Exact(name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_hosts() {
        assert_eq!(
            parse_rule_host("Foo.Example.").unwrap(),
            HostPattern::Exact("foo.example".into())
        );
        assert_eq!(
            parse_rule_host("*.example.com").unwrap(),
            HostPattern::Wildcard("example.com".into())
        );
        for bad in [
            "*", "a.*.com", "*a.com", "a..b", "-a.com", "a_b.com", "é.com", "a.com:80",
        ] {
            assert!(parse_rule_host(bad).is_err(), "{bad}");
        }
    }
}
