//! Connect timeout, retries to the next endpoint and sending to the Service's ClusterIP, by ingress-nginx's names:
//! `proxy-connect-timeout`, `proxy-next-upstream` (`-tries`, `-timeout`), `service-upstream`. Runtime home: the
//! route's send policy (`model::route::SendPolicy`), read by the proxy's send phase; `service-upstream` is resolved by
//! translation (the backend's one endpoint is the ClusterIP).
//!
//! Without these annotations Portico retries as documented in docs/annotations.md ("Upstream health and
//! retries"), which is ingress-nginx's default `error timeout` for connection failures. With
//! `proxy-next-upstream`, the conditions are the listed ones:
//! - `error`: the connection failed, or broke before a response (`invalid_header`: a malformed response head,
//!   which Portico's client reports as a broken connection, so the same);
//! - `timeout`: connecting, or waiting for the response head, took too long;
//! - `http_500`, `http_502`, `http_503`, `http_504`, `http_403`, `http_404`, `http_429`: the backend answered
//!   that status (the answer is discarded and another endpoint asked);
//! - `non_idempotent`: POST, PATCH and LOCK may be retried too after the request reached a backend;
//! - `off`: never.
//!
//! As always, only requests without a body are sent twice, never once a byte of the response reached the client,
//! and within the backend's retry budget.

use std::time::Duration;

use super::{string_any, timeout_any, IngressMeta};

pub const CONNECT_TIMEOUT: [&str; 2] = [
    "portico.dev/connect-timeout",
    "nginx.ingress.kubernetes.io/proxy-connect-timeout",
];
pub const NEXT_UPSTREAM: [&str; 2] = [
    "portico.dev/next-upstream",
    "nginx.ingress.kubernetes.io/proxy-next-upstream",
];
pub const NEXT_UPSTREAM_TRIES: [&str; 2] = [
    "portico.dev/next-upstream-tries",
    "nginx.ingress.kubernetes.io/proxy-next-upstream-tries",
];
pub const NEXT_UPSTREAM_TIMEOUT: [&str; 2] = [
    "portico.dev/next-upstream-timeout",
    "nginx.ingress.kubernetes.io/proxy-next-upstream-timeout",
];
pub const SERVICE_UPSTREAM: [&str; 2] = [
    "portico.dev/service-upstream",
    "nginx.ingress.kubernetes.io/service-upstream",
];

/// Tries per request, counting the first, when nothing says otherwise (ingress-nginx's default too).
pub const DEFAULT_TRIES: u8 = 3;
/// The most tries `proxy-next-upstream-tries` may ask for (`0`, nginx's "unlimited", means this).
pub const MAX_TRIES: u8 = 10;

/// When another endpoint is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NextUpstream {
    pub error: bool,
    /// Connecting took too long.
    pub timeout: bool,
    /// The response head took too long (nginx's `timeout` covers both; Portico's default only connecting).
    pub header_timeout: bool,
    /// Retry on these statuses (bit `n` for the `n`-th of [`STATUSES`]).
    pub statuses: u8,
    pub non_idempotent: bool,
}

impl Default for NextUpstream {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The statuses `proxy-next-upstream` may name, in bit order.
pub const STATUSES: [u16; 7] = [500, 502, 503, 504, 403, 404, 429];

impl NextUpstream {
    /// Portico's built-in behaviour (`error timeout` for connecting, breaks for idempotent requests).
    pub const DEFAULT: Self = Self {
        error: true,
        timeout: true,
        header_timeout: false,
        statuses: 0,
        non_idempotent: false,
    };

    pub fn retries_status(&self, status: u16) -> bool {
        STATUSES
            .iter()
            .position(|s| *s == status)
            .is_some_and(|i| self.statuses & (1 << i) != 0)
    }

    fn parse(key: &str, v: &str) -> Result<Self, String> {
        let mut n = Self {
            error: false,
            timeout: false,
            header_timeout: false,
            statuses: 0,
            non_idempotent: false,
        };
        let tokens: Vec<&str> = v.split([' ', ',']).filter(|t| !t.is_empty()).collect();
        if tokens.is_empty() {
            return Err(format!("annotation {key}: the list is empty"));
        }
        for t in &tokens {
            match *t {
                "off" if tokens.len() == 1 => {}
                "error" | "invalid_header" => n.error = true,
                "timeout" => (n.timeout, n.header_timeout) = (true, true),
                "non_idempotent" => n.non_idempotent = true,
                s => match s
                    .strip_prefix("http_")
                    .and_then(|c| c.parse::<u16>().ok())
                    .and_then(|c| STATUSES.iter().position(|x| *x == c))
                {
                    Some(i) => n.statuses |= 1 << i,
                    None => {
                        return Err(format!(
                            "annotation {key}: {s:?} is not one of error, timeout, invalid_header, http_500, http_502, http_503, http_504, http_403, http_404, http_429, non_idempotent or off (alone)"
                        ))
                    }
                },
            }
        }
        Ok(n)
    }
}

/// What an Ingress's connect-timeout, retry and service-upstream annotations ask for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Retry {
    /// Time to connect to an endpoint, instead of `upstream.connectTimeout`.
    pub connect_timeout: Option<Duration>,
    pub next_upstream: NextUpstream,
    /// Tries per request, the first included.
    pub tries: u8,
    /// No further try once this long has passed since the first (`None`: no limit but the tries).
    pub retry_window: Option<Duration>,
    /// Send to the Service's ClusterIP and port instead of its endpoints.
    pub service_upstream: bool,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            connect_timeout: None,
            next_upstream: NextUpstream::DEFAULT,
            tries: DEFAULT_TRIES,
            retry_window: None,
            service_upstream: false,
        }
    }
}

impl Retry {
    pub fn from_meta(meta: &IngressMeta) -> Result<Self, String> {
        let next_upstream = match string_any(meta, &NEXT_UPSTREAM)? {
            None => NextUpstream::DEFAULT,
            Some(v) => NextUpstream::parse(NEXT_UPSTREAM[0], v)?,
        };
        let tries = match string_any(meta, &NEXT_UPSTREAM_TRIES)? {
            None => DEFAULT_TRIES,
            Some(v) => match v.parse::<u8>() {
                Ok(0) => MAX_TRIES,
                Ok(n) if n <= MAX_TRIES => n,
                _ => {
                    return Err(format!(
                        "annotation {}: {v:?} is not a number of tries from 0 (as many as allowed, {MAX_TRIES}) to {MAX_TRIES}",
                        NEXT_UPSTREAM_TRIES[0]
                    ))
                }
            },
        };
        // nginx's 0 means no limit.
        let retry_window = match string_any(meta, &NEXT_UPSTREAM_TIMEOUT)? {
            Some("0") => None,
            _ => timeout_any(meta, &NEXT_UPSTREAM_TIMEOUT)?,
        };
        let service_upstream = match string_any(meta, &SERVICE_UPSTREAM)? {
            None | Some("false") => false,
            Some("true") => true,
            Some(v) => {
                return Err(format!(
                    "annotation {}: {v:?} is not \"true\" or \"false\"",
                    SERVICE_UPSTREAM[0]
                ))
            }
        };
        Ok(Self {
            connect_timeout: timeout_any(meta, &CONNECT_TIMEOUT)?,
            next_upstream,
            tries,
            retry_window,
            service_upstream,
        })
    }

    /// Appends ` [..]` markers for `portico check` and fixtures.
    pub fn describe_into(&self, out: &mut String) {
        use std::fmt::Write;
        if let Some(t) = self.connect_timeout {
            let _ = write!(out, " [connect-timeout {}ms]", t.as_millis());
        }
        if self.next_upstream != NextUpstream::DEFAULT || self.tries != DEFAULT_TRIES || self.retry_window.is_some() {
            let n = &self.next_upstream;
            let mut on: Vec<String> = Vec::new();
            if n.error {
                on.push("error".into());
            }
            if n.timeout {
                on.push("timeout".into());
            }
            for (i, s) in STATUSES.iter().enumerate() {
                if n.statuses & (1 << i) != 0 {
                    on.push(format!("http_{s}"));
                }
            }
            if n.non_idempotent {
                on.push("non_idempotent".into());
            }
            let on = if on.is_empty() { "off".to_string() } else { on.join(",") };
            let _ = write!(out, " [retry {on} tries={}", self.tries);
            if let Some(w) = self.retry_window {
                let _ = write!(out, " within={}ms", w.as_millis());
            }
            out.push(']');
        }
        if self.service_upstream {
            out.push_str(" [service-upstream]");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::test_meta as meta;

    #[test]
    fn parses_nginx_values() {
        assert_eq!(Retry::from_meta(&IngressMeta::default()).unwrap(), Retry::default());
        let r = Retry::from_meta(&meta(&[
            ("nginx.ingress.kubernetes.io/proxy-connect-timeout", "2"),
            (
                "nginx.ingress.kubernetes.io/proxy-next-upstream",
                "error timeout http_503 non_idempotent",
            ),
            ("nginx.ingress.kubernetes.io/proxy-next-upstream-tries", "0"),
            ("nginx.ingress.kubernetes.io/proxy-next-upstream-timeout", "5"),
            ("nginx.ingress.kubernetes.io/service-upstream", "true"),
        ]))
        .unwrap();
        assert_eq!(r.connect_timeout, Some(Duration::from_secs(2)));
        assert!(r.next_upstream.error && r.next_upstream.timeout && r.next_upstream.non_idempotent);
        assert!(r.next_upstream.retries_status(503) && !r.next_upstream.retries_status(502));
        assert_eq!((r.tries, r.retry_window), (MAX_TRIES, Some(Duration::from_secs(5))));
        assert!(r.service_upstream);
        let off = Retry::from_meta(&meta(&[("nginx.ingress.kubernetes.io/proxy-next-upstream", "off")])).unwrap();
        assert_eq!(off.next_upstream.statuses, 0);
        assert!(!off.next_upstream.error && !off.next_upstream.timeout);
        let unlimited = Retry::from_meta(&meta(&[(
            "nginx.ingress.kubernetes.io/proxy-next-upstream-timeout",
            "0",
        )]))
        .unwrap();
        assert_eq!(unlimited.retry_window, None);
        for (pairs, needle) in [
            (
                vec![("nginx.ingress.kubernetes.io/proxy-next-upstream", "error http_418")],
                "is not one of",
            ),
            (
                vec![("nginx.ingress.kubernetes.io/proxy-next-upstream", "off error")],
                "is not one of",
            ),
            (
                vec![("nginx.ingress.kubernetes.io/proxy-next-upstream-tries", "50")],
                "number of tries",
            ),
            (
                vec![("nginx.ingress.kubernetes.io/proxy-connect-timeout", "soon")],
                "not a duration",
            ),
            (
                vec![("nginx.ingress.kubernetes.io/service-upstream", "yes")],
                "not \"true\"",
            ),
        ] {
            let e = Retry::from_meta(&meta(&pairs)).unwrap_err();
            assert!(e.contains(needle), "{pairs:?}: {e}");
        }
    }
}
