//! The rate limiter's table under many clients (a plain bench, `harness = false`): `cargo bench --bench ratelimit`.
//!
//! Drives `ratelimit::RateTable` (one route's `limit-rps` table) directly with `CLIENTS` distinct addresses
//! (default 100,000; IPv4 and IPv6 halves), each sending `ROUNDS` requests (default 3), and reports after each
//! round the clients tracked, the table's allocated size (`RateTable::memory_bytes`) and the process's RSS, then
//! the time per check with the table full (eviction included). The table is capped at `ratelimit::MAX_CLIENTS`
//! addresses, so memory stays flat however many clients come: the figure to compare is the table size, not the
//! client count. A second part does the same with buckets that refill between rounds (idle clients are dropped
//! first).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use portico::ratelimit::{RateTable, MAX_CLIENTS};

fn rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn addr(i: u32) -> IpAddr {
    if i % 2 == 0 {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
    } else {
        IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i)))
    }
}

fn env(name: &str, default: u32) -> u32 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn run(label: &str, refill: bool) {
    let clients = env("CLIENTS", 100_000);
    let rounds = env("ROUNDS", 3);
    let table = RateTable::default();
    let start = Instant::now();
    // 10 per second with a burst of 50, as `limit-rps: 10` does.
    let (interval, burst) = (Duration::from_millis(100), 50);
    println!(
        "== {label}: {clients} clients, cap {MAX_CLIENTS}, RSS before {:?} KiB",
        rss_kib()
    );
    for round in 0..rounds {
        // Without refill every bucket is still draining; with it, a minute passes between rounds.
        let now = if refill {
            start + Duration::from_secs(60 * u64::from(round))
        } else {
            start
        };
        let t = Instant::now();
        let mut allowed = 0u32;
        for i in 0..clients {
            allowed += u32::from(table.check(addr(i), now, interval, burst));
        }
        let per = t.elapsed() / clients.max(1);
        println!(
            "round {round}: allowed {allowed}, tracked {}, table {} KiB, RSS {:?} KiB, {per:?} per check",
            table.len(),
            table.memory_bytes() / 1024,
            rss_kib()
        );
        assert!(table.len() <= MAX_CLIENTS);
    }
}

fn main() {
    // `cargo test --benches` runs this too: keep it quick there.
    if std::env::args().any(|a| a == "--bench") {
        run("draining buckets", false);
        run("refilled between rounds", true);
    } else {
        std::env::set_var("CLIENTS", "2000");
        run("smoke", false);
    }
}
