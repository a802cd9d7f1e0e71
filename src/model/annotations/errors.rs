//! Custom error pages: `custom-http-errors` (the status codes) and `default-backend` (the Service that serves the
//! page, in the Ingress's namespace), under ingress-nginx's names and `portico.dev/`. Runtime home: the route's
//! `Filter::ErrorPages`, acting in the respond phase (`proxy::errors`); the error Service is one more backend of
//! the route (weight 0, never chosen for the request itself). The listener-set twin is `errorPages`
//! (`config.rs`), which translation gives to every Ingress of the set that names no error pages of its own.
//!
//! The Service is resolved by translation (`Translator::error_pages`): a missing one disables the Ingress.

use super::{string_any, IngressMeta};
use crate::model::BackendModel;

pub const CUSTOM_HTTP_ERRORS: [&str; 2] = [
    "portico.dev/custom-http-errors",
    "nginx.ingress.kubernetes.io/custom-http-errors",
];
pub const DEFAULT_BACKEND: [&str; 2] = [
    "portico.dev/default-backend",
    "nginx.ingress.kubernetes.io/default-backend",
];

/// A route's error pages (`IngressPolicy::error_pages`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorPages {
    /// Sorted, unique, each in 400..=599.
    pub codes: Vec<u16>,
    /// Upstream answers with these codes are replaced too; `false` only for `default-backend` alone, which (as in
    /// ingress-nginx, where it stands in for a Service without endpoints) covers the gateway's own 503.
    pub upstream: bool,
    /// `default-backend`: a Service of the Ingress's namespace and its port (`None`: the Service's first port).
    /// `None`: the listener set's error backend.
    pub service: Option<(String, Option<String>)>,
    /// The error Service as translation resolved it (set by `Translator::error_pages`).
    pub backend: Option<BackendModel>,
}

impl ErrorPages {
    pub fn describe_into(&self, out: &mut String) {
        use std::fmt::Write;
        let codes: Vec<String> = self.codes.iter().map(u16::to_string).collect();
        let _ = write!(out, " [error-pages {}", codes.join(","));
        if !self.upstream {
            out.push_str(" (gateway's own)");
        }
        if let Some(b) = &self.backend {
            let _ = write!(out, " -> {b}");
        }
        out.push(']');
    }
}

/// A list of status codes, `404,503` (ingress-nginx's form): each 400..=599; sorted and unique.
pub fn parse_codes(v: &str) -> Result<Vec<u16>, String> {
    let mut codes = Vec::new();
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let code: u16 = part
            .parse()
            .ok()
            .filter(|c| (400..=599).contains(c))
            .ok_or_else(|| format!("{part:?} is not a status code from 400 to 599"))?;
        codes.push(code);
    }
    if codes.is_empty() {
        return Err("the list of status codes is empty".into());
    }
    codes.sort_unstable();
    codes.dedup();
    Ok(codes)
}

/// `NAME` or `NAME:PORT` (a number or a port name): a Service name is a DNS label.
pub fn parse_service(v: &str) -> Result<(String, Option<String>), String> {
    let (name, port) = match v.split_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (v, None),
    };
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    };
    if !label(name) {
        return Err(format!(
            "{v:?} is not a Service name of the Ingress's namespace (NAME or NAME:PORT)"
        ));
    }
    if let Some(p) = port {
        let numeric = !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        let ok = if numeric {
            p.parse::<u16>().is_ok_and(|n| n > 0)
        } else {
            label(p)
        };
        if !ok {
            return Err(format!("{v:?}: the port {p:?} is not a port number or name"));
        }
    }
    Ok((name.to_string(), port.map(str::to_string)))
}

/// The error pages an Ingress asks for (`None`: none of its own).
pub fn from_meta(meta: &IngressMeta) -> Result<Option<ErrorPages>, String> {
    let codes = string_any(meta, &CUSTOM_HTTP_ERRORS)?
        .map(|v| parse_codes(v).map_err(|e| format!("annotation {}: {e}", CUSTOM_HTTP_ERRORS[0])))
        .transpose()?;
    let service = string_any(meta, &DEFAULT_BACKEND)?
        .map(|v| parse_service(v).map_err(|e| format!("annotation {}: {e}", DEFAULT_BACKEND[0])))
        .transpose()?;
    Ok(match (codes, service) {
        (None, None) => None,
        (Some(codes), service) => Some(ErrorPages {
            codes,
            upstream: true,
            service,
            backend: None,
        }),
        (None, Some(service)) => Some(ErrorPages {
            codes: vec![503],
            upstream: false,
            service: Some(service),
            backend: None,
        }),
    })
}

/// The error Service an Ingress's annotations name, for dependency tracking (`None` on a bad value: the Ingress
/// is not served anyway).
pub fn service_name(meta: &IngressMeta) -> Option<String> {
    let v = string_any(meta, &DEFAULT_BACKEND).ok()??;
    parse_service(v).ok().map(|(n, _)| n)
}

#[cfg(test)]
mod tests {
    use super::super::test_meta as meta;
    use super::*;

    #[test]
    fn parses_both_names_and_refuses_bad_values() {
        assert_eq!(from_meta(&meta(&[])).unwrap(), None);
        let e = from_meta(&meta(&[
            ("nginx.ingress.kubernetes.io/custom-http-errors", "503, 404,404"),
            ("nginx.ingress.kubernetes.io/default-backend", "errors:8080"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(e.codes, [404, 503]);
        assert!(e.upstream);
        assert_eq!(e.service, Some(("errors".into(), Some("8080".into()))));
        let e = from_meta(&meta(&[("portico.dev/default-backend", "errors")]))
            .unwrap()
            .unwrap();
        assert_eq!((e.codes.as_slice(), e.upstream), (&[503][..], false));
        let e = from_meta(&meta(&[("portico.dev/custom-http-errors", "500")]))
            .unwrap()
            .unwrap();
        assert_eq!(e.service, None);
        for (k, v) in [
            ("portico.dev/custom-http-errors", ""),
            ("portico.dev/custom-http-errors", "200"),
            ("portico.dev/custom-http-errors", "404,abc"),
            ("portico.dev/default-backend", "other/errors"),
            ("portico.dev/default-backend", "Errors"),
            ("portico.dev/default-backend", "errors:0"),
            ("portico.dev/default-backend", "errors:"),
        ] {
            let e = from_meta(&meta(&[(k, v)])).unwrap_err();
            assert!(e.contains(k), "{v}: {e}");
        }
        let e = from_meta(&meta(&[
            ("portico.dev/custom-http-errors", "404"),
            ("nginx.ingress.kubernetes.io/custom-http-errors", "503"),
        ]))
        .unwrap_err();
        assert!(e.contains("disagree"), "{e}");
    }
}
