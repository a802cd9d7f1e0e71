//! An in-process fake Kubernetes API server for tests.
//!
//! It speaks the real API server's wire protocol over HTTP/1.1 closely enough for an unmodified
//! [`kube::Client`] (typed `Api<K>`, `kube::runtime::watcher`, reflectors) to work against it: LIST, WATCH
//! (with history replay, `410 Expired`, bookmarks, `timeoutSeconds`), GET, CREATE, UPDATE, PATCH (merge,
//! strategic-as-merge, JSON patch), DELETE, status subresources, label and field selectors, `Status`
//! error objects. Objects are kept as JSON, keyed by resource, namespace and name, with one global
//! monotonically increasing resourceVersion. Secrets are stored as the real server stores them: `stringData`
//! is merged into `data` (base64) and dropped, a missing `type` becomes `Opaque`, and the type is immutable.
//!
//! Tests drive it through [`FakeApiServer`]: insert/update/delete objects directly, drop all watch streams,
//! compact history, fail the next N requests, and inspect the requests received.
//!
//! The same controls are served over HTTP for the `fake-apiserver` binary (never recorded, never failed):
//!
//! | endpoint | effect |
//! | --- | --- |
//! | `GET /__control/state` | `{resourceVersion, historyFloor, openWatches, requests, failRemaining}` |
//! | `GET /__control/objects` | every stored object |
//! | `PUT` or `POST /__control/objects` (body: object with apiVersion/kind) | upsert, emits ADDED/MODIFIED |
//! | `DELETE /__control/objects?apiVersion=&kind=&namespace=&name=` | delete, emits DELETED |
//! | `POST /__control/drop-watches` | close all watch streams |
//! | `POST /__control/compact` | forget history (older resourceVersions get 410) |
//! | `POST /__control/fail-next?count=N&code=C[&retryAfter=S]` | fail the next N API requests |
//! | `GET` / `DELETE /__control/requests` | the request log / clear it |
//!
//! Known simplifications: no server-side apply (415; [`Options::apply_as_merge`] turns on an approximation), no `deletecollection`, finalizers and graceful
//! deletion are ignored (DELETE removes at once and returns a success `Status`), `limit`/`continue` are
//! ignored (LIST returns everything), `resourceVersionMatch` on LIST is ignored (always the latest state),
//! strategic merge patch is treated as JSON merge patch, core/v1 and events.k8s.io/v1 Events are stored
//! separately, no admission, validation or defaulting beyond the metadata the server owns.
//!
//! ```no_run
//! # async fn demo() {
//! use portico_fake_apiserver::FakeApiServer;
//! let server = FakeApiServer::start().await.unwrap();
//! let client = server.client();
//! let ingresses: kube::Api<k8s_openapi::api::networking::v1::Ingress> = kube::Api::namespaced(client, "default");
//! # let _ = ingresses;
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod resources;
pub mod selector;
mod server;
pub mod store;
pub mod util;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub use resources::{ResourceDef, BUILTIN_RESOURCES};
pub use server::Options;
pub use store::{Change, ChangeType, RecordedRequest};
pub use util::ApiError;

use server::Shared;
use store::{FailRule, Store};

/// A running fake API server. Dropping the handle stops accepting connections and closes open watches.
pub struct FakeApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
}

impl FakeApiServer {
    /// Start on `127.0.0.1:0` with default options. Must be called inside a Tokio runtime.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(Options::default()).await
    }

    /// Start on `127.0.0.1:0` with the given options.
    pub async fn start_with(opts: Options) -> std::io::Result<Self> {
        Self::bind("127.0.0.1:0".parse().expect("valid address"), opts).await
    }

    /// Start on a given address.
    pub async fn bind(addr: SocketAddr, opts: Options) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            store: Mutex::new({
                let mut st = Store::new(opts.resources.clone(), opts.max_history);
                st.apply_as_merge = opts.apply_as_merge;
                st
            }),
            opts,
        });
        let (tx, rx) = oneshot::channel();
        tokio::spawn(server::serve(listener, shared.clone(), rx));
        Ok(Self {
            shared,
            addr,
            shutdown: Some(tx),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A `kube::Config` pointing at this server (no auth, default namespace `default`).
    pub fn kube_config(&self) -> kube::Config {
        kube::Config::new(self.url().parse().expect("valid server URL"))
    }

    /// A `kube::Client` pointing at this server. Must be called inside a Tokio runtime.
    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.kube_config()).expect("building a kube client for the fake API server")
    }

    /// A kubeconfig document (YAML) pointing at this server.
    pub fn kubeconfig_yaml(&self) -> String {
        kubeconfig_yaml(&self.url())
    }

    /// Write [`Self::kubeconfig_yaml`] to `path`.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml())
    }

    /// Stop accepting connections and close every open connection and watch (as a stopping API server does).
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.shared.lock().drop_watches();
    }

    // ----- object controls -----

    /// Insert or replace an object directly (resource chosen by its `apiVersion`/`kind`; a namespaced
    /// object without a namespace goes to `default`). `.status` is kept as given, no resourceVersion check;
    /// emits ADDED or MODIFIED like a client write would, nothing if the object is unchanged.
    pub fn upsert(&self, obj: Value) -> Result<Value, ApiError> {
        self.shared.lock().upsert(obj)
    }

    /// Typed [`Self::upsert`].
    pub fn upsert_typed<K>(&self, obj: &K) -> Result<K, ApiError>
    where
        K: k8s_openapi::Resource + Serialize + DeserializeOwned,
    {
        let mut v = serde_json::to_value(obj).map_err(|e| ApiError::bad_request(e.to_string()))?;
        v["apiVersion"] = Value::from(K::API_VERSION);
        v["kind"] = Value::from(K::KIND);
        let stored = self.upsert(v)?;
        serde_json::from_value(stored).map_err(|e| ApiError::new(500, e.to_string()))
    }

    fn res_index(&self, api_version: &str, kind: &str) -> Result<usize, ApiError> {
        self.shared
            .lock()
            .res_index_by_kind(api_version, kind)
            .ok_or_else(|| ApiError::new(404, format!("no resource served for {api_version:?} {kind:?}")))
    }

    /// Delete an object directly (emits DELETED). `namespace` is ignored for cluster-scoped resources.
    pub fn delete_object(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Result<Value, ApiError> {
        let res = self.res_index(api_version, kind)?;
        self.shared.lock().delete(res, namespace, name, None)
    }

    /// Typed [`Self::delete_object`].
    pub fn delete_typed<K: k8s_openapi::Resource>(&self, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.delete_object(K::API_VERSION, K::KIND, namespace, name)
    }

    /// The stored object, if any.
    pub fn get_object(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let res = self.res_index(api_version, kind).ok()?;
        self.shared.lock().get(res, namespace, name).ok()
    }

    /// Typed [`Self::get_object`].
    pub fn get_typed<K: k8s_openapi::Resource + DeserializeOwned>(&self, namespace: &str, name: &str) -> Option<K> {
        let v = self.get_object(K::API_VERSION, K::KIND, namespace, name)?;
        serde_json::from_value(v).ok()
    }

    /// All stored objects of a resource, sorted by namespace and name.
    pub fn list_objects(&self, api_version: &str, kind: &str) -> Vec<Value> {
        match self.res_index(api_version, kind) {
            Ok(res) => self.shared.lock().all_of(res),
            Err(_) => Vec::new(),
        }
    }

    /// Typed [`Self::list_objects`].
    pub fn list_typed<K: k8s_openapi::Resource + DeserializeOwned>(&self) -> Vec<K> {
        self.list_objects(K::API_VERSION, K::KIND)
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect()
    }

    // ----- watch / history controls -----

    /// Close every open watch stream cleanly (clients resume from their last resourceVersion).
    /// Returns how many were closed.
    pub fn drop_watches(&self) -> usize {
        self.shared.lock().drop_watches()
    }

    /// Number of open watch streams.
    pub fn open_watches(&self) -> usize {
        self.shared.lock().open_watches(None)
    }

    /// Number of open watch streams on one resource.
    pub fn open_watches_of(&self, api_version: &str, kind: &str) -> usize {
        match self.res_index(api_version, kind) {
            Ok(res) => self.shared.lock().open_watches(Some(res)),
            Err(_) => 0,
        }
    }

    /// Wait until at least `n` watch streams are open; false on timeout.
    pub async fn wait_for_watches(&self, n: usize, timeout: Duration) -> bool {
        let end = tokio::time::Instant::now() + timeout;
        loop {
            if self.open_watches() >= n {
                return true;
            }
            if tokio::time::Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Forget all change history and bump the resourceVersion, so every watch resuming from a
    /// resourceVersion seen before gets `410 Expired` (the client must relist). Returns the new lowest
    /// resourceVersion a watch can start from. Open streams are not closed (see [`Self::drop_watches`]).
    pub fn compact_history(&self) -> u64 {
        self.shared.lock().compact()
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().resource_version()
    }

    /// The retained change history, oldest first.
    pub fn history(&self) -> Vec<Change> {
        self.shared.lock().history()
    }

    // ----- failure injection and request log -----

    /// Fail the next `n` API requests (any path except `/__control/`) with `code` and a `Status` body.
    /// Note that `kube::Client` retries 429/503/504 by itself.
    pub fn fail_next(&self, n: u32, code: u16) {
        self.fail_next_with_retry_after(n, code, None);
    }

    /// Like [`Self::fail_next`], also sending a `Retry-After` header.
    pub fn fail_next_with_retry_after(&self, n: u32, code: u16, retry_after_secs: Option<u64>) {
        self.shared.lock().fail = FailRule {
            remaining: n,
            code,
            retry_after: retry_after_secs,
        };
    }

    /// All API requests received so far (oldest first), including failed ones.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Forget the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A kubeconfig document (YAML) for a server URL, with a cluster, user and context all named `fake`.
pub fn kubeconfig_yaml(server_url: &str) -> String {
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": server_url}}],
        "users": [{"name": "fake", "user": {}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "default"}}],
        "current-context": "fake",
        "preferences": {},
    });
    serde_yaml::to_string(&doc).unwrap_or_default()
}
