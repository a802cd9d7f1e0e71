//! Which certificates to order: pure functions from a translation and the objects to [`Candidate`]s, and from a
//! candidate and a clock value to the reason it needs an order (if it does). No I/O, no clock.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use instant_acme::CertificateIdentifier;

use super::ari::RenewalWindow;
use crate::certs::{CertInfo, LoadedCert};
use crate::model::{ClusterState, Diagnostic, ObjectRef, Translation};

/// Set to `"false"` on an Ingress to keep ACME away from its `spec.tls` entries.
pub const OPT_OUT_ANNOTATION: &str = "portico.dev/acme";

/// One `spec.tls` entry of an ACME-enabled listener set: the Secret to fill and the hosts it must cover.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Listener set index (configuration order); its ACME configuration is used.
    pub set: usize,
    pub secret: ObjectRef,
    /// The SANs of the order, lowercase, in `spec.tls` order, without duplicates.
    pub hosts: Vec<String>,
    pub ingress: ObjectRef,
    /// The certificate the Secret holds now, when it exists and parses.
    pub current: Option<Arc<CertInfo>>,
    /// Its ACME Renewal Information identifier (RFC 9773 §4.1), when it has an authority key identifier.
    pub current_id: Option<CertificateIdentifier<'static>>,
    /// The Secret exists and carries [`MANAGED_ANNOTATION`](super::store::MANAGED_ANNOTATION): ACME may renew
    /// it. A Secret someone else manages is only replaced when it is not valid for the hosts (see
    /// [`may_replace`]).
    pub managed: bool,
}

/// Why a candidate needs a new certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    Missing,
    Expired,
    DoesNotCover(String),
    /// Less than the renewal share of the lifetime is left (the CA offers no renewal window).
    Renewal,
    /// The CA's renewal window (ARI) says now.
    Window,
}

impl Need {
    /// The certificate is valid for the hosts; the order only renews it.
    pub fn is_renewal(&self) -> bool {
        matches!(self, Need::Renewal | Need::Window)
    }
}

impl std::fmt::Display for Need {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Need::Missing => f.write_str("no usable certificate"),
            Need::Expired => f.write_str("certificate expired or not yet valid"),
            Need::DoesNotCover(h) => write!(f, "certificate does not cover {h}"),
            Need::Renewal => f.write_str("certificate due for renewal"),
            Need::Window => f.write_str("certificate due for renewal (the CA's renewal window)"),
        }
    }
}

/// The candidates of every listener set with `acme_sets[i]`, deduplicated by Secret (first wins). Wildcard hosts
/// cannot be validated by HTTP-01: such an entry is a diagnostic, not an order.
pub fn candidates(t: &Translation, state: &ClusterState, acme_sets: &[bool]) -> (Vec<Candidate>, Vec<Diagnostic>) {
    let mut out: Vec<Candidate> = Vec::new();
    let mut diagnostics = Vec::new();
    for (idx, set) in t.sets.iter().enumerate() {
        if !acme_sets.get(idx).copied().unwrap_or(false) {
            continue;
        }
        for tls in &set.tls {
            if opted_out(state, &tls.ingress) || out.iter().any(|c| c.secret == tls.secret) {
                continue;
            }
            if let Some(w) = tls.hosts.iter().find(|h| h.starts_with("*.")) {
                diagnostics.push(Diagnostic::object(
                    tls.ingress.clone(),
                    format!(
                        "spec.tls {}: {w} is a wildcard; HTTP-01 cannot validate wildcards, no ACME order",
                        tls.secret.name
                    ),
                ));
                continue;
            }
            let mut hosts: Vec<String> = Vec::new();
            for h in &tls.hosts {
                let h = crate::certs::normalize_host(h).into_owned();
                if !hosts.contains(&h) {
                    hosts.push(h);
                }
            }
            if hosts.is_empty() {
                continue;
            }
            let current = current_cert(state, &tls.secret);
            out.push(Candidate {
                set: idx,
                secret: tls.secret.clone(),
                hosts,
                ingress: tls.ingress.clone(),
                current: current.as_ref().map(|c| c.info.clone()),
                current_id: current
                    .as_ref()
                    .and_then(|c| c.chain().first())
                    .and_then(|d| super::ari::cert_id(d)),
                managed: managed(state, &tls.secret),
            });
        }
    }
    (out, diagnostics)
}

fn opted_out(state: &ClusterState, ingress: &ObjectRef) -> bool {
    state.ingresses.iter().any(|i| {
        i.metadata.name.as_deref() == Some(&*ingress.name)
            && i.metadata.namespace.as_deref().unwrap_or("default") == &*ingress.namespace
            && i.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(OPT_OUT_ANNOTATION))
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"))
    })
}

/// The last Secret of that name wins, as in the certificate stage.
fn current_cert(state: &ClusterState, secret: &ObjectRef) -> Option<LoadedCert> {
    let s = find_secret(state, secret)?;
    LoadedCert::from_tls_secret(s).ok()
}

fn find_secret<'a>(state: &'a ClusterState, secret: &ObjectRef) -> Option<&'a k8s_openapi::api::core::v1::Secret> {
    state.secrets.iter().rev().find(|s| {
        s.metadata.name.as_deref() == Some(secret.name.as_str())
            && s.metadata.namespace.as_deref().unwrap_or("default") == secret.namespace
    })
}

fn managed(state: &ClusterState, secret: &ObjectRef) -> bool {
    find_secret(state, secret)
        .and_then(|s| s.metadata.annotations.as_ref())
        .and_then(|a| a.get(super::store::MANAGED_ANNOTATION))
        .is_some_and(|v| v == "true")
}

/// Whether an order for `need` may replace the Secret: always when Portico manages it (or it is missing);
/// otherwise only when its certificate is not valid for the hosts. A valid certificate someone else manages
/// is never renewed over.
pub fn may_replace(need: &Need, managed: bool) -> bool {
    managed || !need.is_renewal()
}

/// Why `cert` needs replacing at `now`, if it does: missing, not valid at `now`, not covering a host, or due
/// for renewal.
///
/// Renewal: when the CA suggested a window (`window`: the window and the uniformly random point `r` in
/// `[0, 1)` drawn for it), the certificate is renewed from that point on, whatever its remaining lifetime;
/// RFC 9773 makes the CA's window authoritative (it may be early, after a revocation, or later than a third
/// of the lifetime). A window whose end has passed means now. Without a window the certificate is renewed
/// when less than `renew_fraction` of its lifetime is left, stretched by up to 10% per Secret (a fixed jitter,
/// so renewals of certificates issued together spread out).
pub fn need(
    hosts: &[String],
    secret: &ObjectRef,
    cert: Option<&CertInfo>,
    now: i64,
    renew_fraction: f64,
    window: Option<(RenewalWindow, f64)>,
) -> Option<Need> {
    let Some(cert) = cert else {
        return Some(Need::Missing);
    };
    if cert.check_validity(now).is_err() {
        return Some(Need::Expired);
    }
    if let Some(h) = hosts.iter().find(|h| !cert.covers(h)) {
        return Some(Need::DoesNotCover(h.clone()));
    }
    if let Some((w, r)) = window {
        return (now >= w.at(r)).then_some(Need::Window);
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (&secret.namespace, &secret.name).hash(&mut hasher);
    let jitter = (hasher.finish() % 1000) as f64 / 10_000.0;
    if cert.remaining_lifetime_fraction(now) < renew_fraction * (1.0 + jitter) {
        return Some(Need::Renewal);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::testing::{key, TestCa};
    use crate::model::{translate, Options};
    use crate::source::file::state_from_yaml;

    const DAY: i64 = 86_400;

    fn r(name: &str) -> ObjectRef {
        ObjectRef {
            kind: "Secret",
            namespace: "default".into(),
            name: name.into(),
        }
    }

    #[test]
    fn need_by_validity_coverage_and_lifetime() {
        let ca = TestCa::new();
        let k = key(&rcgen::PKCS_ECDSA_P256_SHA256);
        let now = 1_800_000_000;
        let pem = ca.issue_pem(&["a.test"], &k, now - 10 * DAY, now + 80 * DAY);
        let c = LoadedCert::from_pem(pem.as_bytes(), k.serialize_pem().as_bytes(), "t".into()).unwrap();
        let hosts = vec!["a.test".to_string()];
        let info = Some(&*c.info);
        assert_eq!(need(&hosts, &r("x"), None, now, 1.0 / 3.0, None), Some(Need::Missing));
        assert_eq!(need(&hosts, &r("x"), info, now, 1.0 / 3.0, None), None);
        assert_eq!(
            need(&["b.test".to_string()], &r("x"), info, now, 1.0 / 3.0, None),
            Some(Need::DoesNotCover("b.test".into()))
        );
        // 80 of 90 days left is fine; 20 of 90 is below a third.
        assert_eq!(
            need(&hosts, &r("x"), info, now + 60 * DAY, 1.0 / 3.0, None),
            Some(Need::Renewal)
        );
        assert_eq!(
            need(&hosts, &r("x"), info, now + 81 * DAY, 1.0 / 3.0, None),
            Some(Need::Expired)
        );
    }

    #[test]
    fn the_cas_window_decides_renewal_when_offered() {
        let ca = TestCa::new();
        let k = key(&rcgen::PKCS_ECDSA_P256_SHA256);
        let now = 1_800_000_000;
        let pem = ca.issue_pem(&["a.test"], &k, now - 10 * DAY, now + 80 * DAY);
        let c = LoadedCert::from_pem(pem.as_bytes(), k.serialize_pem().as_bytes(), "t".into()).unwrap();
        let (hosts, info) = (vec!["a.test".to_string()], Some(&*c.info));
        let need_at = |at: i64, w: Option<(RenewalWindow, f64)>| need(&hosts, &r("x"), info, at, 1.0 / 3.0, w);

        // A window that is already open renews long before a third of the lifetime is left...
        let open = RenewalWindow::new(now - DAY, now + DAY).unwrap();
        assert_eq!(need_at(now, Some((open, 0.0))), Some(Need::Window));
        assert_eq!(
            need_at(now, Some((open, 0.5))),
            Some(Need::Window),
            "the picked point is now"
        );
        // ...but not before the point picked in it (uniform over the window).
        assert_eq!(need_at(now, Some((open, 0.75))), None);
        assert_eq!(open.at(0.75), now + DAY / 2);
        assert_eq!(need_at(now + DAY / 2, Some((open, 0.75))), Some(Need::Window));
        // A window in the past: at once, wherever the point is.
        let past = RenewalWindow::new(now - 3 * DAY, now - 2 * DAY).unwrap();
        assert_eq!(need_at(now, Some((past, 0.999))), Some(Need::Window));
        // A window far ahead wins over the lifetime rule (60 of 90 days gone, 20 left: below a third).
        let later = RenewalWindow::new(now + 70 * DAY, now + 75 * DAY).unwrap();
        assert_eq!(need_at(now + 60 * DAY, None), Some(Need::Renewal));
        assert_eq!(need_at(now + 60 * DAY, Some((later, 0.0))), None);
        assert_eq!(need_at(now + 70 * DAY, Some((later, 0.0))), Some(Need::Window));
        // Validity and coverage come first: an expired certificate is replaced whatever the window says.
        assert_eq!(need_at(now + 81 * DAY, Some((later, 0.0))), Some(Need::Expired));
        assert_eq!(
            need(
                &["b.test".to_string()],
                &r("x"),
                info,
                now,
                1.0 / 3.0,
                Some((later, 0.0))
            ),
            Some(Need::DoesNotCover("b.test".into()))
        );
        // An empty or inverted window is no window (RFC 9773 §4.2).
        assert!(RenewalWindow::new(now, now).is_none());
        assert!(RenewalWindow::new(now, now - 1).is_none());
        // Someone else's certificate is not renewed over because of a window either.
        assert!(!may_replace(&Need::Window, false));
        assert!(may_replace(&Need::Window, true));
    }

    #[test]
    fn candidates_skip_opt_outs_wildcards_and_other_sets() {
        let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: default}
spec:
  ingressClassName: portico
  tls:
  - {hosts: [A.test, a.test, b.test], secretName: web-tls}
  - {hosts: ["*.w.test"], secretName: wild-tls}
  rules:
  - host: a.test
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: s, port: {number: 80}}}}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: manual, namespace: default, annotations: {portico.dev/acme: "false"}}
spec:
  ingressClassName: portico
  tls:
  - {hosts: [m.test], secretName: manual-tls}
  rules:
  - host: m.test
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: s, port: {number: 80}}}}]}
"#;
        let (state, d) = state_from_yaml(yaml, "x.yaml");
        assert!(d.is_empty(), "{d:?}");
        let t = translate(&state, &Options::from_config(&crate::config::Config::default(), true));
        let (c, d) = candidates(&t, &state, &[true]);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].secret, r("web-tls"));
        assert_eq!(c[0].hosts, vec!["a.test".to_string(), "b.test".to_string()]);
        assert!(c[0].current.is_none());
        assert_eq!(d.len(), 1);
        assert!(d[0].reason.contains("wildcard"), "{d:?}");
        assert!(!c[0].managed);
        let (c, _) = candidates(&t, &state, &[false]);
        assert!(c.is_empty());
    }

    #[test]
    fn someone_elses_valid_secret_is_not_renewed_over() {
        assert!(may_replace(&Need::Renewal, true));
        assert!(!may_replace(&Need::Renewal, false));
        for n in [Need::Missing, Need::Expired, Need::DoesNotCover("a.test".into())] {
            assert!(may_replace(&n, false), "{n}");
        }
    }
}
