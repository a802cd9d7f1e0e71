//! The admin JSON API, built from the last published compilation ([`crate::publish::Compiled`]) and, for
//! `/api/explain`, the live routing snapshot (the same lookup the proxy does).

use http::StatusCode;
use serde_json::{json, Value};

use super::{json as json_reply, Admin, Resp};
use crate::model::{BackendModel, HostPattern, ObjectRef};
use crate::normalize::{normalize_host, normalize_path};
use crate::routing::Lookup;

fn object(o: &ObjectRef) -> String {
    format!("{}/{}", o.namespace, o.name)
}

/// Endpoints that get no new requests right now (ejected by passive health or down by active check), by
/// backend id, from the live table.
fn down_endpoints(snap: &crate::snapshot::Snapshot) -> std::collections::HashMap<String, Vec<String>> {
    let mut down: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
    for b in snap.backends() {
        for e in b.endpoints.iter().filter(|e| !e.is_usable()) {
            let list = down.entry(b.id.clone()).or_default();
            let addr = e.addr.to_string();
            if !list.contains(&addr) {
                list.push(addr);
            }
        }
    }
    down
}

fn backend(b: &BackendModel, down: &std::collections::HashMap<String, Vec<String>>) -> Value {
    let id = b.id();
    json!({
        "down": down.get(&id).cloned().unwrap_or_default(),
        "id": id,
        "namespace": &*b.namespace,
        "service": &*b.service,
        "port": b.port.to_string(),
        "endpoints": b.endpoints.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
    })
}

/// A route's canary: its Ingress, backend and rules (`portico check`'s form).
fn canary(c: &crate::model::CanaryModel, down: &std::collections::HashMap<String, Vec<String>>) -> Value {
    let mut rules = String::new();
    c.rules().describe_into(&mut rules);
    json!({ "ingress": object(&c.ingress), "backend": backend(&c.backend, down), "rules": rules })
}

fn host_kind(h: &HostPattern) -> &'static str {
    match h {
        HostPattern::Exact(_) => "exact",
        HostPattern::Wildcard(_) => "wildcard",
        HostPattern::Any => "host-less",
    }
}

/// Every listener set with its index in the translation: the configured ones, then each bound Gateway socket
/// (named as `portico check` names it, `gateway namespace/name address`).
fn all_sets(admin: &Admin, compiled: Option<&crate::publish::Compiled>) -> Vec<(usize, super::SetAddrs)> {
    let mut out: Vec<(usize, super::SetAddrs)> = admin.sets.iter().cloned().enumerate().collect();
    for g in compiled.iter().flat_map(|c| c.gateways.iter()) {
        let name = compiled
            .and_then(|c| c.translation.sets.get(g.set))
            .map_or_else(|| format!("gateway {}", g.address), |s| s.name.clone());
        let (http, https) = if g.https {
            (Vec::new(), vec![g.address])
        } else {
            (vec![g.address], Vec::new())
        };
        out.push((g.set, super::SetAddrs { name, http, https }));
    }
    out
}

/// `/api/routes`: per listener set, its addresses, hosts, paths, backends with endpoints, default backend, TLS.
pub fn routes(admin: &Admin) -> Value {
    let compiled = admin.shared.last_compiled();
    let snap = admin.shared.snapshot.load();
    let generation = snap.generation;
    let down = down_endpoints(&snap);
    let sets: Vec<Value> = all_sets(admin, compiled.as_deref())
        .iter()
        .map(|(i, addrs)| {
            let model = compiled.as_ref().and_then(|c| c.translation.sets.get(*i));
            let hosts: Vec<Value> = model
                .map(|m| {
                    m.hosts
                        .iter()
                        .map(|h| {
                            json!({
                                "host": h.host.to_string(),
                                "kind": host_kind(&h.host),
                                "paths": h.paths.iter().map(|p| json!({
                                    "path": p.path,
                                    "kind": p.kind.to_string(),
                                    "ingress": object(&p.ingress),
                                    "backend": backend(&p.backend, &down),
                                    "https_redirect": p.https_redirect,
                                    "canary": p.canary.as_ref().map(|c| canary(c, &down)),
                                    "policy": policy(p),
                                    "stats": stats(admin, &p.ingress, &p.backend),
                                })).collect::<Vec<_>>(),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            let default_backend = model
                .and_then(|m| m.default_backend.as_ref())
                .map(|d| json!({ "ingress": object(&d.ingress), "backend": backend(&d.backend, &down) }));
            let tls: Vec<Value> = model
                .map(|m| {
                    m.tls
                        .iter()
                        .map(
                            |t| json!({ "hosts": t.hosts, "secret": object(&t.secret), "ingress": object(&t.ingress) }),
                        )
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "name": addrs.name,
                "http": addrs.http.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "https": addrs.https.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "hosts": hosts,
                "default_backend": default_backend,
                "tls": tls,
            })
        })
        .collect();
    json!({
        "generation": generation,
        "latency_bounds": crate::metrics::DURATION_BUCKETS,
        "sets": sets,
    })
}

/// A path's annotations that differ from the defaults, as `portico check` marks them (`[allow 10.0.0.0/8]`...),
/// and the matching it uses beyond host and path.
fn policy(p: &crate::model::PathModel) -> String {
    let mut out = String::new();
    p.policy.describe_into(&mut out);
    if let Some(g) = &p.gateway {
        g.describe_into(&mut out);
    }
    out.trim().to_string()
}

/// The live counters of the path's (Ingress, backend) pair: requests by class and cumulative latency buckets.
fn stats(admin: &Admin, ingress: &ObjectRef, b: &BackendModel) -> Value {
    match admin.shared.metrics.route_stats(&object(ingress), &b.id()) {
        None => Value::Null,
        Some((classes, latency)) => json!({ "classes": classes, "latency": latency }),
    }
}

/// `/api/overview`: version, uptime, the table's generation, and what needs attention (the dashboard's badge).
pub fn overview(admin: &Admin) -> Value {
    let compiled = admin.shared.last_compiled();
    let snap = admin.shared.snapshot.load();
    let (mut errors, mut warnings) = (0, 0);
    for d in compiled.iter().flat_map(|c| c.translation.diagnostics.iter()) {
        match d.severity {
            crate::model::Severity::Error => errors += 1,
            crate::model::Severity::Warning => warnings += 1,
        }
    }
    let down: usize = down_endpoints(&snap).values().map(Vec::len).sum();
    let mut seen = std::collections::HashSet::new();
    let mut no_endpoint = Vec::new();
    for b in snap.backends().filter(|b| seen.insert(std::sync::Arc::as_ptr(b))) {
        if b.endpoints.is_empty() || b.endpoints.iter().all(|e| !e.is_usable()) {
            no_endpoint.push(b.id.clone());
        }
    }
    no_endpoint.sort();
    no_endpoint.dedup();
    let now = crate::certs::unix_now();
    let expiring = compiled
        .iter()
        .flat_map(|c| c.tls.served.iter().flatten())
        .filter(|(_, info)| info.not_after - now < 14 * 86_400)
        .count();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": admin.started.elapsed().as_secs(),
        "generation": snap.generation,
        "problems": {
            "rejected": errors,
            "warnings": warnings,
            "down_endpoints": down,
            "backends_without_endpoint": no_endpoint,
            "expiring_certificates": expiring,
        },
    })
}

/// `/api/certificates`: per listener set, the certificate each configured TLS host is served with.
pub fn certificates(admin: &Admin) -> Value {
    let compiled = admin.shared.last_compiled();
    let now = crate::certs::unix_now();
    let sets: Vec<Value> = all_sets(admin, compiled.as_deref())
        .iter()
        .map(|(i, addrs)| {
            let served = compiled.as_ref().and_then(|c| c.tls.served.get(*i));
            let certs: Vec<Value> = served
                .map(|s| {
                    s.iter()
                        .map(|(host, info)| {
                            json!({
                                "host": host,
                                "default": host == "*default*",
                                "subject": info.subject,
                                "names": info.names(),
                                "issuer": info.issuer,
                                "serial": info.serial,
                                "not_before": crate::certs::format_unix(info.not_before),
                                "not_after": crate::certs::format_unix(info.not_after),
                                "not_after_unix": info.not_after,
                                "expires_in_days": (info.not_after - now).div_euclid(86_400),
                                "source": info.source,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!({ "name": addrs.name, "certificates": certs })
        })
        .collect();
    json!({ "sets": sets })
}

/// `/api/diagnostics`: what the last publish rejected, and why.
pub fn diagnostics(admin: &Admin) -> Value {
    let compiled = admin.shared.last_compiled();
    let list: Vec<Value> = compiled
        .iter()
        .flat_map(|c| c.translation.diagnostics.iter())
        .map(|d| {
            json!({
                "subject": d.subject.to_string(),
                "reason": d.reason,
                "severity": match d.severity {
                    crate::model::Severity::Error => "error",
                    crate::model::Severity::Warning => "warning",
                },
                "message": d.to_string(),
            })
        })
        .collect();
    json!({ "count": list.len(), "diagnostics": list })
}

/// `/api/explain?set=NAME&host=H&path=P`: which route and backend the live table picks for that request, and why.
/// `set` may be left out when there is one listener set; `path` defaults to `/`.
pub fn explain(admin: &Admin, query: &str) -> Resp {
    let (mut set, mut host, mut path) = (None, String::new(), "/".to_string());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        match k {
            "set" => set = Some(v),
            "host" => host = v,
            "path" => path = v,
            _ => {}
        }
    }
    let bad = |msg: String| json_reply(StatusCode::BAD_REQUEST, &json!({ "error": msg }));
    let compiled = admin.shared.last_compiled();
    let sets = all_sets(admin, compiled.as_deref());
    let (idx, set_name) = match &set {
        Some(name) => match sets.iter().find(|(_, s)| &s.name == name) {
            Some((i, s)) => (*i, s.name.clone()),
            None => return bad(format!("no listener set named {name:?}")),
        },
        None if sets.len() == 1 => (sets[0].0, sets[0].1.name.clone()),
        None => return bad("several listener sets: say which with set=NAME".into()),
    };
    let host_name = if host.is_empty() {
        String::new()
    } else {
        match normalize_host(&host) {
            Ok(h) => h.name.into_owned(),
            Err(e) => return bad(format!("host {host:?}: {e}")),
        }
    };
    let norm_path = match normalize_path(&path) {
        Ok(p) => p.into_owned(),
        Err(e) => return bad(format!("path {path:?}: {e:?}")),
    };
    let snap = admin.shared.snapshot.load();
    let Some(table) = snap.sets.get(idx) else {
        return bad("listener set has no table yet".into());
    };
    let endpoints = |b: &crate::upstream::Backend| b.endpoints.iter().map(|e| e.addr.to_string()).collect::<Vec<_>>();
    let mut out = json!({
        "set": set_name,
        "generation": snap.generation,
        "host": host_name,
        "path": norm_path,
    });
    let extra = match table.lookup(&host_name, &norm_path) {
        Lookup::Route(r) => {
            let why = match &r.host {
                HostPattern::Exact(h) => format!("host {h} matched exactly"),
                HostPattern::Wildcard(s) => format!("host matched the wildcard *.{s}"),
                HostPattern::Any => "no host rule matched; the host-less rules apply".to_string(),
            };
            let path_why = match r.kind {
                crate::model::PathKind::Exact => format!("path equals the Exact path {}", r.path),
                crate::model::PathKind::Prefix => format!("{} is the longest Prefix path matching", r.path),
                crate::model::PathKind::Regex => format!(
                    "the host's paths are regexes (use-regex or rewrite-target), tried longest first; {} matched first",
                    r.path
                ),
            };
            // A second backend is a canary's: its origin is the canary Ingress, the split its rules.
            let canary = r.backends.get(1).zip(r.state.backends.get(1)).map(|(w, live)| {
                let rules = r.split.as_ref().map_or("", |s| s.description());
                (w, live, rules)
            });
            let canary_why = match &canary {
                Some((w, _, rules)) => format!(
                    "; the canary Ingress {} takes a request by its rules ({rules}), the route's policy applying either way",
                    w.origin.name
                ),
                None => String::new(),
            };
            let canary = canary.map(|(w, live, rules)| {
                json!({
                    "ingress": &*w.origin.name,
                    "backend": { "id": live.backend.id, "endpoints": endpoints(&live.backend) },
                    "rules": rules,
                })
            });
            let main = &r.state.backends[0].backend;
            json!({
                "match": host_kind(&r.host),
                "route": {
                    "host": r.host.to_string(),
                    "path": &*r.path,
                    "kind": r.kind.to_string(),
                    "ingress": &*r.origin.name,
                    "https_redirect": r.redirects_to_https(),
                },
                "backend": { "id": main.id, "endpoints": endpoints(main) },
                "canary": canary,
                "reason": format!("{why}; {path_why}{canary_why}"),
            })
        }
        Lookup::Default(d) => {
            let ingress = &*d.origin.name;
            json!({
                "match": "default",
                "route": null,
                "ingress": ingress,
                "backend": { "id": d.state.backends[0].backend.id, "endpoints": endpoints(&d.state.backends[0].backend) },
                "reason": "no rule matched this host and path; the listener set's default backend serves it",
            })
        }
        Lookup::NotFound => json!({
            "match": "none",
            "route": null,
            "backend": null,
            "reason": "no rule matched and the listener set has no default backend: 404",
        }),
    };
    if let (Value::Object(o), Value::Object(e)) = (&mut out, extra) {
        o.extend(e);
    }
    json_reply(StatusCode::OK, &out)
}

/// Decodes `%XX` escapes and `+` (a query string's space). Invalid escapes stay as written.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit() => {
                let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                out.push(hex(b[i + 1]) * 16 + hex(b[i + 2]));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn percent_decoding() {
        assert_eq!(super::percent_decode("a%2Fb+c"), "a/b c");
        assert_eq!(super::percent_decode("%zz%4"), "%zz%4");
        assert_eq!(super::percent_decode("%41"), "A");
    }
}
