//! Hostnames as the Gateway API compares them: a listener's hostname against a route's (their intersection),
//! and which of several listeners on one port a request host goes to (the most specific).
//!
//! A wildcard `*.example.com` matches any name with at least one more label to the left (`a.example.com`,
//! `a.b.example.com`), never `example.com` itself. Names compare case-insensitively (they are lower-cased
//! first); the port in a Host header is not part of the name.

use std::cmp::Reverse;

/// The names both `listener` and `route` accept, as the route should be served on the listener:
/// - no listener hostname: the route's name as is;
/// - equal names: that name;
/// - one is a wildcard covering the other: the more specific one (`*.example.com` and `a.example.com` give
///   `a.example.com`; `*.example.com` and `*.a.example.com` give `*.a.example.com`);
/// - otherwise `None`.
pub fn intersect(listener: Option<&str>, route: &str) -> Option<String> {
    let route = route.to_ascii_lowercase();
    let Some(listener) = listener else {
        return Some(route);
    };
    let listener = listener.to_ascii_lowercase();
    if listener == route {
        return Some(route);
    }
    if covers(&listener, &route) {
        return Some(route);
    }
    if covers(&route, &listener) {
        return Some(listener);
    }
    None
}

/// The hostnames a route is served with on a listener: the intersection of each of `route` with `listener`
/// (deduplicated, sorted by specificity, most specific first). A route without hostnames takes the listener's
/// (`[]`, any host, when the listener has none either). `None`: no name in common.
pub fn effective(listener: Option<&str>, route: &[String]) -> Option<Vec<String>> {
    if route.is_empty() {
        return Some(listener.map(|l| vec![l.to_ascii_lowercase()]).unwrap_or_default());
    }
    let mut names: Vec<String> = route.iter().filter_map(|r| intersect(listener, r)).collect();
    if names.is_empty() {
        return None;
    }
    sort_by_specificity(&mut names);
    names.dedup();
    Some(names)
}

/// Whether `pattern` (a wildcard `*.suffix`) matches `name` (a name or a narrower wildcard) and is not equal to
/// it. A name that is not a wildcard covers nothing but itself (handled by the caller).
fn covers(pattern: &str, name: &str) -> bool {
    let Some(suffix) = pattern.strip_prefix('*') else {
        return false;
    };
    // suffix is ".example.com": name must end with it and have something before it.
    let Some(head) = name.strip_suffix(suffix) else {
        return false;
    };
    !head.is_empty()
}

/// Whether `host` (a request's host, no port) is matched by the listener or route hostname `pattern`.
pub fn matches(pattern: &str, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let pattern = pattern.to_ascii_lowercase();
    match pattern.strip_prefix('*') {
        Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        None => pattern == host,
    }
}

/// Orders hostnames from most to least specific, as listeners on one port are tried: exact names first (longer
/// first), then wildcards with more labels to the right of the `*` first, then the empty hostname (any host).
/// Use it as a sort key: smaller is more specific.
pub fn specificity(hostname: Option<&str>) -> impl Ord {
    match hostname {
        None | Some("") => (2u8, Reverse(0usize), Reverse(0usize), String::new()),
        Some(h) if h.starts_with('*') => (
            1,
            Reverse(h.matches('.').count()),
            Reverse(h.len()),
            h.to_ascii_lowercase(),
        ),
        Some(h) => (
            0,
            Reverse(h.matches('.').count()),
            Reverse(h.len()),
            h.to_ascii_lowercase(),
        ),
    }
}

/// Sorts `names` most specific first (see [`specificity`]), ties alphabetically.
pub fn sort_by_specificity(names: &mut [String]) {
    names.sort_by_cached_key(|n| specificity(Some(n)));
}

/// Of the listener hostnames `candidates` (on one port), the index of the one `host` goes to: the most specific
/// that matches (a listener without hostname matches every host). Listener isolation: a request goes to that
/// listener's routes only.
pub fn most_specific<'a>(candidates: impl IntoIterator<Item = Option<&'a str>>, host: &str) -> Option<usize> {
    candidates
        .into_iter()
        .enumerate()
        .filter(|(_, h)| h.is_none_or(|h| matches(h, host)))
        .min_by_key(|(_, h)| specificity(*h))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The intersection table of the spec's HTTPRoute hostnames documentation, and more.
    #[test]
    fn intersection_table() {
        let cases: &[(Option<&str>, &str, Option<&str>)] = &[
            (None, "foo.example.com", Some("foo.example.com")),
            (None, "*.example.com", Some("*.example.com")),
            (Some("foo.example.com"), "foo.example.com", Some("foo.example.com")),
            (Some("foo.example.com"), "bar.example.com", None),
            (Some("*.example.com"), "foo.example.com", Some("foo.example.com")),
            (
                Some("*.example.com"),
                "foo.bar.example.com",
                Some("foo.bar.example.com"),
            ),
            (Some("*.example.com"), "example.com", None),
            (Some("*.example.com"), "foo.example.net", None),
            (Some("foo.example.com"), "*.example.com", Some("foo.example.com")),
            (
                Some("foo.bar.example.com"),
                "*.example.com",
                Some("foo.bar.example.com"),
            ),
            (Some("example.com"), "*.example.com", None),
            (Some("*.example.com"), "*.example.com", Some("*.example.com")),
            (Some("*.example.com"), "*.foo.example.com", Some("*.foo.example.com")),
            (Some("*.foo.example.com"), "*.example.com", Some("*.foo.example.com")),
            (Some("*.foo.example.com"), "*.bar.example.com", None),
            (Some("Foo.Example.com"), "foo.example.COM", Some("foo.example.com")),
            (Some("*.example.com"), "xexample.com", None),
        ];
        for (listener, route, want) in cases {
            assert_eq!(
                intersect(*listener, route).as_deref(),
                *want,
                "listener {listener:?} route {route}"
            );
        }
    }

    #[test]
    fn effective_hostnames() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(effective(None, &[]), Some(vec![]), "any host");
        assert_eq!(effective(Some("a.example.com"), &[]), Some(names(&["a.example.com"])));
        assert_eq!(
            effective(
                Some("*.example.com"),
                &names(&["*.example.com", "x.example.com", "other.net", "x.example.com"])
            ),
            Some(names(&["x.example.com", "*.example.com"]))
        );
        assert_eq!(effective(Some("a.example.com"), &names(&["b.example.com"])), None);
    }

    #[test]
    fn request_hosts() {
        assert!(matches("*.example.com", "a.example.com"));
        assert!(matches("*.example.com", "a.b.example.com"));
        assert!(!matches("*.example.com", "example.com"));
        assert!(matches("a.example.com", "A.example.com"));
        assert!(!matches("a.example.com", "b.example.com"));
    }

    /// Listener isolation: exact before wildcard, longer wildcard suffix before shorter, any-host last.
    #[test]
    fn most_specific_listener_wins() {
        let listeners = [
            None,
            Some("*.example.com"),
            Some("*.foo.example.com"),
            Some("abc.foo.example.com"),
        ];
        let pick = |host| most_specific(listeners.iter().copied(), host);
        assert_eq!(pick("abc.foo.example.com"), Some(3));
        assert_eq!(pick("x.foo.example.com"), Some(2));
        assert_eq!(pick("bar.example.com"), Some(1));
        assert_eq!(pick("example.net"), Some(0));
        assert_eq!(most_specific([Some("a.example.com")], "b.example.com"), None);
        let mut names = vec![
            "*.example.com".to_string(),
            "a.example.com".into(),
            "*.a.example.com".into(),
        ];
        sort_by_specificity(&mut names);
        assert_eq!(names, ["a.example.com", "*.a.example.com", "*.example.com"]);
    }
}
