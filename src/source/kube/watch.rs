//! Reflectors: one kube watcher per kind (and per namespace when namespaces are limited), each feeding a
//! reflector store. A watcher is *synced* between an `InitDone` and the next `Init`; the publisher only reads
//! the stores when every watcher is synced, so a relist (after a 410 or a restart) never publishes a partial
//! list. kube's stores keep the previous contents until `InitDone` swaps the relisted ones in.
//!
//! Each kind ([`Kind`]) also records which objects its watchers applied or deleted since the last
//! [`Kind::sync`], so the publisher's copy of the objects is brought up to date by cloning only those (all of
//! them after a relist), not every object of every kind per compile.

use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::Instrument;

/// How often a kind the API server does not serve is looked for again.
pub const ABSENT_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// Sync flags of every watcher, and a counter bumped on every change seen.
#[derive(Clone)]
pub struct Watches {
    synced: Arc<std::sync::Mutex<Vec<Arc<AtomicBool>>>>,
    changes: watch::Sender<u64>,
}

impl Watches {
    pub fn new() -> Self {
        Self {
            synced: Default::default(),
            changes: watch::channel(0).0,
        }
    }

    /// Whether every watcher has completed its latest (re)list.
    pub fn all_synced(&self) -> bool {
        self.synced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .all(|s| s.load(Ordering::Acquire))
    }

    /// Notified on every watch event that changed a store or a sync flag.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Starts a reflector for `api` filtered by `config`, adding its store to `kind`. The task ends with
    /// `shutdown`.
    pub fn spawn<K>(
        &self,
        kind: &mut Kind<K>,
        label: String,
        api: Api<K>,
        config: watcher::Config,
        shutdown: watch::Receiver<bool>,
    ) where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
    {
        self.spawn_with(kind, label, api, config, false, shutdown);
    }

    /// [`Watches::spawn`] for a kind the API server may not serve (a CRD): a `404` counts as listed and empty,
    /// and the list is tried again every [`ABSENT_RETRY`] (so installing the CRDs later needs no restart).
    pub fn spawn_optional<K>(
        &self,
        kind: &mut Kind<K>,
        label: String,
        api: Api<K>,
        config: watcher::Config,
        shutdown: watch::Receiver<bool>,
    ) where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
    {
        self.spawn_with(kind, label, api, config, true, shutdown);
    }

    fn spawn_with<K>(
        &self,
        kind: &mut Kind<K>,
        label: String,
        api: Api<K>,
        config: watcher::Config,
        optional: bool,
        mut shutdown: watch::Receiver<bool>,
    ) where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
    {
        let (store, mut writer) = reflector::store::<K>();
        let synced = Arc::new(AtomicBool::new(false));
        self.synced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(synced.clone());
        let changes = self.changes.clone();
        let changed = kind.changed.clone();
        let span = tracing::info_span!("watch", kind = %label);
        tokio::spawn(
            async move {
                let mut stream = watcher(api, config).boxed();
                let mut delay = crate::kube_retry::RetryDelay::new();
                let mut absent = false;
                loop {
                    let ev = tokio::select! {
                        ev = stream.next() => ev,
                        _ = shutdown.wait_for(|s| *s) => return,
                    };
                    let Some(ev) = ev else { return };
                    match ev {
                        Ok(ev) => {
                            delay.reset();
                            absent = false;
                            writer.apply_watcher_event(&ev);
                            // Recorded after the store changed and before the publisher is told.
                            note(&changed, &ev);
                            match &ev {
                                watcher::Event::Init => {
                                    tracing::debug!("listing");
                                    synced.store(false, Ordering::Release);
                                }
                                watcher::Event::InitApply(_) => continue,
                                watcher::Event::InitDone => {
                                    tracing::debug!("listed");
                                    synced.store(true, Ordering::Release);
                                }
                                watcher::Event::Apply(_) | watcher::Event::Delete(_) => {}
                            }
                            changes.send_modify(|n| *n += 1);
                        }
                        Err(e) if optional && matches!(crate::kube_retry::status_of(&e), Some(404 | 403)) => {
                            if !absent {
                                absent = true;
                                if crate::kube_retry::status_of(&e) == Some(403) {
                                    tracing::warn!(
                                        error = %crate::kube_retry::describe_watch(&e),
                                        "not allowed to list (RBAC): served as none; looking again every {}s",
                                        ABSENT_RETRY.as_secs()
                                    );
                                } else {
                                    tracing::info!(
                                        "not served by the API server (CRD not installed?): none; looking again every {}s",
                                        ABSENT_RETRY.as_secs()
                                    );
                                }
                                synced.store(true, Ordering::Release);
                                changes.send_modify(|n| *n += 1);
                            }
                            tokio::select! {
                                () = tokio::time::sleep(ABSENT_RETRY) => {}
                                _ = shutdown.wait_for(|s| *s) => return,
                            }
                        }
                        // The store keeps its contents meanwhile (see `kube_retry` for the delays).
                        Err(e) => {
                            let wait = delay.after(&e);
                            let error = crate::kube_retry::describe_watch(&e);
                            tracing::warn!(%error, retry_in_ms = wait.as_millis() as u64, "watch failed; retrying");
                            tokio::select! {
                                () = tokio::time::sleep(wait) => {}
                                _ = shutdown.wait_for(|s| *s) => return,
                            }
                        }
                    }
                }
            }
            .instrument(span),
        );
        kind.stores.push(store);
    }
}

impl Default for Watches {
    fn default() -> Self {
        Self::new()
    }
}

/// What changed in a kind's stores since the last [`Kind::sync`].
struct Changed {
    /// Everything (at first, and after a relist).
    all: bool,
    /// (namespace, name) of each object applied or deleted.
    keys: HashSet<(Option<String>, String)>,
}

/// Records what a watch event (already applied to its store) changed.
fn note<K: Resource>(changed: &Mutex<Changed>, ev: &watcher::Event<K>) {
    match ev {
        watcher::Event::InitDone => changed.lock().unwrap_or_else(|e| e.into_inner()).all = true,
        watcher::Event::Apply(o) | watcher::Event::Delete(o) => {
            let key = (o.meta().namespace.clone(), o.meta().name.clone().unwrap_or_default());
            changed.lock().unwrap_or_else(|e| e.into_inner()).keys.insert(key);
        }
        watcher::Event::Init | watcher::Event::InitApply(_) => {}
    }
}

/// One kind's reflector stores (one per watched namespace, or one for all) and what changed in them.
pub struct Kind<K: Resource + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    stores: Vec<Store<K>>,
    changed: Arc<Mutex<Changed>>,
}

impl<K> Kind<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    pub fn new() -> Self {
        Self {
            stores: Vec::new(),
            changed: Arc::new(Mutex::new(Changed {
                all: true,
                keys: HashSet::new(),
            })),
        }
    }

    /// The next [`Kind::sync`] clones every object again.
    pub fn resync(&self) {
        self.changed.lock().unwrap_or_else(|e| e.into_inner()).all = true;
    }

    /// Every object, as the stores have it now.
    pub fn all(&self) -> Vec<Arc<K>> {
        self.stores.iter().flat_map(Store::state).collect()
    }

    /// The object with this namespace and name, as the stores have it now.
    pub fn get(&self, namespace: Option<&str>, name: &str) -> Option<Arc<K>> {
        let mut r = ObjectRef::new(name);
        if let Some(ns) = namespace {
            r = r.within(ns);
        }
        self.stores.iter().find_map(|s| s.get(&r))
    }

    /// Brings `objects` (this kind's objects, sorted by namespace and name, as of the last sync) up to date with
    /// the stores: the objects applied or deleted since are cloned in or removed; at first and after a relist,
    /// every object is cloned again. A change recorded while this runs is seen by the next sync (the object is
    /// read after its key is taken, so reading it again is harmless).
    pub fn sync(&self, objects: &mut Vec<K>) {
        self.sync_into(objects, order, |o| o.clone());
    }

    /// [`Kind::sync`] into a list of what `convert` makes of each object (cluster mode keeps Ingresses in the
    /// compact form of [`crate::model::ingress`]); `key` gives a kept value's namespace and name.
    pub fn sync_into<T>(
        &self,
        objects: &mut Vec<T>,
        key: impl Fn(&T) -> (Option<&str>, Option<&str>),
        mut convert: impl FnMut(&K) -> T,
    ) {
        let changed = std::mem::replace(
            &mut *self.changed.lock().unwrap_or_else(|e| e.into_inner()),
            Changed {
                all: false,
                keys: HashSet::new(),
            },
        );
        if changed.all {
            let mut all: Vec<T> = self
                .stores
                .iter()
                .flat_map(|s| s.state())
                .map(|o| convert(&o))
                .collect();
            all.sort_by(|a, b| key(a).cmp(&key(b)));
            *objects = all;
            return;
        }
        for (ns, name) in changed.keys {
            let at = objects.binary_search_by(|o| key(o).cmp(&(ns.as_deref(), Some(name.as_str()))));
            match (at, self.get(ns.as_deref(), &name)) {
                (Ok(i), Some(o)) => objects[i] = convert(&o),
                (Err(i), Some(o)) => objects.insert(i, convert(&o)),
                (Ok(i), None) => {
                    objects.remove(i);
                }
                (Err(_), None) => {}
            }
        }
    }
}

impl<K> Default for Kind<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    fn default() -> Self {
        Self::new()
    }
}

/// The order of [`Kind::sync`]: by namespace, then name.
fn order<K: Resource>(o: &K) -> (Option<&str>, Option<&str>) {
    (o.meta().namespace.as_deref(), o.meta().name.as_deref())
}

/// The stores' contents, cloned, sorted by namespace and name.
#[cfg(test)]
fn contents<K>(stores: &[Store<K>]) -> Vec<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    let mut out: Vec<K> = stores.iter().flat_map(|s| s.state()).map(|o| (*o).clone()).collect();
    out.sort_by(|a, b| order(a).cmp(&order(b)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;

    fn service(ns: usize, name: usize, version: u64) -> Service {
        let mut s = Service::default();
        s.metadata.namespace = Some(format!("ns{ns}"));
        s.metadata.name = Some(format!("s{name}"));
        s.metadata.resource_version = Some(version.to_string());
        s
    }

    #[test]
    fn synced_objects_equal_the_stores_after_random_events() {
        let mut seed = 0x853C_49E6_748F_EA9Bu64;
        let mut below = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n) as usize
        };
        // Two stores (two watched namespaces), as in cluster mode with namespaces listed.
        let mut kind = Kind::<Service>::new();
        let mut writers = Vec::new();
        for _ in 0..2 {
            let (store, writer) = reflector::store::<Service>();
            kind.stores.push(store);
            writers.push(writer);
        }
        let mut objects = Vec::new();
        let mut version = 0;
        for round in 0..300 {
            for _ in 0..below(6) {
                version += 1;
                let ns = below(2);
                let o = service(ns, below(12), version);
                let ev = match below(8) {
                    0 | 1 => watcher::Event::Delete(o),
                    // A relist of this namespace: what it lists replaces the store at InitDone.
                    2 => {
                        let listed: Vec<_> = (0..12)
                            .filter(|_| below(2) == 0)
                            .map(|n| service(ns, n, version))
                            .collect();
                        for ev in std::iter::once(watcher::Event::Init)
                            .chain(listed.into_iter().map(watcher::Event::InitApply))
                        {
                            writers[ns].apply_watcher_event(&ev);
                            note(&kind.changed, &ev);
                        }
                        watcher::Event::InitDone
                    }
                    _ => watcher::Event::Apply(o),
                };
                writers[ns].apply_watcher_event(&ev);
                note(&kind.changed, &ev);
            }
            kind.sync(&mut objects);
            let want = contents(&kind.stores);
            let versions = |v: &[Service]| -> Vec<(Option<String>, Option<String>, Option<String>)> {
                v.iter()
                    .map(|s| {
                        (
                            s.metadata.namespace.clone(),
                            s.metadata.name.clone(),
                            s.metadata.resource_version.clone(),
                        )
                    })
                    .collect()
            };
            assert_eq!(versions(&objects), versions(&want), "round {round}");
        }
    }
}
