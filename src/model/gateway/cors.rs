//! HTTPRoute's `CORS` filter (extended support): read with the CRD's defaults, checked ([`HttpCors::check`]:
//! a bad value refuses the route with `UnsupportedValue`), and lowered onto the one CORS filter the data plane
//! has ([`crate::model::traffic::Cors`], which an Ingress's `enable-cors` annotations also make).
//!
//! Where Gateway API reads differently from ingress-nginx:
//! - `allowOrigins`: `*` alone allows any origin; `https://*.example.com` covers one or more labels;
//!   `https://*` any host of that scheme; a port left out is the scheme's default. Left out: any origin (as the
//!   conformance suite's `CORSAllowCredentialsBehavior` expects).
//! - `Access-Control-Allow-Origin` is always the request's origin, never `*` (the spec allows either without
//!   credentials and requires the origin with them).
//! - `allowMethods: ["*"]` and `allowHeaders: ["*"]` answer a preflight with what it asks for
//!   (`Access-Control-Request-Method` / `-Headers`), which is right with or without credentials; left out, the
//!   header is not sent.
//! - `exposeHeaders: ["*"]` sends `*` without credentials, and the response's own header names with them.
//! - `maxAge` defaults to 5 seconds; preflights are answered 200.

use http::{HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use crate::model::annotations::cors::OriginPattern;
use crate::model::traffic::{Cors, CorsValue};

/// `filters[].cors` of an HTTPRoute rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpCors {
    #[serde(default)]
    pub allow_origins: Vec<String>,
    #[serde(default)]
    pub allow_credentials: Option<bool>,
    #[serde(default)]
    pub allow_methods: Vec<String>,
    #[serde(default)]
    pub allow_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Seconds; 5 by default.
    #[serde(default = "five")]
    pub max_age: i32,
}

fn five() -> i32 {
    5
}

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// A list that is `*` alone (`Ok(None)`), or values each checked by `ok`, joined as `A, B` (`Ok(Some(..))`).
fn list(field: &str, items: &[String], ok: fn(&str) -> bool) -> Result<Option<String>, String> {
    if items.iter().any(|i| i == "*") {
        if items.len() > 1 {
            return Err(format!("cors.{field}: \"*\" must be the only entry"));
        }
        return Ok(None);
    }
    if let Some(bad) = items.iter().find(|i| !ok(i)) {
        return Err(format!("cors.{field}: {bad:?} is not a valid entry"));
    }
    Ok(Some(items.join(", ")))
}

fn is_method(m: &str) -> bool {
    METHODS.contains(&m)
}

fn is_header(h: &str) -> bool {
    http::HeaderName::from_bytes(h.as_bytes()).is_ok()
}

impl HttpCors {
    fn credentials(&self) -> bool {
        self.allow_credentials.unwrap_or(false)
    }

    fn origins(&self) -> Result<Option<Box<[OriginPattern]>>, String> {
        if self.allow_origins.is_empty() {
            return Ok(None);
        }
        if self.allow_origins.iter().any(|o| o == "*") {
            if self.allow_origins.len() > 1 {
                return Err("cors.allowOrigins: \"*\" must be the only entry".into());
            }
            return Ok(None);
        }
        let mut out: Vec<OriginPattern> = Vec::with_capacity(self.allow_origins.len());
        for o in &self.allow_origins {
            let p = OriginPattern::parse_gateway(o).map_err(|e| format!("cors.allowOrigins: {e}"))?;
            if !out.contains(&p) {
                out.push(p);
            }
        }
        Ok(Some(out.into_boxed_slice()))
    }

    /// The filter the data plane runs, or why this one cannot be served (the route is refused with
    /// `UnsupportedValue`; the message names the field).
    pub fn lower(&self) -> Result<Cors, String> {
        let origins = self.origins()?;
        let value = |field: &str, v: Option<String>| -> Result<CorsValue, String> {
            match v {
                None => Ok(CorsValue::Echo),
                Some(v) => HeaderValue::from_str(&v)
                    .map(CorsValue::Fixed)
                    .map_err(|_| format!("cors.{field}: not a header value")),
            }
        };
        let methods = if self.allow_methods.is_empty() {
            None
        } else {
            Some(value(
                "allowMethods",
                list("allowMethods", &self.allow_methods, is_method)?,
            )?)
        };
        let headers = if self.allow_headers.is_empty() {
            None
        } else {
            Some(value(
                "allowHeaders",
                list("allowHeaders", &self.allow_headers, is_header)?,
            )?)
        };
        let expose = match list("exposeHeaders", &self.expose_headers, is_header)? {
            _ if self.expose_headers.is_empty() => None,
            None if !self.credentials() => Some(CorsValue::Fixed(HeaderValue::from_static("*"))),
            v => Some(value("exposeHeaders", v)?),
        };
        let max_age = u32::try_from(self.max_age)
            .ok()
            .filter(|s| *s >= 1)
            .ok_or_else(|| format!("cors.maxAge: {} is not a number of seconds (1 or more)", self.max_age))?;
        Ok(Cors {
            origins,
            methods,
            headers,
            expose,
            credentials: self.credentials(),
            max_age: HeaderValue::from(max_age),
            echo_origin: true,
            preflight_status: StatusCode::OK,
        })
    }

    /// Why this filter cannot be served, if it cannot.
    pub fn check(&self) -> Option<String> {
        self.lower().err()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(yaml: &str) -> HttpCors {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn defaults_and_wildcards() {
        let c = cors("{}").lower().unwrap();
        assert!(c.origins.is_none() && !c.credentials && c.echo_origin);
        assert_eq!((c.methods, c.headers, c.expose), (None, None, None));
        assert_eq!(c.max_age, "5");
        assert_eq!(c.preflight_status, StatusCode::OK);

        let c = cors("{allowOrigins: ['*'], allowMethods: ['*'], allowHeaders: ['*'], exposeHeaders: ['*']}")
            .lower()
            .unwrap();
        assert!(c.origins.is_none());
        assert_eq!(c.methods, Some(CorsValue::Echo));
        assert_eq!(c.headers, Some(CorsValue::Echo));
        assert_eq!(c.expose, Some(CorsValue::Fixed(HeaderValue::from_static("*"))));
        let c = cors("{allowCredentials: true, exposeHeaders: ['*']}").lower().unwrap();
        assert_eq!(
            c.expose,
            Some(CorsValue::Echo),
            "with credentials, the response's own names"
        );

        let c = cors("{allowMethods: [GET, OPTIONS], allowHeaders: [x-a, X-B], maxAge: 3600}")
            .lower()
            .unwrap();
        assert_eq!(
            c.methods,
            Some(CorsValue::Fixed(HeaderValue::from_static("GET, OPTIONS")))
        );
        assert_eq!(c.headers, Some(CorsValue::Fixed(HeaderValue::from_static("x-a, X-B"))));
        assert_eq!(c.max_age, "3600");
    }

    #[test]
    fn origins_follow_the_gateway_api_rules() {
        let c = cors(
            "{allowOrigins: ['https://www.foo.com', 'https://*.bar.com', 'http://*:8080', 'https://x.example:443']}",
        )
        .lower()
        .unwrap();
        for (origin, ok) in [
            ("https://www.foo.com", true),
            ("https://www.foo.com:443", true),
            ("http://www.foo.com", false),
            ("https://www.foo.com:8443", false),
            ("https://www.bar.com", true),
            ("https://xpto.www.bar.com", true),
            ("https://bar.com", false),
            ("https://evilbar.com", false),
            ("https://a..bar.com", false),
            ("http://anything.example:8080", true),
            ("http://anything.example", false),
            ("https://x.example", true),
            ("https://foobar.com", false),
            ("null", false),
        ] {
            assert_eq!(c.allows(origin), ok, "{origin}");
        }
    }

    #[test]
    fn bad_values_name_the_field() {
        for (yaml, field) in [
            ("{allowOrigins: ['*', 'https://a.example']}", "allowOrigins"),
            ("{allowOrigins: ['ftp://a.example']}", "allowOrigins"),
            ("{allowOrigins: ['https://a.*.example']}", "allowOrigins"),
            ("{allowOrigins: ['https://a.example/path']}", "allowOrigins"),
            ("{allowMethods: ['GET', '*']}", "allowMethods"),
            ("{allowMethods: ['get']}", "allowMethods"),
            ("{allowHeaders: ['b@d']}", "allowHeaders"),
            ("{exposeHeaders: ['a b']}", "exposeHeaders"),
            ("{maxAge: 0}", "maxAge"),
        ] {
            let e = cors(yaml).check().unwrap();
            assert!(e.contains(field), "{yaml}: {e}");
        }
    }
}
