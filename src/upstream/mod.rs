//! Upstream side: the endpoints behind a Service port ([`Backend`]), how one is picked, and the pooled HTTP
//! client that forwards to it ([`client`]).

pub mod client;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A Service port's ready endpoints, with the balancer's state. Invariant: `endpoints` never changes after
/// construction; a new endpoint set makes a new `Backend` (routing reuses the old one when nothing changed).
#[derive(Debug)]
pub struct Backend {
    /// `namespace/service:port`.
    pub id: String,
    pub endpoints: Box<[SocketAddr]>,
    next: AtomicUsize,
}

impl Backend {
    pub fn new(id: String, endpoints: Vec<SocketAddr>) -> Self {
        Self {
            id,
            endpoints: endpoints.into_boxed_slice(),
            next: AtomicUsize::new(0),
        }
    }

    /// Round robin over the endpoints; `None` when there are none.
    pub fn pick(&self) -> Option<SocketAddr> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
        Some(self.endpoints[i])
    }

    /// The endpoint after `after` in round-robin order, for a retry on another endpoint.
    pub fn pick_other(&self, after: SocketAddr) -> Option<SocketAddr> {
        let n = self.endpoints.len();
        if n < 2 {
            return None;
        }
        let pos = self.endpoints.iter().position(|e| *e == after)?;
        Some(self.endpoints[(pos + 1) % n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_visits_every_endpoint_evenly() {
        let eps: Vec<SocketAddr> = (1..=3).map(|p| SocketAddr::from(([127, 0, 0, 1], p))).collect();
        let b = Backend::new("ns/s:80".into(), eps.clone());
        let mut counts = [0; 3];
        for _ in 0..300 {
            let e = b.pick().unwrap();
            counts[eps.iter().position(|x| *x == e).unwrap()] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
        assert_eq!(b.pick_other(eps[2]), Some(eps[0]));
        assert!(Backend::new("x".into(), vec![]).pick().is_none());
        assert!(Backend::new("x".into(), vec![eps[0]]).pick_other(eps[0]).is_none());
    }
}
