//! Source denylists: `denylist-source-range` (and `portico.dev/deny-source-ranges`): clients in these networks get
//! 403, whatever an allowlist says (deny wins). Runtime home: the route's `Filter::DenySources`, checked before the
//! allowlist; the listener-set twin is `denySourceRanges` (`config.rs`), checked when a request is admitted.

use super::{string_any, IngressMeta};
use crate::cidr::Cidr;

pub const DENY_SOURCE_RANGES: [&str; 2] = [
    "portico.dev/deny-source-ranges",
    "nginx.ingress.kubernetes.io/denylist-source-range",
];

/// The networks an Ingress refuses (`IngressPolicy::deny_source_ranges`).
pub fn from_meta(meta: &IngressMeta) -> Result<Option<Vec<Cidr>>, String> {
    let Some(list) = string_any(meta, &DENY_SOURCE_RANGES)? else {
        return Ok(None);
    };
    let cidrs = Cidr::parse_list(list).map_err(|e| format!("annotation {}: {e}", DENY_SOURCE_RANGES[0]))?;
    if cidrs.is_empty() {
        return Err(format!("annotation {}: the list is empty", DENY_SOURCE_RANGES[0]));
    }
    Ok(Some(cidrs))
}

#[cfg(test)]
mod tests {
    use super::super::test_meta as meta;
    use super::*;

    #[test]
    fn parses_and_refuses_bad_lists() {
        assert_eq!(from_meta(&meta(&[])).unwrap(), None);
        let d = from_meta(&meta(&[(
            "nginx.ingress.kubernetes.io/denylist-source-range",
            "10.0.0.0/8,2001:db8::/32",
        )]))
        .unwrap()
        .unwrap();
        assert_eq!(d.len(), 2);
        for v in ["", " , ", "10.0.0.300/8"] {
            let e = from_meta(&meta(&[("portico.dev/deny-source-ranges", v)])).unwrap_err();
            assert!(e.contains("portico.dev/deny-source-ranges"), "{v}: {e}");
        }
        let e = from_meta(&meta(&[
            ("portico.dev/deny-source-ranges", "10.0.0.0/8"),
            ("nginx.ingress.kubernetes.io/denylist-source-range", "10.0.0.0/16"),
        ]))
        .unwrap_err();
        assert!(e.contains("disagree"), "{e}");
    }
}
