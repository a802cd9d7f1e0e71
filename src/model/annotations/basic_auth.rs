//! Basic auth by ingress-nginx's names (`auth-type: basic`, `auth-secret`, `auth-secret-type`, `auth-realm`) and
//! Portico's (`portico.dev/auth-*`). Runtime home: the route's `BasicAuth` filter (`model::auth`), run by the
//! proxy (`proxy/auth.rs`).
//!
//! - `auth-type`: `basic` (`digest` is refused: nginx's own build cannot do it either).
//! - `auth-secret`: the Secret, `name` or `namespace/name` in the Ingress's own namespace (another namespace is
//!   refused). Any Secret type; the kube source watches `Opaque` Secrets for this.
//! - `auth-secret-type`: `auth-file` (default: key `auth` holds htpasswd lines) or `auth-map` (each key is a
//!   user, its value the hash).
//! - `auth-realm`: the realm of `WWW-Authenticate: Basic realm="..."`.
//!
//! The Secret is read by translation ([`BasicAuth::resolve`]); a missing Secret, a missing key or a line with a
//! hash Portico cannot check (plain text, crypt) disables the Ingress with a diagnostic naming the Secret.

use super::{get, string_any, IngressMeta};
use crate::htpasswd::Users;

pub const TYPE: [&str; 2] = ["portico.dev/auth-type", "nginx.ingress.kubernetes.io/auth-type"];
pub const SECRET: [&str; 2] = ["portico.dev/auth-secret", "nginx.ingress.kubernetes.io/auth-secret"];
pub const SECRET_TYPE: [&str; 2] = [
    "portico.dev/auth-secret-type",
    "nginx.ingress.kubernetes.io/auth-secret-type",
];
pub const REALM: [&str; 2] = ["portico.dev/auth-realm", "nginx.ingress.kubernetes.io/auth-realm"];

/// The key of an `auth-file` Secret.
pub const FILE_KEY: &str = "auth";

/// What an Ingress's basic auth annotations ask for; `users` is filled by [`BasicAuth::resolve`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BasicAuth {
    /// The Secret's name, in the Ingress's namespace.
    pub secret: String,
    /// `auth-map` (else `auth-file`).
    pub map: bool,
    pub realm: String,
    /// Read from the Secret by translation; empty until then (nobody gets in).
    pub users: Users,
}

impl BasicAuth {
    /// `None` without `auth-type`.
    pub fn parse(meta: &IngressMeta) -> Result<Option<Self>, String> {
        let Some(kind) = string_any(meta, &TYPE)? else {
            if let Some(k) = [SECRET, SECRET_TYPE, REALM]
                .iter()
                .flatten()
                .find(|k| get(meta, k).is_some())
            {
                return Err(format!("annotation {k} needs {}: basic", TYPE[0]));
            }
            return Ok(None);
        };
        if !kind.eq_ignore_ascii_case("basic") {
            return Err(format!(
                "annotation {}: {kind:?} is not supported; only \"basic\" is",
                TYPE[0]
            ));
        }
        let ns = meta.namespace.as_deref().unwrap_or("default");
        let secret = match string_any(meta, &SECRET)? {
            None => return Err(format!("annotation {} needs {}", TYPE[0], SECRET[0])),
            Some(v) => {
                let name = match v.split_once('/') {
                    None => v,
                    Some((n, name)) if n == ns => name,
                    Some((n, _)) => {
                        return Err(format!(
                            "annotation {}: Secret {v} is in namespace {n}; only Secrets in the Ingress's namespace {ns} can be used",
                            SECRET[0]
                        ))
                    }
                };
                if name.is_empty() || name.contains('/') {
                    return Err(format!("annotation {}: {v:?} is not a Secret name", SECRET[0]));
                }
                name.to_string()
            }
        };
        let map = match string_any(meta, &SECRET_TYPE)? {
            None | Some("auth-file") => false,
            Some("auth-map") => true,
            Some(v) => {
                return Err(format!(
                    "annotation {}: {v:?} is not \"auth-file\" or \"auth-map\"",
                    SECRET_TYPE[0]
                ))
            }
        };
        let realm = string_any(meta, &REALM)?.unwrap_or("").to_string();
        if realm.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
            return Err(format!(
                "annotation {}: {realm:?} may not hold quotes, backslashes or control characters",
                REALM[0]
            ));
        }
        Ok(Some(Self {
            secret,
            map,
            realm,
            users: Users::default(),
        }))
    }

    /// Reads the users from the Secret among `secrets` (pure; translation calls it).
    pub fn resolve(&mut self, namespace: &str, secrets: &[k8s_openapi::api::core::v1::Secret]) -> Result<(), String> {
        let name = &self.secret;
        let what = format!("auth Secret {namespace}/{name} (annotation {})", SECRET[0]);
        let secret = secrets
            .iter()
            .find(|s| {
                s.metadata.namespace.as_deref().unwrap_or("default") == namespace
                    && s.metadata.name.as_deref() == Some(name)
            })
            .ok_or_else(|| format!("{what} not found"))?;
        // `stringData` (manifests written by hand) wins over `data`, as the API server merges them.
        let mut entries: std::collections::BTreeMap<&str, &[u8]> = std::collections::BTreeMap::new();
        for (k, v) in secret.data.iter().flatten() {
            entries.insert(k, &v.0);
        }
        for (k, v) in secret.string_data.iter().flatten() {
            entries.insert(k, v.as_bytes());
        }
        fn text<'v>(what: &str, k: &str, v: &'v [u8]) -> Result<&'v str, String> {
            std::str::from_utf8(v).map_err(|_| format!("{what}: key {k} is not UTF-8"))
        }
        let users = if self.map {
            let mut users = Users::default();
            for (user, hash) in &entries {
                users
                    .push_entry(user, text(&what, user, hash)?)
                    .map_err(|e| format!("{what}: key {user}: {e}"))?;
            }
            users
        } else {
            let file = entries
                .get(FILE_KEY)
                .ok_or_else(|| format!("{what} has no key {FILE_KEY} (auth-file)"))?;
            Users::parse_htpasswd(text(&what, FILE_KEY, file)?).map_err(|e| format!("{what}: key {FILE_KEY}: {e}"))?
        };
        if users.is_empty() {
            return Err(format!("{what} lists no user"));
        }
        self.users = users;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_meta as meta;
    use super::*;

    fn secret(ns: &str, name: &str, data: &[(&str, &str)]) -> k8s_openapi::api::core::v1::Secret {
        k8s_openapi::api::core::v1::Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            string_data: Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            type_: Some("Opaque".into()),
            ..Default::default()
        }
    }

    const SHA: &str = "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=";

    #[test]
    fn parse_and_resolve() {
        let mut m = meta(&[
            ("nginx.ingress.kubernetes.io/auth-type", "basic"),
            ("nginx.ingress.kubernetes.io/auth-secret", "shop/users"),
            ("nginx.ingress.kubernetes.io/auth-realm", "Shop staff"),
        ]);
        m.namespace = Some("shop".into());
        let mut b = BasicAuth::parse(&m).unwrap().unwrap();
        assert_eq!(
            (b.secret.as_str(), b.map, b.realm.as_str()),
            ("users", false, "Shop staff")
        );
        let e = b.resolve("shop", &[]).unwrap_err();
        assert!(e.contains("shop/users") && e.contains("not found"), "{e}");
        let line = format!("alice:{SHA}\n");
        b.resolve("shop", &[secret("shop", "users", &[("auth", &line)])])
            .unwrap();
        assert!(b.users.get("alice").is_some());
        let e = b
            .resolve("shop", &[secret("shop", "users", &[("auth", "bob:hunter2\n")])])
            .unwrap_err();
        assert!(
            e.contains("shop/users") && e.contains("line 1") && e.contains("plain-text"),
            "{e}"
        );
        let e = b
            .resolve("shop", &[secret("shop", "users", &[("other", "x")])])
            .unwrap_err();
        assert!(e.contains("no key auth"), "{e}");
        b.map = true;
        b.resolve("shop", &[secret("shop", "users", &[("carol", SHA)])])
            .unwrap();
        assert!(b.users.get("carol").is_some());
    }

    #[test]
    fn refusals_name_the_annotation() {
        let err = |pairs: &[(&str, &str)]| BasicAuth::parse(&meta(pairs)).unwrap_err();
        let t = ("nginx.ingress.kubernetes.io/auth-type", "basic");
        assert!(err(&[t]).contains("auth-secret"));
        assert!(err(&[t, ("nginx.ingress.kubernetes.io/auth-secret", "other/users")]).contains("namespace other"));
        assert!(err(&[("nginx.ingress.kubernetes.io/auth-type", "digest")]).contains("digest"));
        assert!(err(&[("nginx.ingress.kubernetes.io/auth-secret", "users")]).contains("needs"));
        let e = err(&[
            t,
            ("nginx.ingress.kubernetes.io/auth-secret", "users"),
            ("nginx.ingress.kubernetes.io/auth-secret-type", "auth-json"),
        ]);
        assert!(e.contains("auth-secret-type"), "{e}");
    }
}
