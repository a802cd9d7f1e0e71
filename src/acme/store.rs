//! Where issued certificates and ACME account keys live, and how HTTP-01 tokens reach every replica.
//! [`CertStore`] is the seam: file mode writes `kubernetes.io/tls` Secret manifests under the state directory
//! ([`FileStore`]); cluster mode writes Secrets and a challenge ConfigMap through the API
//! ([`KubeStore`](super::kube::KubeStore)).
//!
//! ```text
//! STATE/
//!   secrets/NAMESPACE/NAME.yaml     kind: Secret, type: kubernetes.io/tls, stringData: tls.crt, tls.key  (0600)
//!   acme/accounts/HASH.json         instant-acme account credentials, one per directory URL              (0600)
//! ```
//!
//! The manifest source reads `STATE/secrets` as a second root, so an issued certificate reaches the proxy by
//! the ordinary certificate path on the next poll.

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use k8s_openapi::api::core::v1::Secret;

use crate::certs::TLS_SECRET_TYPE;
use crate::model::ObjectRef;

/// Boxed future returned by [`CertStore`] methods (the trait stays object safe).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Annotation set on Secrets Portico issued, so tools and people can tell them apart.
pub const MANAGED_ANNOTATION: &str = "portico.dev/acme-managed";

/// A certificate chain (leaf first) and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl StoredCert {
    /// `tls.crt` and `tls.key` of a Secret (`stringData` first, as written in files; else `data`, as the API
    /// returns it). `None` when either is missing or not UTF-8.
    pub fn from_secret(s: &k8s_openapi::api::core::v1::Secret) -> Option<Self> {
        let field = |k: &str| {
            s.string_data.as_ref().and_then(|m| m.get(k).cloned()).or_else(|| {
                s.data
                    .as_ref()
                    .and_then(|m| m.get(k))
                    .and_then(|b| String::from_utf8(b.0.clone()).ok())
            })
        };
        Some(Self {
            cert_pem: field("tls.crt")?,
            key_pem: field("tls.key")?,
        })
    }
}

impl std::fmt::Debug for StoredCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCert").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    /// The store will not write there (e.g. a Secret someone else manages that is still valid).
    #[error("{path}: {reason}")]
    Refused { path: String, reason: String },
    #[error("{path}: {source}")]
    Api { path: String, source: kube::Error },
}

/// Storage for issued certificates (as `kubernetes.io/tls` Secrets) and ACME account credentials.
pub trait CertStore: Send + Sync + 'static {
    /// The certificate stored under this Secret name, if any.
    fn load<'a>(&'a self, secret: &'a ObjectRef) -> StoreFuture<'a, Option<StoredCert>>;
    /// Replaces the Secret's certificate and key in one step (readers see the old pair or the new one).
    fn store<'a>(&'a self, secret: &'a ObjectRef, cert: &'a StoredCert) -> StoreFuture<'a, ()>;
    /// The serialized account credentials for an ACME directory URL, if an account was created before.
    fn load_account<'a>(&'a self, directory: &'a str) -> StoreFuture<'a, Option<String>>;
    fn store_account<'a>(&'a self, directory: &'a str, credentials: &'a str) -> StoreFuture<'a, ()>;
    /// Makes HTTP-01 tokens (token, key authorization) answerable by every replica; returns once they should be.
    /// Called before the CA is told a challenge is ready. Default (one process): nothing to share, the local
    /// [`ChallengeStore`](super::challenge::ChallengeStore) already answers them.
    fn publish_challenges<'a>(&'a self, _tokens: &'a [(String, String)]) -> StoreFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
    /// Withdraws tokens published by [`CertStore::publish_challenges`] once validation has ended.
    fn withdraw_challenges<'a>(&'a self, _tokens: &'a [String]) -> StoreFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
}

// === impl FileStore ===

/// File mode: Secrets as YAML under `STATE/secrets`, accounts under `STATE/acme/accounts`, all mode 0600,
/// written to a temporary file and renamed into place.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
}

impl FileStore {
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self { root: state_dir.into() }
    }

    /// `STATE/secrets`: the directory the manifest source reads as a second root.
    pub fn secrets_dir(state_dir: &Path) -> PathBuf {
        state_dir.join("secrets")
    }

    /// Where the Secret `namespace/name` is written.
    pub fn secret_path(&self, secret: &ObjectRef) -> PathBuf {
        Self::secrets_dir(&self.root)
            .join(&secret.namespace)
            .join(format!("{}.yaml", secret.name))
    }

    fn account_path(&self, directory: &str) -> PathBuf {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        directory.hash(&mut h);
        self.root
            .join("acme")
            .join("accounts")
            .join(format!("{:016x}.json", h.finish()))
    }

    fn load_secret(&self, secret: &ObjectRef) -> Result<Option<StoredCert>, StoreError> {
        let path = self.secret_path(secret);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(io_err(&path, source)),
        };
        let s: Secret = serde_yaml::from_str(&text).map_err(|e| StoreError::Invalid {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        match StoredCert::from_secret(&s) {
            Some(c) => Ok(Some(c)),
            None => Err(StoreError::Invalid {
                path: path.display().to_string(),
                reason: "tls.crt or tls.key missing".into(),
            }),
        }
    }
}

/// A `kubernetes.io/tls` Secret named `secret`, marked as managed by Portico, without its data.
pub fn managed_tls_secret(secret: &ObjectRef) -> Secret {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    Secret {
        metadata: ObjectMeta {
            name: Some(secret.name.clone()),
            namespace: Some(secret.namespace.clone()),
            annotations: Some([(MANAGED_ANNOTATION.to_string(), "true".to_string())].into()),
            ..Default::default()
        },
        type_: Some(TLS_SECRET_TYPE.to_string()),
        ..Default::default()
    }
}

/// The Secret manifest written for an issued certificate.
pub fn tls_secret(secret: &ObjectRef, cert: &StoredCert) -> Secret {
    Secret {
        string_data: Some(
            [
                ("tls.crt".to_string(), cert.cert_pem.clone()),
                ("tls.key".to_string(), cert.key_pem.clone()),
            ]
            .into(),
        ),
        ..managed_tls_secret(secret)
    }
}

fn io_err(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes `bytes` to `path` with mode 0600: a temporary file beside it, fsync, rename.
pub fn write_private_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    // Hidden, and not ending in .yaml: the manifest source never reads a half-written file.
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(path, e));
    }
    Ok(())
}

impl CertStore for FileStore {
    fn load<'a>(&'a self, secret: &'a ObjectRef) -> StoreFuture<'a, Option<StoredCert>> {
        Box::pin(async move { self.load_secret(secret) })
    }

    fn store<'a>(&'a self, secret: &'a ObjectRef, cert: &'a StoredCert) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let path = self.secret_path(secret);
            let yaml = serde_yaml::to_string(&tls_secret(secret, cert)).map_err(|e| StoreError::Invalid {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            write_private_atomic(&path, yaml.as_bytes())
        })
    }

    fn load_account<'a>(&'a self, directory: &'a str) -> StoreFuture<'a, Option<String>> {
        Box::pin(async move {
            let path = self.account_path(directory);
            match std::fs::read_to_string(&path) {
                Ok(t) => Ok(Some(t)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io_err(&path, e)),
            }
        })
    }

    fn store_account<'a>(&'a self, directory: &'a str, credentials: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move { write_private_atomic(&self.account_path(directory), credentials.as_bytes()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn secrets_round_trip_as_private_tls_secret_manifests() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let r = ObjectRef {
            kind: "Secret",
            namespace: "shop".into(),
            name: "web-tls".into(),
        };
        assert_eq!(store.load(&r).await.unwrap(), None);
        let c = StoredCert {
            cert_pem: "CERT\n".into(),
            key_pem: "KEY\n".into(),
        };
        store.store(&r, &c).await.unwrap();
        assert_eq!(store.load(&r).await.unwrap(), Some(c));
        let path = dir.path().join("secrets/shop/web-tls.yaml");
        let (state, diags) = crate::source::file::state_from_yaml(&std::fs::read_to_string(&path).unwrap(), "x.yaml");
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(state.secrets[0].type_.as_deref(), Some(TLS_SECRET_TYPE));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert_eq!(store.load_account("https://ca/dir").await.unwrap(), None);
        store.store_account("https://ca/dir", "{}").await.unwrap();
        assert_eq!(
            store.load_account("https://ca/dir").await.unwrap().as_deref(),
            Some("{}")
        );
        assert_eq!(store.load_account("https://other/dir").await.unwrap(), None);
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("secrets/shop")).unwrap().collect();
        assert_eq!(names.len(), 1);
    }
}
