//! `portico migrate`: a read-only report of what Portico would make of a set of Ingresses, for people arriving
//! from ingress-nginx. Per Ingress: its class and whether this configuration serves it, each annotation under
//! `portico.dev/` and `nginx.ingress.kubernetes.io/` as implemented, no-op or unsupported (from
//! [`catalog`]), and the other problems translation finds; then a summary and a verdict.
//!
//! The report is computed by [`report`], a pure function over the same [`ClusterState`] that serving uses (read
//! from a manifest directory or listed once from a live cluster by [`read_cluster`]), so it says exactly what
//! `portico run` would do with the same input and configuration.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use crate::config::Config;
use crate::model::annotations::catalog::{self, Support};
use crate::model::{translate, ClusterState, Diagnostic, ObjectRef, Options, Severity, Subject};

/// What becomes of one Ingress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressReport {
    pub object: ObjectRef,
    /// `spec.ingressClassName`, else the legacy `kubernetes.io/ingress.class` annotation.
    pub class: Option<String>,
    /// The listener set serving it, `None` when its class is not served by the configuration.
    pub set: Option<String>,
    /// `(key, support, note)` for every annotation under our prefixes; unknown keys count as unsupported.
    pub annotations: Vec<(String, Support, String)>,
    /// Translation's other diagnostics about this Ingress (served Ingresses only).
    pub problems: Vec<Diagnostic>,
}

impl IngressReport {
    pub fn unsupported(&self) -> usize {
        self.annotations.iter().filter(|a| a.1 == Support::Unsupported).count()
    }

    /// Served, or would be once its class is, with no unsupported annotation and no rejected part.
    pub fn ready(&self) -> bool {
        self.unsupported() == 0 && !self.problems.iter().any(Diagnostic::is_error)
    }
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub ingresses: Vec<IngressReport>,
    /// Diagnostics about anything but an Ingress (documents, IngressClasses, Services...).
    pub other: Vec<Diagnostic>,
}

impl Report {
    /// Whether anything would be disabled or rejected.
    pub fn ready(&self) -> bool {
        self.ingresses.iter().all(IngressReport::ready) && !self.other.iter().any(Diagnostic::is_error)
    }

    /// The report as `portico migrate` prints it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for ing in &self.ingresses {
            let class = ing.class.as_deref().unwrap_or("(none)");
            let _ = write!(out, "{} (class {class}): ", ing.object);
            match &ing.set {
                Some(set) => {
                    let _ = writeln!(out, "served on listener set {set}");
                }
                None => {
                    let _ = writeln!(
                        out,
                        "not served by this configuration (no listener set serves class {class})"
                    );
                }
            }
            let implemented: Vec<&str> = ing
                .annotations
                .iter()
                .filter(|a| a.1 == Support::Implemented)
                .map(|a| a.0.as_str())
                .collect();
            if !implemented.is_empty() {
                let _ = writeln!(out, "  implemented: {}", implemented.join(", "));
            }
            for (key, support, note) in &ing.annotations {
                match support {
                    Support::Implemented => {}
                    Support::NoOp => {
                        let _ = writeln!(out, "  no-op (warning): {key}: {note}");
                    }
                    Support::Unsupported => {
                        let _ = writeln!(out, "  UNSUPPORTED: {key}: {note}");
                    }
                }
            }
            for p in &ing.problems {
                let label = match p.severity {
                    Severity::Error => "problem",
                    Severity::Warning => "warning",
                };
                let _ = writeln!(out, "  {label}: {}", p.reason);
            }
            let verdict = match (ing.ready(), ing.set.is_some()) {
                (true, true) => "ready".to_string(),
                (true, false) => "ready once its class is served by a listener set".to_string(),
                (false, _) if ing.unsupported() > 0 => {
                    format!("would be disabled: {} unsupported annotation(s)", ing.unsupported())
                }
                (false, _) => "served in part: see the problems above".to_string(),
            };
            let _ = writeln!(out, "  verdict: {verdict}");
        }
        if !self.other.is_empty() {
            out.push_str("other objects:\n");
            for d in &self.other {
                let _ = writeln!(out, "  {d}");
            }
        }

        let total = self.ingresses.len();
        let disabled = self.ingresses.iter().filter(|i| i.unsupported() > 0).count();
        let partial = self
            .ingresses
            .iter()
            .filter(|i| i.unsupported() == 0 && !i.ready())
            .count();
        let mut unserved: BTreeMap<&str, usize> = BTreeMap::new();
        for i in self.ingresses.iter().filter(|i| i.set.is_none()) {
            *unserved.entry(i.class.as_deref().unwrap_or("(none)")).or_default() += 1;
        }
        let mut counts: HashMap<Support, usize> = HashMap::new();
        let mut blockers: BTreeMap<&str, usize> = BTreeMap::new();
        for (key, support, _) in self.ingresses.iter().flat_map(|i| &i.annotations) {
            *counts.entry(*support).or_default() += 1;
            if *support == Support::Unsupported {
                *blockers.entry(key).or_default() += 1;
            }
        }
        let _ = writeln!(
            out,
            "\nsummary: {total} Ingress(es): {} ready, {disabled} would be disabled by unsupported annotations, {partial} with other problems",
            total - disabled - partial
        );
        if !unserved.is_empty() {
            let list: Vec<String> = unserved.iter().map(|(c, n)| format!("{c}: {n}")).collect();
            let _ = writeln!(
                out,
                "classes no listener set serves: {} (serve one by name with a listener set's adoptClasses; `--adopt CLASS` reports as if)",
                list.join(", ")
            );
        }
        let _ = writeln!(
            out,
            "annotations: {} implemented, {} no-op, {} unsupported",
            counts.get(&Support::Implemented).unwrap_or(&0),
            counts.get(&Support::NoOp).unwrap_or(&0),
            counts.get(&Support::Unsupported).unwrap_or(&0)
        );
        for (key, n) in &blockers {
            let _ = writeln!(out, "  unsupported {key}: {n} Ingress(es)");
        }
        if self.ready() {
            out.push_str("verdict: READY: nothing would be disabled\n");
        } else {
            let _ = writeln!(
                out,
                "verdict: NOT READY: {} Ingress(es) would be disabled or served in part; fix what is marked UNSUPPORTED or problem",
                disabled + partial + usize::from(self.other.iter().any(Diagnostic::is_error))
            );
        }
        out
    }
}

/// The report for `state` under `config` (`file_mode`: configured classes exist without IngressClass objects,
/// as `portico run --manifests` treats them). `extra` are diagnostics from reading the input (bad documents).
pub fn report(state: &ClusterState, config: &Config, file_mode: bool, extra: Vec<Diagnostic>) -> Report {
    let mut opts = Options::from_config(config, file_mode);
    opts.owned_list = true;
    let t = translate(state, &opts);
    let set_of: HashMap<&ObjectRef, usize> = t.owned.iter().map(|(o, i)| (o, *i)).collect();

    let mut ingresses: Vec<IngressReport> = state
        .ingresses
        .iter()
        .map(|ing| {
            let object = ObjectRef {
                kind: "Ingress",
                namespace: ing.metadata.namespace.as_deref().unwrap_or("default").to_string(),
                name: ing.metadata.name.as_deref().unwrap_or_default().to_string(),
            };
            let class = ing
                .spec
                .as_ref()
                .and_then(|s| s.ingress_class_name.as_deref())
                .or_else(|| {
                    ing.metadata
                        .annotations
                        .as_ref()?
                        .get("kubernetes.io/ingress.class")
                        .map(String::as_str)
                })
                .map(str::to_string);
            let findings = catalog::classify(ing.metadata.annotations.as_deref());
            // Translation words the annotation findings as `check_keys` does; those are listed above, not twice.
            let from_keys: Vec<String> = findings
                .iter()
                .flat_map(|f| {
                    let m = f.message();
                    [format!("{m}; Ingress not served"), m]
                })
                .collect();
            let annotations = findings
                .iter()
                .map(|f| {
                    let note = match f.entry {
                        Some(e) => e.note.to_string(),
                        None => f.message(),
                    };
                    (f.key.to_string(), f.support(), note)
                })
                .collect();
            let set = set_of.get(&object).map(|i| opts.listener_sets[*i].name.clone());
            let problems = t
                .diagnostics
                .iter()
                .filter(|d| d.subject == Subject::Object(object.clone()))
                .filter(|d| !from_keys.contains(&d.reason))
                .cloned()
                .collect();
            IngressReport {
                object,
                class,
                set,
                annotations,
                problems,
            }
        })
        .collect();
    ingresses.sort_by(|a, b| a.object.cmp(&b.object));
    let mut other = extra;
    other.extend(
        t.diagnostics
            .iter()
            .filter(|d| !matches!(&d.subject, Subject::Object(o) if o.kind == "Ingress"))
            .cloned(),
    );
    Report { ingresses, other }
}

/// Lists, once and read-only, the objects `portico run` would watch: Ingresses, IngressClasses, Services,
/// EndpointSlices and `kubernetes.io/tls` Secrets, in `namespaces` (all when empty).
pub async fn read_cluster(client: kube::Client, namespaces: &[String]) -> Result<ClusterState, kube::Error> {
    use k8s_openapi::api::core::v1::{Secret, Service};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
    use kube::api::{Api, ListParams};

    async fn list<K>(client: &kube::Client, namespaces: &[String], lp: &ListParams) -> Result<Vec<K>, kube::Error>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let mut out = Vec::new();
        if namespaces.is_empty() {
            out.extend(Api::<K>::all(client.clone()).list(lp).await?.items);
        } else {
            for ns in namespaces {
                out.extend(Api::<K>::namespaced(client.clone(), ns).list(lp).await?.items);
            }
        }
        Ok(out)
    }

    let lp = ListParams::default();
    let mut strings = crate::model::Strings::default();
    Ok(ClusterState {
        ingresses: list::<Ingress>(&client, namespaces, &lp)
            .await?
            .into_iter()
            .map(|i| crate::model::Ingress::from_k8s(i, &mut strings))
            .collect(),
        ingress_classes: Api::<IngressClass>::all(client.clone()).list(&lp).await?.items,
        services: list::<Service>(&client, namespaces, &lp).await?,
        endpoint_slices: list::<EndpointSlice>(&client, namespaces, &lp).await?,
        // TLS Secrets, and the Opaque ones basic auth reads (`auth-secret`), as the kube source watches them.
        secrets: {
            let mut secrets = list::<Secret>(
                &client,
                namespaces,
                &ListParams::default().fields("type=kubernetes.io/tls"),
            )
            .await?;
            secrets.extend(list::<Secret>(&client, namespaces, &ListParams::default().fields("type=Opaque")).await?);
            secrets
        },
        // The migration report is about Ingresses.
        gateway: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str =
        "listenerSets:\n  - name: public\n    ingressClasses: [portico]\n    http: [\"127.0.0.1:0\"]\n";

    #[test]
    fn report_classifies_each_ingress() {
        let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{port: 80}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: ok
  namespace: shop
  annotations: {nginx.ingress.kubernetes.io/ssl-redirect: "false", nginx.ingress.kubernetes.io/proxy-buffering: "on"}
spec:
  ingressClassName: portico
  rules: [{host: shop.example, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: guarded
  namespace: shop
  annotations: {nginx.ingress.kubernetes.io/auth-keepalive: "10"}
spec:
  ingressClassName: portico
  rules: [{host: admin.example, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: legacy
  namespace: shop
  annotations: {kubernetes.io/ingress.class: nginx}
spec:
  rules: [{host: old.example, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]
"#;
        let (state, diags) = crate::source::file::state_from_yaml(yaml, "in.yaml");
        let config = Config::from_yaml(CONFIG).unwrap();
        let r = report(&state, &config, true, diags);
        assert!(!r.ready());
        let names: Vec<&str> = r.ingresses.iter().map(|i| i.object.name.as_str()).collect();
        assert_eq!(names, ["guarded", "legacy", "ok"]);
        let [guarded, legacy, ok] = &r.ingresses[..] else {
            unreachable!()
        };
        assert_eq!((guarded.unsupported(), guarded.problems.len()), (1, 0), "{guarded:?}");
        assert_eq!(legacy.set, None);
        assert_eq!(legacy.class.as_deref(), Some("nginx"));
        assert!(legacy.ready());
        assert_eq!(ok.set.as_deref(), Some("public"));
        assert!(ok.ready() && ok.problems.is_empty(), "{ok:?}");
        let text = r.render();
        for want in [
            "Ingress shop/guarded (class portico): served on listener set public",
            "  UNSUPPORTED: nginx.ingress.kubernetes.io/auth-keepalive: Portico's auth client keeps its own connection pool",
            "  verdict: would be disabled: 1 unsupported annotation(s)",
            "Ingress shop/legacy (class nginx): not served by this configuration",
            "  verdict: ready once its class is served by a listener set",
            "  implemented: nginx.ingress.kubernetes.io/ssl-redirect",
            "  no-op (warning): nginx.ingress.kubernetes.io/proxy-buffering: Portico streams responses",
            "summary: 3 Ingress(es): 2 ready, 1 would be disabled by unsupported annotations, 0 with other problems",
            "classes no listener set serves: nginx: 1",
            "annotations: 1 implemented, 1 no-op, 1 unsupported",
            "  unsupported nginx.ingress.kubernetes.io/auth-keepalive: 1 Ingress(es)",
            "verdict: NOT READY",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }
}
