//! A bounded cache of auth results for one route, kept in the route's kept slot (`snapshot::Kept`) so it survives
//! republishes: basic auth's verified credentials (so bcrypt is not paid per request) and forward auth's answers
//! (`auth-cache-key`).
//!
//! - Keys are SHA-1 digests of what identifies a request (the `Authorization` value, the rendered cache key), so
//!   no password is kept and every key is 20 bytes.
//! - Every entry expires; the cache holds at most [`CAPACITY`] entries: when full, expired entries go first, then
//!   an arbitrary eighth of the rest (the map's own order).
//! - The cache belongs to one configuration, named by a fingerprint the filter computes from its settings (the
//!   auth URL, the users and their hashes): a lookup or insert with another fingerprint empties it first, so a
//!   changed password or auth service never meets an answer given under the old one.
//!
//! One short mutex per lookup; routes without an auth filter never touch it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha1::{Digest as _, Sha1};

/// The most entries one route's cache holds.
pub const CAPACITY: usize = 10_000;

/// A cache key: the SHA-1 of the identifying bytes.
pub type Key = [u8; 20];

/// The key of `parts` (each length-prefixed, so ("ab","c") and ("a","bc") differ).
pub fn key<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Key {
    let mut h = Sha1::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().into()
}

/// What forward auth remembers of an answer: its status and the headers the filter uses (copied upstream for a
/// 2xx, returned to the client for a 401/403) and, for a refusal, its body.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub body: bytes::Bytes,
}

/// Results of one route's auth filter, bounded and expiring.
#[derive(Debug)]
pub struct AuthCache<V> {
    inner: Mutex<Inner<V>>,
    capacity: usize,
}

#[derive(Debug)]
struct Inner<V> {
    fingerprint: u64,
    map: HashMap<Key, (Instant, V)>,
}

impl<V: Clone> Default for AuthCache<V> {
    fn default() -> Self {
        Self::with_capacity(CAPACITY)
    }
}

impl<V: Clone> AuthCache<V> {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                fingerprint: 0,
                map: HashMap::new(),
            }),
            capacity: capacity.max(8),
        }
    }

    /// The unexpired value under `key`, for the configuration `fingerprint`.
    pub fn get(&self, fingerprint: u64, key: &Key, now: Instant) -> Option<V> {
        let mut inner = self.lock(fingerprint);
        match inner.map.get(key) {
            Some((expires, v)) if *expires > now => Some(v.clone()),
            Some(_) => {
                inner.map.remove(key);
                None
            }
            None => None,
        }
    }

    /// Remembers `value` under `key` for `ttl`.
    pub fn insert(&self, fingerprint: u64, key: Key, value: V, ttl: Duration, now: Instant) {
        let Some(expires) = now.checked_add(ttl) else { return };
        let mut inner = self.lock(fingerprint);
        if inner.map.len() >= self.capacity && !inner.map.contains_key(&key) {
            inner.map.retain(|_, (e, _)| *e > now);
            if inner.map.len() >= self.capacity {
                let drop: Vec<Key> = inner.map.keys().take(self.capacity / 8).copied().collect();
                for k in drop {
                    inner.map.remove(&k);
                }
            }
        }
        inner.map.insert(key, (expires, value));
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self, fingerprint: u64) -> std::sync::MutexGuard<'_, Inner<V>> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.fingerprint != fingerprint {
            inner.map.clear();
            inner.fingerprint = fingerprint;
        }
        inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_is_bounded_and_forgets_another_configuration() {
        let c: AuthCache<u32> = AuthCache::with_capacity(16);
        let t0 = Instant::now();
        let k = key([&b"a"[..], b"bc"]);
        assert_ne!(k, key([&b"ab"[..], b"c"]));
        c.insert(1, k, 7, Duration::from_secs(10), t0);
        assert_eq!(c.get(1, &k, t0 + Duration::from_secs(9)), Some(7));
        assert_eq!(c.get(1, &k, t0 + Duration::from_secs(10)), None, "expired");
        c.insert(1, k, 7, Duration::from_secs(10), t0);
        assert_eq!(c.get(2, &k, t0), None, "another configuration empties the cache");
        assert!(c.is_empty());
        for i in 0u32..1000 {
            c.insert(2, key([&i.to_le_bytes()[..]]), i, Duration::from_secs(60), t0);
            assert!(c.len() <= 16);
        }
        let last = key([&999u32.to_le_bytes()[..]]);
        assert_eq!(c.get(2, &last, t0), Some(999), "the newest entry is kept");
    }
}
