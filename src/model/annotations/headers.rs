//! Header edits: the Host sent upstream (`upstream-vhost`, `portico.dev/pass-host`), `x-forwarded-prefix`, and
//! `portico.dev/request-headers-*` / `response-headers-*`. Runtime homes: the route's filters (`RequestHeaders`,
//! `ResponseHeaders`) and its send policy (the upstream Host).

use super::{boolean, header_lines, header_list, header_value, string_any, IngressMeta};

pub const UPSTREAM_HOST: [&str; 2] = [
    "portico.dev/upstream-host",
    "nginx.ingress.kubernetes.io/upstream-vhost",
];
pub const PASS_HOST: &str = "portico.dev/pass-host";
pub const FORWARDED_PREFIX: [&str; 2] = [
    "portico.dev/x-forwarded-prefix",
    "nginx.ingress.kubernetes.io/x-forwarded-prefix",
];
pub const REQUEST_HEADERS_SET: &str = "portico.dev/request-headers-set";
pub const REQUEST_HEADERS_ADD: &str = "portico.dev/request-headers-add";
pub const REQUEST_HEADERS_REMOVE: &str = "portico.dev/request-headers-remove";
pub const RESPONSE_HEADERS_SET: &str = "portico.dev/response-headers-set";
pub const RESPONSE_HEADERS_REMOVE: &str = "portico.dev/response-headers-remove";

/// What an Ingress changes in the headers it sends upstream and returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderEdits {
    /// The Host header sent upstream instead of the client's.
    pub upstream_host: Option<String>,
    /// Send the client's Host upstream (default); `false` sends the endpoint's address instead.
    pub pass_host: bool,
    /// `X-Forwarded-Prefix` sent upstream.
    pub forwarded_prefix: Option<String>,
    /// Request headers set (replacing), added (appending) and removed, applied after the gateway's own.
    pub request_set: Vec<(String, String)>,
    pub request_add: Vec<(String, String)>,
    pub request_remove: Vec<String>,
    /// Response headers set and removed.
    pub response_set: Vec<(String, String)>,
    pub response_remove: Vec<String>,
}

impl Default for HeaderEdits {
    fn default() -> Self {
        Self {
            upstream_host: None,
            pass_host: true,
            forwarded_prefix: None,
            request_set: Vec::new(),
            request_add: Vec::new(),
            request_remove: Vec::new(),
            response_set: Vec::new(),
            response_remove: Vec::new(),
        }
    }
}

impl HeaderEdits {
    pub fn from_meta(meta: &IngressMeta) -> Result<Self, String> {
        let upstream_host = match string_any(meta, &UPSTREAM_HOST)? {
            None => None,
            Some(h) => {
                if crate::normalize::normalize_host(h).is_err() {
                    return Err(format!(
                        "annotation {}: {h:?} is not a host name (with an optional port)",
                        UPSTREAM_HOST[0]
                    ));
                }
                Some(h.to_string())
            }
        };
        let forwarded_prefix = match string_any(meta, &FORWARDED_PREFIX)? {
            None => None,
            Some(p) => Some(header_value(FORWARDED_PREFIX[0], p)?),
        };
        Ok(Self {
            upstream_host,
            pass_host: boolean(meta, PASS_HOST)?.unwrap_or(true),
            forwarded_prefix,
            request_set: header_lines(meta, REQUEST_HEADERS_SET)?,
            request_add: header_lines(meta, REQUEST_HEADERS_ADD)?,
            request_remove: header_list(meta, REQUEST_HEADERS_REMOVE)?,
            response_set: header_lines(meta, RESPONSE_HEADERS_SET)?,
            response_remove: header_list(meta, RESPONSE_HEADERS_REMOVE)?,
        })
    }

    /// Appends ` [..]` markers for what differs from the defaults.
    pub fn describe_into(&self, out: &mut String) {
        use std::fmt::Write;
        if let Some(h) = &self.upstream_host {
            let _ = write!(out, " [upstream-host {h}]");
        }
        if !self.pass_host {
            out.push_str(" [no pass-host]");
        }
        let edits = self.request_set.len()
            + self.request_add.len()
            + self.request_remove.len()
            + self.response_set.len()
            + self.response_remove.len()
            + usize::from(self.forwarded_prefix.is_some());
        if edits > 0 {
            let _ = write!(out, " [{edits} header edits]");
        }
    }
}
