//! BackendTLSPolicy (`gateway.networking.k8s.io/v1`): TLS from the gateway to a Service's endpoints, verified as
//! the policy says. Each policy is validated once ([`Policies::new`]); a route's backendRef to a Service port that
//! a valid policy targets is then sent over TLS (the Ingress path's upstream TLS client, `upstream::policy`), and
//! one that an invalid policy targets is unresolved (its share answers 500): never plaintext, never unverified.
//!
//! What a policy may say, and what Portico does with it:
//! - `targetRefs`: core Services, optionally one port by name (`sectionName`). A policy naming the port wins over
//!   one naming the whole Service; among equals the oldest wins, then the first by namespace/name; the others
//!   are `Accepted: False` with reason `Conflicted`.
//! - `validation.caCertificateRefs`: ConfigMaps (and, beyond the spec's core support, Secrets) of the policy's
//!   namespace holding a PEM bundle under `ca.crt`. Any invalid reference makes the policy unusable (fail
//!   closed): `ResolvedRefs: False` (`InvalidCACertificateRef` or `InvalidKind`), and `Accepted: False`
//!   (`NoValidCACertificate`) when none is valid.
//! - `validation.wellKnownCACertificates: System`: the system's roots (as the ACME and external-auth clients
//!   load them); any other value is `Accepted: False` (`Invalid`).
//! - `validation.hostname`: the SNI, and the name verified unless `subjectAltNames` are given.
//! - `validation.subjectAltNames`: the certificate must be valid for one of these DNS names. Wildcard names and
//!   `URI` names are refused (`Invalid`) rather than ignored.
//! - `options`: none is supported; any key is refused (`Invalid`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::conditions::{observed, types, Condition};
use crate::model::{Diagnostic, ObjectRef};

/// The kind, as status, diagnostics and the API name it.
pub const KIND: &str = "BackendTLSPolicy";

// === the object ===

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendTlsPolicy {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: BackendTlsPolicySpec,
    /// As the API server has it (the status writer compares with it); not read by translation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendTlsPolicySpec {
    #[serde(default)]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(default)]
    pub validation: BackendTlsValidation,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTargetReference {
    #[serde(default)]
    pub group: String,
    pub kind: String,
    pub name: String,
    /// For a Service: the port's name.
    #[serde(default)]
    pub section_name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendTlsValidation {
    #[serde(default)]
    pub ca_certificate_refs: Vec<LocalObjectReference>,
    #[serde(default, rename = "wellKnownCACertificates")]
    pub well_known_ca_certificates: Option<String>,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub subject_alt_names: Vec<SubjectAltName>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectReference {
    #[serde(default)]
    pub group: String,
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubjectAltName {
    /// `Hostname` or `URI`.
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub uri: Option<String>,
}

// === what a valid policy asks for ===

/// How to reach the backends of a Service port a valid policy targets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendTls {
    /// The policy, `namespace/name` (names its upstream TLS client).
    pub policy: String,
    /// The SNI, and the name verified when `subject_alt_names` is empty.
    pub hostname: String,
    /// The CA bundle (PEM) the certificate must chain to; `None`: the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// DNS names of which the certificate must be valid for one (instead of `hostname`).
    pub subject_alt_names: Vec<String>,
}

impl BackendTls {
    /// What names the upstream TLS client of this policy's backends (`h2`: HTTP/2, ALPN `h2`): the policy and the
    /// protocol, since the policy's content is the same for every backend it governs in one translation.
    pub fn key(&self, h2: bool) -> String {
        format!("{KIND} {}{}", self.policy, if h2 { " h2" } else { "" })
    }
}

/// Condition reasons of policies (BackendTLSPolicy's own, beyond the shared ones).
pub mod reasons {
    pub const ACCEPTED: &str = "Accepted";
    pub const INVALID: &str = "Invalid";
    pub const CONFLICTED: &str = "Conflicted";
    pub const NO_VALID_CA_CERTIFICATE: &str = "NoValidCACertificate";
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    pub const INVALID_CA_CERTIFICATE_REF: &str = "InvalidCACertificateRef";
    pub const INVALID_KIND: &str = "InvalidKind";
}

/// Why a policy cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The `Accepted` reason (`Invalid`, `Conflicted`, `NoValidCACertificate`), or `Accepted` when the policy is
    /// accepted but a reference did not resolve.
    pub accepted: &'static str,
    /// The `ResolvedRefs: False` reason, when a CA reference is at fault.
    pub resolved_refs: Option<&'static str>,
    pub message: String,
}

/// One policy, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyState {
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    pub outcome: Result<Arc<BackendTls>, Refused>,
    /// The Gateways (namespace, name) whose routes use a Service port the policy targets.
    pub ancestors: BTreeSet<(String, String)>,
}

impl PolicyState {
    pub fn object(&self) -> ObjectRef {
        ObjectRef {
            kind: KIND,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// The conditions of each ancestor entry: `Accepted` and `ResolvedRefs`.
    pub fn conditions(&self) -> Vec<Condition> {
        let (accepted, resolved) = match &self.outcome {
            Ok(_) => (
                Condition::new(types::ACCEPTED, true, reasons::ACCEPTED, "accepted"),
                Condition::new(
                    types::RESOLVED_REFS,
                    true,
                    reasons::RESOLVED_REFS,
                    "references resolved",
                ),
            ),
            Err(r) => (
                if r.accepted == reasons::ACCEPTED {
                    Condition::new(types::ACCEPTED, true, reasons::ACCEPTED, "accepted")
                } else {
                    Condition::new(types::ACCEPTED, false, r.accepted, r.message.clone())
                },
                match r.resolved_refs {
                    Some(reason) => Condition::new(types::RESOLVED_REFS, false, reason, r.message.clone()),
                    None => Condition::new(
                        types::RESOLVED_REFS,
                        true,
                        reasons::RESOLVED_REFS,
                        "references resolved",
                    ),
                },
            ),
        };
        observed(vec![accepted, resolved], self.generation)
    }
}

/// Every policy, validated, and which one governs each Service port.
#[derive(Debug, Default)]
pub struct Policies {
    pub states: Vec<PolicyState>,
    /// (namespace, Service, port name or `None` for the whole Service) → the policies targeting it, the one that
    /// takes precedence first (the others are `Conflicted`).
    by_target: HashMap<(String, String, Option<String>), Vec<usize>>,
}

impl Policies {
    pub fn new(policies: &[BackendTlsPolicy], config_maps: &[ConfigMap], secrets: &[Secret]) -> Self {
        let mut states: Vec<PolicyState> = policies
            .iter()
            .map(|p| {
                let namespace = p.metadata.namespace.clone().unwrap_or_default();
                PolicyState {
                    outcome: validate(p, &namespace, config_maps, secrets).map(Arc::new),
                    name: p.metadata.name.clone().unwrap_or_default(),
                    namespace,
                    generation: p.metadata.generation,
                    ancestors: BTreeSet::new(),
                }
            })
            .collect();
        // Precedence among policies of one target: oldest, then namespace/name.
        let mut order: Vec<usize> = (0..policies.len()).collect();
        order.sort_by(|&a, &b| {
            let key = |i: usize| {
                let m = &policies[i].metadata;
                (
                    m.creation_timestamp.as_ref().map(|t| t.0),
                    m.namespace.clone(),
                    m.name.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        let mut by_target: HashMap<_, Vec<usize>> = HashMap::new();
        let mut conflicted: Vec<(usize, String)> = Vec::new();
        for i in order {
            let p = &policies[i];
            for t in &p.spec.target_refs {
                if !t.group.is_empty() || t.kind != "Service" {
                    continue;
                }
                let key = (states[i].namespace.clone(), t.name.clone(), t.section_name.clone());
                let all = by_target.entry(key).or_default();
                if all.contains(&i) {
                    continue;
                }
                all.push(i);
                let first = all[0];
                if first != i {
                    let winner: &PolicyState = &states[first];
                    conflicted.push((
                        i,
                        format!(
                            "{KIND} {}/{} targets Service {} {} already",
                            winner.namespace,
                            winner.name,
                            t.name,
                            t.section_name
                                .as_deref()
                                .map_or("(all ports)".to_string(), |s| format!("port {s}"))
                        ),
                    ));
                }
            }
        }
        for (i, message) in conflicted {
            states[i].outcome = Err(Refused {
                accepted: reasons::CONFLICTED,
                resolved_refs: None,
                message,
            });
        }
        Self { states, by_target }
    }

    /// The policies targeting port `port_name` (if the port has a name) of Service `namespace/service`, the one
    /// governing it first: those naming the port, else those naming the whole Service. Empty: none.
    pub fn for_port(&self, namespace: &str, service: &str, port_name: Option<&str>) -> &[usize] {
        let mut key = (
            namespace.to_string(),
            service.to_string(),
            port_name.map(str::to_string),
        );
        if port_name.is_some() {
            if let Some(all) = self.by_target.get(&key) {
                return all;
            }
        }
        key.2 = None;
        self.by_target.get(&key).map_or(&[], Vec::as_slice)
    }

    /// Diagnostics for the policies that cannot be used, and for targets Portico does not serve.
    pub fn diagnostics(&self, policies: &[BackendTlsPolicy], diags: &mut Vec<Diagnostic>) {
        for (s, p) in self.states.iter().zip(policies) {
            if let Err(r) = &s.outcome {
                diags.push(Diagnostic::object(s.object(), r.message.clone()));
            }
            for (i, t) in p.spec.target_refs.iter().enumerate() {
                if !t.group.is_empty() || t.kind != "Service" {
                    let group = if t.group.is_empty() { "core" } else { &t.group };
                    diags.push(Diagnostic::object(
                        s.object(),
                        format!(
                            "spec.targetRefs[{i}]: {group}/{} is not supported (core Service is); this target is ignored",
                            t.kind
                        ),
                    ));
                }
            }
        }
    }
}

/// A policy's own validity: what it verifies against, or why it cannot be used.
fn validate(
    p: &BackendTlsPolicy,
    namespace: &str,
    config_maps: &[ConfigMap],
    secrets: &[Secret],
) -> Result<BackendTls, Refused> {
    let invalid = |message: String| Refused {
        accepted: reasons::INVALID,
        resolved_refs: None,
        message,
    };
    let v = &p.spec.validation;
    if let Some(key) = p.spec.options.keys().next() {
        return Err(invalid(format!(
            "spec.options: {key:?} is not supported (no option is); remove it"
        )));
    }
    if rustls_pki_types::DnsName::try_from(v.hostname.as_str()).is_err() || v.hostname.is_empty() {
        return Err(invalid(format!(
            "spec.validation.hostname: {:?} is not a DNS name",
            v.hostname
        )));
    }
    let mut subject_alt_names = Vec::new();
    for (i, san) in v.subject_alt_names.iter().enumerate() {
        let at = format!("spec.validation.subjectAltNames[{i}]");
        match (san.type_.as_str(), san.hostname.as_deref()) {
            ("Hostname", Some(h)) if h.starts_with("*.") => {
                return Err(invalid(format!(
                    "{at}: wildcard name {h:?} is not supported; list the exact names"
                )))
            }
            ("Hostname", Some(h)) if rustls_pki_types::DnsName::try_from(h).is_ok() => {
                subject_alt_names.push(h.to_string())
            }
            ("Hostname", h) => return Err(invalid(format!("{at}: {:?} is not a DNS name", h.unwrap_or_default()))),
            ("URI", _) => {
                return Err(invalid(format!(
                    "{at}: URI subject alternative names are not supported; use Hostname names"
                )))
            }
            (t, _) => return Err(invalid(format!("{at}: type {t:?} is not Hostname or URI"))),
        }
    }
    let well_known = v.well_known_ca_certificates.as_deref().filter(|w| !w.is_empty());
    let ca_pem = match (well_known, v.ca_certificate_refs.is_empty()) {
        (Some(_), false) => {
            return Err(invalid(
                "spec.validation: caCertificateRefs and wellKnownCACertificates cannot both be set".into(),
            ))
        }
        (None, true) => {
            return Err(invalid(
                "spec.validation: caCertificateRefs or wellKnownCACertificates: System is required".into(),
            ))
        }
        (Some("System"), true) => None,
        (Some(w), true) => {
            return Err(invalid(format!(
                "spec.validation.wellKnownCACertificates: {w:?} is not supported (System is)"
            )))
        }
        (None, false) => {
            let mut pem = Vec::new();
            let mut problems: Vec<(&'static str, String)> = Vec::new();
            for (i, r) in v.ca_certificate_refs.iter().enumerate() {
                match ca_bundle(r, namespace, config_maps, secrets) {
                    Ok(bundle) => {
                        pem.extend_from_slice(&bundle);
                        pem.push(b'\n');
                    }
                    Err((reason, e)) => problems.push((reason, format!("spec.validation.caCertificateRefs[{i}]: {e}"))),
                }
            }
            if let Some((reason, _)) = problems.first() {
                let all = problems.len() == v.ca_certificate_refs.len();
                let message: Vec<String> = problems.iter().map(|(_, m)| m.clone()).collect();
                let mut message = message.join("; ");
                if !all {
                    message.push_str(" (the policy is not used while a reference is invalid)");
                }
                return Err(Refused {
                    accepted: if all {
                        reasons::NO_VALID_CA_CERTIFICATE
                    } else {
                        reasons::ACCEPTED
                    },
                    resolved_refs: Some(reason),
                    message,
                });
            }
            Some(pem)
        }
    };
    Ok(BackendTls {
        policy: format!("{namespace}/{}", p.metadata.name.as_deref().unwrap_or_default()),
        hostname: v.hostname.clone(),
        ca_pem,
        subject_alt_names,
    })
}

/// The PEM bundle under `ca.crt` of a ConfigMap or Secret of `namespace`.
fn ca_bundle(
    r: &LocalObjectReference,
    namespace: &str,
    config_maps: &[ConfigMap],
    secrets: &[Secret],
) -> Result<Vec<u8>, (&'static str, String)> {
    let named =
        |m: &ObjectMeta| m.namespace.as_deref().unwrap_or_default() == namespace && m.name.as_deref() == Some(&r.name);
    let bad_ref = |e: String| (reasons::INVALID_CA_CERTIFICATE_REF, e);
    let pem = match (r.group.as_str(), r.kind.as_str()) {
        ("", "ConfigMap") => {
            let cm = config_maps
                .iter()
                .find(|c| named(&c.metadata))
                .ok_or_else(|| bad_ref(format!("ConfigMap {namespace}/{} not found", r.name)))?;
            cm.data
                .as_ref()
                .and_then(|d| d.get("ca.crt"))
                .map(|s| s.as_bytes().to_vec())
                .or_else(|| {
                    cm.binary_data
                        .as_ref()
                        .and_then(|d| d.get("ca.crt"))
                        .map(|b| b.0.clone())
                })
                .ok_or_else(|| bad_ref(format!("ConfigMap {namespace}/{} has no key ca.crt", r.name)))?
        }
        ("", "Secret") => {
            let s = secrets
                .iter()
                .find(|s| named(&s.metadata))
                .ok_or_else(|| bad_ref(format!("Secret {namespace}/{} not found", r.name)))?;
            s.string_data
                .as_ref()
                .and_then(|d| d.get("ca.crt"))
                .map(|s| s.as_bytes().to_vec())
                .or_else(|| s.data.as_ref().and_then(|d| d.get("ca.crt")).map(|b| b.0.clone()))
                .ok_or_else(|| bad_ref(format!("Secret {namespace}/{} has no key ca.crt", r.name)))?
        }
        (g, k) => {
            let g = if g.is_empty() { "core" } else { g };
            return Err((
                reasons::INVALID_KIND,
                format!("{g}/{k} is not supported (a core ConfigMap or Secret is)"),
            ));
        }
    };
    crate::pem::parse_ca_bundle(&pem)
        .map_err(|e| bad_ref(format!("{} {namespace}/{} key ca.crt: {e}", r.kind, r.name)))?;
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> BackendTlsPolicy {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn config_map(name: &str, ca: &str) -> ConfigMap {
        serde_yaml::from_str(&format!(
            "metadata: {{name: {name}, namespace: ns}}\ndata: {{ca.crt: {ca:?}}}\n"
        ))
        .unwrap()
    }

    const TARGET: &str =
        "metadata: {name: p, namespace: ns}\nspec:\n  targetRefs: [{group: \"\", kind: Service, name: svc}]\n";

    #[test]
    fn validation() {
        let ca = crate::certs::testing::TestCa::new();
        let cms = vec![config_map("ca", &ca.pem), config_map("junk", "not pem")];
        let check = |validation: &str| -> Result<BackendTls, Refused> {
            let p = policy(&format!("{TARGET}  validation: {validation}\n"));
            let ps = Policies::new(&[p], &cms, &[]);
            ps.states[0].outcome.clone().map(|t| (*t).clone())
        };
        let ok = check("{hostname: b.example, caCertificateRefs: [{group: \"\", kind: ConfigMap, name: ca}]}").unwrap();
        assert_eq!((ok.policy.as_str(), ok.hostname.as_str()), ("ns/p", "b.example"));
        assert!(ok.ca_pem.is_some());
        let system = check("{hostname: b.example, wellKnownCACertificates: System}").unwrap();
        assert_eq!(system.ca_pem, None);
        let sans =
            check("{hostname: b.example, wellKnownCACertificates: System, subjectAltNames: [{type: Hostname, hostname: c.example}]}")
                .unwrap();
        assert_eq!(sans.subject_alt_names, ["c.example"]);
        let refused = |v: &str| check(v).unwrap_err();
        let r = refused("{hostname: b.example, caCertificateRefs: [{group: \"\", kind: ConfigMap, name: missing}]}");
        assert_eq!(
            (r.accepted, r.resolved_refs),
            (
                reasons::NO_VALID_CA_CERTIFICATE,
                Some(reasons::INVALID_CA_CERTIFICATE_REF)
            )
        );
        assert!(r.message.contains("ConfigMap ns/missing not found"), "{r:?}");
        let r = refused("{hostname: b.example, caCertificateRefs: [{group: \"\", kind: ConfigMap, name: junk}]}");
        assert!(
            r.message.contains("caCertificateRefs[0]") && r.message.contains("ns/junk"),
            "{r:?}"
        );
        let r = refused("{hostname: b.example, caCertificateRefs: [{group: \"\", kind: ConfigMap, name: ca}, {group: \"\", kind: ConfigMap, name: junk}]}");
        assert_eq!(
            (r.accepted, r.resolved_refs),
            (reasons::ACCEPTED, Some(reasons::INVALID_CA_CERTIFICATE_REF))
        );
        let r = refused("{hostname: b.example, caCertificateRefs: [{group: example.com, kind: Bundle, name: ca}]}");
        assert_eq!(r.resolved_refs, Some(reasons::INVALID_KIND));
        for (v, says) in [
            ("{hostname: b.example, wellKnownCACertificates: example.com/mine}", "is not supported (System is)"),
            ("{hostname: b.example}", "is required"),
            ("{hostname: \"b x\", wellKnownCACertificates: System}", "not a DNS name"),
            (
                "{hostname: b.example, wellKnownCACertificates: System, subjectAltNames: [{type: URI, uri: \"spiffe://a/b\"}]}",
                "URI subject alternative names are not supported",
            ),
            (
                "{hostname: b.example, wellKnownCACertificates: System, subjectAltNames: [{type: Hostname, hostname: \"*.example\"}]}",
                "wildcard",
            ),
        ] {
            let r = refused(v);
            assert_eq!(r.accepted, reasons::INVALID, "{v}");
            assert!(r.message.contains(says), "{v}: {r:?}");
        }
        let p = policy(&format!(
            "{TARGET}  validation: {{hostname: b.example, wellKnownCACertificates: System}}\n  options: {{example.com/x: y}}\n"
        ));
        let r = Policies::new(&[p], &[], &[]).states[0].outcome.clone().unwrap_err();
        assert!(r.message.contains("spec.options"), "{r:?}");
    }

    #[test]
    fn precedence_and_targets() {
        let mk = |name: &str, created: &str, section: &str| {
            policy(&format!(
                "metadata: {{name: {name}, namespace: ns, creationTimestamp: \"{created}\"}}\nspec:\n  targetRefs: [{{group: \"\", kind: Service, name: svc{section}}}]\n  validation: {{hostname: b.example, wellKnownCACertificates: System}}\n"
            ))
        };
        let ps = Policies::new(
            &[
                mk("young", "2024-01-02T00:00:00Z", ""),
                mk("old", "2024-01-01T00:00:00Z", ""),
                mk("port", "2024-01-03T00:00:00Z", ", sectionName: https"),
            ],
            &[],
            &[],
        );
        let name = |all: &[usize]| all.first().map(|&i| ps.states[i].name.as_str());
        assert_eq!(name(ps.for_port("ns", "svc", Some("https"))), Some("port"));
        assert_eq!(name(ps.for_port("ns", "svc", Some("other"))), Some("old"));
        assert_eq!(name(ps.for_port("ns", "svc", None)), Some("old"));
        assert_eq!(ps.for_port("ns", "svc", None).len(), 2, "the conflicted one too");
        assert_eq!(name(ps.for_port("other", "svc", None)), None);
        let young = ps.states[0].outcome.clone().unwrap_err();
        assert_eq!(young.accepted, reasons::CONFLICTED);
        assert!(young.message.contains("ns/old"), "{young:?}");
    }
}
