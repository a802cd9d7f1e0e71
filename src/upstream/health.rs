//! Active health checks: one task per backend that has a check, probing every endpoint each interval (TCP
//! connect, or HTTP GET with a 2xx/3xx answer), marking endpoints down after `fall` failures and up again after
//! `rise` successes. A task holds its backend only weakly and ends when no table references it any more.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{ActiveCheck, Backend, Endpoint};

/// Starts checkers for backends that need one and do not have one yet.
#[derive(Default)]
pub struct Checkers {
    running: HashMap<usize, Weak<Backend>>,
}

impl Checkers {
    /// Call after each publish with every backend of the new table.
    pub fn ensure<'a>(&mut self, backends: impl Iterator<Item = &'a Arc<Backend>>) {
        self.running.retain(|_, w| w.strong_count() > 0);
        for b in backends {
            if b.check.is_none() {
                continue;
            }
            let key = Arc::as_ptr(b) as usize;
            if self.running.contains_key(&key) {
                continue;
            }
            self.running.insert(key, Arc::downgrade(b));
            tokio::spawn(run(Arc::downgrade(b)));
        }
    }
}

async fn run(backend: Weak<Backend>) {
    let Some(interval) = backend.upgrade().and_then(|b| b.check.as_ref().map(|c| c.interval)) else {
        return;
    };
    loop {
        tokio::time::sleep(interval).await;
        let Some(b) = backend.upgrade() else { return };
        let Some(check) = b.check.clone() else { return };
        // Probes run concurrently, each bounded by the check's timeout.
        let probes: Vec<_> = b
            .endpoints
            .iter()
            .map(|e| {
                let (addr, check) = (e.addr, check.clone());
                tokio::spawn(async move { probe(addr, &check).await })
            })
            .collect();
        for (e, p) in b.endpoints.iter().zip(probes) {
            update(&b, e, &check, p.await.unwrap_or(false));
        }
    }
}

/// Records one probe result of `e` (an endpoint of `b`): `check.fall` failures in a row take it out, `check.rise`
/// successes bring it back. Also used by the layer-4 checker (`l4::health`).
pub fn update(b: &Backend, e: &Endpoint, check: &ActiveCheck, ok: bool) {
    let down = e.check_down.load(Ordering::Relaxed);
    if ok != down {
        // The result agrees with the state: the streak toward a change restarts.
        e.check_streak.store(0, Ordering::Relaxed);
        return;
    }
    let streak = e.check_streak.fetch_add(1, Ordering::Relaxed) + 1;
    let needed = if down { check.rise } else { check.fall };
    if streak >= needed {
        e.check_down.store(!down, Ordering::Relaxed);
        e.check_streak.store(0, Ordering::Relaxed);
        if down {
            tracing::info!(backend = %b.id, endpoint = %e.addr, "endpoint up (active check)");
        } else {
            tracing::warn!(backend = %b.id, endpoint = %e.addr, "endpoint down (active check)");
        }
    }
}

async fn probe(addr: std::net::SocketAddr, check: &ActiveCheck) -> bool {
    let attempt = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let Some(path) = &check.http_path else {
            return Some(true);
        };
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: portico-health-check\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.ok()?;
        // "HTTP/1.1 200"
        let code = std::str::from_utf8(&head[9..12]).ok()?.parse::<u16>().ok()?;
        Some((200..400).contains(&code))
    };
    matches!(tokio::time::timeout(check.timeout, attempt).await, Ok(Some(true)))
}
