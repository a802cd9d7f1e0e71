//! Canaries, with ingress-nginx's meaning: `canary`, `canary-by-header` (`-value`, `-pattern`), `canary-by-cookie`,
//! `canary-weight` (`-total`) and `affinity-canary-behavior`. Runtime home: the main route's second weighted backend
//! and its `Split` rules (`model::route`), chosen per request by `routing::Route::backend_for`.
//!
//! - `canary: "true"` makes the Ingress a canary: its rules are not routes of their own. Each (host, path, path
//!   type) of it attaches, as an alternative backend, to the main (non-canary) route of the same listener set with
//!   the same host, path and type (or the same path written as a regex, when the main Ingress's paths are regexes).
//!   One canary per route: the oldest wins. The main Ingress must be in the canary's namespace.
//! - Per request, in this order: the header named by `canary-by-header` (`always`: canary, `never`: main; with
//!   `canary-by-header-value` only that exact value, with `canary-by-header-pattern` a match of that expression,
//!   sends to the canary, the value winning when both are set; any other value falls through); the cookie named
//!   by `canary-by-cookie` (`always` / `never`, else falls through); with `affinity-canary-behavior: sticky` (the
//!   default) an affinity cookie naming an endpoint of the main or the canary backend keeps the request there;
//!   finally `canary-weight` out of `canary-weight-total` (default 100) of the rest, at random.
//! - A canary's other annotations: how its backend balances and is checked (`load-balance`, `upstream-hash-by`,
//!   `affinity`, `session-cookie-name`, `health-check*`) are its own; annotations that grant or restrict access
//!   would not apply (the request goes through the main route's policy) and disable the canary; the rest are
//!   ignored with a warning ([`check_keys`]).

use super::{boolean_any, catalog, get, string_any, IngressMeta};

pub const CANARY: [&str; 2] = ["portico.dev/canary", "nginx.ingress.kubernetes.io/canary"];
pub const BY_HEADER: [&str; 2] = [
    "portico.dev/canary-by-header",
    "nginx.ingress.kubernetes.io/canary-by-header",
];
pub const BY_HEADER_VALUE: [&str; 2] = [
    "portico.dev/canary-by-header-value",
    "nginx.ingress.kubernetes.io/canary-by-header-value",
];
pub const BY_HEADER_PATTERN: [&str; 2] = [
    "portico.dev/canary-by-header-pattern",
    "nginx.ingress.kubernetes.io/canary-by-header-pattern",
];
pub const BY_COOKIE: [&str; 2] = [
    "portico.dev/canary-by-cookie",
    "nginx.ingress.kubernetes.io/canary-by-cookie",
];
pub const WEIGHT: [&str; 2] = ["portico.dev/canary-weight", "nginx.ingress.kubernetes.io/canary-weight"];
pub const WEIGHT_TOTAL: [&str; 2] = [
    "portico.dev/canary-weight-total",
    "nginx.ingress.kubernetes.io/canary-weight-total",
];
pub const AFFINITY_BEHAVIOR: [&str; 2] = [
    "portico.dev/affinity-canary-behavior",
    "nginx.ingress.kubernetes.io/affinity-canary-behavior",
];

/// The largest compiled header pattern (bytes of the `regex` crate's program), as for regex paths.
pub const PATTERN_SIZE_LIMIT: usize = super::rewrite::REGEX_SIZE_LIMIT;

/// What the header named by `canary-by-header` must hold to send a request to the canary.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HeaderMatch {
    /// `always`: canary; `never`: main.
    AlwaysNever,
    /// Exactly this value (`canary-by-header-value`).
    Value(String),
    /// A match of this expression anywhere in the value (`canary-by-header-pattern`).
    Pattern(String),
}

/// A canary Ingress's selection rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Canary {
    /// `canary-by-header`, lowercase.
    pub header: Option<String>,
    pub header_match: HeaderMatch,
    /// `canary-by-cookie`.
    pub cookie: Option<String>,
    /// Requests out of `weight_total` sent to the canary at random (after the header and cookie rules).
    pub weight: u32,
    pub weight_total: u32,
    /// `affinity-canary-behavior: sticky` (default): an affinity cookie keeps a request on the side that set it.
    pub sticky: bool,
}

impl Canary {
    /// The rules of a canary Ingress; `None` when the Ingress is not one (`canary` absent or `"false"`). Another
    /// canary annotation without `canary: "true"` is an error: such an Ingress would otherwise be served as a main
    /// one, taking what its author meant to give a share of.
    pub fn from_meta(meta: &IngressMeta) -> Result<Option<Self>, String> {
        let enabled = boolean_any(meta, &CANARY)?.unwrap_or(false);
        let header = match string_any(meta, &BY_HEADER)? {
            None => None,
            Some(h) => {
                let lower = h.to_ascii_lowercase();
                if lower.is_empty() || http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
                    return Err(format!("annotation {}: {h:?} is not a header name", BY_HEADER[0]));
                }
                Some(lower)
            }
        };
        let value = match string_any(meta, &BY_HEADER_VALUE)? {
            None => None,
            Some(v) if v.is_empty() || http::HeaderValue::from_str(v).is_err() => {
                return Err(format!(
                    "annotation {}: {v:?} is not a header value",
                    BY_HEADER_VALUE[0]
                ))
            }
            Some(v) => Some(v.to_string()),
        };
        let pattern = match string_any(meta, &BY_HEADER_PATTERN)? {
            None => None,
            Some(p) => {
                compile_pattern(p).map_err(|e| format!("annotation {}: {p:?} {e}", BY_HEADER_PATTERN[0]))?;
                Some(p.to_string())
            }
        };
        if header.is_none() {
            if let Some(k) = [BY_HEADER_VALUE, BY_HEADER_PATTERN]
                .iter()
                .flatten()
                .find(|k| get(meta, k).is_some())
            {
                return Err(format!("annotation {k} needs {}", BY_HEADER[0]));
            }
        }
        let cookie = match string_any(meta, &BY_COOKIE)? {
            None => None,
            Some(c) if is_cookie_name(c) => Some(c.to_string()),
            Some(c) => return Err(format!("annotation {}: {c:?} is not a cookie name", BY_COOKIE[0])),
        };
        let weight_total = match string_any(meta, &WEIGHT_TOTAL)? {
            None => 100,
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|t| *t >= 1)
                .ok_or_else(|| format!("annotation {}: {v:?} is not a whole number from 1", WEIGHT_TOTAL[0]))?,
        };
        let weight = match string_any(meta, &WEIGHT)? {
            None => 0,
            Some(v) => v.parse::<u32>().ok().filter(|w| *w <= weight_total).ok_or_else(|| {
                format!(
                    "annotation {}: {v:?} is not a whole number from 0 to {weight_total} (the canary-weight-total)",
                    WEIGHT[0]
                )
            })?,
        };
        let sticky = match string_any(meta, &AFFINITY_BEHAVIOR)? {
            None | Some("sticky") => true,
            Some("legacy") => false,
            Some(v) => {
                return Err(format!(
                    "annotation {}: {v:?} is not sticky or legacy",
                    AFFINITY_BEHAVIOR[0]
                ))
            }
        };
        if !enabled {
            let needs = [
                BY_HEADER,
                BY_HEADER_VALUE,
                BY_HEADER_PATTERN,
                BY_COOKIE,
                WEIGHT,
                WEIGHT_TOTAL,
            ];
            if let Some(k) = needs.iter().flatten().find(|k| get(meta, k).is_some()) {
                return Err(format!(
                    "annotation {k} needs {}: \"true\" (without it the Ingress would be served as a main one)",
                    CANARY[0]
                ));
            }
            return Ok(None);
        }
        let header_match = match (value, pattern) {
            (Some(v), _) => HeaderMatch::Value(v),
            (None, Some(p)) => HeaderMatch::Pattern(p),
            (None, None) => HeaderMatch::AlwaysNever,
        };
        Ok(Some(Self {
            header,
            header_match,
            cookie,
            weight,
            weight_total,
            sticky,
        }))
    }

    /// Appends the rules for `portico check` and fixtures: `weight=N[/TOTAL] [header=H [value=V|pattern=P]]
    /// [cookie=C] [legacy]`.
    pub fn describe_into(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = write!(out, "weight={}", self.weight);
        if self.weight_total != 100 {
            let _ = write!(out, "/{}", self.weight_total);
        }
        if let Some(h) = &self.header {
            let _ = write!(out, " header={h}");
            match &self.header_match {
                HeaderMatch::AlwaysNever => {}
                HeaderMatch::Value(v) => {
                    let _ = write!(out, " value={v}");
                }
                HeaderMatch::Pattern(p) => {
                    let _ = write!(out, " pattern={p}");
                }
            }
        }
        if let Some(c) = &self.cookie {
            let _ = write!(out, " cookie={c}");
        }
        if !self.sticky {
            out.push_str(" legacy");
        }
    }
}

/// A cookie name as Portico accepts one in annotations: letters, digits, `_` and `-`.
pub(super) fn is_cookie_name(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Compiles a `canary-by-header-pattern` as written (unanchored, case-sensitive; `(?i)` and anchors are the
/// author's to add), under [`PATTERN_SIZE_LIMIT`].
pub fn compile_pattern(p: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(p)
        .size_limit(PATTERN_SIZE_LIMIT)
        .dfa_size_limit(PATTERN_SIZE_LIMIT)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => "is a regular expression too large to serve".to_string(),
            other => format!(
                "is not a regular expression: {}",
                other.to_string().lines().last().unwrap_or("")
            ),
        })
}

/// Keys a canary Ingress reads as its own: the canary rules, and how its backend balances and is checked.
fn own_on_canary(key: &str) -> bool {
    [
        CANARY,
        BY_HEADER,
        BY_HEADER_VALUE,
        BY_HEADER_PATTERN,
        BY_COOKIE,
        WEIGHT,
        WEIGHT_TOTAL,
        AFFINITY_BEHAVIOR,
        super::affinity::AFFINITY_COOKIE_NAME,
    ]
    .iter()
    .flatten()
    .chain(&[
        super::affinity::LOAD_BALANCE,
        super::affinity::NGINX_LOAD_BALANCE,
        super::affinity::NGINX_UPSTREAM_HASH_BY,
        super::affinity::NGINX_AFFINITY,
        super::backend::HEALTH_CHECK,
        super::backend::HEALTH_CHECK_PATH,
        super::backend::HEALTH_CHECK_INTERVAL,
        super::backend::HEALTH_CHECK_TIMEOUT,
        super::backend::HEALTH_CHECK_FALL,
        super::backend::HEALTH_CHECK_RISE,
    ])
    .any(|k| *k == key)
}

/// What the annotations of an Ingress (a canary when `canary`) say beyond their values: `Err` with one reason per
/// annotation that would grant or restrict access on a canary (it would not apply, so the canary is not served),
/// else warnings: the main Ingress's settings a canary carries and that are ignored, `canary-by-header-pattern`
/// beside `canary-by-header-value`, `affinity-canary-behavior` on an Ingress that is not a canary.
pub fn check_keys(meta: &IngressMeta, canary: bool) -> Result<Vec<String>, Vec<String>> {
    let mut warnings = Vec::new();
    if !canary {
        if let Some(k) = AFFINITY_BEHAVIOR.iter().find(|k| get(meta, k).is_some()) {
            warnings.push(format!(
                "annotation {k} has no effect: the Ingress is not a canary (it belongs on the canary Ingress)"
            ));
        }
        return Ok(warnings);
    }
    let mut errors = Vec::new();
    let verify_on = verification_asked(meta);
    for f in catalog::classify(meta.annotations.as_deref()) {
        let Some(e) = f.entry.filter(|e| e.support == catalog::Support::Implemented) else {
            continue; // no-ops and unsupported keys are reported by `super::check_keys`
        };
        if own_on_canary(e.key) {
            continue;
        }
        if e.group.controls_access() {
            errors.push(format!(
                "annotation {} on a canary Ingress would not apply: a canary's requests pass the main Ingress's access control; set it there and remove it here",
                e.key
            ));
        } else if verify_on && super::backend::PROXY_SSL_VERIFY.contains(&e.key) {
            errors.push(format!(
                "annotation {} on a canary Ingress would not apply: the canary's backend is reached with the main Ingress's upstream TLS settings; set it there and remove it here",
                e.key
            ));
        } else {
            warnings.push(format!(
                "annotation {} is ignored on a canary Ingress: its requests go through the main Ingress's settings, only the backend changes",
                e.key
            ));
        }
    }
    if let Some(k) = BY_HEADER_PATTERN.iter().find(|k| get(meta, k).is_some()) {
        if let Some(v) = BY_HEADER_VALUE.iter().find(|k| get(meta, k).is_some()) {
            warnings.push(format!("annotation {k} is ignored: {v} takes precedence"));
        }
    }
    if errors.is_empty() {
        Ok(warnings)
    } else {
        Err(errors)
    }
}

/// Whether `proxy-ssl-verify` asks for verification (`on`/`true`).
fn verification_asked(meta: &IngressMeta) -> bool {
    super::backend::PROXY_SSL_VERIFY
        .iter()
        .any(|k| matches!(get(meta, k), Some("on" | "true")))
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::test_meta as meta;

    #[test]
    fn parses_and_rejects() {
        assert_eq!(Canary::from_meta(&meta(&[])).unwrap(), None);
        assert_eq!(
            Canary::from_meta(&meta(&[("nginx.ingress.kubernetes.io/canary", "false")])).unwrap(),
            None
        );
        let c = Canary::from_meta(&meta(&[
            ("nginx.ingress.kubernetes.io/canary", "true"),
            ("nginx.ingress.kubernetes.io/canary-by-header", "X-Canary"),
            ("nginx.ingress.kubernetes.io/canary-by-header-value", "blue"),
            ("nginx.ingress.kubernetes.io/canary-by-header-pattern", "^b"),
            ("nginx.ingress.kubernetes.io/canary-by-cookie", "canary"),
            ("nginx.ingress.kubernetes.io/canary-weight", "5"),
            ("nginx.ingress.kubernetes.io/canary-weight-total", "10"),
            ("nginx.ingress.kubernetes.io/affinity-canary-behavior", "legacy"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.header.as_deref(), Some("x-canary"));
        assert_eq!(c.header_match, HeaderMatch::Value("blue".into()), "the value wins");
        assert_eq!((c.weight, c.weight_total, c.sticky), (5, 10, false));
        let mut s = String::new();
        c.describe_into(&mut s);
        assert_eq!(s, "weight=5/10 header=x-canary value=blue cookie=canary legacy");
        let c = Canary::from_meta(&meta(&[("portico.dev/canary", "true")]))
            .unwrap()
            .unwrap();
        assert_eq!((c.weight, c.weight_total, c.sticky), (0, 100, true));

        for (pairs, needle) in [
            (vec![("portico.dev/canary", "yes")], "not \"true\""),
            (
                vec![("portico.dev/canary", "true"), ("portico.dev/canary-weight", "101")],
                "from 0 to 100",
            ),
            (
                vec![
                    ("portico.dev/canary", "true"),
                    ("portico.dev/canary-weight", "30"),
                    ("portico.dev/canary-weight-total", "20"),
                ],
                "from 0 to 20",
            ),
            (
                vec![("portico.dev/canary", "true"), ("portico.dev/canary-weight", "ten")],
                "whole number",
            ),
            (
                vec![("portico.dev/canary", "true"), ("portico.dev/canary-weight", "-1")],
                "whole number",
            ),
            (
                vec![("portico.dev/canary", "true"), ("portico.dev/canary-weight-total", "0")],
                "from 1",
            ),
            (
                vec![
                    ("portico.dev/canary", "true"),
                    ("portico.dev/canary-by-header", "x"),
                    ("portico.dev/canary-by-header-pattern", "(unclosed"),
                ],
                "not a regular expression",
            ),
            (
                vec![
                    ("portico.dev/canary", "true"),
                    ("portico.dev/canary-by-header", "x"),
                    ("portico.dev/canary-by-header-pattern", "(a{1000}){1000}"),
                ],
                "too large",
            ),
            (
                vec![
                    ("portico.dev/canary", "true"),
                    ("portico.dev/canary-by-header-value", "v"),
                ],
                "needs portico.dev/canary-by-header",
            ),
            (
                vec![("portico.dev/canary", "true"), ("portico.dev/canary-by-header", "a b")],
                "not a header name",
            ),
            (
                vec![("portico.dev/canary", "true"), ("portico.dev/canary-by-cookie", "a;b")],
                "not a cookie name",
            ),
            (
                vec![
                    ("portico.dev/canary", "true"),
                    ("portico.dev/affinity-canary-behavior", "sometimes"),
                ],
                "not sticky or legacy",
            ),
            (
                vec![("nginx.ingress.kubernetes.io/canary-weight", "10")],
                "needs portico.dev/canary: \"true\"",
            ),
            (
                vec![
                    ("portico.dev/canary", "true"),
                    ("nginx.ingress.kubernetes.io/canary-weight", "10"),
                    ("portico.dev/canary-weight", "20"),
                ],
                "disagree",
            ),
        ] {
            let e = Canary::from_meta(&meta(&pairs)).unwrap_err();
            assert!(e.contains(needle), "{pairs:?}: {e}");
        }
    }

    #[test]
    fn other_annotations_on_a_canary() {
        let m = meta(&[
            ("nginx.ingress.kubernetes.io/canary", "true"),
            ("nginx.ingress.kubernetes.io/canary-weight", "10"),
            ("nginx.ingress.kubernetes.io/affinity", "cookie"),
            ("portico.dev/health-check", "tcp"),
            ("nginx.ingress.kubernetes.io/rewrite-target", "/"),
            ("nginx.ingress.kubernetes.io/proxy-buffering", "off"),
        ]);
        let w = check_keys(&m, true).unwrap();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("annotation nginx.ingress.kubernetes.io/rewrite-target is ignored on a canary"));
        let m = meta(&[
            ("portico.dev/canary", "true"),
            ("nginx.ingress.kubernetes.io/whitelist-source-range", "10.0.0.0/8"),
            ("portico.dev/backend-protocol", "HTTPS"),
            ("portico.dev/proxy-ssl-verify", "on"),
        ]);
        let e = check_keys(&m, true).unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e.iter().any(|e| e.contains("whitelist-source-range on a canary")));
        assert!(e.iter().any(|e| e.contains("proxy-ssl-verify on a canary")));
        // Off, verification is not asked for: ignored like the rest.
        let m = meta(&[("portico.dev/canary", "true"), ("portico.dev/proxy-ssl-verify", "off")]);
        assert_eq!(check_keys(&m, true).unwrap().len(), 1);
        let m = meta(&[("nginx.ingress.kubernetes.io/affinity-canary-behavior", "legacy")]);
        assert!(check_keys(&m, false).unwrap()[0].contains("not a canary"));
        assert_eq!(check_keys(&meta(&[]), false), Ok(vec![]));
    }
}
