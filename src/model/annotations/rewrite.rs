//! Rewrites, regex paths and redirects, with ingress-nginx's meaning: `use-regex`, `rewrite-target`, `app-root`,
//! `permanent-redirect` / `temporal-redirect` (and their `-code`s). Runtime home: the route's regex
//! (`routing`) and its `Rewrite`, `Redirect` and `AppRoot` filters (`model::route`, run by `proxy::filters`).
//!
//! - `use-regex: "true"` or any `rewrite-target` makes the Ingress's paths regular expressions, matched
//!   case-insensitively and anchored at the start only (nginx's `location ~* "^PATH"`); every other path of the
//!   same host becomes one too (a literal one), and the host's paths are tried longest first, the first match
//!   winning. Expressions use the `regex` crate's syntax (RE2-like, as ingress-nginx documents), compiled under
//!   a size limit; matching is linear in the path's length.
//! - `rewrite-target` replaces the **whole** path with the target, `$1`..`$9` being the path's capture groups
//!   (a missing group is empty): `/app` with target `/` sends `/app/x` as `/`, `/app(/|$)(.*)` with `/$2` sends
//!   `/app/x` as `/x`. A `?` in the target starts a query, to which the request's query is appended (`&`), unless
//!   the target ends with `?`. The result is normalised and checked like a request path (400 when it climbs above
//!   the root or holds an encoded slash): what is forwarded never escapes the route through a capture.
//! - `app-root`: a request for exactly `/` gets 302 to that path (on the request's scheme and Host).
//! - `permanent-redirect` (301, or `permanent-redirect-code`) and `temporal-redirect` (302, or
//!   `temporal-redirect-code`): every request of the Ingress is answered with a redirect to the URL, unchanged.

use super::{boolean_any, get, string_any, IngressMeta};

pub const USE_REGEX: [&str; 2] = ["portico.dev/use-regex", "nginx.ingress.kubernetes.io/use-regex"];
pub const REWRITE_TARGET: [&str; 2] = [
    "portico.dev/rewrite-target",
    "nginx.ingress.kubernetes.io/rewrite-target",
];
pub const APP_ROOT: [&str; 2] = ["portico.dev/app-root", "nginx.ingress.kubernetes.io/app-root"];
pub const PERMANENT_REDIRECT: [&str; 2] = [
    "portico.dev/permanent-redirect",
    "nginx.ingress.kubernetes.io/permanent-redirect",
];
pub const PERMANENT_REDIRECT_CODE: [&str; 2] = [
    "portico.dev/permanent-redirect-code",
    "nginx.ingress.kubernetes.io/permanent-redirect-code",
];
pub const TEMPORAL_REDIRECT: [&str; 2] = [
    "portico.dev/temporal-redirect",
    "nginx.ingress.kubernetes.io/temporal-redirect",
];
pub const TEMPORAL_REDIRECT_CODE: [&str; 2] = [
    "portico.dev/temporal-redirect-code",
    "nginx.ingress.kubernetes.io/temporal-redirect-code",
];

/// The largest compiled path expression (bytes of the `regex` crate's program): enough for any path people write,
/// small enough that a hostile Ingress cannot make the table large.
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// What an Ingress's rewrite and redirect annotations ask for.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct Rewrites {
    /// The Ingress's paths are regular expressions (and so are the other paths of its hosts).
    pub regex: bool,
    /// The path sent upstream, with `$1`..`$9` standing for the path's capture groups.
    pub target: Option<String>,
    /// Where a request for `/` is redirected (302).
    pub app_root: Option<String>,
    /// Every request is redirected here with this status.
    pub redirect: Option<(String, u16)>,
    /// Every request is redirected (308) to the same scheme, port, path and query on this host. Set by
    /// translation on the `www` twin of a host with `from-to-www-redirect` (see `alias`), never by an annotation.
    pub host_redirect: Option<String>,
}

impl Rewrites {
    pub fn from_meta(meta: &IngressMeta) -> Result<Self, String> {
        let target = match string_any(meta, &REWRITE_TARGET)? {
            None => None,
            Some(t) => {
                check_target(t).map_err(|e| format!("annotation {}: {t:?} {e}", REWRITE_TARGET[0]))?;
                Some(t.to_string())
            }
        };
        let regex = boolean_any(meta, &USE_REGEX)?.unwrap_or(false) || target.is_some();
        let app_root = match string_any(meta, &APP_ROOT)? {
            None => None,
            Some(p) => {
                if !p.starts_with('/') || crate::normalize::validate_ingress_path(p).is_err() {
                    return Err(format!(
                        "annotation {}: {p:?} is not an absolute path like /app",
                        APP_ROOT[0]
                    ));
                }
                Some(p.to_string())
            }
        };
        let permanent = redirect(meta, &PERMANENT_REDIRECT, &PERMANENT_REDIRECT_CODE, 301)?;
        let temporal = redirect(meta, &TEMPORAL_REDIRECT, &TEMPORAL_REDIRECT_CODE, 302)?;
        let redirect = match (permanent, temporal) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "annotations {} and {} both ask for a redirect; keep one",
                    PERMANENT_REDIRECT[1], TEMPORAL_REDIRECT[1]
                ))
            }
            (p, t) => p.or(t),
        };
        Ok(Self {
            regex,
            target,
            app_root,
            redirect,
            host_redirect: None,
        })
    }

    /// Appends ` [..]` markers for `portico check` and fixtures.
    pub fn describe_into(&self, out: &mut String) {
        use std::fmt::Write;
        if let Some(t) = &self.target {
            let _ = write!(out, " [rewrite {t}]");
        }
        if let Some(a) = &self.app_root {
            let _ = write!(out, " [app-root {a}]");
        }
        if let Some((url, code)) = &self.redirect {
            let _ = write!(out, " [redirect {code} {url}]");
        }
        if let Some(h) = &self.host_redirect {
            let _ = write!(out, " [redirect 308 to host {h}]");
        }
    }
}

/// A rewrite target: an absolute path (with an optional query), `$1`..`$9` the only variables.
fn check_target(t: &str) -> Result<(), String> {
    if !t.starts_with('/') {
        return Err("is not an absolute path like / or /$2".into());
    }
    let bytes = t.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'$' && !bytes.get(i + 1).is_some_and(|d| (b'1'..=b'9').contains(d)) {
            return Err("uses a variable other than $1 to $9".into());
        }
        if b.is_ascii_control() || *b == b' ' || *b == b'#' {
            return Err("holds a space, a control character or a fragment".into());
        }
    }
    Ok(())
}

/// A redirect annotation and its code annotation.
fn redirect(
    meta: &IngressMeta,
    url_keys: &[&str; 2],
    code_keys: &[&str; 2],
    default: u16,
) -> Result<Option<(String, u16)>, String> {
    let code = match string_any(meta, code_keys)? {
        None => default,
        Some(c) => c
            .parse::<u16>()
            .ok()
            .filter(|c| (300..=308).contains(c) && *c != 304 && *c != 305 && *c != 306)
            .ok_or_else(|| {
                format!(
                    "annotation {}: {c:?} is not a redirect status (300-303, 307, 308)",
                    code_keys[0]
                )
            })?,
    };
    let Some(url) = string_any(meta, url_keys)? else {
        if code_keys.iter().any(|k| get(meta, k).is_some()) {
            return Err(format!("annotation {} needs {}", code_keys[0], url_keys[0]));
        }
        return Ok(None);
    };
    let valid = http::HeaderValue::from_str(url).is_ok()
        && match url.parse::<http::Uri>() {
            Ok(u) => {
                (u.scheme_str().is_some_and(|s| s == "http" || s == "https") && u.host().is_some())
                    || (u.scheme().is_none() && url.starts_with('/'))
            }
            Err(_) => false,
        };
    if !valid {
        return Err(format!(
            "annotation {}: {url:?} is not an http(s) URL or an absolute path",
            url_keys[0]
        ));
    }
    Ok(Some((url.to_string(), code)))
}

/// Compiles an Ingress path as the regex it stands for: case-insensitive, anchored at the start.
pub fn compile_path(path: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(&format!("^(?:{path})"))
        .case_insensitive(true)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => "is a regular expression too large to serve".to_string(),
            other => format!(
                "is not a regular expression: {}",
                other.to_string().lines().last().unwrap_or("")
            ),
        })
}

/// Expands a rewrite target with the captures of `re` in `path`: the target with `$1`..`$9` replaced.
pub fn expand(target: &str, re: &regex::Regex, path: &str) -> String {
    let caps = re.captures(path);
    let mut out = String::with_capacity(target.len() + path.len());
    let mut rest = target;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let n = rest.as_bytes()[i + 1] - b'0';
        if let Some(m) = caps.as_ref().and_then(|c| c.get(usize::from(n))) {
            out.push_str(m.as_str());
        }
        rest = &rest[i + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::test_meta as meta;

    #[test]
    fn parses_and_rejects() {
        let r = Rewrites::from_meta(&meta(&[("nginx.ingress.kubernetes.io/rewrite-target", "/$2")])).unwrap();
        assert!(r.regex);
        assert_eq!(r.target.as_deref(), Some("/$2"));
        let r = Rewrites::from_meta(&meta(&[
            ("nginx.ingress.kubernetes.io/permanent-redirect", "https://new.example/"),
            ("nginx.ingress.kubernetes.io/permanent-redirect-code", "308"),
            ("nginx.ingress.kubernetes.io/app-root", "/app"),
        ]))
        .unwrap();
        assert_eq!(r.redirect, Some(("https://new.example/".into(), 308)));
        assert_eq!(r.app_root.as_deref(), Some("/app"));
        assert!(!r.regex);
        let r = Rewrites::from_meta(&meta(&[(
            "nginx.ingress.kubernetes.io/temporal-redirect",
            "/maintenance",
        )]))
        .unwrap();
        assert_eq!(r.redirect, Some(("/maintenance".into(), 302)));
        for (pairs, needle) in [
            (
                vec![("nginx.ingress.kubernetes.io/rewrite-target", "app/$1")],
                "absolute path",
            ),
            (
                vec![("nginx.ingress.kubernetes.io/rewrite-target", "/$host/x")],
                "other than $1",
            ),
            (
                vec![("nginx.ingress.kubernetes.io/rewrite-target", "/$0")],
                "other than $1",
            ),
            (vec![("nginx.ingress.kubernetes.io/use-regex", "yes")], "not \"true\""),
            (vec![("nginx.ingress.kubernetes.io/app-root", "app")], "absolute path"),
            (
                vec![
                    ("nginx.ingress.kubernetes.io/permanent-redirect", "https://a/"),
                    ("nginx.ingress.kubernetes.io/permanent-redirect-code", "200"),
                ],
                "not a redirect status",
            ),
            (
                vec![("nginx.ingress.kubernetes.io/permanent-redirect-code", "308")],
                "needs",
            ),
            (
                vec![("nginx.ingress.kubernetes.io/permanent-redirect", "javascript:alert(1)")],
                "not an http(s) URL",
            ),
            (
                vec![
                    ("nginx.ingress.kubernetes.io/permanent-redirect", "https://a/"),
                    ("nginx.ingress.kubernetes.io/temporal-redirect", "https://b/"),
                ],
                "keep one",
            ),
        ] {
            let e = Rewrites::from_meta(&meta(&pairs)).unwrap_err();
            assert!(e.contains(needle), "{pairs:?}: {e}");
        }
    }

    #[test]
    fn regex_paths_and_expansion() {
        let re = compile_path("/something(/|$)(.*)").unwrap();
        assert!(re.is_match("/SOMETHING/new"), "case-insensitive");
        assert!(!re.is_match("/x/something"), "anchored at the start");
        assert_eq!(expand("/$2", &re, "/something/new"), "/new");
        assert_eq!(expand("/$2", &re, "/something"), "/");
        assert_eq!(expand("/v1/$2?x=$1", &re, "/something/a/b"), "/v1/a/b?x=/");
        assert_eq!(expand("/$9", &re, "/something/a"), "/", "a missing group is empty");
        // Alternation stays inside the anchor.
        let re = compile_path("/a|/b").unwrap();
        assert!(!re.is_match("/x/b"));
        assert!(compile_path("/a(").unwrap_err().contains("not a regular expression"));
        assert!(compile_path("/(a{1000}){1000}").unwrap_err().contains("too large"));
    }
}
