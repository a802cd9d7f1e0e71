//! Rate and connection limits per client address, by ingress-nginx's names: `limit-rps`, `limit-rpm`,
//! `limit-connections`, `limit-burst-multiplier` (default 5), `limit-whitelist` (or `limit-allowlist`: networks
//! exempt from every limit), and Portico's `portico.dev/limit-status` (the answer over a limit: 503 by default as
//! ingress-nginx, 429 recommended). Runtime home: the route's `Filter::RateLimit` (`proxy/traffic.rs`) with its
//! buckets in the route's kept slot (`snapshot::Kept`, `crate::ratelimit`).
//!
//! Limits are per replica and per route (each of the Ingress's paths counts apart), keyed by the real client
//! address (after PROXY protocol and trusted forwarding headers).

use super::{string_any, IngressMeta};
use crate::cidr::Cidr;

pub const RPS: [&str; 2] = ["portico.dev/limit-rps", "nginx.ingress.kubernetes.io/limit-rps"];
pub const RPM: [&str; 2] = ["portico.dev/limit-rpm", "nginx.ingress.kubernetes.io/limit-rpm"];
pub const CONNECTIONS: [&str; 2] = [
    "portico.dev/limit-connections",
    "nginx.ingress.kubernetes.io/limit-connections",
];
pub const BURST_MULTIPLIER: [&str; 2] = [
    "portico.dev/limit-burst-multiplier",
    "nginx.ingress.kubernetes.io/limit-burst-multiplier",
];
pub const ALLOWLIST: [&str; 3] = [
    "portico.dev/limit-allowlist",
    "nginx.ingress.kubernetes.io/limit-whitelist",
    "nginx.ingress.kubernetes.io/limit-allowlist",
];
pub const STATUS: &str = "portico.dev/limit-status";

/// ingress-nginx's burst multiplier.
pub const DEFAULT_BURST_MULTIPLIER: u32 = 5;
/// ingress-nginx's `limit-req-status-code` and `limit-conn-status-code` defaults.
pub const DEFAULT_STATUS: u16 = 503;

/// What an Ingress's limit annotations ask for (`IngressPolicy::limit`, `None` without a limit).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Requests per second, with a burst of `rps × burst_multiplier` above it.
    pub rps: Option<u32>,
    /// Requests per minute, with a burst of `rpm × burst_multiplier` above it.
    pub rpm: Option<u32>,
    /// Requests in flight at once.
    pub connections: Option<u32>,
    pub burst_multiplier: u32,
    /// Clients exempt from every limit.
    pub allowlist: Vec<Cidr>,
    /// The status over a limit.
    pub status: u16,
}

fn count(meta: &IngressMeta, keys: &[&str]) -> Result<Option<u32>, String> {
    match string_any(meta, keys)? {
        None => Ok(None),
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(|| format!("annotation {}: {v:?} is not a whole number above 0", keys[0])),
    }
}

impl Limits {
    pub fn from_meta(meta: &IngressMeta) -> Result<Option<Self>, String> {
        let rps = count(meta, &RPS)?;
        let rpm = count(meta, &RPM)?;
        let connections = count(meta, &CONNECTIONS)?;
        let burst_multiplier = count(meta, &BURST_MULTIPLIER)?;
        let allowlist = match string_any(meta, &ALLOWLIST)? {
            None => None,
            Some(v) => Some(Cidr::parse_list(v).map_err(|e| format!("annotation {}: {e}", ALLOWLIST[0]))?),
        };
        let status = match super::get(meta, STATUS) {
            None => None,
            Some(v) => Some(
                v.parse::<u16>()
                    .ok()
                    .filter(|s| (400..=599).contains(s))
                    .ok_or_else(|| format!("annotation {STATUS}: {v:?} is not a status from 400 to 599"))?,
            ),
        };
        if rps.is_none() && rpm.is_none() && connections.is_none() {
            let stray = [&BURST_MULTIPLIER[..], &ALLOWLIST, &[STATUS]]
                .concat()
                .into_iter()
                .find(|k| super::get(meta, k).is_some());
            return match stray {
                Some(k) => Err(format!(
                    "annotation {k} needs a limit: {}, {} or {}",
                    RPS[0], RPM[0], CONNECTIONS[0]
                )),
                None => Ok(None),
            };
        }
        Ok(Some(Self {
            rps,
            rpm,
            connections,
            burst_multiplier: burst_multiplier.unwrap_or(DEFAULT_BURST_MULTIPLIER),
            allowlist: allowlist.unwrap_or_default(),
            status: status.unwrap_or(DEFAULT_STATUS),
        }))
    }

    /// For `portico check` and fixtures.
    pub fn describe_into(&self, out: &mut String) {
        use std::fmt::Write;
        out.push_str(" [limit");
        if let Some(n) = self.rps {
            let _ = write!(out, " rps={n}");
        }
        if let Some(n) = self.rpm {
            let _ = write!(out, " rpm={n}");
        }
        if let Some(n) = self.connections {
            let _ = write!(out, " connections={n}");
        }
        let _ = write!(out, " burst×{} status={}", self.burst_multiplier, self.status);
        if !self.allowlist.is_empty() {
            let _ = write!(out, " exempt={}", self.allowlist.len());
        }
        out.push(']');
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_meta as meta;
    use super::*;

    #[test]
    fn values_and_defaults() {
        assert_eq!(Limits::from_meta(&meta(&[])).unwrap(), None);
        let l = Limits::from_meta(&meta(&[
            ("nginx.ingress.kubernetes.io/limit-rps", "5"),
            ("nginx.ingress.kubernetes.io/limit-whitelist", "10.0.0.0/8, 192.168.1.1"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((l.rps, l.rpm, l.connections), (Some(5), None, None));
        assert_eq!((l.burst_multiplier, l.status), (5, 503));
        assert_eq!(l.allowlist.len(), 2);
        let l = Limits::from_meta(&meta(&[
            ("portico.dev/limit-connections", "2"),
            ("portico.dev/limit-status", "429"),
            ("portico.dev/limit-burst-multiplier", "1"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((l.connections, l.status, l.burst_multiplier), (Some(2), 429, 1));
    }

    #[test]
    fn bad_values_name_the_annotation() {
        for (k, v) in [
            ("nginx.ingress.kubernetes.io/limit-rps", "0"),
            ("nginx.ingress.kubernetes.io/limit-rpm", "1.5"),
            ("nginx.ingress.kubernetes.io/limit-connections", "-1"),
            ("nginx.ingress.kubernetes.io/limit-burst-multiplier", "x"),
            ("nginx.ingress.kubernetes.io/limit-whitelist", "10.0.0.0/33"),
            ("portico.dev/limit-status", "200"),
        ] {
            let e = Limits::from_meta(&meta(&[("portico.dev/limit-rpm", "60"), (k, v)])).unwrap_err();
            let short = k.rsplit('/').next().unwrap().replace("whitelist", "allowlist");
            assert!(e.contains(&short), "{k}={v}: {e}");
        }
        let e = Limits::from_meta(&meta(&[("nginx.ingress.kubernetes.io/limit-whitelist", "10.0.0.0/8")])).unwrap_err();
        assert!(e.contains("needs a limit"), "{e}");
    }
}
