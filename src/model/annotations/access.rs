//! Who may use an Ingress: `allow-source-ranges` (ingress-nginx's `whitelist-source-range` /
//! `allowlist-source-range`). Runtime home: the route's first filter (`AllowSources`), which answers 403.

use super::{string_any, IngressMeta};
use crate::cidr::Cidr;

pub const ALLOW_SOURCE_RANGES: [&str; 3] = [
    "portico.dev/allow-source-ranges",
    "nginx.ingress.kubernetes.io/whitelist-source-range",
    "nginx.ingress.kubernetes.io/allowlist-source-range",
];

/// Client address rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Access {
    /// Only clients in these networks are served (403 otherwise).
    pub allow_source_ranges: Option<Vec<Cidr>>,
}

impl Access {
    pub fn from_meta(meta: &IngressMeta) -> Result<Self, String> {
        let allow_source_ranges = match string_any(meta, &ALLOW_SOURCE_RANGES)? {
            None => None,
            Some(list) => {
                let cidrs =
                    Cidr::parse_list(list).map_err(|e| format!("annotation {}: {e}", ALLOW_SOURCE_RANGES[0]))?;
                if cidrs.is_empty() {
                    return Err(format!("annotation {}: the list is empty", ALLOW_SOURCE_RANGES[0]));
                }
                Some(cidrs)
            }
        };
        Ok(Self { allow_source_ranges })
    }

    /// Appends ` [..]` markers for what differs from the defaults.
    pub fn describe_into(&self, out: &mut String) {
        use std::fmt::Write;
        if let Some(a) = &self.allow_source_ranges {
            let list: Vec<String> = a.iter().map(|c| c.to_string()).collect();
            let _ = write!(out, " [allow {}]", list.join(","));
        }
    }
}
