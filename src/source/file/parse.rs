//! Parsing YAML documents into objects: each document read by its `apiVersion` and `kind`; kinds Portico does not
//! use are skipped quietly; a document that cannot be read is a diagnostic naming the file and the document's
//! index.

use serde::Deserialize;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::model::{ClusterState, Diagnostic, Ingress, Severity, Strings, Subject};

/// What parsing keeps between files and loads.
#[derive(Default)]
pub(super) struct Parse {
    /// Documents parsed so far (those whose objects were moved over from the last version are not counted).
    pub(super) parsed: u64,
    /// File texts read (those whose content did not change are counted too).
    pub(super) texts_read: u64,
    /// The strings the kept Ingresses share (see [`Strings`]); pruned after each load.
    pub(super) strings: Strings,
}

/// Splits a multi-document YAML text at its document markers (`---` at the start of a line): the text before the
/// first marker, then each marker with its document. `None` for what this simple split may not read as the
/// stream parser does (directives, document end markers): such a text is parsed whole.
pub(super) fn split_documents(text: &str) -> Option<Vec<&str>> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let marker = |m: &str| {
            line.strip_prefix(m)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_whitespace()))
        };
        if line.starts_with('%') || marker("...") {
            return None;
        }
        if marker("---") {
            chunks.push(&text[start..at]);
            start = at;
        }
        at += line.len();
    }
    chunks.push(&text[start..]);
    Some(chunks)
}

/// One chunk's documents read as YAML values, up to and including the first that failed.
pub(super) type Values = Vec<Result<serde_yaml::Value, serde_yaml::Error>>;

/// Reads each of `chunks` into its documents' YAML values (see [`Values`]) on a helper thread, handing them to
/// `each` with the chunk's index, in order, on the calling thread, until `each` returns `false`. Returns whether
/// `each` took every chunk.
pub(super) fn read_values(chunks: &[&str], mut each: impl FnMut(usize, Values) -> bool) -> bool {
    let mut taken = 0;
    on_helper_thread(
        |send| {
            for chunk in chunks {
                if !send(yaml_values(chunk).collect()) {
                    return;
                }
            }
        },
        |values| {
            let n = taken;
            let took = each(n, values);
            taken += usize::from(took);
            took
        },
    );
    taken == chunks.len()
}

/// The YAML values of `text`'s documents, in order, up to and including the first that failed (a syntax error
/// ends the stream: later documents cannot be located reliably).
fn yaml_values(text: &str) -> impl Iterator<Item = Result<serde_yaml::Value, serde_yaml::Error>> + '_ {
    let mut failed = false;
    serde_yaml::Deserializer::from_str(text).map_while(move |doc| {
        if failed {
            return None;
        }
        let value = serde_yaml::Value::deserialize(doc);
        failed = value.is_err();
        Some(value)
    })
}

/// Runs `produce` on a helper thread and hands what it sends to `consume` on the calling thread, in order,
/// until `produce` returns or `consume` returns `false` (then `send` returns `false` and `produce` should stop).
///
/// The thread is for memory, not speed. The YAML reader's working set dwarfs what is kept: for the reference
/// harness's one document with 10,000 rules (1.5 MB), serde_yaml's event list and `Value` tree peak at ~85 MB
/// while the objects kept are ~1.5 MB. Read on the caller's thread, the kept objects and everything translated
/// after them were allocated in the holes that working set left, one live chunk every ~4 KB or so, so glibc could
/// return none of it: 33 MB of a 44 MB heap free but resident, +41.6 MiB of Pss for 10,000 hosts. A new thread
/// gets an allocator arena of its own, where the working set is freed as a whole and returned to the system;
/// the kept objects are made from the values on the calling thread, in its arena.
fn on_helper_thread<T: Send>(
    produce: impl FnOnce(&mut dyn FnMut(T) -> bool) + Send,
    mut consume: impl FnMut(T) -> bool,
) {
    let (tx, rx) = std::sync::mpsc::sync_channel(16);
    let produce = std::sync::Mutex::new(Some(produce));
    let take = || produce.lock().unwrap_or_else(|e| e.into_inner()).take();
    std::thread::scope(|s| {
        let helper = std::thread::Builder::new()
            .name("manifest-yaml".into())
            .spawn_scoped(s, move || {
                if let Some(p) = take() {
                    p(&mut |item| tx.send(item).is_ok());
                }
            });
        if helper.is_err() {
            // No thread to be had (resource limits): read on this one, without the memory the thread saves.
            if let Some(p) = take() {
                p(&mut consume);
            }
            return;
        }
        // Dropping the receiver (at a `false`, or when done) stops the producer at its next send.
        for item in rx {
            if !consume(item) {
                break;
            }
        }
    });
}

/// Makes the objects of one chunk's documents (read by [`read_values`]) into `out`; the number of documents
/// found, `None` on any error.
pub(super) fn parse_values(values: Values, out: &mut ClusterState, cx: &mut Parse) -> Option<usize> {
    cx.parsed += 1;
    let seen = values.len();
    for value in values {
        parse_value(value.ok()?, out, &mut cx.strings).ok()?;
    }
    Some(seen)
}

/// Whether chunk `n` held what a chunk may hold, given [`parse_values`]'s answer: exactly one document, or none in
/// the text before the first marker (chunk 0).
pub(super) fn one_document(seen: Option<usize>, n: usize) -> bool {
    matches!(seen, Some(1)) || (seen == Some(0) && n == 0)
}

pub(super) fn counts_of(s: &ClusterState) -> [usize; 5] {
    [
        s.ingresses.len(),
        s.ingress_classes.len(),
        s.services.len(),
        s.endpoint_slices.len(),
        s.secrets.len(),
    ]
}

/// Parses one multi-document YAML text (named `file` in diagnostics) into a state. Used by `portico check`-like
/// tools and tests that hold manifests in memory.
pub fn state_from_yaml(text: &str, file: &str) -> (ClusterState, Vec<Diagnostic>) {
    parse_documents(text, file, &mut Strings::default())
}

/// Parses a multi-document YAML text into objects and per-document diagnostics.
pub(super) fn parse_documents(text: &str, file: &str, strings: &mut Strings) -> (ClusterState, Vec<Diagnostic>) {
    let mut objects = ClusterState::default();
    let mut errors = Vec::new();
    let mut index = 0;
    // Values are read on a helper thread (see `on_helper_thread`).
    on_helper_thread(
        |send| {
            for value in yaml_values(text) {
                if !send(value) {
                    return;
                }
            }
        },
        |value| {
            let at = index;
            index += 1;
            let err = |reason: String| Diagnostic {
                subject: Subject::Document {
                    file: file.to_string(),
                    index: at,
                },
                reason,
                severity: Severity::Error,
            };
            match value {
                Ok(value) => {
                    if let Err(reason) = parse_value(value, &mut objects, strings) {
                        errors.push(err(reason));
                    }
                    true
                }
                Err(e) => {
                    errors.push(err(format!("invalid YAML: {e}")));
                    false
                }
            }
        },
    );
    // Kept until the file changes: no growth slack.
    objects.ingresses.shrink_to_fit();
    objects.services.shrink_to_fit();
    objects.endpoint_slices.shrink_to_fit();
    (objects, errors)
}

fn parse_value(mut value: serde_yaml::Value, out: &mut ClusterState, strings: &mut Strings) -> Result<(), String> {
    if value.is_null() {
        return Ok(());
    }
    if !value.is_mapping() {
        return Err("not a Kubernetes object: a document must be a mapping".into());
    }
    // Read apiVersion and kind in place: deserializing them from a copy of the whole document cost as much as
    // the typed parse itself.
    let field = |key: &str| match value.get(key) {
        None | Some(serde_yaml::Value::Null) => Ok(None),
        Some(serde_yaml::Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("not a Kubernetes object: {key} must be a string")),
    };
    let (api, kind) = (field("apiVersion")?, field("kind")?);
    let (Some(api), Some(kind)) = (api.as_deref(), kind.as_deref()) else {
        return Err("not a Kubernetes object: apiVersion and kind are required".into());
    };
    fn typed<T: serde::de::DeserializeOwned + k8s_openapi::Metadata<Ty = ObjectMeta>>(
        v: serde_yaml::Value,
        kind: &str,
        out: &mut Vec<T>,
    ) -> Result<(), String> {
        let obj: T = serde_yaml::from_value(v).map_err(|e| format!("invalid {kind}: {e}"))?;
        if obj.metadata().name.is_none() {
            return Err(format!("{kind} has no metadata.name"));
        }
        out.push(obj);
        Ok(())
    }
    match (api, kind) {
        ("networking.k8s.io/v1", "Ingress") => {
            let mut one = Vec::with_capacity(1);
            typed::<k8s_openapi::api::networking::v1::Ingress>(value, kind, &mut one)?;
            out.ingresses
                .extend(one.into_iter().map(|o| Ingress::from_k8s(o, strings)));
            Ok(())
        }
        ("networking.k8s.io/v1", "IngressClass") => typed(value, kind, &mut out.ingress_classes),
        ("v1", "Service") => typed(value, kind, &mut out.services),
        ("discovery.k8s.io/v1", "EndpointSlice") => typed(value, kind, &mut out.endpoint_slices),
        ("v1", "Secret") => typed(value, kind, &mut out.secrets),
        ("v1", "Namespace") => typed(value, kind, &mut out.gateway.namespaces),
        ("v1", "ConfigMap") => typed(value, kind, &mut out.gateway.config_maps),
        ("gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1beta1", _) => {
            gateway_object(value, kind, &mut out.gateway)
        }
        ("v1", "List") => {
            let items = match value.get_mut("items") {
                Some(serde_yaml::Value::Sequence(items)) => std::mem::take(items),
                _ => Vec::new(),
            };
            for item in items {
                parse_value(item, out, strings)?;
            }
            Ok(())
        }
        (_, "Ingress" | "IngressClass" | "EndpointSlice") => Err(format!(
            "{kind} apiVersion {api:?} is not supported (use networking.k8s.io/v1 or discovery.k8s.io/v1)"
        )),
        _ => Ok(()),
    }
}

/// A Gateway API object of a kind Portico reads (others, such as TLSRoute before layer 4, are skipped quietly).
fn gateway_object(
    v: serde_yaml::Value,
    kind: &str,
    out: &mut crate::model::gateway::GatewayObjects,
) -> Result<(), String> {
    fn one<T: serde::de::DeserializeOwned>(
        v: serde_yaml::Value,
        kind: &str,
        name: impl Fn(&T) -> bool,
        out: &mut Vec<T>,
    ) -> Result<(), String> {
        let obj: T = serde_yaml::from_value(v).map_err(|e| format!("invalid {kind}: {e}"))?;
        if !name(&obj) {
            return Err(format!("{kind} has no metadata.name"));
        }
        out.push(obj);
        Ok(())
    }
    match kind {
        "GatewayClass" => one(
            v,
            kind,
            |o: &crate::model::gateway::GatewayClass| o.metadata.name.is_some(),
            &mut out.gateway_classes,
        ),
        "Gateway" => one(
            v,
            kind,
            |o: &crate::model::gateway::Gateway| o.metadata.name.is_some(),
            &mut out.gateways,
        ),
        "HTTPRoute" => one(
            v,
            kind,
            |o: &crate::model::gateway::HttpRoute| o.metadata.name.is_some(),
            &mut out.http_routes,
        ),
        "GRPCRoute" => one(
            v,
            kind,
            |o: &crate::model::gateway::GrpcRoute| o.metadata.name.is_some(),
            &mut out.grpc_routes,
        ),
        "TLSRoute" => one(
            v,
            kind,
            |o: &crate::model::gateway::TlsRoute| o.metadata.name.is_some(),
            &mut out.tls_routes,
        ),
        "TCPRoute" => one(
            v,
            kind,
            |o: &crate::model::gateway::TcpRoute| o.metadata.name.is_some(),
            &mut out.tcp_routes,
        ),
        "ReferenceGrant" => one(
            v,
            kind,
            |o: &crate::model::gateway::ReferenceGrant| o.metadata.name.is_some(),
            &mut out.reference_grants,
        ),
        "BackendTLSPolicy" => one(
            v,
            kind,
            |o: &crate::model::gateway::BackendTlsPolicy| o.metadata.name.is_some(),
            &mut out.backend_tls_policies,
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_and_errors() {
        let text = "\
apiVersion: v1
kind: Service
metadata: {name: a}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ignored}
---
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: bad}
spec: {rules: 7}
---
kind: Service
---
apiVersion: networking.k8s.io/v1beta1
kind: Ingress
metadata: {name: old}
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Secret, metadata: {name: s}, type: kubernetes.io/tls}
";
        let (objs, errs) = state_from_yaml(text, "x.yaml");
        assert_eq!((objs.services.len(), objs.secrets.len()), (1, 1), "{objs:?}");
        let msgs: Vec<String> = errs.iter().map(|d| d.to_string()).collect();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(msgs[0].starts_with("x.yaml document 3: invalid Ingress"), "{msgs:?}");
        assert!(
            msgs[1].starts_with("x.yaml document 4: not a Kubernetes object"),
            "{msgs:?}"
        );
        assert!(
            msgs[2].contains("document 5") && msgs[2].contains("not supported"),
            "{msgs:?}"
        );
    }
}
