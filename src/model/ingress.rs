//! The Ingress as the rest of the pipeline keeps it: only the fields translation and the ACME planner read, in
//! the shapes and under the names of the Kubernetes type (`metadata.name`, `spec.rules[].http.paths[]`, ...), so
//! reading code looks the same; the strings that repeat across Ingresses (namespace, class, Service and port
//! names, paths, path types) are shared through [`Strings`].
//!
//! The full object (`k8s_openapi`'s `Ingress`, ~580 bytes plus managed fields, status and ten allocations at
//! the least) is dropped once converted: at 10,000 Ingresses the kept objects were the largest part of the
//! gateway's memory. Cluster mode's status and Event writers read the reflector stores' full objects instead.

use std::collections::{BTreeMap, HashSet};
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use k8s_openapi::api::core::v1::TypedLocalObjectReference;
use k8s_openapi::api::networking::v1 as k8s;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::translate::FxHasher;

/// An Ingress: what is read of its metadata, and its spec. Invariant: vectors hold no growth room (collected
/// through `Box<[_]>`: an in-place collect would keep the larger Kubernetes elements' buffer).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ingress {
    pub metadata: IngressMeta,
    pub spec: Option<IngressSpec>,
}

/// The metadata translation reads. `name` is the one string of its own, shared with the incremental
/// translator's record of the Ingress.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IngressMeta {
    pub name: Option<Arc<str>>,
    pub namespace: Option<Arc<str>>,
    pub creation_timestamp: Option<Time>,
    /// Boxed: most Ingresses have none, and the box is smaller than an empty map.
    pub annotations: Option<Box<BTreeMap<String, String>>>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct IngressSpec {
    pub ingress_class_name: Option<Arc<str>>,
    pub default_backend: Option<Box<IngressBackend>>,
    pub rules: Option<Box<[IngressRule]>>,
    pub tls: Option<Box<[k8s::IngressTLS]>>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct IngressRule {
    pub host: Option<Box<str>>,
    pub http: Option<HttpRule>,
}

/// `HTTPIngressRuleValue`. The path list is shared with the previous rule's (of this Ingress or the one
/// converted before it) when equal, see [`Strings::paths`]: an Ingress with a rule per host and the same paths
/// each (the reference harness's 10,000 rules), or many Ingresses alike, keep one list.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HttpRule {
    pub paths: Arc<[IngressPath]>,
}

/// `HTTPIngressPath`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IngressPath {
    pub path: Option<Arc<str>>,
    pub path_type: Arc<str>,
    pub backend: IngressBackend,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct IngressBackend {
    pub service: Option<ServiceBackend>,
    /// Not supported (a diagnostic), kept to say so.
    pub resource: Option<Box<TypedLocalObjectReference>>,
}

/// `IngressServiceBackend`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServiceBackend {
    pub name: Arc<str>,
    pub port: Option<ServicePort>,
}

/// `ServiceBackendPort`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServicePort {
    pub name: Option<Arc<str>>,
    pub number: Option<i32>,
}

/// Shared strings: one `Arc<str>` per distinct text. A source keeps one set for all its objects and calls
/// [`Strings::prune`] after a load so that texts no object holds any more are dropped.
/// Also keeps the last rule path list made, to share it with the next rule whose paths are equal.
#[derive(Debug, Default)]
pub struct Strings {
    texts: HashSet<Arc<str>, BuildHasherDefault<FxHasher>>,
    last_paths: Option<Arc<[IngressPath]>>,
}

impl Strings {
    /// The shared string equal to `s`.
    pub fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.texts.get(s) {
            return shared.clone();
        }
        let shared: Arc<str> = s.into();
        self.texts.insert(shared.clone());
        shared
    }

    /// `paths` as a shared list: the last one made when equal (one comparison, no index), else a new one.
    pub fn paths(&mut self, paths: Vec<IngressPath>) -> Arc<[IngressPath]> {
        match &self.last_paths {
            Some(last) if **last == *paths => last.clone(),
            _ => {
                let shared: Arc<[IngressPath]> = paths.into();
                self.last_paths = Some(shared.clone());
                shared
            }
        }
    }

    /// Forgets the strings (and the last path list) only this set holds.
    pub fn prune(&mut self) {
        if self.last_paths.as_ref().is_some_and(|p| Arc::strong_count(p) == 1) {
            self.last_paths = None;
        }
        self.texts.retain(|s| Arc::strong_count(s) > 1);
    }

    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }
}

// === conversion from the Kubernetes type ===

impl Ingress {
    /// The fields kept of `o` (moved, not copied, where they are not shared).
    pub fn from_k8s(o: k8s::Ingress, strings: &mut Strings) -> Self {
        Self {
            metadata: IngressMeta::from_k8s(o.metadata, strings),
            spec: o.spec.map(|s| IngressSpec::from_k8s(s, strings)),
        }
    }

    /// [`Ingress::from_k8s`] of a borrowed object (cluster mode converts the reflector stores' objects).
    pub fn from_k8s_ref(o: &k8s::Ingress, strings: &mut Strings) -> Self {
        let m = &o.metadata;
        Self {
            metadata: IngressMeta {
                name: m.name.as_deref().map(Arc::from),
                namespace: m.namespace.as_deref().map(|s| strings.get(s)),
                creation_timestamp: m.creation_timestamp.clone(),
                annotations: m.annotations.clone().map(Box::new),
            },
            spec: o.spec.as_ref().map(|s| IngressSpec::from_k8s_ref(s, strings)),
        }
    }

    /// The kept fields as a Kubernetes object (tests compare with and look up full objects).
    pub fn to_k8s(&self) -> k8s::Ingress {
        k8s::Ingress {
            metadata: ObjectMeta {
                name: self.metadata.name.as_deref().map(str::to_string),
                namespace: self.metadata.namespace.as_deref().map(str::to_string),
                creation_timestamp: self.metadata.creation_timestamp.clone(),
                annotations: self.metadata.annotations.as_deref().cloned(),
                ..Default::default()
            },
            spec: self.spec.as_ref().map(IngressSpec::to_k8s),
            status: None,
        }
    }
}

/// For tests and benches: a conversion with strings of its own.
impl From<k8s::Ingress> for Ingress {
    fn from(o: k8s::Ingress) -> Self {
        Self::from_k8s(o, &mut Strings::default())
    }
}

impl From<k8s::IngressSpec> for IngressSpec {
    fn from(s: k8s::IngressSpec) -> Self {
        Self::from_k8s(s, &mut Strings::default())
    }
}

impl IngressMeta {
    fn from_k8s(m: ObjectMeta, strings: &mut Strings) -> Self {
        Self {
            name: m.name.as_deref().map(Arc::from),
            namespace: m.namespace.as_deref().map(|s| strings.get(s)),
            creation_timestamp: m.creation_timestamp,
            annotations: m.annotations.map(Box::new),
        }
    }
}

impl IngressSpec {
    /// The spec's fields in their compact form. Only the TLS entries are moved; the rest is read from the spec,
    /// as cluster mode reads a stored object's ([`IngressSpec::from_k8s_ref`]).
    pub fn from_k8s(mut s: k8s::IngressSpec, strings: &mut Strings) -> Self {
        let tls = s.tls.take().map(Vec::into_boxed_slice);
        Self {
            tls,
            ..Self::from_k8s_ref(&s, strings)
        }
    }

    /// The compact form of a borrowed spec (no intermediate copy of the whole spec).
    pub fn from_k8s_ref(s: &k8s::IngressSpec, strings: &mut Strings) -> Self {
        let rules = s.rules.as_ref().map(|rules| {
            rules
                .iter()
                .map(|r| IngressRule {
                    host: r.host.as_deref().map(Box::from),
                    http: r.http.as_ref().map(|h| {
                        let paths = h
                            .paths
                            .iter()
                            .map(|p| IngressPath {
                                path: p.path.as_deref().map(|s| strings.get(s)),
                                path_type: strings.get(&p.path_type),
                                backend: IngressBackend::from_k8s(p.backend.clone(), strings),
                            })
                            .collect();
                        HttpRule {
                            paths: strings.paths(paths),
                        }
                    }),
                })
                .collect::<Box<[_]>>()
        });
        Self {
            ingress_class_name: s.ingress_class_name.as_deref().map(|s| strings.get(s)),
            default_backend: s
                .default_backend
                .clone()
                .map(|b| Box::new(IngressBackend::from_k8s(b, strings))),
            rules,
            tls: s.tls.as_deref().map(Box::from),
        }
    }

    fn to_k8s(&self) -> k8s::IngressSpec {
        k8s::IngressSpec {
            ingress_class_name: self.ingress_class_name.as_deref().map(str::to_string),
            default_backend: self.default_backend.as_deref().map(IngressBackend::to_k8s),
            rules: self.rules.as_ref().map(|rules| {
                rules
                    .iter()
                    .map(|r| k8s::IngressRule {
                        host: r.host.as_deref().map(str::to_string),
                        http: r.http.as_ref().map(|h| k8s::HTTPIngressRuleValue {
                            paths: h
                                .paths
                                .iter()
                                .map(|p| k8s::HTTPIngressPath {
                                    path: p.path.as_deref().map(str::to_string),
                                    path_type: p.path_type.to_string(),
                                    backend: p.backend.to_k8s(),
                                })
                                .collect(),
                        }),
                    })
                    .collect()
            }),
            tls: self.tls.as_deref().map(<[_]>::to_vec),
        }
    }
}

impl IngressBackend {
    fn from_k8s(b: k8s::IngressBackend, strings: &mut Strings) -> Self {
        Self {
            service: b.service.map(|s| ServiceBackend {
                name: strings.get(&s.name),
                port: s.port.map(|p| ServicePort {
                    name: p.name.as_deref().map(|s| strings.get(s)),
                    number: p.number,
                }),
            }),
            resource: b.resource.map(Box::new),
        }
    }

    fn to_k8s(&self) -> k8s::IngressBackend {
        k8s::IngressBackend {
            service: self.service.as_ref().map(|s| k8s::IngressServiceBackend {
                name: s.name.to_string(),
                port: s.port.as_ref().map(|p| k8s::ServiceBackendPort {
                    name: p.name.as_deref().map(str::to_string),
                    number: p.number,
                }),
            }),
            resource: self.resource.as_deref().cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_keeps_what_is_read_and_shares_strings() {
        let o: k8s::Ingress = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a", "namespace": "ns", "annotations": {"k": "v"}, "uid": "u1"},
            "spec": {"ingressClassName": "c", "rules": [
                {"host": "a.example", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "s", "port": {"name": "http"}}}},
                    {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "s", "port": {"number": 80}}}}
                ]}}
            ]}
        }))
        .unwrap();
        let mut strings = Strings::default();
        let i = Ingress::from_k8s(o.clone(), &mut strings);
        let mut want = o.clone();
        want.metadata.uid = None;
        assert_eq!(i.to_k8s(), want);
        assert_eq!(Ingress::from_k8s_ref(&o, &mut strings), i);
        let paths = &i.spec.as_ref().unwrap().rules.as_ref().unwrap()[0]
            .http
            .as_ref()
            .unwrap()
            .paths;
        assert!(Arc::ptr_eq(
            paths[0].path.as_ref().unwrap(),
            paths[1].path.as_ref().unwrap()
        ));
        assert!(Arc::ptr_eq(
            &paths[0].backend.service.as_ref().unwrap().name,
            &paths[1].backend.service.as_ref().unwrap().name
        ));
        drop(i);
        strings.prune();
        assert!(strings.is_empty());
    }
}
