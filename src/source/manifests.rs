//! File mode: a directory of Kubernetes YAML read as a [`ClusterState`].
//!
//! Every `*.yaml`/`*.yml` below the directory is read (hidden entries, such as the `..data` folders of a mounted
//! ConfigMap, are skipped), each document parsed by its `apiVersion` and `kind`. Kinds Portico does not use are
//! skipped quietly. A document that cannot be read is a diagnostic naming the file and the document's index; the
//! file then keeps contributing its last good version, so a broken edit loses nothing.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;

use crate::model::{ClusterState, Diagnostic, Subject};

/// One object Portico reads. Kept unboxed: objects are stored once per file and copied only into a state.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
enum Object {
    Ingress(k8s_openapi::api::networking::v1::Ingress),
    IngressClass(k8s_openapi::api::networking::v1::IngressClass),
    Service(k8s_openapi::api::core::v1::Service),
    EndpointSlice(k8s_openapi::api::discovery::v1::EndpointSlice),
    Secret(k8s_openapi::api::core::v1::Secret),
}

/// A manifest directory and the last good parse of each file in it.
pub struct ManifestDir {
    root: PathBuf,
    /// Further directories read after `root` (the ACME state directory's Secrets); missing ones are empty.
    extra_roots: Vec<PathBuf>,
    last_good: HashMap<PathBuf, Vec<Object>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest directory {path}: {source}")]
    Dir { path: String, source: std::io::Error },
}

impl ManifestDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            extra_roots: Vec::new(),
            last_good: HashMap::new(),
        }
    }

    /// Also reads `dir` (which may not exist yet). Its Secrets replace same-named Secrets of the main root: this
    /// is how certificates issued by ACME into the state directory reach the certificate stage.
    pub fn with_extra_root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.extra_roots.push(dir.into());
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A cheap fingerprint of the directory (names, sizes, modification times) to notice changes.
    pub fn fingerprint(&self) -> Result<u64, ManifestError> {
        let files = self.files()?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for f in files {
            f.hash(&mut h);
            if let Ok(m) = std::fs::metadata(&f) {
                m.len().hash(&mut h);
                m.modified()
                    .ok()
                    .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                    .hash(&mut h);
            }
        }
        Ok(h.finish())
    }

    fn files(&self) -> Result<Vec<PathBuf>, ManifestError> {
        let mut out = Self::files_under(&self.root, true)?;
        for extra in &self.extra_roots {
            out.extend(Self::files_under(extra, false)?);
        }
        Ok(out)
    }

    fn files_under(root: &Path, required: bool) -> Result<Vec<PathBuf>, ManifestError> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        let mut first = true;
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(source) if first && required => {
                    return Err(ManifestError::Dir {
                        path: dir.display().to_string(),
                        source,
                    })
                }
                Err(_) => continue,
            };
            first = false;
            for entry in entries.flatten() {
                let name = entry.file_name();
                if name.to_string_lossy().starts_with('.') {
                    continue;
                }
                let path = entry.path();
                // Follow symlinks (mounted ConfigMaps link their files).
                match std::fs::metadata(&path) {
                    Ok(m) if m.is_dir() => stack.push(path),
                    Ok(m) if m.is_file() => {
                        if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                            out.push(path);
                        }
                    }
                    _ => {}
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Reads the directory. Files that fail keep their last good objects; every failure is a diagnostic.
    pub fn load(&mut self) -> Result<(ClusterState, Vec<Diagnostic>), ManifestError> {
        let files = self.files()?;
        let mut diagnostics = Vec::new();
        let mut next = HashMap::new();
        for file in files {
            let shown = file.strip_prefix(&self.root).unwrap_or(&file).display().to_string();
            let parsed = match std::fs::read_to_string(&file) {
                Ok(text) => parse_documents(&text, &shown),
                Err(e) => (
                    Vec::new(),
                    vec![Diagnostic {
                        subject: Subject::File(shown.clone()),
                        reason: format!("cannot read: {e}"),
                    }],
                ),
            };
            let (objects, errors) = parsed;
            let objects = if errors.is_empty() {
                objects
            } else {
                diagnostics.extend(errors);
                match self.last_good.remove(&file) {
                    Some(old) => {
                        diagnostics.push(Diagnostic {
                            subject: Subject::File(shown),
                            reason: "keeping the objects of the last good version of this file".into(),
                        });
                        old
                    }
                    None => objects,
                }
            };
            next.insert(file, objects);
        }
        self.last_good = next;
        let mut state = ClusterState::default();
        let extra = |p: &Path| self.extra_roots.iter().any(|r| p.starts_with(r));
        let mut paths: Vec<&PathBuf> = self.last_good.keys().collect();
        // Main root first, then the extra roots, each in name order.
        paths.sort_by_key(|p| (extra(p), *p));
        for p in paths {
            for o in &self.last_good[p] {
                if extra(p) {
                    if let Object::Secret(s) = o {
                        let key = |x: &k8s_openapi::api::core::v1::Secret| {
                            (
                                x.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
                                x.metadata.name.clone(),
                            )
                        };
                        state.secrets.retain(|old| key(old) != key(s));
                    }
                }
                o.clone().add_to(&mut state);
            }
        }
        Ok((state, diagnostics))
    }
}

/// Parses one multi-document YAML text (named `file` in diagnostics) into a state. Used by `portico check`-like
/// tools and tests that hold manifests in memory.
pub fn state_from_yaml(text: &str, file: &str) -> (ClusterState, Vec<Diagnostic>) {
    let (objects, diagnostics) = parse_documents(text, file);
    let mut state = ClusterState::default();
    for o in objects {
        o.add_to(&mut state);
    }
    (state, diagnostics)
}

impl Object {
    fn add_to(self, state: &mut ClusterState) {
        match self {
            Object::Ingress(x) => state.ingresses.push(x),
            Object::IngressClass(x) => state.ingress_classes.push(x),
            Object::Service(x) => state.services.push(x),
            Object::EndpointSlice(x) => state.endpoint_slices.push(x),
            Object::Secret(x) => state.secrets.push(x),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

/// Parses a multi-document YAML text into objects and per-document diagnostics.
fn parse_documents(text: &str, file: &str) -> (Vec<Object>, Vec<Diagnostic>) {
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let err = |reason: String| Diagnostic {
            subject: Subject::Document {
                file: file.to_string(),
                index,
            },
            reason,
        };
        let value = match serde_yaml::Value::deserialize(doc) {
            Ok(v) => v,
            Err(e) => {
                errors.push(err(format!("invalid YAML: {e}")));
                // A syntax error ends the stream: later documents cannot be located reliably.
                break;
            }
        };
        if let Err(reason) = parse_value(value, &mut objects) {
            errors.push(err(reason));
        }
    }
    (objects, errors)
}

fn parse_value(value: serde_yaml::Value, out: &mut Vec<Object>) -> Result<(), String> {
    if value.is_null() {
        return Ok(());
    }
    let meta: TypeMeta = serde_yaml::from_value(value.clone()).map_err(|e| format!("not a Kubernetes object: {e}"))?;
    let (Some(api), Some(kind)) = (meta.api_version.as_deref(), meta.kind.as_deref()) else {
        return Err("not a Kubernetes object: apiVersion and kind are required".into());
    };
    fn typed<T: serde::de::DeserializeOwned>(v: serde_yaml::Value, kind: &str) -> Result<T, String> {
        serde_yaml::from_value(v).map_err(|e| format!("invalid {kind}: {e}"))
    }
    let obj = match (api, kind) {
        ("networking.k8s.io/v1", "Ingress") => Object::Ingress(typed(value, kind)?),
        ("networking.k8s.io/v1", "IngressClass") => Object::IngressClass(typed(value, kind)?),
        ("v1", "Service") => Object::Service(typed(value, kind)?),
        ("discovery.k8s.io/v1", "EndpointSlice") => Object::EndpointSlice(typed(value, kind)?),
        ("v1", "Secret") => Object::Secret(typed(value, kind)?),
        ("v1", "List") => {
            let items = value
                .get("items")
                .and_then(|i| i.as_sequence())
                .cloned()
                .unwrap_or_default();
            for item in items {
                parse_value(item, out)?;
            }
            return Ok(());
        }
        (_, "Ingress" | "IngressClass" | "EndpointSlice") => {
            return Err(format!(
                "{kind} apiVersion {api:?} is not supported (use networking.k8s.io/v1 or discovery.k8s.io/v1)"
            ))
        }
        _ => return Ok(()),
    };
    let name_missing = match &obj {
        Object::Ingress(x) => x.metadata.name.is_none(),
        Object::IngressClass(x) => x.metadata.name.is_none(),
        Object::Service(x) => x.metadata.name.is_none(),
        Object::EndpointSlice(x) => x.metadata.name.is_none(),
        Object::Secret(x) => x.metadata.name.is_none(),
    };
    if name_missing {
        return Err(format!("{kind} has no metadata.name"));
    }
    out.push(obj);
    Ok(())
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
        let (objs, errs) = parse_documents(text, "x.yaml");
        assert_eq!(objs.len(), 2, "{objs:?}");
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

    #[test]
    fn broken_file_keeps_its_last_good_objects() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("svc.yaml");
        std::fs::write(&f, "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n").unwrap();
        std::fs::create_dir(dir.path().join(".hidden")).unwrap();
        std::fs::write(
            dir.path().join(".hidden/x.yaml"),
            "apiVersion: v1\nkind: Service\nmetadata: {name: h}\n",
        )
        .unwrap();
        let mut m = ManifestDir::new(dir.path());
        let (s, d) = m.load().unwrap();
        assert_eq!((s.services.len(), d.len()), (1, 0));
        let fp = m.fingerprint().unwrap();
        std::fs::write(&f, "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n: : :\n").unwrap();
        assert_ne!(m.fingerprint().unwrap(), fp);
        let (s, d) = m.load().unwrap();
        assert_eq!(s.services.len(), 1);
        assert!(d[0].to_string().contains("svc.yaml document 1: invalid YAML"), "{d:?}");
        assert!(d[1].reason.contains("last good"), "{d:?}");
        std::fs::remove_file(&f).unwrap();
        let (s, _) = m.load().unwrap();
        assert!(s.services.is_empty());
        assert!(ManifestDir::new(dir.path().join("nope")).load().is_err());
    }

    #[test]
    fn extra_root_secrets_replace_same_named_ones() {
        let main = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let extra = state.path().join("secrets");
        let secret = |ns: &str, name: &str, v: &str| {
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\nstringData: {{v: {v}}}\n"
            )
        };
        std::fs::write(
            main.path().join("s.yaml"),
            secret("default", "a", "main") + "---\n" + &secret("default", "b", "main"),
        )
        .unwrap();
        let mut m = ManifestDir::new(main.path()).with_extra_root(&extra);
        // A missing extra root is empty, not an error.
        let (s, d) = m.load().unwrap();
        assert_eq!((s.secrets.len(), d.len()), (2, 0));
        std::fs::create_dir_all(extra.join("default")).unwrap();
        std::fs::write(extra.join("default/a.yaml"), secret("default", "a", "state")).unwrap();
        let (s, _) = m.load().unwrap();
        let v: Vec<(String, String)> = s
            .secrets
            .iter()
            .map(|x| {
                (
                    x.metadata.name.clone().unwrap(),
                    x.string_data.as_ref().unwrap()["v"].clone(),
                )
            })
            .collect();
        assert_eq!(v, vec![("b".into(), "main".into()), ("a".into(), "state".into())]);
    }
}
