//! The in-memory object store: objects as JSON, one global resourceVersion counter, an event history for
//! watch resumption, the registry of open watches, and the test-control state (recorded requests,
//! injected failures).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc::UnboundedSender;

use crate::resources::ResourceDef;
use crate::selector::{FieldSelector, LabelSelector};
use crate::util::{new_uid, now_rfc3339, random_suffix, ApiError};

/// Type of a stored change, as it appears in watch events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    /// Object created.
    Added,
    /// Object changed.
    Modified,
    /// Object deleted.
    Deleted,
}

/// One entry of the change history.
#[derive(Debug, Clone)]
pub struct Change {
    /// resourceVersion at which the change happened.
    pub rv: u64,
    /// Index of the resource in the store's resource table.
    pub res: usize,
    /// What happened.
    pub kind: ChangeType,
    /// The object after the change (for deletions: the last state, carrying the deletion's resourceVersion).
    pub object: Value,
    /// The object before the change (modifications only).
    pub old: Option<Value>,
}

/// A request the server received, recorded for tests to inspect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordedRequest {
    /// HTTP method, e.g. `PATCH`.
    pub method: String,
    /// Path without the query, e.g. `/apis/networking.k8s.io/v1/namespaces/default/ingresses/web/status`.
    pub path: String,
    /// Raw (still percent-encoded) query string, `""` if none.
    pub query: String,
    /// `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// Request body as (lossy) UTF-8.
    pub body: String,
    /// Set when the request was failed on purpose by [`crate::FakeApiServer::fail_next`].
    pub injected_failure: Option<u16>,
}

impl RecordedRequest {
    /// The first value of a query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// Whether this is a watch request.
    pub fn is_watch(&self) -> bool {
        matches!(self.query_param("watch").as_deref(), Some("true" | "1"))
    }

    /// The body parsed as JSON (`Value::Null` if it is not JSON).
    pub fn body_json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// Pending injected failures.
#[derive(Debug, Clone, Default)]
pub(crate) struct FailRule {
    pub remaining: u32,
    pub code: u16,
    pub retry_after: Option<u64>,
}

/// An open watch.
pub(crate) struct Watcher {
    res: usize,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    tx: UnboundedSender<Bytes>,
}

impl Watcher {
    fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace {
            if obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("") != ns {
                return false;
            }
        }
        self.labels.matches(obj) && self.fields.matches(obj)
    }

    /// The watch event this watcher must see for a change, if any (real API server semantics: an object
    /// that starts matching is ADDED, one that stops matching is DELETED with its previous content).
    fn event_for(&self, c: &Change) -> Option<(&'static str, Value)> {
        if c.res != self.res {
            return None;
        }
        let now = self.matches(&c.object);
        match c.kind {
            ChangeType::Added => now.then(|| ("ADDED", c.object.clone())),
            ChangeType::Deleted => now.then(|| ("DELETED", c.object.clone())),
            ChangeType::Modified => {
                let before = c.old.as_ref().is_some_and(|o| self.matches(o));
                match (before, now) {
                    (true, true) => Some(("MODIFIED", c.object.clone())),
                    (false, true) => Some(("ADDED", c.object.clone())),
                    (true, false) => {
                        let mut old = c.old.clone().unwrap_or(Value::Null);
                        set_meta(&mut old, "resourceVersion", json!(c.rv.to_string()));
                        Some(("DELETED", old))
                    }
                    (false, false) => None,
                }
            }
        }
    }
}

/// Serialize one watch event as a newline-terminated JSON line.
pub(crate) fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut s = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    s.push(b'\n');
    Bytes::from(s)
}

/// A BOOKMARK event object.
pub(crate) fn bookmark_line(def: &ResourceDef, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line(
        "BOOKMARK",
        &json!({"kind": def.kind, "apiVersion": def.api_version(), "metadata": meta}),
    )
}

/// How a watch should start.
pub(crate) struct WatchRequest {
    pub res: usize,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub resource_version: Option<String>,
    pub send_initial_events: Option<bool>,
}

/// Result of registering a watch.
pub(crate) enum WatchStart {
    /// Registered under this id; replayed events are already queued.
    Registered(u64),
    /// The requested resourceVersion is older than the retained history (send a 410 ERROR event).
    Expired(ApiError),
}

pub(crate) type ObjKey = (usize, String, String);

/// Everything the server knows.
pub struct Store {
    pub(crate) resources: Vec<ResourceDef>,
    objects: BTreeMap<ObjKey, Value>,
    rv: u64,
    history: VecDeque<Arc<Change>>,
    /// Watches from a resourceVersion `>= history_floor` can be served from history.
    history_floor: u64,
    max_history: usize,
    watchers: HashMap<u64, Watcher>,
    next_watch_id: u64,
    pub(crate) requests: Vec<RecordedRequest>,
    pub(crate) fail: FailRule,
    /// Accept `application/apply-patch+yaml` as an approximate merge (see [`crate::Options::apply_as_merge`]).
    pub(crate) apply_as_merge: bool,
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn set_meta(obj: &mut Value, field: &str, value: Value) {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"][field] = value;
}

fn remove_meta(obj: &mut Value, field: &str) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove(field);
    }
}

fn is_secret(def: &ResourceDef) -> bool {
    def.group.is_empty() && def.kind == "Secret"
}

/// What the real API server does to a Secret on every write: `stringData` is merged into `data` (base64) and
/// never stored, and a missing `type` is `Opaque`.
fn secret_defaults(def: &ResourceDef, obj: &mut Value) {
    use base64::Engine;
    if !is_secret(def) {
        return;
    }
    if let Some(Value::Object(string_data)) = obj.as_object_mut().and_then(|m| m.remove("stringData")) {
        if !obj.get("data").is_some_and(Value::is_object) {
            obj["data"] = json!({});
        }
        for (k, v) in string_data {
            let text = v.as_str().unwrap_or_default();
            obj["data"][k.as_str()] = json!(base64::engine::general_purpose::STANDARD.encode(text));
        }
    }
    if obj.get("type").and_then(Value::as_str).is_none_or(str::is_empty) {
        obj["type"] = json!("Opaque");
    }
}

fn parse_rv(s: &str) -> Result<u64, ApiError> {
    s.parse::<u64>()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version {s:?}")))
}

impl Store {
    /// A new, empty store serving `resources`.
    pub fn new(resources: Vec<ResourceDef>, max_history: usize) -> Self {
        Self {
            resources,
            objects: BTreeMap::new(),
            rv: 1,
            history: VecDeque::new(),
            history_floor: 1,
            max_history: max_history.max(1),
            watchers: HashMap::new(),
            next_watch_id: 1,
            requests: Vec::new(),
            fail: FailRule::default(),
            apply_as_merge: false,
        }
    }

    /// The current (latest) global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Lowest resourceVersion a watch can still start from.
    pub fn history_floor(&self) -> u64 {
        self.history_floor
    }

    pub(crate) fn def(&self, res: usize) -> &ResourceDef {
        &self.resources[res]
    }

    pub(crate) fn res_index_by_path(&self, group: &str, version: &str, plural: &str) -> Option<usize> {
        self.resources
            .iter()
            .position(|r| r.group == group && r.version == version && r.plural == plural)
    }

    pub(crate) fn res_index_by_kind(&self, api_version: &str, kind: &str) -> Option<usize> {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        self.resources
            .iter()
            .position(|r| r.group == group && r.version == version && r.kind == kind)
    }

    fn key(&self, res: usize, ns: &str, name: &str) -> ObjKey {
        let ns = if self.resources[res].namespaced { ns } else { "" };
        (res, ns.to_string(), name.to_string())
    }

    fn not_found(&self, res: usize, name: &str) -> ApiError {
        let d = self.def(res);
        ApiError::new(404, format!("{} \"{name}\" not found", d.qualified_plural()))
            .with_details(name, d.group, d.plural)
    }

    fn conflict(&self, res: usize, name: &str, why: &str) -> ApiError {
        let d = self.def(res);
        ApiError::new(
            409,
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                d.qualified_plural()
            ),
        )
        .with_details(name, d.group, d.plural)
    }

    // ----- reads -----

    /// One object.
    pub fn get(&self, res: usize, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&self.key(res, ns, name))
            .cloned()
            .ok_or_else(|| self.not_found(res, name))
    }

    /// All matching objects (sorted by namespace, name) and the current resourceVersion.
    pub fn list(
        &self,
        res: usize,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> (Vec<Value>, u64) {
        let items = self
            .objects
            .range((res, String::new(), String::new())..)
            .take_while(|((r, _, _), _)| *r == res)
            .filter(|((_, o_ns, _), _)| ns.is_none_or(|n| n == o_ns))
            .filter(|(_, o)| labels.matches(o) && fields.matches(o))
            .map(|(_, o)| o.clone())
            .collect();
        (items, self.rv)
    }

    // ----- writes -----

    fn record(&mut self, change: Change) {
        let change = Arc::new(change);
        let mut dead = Vec::new();
        for (id, w) in &self.watchers {
            if let Some((kind, obj)) = w.event_for(&change) {
                if w.tx.send(event_line(kind, &obj)).is_err() {
                    dead.push(*id);
                }
            }
        }
        for id in dead {
            self.watchers.remove(&id);
        }
        self.history.push_back(change);
        while self.history.len() > self.max_history {
            if let Some(c) = self.history.pop_front() {
                self.history_floor = c.rv;
            }
        }
    }

    /// Create an object (POST). `ns` is the namespace from the URL (ignored for cluster-scoped resources).
    /// With `keep_status` (test controls) a `.status` in the body is kept even if the resource has a status
    /// subresource.
    pub fn create(&mut self, res: usize, ns: &str, mut body: Value, keep_status: bool) -> Result<Value, ApiError> {
        let def = *self.def(res);
        if !body.is_object() {
            return Err(ApiError::bad_request("the request body must be a JSON object"));
        }
        if !body.get("metadata").is_some_and(Value::is_object) {
            body["metadata"] = json!({});
        }
        let mut name = meta_str(&body, "name").to_string();
        if name.is_empty() {
            let gen = meta_str(&body, "generateName");
            if !gen.is_empty() {
                name = format!("{gen}{}", random_suffix());
                set_meta(&mut body, "name", json!(name));
            }
        }
        if name.is_empty() {
            return Err(ApiError::new(
                422,
                format!(
                    "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                    def.kind
                ),
            )
            .with_details("", def.group, def.kind));
        }
        if def.namespaced {
            let body_ns = meta_str(&body, "namespace");
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            if ns.is_empty() {
                return Err(ApiError::bad_request(
                    "a namespace is required to create a namespaced object",
                ));
            }
            set_meta(&mut body, "namespace", json!(ns));
        } else {
            remove_meta(&mut body, "namespace");
        }
        if !meta_str(&body, "resourceVersion").is_empty() {
            return Err(ApiError::new(
                500,
                "resourceVersion should not be set on objects to be created",
            ));
        }
        secret_defaults(&def, &mut body);
        let key = self.key(res, ns, &name);
        if self.objects.contains_key(&key) {
            return Err(
                ApiError::new(409, format!("{} \"{name}\" already exists", def.qualified_plural()))
                    .with_reason("AlreadyExists")
                    .with_details(&name, def.group, def.plural),
            );
        }
        body["apiVersion"] = json!(def.api_version());
        body["kind"] = json!(def.kind);
        if def.has_status && !keep_status {
            if let Some(m) = body.as_object_mut() {
                m.remove("status");
            }
        }
        set_meta(&mut body, "uid", json!(new_uid()));
        set_meta(&mut body, "creationTimestamp", json!(now_rfc3339()));
        set_meta(&mut body, "generation", json!(1));
        remove_meta(&mut body, "deletionTimestamp");
        self.rv += 1;
        set_meta(&mut body, "resourceVersion", json!(self.rv.to_string()));
        self.objects.insert(key, body.clone());
        self.record(Change {
            rv: self.rv,
            res,
            kind: ChangeType::Added,
            object: body.clone(),
            old: None,
        });
        Ok(body)
    }

    /// Replace an object (PUT), or its status (PUT on `/status`) when `status_only`.
    ///
    /// `force` (test controls) skips the resourceVersion precondition and keeps `.status` on main-resource
    /// writes.
    pub fn update(
        &mut self,
        res: usize,
        ns: &str,
        name: &str,
        body: Value,
        status_only: bool,
        force: bool,
    ) -> Result<Value, ApiError> {
        let def = *self.def(res);
        if !body.is_object() {
            return Err(ApiError::bad_request("the request body must be a JSON object"));
        }
        let body_name = meta_str(&body, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        if def.namespaced {
            let body_ns = meta_str(&body, "namespace");
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
        let key = self.key(res, ns, name);
        let old = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| self.not_found(res, name))?;
        if !force {
            let want_rv = meta_str(&body, "resourceVersion");
            if !want_rv.is_empty() && want_rv != meta_str(&old, "resourceVersion") {
                return Err(self.conflict(
                    res,
                    name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                ));
            }
            let want_uid = meta_str(&body, "uid");
            if !want_uid.is_empty() && want_uid != meta_str(&old, "uid") {
                return Err(self.conflict(
                    res,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {want_uid}, UID in object meta: {}",
                        meta_str(&old, "uid")
                    ),
                ));
            }
        }
        let mut new = if status_only {
            // Only .status changes; spec and metadata stay as stored.
            let mut n = old.clone();
            match body.get("status") {
                Some(s) => n["status"] = s.clone(),
                None => {
                    if let Some(m) = n.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            n
        } else {
            let mut n = body;
            if def.has_status && !force {
                match old.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        if let Some(m) = n.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            if !n.get("metadata").is_some_and(Value::is_object) {
                n["metadata"] = json!({});
            }
            // System-owned metadata comes from the stored object.
            for f in ["name", "namespace", "uid", "creationTimestamp", "deletionTimestamp"] {
                match old["metadata"].get(f) {
                    Some(v) => n["metadata"][f] = v.clone(),
                    None => remove_meta(&mut n, f),
                }
            }
            n
        };
        new["apiVersion"] = json!(def.api_version());
        new["kind"] = json!(def.kind);
        if !status_only {
            secret_defaults(&def, &mut new);
            if !force && is_secret(&def) && new.get("type") != old.get("type") {
                return Err(ApiError::new(
                    422,
                    format!(
                        "Secret \"{name}\" is invalid: type: Invalid value: {}: field is immutable",
                        new["type"]
                    ),
                )
                .with_reason("Invalid")
                .with_details(name, def.group, def.kind));
            }
        }
        // generation bumps only when .spec changes.
        let old_gen = old["metadata"].get("generation").and_then(Value::as_i64);
        match old_gen {
            Some(g) => {
                let g = if old.get("spec") != new.get("spec") { g + 1 } else { g };
                set_meta(&mut new, "generation", json!(g));
            }
            None => remove_meta(&mut new, "generation"),
        }
        set_meta(&mut new, "resourceVersion", old["metadata"]["resourceVersion"].clone());
        if new == old {
            return Ok(old);
        }
        self.rv += 1;
        set_meta(&mut new, "resourceVersion", json!(self.rv.to_string()));
        self.objects.insert(key, new.clone());
        self.record(Change {
            rv: self.rv,
            res,
            kind: ChangeType::Modified,
            object: new.clone(),
            old: Some(old),
        });
        Ok(new)
    }

    /// Patch an object (or its status when `status_only`). `content_type` selects the patch format.
    pub fn patch(
        &mut self,
        res: usize,
        ns: &str,
        name: &str,
        content_type: &str,
        patch: &[u8],
        status_only: bool,
    ) -> Result<Value, ApiError> {
        let ct = content_type.split(';').next().unwrap_or("").trim();
        if ct == "application/apply-patch+yaml" && self.apply_as_merge {
            return self.apply_approx(res, ns, name, patch, status_only);
        }
        let mut doc = self.get(res, ns, name)?;
        match ct {
            "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                let p: Value = serde_json::from_slice(patch)
                    .map_err(|e| ApiError::bad_request(format!("invalid merge patch: {e}")))?;
                if !p.is_object() {
                    return Err(ApiError::bad_request("a merge patch must be a JSON object"));
                }
                json_patch::merge(&mut doc, &p);
            }
            "application/json-patch+json" => {
                let p: json_patch::Patch = serde_json::from_slice(patch)
                    .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                json_patch::patch(&mut doc, &p.0).map_err(|e| {
                    ApiError::new(
                        422,
                        format!("the server rejected our request due to an error in our request: {e}"),
                    )
                })?;
            }
            other => {
                return Err(ApiError::new(
                    415,
                    format!(
                        "the body of the request was in an unknown format - accepted media types include: \
                         application/json-patch+json, application/merge-patch+json, \
                         application/strategic-merge-patch+json (got {other:?})"
                    ),
                ))
            }
        }
        // A patch that leaves metadata.resourceVersion as stored is unconditional; one that sets another
        // value is a precondition (checked by update).
        self.update(res, ns, name, doc, status_only, false)
    }

    /// Server-side apply, approximated: the applied configuration is merge-patched onto the stored object,
    /// or creates it when missing (main resource only). Fields dropped from a later apply are not removed.
    fn apply_approx(
        &mut self,
        res: usize,
        ns: &str,
        name: &str,
        patch: &[u8],
        status_only: bool,
    ) -> Result<Value, ApiError> {
        let p: Value =
            serde_yaml::from_slice(patch).map_err(|e| ApiError::bad_request(format!("invalid apply patch: {e}")))?;
        if !p.is_object() {
            return Err(ApiError::bad_request("an apply patch must be an object"));
        }
        match self.get(res, ns, name) {
            Err(e) if e.code == 404 && !status_only => {
                let mut obj = p;
                set_meta(&mut obj, "name", json!(name));
                self.create(res, ns, obj, false)
            }
            Err(e) => Err(e),
            Ok(mut doc) => {
                json_patch::merge(&mut doc, &p);
                self.update(res, ns, name, doc, status_only, false)
            }
        }
    }

    /// Delete an object. `options` is the optional DeleteOptions body (preconditions are honoured).
    pub fn delete(&mut self, res: usize, ns: &str, name: &str, options: Option<&Value>) -> Result<Value, ApiError> {
        let key = self.key(res, ns, name);
        let Some(old) = self.objects.get(&key) else {
            return Err(self.not_found(res, name));
        };
        if let Some(pre) = options.and_then(|o| o.get("preconditions")) {
            if let Some(uid) = pre.get("uid").and_then(Value::as_str) {
                if uid != meta_str(old, "uid") {
                    return Err(self.conflict(
                        res,
                        name,
                        &format!(
                            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                            meta_str(old, "uid")
                        ),
                    ));
                }
            }
            if let Some(rv) = pre.get("resourceVersion").and_then(Value::as_str) {
                if rv != meta_str(old, "resourceVersion") {
                    return Err(self.conflict(
                        res,
                        name,
                        &format!(
                            "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                            meta_str(old, "resourceVersion")
                        ),
                    ));
                }
            }
        }
        let mut obj = self.objects.remove(&key).unwrap_or(Value::Null);
        self.rv += 1;
        set_meta(&mut obj, "resourceVersion", json!(self.rv.to_string()));
        self.record(Change {
            rv: self.rv,
            res,
            kind: ChangeType::Deleted,
            object: obj.clone(),
            old: None,
        });
        Ok(obj)
    }

    /// Insert or replace an object directly (test control): resource found from apiVersion/kind, status kept,
    /// no resourceVersion precondition. Emits ADDED or MODIFIED (nothing if unchanged).
    pub fn upsert(&mut self, obj: Value) -> Result<Value, ApiError> {
        let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        let res = self
            .res_index_by_kind(api_version, kind)
            .ok_or_else(|| ApiError::new(404, format!("no resource served for {api_version:?} {kind:?}")))?;
        let mut ns = meta_str(&obj, "namespace").to_string();
        if self.def(res).namespaced && ns.is_empty() {
            ns = "default".to_string();
        }
        let name = meta_str(&obj, "name").to_string();
        let mut obj = obj;
        remove_meta(&mut obj, "resourceVersion");
        if self.objects.contains_key(&self.key(res, &ns, &name)) {
            remove_meta(&mut obj, "uid");
            self.update(res, &ns, &name, obj, false, true)
        } else {
            self.create(res, &ns, obj, true)
        }
    }

    /// Bump the resourceVersion and forget all history: every watch resuming from an older
    /// resourceVersion gets `410 Expired`. Returns the new floor.
    pub fn compact(&mut self) -> u64 {
        self.rv += 1;
        self.history.clear();
        self.history_floor = self.rv;
        self.rv
    }

    // ----- watches -----

    /// Register a watch and queue its initial events. `tx` receives serialized event lines.
    pub(crate) fn register_watch(
        &mut self,
        req: WatchRequest,
        tx: UnboundedSender<Bytes>,
    ) -> Result<WatchStart, ApiError> {
        let w = Watcher {
            res: req.res,
            namespace: req.namespace,
            labels: req.labels,
            fields: req.fields,
            tx,
        };
        let rv_param = req.resource_version.as_deref().unwrap_or("");
        let from_state = rv_param.is_empty() || rv_param == "0";
        let send_state = match req.send_initial_events {
            Some(v) => v,
            None => from_state,
        };
        if send_state {
            if !from_state {
                let want = parse_rv(rv_param)?;
                if want < self.history_floor {
                    return Ok(WatchStart::Expired(self.expired(want)));
                }
            }
            let ns = w.namespace.clone();
            let (items, _) = self.list(req.res, ns.as_deref(), &w.labels, &w.fields);
            for o in items {
                let _ = w.tx.send(event_line("ADDED", &o));
            }
            if req.send_initial_events == Some(true) {
                let _ = w.tx.send(bookmark_line(self.def(req.res), self.rv, true));
            }
        } else if !from_state {
            let want = parse_rv(rv_param)?;
            if want < self.history_floor {
                return Ok(WatchStart::Expired(self.expired(want)));
            }
            for c in self.history.iter().filter(|c| c.rv > want) {
                if let Some((kind, obj)) = w.event_for(c) {
                    let _ = w.tx.send(event_line(kind, &obj));
                }
            }
        }
        let id = self.next_watch_id;
        self.next_watch_id += 1;
        self.watchers.insert(id, w);
        Ok(WatchStart::Registered(id))
    }

    fn expired(&self, want: u64) -> ApiError {
        ApiError::new(
            410,
            format!("too old resource version: {want} ({})", self.history_floor),
        )
    }

    /// Queue a BOOKMARK for watch `id`; false if the watch is gone.
    pub(crate) fn bookmark(&mut self, id: u64) -> bool {
        let Some(w) = self.watchers.get(&id) else {
            return false;
        };
        let line = bookmark_line(&self.resources[w.res], self.rv, false);
        w.tx.send(line).is_ok()
    }

    pub(crate) fn remove_watch(&mut self, id: u64) {
        self.watchers.remove(&id);
    }

    /// Close every open watch stream (cleanly, as when the API server restarts its watch cache).
    pub fn drop_watches(&mut self) -> usize {
        let n = self.watchers.len();
        self.watchers.clear();
        n
    }

    /// Number of open watch streams (optionally only for one resource index).
    pub fn open_watches(&self, res: Option<usize>) -> usize {
        self.watchers
            .values()
            .filter(|w| res.is_none_or(|r| r == w.res) && !w.tx.is_closed())
            .count()
    }

    /// All objects of one resource (test inspection).
    pub fn all_of(&self, res: usize) -> Vec<Value> {
        self.list(res, None, &LabelSelector::default(), &FieldSelector::default())
            .0
    }

    /// The retained change history (oldest first).
    pub fn history(&self) -> Vec<Change> {
        self.history.iter().map(|c| (**c).clone()).collect()
    }
}

/// Build the `Status` success object returned for a DELETE.
pub(crate) fn delete_status(def: &ResourceDef, obj: &Value) -> Value {
    let mut details = Map::new();
    details.insert("name".into(), json!(meta_str(obj, "name")));
    if !def.group.is_empty() {
        details.insert("group".into(), json!(def.group));
    }
    details.insert("kind".into(), json!(def.plural));
    details.insert("uid".into(), json!(meta_str(obj, "uid")));
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": Value::Object(details),
    })
}
