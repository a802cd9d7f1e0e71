//! The per-file store: what each file of the manifest directory last contributed, and the [`ClusterState`]
//! assembled from it. A file that cannot be read or parsed keeps contributing its last good version, so a broken
//! edit loses nothing.
//!
//! Parsing dominates a reload, so a load parses only the files whose content changed and keeps every other
//! file's objects where they are: one copy of each object, moved (never cloned) between the per-file store and
//! the [`ClusterState`] handed out.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::parse::{counts_of, one_document, parse_documents, parse_values, read_values, split_documents, Parse};
use super::scan::{fingerprint, yaml_files, ManifestError, Stamp};
use crate::model::{ClusterState, Diagnostic, Severity, Subject};

/// A manifest directory and what each file in it last contributed.
///
/// Invariant: between loads, the objects of every file live in `state`, file after file in `order`, each file's
/// objects of a kind counted by its entry's `counts`; the entries hold none but their Secrets (few, and copied
/// into the state, see `load`). A load takes the objects back out (without copying them when nobody else holds
/// the state), refreshes the files that changed, and moves them in again.
pub struct ManifestDir {
    root: PathBuf,
    /// Further directories read after `root` (the ACME state directory's Secrets); missing ones are empty.
    extra_roots: Vec<PathBuf>,
    files: HashMap<PathBuf, FileEntry>,
    order: Vec<PathBuf>,
    state: Arc<ClusterState>,
    parse: Parse,
}

/// What one file contributes, and how to tell whether it changed since.
struct FileEntry {
    stamp: Option<Stamp>,
    /// When the content was last read (taken before reading).
    read_at: SystemTime,
    content: u64,
    /// The objects of the current version, or of the last good one when the current one is broken. Empty while
    /// they are lent to [`ManifestDir::state`].
    objects: ClusterState,
    /// Ingresses, IngressClasses, Services and EndpointSlices of this file in `ManifestDir::state`.
    counts: [usize; 4],
    /// The current version's diagnostics, reported again on every load.
    diagnostics: Vec<Diagnostic>,
    /// The documents `objects` came from, in order, when they were parsed one by one (else empty): an edit to a
    /// large file parses only the documents whose text changed and moves the others' objects over.
    docs: Vec<Doc>,
}

impl FileEntry {
    /// Takes the objects out to be lent to the state, remembering how many of each kind there were.
    fn lend_objects(&mut self) -> ClusterState {
        let o = std::mem::take(&mut self.objects);
        self.counts = [
            o.ingresses.len(),
            o.ingress_classes.len(),
            o.services.len(),
            o.endpoint_slices.len(),
        ];
        o
    }
}

/// One document of a file: a digest of its text and how many objects of each kind it gave (Ingresses,
/// IngressClasses, Services, EndpointSlices, Secrets), which locates them in the file's object lists.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Doc {
    digest: u64,
    counts: [u32; 5],
}

/// A file modified less than this long before it was read may be modified again within the same timestamp
/// granule (coarse kernel clocks, filesystems with whole-second times), so its stamp alone does not prove it
/// unchanged: such a file is read again (and parsed only if its content differs).
const RACY: Duration = Duration::from_secs(2);

impl ManifestDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            extra_roots: Vec::new(),
            files: HashMap::new(),
            order: Vec::new(),
            state: Arc::default(),
            parse: Parse::default(),
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

    /// How many YAML documents the loads so far parsed (a document whose text did not change is not parsed
    /// again; a file that must be parsed whole counts as none).
    pub fn documents_parsed(&self) -> u64 {
        self.parse.parsed
    }

    /// A cheap fingerprint of the directory (names, sizes, modification times) to notice changes.
    pub fn fingerprint(&self) -> Result<u64, ManifestError> {
        Ok(fingerprint(&self.files()?))
    }

    fn files(&self) -> Result<Vec<PathBuf>, ManifestError> {
        yaml_files(&self.root, &self.extra_roots)
    }

    /// Reads the directory. Files that fail keep their last good objects; every failure is a diagnostic. Only
    /// files that changed since the last load are parsed again; the result is the same as a first load's. The
    /// state is cheapest to produce again when the caller has dropped the previous one.
    pub fn load(&mut self) -> Result<(Arc<ClusterState>, Vec<Diagnostic>), ManifestError> {
        let reads = self.parse.texts_read;
        let loaded = self.read();
        if self.parse.texts_read != reads {
            // The YAML reader's working set was freed in an allocator arena of its own (see
            // `parse::on_helper_thread`); hand its pages back to the system.
            portico_heap_trim::trim();
        }
        loaded
    }

    fn read(&mut self) -> Result<(Arc<ClusterState>, Vec<Diagnostic>), ManifestError> {
        let files = self.files()?;
        if files == self.order && !files.is_empty() {
            return Ok(self.load_in_place());
        }
        self.take_back();
        let mut next = HashMap::with_capacity(files.len());
        for file in &files {
            let shown = file.strip_prefix(&self.root).unwrap_or(file).display().to_string();
            let entry = refresh(file, &shown, self.files.remove(file), &mut self.parse);
            next.insert(file.clone(), entry);
        }
        self.files = next;

        let mut diagnostics = Vec::new();
        let mut state = ClusterState::default();
        let total = |f: fn(&ClusterState) -> usize| self.files.values().map(|e| f(&e.objects)).sum::<usize>();
        state.ingresses.reserve_exact(total(|s| s.ingresses.len()));
        state.services.reserve_exact(total(|s| s.services.len()));
        state.endpoint_slices.reserve_exact(total(|s| s.endpoint_slices.len()));
        // Main root first, then the extra roots, each in name order (the order `files` lists them in).
        for p in &files {
            let extra = self.extra_roots.iter().any(|r| p.starts_with(r));
            let entry = self.files.get_mut(p).expect("every listed file has an entry");
            diagnostics.extend(entry.diagnostics.iter().cloned());
            let o = entry.lend_objects();
            add_secrets(&mut state, extra, &o.secrets);
            entry.objects.secrets = o.secrets;
            state.gateway.extend(&o.gateway);
            entry.objects.gateway = o.gateway;
            state.ingresses.extend(o.ingresses);
            state.ingress_classes.extend(o.ingress_classes);
            state.services.extend(o.services);
            state.endpoint_slices.extend(o.endpoint_slices);
        }
        self.order = files;
        self.state = Arc::new(state);
        self.parse.strings.prune();
        Ok((self.state.clone(), diagnostics))
    }

    /// [`ManifestDir::load`] when the same files are listed as last time: the objects stay in the state; only a
    /// file that may have changed has its objects taken out (its ranges drained), refreshed, and spliced back in
    /// the same place, so an edit costs a move of the objects after it rather than of all of them.
    fn load_in_place(&mut self) -> (Arc<ClusterState>, Vec<Diagnostic>) {
        let state = std::mem::take(&mut self.state);
        let mut state = Arc::try_unwrap(state).unwrap_or_else(|shared| (*shared).clone());
        // Where each file's objects start, before any change.
        let mut starts = Vec::with_capacity(self.order.len());
        let mut at = [0usize; 4];
        for p in &self.order {
            starts.push(at);
            let entry = &self.files[p];
            for (a, c) in at.iter_mut().zip(entry.counts) {
                *a += c;
            }
        }
        // Last file first, so that splicing one does not move the ranges of those before it.
        for (p, start) in self.order.iter().zip(starts).rev() {
            let stamp = std::fs::metadata(p).ok().map(|m| Stamp::of(&m));
            let mut entry = self.files.remove(p).expect("every listed file has an entry");
            if unchanged(stamp, &entry) {
                self.files.insert(p.clone(), entry);
                continue;
            }
            let [i, c, s, e] = entry.counts;
            let o = &mut entry.objects;
            o.ingresses = state.ingresses.drain(start[0]..start[0] + i).collect();
            o.ingress_classes = state.ingress_classes.drain(start[1]..start[1] + c).collect();
            o.services = state.services.drain(start[2]..start[2] + s).collect();
            o.endpoint_slices = state.endpoint_slices.drain(start[3]..start[3] + e).collect();
            let shown = p.strip_prefix(&self.root).unwrap_or(p).display().to_string();
            let mut entry = refresh(p, &shown, Some(entry), &mut self.parse);
            let o = entry.lend_objects();
            state.ingresses.splice(start[0]..start[0], o.ingresses);
            state.ingress_classes.splice(start[1]..start[1], o.ingress_classes);
            state.services.splice(start[2]..start[2], o.services);
            state.endpoint_slices.splice(start[3]..start[3], o.endpoint_slices);
            entry.objects.secrets = o.secrets;
            entry.objects.gateway = o.gateway;
            self.files.insert(p.clone(), entry);
        }
        let mut diagnostics = Vec::new();
        state.secrets.clear();
        state.gateway = Default::default();
        for p in &self.order {
            let entry = &self.files[p];
            diagnostics.extend(entry.diagnostics.iter().cloned());
            let extra = self.extra_roots.iter().any(|r| p.starts_with(r));
            add_secrets(&mut state, extra, &entry.objects.secrets);
            state.gateway.extend(&entry.objects.gateway);
        }
        self.state = Arc::new(state);
        self.parse.strings.prune();
        (self.state.clone(), diagnostics)
    }

    /// Moves every file's objects out of the last state back into its entry (copying them only when the state
    /// is still shared).
    fn take_back(&mut self) {
        let state = std::mem::take(&mut self.state);
        let state = Arc::try_unwrap(state).unwrap_or_else(|shared| (*shared).clone());
        let mut ingresses = state.ingresses.into_iter();
        let mut classes = state.ingress_classes.into_iter();
        let mut services = state.services.into_iter();
        let mut slices = state.endpoint_slices.into_iter();
        for p in &self.order {
            let Some(entry) = self.files.get_mut(p) else { continue };
            let [i, c, s, e] = entry.counts;
            let o = &mut entry.objects;
            o.ingresses.extend(ingresses.by_ref().take(i));
            o.ingress_classes.extend(classes.by_ref().take(c));
            o.services.extend(services.by_ref().take(s));
            o.endpoint_slices.extend(slices.by_ref().take(e));
            entry.counts = [0; 4];
        }
    }
}

/// Copies a file's Secrets into the state. Secrets stay with their file: they are few, and a Secret of an extra
/// root (`extra`) replaces a same-named one of another file, so the state may hold fewer than the files.
fn add_secrets(state: &mut ClusterState, extra: bool, secrets: &[k8s_openapi::api::core::v1::Secret]) {
    if extra {
        let key = |x: &k8s_openapi::api::core::v1::Secret| {
            (
                x.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
                x.metadata.name.clone(),
            )
        };
        for s in secrets {
            state.secrets.retain(|old| key(old) != key(s));
        }
    }
    state.secrets.extend(secrets.iter().cloned());
}

/// Whether a file whose stamp is now `stamp` certainly still has the content `old` read (see [`RACY`]).
fn unchanged(stamp: Option<Stamp>, old: &FileEntry) -> bool {
    let settled = stamp
        .and_then(|s| s.modified)
        .and_then(|m| old.read_at.duration_since(m).ok())
        .is_some_and(|age| age >= RACY);
    stamp.is_some() && stamp == old.stamp && settled
}

/// The new entry of `file`: `old` as it is when the file did not change, else the file read (and parsed when its
/// content differs). A broken version keeps the objects of `old`.
fn refresh(file: &Path, shown: &str, old: Option<FileEntry>, cx: &mut Parse) -> FileEntry {
    let stamp = std::fs::metadata(file).ok().map(|m| Stamp::of(&m));
    let old = match old {
        Some(old) if unchanged(stamp, &old) => return old,
        old => old,
    };
    let read_at = SystemTime::now();
    let mut old = old;
    let (content, (objects, mut diagnostics), docs) = match std::fs::read_to_string(file) {
        Ok(text) => {
            cx.texts_read += 1;
            let mut h = std::collections::hash_map::DefaultHasher::new();
            text.hash(&mut h);
            let content = h.finish();
            match old {
                Some(old) if old.content == content => {
                    return FileEntry { stamp, read_at, ..old };
                }
                _ => match parse_by_document(&text, old.as_mut(), cx) {
                    Some((objects, docs)) => (content, (objects, Vec::new()), docs),
                    None => (content, parse_documents(&text, shown, &mut cx.strings), Vec::new()),
                },
            }
        }
        Err(e) => (
            0,
            (
                ClusterState::default(),
                vec![Diagnostic {
                    subject: Subject::File(shown.to_string()),
                    reason: format!("cannot read: {e}"),
                    severity: Severity::Error,
                }],
            ),
            Vec::new(),
        ),
    };
    let (objects, docs) = match old {
        Some(old) if !diagnostics.is_empty() => {
            diagnostics.push(Diagnostic {
                subject: Subject::File(shown.to_string()),
                reason: "keeping the objects of the last good version of this file".into(),
                severity: Severity::Error,
            });
            (old.objects, old.docs)
        }
        _ => (objects, docs),
    };
    FileEntry {
        stamp,
        read_at,
        content,
        objects,
        counts: [0; 4],
        diagnostics,
        docs,
    }
}

/// Parses a file's text document by document, moving the objects of documents whose text did not change out of
/// `old` instead of parsing them again. `None` (with `old` untouched) when the text does not split simply, or a
/// document has an error or is not read as one document: the caller parses the whole text then, so
/// diagnostics name documents and positions exactly as before.
fn parse_by_document(text: &str, old: Option<&mut FileEntry>, cx: &mut Parse) -> Option<(ClusterState, Vec<Doc>)> {
    let chunks = split_documents(text)?;
    let digest = |chunk: &str| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        chunk.hash(&mut h);
        h.finish()
    };
    // Gateway API objects stay with their file and are not counted per document: a file holding any is parsed
    // whole (they are few).
    if old.as_deref().is_some_and(|o| !o.objects.gateway.is_empty()) {
        return None;
    }
    // The old documents by digest (in file order, for repeated documents), with where each one's objects start.
    let mut reusable: HashMap<u64, std::collections::VecDeque<(usize, [usize; 5])>> = HashMap::new();
    if let Some(old) = old.as_deref() {
        let mut starts = [0usize; 5];
        for (i, doc) in old.docs.iter().enumerate() {
            reusable.entry(doc.digest).or_default().push_back((i, starts));
            for (s, c) in starts.iter_mut().zip(doc.counts) {
                *s += c as usize;
            }
        }
    }
    // Nothing to reuse (a first read): parse straight into one state, as a whole-file parse does (no second
    // copy of the objects while they are assembled).
    if reusable.is_empty() {
        let mut out = ClusterState::default();
        let mut docs = Vec::with_capacity(chunks.len());
        let simple = read_values(&chunks, |n, values| {
            let before = counts_of(&out);
            if !one_document(parse_values(values, &mut out, cx), n) {
                return false;
            }
            let after = counts_of(&out);
            let counts = std::array::from_fn(|k| (after[k] - before[k]) as u32);
            docs.push(Doc {
                digest: digest(chunks[n]),
                counts,
            });
            true
        });
        if !simple {
            return None;
        }
        out.ingresses.shrink_to_fit();
        out.services.shrink_to_fit();
        out.endpoint_slices.shrink_to_fit();
        return Some((out, docs));
    }
    enum Part {
        Old([usize; 5]),
        New(Box<ClusterState>),
    }
    let mut parts = Vec::with_capacity(chunks.len());
    let mut docs = Vec::with_capacity(chunks.len());
    // The documents to parse (their indexes in `chunks`); their parts and counts are filled in below.
    let mut fresh = Vec::new();
    for (n, chunk) in chunks.iter().enumerate() {
        let d = digest(chunk);
        if let Some((i, starts)) = reusable.get_mut(&d).and_then(|q| q.pop_front()) {
            let counts = old.as_deref().expect("reusable docs come from old").docs[i].counts;
            docs.push(Doc { digest: d, counts });
            parts.push(Part::Old(starts));
            continue;
        }
        fresh.push(n);
        docs.push(Doc {
            digest: d,
            counts: [0; 5],
        });
        parts.push(Part::New(Box::default()));
    }
    let texts: Vec<&str> = fresh.iter().map(|&n| chunks[n]).collect();
    let simple = read_values(&texts, |i, values| {
        let n = fresh[i];
        let mut objects = ClusterState::default();
        if !one_document(parse_values(values, &mut objects, cx), n) || !objects.gateway.is_empty() {
            return false;
        }
        docs[n].counts = counts_of(&objects).map(|c| c as u32);
        parts[n] = Part::New(Box::new(objects));
        true
    });
    if !simple {
        return None;
    }
    let mut out = ClusterState::default();
    let mut total = [0usize; 5];
    for d in &docs {
        for (t, c) in total.iter_mut().zip(d.counts) {
            *t += c as usize;
        }
    }
    out.ingresses.reserve_exact(total[0]);
    out.ingress_classes.reserve_exact(total[1]);
    out.services.reserve_exact(total[2]);
    out.endpoint_slices.reserve_exact(total[3]);
    out.secrets.reserve_exact(total[4]);
    let mut old_objects = old.map(|o| &mut o.objects);
    for (part, doc) in parts.into_iter().zip(&docs) {
        match part {
            Part::New(o) => {
                let o = *o;
                out.ingresses.extend(o.ingresses);
                out.ingress_classes.extend(o.ingress_classes);
                out.services.extend(o.services);
                out.endpoint_slices.extend(o.endpoint_slices);
                out.secrets.extend(o.secrets);
            }
            Part::Old(starts) => {
                let from = old_objects.as_deref_mut().expect("reused documents come from old");
                let c = doc.counts.map(|c| c as usize);
                move_range(&mut from.ingresses, starts[0], c[0], &mut out.ingresses);
                move_range(&mut from.ingress_classes, starts[1], c[1], &mut out.ingress_classes);
                move_range(&mut from.services, starts[2], c[2], &mut out.services);
                move_range(&mut from.endpoint_slices, starts[3], c[3], &mut out.endpoint_slices);
                move_range(&mut from.secrets, starts[4], c[4], &mut out.secrets);
            }
        }
    }
    Some((out, docs))
}

/// Moves `n` objects from `start` in `from` (leaving defaults) to the end of `to`.
fn move_range<T: Default>(from: &mut [T], start: usize, n: usize, to: &mut Vec<T>) {
    to.extend(from[start..start + n].iter_mut().map(std::mem::take));
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Gateway API objects and Namespaces load with their file, follow its edits (in place or not) and go with it.
    #[test]
    fn gateway_objects_follow_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let gw = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: a}\nspec: {gatewayClassName: portico, listeners: [{name: http, port: 80, protocol: HTTP}]}\n";
        let route = |n: &str| {
            format!("---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {n}, namespace: a}}\nspec: {{parentRefs: [{{name: gw}}]}}\n")
        };
        let svc = "---\napiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: a}\n";
        let f = dir.path().join("gw.yaml");
        std::fs::write(
            &f,
            format!(
                "{gw}{}{svc}---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: a, labels: {{team: x}}}}\n",
                route("r1")
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("other.yaml"), route("r0")).unwrap();
        let mut m = ManifestDir::new(dir.path());
        let (s, d) = m.load().unwrap();
        assert!(d.is_empty(), "{d:?}");
        let g = &s.gateway;
        assert_eq!(
            (
                g.gateways.len(),
                g.http_routes.len(),
                g.namespaces.len(),
                s.services.len()
            ),
            (1, 2, 1, 1)
        );
        // An edit of one document: the file is read again whole, nothing lost or doubled.
        std::fs::write(&f, format!("{gw}{}{}{svc}", route("r1"), route("r2"))).unwrap();
        let (s, _) = m.load().unwrap();
        let mut names: Vec<_> = s
            .gateway
            .http_routes
            .iter()
            .filter_map(|r| r.metadata.name.clone())
            .collect();
        names.sort();
        assert_eq!(names, ["r0", "r1", "r2"]);
        assert_eq!(
            (s.gateway.gateways.len(), s.gateway.namespaces.len(), s.services.len()),
            (1, 0, 1)
        );
        std::fs::remove_file(&f).unwrap();
        let (s, _) = m.load().unwrap();
        assert_eq!((s.gateway.gateways.len(), s.gateway.http_routes.len()), (0, 1));
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
        // Loading again (nothing changed, then the override removed) keeps every file's own Secrets.
        let show = |(s, d): (Arc<ClusterState>, Vec<Diagnostic>)| format!("{s:?}\n{d:?}");
        let cold = |m: &Path| show(ManifestDir::new(m).with_extra_root(&extra).load().unwrap());
        assert_eq!(show(m.load().unwrap()), cold(main.path()));
        std::fs::remove_file(extra.join("default/a.yaml")).unwrap();
        let (s, _) = m.load().unwrap();
        assert_eq!(s.secrets.len(), 2);
        drop(s);
        assert_eq!(show(m.load().unwrap()), cold(main.path()));
    }

    /// A directory loaded again after each change gives what a fresh `ManifestDir` reads: edits, same-size
    /// rewrites with the old modification time, renames, removals, additions, a broken file and its fix, and a
    /// caller that still holds the previous state.
    #[test]
    fn incremental_loads_equal_cold_loads() {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        let svc = |name: &str, port: u16| {
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{port: {port}}}]}}\n")
        };
        let ing = |name: &str, host: &str| {
            format!(
                "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}}}\nspec: {{rules: [{{host: {host}}}]}}\n"
            )
        };
        std::fs::write(p("a.yaml"), svc("a", 80) + "---\n" + &ing("a", "a.example")).unwrap();
        std::fs::write(p("b.yaml"), ing("b", "b.example")).unwrap();
        std::fs::create_dir(p("sub")).unwrap();
        std::fs::write(p("sub/c.yml"), svc("c", 81) + "---\n" + &ing("c", "c.example")).unwrap();

        let mut warm = ManifestDir::new(dir.path());
        let show = |(s, d): (Arc<ClusterState>, Vec<Diagnostic>)| format!("{s:?}\n{d:?}");
        let cold = || show(ManifestDir::new(dir.path()).load().unwrap());
        assert_eq!(show(warm.load().unwrap()), cold());

        type Step<'a> = (&'a str, Box<dyn Fn() + 'a>);
        let steps: Vec<Step> = vec![
            (
                "edit",
                Box::new(|| std::fs::write(p("b.yaml"), ing("b", "b2.example")).unwrap()),
            ),
            (
                "same size, old mtime",
                Box::new(|| {
                    let before = std::fs::metadata(p("b.yaml")).unwrap().modified().unwrap();
                    std::fs::write(p("b.yaml"), ing("b", "b3.example")).unwrap();
                    let f = std::fs::File::options().write(true).open(p("b.yaml")).unwrap();
                    f.set_modified(before).unwrap();
                }),
            ),
            (
                "rename",
                Box::new(|| std::fs::rename(p("a.yaml"), p("z.yaml")).unwrap()),
            ),
            ("remove", Box::new(|| std::fs::remove_file(p("sub/c.yml")).unwrap())),
            (
                "add",
                Box::new(|| std::fs::write(p("d.yaml"), svc("d", 82) + "---\n" + &svc("e", 83)).unwrap()),
            ),
            (
                "touch, same content",
                Box::new(|| std::fs::write(p("d.yaml"), svc("d", 82) + "---\n" + &svc("e", 83)).unwrap()),
            ),
            (
                "not a manifest",
                Box::new(|| std::fs::write(p("notes.txt"), "x").unwrap()),
            ),
        ];
        let mut held = Vec::new();
        for (what, step) in steps {
            step();
            let (state, diags) = warm.load().unwrap();
            assert_eq!(show((state.clone(), diags)), cold(), "after {what}");
            // Holding on to a state must not change what the next load sees.
            held.push(state);
        }

        // A broken edit keeps the last good objects; fixing it reads the new version.
        std::fs::write(
            p("z.yaml"),
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n: : :\n",
        )
        .unwrap();
        let (state, diags) = warm.load().unwrap();
        assert_eq!(state.ingresses.len(), 2, "{state:?}");
        assert!(diags.iter().any(|d| d.reason.contains("last good")), "{diags:?}");
        drop(state);
        std::fs::write(p("z.yaml"), svc("a", 90)).unwrap();
        assert_eq!(show(warm.load().unwrap()), cold(), "after the fix");
    }

    /// Editing a large file parses only the documents whose text changed and gives what a fresh load reads:
    /// an edit, a reorder, repeated documents, a document added and removed, text before the first marker, a
    /// List; a broken document, a directive or an end marker make the whole file parse as before (same
    /// diagnostics, last good objects kept).
    #[test]
    fn edited_file_parses_only_changed_documents() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("all.yaml");
        let svc = |name: &str, port: u16| {
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{port: {port}}}]}}\n")
        };
        let ing = |name: &str| {
            format!("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}}}\nspec: {{rules: [{{host: {name}.example}}]}}\n")
        };
        let list = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Service, metadata: {name: l1}}\n- {apiVersion: v1, kind: Service, metadata: {name: l2}}\n";
        let docs = |parts: &[String]| format!("# leading comment\n{}", parts.join("---\n"));
        let mut parts: Vec<String> = (0..6)
            .flat_map(|i| [svc(&format!("s{i}"), 80), ing(&format!("i{i}"))])
            .collect();
        parts.push(list.to_string());
        std::fs::write(&f, docs(&parts)).unwrap();

        let mut warm = ManifestDir::new(dir.path());
        let show = |(s, d): (Arc<ClusterState>, Vec<Diagnostic>)| format!("{s:?}\n{d:?}");
        let cold = || show(ManifestDir::new(dir.path()).load().unwrap());
        assert_eq!(show(warm.load().unwrap()), cold());
        assert_eq!(warm.documents_parsed(), 13);

        type Edit<'a> = (&'a str, u64, Box<dyn Fn(&mut Vec<String>) -> String + 'a>);
        let edits: Vec<Edit> = vec![
            (
                "edit one",
                1,
                Box::new(|p| {
                    p[4] = svc("s2", 81);
                    docs(p)
                }),
            ),
            (
                "reorder",
                0,
                Box::new(|p| {
                    p.swap(2, 7);
                    docs(p)
                }),
            ),
            (
                "repeat one",
                1,
                Box::new(|p| {
                    p.push(p[1].clone());
                    docs(p)
                }),
            ),
            (
                "add and remove",
                1,
                Box::new(|p| {
                    p.remove(3);
                    p.insert(5, svc("new", 90));
                    docs(p)
                }),
            ),
            (
                "marker line with content",
                1,
                Box::new(|p| docs(p) + "--- {apiVersion: v1, kind: Service, metadata: {name: inline}}\n"),
            ),
            ("broken document", 1, Box::new(|p| docs(p) + "---\n: : :\n")),
            ("fixed", 0, Box::new(|p| docs(p))),
            ("end marker", 0, Box::new(|p| docs(p) + "...\n")),
            (
                "directive",
                0,
                Box::new(|p| format!("%YAML 1.2\n---\n{}", p.join("---\n"))),
            ),
            ("plain again", 14, Box::new(|p| docs(p))),
        ];
        for (what, parsed, edit) in edits {
            let before = warm.documents_parsed();
            let text = edit(&mut parts);
            std::fs::write(&f, text).unwrap();
            let (state, diags) = warm.load().unwrap();
            if what == "broken document" {
                assert!(diags.iter().any(|d| d.reason.contains("last good")), "{diags:?}");
                assert!(diags[0].to_string().contains("document 14: invalid YAML"), "{diags:?}");
                continue;
            }
            assert_eq!(show((state, diags)), cold(), "after {what}");
            assert_eq!(
                warm.documents_parsed() - before,
                parsed,
                "documents parsed after {what}"
            );
        }
    }
}
