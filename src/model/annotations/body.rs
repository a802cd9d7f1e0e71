//! The client's request body: `proxy-body-size` (413 above it) and `proxy-send-timeout` (the longest pause
//! between two pieces of it). Runtime homes: the route's `BodyLimit` filter, and the Ingress's entry in
//! `upstream::policy` for the timeout.

use std::time::Duration;

use super::{string_any, timeout_any, IngressMeta};

pub const BODY_SIZE: [&str; 2] = [
    "portico.dev/proxy-body-size",
    "nginx.ingress.kubernetes.io/proxy-body-size",
];
pub const REQUEST_BODY_TIMEOUT: [&str; 2] = [
    "portico.dev/request-body-timeout",
    "nginx.ingress.kubernetes.io/proxy-send-timeout",
];

/// Limits on the request body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestBody {
    /// Largest request body accepted (413 above it); `None`: no limit.
    pub max_bytes: Option<u64>,
    /// Longest pause between two pieces of the client's request body, replacing the listener set's default.
    pub timeout: Option<Duration>,
}

impl RequestBody {
    pub fn from_meta(meta: &IngressMeta) -> Result<Self, String> {
        Ok(Self {
            max_bytes: match string_any(meta, &BODY_SIZE)? {
                None => None,
                Some(v) => parse_size(BODY_SIZE[0], v)?,
            },
            timeout: timeout_any(meta, &REQUEST_BODY_TIMEOUT)?,
        })
    }

    /// Appends ` [..]` markers for what differs from the defaults.
    pub fn describe_into(&self, out: &mut String) {
        use std::fmt::Write;
        if let Some(b) = self.max_bytes {
            let _ = write!(out, " [max-body {b}]");
        }
        if let Some(t) = self.timeout {
            let _ = write!(out, " [body-timeout {}ms]", t.as_millis());
        }
    }
}

/// `8m`, `512k`, `1g`, `1024` (bytes); `0` means no limit.
fn parse_size(key: &str, v: &str) -> Result<Option<u64>, String> {
    let lower = v.to_ascii_lowercase();
    let (num, mult) = match lower.char_indices().last() {
        Some((i, 'k')) => (&lower[..i], 1u64 << 10),
        Some((i, 'm')) => (&lower[..i], 1 << 20),
        Some((i, 'g')) => (&lower[..i], 1 << 30),
        _ => (lower.as_str(), 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("annotation {key}: {v:?} is not a size like 8m, 512k or 1g"))?;
    Ok((n > 0).then(|| n.saturating_mul(mult)))
}
