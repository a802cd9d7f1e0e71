//! An Ingress's other names in translation (see `annotations::alias` for what the annotations mean).
//!
//! Names are claimed in a second pass, [`Translator::aliases`], after every Ingress of the listener set has
//! claimed its own rules (and canaries have attached): so a name that has rules of its own keeps them whichever
//! Ingress is older, as ingress-nginx lets a server's own name win over another server's alias. Among aliases the
//! older Ingress keeps a name. An alias claims its paths like a rule of that host would (a path some other alias
//! took first stays theirs); the `www` twin of `from-to-www-redirect` claims one path, `/` (Prefix), whose policy
//! redirects.
//!
//! Both passes depend only on the Ingresses with a rule or an alias for the host, so an incremental translation of
//! one host makes them the same way (`model::incremental`: an Ingress is a member of its aliases' hosts). The second
//! pass's diagnostics are tagged stage 5 with the name, after the Ingress's own and its canary's.

use std::sync::Arc;

use super::annotations::{self, alias::www_twin, IngressPolicy};
use super::ingress::{Ingress, IngressSpec};
use super::translate::{rule_host, SetBuilder, Translator};
use super::*;

/// The one host of an Ingress that `server-alias` names belong to, or why there is none.
pub(super) fn alias_host(spec: &IngressSpec) -> Result<HostPattern, String> {
    let mut hosts: Vec<HostPattern> = Vec::new();
    for rule in spec.rules.iter().flatten() {
        if let Ok(h) = rule_host(rule.host.as_deref()) {
            if !hosts.contains(&h) {
                hosts.push(h);
            }
        }
    }
    match hosts.as_slice() {
        [HostPattern::Any] => Err(format!(
            "annotation {}: the Ingress's rules have no host; an alias names another host for one rule host",
            annotations::alias::SERVER_ALIAS[0]
        )),
        [one] => Ok(one.clone()),
        [] => Err(format!(
            "annotation {}: the Ingress has no rule to serve under another name",
            annotations::alias::SERVER_ALIAS[0]
        )),
        many => {
            let list: Vec<String> = many.iter().map(ToString::to_string).collect();
            Err(format!(
                "annotation {}: the Ingress has rules for {} hosts ({}); an alias needs exactly one (split the Ingress per host)",
                annotations::alias::SERVER_ALIAS[0],
                many.len(),
                list.join(", ")
            ))
        }
    }
}

/// The `www` twins of an Ingress's exact rule hosts, each with its host, in rule order.
pub(super) fn twins(spec: &IngressSpec) -> Vec<(HostPattern, HostPattern)> {
    let mut out: Vec<(HostPattern, HostPattern)> = Vec::new();
    for rule in spec.rules.iter().flatten() {
        let Ok(h) = rule_host(rule.host.as_deref()) else {
            continue;
        };
        if let Some(t) = www_twin(&h) {
            if !out.iter().any(|(_, known)| *known == t) {
                out.push((h, t));
            }
        }
    }
    out
}

/// Every name an Ingress's alias annotations may add (for `model::incremental`'s host index; a superset is
/// fine).
pub(super) fn names(ing: &Ingress) -> Vec<HostPattern> {
    let (Some(spec), true) = (ing.spec.as_ref(), annotations::alias::asked(&ing.metadata)) else {
        return Vec::new();
    };
    let Ok(a) = annotations::alias::Aliases::from_meta(&ing.metadata) else {
        return Vec::new();
    };
    let mut out = a.names;
    if a.www {
        out.extend(twins(spec).into_iter().map(|(_, t)| t));
    }
    out
}

impl Translator<'_> {
    /// Checks, in the Ingress's first pass, that its alias annotations can apply: `false` (with a diagnostic)
    /// when the Ingress is not served.
    pub(super) fn check_aliases(&mut self, iref: &ObjectRef, spec: &IngressSpec, policy: &IngressPolicy) -> bool {
        if policy.alias.is_empty() || policy.canary.is_some() {
            return true;
        }
        if !policy.alias.names.is_empty() {
            match alias_host(spec) {
                Ok(own) => {
                    if policy.alias.names.contains(&own) {
                        self.warn(
                            iref,
                            format!(
                                "annotation {}: {own} is the Ingress's own host; that alias does nothing",
                                annotations::alias::SERVER_ALIAS[0]
                            ),
                        );
                    }
                }
                Err(reason) => {
                    self.diag(iref, format!("{reason}; Ingress not served"));
                    return false;
                }
            }
        }
        if policy.alias.www && twins(spec).is_empty() {
            self.warn(
                iref,
                format!(
                    "annotation {}: no rule host has a www twin (a wildcard, no host, or a single label); nothing is redirected",
                    annotations::alias::FROM_TO_WWW[0]
                ),
            );
        }
        true
    }

    /// The second pass for one Ingress: claims its other names on its listener set (only `only_host` in an
    /// incremental translation of one host). Quiet about what the first pass reported.
    pub(super) fn aliases(&mut self, ing: &Ingress, iref: &ObjectRef, set: &mut SetBuilder) {
        if !annotations::alias::asked(&ing.metadata) {
            return;
        }
        let Some(spec) = ing.spec.as_ref() else { return };
        if annotations::check_keys(&ing.metadata).is_err() {
            return;
        }
        let Ok(mut p) = IngressPolicy::from_meta(&ing.metadata) else {
            return;
        };
        if p.canary.is_some() || p.alias.is_empty() {
            return;
        }
        if let Some(tls) = &mut p.upstream_tls {
            if tls.resolve_ca(&iref.namespace, &self.state.secrets).is_err() {
                return;
            }
        }
        if let Some(b) = &mut p.basic_auth {
            if b.resolve(&iref.namespace, &self.state.secrets).is_err() {
                return;
            }
        }
        let policy = self.share_policy(p);
        self.service_upstream = policy.retry.service_upstream;
        let mut k = 0u32;
        if let (false, Ok(own)) = (policy.alias.names.is_empty(), alias_host(spec)) {
            for name in &policy.alias.names {
                k += 1;
                if *name == own || !self.at_name(name, k) {
                    continue;
                }
                if !self.claim_name(iref, name, &own, "alias", set) {
                    continue;
                }
                for (ri, rule) in spec.rules.iter().flatten().enumerate() {
                    if rule_host(rule.host.as_deref()).is_ok_and(|h| h == own) {
                        if let Some(http) = &rule.http {
                            self.rule_paths(iref, name, ri, http, &policy, Some(&own), set);
                        }
                    }
                }
            }
        }
        if !policy.alias.www {
            return;
        }
        for (own, twin) in twins(spec) {
            k += 1;
            if !self.at_name(&twin, k) || !self.claim_name(iref, &twin, &own, "www redirect", set) {
                continue;
            }
            // The redirect's route needs a backend to be a route; it is never sent to. The first path's of the
            // host's rules (its diagnostics, if any, were reported in the first pass).
            let first = spec
                .rules
                .iter()
                .flatten()
                .enumerate()
                .filter(|(_, r)| rule_host(r.host.as_deref()).is_ok_and(|h| h == own))
                .find_map(|(ri, r)| Some((ri, r.http.as_ref()?.paths.first()?)));
            let Some((ri, path)) = first else { continue };
            let at = translate::PathAt { rule: ri, path: 0 };
            let Some(backend) = self.backend(iref, &iref.namespace, &path.backend, &at) else {
                continue;
            };
            let mut redirect = (*policy).clone();
            redirect.rewrite = annotations::rewrite::Rewrites {
                host_redirect: Some(own.to_string()),
                ..Default::default()
            };
            redirect.alias = annotations::alias::Aliases::default();
            let redirect = Arc::new(redirect);
            set.paths
                .entry((twin, "/".to_string(), PathKind::Prefix))
                .or_insert_with(|| {
                    (
                        PathModel {
                            path: String::new(),
                            kind: PathKind::Prefix,
                            backend,
                            ingress: iref.clone(),
                            https_redirect: false,
                            policy: redirect.clone(),
                            canary: None,
                            gateway: None,
                        },
                        redirect,
                    )
                });
        }
    }

    /// Positions diagnostics at the `k`th name of the second pass; `false` when an incremental translation of
    /// another host skips it.
    fn at_name(&mut self, name: &HostPattern, k: u32) -> bool {
        if self.only_host.as_ref().is_some_and(|only| only != name) {
            return false;
        }
        self.at = (5, k, 0);
        self.at_host = self.tagged.is_some().then(|| name.clone());
        true
    }

    /// Takes `name` for an Ingress's other name, unless it has rules of its own on the set (a warning: the rules
    /// win), is another Ingress's older alias, or is owned by another namespace.
    fn claim_name(
        &mut self,
        iref: &ObjectRef,
        name: &HostPattern,
        own: &HostPattern,
        what: &str,
        set: &mut SetBuilder,
    ) -> bool {
        if let Some(older) = set.alias_owner.get(name) {
            let reason = format!("{what} {name} of {own} is already an alias of the older {older}; not served");
            self.diag(iref, reason);
            return false;
        }
        let from = (name.clone(), String::new(), PathKind::Exact);
        if set.paths.range(from..).next().is_some_and(|((h, _, _), _)| h == name) {
            let reason =
                format!("{what} {name} of {own} is not served: the name has rules of its own on this listener set");
            self.warn(iref, reason);
            return false;
        }
        if !set.share_hosts {
            match set.host_owner.get(name) {
                Some(owner) if *owner != *iref.namespace => {
                    let reason = format!(
                        "{what} {name} of {own}: host {name} is already served for namespace {owner}; another namespace cannot take it over; not served"
                    );
                    self.diag(iref, reason);
                    return false;
                }
                Some(_) => {}
                None => {
                    set.host_owner.insert(name.clone(), iref.namespace.clone());
                }
            }
        }
        set.alias_owner.insert(name.clone(), iref.clone());
        true
    }
}
