//! A route's canary, compiled for the request path: the canary Ingress's backend and its selection rules
//! (`model::annotations::canary` says what they mean). The proxy asks [`CanaryRoute::chosen`] once per request
//! of a route that has one; the route's policy applies whichever backend serves.
//!
//! Cost per request of a route with a canary: a header lookup when `canary-by-header` is set (one hash probe),
//! a scan of the `Cookie` headers when `canary-by-cookie` or a sticky affinity cookie is set, and one step of a
//! per-thread generator when the weight decides (no lock, no allocation). A route without a canary pays one
//! branch on `Route::canary`.

use std::cell::Cell;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::policy::cookie;
use super::Route;
use crate::model::annotations::canary::{compile_pattern, HeaderMatch};
use crate::model::annotations::{Balance, IngressPolicy};
use crate::upstream::Backend;

/// The canary alternative of a route.
#[derive(Debug)]
pub struct CanaryRoute {
    /// The canary Ingress's backend, balanced and checked as the canary Ingress says.
    pub backend: Arc<Backend>,
    /// `namespace/name` of the canary Ingress.
    pub ingress: Arc<str>,
    /// Shared by the routes the same canary Ingress attached to.
    pub rules: Arc<CanaryRules>,
}

/// A canary Ingress's rules, parsed once per table build.
#[derive(Debug)]
pub struct CanaryRules {
    header: Option<(HeaderName, HeaderRule)>,
    cookie: Option<Box<str>>,
    weight: u32,
    total: u32,
    sticky: bool,
    /// The affinity cookie of the requests the canary serves (the canary Ingress balances by cookie).
    pub affinity_cookie: Option<Box<str>>,
}

#[derive(Debug)]
enum HeaderRule {
    AlwaysNever,
    Value(HeaderValue),
    /// `None`: the expression no longer compiles (it did at translation); it then matches nothing.
    Pattern(Option<Box<regex::Regex>>),
}

impl CanaryRules {
    /// The rules of a canary Ingress's policy (`policy.canary` set; without it, rules that never choose the canary).
    pub fn compile(p: &IngressPolicy) -> Self {
        let Some(c) = &p.canary else {
            return Self {
                header: None,
                cookie: None,
                weight: 0,
                total: 1,
                sticky: false,
                affinity_cookie: None,
            };
        };
        let header = c.header.as_deref().and_then(|h| {
            let name = HeaderName::from_bytes(h.as_bytes()).ok()?;
            let rule = match &c.header_match {
                HeaderMatch::AlwaysNever => HeaderRule::AlwaysNever,
                HeaderMatch::Value(v) => HeaderRule::Value(HeaderValue::from_str(v).ok()?),
                HeaderMatch::Pattern(re) => HeaderRule::Pattern(match compile_pattern(re) {
                    Ok(re) => Some(Box::new(re)),
                    Err(e) => {
                        tracing::warn!(pattern = %re, error = %e, "canary header pattern left out");
                        None
                    }
                }),
            };
            Some((name, rule))
        });
        Self {
            header,
            cookie: c.cookie.as_deref().map(Into::into),
            weight: c.weight,
            total: c.weight_total.max(1),
            sticky: c.sticky,
            affinity_cookie: (p.balance == Balance::Cookie).then(|| p.affinity_cookie.as_str().into()),
        }
    }

    /// The rules in words, for `/api/explain` and `/api/routes`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some((name, rule)) = &self.header {
            parts.push(match rule {
                HeaderRule::AlwaysNever => format!("header {name}: always = canary, never = main"),
                HeaderRule::Value(v) => format!("header {name}: {} = canary", v.to_str().unwrap_or("?")),
                HeaderRule::Pattern(re) => format!(
                    "header {name}: a match of {} = canary",
                    re.as_ref().map_or("(invalid)", |r| r.as_str())
                ),
            });
        }
        if let Some(c) = &self.cookie {
            parts.push(format!("cookie {c}: always = canary, never = main"));
        }
        if self.sticky {
            parts.push("an affinity cookie keeps its side".into());
        }
        parts.push(format!("else {} in {} at random", self.weight, self.total));
        parts.join("; ")
    }
}

impl Route {
    /// The canary that serves this request: the route has one and its rules choose it.
    pub fn canary_for(&self, headers: &HeaderMap) -> Option<&CanaryRoute> {
        let c = self.canary.as_deref()?;
        c.chosen(headers, self).then_some(c)
    }
}

impl CanaryRoute {
    /// Whether the canary serves this request rather than `main`'s backend: the header rule, the cookie rule,
    /// stickiness, then the weight; a rule that decides nothing falls through to the next.
    pub fn chosen(&self, headers: &HeaderMap, main: &Route) -> bool {
        let r = &*self.rules;
        if let Some((name, rule)) = &r.header {
            if let Some(v) = headers.get(name) {
                match rule {
                    HeaderRule::AlwaysNever => match v.as_bytes() {
                        b"always" => return true,
                        b"never" => return false,
                        _ => {}
                    },
                    HeaderRule::Value(want) => {
                        if v == want {
                            return true;
                        }
                    }
                    HeaderRule::Pattern(re) => {
                        if let (Some(re), Ok(v)) = (re, v.to_str()) {
                            if re.is_match(v) {
                                return true;
                            }
                        }
                    }
                }
            }
        }
        if let Some(name) = &r.cookie {
            match cookie(headers, name) {
                Some("always") => return true,
                Some("never") => return false,
                _ => {}
            }
        }
        if r.sticky {
            let names = |name: Option<&str>, backend: &Backend| {
                name.and_then(|n| cookie(headers, n))
                    .is_some_and(|v| backend.names_endpoint(v))
            };
            if names(main.policy.affinity_cookie.as_deref(), &main.backend) {
                return false;
            }
            if names(r.affinity_cookie.as_deref(), &self.backend) {
                return true;
            }
        }
        roll(r.weight, r.total)
    }
}

/// True for `weight` in `total` calls, at random: never for 0, always for `total`.
fn roll(weight: u32, total: u32) -> bool {
    if weight == 0 || weight >= total {
        return weight > 0;
    }
    // Lemire's multiply-shift: a number in 0..total from 64 random bits, without division.
    ((u128::from(next_random()) * u128::from(total)) >> 64) < u128::from(weight)
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

    #[test]
    fn weights_hold_their_share() {
        assert!((0..10_000).all(|_| !roll(0, 100)));
        assert!((0..10_000).all(|_| roll(100, 100)));
        assert!((0..10_000).all(|_| roll(7, 7)));
        // 100,000 rolls at 20 %: the standard deviation is sqrt(n p (1-p)) ~ 126; 6 of them is ~760.
        let hits = (0..100_000).filter(|_| roll(20, 100)).count();
        assert!((19_240..=20_760).contains(&hits), "{hits}");
        let hits = (0..100_000).filter(|_| roll(1, 1000)).count();
        assert!((40..=160).contains(&hits), "{hits}");
    }
}
