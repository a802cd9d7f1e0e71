//! Per-Ingress upstream settings the routing table does not carry: TLS to the backends (each TLS policy owns its
//! connection pool, so connections verified one way are never reused for a route that verifies another way) and
//! the request-body timeout.
//!
//! Only Ingresses that need one of these are in the table, so for most requests the lookup is an emptiness
//! check. The table is rebuilt from each published translation and published inside the same snapshot as the
//! routes (`snapshot::Snapshot::upstream`), so a request sees the policies of the table it routed with; an
//! unchanged Ingress keeps its policy (and its pooled connections).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::client::{build_tls_client, TlsClient};
use crate::config::UpstreamConfig;
use crate::model::annotations::{BackendProtocol, IngressPolicy, UpstreamTls};
use crate::model::gateway::BackendTls;
use crate::model::{HostPattern, ObjectRef, PathModel, Translation};

/// A Gateway API rule's backends that BackendTLSPolicies send TLS to, with whether they speak HTTP/2.
fn gateway_tls(p: &PathModel) -> impl Iterator<Item = (&BackendTls, bool)> {
    p.gateway
        .iter()
        .flat_map(|g| g.backend_tls.iter().flatten().map(move |t| (&**t, g.h2c)))
}

/// Whether a path needs an entry in the table: its Ingress's annotations, or a Gateway backend's TLS.
fn path_needs(p: &PathModel) -> bool {
    Spec::needed(&p.policy) || gateway_tls(p).next().is_some()
}

/// What identifies a policy: the annotations it was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Spec {
    protocol: BackendProtocol,
    tls: Option<UpstreamTls>,
    /// The Host every request of this Ingress carries upstream, when there is one: `upstream-host`, else the
    /// Ingress's only (exact) rule host when the client's Host is passed on.
    upstream_host: Option<String>,
    request_body_timeout: Option<Duration>,
}

impl Spec {
    /// Whether an Ingress with these annotations has a policy: TLS to its backends or a body timeout.
    fn needed(p: &IngressPolicy) -> bool {
        matches!(p.backend.protocol, BackendProtocol::Https | BackendProtocol::Grpcs) || p.body.timeout.is_some()
    }

    /// A Gateway API backend's: TLS as its BackendTLSPolicy says (HTTP/2 over TLS with `h2`).
    fn of_backend(t: &BackendTls, h2: bool) -> Self {
        Spec {
            protocol: if h2 {
                BackendProtocol::Grpcs
            } else {
                BackendProtocol::Https
            },
            tls: Some(UpstreamTls {
                verify: true,
                ca_secret: None,
                ca_pem: t.ca_pem.clone(),
                server_name: Some(t.hostname.clone()),
                system_roots: t.ca_pem.is_none(),
                subject_alt_names: t.subject_alt_names.clone(),
            }),
            upstream_host: None,
            request_body_timeout: None,
        }
    }

    fn of(p: &IngressPolicy, sole_host: Option<&str>) -> Option<Self> {
        if !Self::needed(p) {
            return None;
        }
        let upstream_host = match &p.headers.upstream_host {
            Some(h) => crate::normalize::normalize_host(h).ok().map(|h| h.name.to_string()),
            None => sole_host.filter(|_| p.headers.pass_host).map(str::to_string),
        };
        Some(Spec {
            protocol: p.backend.protocol,
            tls: p.backend.tls.clone(),
            upstream_host,
            request_body_timeout: p.body.timeout,
        })
    }
}

/// One Ingress's upstream settings.
pub struct UpstreamPolicy {
    spec: Spec,
    /// The pooled TLS client, for `HTTPS` and `GRPCS` backends.
    pub tls: Option<TlsClient>,
    /// Longest pause between two pieces of the request body (`None`: the listener set's default).
    pub request_body_timeout: Option<Duration>,
}

impl std::fmt::Debug for UpstreamPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPolicy")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl UpstreamPolicy {
    fn build(spec: Spec, cfg: &UpstreamConfig, ingress: &ObjectRef) -> Self {
        let tls = match (spec.protocol, &spec.tls) {
            (BackendProtocol::Https | BackendProtocol::Grpcs, tls) => {
                let default = UpstreamTls::default();
                let tls = tls.as_ref().unwrap_or(&default);
                // The SNI and verified name: proxy-ssl-name, else the upstream Host when it is the same for every
                // request of the Ingress (connections are pooled per policy), else the endpoint address.
                let name = tls.server_name.clone().or_else(|| spec.upstream_host.clone());
                match build_tls_client(cfg, tls, name, spec.protocol == BackendProtocol::Grpcs) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        // Translation validated the CA, so this is not expected; the route then fails with 502.
                        tracing::error!(%ingress, error = %e, "cannot build the upstream TLS client");
                        None
                    }
                }
            }
            _ => None,
        };
        Self {
            request_body_timeout: spec.request_body_timeout,
            tls,
            spec,
        }
    }

    /// Whether requests go over TLS (when the client could not be built, they fail rather than go plain).
    pub fn wants_tls(&self) -> bool {
        matches!(self.spec.protocol, BackendProtocol::Https | BackendProtocol::Grpcs)
    }

    /// Whether the backend speaks HTTP/2.
    pub fn h2(&self) -> bool {
        matches!(self.spec.protocol, BackendProtocol::Grpcs | BackendProtocol::H2c)
    }
}

/// Policies by Ingress (`namespace/name`), and per listener set the policy of the default backend's Ingress.
#[derive(Debug, Default)]
pub struct PolicyTable {
    by_ingress: HashMap<Arc<str>, Arc<UpstreamPolicy>>,
    defaults: Vec<Option<Arc<UpstreamPolicy>>>,
    /// Gateway API backends' TLS, by [`BackendTls::key`].
    by_backend: HashMap<Arc<str>, Arc<UpstreamPolicy>>,
}

impl PolicyTable {
    /// The policy of a request's Ingress (`None` for the default backend of listener set `set`); `None` when the
    /// Ingress needs nothing beyond the routing table.
    pub fn lookup(&self, set: usize, ingress: Option<&str>) -> Option<&Arc<UpstreamPolicy>> {
        if self.by_ingress.is_empty() {
            return None;
        }
        match ingress {
            Some(i) => self.by_ingress.get(i),
            None => self.defaults.get(set)?.as_ref(),
        }
    }

    /// The TLS policy of a Gateway API backend (its `WeightedBackend::tls` key). `None` (not expected: both come
    /// from one translation) must fail the request rather than send it plaintext.
    pub fn backend_tls(&self, key: &str) -> Option<&Arc<UpstreamPolicy>> {
        self.by_backend.get(key)
    }
}

/// Builds [`PolicyTable`]s, keeping the last one so unchanged Ingresses keep their policies.
pub struct Policies {
    table: Arc<PolicyTable>,
    cfg: UpstreamConfig,
}

impl Policies {
    pub fn new(cfg: &UpstreamConfig) -> Self {
        Self {
            table: Arc::default(),
            cfg: cfg.clone(),
        }
    }

    /// Rebuilds the table from a translation, keeping the policies of Ingresses whose settings did not change.
    /// `previous` is the translation published before (`None` at first): when no host that changed since
    /// ([`crate::model::changed_hosts`], before and after) has an Ingress with a policy and the default
    /// backends are the same, the table is left as it is. (An Ingress's policy depends on its annotations and its
    /// rule hosts only: both change only with a host that has one of its paths.)
    /// Returns the table to publish (the same `Arc` when nothing changed).
    pub fn publish(&mut self, t: &Translation, previous: Option<&Translation>) -> Arc<PolicyTable> {
        if let Some(before) = previous {
            let same_shape = before.sets.len() == t.sets.len()
                && before
                    .sets
                    .iter()
                    .zip(&t.sets)
                    .all(|(b, a)| b.default_backend == a.default_backend);
            let needs = |h: Option<&Arc<crate::model::HostModel>>| h.is_some_and(|h| h.paths.iter().any(path_needs));
            if same_shape
                && !before
                    .sets
                    .iter()
                    .zip(&t.sets)
                    .flat_map(|(b, a)| crate::model::changed_hosts(b, a))
                    .any(|(b, a)| needs(b) || needs(a))
            {
                return self.table.clone();
            }
        }
        let prev = self.table.clone();
        // Each Ingress's rule hosts: `Some(host)` while it has exactly one, and that one exact.
        let mut hosts: HashMap<&ObjectRef, Option<&str>> = HashMap::new();
        for set in &t.sets {
            for host in &set.hosts {
                // Only Ingresses with a policy need their hosts (an Ingress's paths share its annotations).
                for path in host.paths.iter().filter(|p| Spec::needed(&p.policy)) {
                    let this = match &host.host {
                        HostPattern::Exact(h) => Some(h.as_str()),
                        _ => None,
                    };
                    hosts
                        .entry(&path.ingress)
                        .and_modify(|seen| {
                            if *seen != this {
                                *seen = None;
                            }
                        })
                        .or_insert(this);
                }
            }
            if let Some(d) = &set.default_backend {
                // The default backend serves any Host.
                hosts.insert(&d.ingress, None);
            }
        }
        let mut by_ingress: HashMap<Arc<str>, Arc<UpstreamPolicy>> = HashMap::new();
        let mut get = |ingress: &ObjectRef, p: &IngressPolicy| -> Option<Arc<UpstreamPolicy>> {
            let spec = Spec::of(p, hosts.get(ingress).copied().flatten())?;
            let key: Arc<str> = format!("{}/{}", ingress.namespace, ingress.name).into();
            if let Some(done) = by_ingress.get(&key) {
                return Some(done.clone());
            }
            let policy = match prev.by_ingress.get(&key) {
                Some(old) if old.spec == spec => old.clone(),
                _ => Arc::new(UpstreamPolicy::build(spec, &self.cfg, ingress)),
            };
            by_ingress.insert(key, policy.clone());
            Some(policy)
        };
        let mut by_backend: HashMap<Arc<str>, Arc<UpstreamPolicy>> = HashMap::new();
        let mut defaults = Vec::with_capacity(t.sets.len());
        for set in &t.sets {
            for host in &set.hosts {
                for path in &host.paths {
                    get(&path.ingress, &path.policy);
                    for (tls, h2) in gateway_tls(path) {
                        let key: Arc<str> = tls.key(h2).into();
                        if by_backend.contains_key(&key) {
                            continue;
                        }
                        let spec = Spec::of_backend(tls, h2);
                        let policy = match prev.by_backend.get(&key) {
                            Some(old) if old.spec == spec => old.clone(),
                            _ => {
                                let (namespace, name) = tls.policy.split_once('/').unwrap_or(("", &tls.policy));
                                let object = ObjectRef {
                                    kind: crate::model::gateway::backendtls::KIND,
                                    namespace: namespace.into(),
                                    name: name.into(),
                                };
                                Arc::new(UpstreamPolicy::build(spec, &self.cfg, &object))
                            }
                        };
                        by_backend.insert(key, policy);
                    }
                }
            }
            defaults.push(set.default_backend.as_ref().and_then(|d| get(&d.ingress, &d.policy)));
        }
        self.table = Arc::new(PolicyTable {
            by_ingress,
            defaults,
            by_backend,
        });
        self.table.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BackendModel, HostModel, PathKind, PathModel, PortRef};

    /// One set; host `hN.example` routes for Ingress `ns/iN`, with a 5 s body timeout where `timeout` says.
    fn translation(hosts: &[(usize, bool)]) -> Translation {
        let hosts = hosts
            .iter()
            .map(|&(i, timeout)| {
                let policy = IngressPolicy {
                    body: crate::model::annotations::body::RequestBody {
                        timeout: timeout.then(|| Duration::from_secs(5)),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                Arc::new(HostModel {
                    host: HostPattern::Exact(format!("h{i}.example")),
                    paths: vec![PathModel {
                        path: "/".into(),
                        kind: PathKind::Prefix,
                        backend: BackendModel {
                            namespace: "ns".into(),
                            service: "s".into(),
                            port: PortRef::Number(80),
                            endpoints: vec![],
                        },
                        ingress: ObjectRef {
                            kind: "Ingress",
                            namespace: "ns".into(),
                            name: format!("i{i}"),
                        },
                        https_redirect: false,
                        policy: Arc::new(policy),
                        canary: None,
                        gateway: None,
                    }],
                })
            })
            .collect();
        Translation::one_set("a", hosts)
    }

    fn with_policy(p: &Policies) -> Vec<String> {
        let mut names: Vec<String> = p.table.by_ingress.keys().map(|k| k.to_string()).collect();
        names.sort();
        names
    }

    #[test]
    fn publishing_after_edits_looks_at_the_changed_hosts() {
        let mut p = Policies::new(&UpstreamConfig::default());
        let t1 = translation(&[(1, false), (2, true), (3, false)]);
        p.publish(&t1, None);
        assert_eq!(with_policy(&p), ["ns/i2"]);
        let kept = p.table.lookup(0, Some("ns/i2")).unwrap().clone();
        // Host 3 gains a timeout (a new `Arc`); hosts 1 and 2 are the same `Arc`s.
        let mut t2 = t1.clone();
        t2.sets[0].hosts[2] = translation(&[(3, true)]).sets[0].hosts[0].clone();
        p.publish(&t2, Some(&t1));
        assert_eq!(with_policy(&p), ["ns/i2", "ns/i3"]);
        assert!(
            Arc::ptr_eq(&kept, p.table.lookup(0, Some("ns/i2")).unwrap()),
            "an unchanged policy is kept"
        );
        // Host 1 changes without a policy: nothing to do.
        let mut t3 = t2.clone();
        t3.sets[0].hosts[0] = translation(&[(1, false)]).sets[0].hosts[0].clone();
        let table = p.table.clone();
        assert!(Arc::ptr_eq(&table, &p.publish(&t3, Some(&t2))));
        // Host 2 loses its timeout, host 3 is removed.
        let t4 = translation(&[(1, false), (2, false)]);
        p.publish(&t4, Some(&t3));
        assert!(with_policy(&p).is_empty());
    }
}
