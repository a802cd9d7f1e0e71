//! Forward auth by ingress-nginx's names (`auth-url` and its companions) and Portico's (`portico.dev/auth-*`).
//! Runtime home: the route's `ForwardAuth` filter (`model::auth`), run by the proxy before sending
//! (`proxy/auth.rs`).
//!
//! - `auth-url`: an absolute `http://` or `https://` URL (a cluster Service's name works like any host name), with
//!   `$scheme`, `$host`, `$http_host`, `$request_uri`, `$escaped_request_uri` filled in per request; other nginx
//!   variables are refused.
//! - `auth-method`: the subrequest's method (default: the request's).
//! - `auth-response-headers`: comma-separated names copied from a 2xx answer onto the upstream request; the
//!   client's own values of these names are removed first, so a client cannot pose as a user.
//! - `auth-request-redirect`: the `X-Auth-Request-Redirect` sent to the auth service (default: the request URI).
//! - `auth-signin`: a 401 answer becomes 302 to this URL with `rd=<the request's URL>` added
//!   (`auth-signin-redirect-param` names the parameter) unless the URL has that parameter already, as in
//!   `https://auth.example/oauth2/start?rd=$scheme://$host$request_uri` (the same variables as `auth-url`).
//! - `auth-cache-key` + `auth-cache-duration` (`200 202 401 5m`, groups separated by commas; default
//!   `200 202 401 5m`): answers are remembered per route by the key, which may use `$http_NAME`,
//!   `$cookie_NAME`, `$remote_user`, `$host` and `$request_uri`; other variables are refused.
//! - `portico.dev/auth-timeout`: time for the whole subrequest (default 5s).
//!
//! Not supported (the Ingress is not served): `auth-snippet`, `auth-keepalive*`, `auth-proxy-set-headers`,
//! `auth-always-set-cookie` (see the catalog for why).

use std::time::Duration;

use super::{get, header_name, string_any, IngressMeta};
use crate::model::auth::{CacheSpec, ForwardAuth, KeyPart, UrlTemplate, DEFAULT_AUTH_TIMEOUT};

pub const URL: [&str; 2] = ["portico.dev/auth-url", "nginx.ingress.kubernetes.io/auth-url"];
pub const METHOD: [&str; 2] = ["portico.dev/auth-method", "nginx.ingress.kubernetes.io/auth-method"];
pub const RESPONSE_HEADERS: [&str; 2] = [
    "portico.dev/auth-response-headers",
    "nginx.ingress.kubernetes.io/auth-response-headers",
];
pub const REQUEST_REDIRECT: [&str; 2] = [
    "portico.dev/auth-request-redirect",
    "nginx.ingress.kubernetes.io/auth-request-redirect",
];
pub const SIGNIN: [&str; 2] = ["portico.dev/auth-signin", "nginx.ingress.kubernetes.io/auth-signin"];
pub const SIGNIN_REDIRECT_PARAM: [&str; 2] = [
    "portico.dev/auth-signin-redirect-param",
    "nginx.ingress.kubernetes.io/auth-signin-redirect-param",
];
pub const CACHE_KEY: [&str; 2] = [
    "portico.dev/auth-cache-key",
    "nginx.ingress.kubernetes.io/auth-cache-key",
];
pub const CACHE_DURATION: [&str; 2] = [
    "portico.dev/auth-cache-duration",
    "nginx.ingress.kubernetes.io/auth-cache-duration",
];
pub const TIMEOUT: &str = "portico.dev/auth-timeout";

/// ingress-nginx's default `auth-cache-duration`.
pub const DEFAULT_CACHE_DURATION: &str = "200 202 401 5m";

/// The forward auth an Ingress's annotations ask for (`None`: no `auth-url`).
pub fn parse(meta: &IngressMeta) -> Result<Option<ForwardAuth>, String> {
    let Some(url) = string_any(meta, &URL)? else {
        let companions = [
            METHOD,
            RESPONSE_HEADERS,
            REQUEST_REDIRECT,
            SIGNIN,
            SIGNIN_REDIRECT_PARAM,
            CACHE_KEY,
            CACHE_DURATION,
        ];
        if let Some(k) = companions
            .iter()
            .flatten()
            .chain(&[TIMEOUT])
            .find(|k| get(meta, k).is_some())
        {
            return Err(format!("annotation {k} needs {}", URL[0]));
        }
        return Ok(None);
    };
    let url = UrlTemplate::parse(url).map_err(|e| format!("annotation {}: {e}", URL[0]))?;
    let method = match string_any(meta, &METHOD)? {
        None => None,
        Some(m) => Some(
            http::Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .ok()
                .filter(|m| !m.as_str().is_empty())
                .ok_or_else(|| format!("annotation {}: {m:?} is not an HTTP method", METHOD[0]))?,
        ),
    };
    let mut response_headers = Vec::new();
    if let Some(list) = string_any(meta, &RESPONSE_HEADERS)? {
        for n in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let name = header_name(RESPONSE_HEADERS[0], n)?;
            let name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("annotation {}: {n:?} is not a header name", RESPONSE_HEADERS[0]))?;
            if !response_headers.contains(&name) {
                response_headers.push(name);
            }
        }
    }
    let request_redirect = match string_any(meta, &REQUEST_REDIRECT)? {
        None => None,
        Some(v) => Some(
            http::HeaderValue::from_str(v)
                .map_err(|_| format!("annotation {}: {v:?} is not a valid header value", REQUEST_REDIRECT[0]))?,
        ),
    };
    let signin = match string_any(meta, &SIGNIN)? {
        None => None,
        Some(v) => Some(UrlTemplate::parse(v).map_err(|e| format!("annotation {}: {e}", SIGNIN[0]))?),
    };
    let signin_redirect_param = match string_any(meta, &SIGNIN_REDIRECT_PARAM)? {
        None => "rd".to_string(),
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) => {
            if signin.is_none() {
                return Err(format!("annotation {} needs {}", SIGNIN_REDIRECT_PARAM[0], SIGNIN[0]));
            }
            p.to_string()
        }
        Some(p) => {
            return Err(format!(
                "annotation {}: {p:?} is not a query parameter name",
                SIGNIN_REDIRECT_PARAM[0]
            ))
        }
    };
    let cache = match (string_any(meta, &CACHE_KEY)?, string_any(meta, &CACHE_DURATION)?) {
        (None, None) => None,
        (None, Some(_)) => return Err(format!("annotation {} needs {}", CACHE_DURATION[0], CACHE_KEY[0])),
        (Some(key), duration) => Some(CacheSpec {
            key: cache_key(key)?,
            durations: cache_durations(CACHE_DURATION[0], duration.unwrap_or(DEFAULT_CACHE_DURATION))?,
        }),
    };
    let timeout = match get(meta, TIMEOUT) {
        None => DEFAULT_AUTH_TIMEOUT,
        Some(v) => crate::units::parse_duration(v)
            .filter(|d| !d.is_zero() && *d <= Duration::from_secs(300))
            .ok_or_else(|| format!("annotation {TIMEOUT}: {v:?} is not a duration from 1ms to 5m like 5s"))?,
    };
    Ok(Some(
        ForwardAuth {
            url,
            method,
            response_headers,
            request_redirect,
            signin,
            signin_redirect_param,
            cache,
            timeout,
            fingerprint: 0,
        }
        .with_fingerprint(),
    ))
}

/// `auth-cache-key`: text and the variables Portico can read of a request.
fn cache_key(v: &str) -> Result<Vec<KeyPart>, String> {
    let key = CACHE_KEY[0];
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = v;
    while let Some(i) = rest.find('$') {
        text.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (braced, body) = match after.strip_prefix('{') {
            Some(b) => (true, b),
            None => (false, after),
        };
        let end = body
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(body.len());
        let name = &body[..end];
        let mut consumed = end;
        if braced {
            if !body[end..].starts_with('}') {
                return Err(format!("annotation {key}: unclosed ${{ in {v:?}"));
            }
            consumed += 1;
        }
        let part = if let Some(h) = name.strip_prefix("http_") {
            let h = h.replace('_', "-").to_ascii_lowercase();
            KeyPart::Header(
                http::HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| format!("annotation {key}: ${name} names no header"))?,
            )
        } else if let Some(c) = name.strip_prefix("cookie_").filter(|c| !c.is_empty()) {
            KeyPart::Cookie(c.to_string())
        } else {
            match name {
                "remote_user" => KeyPart::RemoteUser,
                "host" | "http_host" => KeyPart::Host,
                "request_uri" => KeyPart::RequestUri,
                _ => {
                    return Err(format!(
                        "annotation {key}: ${name} is not a variable Portico can read; use $http_NAME, $cookie_NAME, $remote_user, $host or $request_uri"
                    ))
                }
            }
        };
        if !text.is_empty() {
            parts.push(KeyPart::Text(std::mem::take(&mut text)));
        }
        parts.push(part);
        rest = &body[consumed..];
    }
    text.push_str(rest);
    if !text.is_empty() {
        parts.push(KeyPart::Text(text));
    }
    if !parts.iter().any(|p| !matches!(p, KeyPart::Text(_))) {
        return Err(format!(
            "annotation {key}: {v:?} has no variable: every request would share one answer"
        ));
    }
    Ok(parts)
}

/// `auth-cache-duration`: groups like `200 202 10m`, separated by commas; statuses 2xx, 401 and 403 only (the
/// others are never an answer a client gets).
pub(crate) fn cache_durations(key: &str, v: &str) -> Result<Vec<(u16, Duration)>, String> {
    let mut out: Vec<(u16, Duration)> = Vec::new();
    for group in v.split(',').map(str::trim).filter(|g| !g.is_empty()) {
        let words: Vec<&str> = group.split_whitespace().collect();
        let (last, codes) = words
            .split_last()
            .ok_or_else(|| format!("annotation {key}: empty group"))?;
        let d = crate::units::parse_duration(last)
            .or_else(|| last.parse::<u64>().ok().map(Duration::from_secs))
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("annotation {key}: {last:?} is not a duration like 5m"))?;
        let codes: Vec<u16> = if codes.is_empty() {
            vec![200, 202, 401]
        } else {
            codes
                .iter()
                .map(|c| {
                    c.parse::<u16>()
                        .ok()
                        .filter(|c| (200..300).contains(c) || *c == 401 || *c == 403)
                        .ok_or_else(|| format!("annotation {key}: {c:?} is not a status 2xx, 401 or 403"))
                })
                .collect::<Result<_, _>>()?
        };
        for c in codes {
            if !out.iter().any(|(s, _)| *s == c) {
                out.push((c, d));
            }
        }
    }
    if out.is_empty() {
        return Err(format!("annotation {key}: no duration"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::test_meta as meta;
    use super::*;

    const U: &str = "nginx.ingress.kubernetes.io/auth-url";

    #[test]
    fn the_oauth2_proxy_setup() {
        let f = parse(&meta(&[
            (U, "http://oauth2-proxy.auth.svc:4180/oauth2/auth"),
            (
                "nginx.ingress.kubernetes.io/auth-signin",
                "https://auth.example/oauth2/start",
            ),
            (
                "nginx.ingress.kubernetes.io/auth-response-headers",
                "X-Auth-Request-User, X-Auth-Request-Email",
            ),
            ("nginx.ingress.kubernetes.io/auth-cache-key", "$cookie__oauth2_proxy"),
            (
                "nginx.ingress.kubernetes.io/auth-cache-duration",
                "200 202 10m, 401 30s",
            ),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(f.url.fixed.as_ref().unwrap().host(), Some("oauth2-proxy.auth.svc"));
        assert_eq!(f.response_headers.len(), 2);
        assert_eq!(f.signin_redirect_param, "rd");
        let c = f.cache.unwrap();
        assert_eq!(c.key, vec![KeyPart::Cookie("_oauth2_proxy".into())]);
        assert_eq!(c.ttl(202), Some(Duration::from_secs(600)));
        assert_eq!(c.ttl(401), Some(Duration::from_secs(30)));
        assert_eq!(c.ttl(403), None);
        assert_eq!(f.timeout, DEFAULT_AUTH_TIMEOUT);
        assert_ne!(f.fingerprint, 0);
    }

    #[test]
    fn refusals_name_the_annotation() {
        let err = |pairs: &[(&str, &str)]| parse(&meta(pairs)).unwrap_err();
        assert!(err(&[(U, "/oauth2/auth")]).contains("auth-url"));
        assert!(err(&[(U, "ftp://x/")]).contains("http"));
        assert!(err(&[(U, "https://$remote_addr/oauth2/auth")]).contains("$remote_addr"));
        let f = parse(&meta(&[
            (U, "https://$host/oauth2/auth"),
            (
                "nginx.ingress.kubernetes.io/auth-signin",
                "https://$host/oauth2/start?rd=$escaped_request_uri",
            ),
        ]))
        .unwrap()
        .unwrap();
        assert!(f.url.fixed.is_none());
        let v = crate::model::auth::UrlVars {
            scheme: "https",
            host: "a.test",
            host_header: "a.test",
            request_uri: "/x?y=1",
        };
        assert_eq!(f.url.render(&v), "https://a.test/oauth2/auth");
        assert_eq!(
            f.signin.unwrap().render(&v),
            "https://a.test/oauth2/start?rd=%2Fx%3Fy%3D1"
        );
        assert!(err(&[("nginx.ingress.kubernetes.io/auth-signin", "https://a/")]).contains("needs"));
        let e = err(&[
            (U, "http://a/"),
            ("nginx.ingress.kubernetes.io/auth-cache-key", "$request_body"),
        ]);
        assert!(e.contains("auth-cache-key") && e.contains("$request_body"), "{e}");
        let e = err(&[
            (U, "http://a/"),
            ("nginx.ingress.kubernetes.io/auth-cache-key", "fixed"),
        ]);
        assert!(e.contains("no variable"), "{e}");
        let e = err(&[
            (U, "http://a/"),
            ("nginx.ingress.kubernetes.io/auth-cache-key", "$http_authorization"),
            ("nginx.ingress.kubernetes.io/auth-cache-duration", "500 5m"),
        ]);
        assert!(e.contains("auth-cache-duration"), "{e}");
        let e = err(&[
            (U, "http://a/"),
            ("nginx.ingress.kubernetes.io/auth-response-headers", "Host"),
        ]);
        assert!(e.contains("auth-response-headers"), "{e}");
        assert!(err(&[(U, "http://a/"), (TIMEOUT, "0s")]).contains(TIMEOUT));
    }

    #[test]
    fn cache_key_variables() {
        assert_eq!(
            cache_key("u=${remote_user};$http_x_token|$host").unwrap(),
            vec![
                KeyPart::Text("u=".into()),
                KeyPart::RemoteUser,
                KeyPart::Text(";".into()),
                KeyPart::Header(http::HeaderName::from_static("x-token")),
                KeyPart::Text("|".into()),
                KeyPart::Host,
            ]
        );
        assert!(cache_key("${remote_user").is_err());
    }
}
