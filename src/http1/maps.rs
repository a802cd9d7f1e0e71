//! Header maps kept for reuse by the thread that last dropped them.
//!
//! Every HTTP/1.1 exchange through the gateway's own server and client builds two [`HeaderMap`]s (the request's
//! and the response's), each two heap blocks. A map handed back here once its message is written is cleared (its
//! values released, its storage kept) and given to the next head parsed on the thread, which saves four
//! allocations and four frees per request. A per-thread list, so no lock: a map taken on one worker and returned
//! on another just moves between the lists. Each list is bounded, and maps grown large by one unusual message are
//! not kept.

use std::cell::RefCell;

use http::HeaderMap;

/// Maps kept per thread: more than the requests one worker has between two of its parses.
const KEPT: usize = 16;
/// Maps that grew past this many fields are freed instead of kept (a normal head has far fewer).
const MAX_KEPT_CAPACITY: usize = 64;

thread_local! {
    static MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty map with room for `fields` fields without growing: a kept one when there is one.
pub fn take(fields: usize) -> HeaderMap {
    let kept = MAPS.try_with(|m| m.borrow_mut().pop()).ok().flatten();
    match kept {
        Some(mut map) => {
            map.reserve(fields);
            map
        }
        None => HeaderMap::with_capacity(fields),
    }
}

/// Hands `map` back for reuse; its fields are dropped now.
pub fn give(mut map: HeaderMap) {
    let capacity = map.capacity();
    if capacity == 0 || capacity > MAX_KEPT_CAPACITY {
        return;
    }
    map.clear();
    // During the thread's teardown the list may be gone: the map is simply freed.
    let _ = MAPS.try_with(|m| {
        let mut m = m.borrow_mut();
        if m.len() < KEPT {
            m.push(map);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{HeaderValue, HOST};

    #[test]
    fn a_given_map_comes_back_empty_with_its_storage() {
        let mut map = take(8);
        map.insert(HOST, HeaderValue::from_static("a.example"));
        map.append("x-one", HeaderValue::from_static("1"));
        map.append("x-one", HeaderValue::from_static("2"));
        let capacity = map.capacity();
        give(map);
        let again = take(4);
        assert!(again.is_empty(), "fields survived: {again:?}");
        assert_eq!(again.capacity(), capacity, "not the kept map");
        assert!(again.get(HOST).is_none());
    }

    #[test]
    fn lists_are_bounded_and_large_maps_are_not_kept() {
        std::thread::spawn(|| {
            for _ in 0..KEPT + 8 {
                give(HeaderMap::with_capacity(8));
            }
            assert_eq!(MAPS.with(|m| m.borrow().len()), KEPT);
            MAPS.with(|m| m.borrow_mut().clear());
            give(HeaderMap::with_capacity(MAX_KEPT_CAPACITY * 4));
            give(HeaderMap::new());
            assert_eq!(MAPS.with(|m| m.borrow().len()), 0);
            // A request for more room than a kept map has grows it, as a new map would be sized.
            give(HeaderMap::with_capacity(4));
            let big = take(40);
            assert!(big.capacity() >= 40);
        })
        .join()
        .unwrap();
    }
}
