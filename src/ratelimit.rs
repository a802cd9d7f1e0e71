//! Per-client rate and concurrency state for the `limit-*` annotations: what a route's kept slot
//! (`snapshot::Kept`) holds so a republish does not reset it. Pure: the caller passes the time.
//!
//! - [`RateTable`]: the generic cell rate algorithm (GCRA, a leaky bucket as one timestamp per client). A client
//!   may send `burst` requests above the steady rate, so `burst + 1` at once, then one per `interval`, as nginx's
//!   `limit_req burst=N nodelay`.
//! - [`ConnTable`]: requests in flight per client.
//!
//! Memory is bounded: each table holds at most [`MAX_CLIENTS`] addresses, split over [`SHARDS`] maps behind their
//! own mutex (a request locks one shard for a hash lookup and an insert: no lock is shared by all requests). When
//! a shard is full, a new client evicts the entry closest to refilled among a few sampled ones (a refilled bucket
//! carries no information; an active one evicted starts afresh, so under an attack from more than `MAX_CLIENTS`
//! addresses at once some clients' buckets are reset). Eviction is constant time (no sweep). A full
//! connection table refuses new clients (fail closed) until requests end. Keys are whole addresses (IPv4-mapped
//! IPv6 as IPv4), hashed with a per-process random seed so clients cannot aim at one shard.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shards per table.
pub const SHARDS: usize = 16;
/// The most client addresses a table tracks (per route and limit).
pub const MAX_CLIENTS: usize = 65_536;
/// Entries looked at to choose one to evict from a full shard.
const EVICTION_SAMPLE: usize = 8;

type Map<V> = HashMap<IpAddr, V, foldhash::fast::RandomState>;

/// One timestamp per client: the time its bucket is empty again ("theoretical arrival time"), in nanoseconds
/// since the table's epoch.
#[derive(Debug)]
pub struct RateTable {
    shards: Box<[Mutex<Map<u64>>]>,
    pick: foldhash::fast::RandomState,
    epoch: Instant,
    per_shard: usize,
}

impl Default for RateTable {
    fn default() -> Self {
        Self::with_capacity(MAX_CLIENTS)
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a shard cannot leave a map inconsistent in a way that matters here.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl RateTable {
    /// A table tracking at most `max` clients (rounded up to a multiple of [`SHARDS`]).
    pub fn with_capacity(max: usize) -> Self {
        let per_shard = max.div_ceil(SHARDS).max(1);
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Map::default())).collect(),
            pick: foldhash::fast::RandomState::default(),
            epoch: Instant::now(),
            per_shard,
        }
    }

    fn shard(&self, ip: IpAddr) -> &Mutex<Map<u64>> {
        let h = self.pick.hash_one(ip);
        &self.shards[usize::try_from(h % SHARDS as u64).unwrap_or(0)]
    }

    /// Whether a request of `ip` at `now` is within `interval` per request with `burst` above it; counts it if so.
    pub fn check(&self, ip: IpAddr, now: Instant, interval: Duration, burst: u32) -> bool {
        let ip = crate::cidr::canonical(ip);
        let t = nanos(now.saturating_duration_since(self.epoch));
        let step = nanos(interval).max(1);
        let tolerance = step.saturating_mul(u64::from(burst));
        let mut map = lock(self.shard(ip));
        let tat = map.get(&ip).copied().unwrap_or(t).max(t);
        if tat - t > tolerance {
            return false;
        }
        let next = tat.saturating_add(step);
        if let Some(v) = map.get_mut(&ip) {
            *v = next;
            return true;
        }
        if map.len() >= self.per_shard {
            // Room for one more: of a few entries (in table order, which hashing makes arbitrary), the one closest
            // to refilled goes; a refilled one carries no information at all. Constant time, unlike a sweep.
            if let Some(k) = map
                .iter()
                .take(EVICTION_SAMPLE)
                .min_by_key(|(_, tat)| **tat)
                .map(|(k, _)| *k)
            {
                map.remove(&k);
            }
        }
        map.insert(ip, next);
        true
    }

    /// Clients tracked.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The maps' allocated size, approximately (slots × (entry + control byte)).
    pub fn memory_bytes(&self) -> usize {
        let slot = std::mem::size_of::<(IpAddr, u64)>() + 1;
        self.shards.iter().map(|s| lock(s).capacity() * slot).sum()
    }
}

/// Requests in flight per client (entries only while above zero).
#[derive(Debug)]
pub struct ConnTable {
    shards: Box<[Mutex<Map<u32>>]>,
    pick: foldhash::fast::RandomState,
    per_shard: usize,
}

impl Default for ConnTable {
    fn default() -> Self {
        Self::with_capacity(MAX_CLIENTS)
    }
}

impl ConnTable {
    pub fn with_capacity(max: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Map::default())).collect(),
            pick: foldhash::fast::RandomState::default(),
            per_shard: max.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, ip: IpAddr) -> &Mutex<Map<u32>> {
        let h = self.pick.hash_one(ip);
        &self.shards[usize::try_from(h % SHARDS as u64).unwrap_or(0)]
    }

    /// Counts a request of `ip` if it has fewer than `max` in flight (and the table has room for a new client);
    /// the caller must [`ConnTable::release`] it once.
    pub fn acquire(&self, ip: IpAddr, max: u32) -> bool {
        let ip = crate::cidr::canonical(ip);
        let mut map = lock(self.shard(ip));
        if let Some(n) = map.get_mut(&ip) {
            if *n >= max {
                return false;
            }
            *n += 1;
            return true;
        }
        if map.len() >= self.per_shard || max == 0 {
            return false;
        }
        map.insert(ip, 1);
        true
    }

    /// Ends a request counted by [`ConnTable::acquire`].
    pub fn release(&self, ip: IpAddr) {
        let ip = crate::cidr::canonical(ip);
        let mut map = lock(self.shard(ip));
        if let Some(n) = map.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&ip);
            }
        }
    }

    /// Requests in flight of `ip`.
    pub fn in_flight(&self, ip: IpAddr) -> u32 {
        let ip = crate::cidr::canonical(ip);
        lock(self.shard(ip)).get(&ip).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(n))
    }

    #[test]
    fn burst_then_steady_rate() {
        let t = RateTable::default();
        let t0 = Instant::now();
        let sec = Duration::from_secs(1);
        // burst 2: three at once, then none until one interval passed.
        assert!((0..3).all(|_| t.check(ip(1), t0, sec, 2)));
        assert!(!t.check(ip(1), t0, sec, 2));
        assert!(t.check(ip(2), t0, sec, 2), "another client has its own bucket");
        assert!(!t.check(ip(1), t0 + Duration::from_millis(900), sec, 2));
        assert!(t.check(ip(1), t0 + Duration::from_millis(1000), sec, 2));
        assert!(!t.check(ip(1), t0 + Duration::from_millis(1000), sec, 2));
        // After a long pause the whole burst is back.
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| t.check(ip(1), later, sec, 2)));
        assert!(!t.check(ip(1), later, sec, 2));
        // An IPv4-mapped address is the IPv4 client.
        let mapped: IpAddr = "::ffff:0.0.0.1".parse().unwrap();
        assert!(!t.check(mapped, later, sec, 2));
    }

    #[test]
    fn bounded_with_eviction() {
        let t = RateTable::with_capacity(160);
        let t0 = Instant::now();
        for n in 0..10_000 {
            assert!(t.check(ip(n), t0, Duration::from_secs(60), 0));
        }
        assert!(t.len() <= 160, "{}", t.len());
        // Still bounded when old entries have refilled.
        let later = t0 + Duration::from_secs(120);
        for n in 10_000..20_000 {
            t.check(ip(n), later, Duration::from_secs(60), 0);
        }
        assert!(t.len() <= 160);
    }

    #[test]
    fn connections_count_and_release() {
        // Room for every client of the test: the seed is random, so two addresses may share a shard.
        let c = ConnTable::default();
        assert!(c.acquire(ip(1), 2) && c.acquire(ip(1), 2));
        assert!(!c.acquire(ip(1), 2));
        assert!(c.acquire(ip(2), 2));
        c.release(ip(1));
        assert_eq!(c.in_flight(ip(1)), 1);
        assert!(c.acquire(ip(1), 2));
        c.release(ip(1));
        c.release(ip(1));
        assert_eq!(c.in_flight(ip(1)), 0);
    }

    #[test]
    fn a_full_connection_table_refuses_new_clients_until_requests_end() {
        let c = ConnTable::with_capacity(16);
        let admitted: Vec<IpAddr> = (0..1_000).map(ip).filter(|&a| c.acquire(a, 1)).collect();
        // One client per shard at this size; which addresses fit depends on the seed, how many does not exceed it.
        assert!(!admitted.is_empty() && admitted.len() <= SHARDS, "{}", admitted.len());
        let refused: Vec<IpAddr> = (0..1_000).map(ip).filter(|a| !admitted.contains(a)).collect();
        assert!(refused.iter().all(|&a| !c.acquire(a, 1)), "a full table stays closed");
        for &a in &admitted {
            c.release(a);
        }
        assert!(
            refused.iter().any(|&a| c.acquire(a, 1)),
            "released room is given out again"
        );
    }
}
