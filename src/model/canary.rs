//! Canaries in translation (see `annotations::canary` for what the annotations mean).
//!
//! A canary Ingress's paths are not routes. While the Ingresses are translated (oldest first) each of its paths
//! becomes a [`CanaryClaim`] in the set's builder; once every main route of the set is known,
//! [`Translator::attach_canaries`] attaches each claim, oldest first, to the main route with the same host, path
//! and path type (or the same path as a regex, when the main Ingress's paths are regexes), as the route's
//! [`CanaryModel`]. A claim without a main route, whose main route is another namespace's, or whose main route
//! already took an older canary, is not served, with a diagnostic on the canary Ingress.
//!
//! Attaching works per (host, path), so an incremental translation of one host attaches that host's claims the
//! same way. Its diagnostics are tagged stage 4 (after the Ingress's own), and the full translation puts them back
//! among their Ingress's ([`order_by_age`]), so both list diagnostics in the same order.

use std::sync::Arc;

use super::annotations::IngressPolicy;
use super::ingress::IngressPath;
use super::translate::{namespace_of, FastMap, PathAt, SetBuilder, Translator};
use super::*;

/// On a canary's `spec.defaultBackend`.
pub(super) const DEFAULT_BACKEND_IGNORED: &str = "spec.defaultBackend of a canary Ingress is not served: a canary only adds an alternative backend to its main Ingress's paths";
/// On a canary's `spec.tls`.
pub(super) const TLS_IGNORED: &str = "spec.tls of a canary Ingress is ignored: its hosts are served with the main Ingress's TLS settings and certificates";

/// A canary's path, waiting for its main route.
pub(super) struct CanaryClaim {
    host: HostPattern,
    /// As the main route's key would hold it: a Prefix path without its trailing slash.
    path: String,
    kind: PathKind,
    /// As written, for a main route whose paths are regexes.
    raw: String,
    model: CanaryModel,
    rule: u32,
    index: u32,
}

impl Translator<'_> {
    /// Reports what a canary's annotations (or `affinity-canary-behavior` on another Ingress) come to; `false`
    /// when the Ingress is not served.
    pub(super) fn canary_annotations(&mut self, iref: &ObjectRef, meta: &ingress::IngressMeta, canary: bool) -> bool {
        match annotations::canary::check_keys(meta, canary) {
            Ok(warnings) => {
                for w in warnings {
                    self.warn(iref, w);
                }
                true
            }
            Err(errors) => {
                for e in errors {
                    self.diag(iref, format!("{e}; Ingress not served"));
                }
                false
            }
        }
    }

    /// Records a canary Ingress's path as a claim on the main route of the same host, path and type.
    pub(super) fn canary_path(
        &mut self,
        iref: &ObjectRef,
        host: &HostPattern,
        p: &IngressPath,
        at: PathAt,
        policy: &Arc<IngressPolicy>,
        set: &mut SetBuilder,
    ) {
        // The path as written picks the main route; the canary's own use-regex or rewrite-target do not apply.
        let (kind, raw) = match super::translate::path_kind(p, false) {
            Ok(x) => x,
            Err(reason) => {
                self.diag(iref, format!("{at}: {reason}; path ignored"));
                return;
            }
        };
        let path = match kind {
            PathKind::Prefix if raw.len() > 1 => raw.trim_end_matches('/'),
            _ => raw,
        };
        let Some(backend) = self.backend(iref, &iref.namespace, &p.backend, &at) else {
            return;
        };
        set.canaries.push(CanaryClaim {
            host: host.clone(),
            path: path.to_string(),
            kind,
            raw: raw.to_string(),
            model: CanaryModel {
                backend,
                ingress: iref.clone(),
                policy: policy.clone(),
            },
            rule: at.rule as u32,
            index: at.path as u32,
        });
    }

    /// Attaches the set's canary claims to its main routes, oldest first (see the module docs).
    pub(super) fn attach_canaries(&mut self, set: &mut SetBuilder) {
        for c in std::mem::take(&mut set.canaries) {
            self.at = (4, c.rule, c.index);
            self.at_host = self.tagged.is_some().then(|| c.host.clone());
            let at = PathAt {
                rule: c.rule as usize,
                path: c.index as usize,
            };
            let iref = c.model.ingress.clone();
            let mut key = (c.host, c.path, c.kind);
            if !set.paths.contains_key(&key) {
                let regex = (key.0.clone(), c.raw, PathKind::Regex);
                if set.paths.contains_key(&regex) {
                    key = regex;
                }
            }
            let (host, path, kind) = (&key.0, &key.1, key.2);
            let Some((main, _)) = set.paths.get_mut(&key) else {
                let reason = format!(
                    "{at}: canary: no main Ingress serves {host}{path} ({kind}) on this listener set; the canary path is not served"
                );
                self.diag(&iref, reason);
                continue;
            };
            let reason = if main.ingress.namespace != iref.namespace {
                format!(
                    "{at}: canary: {host}{path} ({kind}) is served by {} of another namespace; a canary must be in its main Ingress's namespace; the canary path is not served",
                    main.ingress
                )
            } else if let Some(older) = &main.canary {
                format!(
                    "{at}: canary: {host}{path} ({kind}) already has the canary {}; a route takes one canary, the oldest; the canary path is not served",
                    older.ingress
                )
            } else {
                main.canary = Some(Box::new(c.model));
                continue;
            };
            self.diag(&iref, reason);
        }
    }
}

/// Puts the diagnostics of each Ingress back together, Ingresses oldest first (`ingresses` is in that order), as
/// a translation that found them in that order lists them. Others (IngressClasses, found first) stay first.
pub(super) fn order_by_age(diagnostics: &mut [Diagnostic], ingresses: &[&Ingress]) {
    let position: FastMap<(&str, &str), usize> = ingresses
        .iter()
        .enumerate()
        .filter_map(|(i, ing)| Some(((namespace_of(&ing.metadata), ing.metadata.name.as_deref()?), i + 1)))
        .collect();
    diagnostics.sort_by_key(|d| match &d.subject {
        Subject::Object(o) if o.kind == "Ingress" => position
            .get(&(o.namespace.as_str(), o.name.as_str()))
            .copied()
            .unwrap_or(usize::MAX),
        _ => 0,
    });
}
