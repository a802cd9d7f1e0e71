//! Weighted choice between a route's backends: a canary's share, later the Gateway API's `backendRefs` weights.
//! One step of a per-thread generator per request that the weights decide (no lock, no allocation); none when
//! only one backend has weight.

use std::cell::Cell;

use crate::model::route::WeightedBackend;

/// The index of a backend, each chosen with probability `weight / sum`. With every weight 0, the first.
/// A uniform draw below one million (mirror shares).
pub fn below_million() -> u32 {
    below(1_000_000) as u32
}

pub(super) fn pick(backends: &[WeightedBackend]) -> usize {
    let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    let mut with_weight = backends.iter().enumerate().filter(|(_, b)| b.weight > 0);
    match (with_weight.next(), with_weight.next()) {
        (None, _) => return 0,
        (Some((i, _)), None) => return i,
        _ => {}
    }
    let mut x = below(total);
    for (i, b) in backends.iter().enumerate() {
        if x < u64::from(b.weight) {
            return i;
        }
        x -= u64::from(b.weight);
    }
    backends.len() - 1
}

/// A number in `0..total` (`total` > 0) from 64 random bits, without division (Lemire's multiply-shift).
fn below(total: u64) -> u64 {
    ((u128::from(next_random()) * u128::from(total)) >> 64) as u64
}

thread_local! {
    /// SplitMix64's state, seeded per thread from the process's random hasher keys.
    static RNG: Cell<u64> = Cell::new({
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one(std::thread::current().id())
    });
}

/// SplitMix64 (Steele, Lea and Flood): a counter through a strong mixer, 64 bits per call, a few instructions.
fn next_random() -> u64 {
    RNG.with(|s| {
        let x = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(x);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::route::Origin;

    fn two(main: u32, canary: u32) -> [WeightedBackend; 2] {
        let b = |weight| WeightedBackend {
            id: "ns/s:80".into(),
            weight,
            invalid: false,
            mirror: None,
            error_page: false,
            tls: None,
            origin: Origin {
                kind: "Ingress",
                name: "ns/i".into(),
            },
        };
        [b(main), b(canary)]
    }

    #[test]
    fn weights_hold_their_share() {
        let canary = |main, canary| pick(&two(main, canary)) == 1;
        assert!((0..10_000).all(|_| !canary(100, 0)));
        assert!((0..10_000).all(|_| canary(0, 100)));
        assert!((0..10_000).all(|_| canary(0, 7)));
        assert_eq!(pick(&two(0, 0)), 0);
        // 100,000 picks at 20 %: the standard deviation is sqrt(n p (1-p)) ~ 126; 6 of them is ~760.
        let hits = (0..100_000).filter(|_| canary(80, 20)).count();
        assert!((19_240..=20_760).contains(&hits), "{hits}");
        let hits = (0..100_000).filter(|_| canary(999, 1)).count();
        assert!((40..=160).contains(&hits), "{hits}");
    }
}
