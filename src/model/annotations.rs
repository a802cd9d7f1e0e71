//! Typed Ingress annotations. Each is parsed and checked here; a bad value disables the whole Ingress with a
//! reason (never a half-applied policy). Portico's own names live under `portico.dev/`; ingress-nginx's names
//! are accepted for the same features where they mean the same thing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub const SSL_REDIRECT: [&str; 2] = ["portico.dev/ssl-redirect", "nginx.ingress.kubernetes.io/ssl-redirect"];
pub const FORCE_SSL_REDIRECT: [&str; 2] = [
    "portico.dev/force-ssl-redirect",
    "nginx.ingress.kubernetes.io/force-ssl-redirect",
];
pub const HSTS_MAX_AGE: &str = "portico.dev/hsts-max-age";
pub const HSTS_INCLUDE_SUBDOMAINS: &str = "portico.dev/hsts-include-subdomains";
pub const HSTS_PRELOAD: &str = "portico.dev/hsts-preload";

/// What an Ingress's annotations ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressPolicy {
    /// Redirect plain HTTP to HTTPS for hosts with TLS (default true).
    pub ssl_redirect: bool,
    /// Redirect plain HTTP to HTTPS even for hosts without TLS here (TLS terminated elsewhere).
    pub force_ssl_redirect: bool,
    /// The `Strict-Transport-Security` value sent on HTTPS responses, if enabled.
    pub hsts: Option<String>,
}

impl Default for IngressPolicy {
    fn default() -> Self {
        Self {
            ssl_redirect: true,
            force_ssl_redirect: false,
            hsts: None,
        }
    }
}

fn get<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(|s| s.trim())
}

fn boolean(meta: &ObjectMeta, key: &str) -> Result<Option<bool>, String> {
    match get(meta, key) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(v) => Err(format!("annotation {key}: {v:?} is not \"true\" or \"false\"")),
    }
}

/// The first of several equivalent annotations that is set; two set to different values is an error.
fn boolean_any(meta: &ObjectMeta, keys: &[&str]) -> Result<Option<bool>, String> {
    let mut found: Option<(bool, &str)> = None;
    for k in keys {
        if let Some(v) = boolean(meta, k)? {
            match found {
                Some((prev, pk)) if prev != v => {
                    return Err(format!("annotations {pk} and {k} disagree"));
                }
                _ => found = Some((v, k)),
            }
        }
    }
    Ok(found.map(|f| f.0))
}

impl IngressPolicy {
    pub fn from_meta(meta: &ObjectMeta) -> Result<Self, String> {
        let d = Self::default();
        let ssl_redirect = boolean_any(meta, &SSL_REDIRECT)?.unwrap_or(d.ssl_redirect);
        let force_ssl_redirect = boolean_any(meta, &FORCE_SSL_REDIRECT)?.unwrap_or(d.force_ssl_redirect);
        let include_sub = boolean(meta, HSTS_INCLUDE_SUBDOMAINS)?;
        let preload = boolean(meta, HSTS_PRELOAD)?;
        let hsts = match get(meta, HSTS_MAX_AGE) {
            None => {
                if include_sub.is_some() || preload.is_some() {
                    return Err(format!("annotation {HSTS_MAX_AGE} is required to enable HSTS"));
                }
                None
            }
            Some(v) => {
                let secs: u64 = v
                    .parse()
                    .map_err(|_| format!("annotation {HSTS_MAX_AGE}: {v:?} is not a number of seconds"))?;
                let mut h = format!("max-age={secs}");
                if include_sub == Some(true) {
                    h.push_str("; includeSubDomains");
                }
                if preload == Some(true) {
                    h.push_str("; preload");
                }
                Some(h)
            }
        };
        Ok(Self {
            ssl_redirect,
            force_ssl_redirect,
            hsts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            annotations: Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_and_values() {
        assert_eq!(
            IngressPolicy::from_meta(&ObjectMeta::default()).unwrap(),
            IngressPolicy::default()
        );
        let p = IngressPolicy::from_meta(&meta(&[
            ("nginx.ingress.kubernetes.io/ssl-redirect", "false"),
            ("portico.dev/force-ssl-redirect", "true"),
            ("portico.dev/hsts-max-age", "31536000"),
            ("portico.dev/hsts-include-subdomains", "true"),
        ]))
        .unwrap();
        assert!(!p.ssl_redirect && p.force_ssl_redirect);
        assert_eq!(p.hsts.as_deref(), Some("max-age=31536000; includeSubDomains"));
    }

    #[test]
    fn bad_values_are_reasons() {
        for (pairs, needle) in [
            (vec![("portico.dev/ssl-redirect", "yes")], "not \"true\""),
            (
                vec![
                    ("portico.dev/ssl-redirect", "true"),
                    ("nginx.ingress.kubernetes.io/ssl-redirect", "false"),
                ],
                "disagree",
            ),
            (vec![("portico.dev/hsts-max-age", "1y")], "seconds"),
            (vec![("portico.dev/hsts-preload", "true")], "required"),
        ] {
            let e = IngressPolicy::from_meta(&meta(&pairs)).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }
}
