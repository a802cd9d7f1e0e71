//! ACME in cluster mode: certificates as `kubernetes.io/tls` Secrets written through the API, the ACME account
//! in a Secret of Portico's own namespace, and HTTP-01 tokens shared through a ConfigMap every replica watches.
//!
//! ```text
//!  leader's manager ──publish_challenges──▶ ConfigMap portico-acme-challenges (Portico's namespace)
//!        │ waits until its own watch has delivered the tokens, then a short propagation delay
//!        │                                        │ watch (every replica)
//!        ▼                                        ▼
//!  CA: challenge ready ──▶ GET /.well-known/acme-challenge/T on any replica ──▶ ChallengeStore (shared layer)
//!        │ valid, issued, checked
//!        ▼
//!  Secret NS/NAME (type kubernetes.io/tls, portico.dev/acme-managed: "true") ──▶ Secret watch ──▶ every proxy
//! ```
//!
//! Only the Lease holder orders and asks the CA for renewal information (see
//! [`crate::acme::manager::manager_led`]); every replica answers tokens.
//! A Secret someone else manages is never overwritten while its certificate is valid for the hosts.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::Api;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::acme::challenge::ChallengeStore;
use crate::acme::store::{managed_tls_secret, CertStore, StoreError, StoreFuture, StoredCert, MANAGED_ANNOTATION};
use crate::certs::{LoadedCert, TLS_SECRET_TYPE};
use crate::model::ObjectRef;

/// The ConfigMap (in Portico's namespace) holding live HTTP-01 tokens: `data: {TOKEN: KEY_AUTHORIZATION}`.
pub const CHALLENGE_CONFIGMAP: &str = "portico-acme-challenges";
/// The Secret (in Portico's namespace) holding ACME account credentials, one key per directory URL.
pub const ACCOUNT_SECRET: &str = "portico-acme-account";

/// How long the ordering replica waits for its own watch to deliver the tokens it wrote.
const OWN_WATCH_TIMEOUT: Duration = Duration::from_secs(10);

/// [`CertStore`] through the Kubernetes API.
pub struct KubeStore {
    client: kube::Client,
    /// Portico's own namespace: the account Secret and the challenge ConfigMap.
    namespace: String,
    /// This replica's token store, fed by [`watch_challenges`]: tells when a write has come back.
    challenges: ChallengeStore,
    /// Extra wait after the own watch saw the tokens, for the other replicas' watches.
    propagation: Duration,
}

impl KubeStore {
    pub fn new(client: kube::Client, namespace: String, challenges: ChallengeStore, propagation: Duration) -> Self {
        Self {
            client,
            namespace,
            challenges,
            propagation,
        }
    }

    fn api_err(path: impl Into<String>) -> impl FnOnce(kube::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Api { path, source }
    }

    async fn store_secret(&self, secret: &ObjectRef, cert: &StoredCert) -> Result<(), StoreError> {
        let path = format!("Secret {secret}");
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &secret.namespace);
        let data: BTreeMap<String, ByteString> = [
            ("tls.crt".to_string(), ByteString(cert.cert_pem.clone().into_bytes())),
            ("tls.key".to_string(), ByteString(cert.key_pem.clone().into_bytes())),
        ]
        .into();
        let Some(mut existing) = api.get_opt(&secret.name).await.map_err(Self::api_err(&path))? else {
            let new = Secret {
                data: Some(data),
                ..managed_tls_secret(secret)
            };
            return match api.create(&PostParams::default(), &new).await {
                Ok(_) => Ok(()),
                // Created by someone else since the read: look again at the next attempt.
                Err(kube::Error::Api(s)) if s.code == 409 => Err(StoreError::Refused {
                    path,
                    reason: "created by someone else meanwhile; not overwriting".into(),
                }),
                Err(e) => Err(Self::api_err(path)(e)),
            };
        };
        let found = existing.type_.as_deref().unwrap_or("Opaque");
        if found != TLS_SECRET_TYPE {
            return Err(StoreError::Refused {
                path,
                reason: format!("exists with type {found}, not {TLS_SECRET_TYPE}; not overwriting"),
            });
        }
        let managed = existing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(MANAGED_ANNOTATION))
            .is_some_and(|v| v == "true");
        if !managed && valid_for(&existing, cert) {
            return Err(StoreError::Refused {
                path,
                reason: format!("managed by someone else (no {MANAGED_ANNOTATION}) and valid for its hosts"),
            });
        }
        existing
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(MANAGED_ANNOTATION.to_string(), "true".to_string());
        existing.data = Some(data);
        existing.string_data = None;
        // The write carries the resourceVersion read: a concurrent change makes it fail (409), not vanish.
        api.replace(&secret.name, &PostParams::default(), &existing)
            .await
            .map_err(Self::api_err(path))?;
        Ok(())
    }

    /// Merge-patches `data` of an object in Portico's namespace, creating the object when it is missing.
    async fn patch_data<K>(&self, name: &str, data: serde_json::Value, create: impl Fn() -> K) -> Result<(), StoreError>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let path = format!("{} {}/{name}", K::kind(&Default::default()), self.namespace);
        let api: Api<K> = Api::namespaced(self.client.clone(), &self.namespace);
        let patch = serde_json::json!({ "data": data });
        for _ in 0..3 {
            match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(Self::api_err(path)(e)),
            }
            match api.create(&PostParams::default(), &create()).await {
                Ok(_) => return Ok(()),
                // Created meanwhile: patch it.
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(Self::api_err(path)(e)),
            }
        }
        Err(StoreError::Invalid {
            path,
            reason: "created and deleted repeatedly while writing".into(),
        })
    }
}

/// Whether the Secret's certificate is valid now and covers every name of the new certificate.
fn valid_for(existing: &Secret, new: &StoredCert) -> bool {
    let Ok(current) = LoadedCert::from_tls_secret(existing) else {
        return false;
    };
    let Ok(new) = LoadedCert::from_pem(new.cert_pem.as_bytes(), new.key_pem.as_bytes(), String::new()) else {
        return false;
    };
    current.info.check_validity(crate::certs::unix_now()).is_ok() && new.info.names().iter().all(|n| current.covers(n))
}

/// The account Secret's key for a directory URL: the URL without its scheme, other characters than
/// `[-._a-zA-Z0-9]` replaced by `_` (readable, stable across versions).
pub fn account_key(directory: &str) -> String {
    let rest = directory.split_once("://").map_or(directory, |(_, r)| r);
    let key: String = rest
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    key.chars().take(240).collect()
}

impl CertStore for KubeStore {
    fn load<'a>(&'a self, secret: &'a ObjectRef) -> StoreFuture<'a, Option<StoredCert>> {
        Box::pin(async move {
            let path = format!("Secret {secret}");
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &secret.namespace);
            let Some(s) = api.get_opt(&secret.name).await.map_err(Self::api_err(&path))? else {
                return Ok(None);
            };
            match StoredCert::from_secret(&s) {
                Some(c) => Ok(Some(c)),
                None => Err(StoreError::Invalid {
                    path,
                    reason: "tls.crt or tls.key missing".into(),
                }),
            }
        })
    }

    fn store<'a>(&'a self, secret: &'a ObjectRef, cert: &'a StoredCert) -> StoreFuture<'a, ()> {
        Box::pin(self.store_secret(secret, cert))
    }

    fn load_account<'a>(&'a self, directory: &'a str) -> StoreFuture<'a, Option<String>> {
        Box::pin(async move {
            let path = format!("Secret {}/{ACCOUNT_SECRET}", self.namespace);
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
            let Some(s) = api.get_opt(ACCOUNT_SECRET).await.map_err(Self::api_err(&path))? else {
                return Ok(None);
            };
            let Some(bytes) = s.data.as_ref().and_then(|d| d.get(&account_key(directory))) else {
                return Ok(None);
            };
            String::from_utf8(bytes.0.clone())
                .map(Some)
                .map_err(|e| StoreError::Invalid {
                    path,
                    reason: e.to_string(),
                })
        })
    }

    fn store_account<'a>(&'a self, directory: &'a str, credentials: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            use base64::Engine;
            let key = account_key(directory);
            let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
            let create = || Secret {
                metadata: ObjectMeta {
                    name: Some(ACCOUNT_SECRET.to_string()),
                    annotations: Some([(MANAGED_ANNOTATION.to_string(), "true".to_string())].into()),
                    ..Default::default()
                },
                type_: Some("Opaque".to_string()),
                data: Some([(key.clone(), ByteString(credentials.as_bytes().to_vec()))].into()),
                ..Default::default()
            };
            self.patch_data(ACCOUNT_SECRET, serde_json::json!({ key.clone(): encoded }), create)
                .await
        })
    }

    fn publish_challenges<'a>(&'a self, tokens: &'a [(String, String)]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let data: serde_json::Map<String, serde_json::Value> =
                tokens.iter().map(|(t, k)| (t.clone(), k.clone().into())).collect();
            let create = || ConfigMap {
                metadata: ObjectMeta {
                    name: Some(CHALLENGE_CONFIGMAP.to_string()),
                    ..Default::default()
                },
                data: Some(tokens.iter().cloned().collect()),
                ..Default::default()
            };
            self.patch_data(CHALLENGE_CONFIGMAP, data.into(), create).await?;
            // The own watch delivering the write shows the API server has sent it to every watcher.
            let deadline = Instant::now() + OWN_WATCH_TIMEOUT;
            while !tokens.iter().all(|(t, k)| self.challenges.shared_has(t, k)) {
                if Instant::now() >= deadline {
                    tracing::warn!(
                        configmap = CHALLENGE_CONFIGMAP,
                        "the challenge watch did not deliver the tokens in time; other replicas may not answer"
                    );
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(self.propagation).await;
            tracing::debug!(tokens = tokens.len(), "HTTP-01 tokens shared");
            Ok(())
        })
    }

    fn withdraw_challenges<'a>(&'a self, tokens: &'a [String]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let path = format!("ConfigMap {}/{CHALLENGE_CONFIGMAP}", self.namespace);
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
            let data: serde_json::Map<String, serde_json::Value> =
                tokens.iter().map(|t| (t.clone(), serde_json::Value::Null)).collect();
            let patch = serde_json::json!({ "data": data });
            match api
                .patch(CHALLENGE_CONFIGMAP, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                Err(e) => Err(Self::api_err(path)(e)),
            }
        })
    }
}

/// Feeds `challenges` (shared layer) from the challenge ConfigMap in `namespace` until `shutdown`. Runs on
/// every replica; a failing watch retries with backoff and keeps the last tokens.
pub async fn watch_challenges(
    client: kube::Client,
    namespace: String,
    challenges: ChallengeStore,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={CHALLENGE_CONFIGMAP}"));
    let mut stream = watcher(api, config).boxed();
    let mut delay = crate::kube_retry::RetryDelay::new();
    let mut listed_any = false;
    let tokens = |cm: &ConfigMap| -> std::collections::HashMap<String, String> {
        cm.data.clone().unwrap_or_default().into_iter().collect()
    };
    loop {
        let ev = tokio::select! {
            ev = stream.next() => ev,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let Some(ev) = ev else { return };
        if ev.is_ok() {
            delay.reset();
        }
        match ev {
            Ok(watcher::Event::Init) => listed_any = false,
            Ok(watcher::Event::InitApply(cm)) | Ok(watcher::Event::Apply(cm)) => {
                listed_any = true;
                challenges.replace_all(tokens(&cm));
                tracing::debug!(tokens = challenges.len(), "challenge tokens updated");
            }
            Ok(watcher::Event::InitDone) => {
                if !listed_any {
                    challenges.replace_all(Default::default());
                }
            }
            Ok(watcher::Event::Delete(_)) => challenges.replace_all(Default::default()),
            Err(e) => {
                let wait = delay.after(&e);
                let error = crate::kube_retry::describe_watch(&e);
                tracing::warn!(%error, configmap = CHALLENGE_CONFIGMAP, "challenge watch failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        }
    }
}

/// Cluster-mode wiring: the challenge watch (every replica) and, when a listener set has `acme`, the manager
/// storing through [`KubeStore`] and ordering only while `leader` is true. `namespace`: Portico's own.
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    config: &crate::config::Config,
    settings: &crate::acme::Settings,
    client: &kube::Client,
    namespace: String,
    challenges: &ChallengeStore,
    leader: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Option<crate::acme::AcmeHandle> {
    use tracing::Instrument;
    let sets: Vec<_> = config.listener_sets.iter().map(|s| s.acme.clone()).collect();
    if sets.iter().all(|s| s.is_none()) {
        return None;
    }
    tracing::info!(%namespace, configmap = CHALLENGE_CONFIGMAP, account = ACCOUNT_SECRET, "ACME in cluster mode");
    tasks.spawn(
        watch_challenges(client.clone(), namespace.clone(), challenges.clone(), shutdown.clone())
            .instrument(tracing::info_span!("acme-challenges")),
    );
    let store = std::sync::Arc::new(KubeStore::new(
        client.clone(),
        namespace,
        challenges.clone(),
        settings.challenge_propagation,
    ));
    let (handle, task) =
        crate::acme::manager::manager_led(sets, store, challenges.clone(), settings.clone(), leader, shutdown);
    tasks.spawn(task.instrument(tracing::info_span!("acme")));
    Some(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_keys_are_valid_secret_keys() {
        assert_eq!(
            account_key("https://acme-v02.api.letsencrypt.org/directory"),
            "acme-v02.api.letsencrypt.org_directory"
        );
        assert_eq!(account_key("https://127.0.0.1:14000/dir"), "127.0.0.1_14000_dir");
        let long = format!("https://{}", "a".repeat(400));
        assert!(account_key(&long).len() <= 240);
    }
}
