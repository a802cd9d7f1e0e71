//! Reflectors: one kube watcher per kind (and per namespace when namespaces are limited), each feeding a
//! reflector store. A watcher is *synced* between an `InitDone` and the next `Init`; the publisher only reads
//! the stores when every watcher is synced, so a relist (after a 410 or a restart) never publishes a partial
//! list. kube's stores keep the previous contents until `InitDone` swaps the relisted ones in.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::Instrument;

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

    /// Starts a reflector for `api` filtered by `config`; returns its store. The task ends with `shutdown`.
    pub fn spawn<K>(
        &self,
        label: String,
        api: Api<K>,
        config: watcher::Config,
        mut shutdown: watch::Receiver<bool>,
    ) -> Store<K>
    where
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
        let span = tracing::info_span!("watch", kind = %label);
        tokio::spawn(
            async move {
                let mut stream = watcher(api, config).default_backoff().boxed();
                loop {
                    let ev = tokio::select! {
                        ev = stream.next() => ev,
                        _ = shutdown.wait_for(|s| *s) => return,
                    };
                    let Some(ev) = ev else { return };
                    match ev {
                        Ok(ev) => {
                            writer.apply_watcher_event(&ev);
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
                        // The backoff delays the retry; the store keeps its contents meanwhile.
                        Err(e) => tracing::warn!(error = %e, "watch failed; retrying"),
                    }
                }
            }
            .instrument(span),
        );
        store
    }
}

impl Default for Watches {
    fn default() -> Self {
        Self::new()
    }
}

/// The stores' contents, cloned, sorted by namespace and name.
pub fn contents<K>(stores: &[Store<K>]) -> Vec<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    let mut out: Vec<K> = stores.iter().flat_map(|s| s.state()).map(|o| (*o).clone()).collect();
    out.sort_by(|a, b| {
        (a.meta().namespace.as_deref(), a.meta().name.as_deref())
            .cmp(&(b.meta().namespace.as_deref(), b.meta().name.as_deref()))
    });
    out
}
