//! The certificate stage of a publish: from the translation's TLS entries and the Secrets to one pinned
//! [`CertSnapshot`] and rustls configuration per listener set. Pure but for the clock value it is given.
//!
//! A Secret that is missing, of the wrong type, unparsable, expired, or not covering a listed host is a
//! diagnostic on the Ingress that named it, and that host falls back to the listener set's default certificate.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use rustls::server::StoresServerSessions;
use rustls::ServerConfig;

use super::{server_config_with_sessions, CertInfo, CertSnapshot, LoadedCert, SniResolver};
use crate::model::{Diagnostic, ObjectRef, Translation};

/// Where a listener set's default certificate comes from, resolved per publish.
#[derive(Clone)]
pub enum DefaultSource {
    /// Already loaded (a self-signed one made at startup, or PEM files read at startup).
    Loaded(LoadedCert),
    /// A Secret among the objects; `fallback` serves when it is missing or broken.
    Secret { secret: ObjectRef, fallback: LoadedCert },
}

/// One listener set's certificates and the rustls configuration that presents exactly them.
#[derive(Clone)]
pub struct SetTls {
    pub certs: Arc<CertSnapshot>,
    pub config: Arc<ServerConfig>,
    /// The hosts that ask for client certificates, each with a configuration of its own (usually none).
    pub client_auth: Arc<super::client_auth::ClientAuthConfigs>,
}

impl std::fmt::Debug for SetTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetTls")
            .field("certs", &self.certs)
            .finish_non_exhaustive()
    }
}

/// The result of the certificate stage.
pub struct TlsBuild {
    /// Per listener set, in configuration order.
    pub sets: Vec<SetTls>,
    /// Per listener set: which certificate each TLS host gets (hosts without a usable one are absent), and the
    /// default certificate last under the name `*default*`.
    pub served: Vec<Vec<(String, Arc<CertInfo>)>>,
    pub diagnostics: Vec<Diagnostic>,
    /// Changes when any served certificate changes (to decide whether to republish).
    pub fingerprint: u64,
}

/// Builds every listener set's certificates. `defaults` has one entry per listener set.
pub fn build_tls(
    t: &Translation,
    secrets: &[Secret],
    defaults: &[DefaultSource],
    now: i64,
    sessions: &Arc<dyn StoresServerSessions>,
) -> TlsBuild {
    let index: HashMap<(&str, &str), &Secret> = secrets
        .iter()
        .filter_map(|s| {
            Some((
                (
                    s.metadata.namespace.as_deref().unwrap_or("default"),
                    s.metadata.name.as_deref()?,
                ),
                s,
            ))
        })
        .collect();
    let mut parsed: HashMap<ObjectRef, Result<LoadedCert, String>> = HashMap::new();
    let mut load = |r: &ObjectRef| -> Result<LoadedCert, String> {
        parsed
            .entry(r.clone())
            .or_insert_with(|| match index.get(&(r.namespace.as_str(), r.name.as_str())) {
                None => Err(format!("{r} not found")),
                Some(s) => LoadedCert::from_tls_secret(s).map_err(|e| format!("{r}: {e}")),
            })
            .clone()
    };

    let mut diagnostics = Vec::new();
    let mut sets = Vec::new();
    let mut served = Vec::new();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (set, default) in t.sets.iter().zip(defaults) {
        let default = match default {
            DefaultSource::Loaded(c) => c.clone(),
            DefaultSource::Secret { secret, fallback } => match load(secret).and_then(|c| {
                c.info.check_validity(now).map_err(|e| format!("{secret}: {e}"))?;
                Ok(c)
            }) {
                Ok(c) => c,
                Err(reason) => {
                    diagnostics.push(Diagnostic::object(
                        secret.clone(),
                        format!(
                            "default certificate of listener set {}: {reason}; serving a self-signed one",
                            set.name
                        ),
                    ));
                    fallback.clone()
                }
            },
        };
        let mut entries: Vec<(String, LoadedCert)> = Vec::new();
        for tls in &set.tls {
            let cert = match load(&tls.secret) {
                Ok(c) => c,
                Err(reason) => {
                    diagnostics.push(Diagnostic::object(
                        tls.ingress.clone(),
                        format!(
                            "spec.tls: {reason}; {} use the default certificate",
                            tls.hosts.join(", ")
                        ),
                    ));
                    continue;
                }
            };
            for (host, verdict) in cert.validate_for_hosts(&tls.hosts, now) {
                if entries.iter().any(|(h, _)| *h == host) {
                    continue;
                }
                match verdict {
                    Ok(()) => entries.push((host, cert.clone())),
                    Err(e) => diagnostics.push(Diagnostic::object(
                        tls.ingress.clone(),
                        format!("spec.tls: {}: {e}; {host} uses the default certificate", tls.secret),
                    )),
                }
            }
        }
        let mut list: Vec<(String, Arc<CertInfo>)> = entries.iter().map(|(h, c)| (h.clone(), c.info.clone())).collect();
        list.push(("*default*".to_string(), default.info.clone()));
        for (host, c) in entries
            .iter()
            .chain(std::iter::once(&("*default*".to_string(), default.clone())))
        {
            host.hash(&mut h);
            if let Some(leaf) = c.chain().first() {
                leaf.as_ref().hash(&mut h);
            }
        }
        let certs = Arc::new(CertSnapshot::new(default, entries));
        let resolver: Arc<dyn rustls::server::ResolvesServerCert> = Arc::new(SniResolver::pinned(certs.clone()));
        let client_auth = super::client_auth::ClientAuthConfigs::build(set, &resolver, &mut diagnostics);
        for host in set
            .hosts
            .iter()
            .filter(|h| h.paths.iter().any(|p| p.policy.client_cert.is_some()))
        {
            for p in host.paths.iter().filter_map(|p| p.policy.client_cert.as_ref()) {
                (&host.host, p.tls_id()).hash(&mut h);
            }
        }
        let config = server_config_with_sessions(resolver, Some(sessions.clone()));
        sets.push(SetTls {
            certs,
            config,
            client_auth: Arc::new(client_auth),
        });
        served.push(list);
    }
    TlsBuild {
        sets,
        served,
        diagnostics,
        fingerprint: h.finish(),
    }
}
