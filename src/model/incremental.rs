//! Incremental translation: [`Incremental::translate`] returns exactly what [`translate`](super::translate)
//! returns for the same objects, but after a change it translates again only the Ingresses whose inputs changed
//! and the hosts they touch, and hands out the unchanged hosts' models again (the same `Arc`).
//!
//! What one Ingress's part of the translation depends on, and how a change to it is noticed:
//! - its own fields that translation reads: a digest of them (`digest_ingress`);
//! - its class: the classes are compared whole, and any change translates everything again;
//! - the Services and EndpointSlices its backends name: a digest per (namespace, Service name) of the Service
//!   and its slices, and per Ingress a digest of those it names;
//! - Secrets, only through the annotations that name one (upstream CA, client-certificate CA, basic-auth users):
//!   such an Ingress is translated every time;
//! - the other Ingresses of its listener set, through shared hosts (who owns a host, who claimed a path first),
//!   the set's default backend (the oldest wins) and the set's TLS hosts (which paths redirect to HTTPS);
//! - a canary Ingress's paths, through the hosts it shares with its main Ingress: a canary is a member of its
//!   rules' host groups, and translating a host attaches that host's canary paths (`model::canary`), their
//!   diagnostics tagged stage 4 with the host.
//!
//! A change marks hosts: those of the changed Ingresses, before and after. Each marked host is translated again
//! from the Ingresses that have a rule for it, oldest first, on a fresh builder: the steps the full translation
//! takes for that host, since no other Ingress touches it. The default backend and the TLS list of a set are
//! recomputed from their (few) participants when one of them changed; when the TLS hosts change, every host of
//! the set is marked. Diagnostics are kept per Ingress, tagged with where they arose (stage, rule, sequence), so
//! a host's can be replaced without touching the others'; they are deduplicated per Ingress when assembled, as
//! the full translation deduplicates them.
//!
//! Everything is translated again (one tagged pass over all Ingresses, oldest first, like the full translation)
//! on the first call, when the classes changed, when more than a quarter of the Ingresses changed or of the
//! hosts are marked (past 64 and 16), and when two Ingresses share a namespace and name (then the full
//! translation's result is returned as it is).
//!
//! Memory: at 10,000 Ingresses this state is kept for as long as the gateway runs, so it is compact. Records
//! live in a `Vec` (a slot per Ingress, reused after removals) found through a small map of name digests; an
//! Ingress's namespace and name are shared `Arc<str>` (one namespace string for all its Ingresses); its hosts
//! are indexes of its set's host groups; the few-element lists (Services named, hosts, group members) are kept
//! inline while they hold one; diagnostics and TLS entries, which most Ingresses lack, sit behind one
//! `Option<Box<_>>`. Host groups live in a `Vec` per set with a list of their indexes in host order; a served
//! host's name is its model's.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use super::ingress::IngressBackend;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::translate::{
    age_key, namespace_of, object_ref, rule_host, tls_hosts, Classes, SetBuilder, Tagged, Translator,
    SERVICE_NAME_LABEL,
};
use super::*;

/// An Ingress's identity: a 128-bit digest of its namespace and name (two halves, so the map's entries need no
/// 16-byte alignment).
type Key = (u64, u64);

/// A record's index in `Incremental::recs`, and a group's in `SetIndex::groups`.
type Slot = u32;

/// Translation order: creation time, namespace, name (see `translate::age_key`).
type Age = (Option<i64>, Arc<str>, Arc<str>);

/// Translates like [`translate`](super::translate), reusing the previous call's work. See the module docs.
pub struct Incremental {
    opts: Options,
    hasher: foldhash::quality::RandomState,
    round: u64,
    /// The classes of the last call; `None` before the first and after a fallback (everything is translated).
    classes: Option<Classes>,
    class_diags: Vec<Diagnostic>,
    /// Each Ingress's record slot.
    slots: FastMap<Key, Slot>,
    /// The records; a slot not in `slots` is free (listed in `free`) and holds a placeholder.
    recs: Vec<Rec>,
    free: Vec<Slot>,
    /// One string per namespace, shared by the records.
    namespaces: HashSet<Arc<str>>,
    sets: Vec<SetIndex>,
    /// The Ingresses that have diagnostics, oldest first.
    with_diags: BTreeMap<Age, Slot>,
    owned: Arc<Vec<(ObjectRef, usize)>>,
    /// Calls that translated everything, and calls that translated what changed.
    passes: [u64; 2],
}

/// What the last call saw of one Ingress.
struct Rec {
    digest: u64,
    /// A digest of the digests of the Services its backends name (`deps`: digests of namespace and name).
    dep_digest: u64,
    deps: Few<u64>,
    age: Age,
    /// Its valid rule hosts, without repeats, as groups of its set.
    hosts: Few<Slot>,
    /// Its index in the last state.
    idx: u32,
    /// The round it was last seen in (low 32 bits).
    seen: u32,
    /// Its listener set.
    set: Option<u8>,
    /// Reads Secrets (`IngressPolicy::reads_secrets`): translated on every call.
    volatile: bool,
    has_default: bool,
    extra: Option<Box<Extra>>,
}

/// The rare parts of a record.
#[derive(Default)]
struct Extra {
    /// Its diagnostics, in tag order, not deduplicated.
    diags: Vec<Tagged>,
    /// Its `spec.tls` entries.
    tls: Vec<TlsModel>,
}

/// A short list kept inline while it has at most one element.
#[derive(Clone, Default)]
enum Few<T: Copy> {
    #[default]
    Zero,
    One(T),
    Many(Box<[T]>),
}

impl<T: Copy + PartialEq> Few<T> {
    fn as_slice(&self) -> &[T] {
        match self {
            Few::Zero => &[],
            Few::One(x) => std::slice::from_ref(x),
            Few::Many(xs) => xs,
        }
    }

    fn from_vec(mut v: Vec<T>) -> Self {
        match v.len() {
            0 => Few::Zero,
            1 => Few::One(v[0]),
            _ => {
                v.shrink_to_fit();
                Few::Many(v.into_boxed_slice())
            }
        }
    }

    fn push(&mut self, x: T) {
        *self = match std::mem::take(self) {
            Few::Zero => Few::One(x),
            Few::One(a) => Few::Many(Box::new([a, x])),
            Few::Many(xs) => {
                let mut v = xs.into_vec();
                v.push(x);
                Few::Many(v.into_boxed_slice())
            }
        }
    }

    fn remove(&mut self, x: T) {
        if self.as_slice().contains(&x) {
            *self = Few::from_vec(self.as_slice().iter().copied().filter(|y| *y != x).collect());
        }
    }

    fn set(&mut self, i: usize, x: T) {
        match self {
            Few::Zero => panic!("index {i} of an empty list"),
            Few::One(a) => *a = x,
            Few::Many(xs) => xs[i] = x,
        }
    }

    fn sort_by(&mut self, f: impl FnMut(&T, &T) -> std::cmp::Ordering) {
        if let Few::Many(xs) = self {
            xs.sort_by(f);
        }
    }
}

#[derive(Default)]
struct SetIndex {
    /// The host groups; a group without members is removed when its host is translated again (its slot is
    /// then free, listed in `free_groups`).
    groups: Vec<Group>,
    free_groups: Vec<Slot>,
    /// The live groups in host order.
    order: Vec<Slot>,
    /// The Ingresses with `spec.defaultBackend`, and those with TLS entries, oldest first.
    defaults: BTreeMap<Age, Slot>,
    tls: BTreeMap<Age, Slot>,
    tls_hosts: Vec<HostPattern>,
    tls_models: Vec<TlsModel>,
    default_backend: Option<DefaultBackendModel>,
}

/// A host: the Ingresses with a rule for it, and its model (none when no path of it is served). Invariant:
/// `own_host` is set exactly when `model` is not; the host is the model's otherwise (one string, not two).
struct Group {
    own_host: Option<HostPattern>,
    members: Few<Slot>,
    model: Option<Arc<HostModel>>,
}

impl Group {
    fn new(host: HostPattern) -> Self {
        Group {
            own_host: Some(host),
            members: Few::Zero,
            model: None,
        }
    }

    fn host(&self) -> &HostPattern {
        match (&self.model, &self.own_host) {
            (Some(m), _) => &m.host,
            (None, Some(h)) => h,
            (None, None) => unreachable!("a group without a model keeps its host"),
        }
    }

    /// Sets the model (of this group's host), keeping the invariant.
    fn set_model(&mut self, model: Option<Arc<HostModel>>) {
        if model.is_some() {
            self.own_host = None;
        } else if self.own_host.is_none() {
            self.own_host = Some(self.host().clone());
        }
        self.model = model;
    }
}

impl SetIndex {
    /// The position in `order` of the group of `host`, or where it would be.
    fn find(&self, host: &HostPattern) -> Result<usize, usize> {
        self.order
            .binary_search_by(|g| self.groups[*g as usize].host().cmp(host))
    }

    /// The group of `host`, created when missing.
    fn group(&mut self, host: &HostPattern) -> Slot {
        match self.find(host) {
            Ok(at) => self.order[at],
            Err(at) => {
                let g = Group::new(host.clone());
                let slot = match self.free_groups.pop() {
                    Some(s) => {
                        self.groups[s as usize] = g;
                        s
                    }
                    None => {
                        self.groups.push(g);
                        (self.groups.len() - 1) as Slot
                    }
                };
                self.order.insert(at, slot);
                slot
            }
        }
    }

    /// Frees a group (it has no members).
    fn drop_group(&mut self, slot: Slot) {
        if let Ok(at) = self.find(self.groups[slot as usize].host()) {
            self.order.remove(at);
        }
        self.groups[slot as usize] = Group::new(HostPattern::Any);
        self.free_groups.push(slot);
    }
}

impl Incremental {
    pub fn new(opts: Options) -> Self {
        Self {
            opts,
            hasher: Default::default(),
            round: 0,
            classes: None,
            class_diags: Vec::new(),
            slots: FastMap::default(),
            recs: Vec::new(),
            free: Vec::new(),
            namespaces: HashSet::new(),
            sets: Vec::new(),
            with_diags: BTreeMap::new(),
            owned: Arc::default(),
            passes: [0; 2],
        }
    }

    /// How many calls translated everything, and how many only what changed.
    pub fn passes(&self) -> [u64; 2] {
        self.passes
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// The translation of `state`, equal to `translate(state, options)`.
    pub fn translate(&mut self, state: &ClusterState) -> Translation {
        self.round += 1;
        let round = self.round as u32;
        let opts = self.opts.clone();
        let mut t = Translator::new(state, &opts, true);
        let classes = t.classes();
        self.class_diags = t.take_diagnostics();
        if self.classes.as_ref() != Some(&classes) {
            self.classes = None;
        }
        let services = self.service_digests(state);

        // What changed: (slot, index in the state; none when removed).
        let mut changed: Vec<(Slot, Option<usize>)> = Vec::new();
        let mut seen = 0;
        let full = self.classes.is_none();
        for (i, ing) in state.ingresses.iter().enumerate() {
            let Some(name) = ing.metadata.name.as_deref() else {
                continue;
            };
            seen += 1;
            if full {
                continue;
            }
            let key = self.key(namespace_of(&ing.metadata), name);
            match self.slots.get(&key) {
                Some(&slot) => {
                    let digest = self.digest_ingress(ing);
                    let r = &mut self.recs[slot as usize];
                    if r.seen == round {
                        return self.fallback(state);
                    }
                    r.seen = round;
                    r.idx = i as u32;
                    if r.digest != digest || r.volatile || dep_digest(r.deps.as_slice(), &services) != r.dep_digest {
                        changed.push((slot, Some(i)));
                    }
                }
                None => {
                    // A placeholder, so that a second Ingress of the same name is noticed.
                    let slot = self.alloc(Rec::placeholder(round));
                    self.slots.insert(key, slot);
                    changed.push((slot, Some(i)));
                }
            }
        }
        if full || changed.len() * 4 > seen.max(64) {
            self.classes = Some(classes);
            return self.translate_all(state, &mut t, &services);
        }
        if self.slots.len() > seen {
            let recs = &self.recs;
            let mut gone: Vec<(Key, Slot)> = Vec::new();
            for (k, s) in &self.slots {
                if recs[*s as usize].seen != round {
                    gone.push((*k, *s));
                }
            }
            for (k, s) in gone {
                self.slots.remove(&k);
                changed.push((s, None));
            }
        }
        self.classes = Some(classes);
        self.apply(state, &mut t, &services, changed)
    }

    /// The full translation, returned as it is; the next call translates everything again.
    fn fallback(&mut self, state: &ClusterState) -> Translation {
        self.classes = None;
        self.clear();
        super::translate(state, &self.opts)
    }

    fn clear(&mut self) {
        self.slots = FastMap::default();
        self.recs = Vec::new();
        self.free = Vec::new();
        self.namespaces.clear();
        self.sets.clear();
        self.with_diags.clear();
    }

    /// A slot for a record.
    fn alloc(&mut self, rec: Rec) -> Slot {
        match self.free.pop() {
            Some(s) => {
                self.recs[s as usize] = rec;
                s
            }
            None => {
                self.recs.push(rec);
                (self.recs.len() - 1) as Slot
            }
        }
    }

    // === everything ===

    fn translate_all(
        &mut self,
        state: &ClusterState,
        t: &mut Translator<'_>,
        services: &FastMap<u64, u64>,
    ) -> Translation {
        self.passes[0] += 1;
        self.clear();
        self.slots.reserve(state.ingresses.len());
        self.recs.reserve_exact(state.ingresses.len());
        self.sets = self.opts.listener_sets.iter().map(|_| SetIndex::default()).collect();
        let classes = self.classes.take().expect("classes are set");
        let mut builders: Vec<SetBuilder> = self.opts.listener_sets.iter().map(SetBuilder::for_set).collect();
        let mut order: Vec<(usize, &Ingress)> = state.ingresses.iter().enumerate().collect();
        order.sort_by(|a, b| age_key(&a.1.metadata).cmp(&age_key(&b.1.metadata)));
        // Per set: (host, record slot, the host's position among the record's hosts).
        let mut hosts: Vec<Vec<(HostPattern, Slot, u32)>> = self.sets.iter().map(|_| Vec::new()).collect();
        // Ingresses with alias annotations: (record slot, index, set), for the second pass.
        let mut aliased: Vec<(Slot, usize, usize)> = Vec::new();
        for (idx, ing) in order {
            let Some(iref) = object_ref("Ingress", &ing.metadata) else {
                continue;
            };
            let key = self.key(&iref.namespace, &iref.name);
            if self.slots.contains_key(&key) {
                return self.fallback(state);
            }
            let set = classes.set_of(ing);
            let (mut rec, rec_hosts) = self.rec(ing, idx, set, services);
            let slot = self.recs.len() as Slot;
            if let Some(s) = set {
                let b = &mut builders[s];
                let tls_before = b.tls.len();
                t.ingress(ing, &iref, b);
                rec.set_extra(take_tagged(t), b.tls[tls_before..].to_vec());
                if annotations::alias::asked(&ing.metadata) {
                    aliased.push((slot, idx, s));
                }
                rec.hosts = Few::from_vec(vec![0; rec_hosts.len()]);
                hosts[s].extend(rec_hosts.into_iter().enumerate().map(|(i, h)| (h, slot, i as u32)));
                let set = &mut self.sets[s];
                if rec.has_default {
                    set.defaults.insert(rec.age.clone(), slot);
                }
                if !rec.tls().is_empty() {
                    set.tls.insert(rec.age.clone(), slot);
                }
            }
            if !rec.diags().is_empty() {
                self.with_diags.insert(rec.age.clone(), slot);
            }
            self.recs.push(rec);
            self.slots.insert(key, slot);
        }
        for b in &mut builders {
            t.attach_canaries(b);
        }
        for d in take_tagged(t) {
            self.add_canary_diag(d, None);
        }
        // Other names, once every own rule is claimed; their diagnostics go to their Ingress's record.
        for (slot, idx, s) in aliased {
            let ing = &state.ingresses[idx];
            let iref = object_ref("Ingress", &ing.metadata).expect("named");
            t.aliases(ing, &iref, &mut builders[s]);
            let fresh = take_tagged(t);
            if !fresh.is_empty() {
                let rec = &mut self.recs[slot as usize];
                rec.replace_diags(|_| false, fresh);
                self.with_diags.insert(rec.age.clone(), slot);
            }
        }
        for ((set, b), mut hosts) in self.sets.iter_mut().zip(builders).zip(hosts) {
            // Groups in host order; members oldest first (the order records were made in).
            hosts.sort_by(|a, b| a.0.cmp(&b.0));
            for (host, slot, at) in hosts {
                let g = match set.groups.last_mut() {
                    Some(g) if *g.host() == host => g,
                    _ => {
                        set.groups.push(Group::new(host));
                        set.groups.last_mut().expect("pushed")
                    }
                };
                g.members.push(slot);
                self.recs[slot as usize]
                    .hosts
                    .set(at as usize, (set.groups.len() - 1) as Slot);
            }
            set.groups.shrink_to_fit();
            set.order = (0..set.groups.len() as Slot).collect();
            let (paths, default_backend, tls) = b.into_parts();
            set.tls_hosts = tls_hosts(&tls);
            let mut models = SetBuilder::hosts(paths, &set.tls_hosts).into_iter().peekable();
            for g in &mut set.groups {
                if models.peek().is_some_and(|m| m.host == *g.host()) {
                    g.set_model(models.next().map(Arc::new));
                }
            }
            debug_assert!(models.next().is_none(), "every served host has a group");
            set.tls_models = tls;
            set.default_backend = default_backend;
        }
        self.classes = Some(classes);
        self.refresh_owned();
        self.assemble()
    }

    // === what changed ===

    fn apply(
        &mut self,
        state: &ClusterState,
        t: &mut Translator<'_>,
        services: &FastMap<u64, u64>,
        changed: Vec<(Slot, Option<usize>)>,
    ) -> Translation {
        self.passes[1] += 1;
        let classes = self.classes.take().expect("classes are set");
        let n = self.sets.len();
        let mut dirty = Dirty {
            groups: vec![BTreeSet::new(); n],
            defaults: vec![false; n],
            tls: vec![false; n],
        };
        let mut touched: Vec<Slot> = Vec::new();
        let mut owned_dirty = false;

        for (slot, idx) in changed {
            let old = std::mem::replace(&mut self.recs[slot as usize], Rec::placeholder(0));
            let old_set = old.set;
            if !old.diags().is_empty() {
                self.with_diags.remove(&old.age);
            }
            self.unindex(slot, &old, &mut dirty);
            let Some(idx) = idx else {
                owned_dirty |= old_set.is_some();
                self.free.push(slot);
                continue;
            };
            let ing = &state.ingresses[idx];
            let set = classes.set_of(ing);
            let (mut rec, hosts) = self.rec(ing, idx, set, services);
            owned_dirty |= old_set != rec.set;
            if set.is_some() {
                // The Ingress's own part: spec, annotations, invalid rule hosts, TLS entries.
                let iref = object_ref("Ingress", &ing.metadata).expect("named");
                let mut b = SetBuilder::default();
                t.ingress(ing, &iref, &mut b);
                let diags = take_tagged(t)
                    .into_iter()
                    .filter(|(tag, host, _)| matches!(tag.0, 0 | 3) || (tag.0 == 2 && host.is_none()))
                    .collect();
                rec.set_extra(diags, b.into_parts().2);
                self.index(slot, &mut rec, hosts, &mut dirty);
            }
            touched.push(slot);
            self.recs[slot as usize] = rec;
        }

        let total_hosts: usize = self.sets.iter().map(|s| s.order.len()).sum();
        for s in 0..n {
            let set = &mut self.sets[s];
            if dirty.tls[s] {
                set.tls_models = set
                    .tls
                    .values()
                    .flat_map(|k| self.recs[*k as usize].tls().iter().cloned())
                    .collect();
                let hosts = tls_hosts(&set.tls_models);
                if hosts != set.tls_hosts {
                    set.tls_hosts = hosts;
                    dirty.groups[s].extend(set.order.iter().copied());
                }
            }
        }
        let marked: usize = dirty.groups.iter().map(BTreeSet::len).sum();
        if marked * 4 > total_hosts.max(64) {
            self.passes[1] -= 1;
            self.classes = Some(classes);
            return self.translate_all(state, t, services);
        }

        for s in 0..n {
            if dirty.defaults[s] {
                let mut b = SetBuilder::default();
                let members: Vec<Slot> = self.sets[s].defaults.values().copied().collect();
                for k in members {
                    let rec = &mut self.recs[k as usize];
                    let ing = &state.ingresses[rec.idx as usize];
                    let iref = object_ref("Ingress", &ing.metadata).expect("named");
                    t.ingress(ing, &iref, &mut b);
                    let fresh = take_tagged(t).into_iter().filter(|d| d.0 .0 == 1);
                    rec.replace_diags(|d| d.0 .0 == 1, fresh);
                    touched.push(k);
                }
                self.sets[s].default_backend = b.into_parts().1;
            }
            for g in std::mem::take(&mut dirty.groups[s]) {
                self.host(state, t, s, g, &mut touched);
            }
        }

        for k in touched {
            let rec = &self.recs[k as usize];
            if rec.seen == 0 {
                continue; // removed
            }
            self.with_diags.remove(&rec.age);
            if !rec.diags().is_empty() {
                self.with_diags.insert(rec.age.clone(), k);
            }
        }
        self.classes = Some(classes);
        if owned_dirty {
            self.refresh_owned();
        }
        self.assemble()
    }

    /// Translates one host (a group of set `s`) again from the Ingresses with a rule for it.
    fn host(&mut self, state: &ClusterState, t: &mut Translator<'_>, s: usize, g: Slot, touched: &mut Vec<Slot>) {
        let set = &mut self.sets[s];
        let group = &mut set.groups[g as usize];
        if matches!(group.members, Few::Zero) {
            set.drop_group(g);
            return;
        }
        let recs = &mut self.recs;
        group
            .members
            .sort_by(|a, b| recs[*a as usize].age.cmp(&recs[*b as usize].age));
        let host = group.host().clone();
        let mut b = SetBuilder::for_set(&self.opts.listener_sets[s]);
        t.only_host = Some(host.clone());
        for k in group.members.as_slice() {
            let rec = &mut recs[*k as usize];
            let ing = &state.ingresses[rec.idx as usize];
            let iref = object_ref("Ingress", &ing.metadata).expect("named");
            t.ingress(ing, &iref, &mut b);
            // The host's rules, and the attaching of its canary paths (stage 4, added below).
            let mine = |d: &Tagged| matches!(d.0 .0, 2 | 4) && d.1.as_ref() == Some(&host);
            let fresh: Vec<Tagged> = take_tagged(t).into_iter().filter(mine).collect();
            rec.replace_diags(mine, fresh);
            touched.push(*k);
        }
        t.only_host = None;
        t.attach_canaries(&mut b);
        let attached = take_tagged(t);
        let members = group.members.clone();
        if !attached.is_empty() {
            for d in attached {
                self.add_canary_diag(d, Some(members.as_slice()));
            }
        }
        // The members' other names that are this host (the second pass, `model::alias`).
        t.only_host = Some(host.clone());
        for k in members.as_slice() {
            let rec = &mut self.recs[*k as usize];
            let ing = &state.ingresses[rec.idx as usize];
            if !annotations::alias::asked(&ing.metadata) {
                continue;
            }
            let iref = object_ref("Ingress", &ing.metadata).expect("named");
            t.aliases(ing, &iref, &mut b);
            let named = |d: &Tagged| d.0 .0 == 5 && d.1.as_ref() == Some(&host);
            rec.replace_diags(named, take_tagged(t));
        }
        t.only_host = None;
        let set = &mut self.sets[s];
        let group = &mut set.groups[g as usize];
        let (paths, _, _) = b.into_parts();
        let model = SetBuilder::hosts(paths, &set.tls_hosts).pop();
        let same = matches!((&group.model, &model), (Some(old), Some(new)) if **old == *new);
        if !same {
            group.set_model(model.map(Arc::new));
        }
    }

    /// Adds a diagnostic of attaching a canary's path to its Ingress's record: one of `members` (a host's
    /// group), or any record when `None` (everything is being translated).
    fn add_canary_diag(&mut self, d: Tagged, members: Option<&[Slot]>) {
        let Subject::Object(o) = &d.2.subject else {
            return;
        };
        let slot = match members {
            Some(m) => m.iter().copied().find(|k| {
                let age = &self.recs[*k as usize].age;
                *age.1 == *o.namespace && *age.2 == *o.name
            }),
            None => self.slots.get(&self.key(&o.namespace, &o.name)).copied(),
        };
        let Some(slot) = slot else {
            debug_assert!(false, "a canary diagnostic of an Ingress not translated: {}", d.2);
            return;
        };
        let rec = &mut self.recs[slot as usize];
        rec.replace_diags(|_| false, [d]);
        // Translating everything: the record is listed by the caller's loop already when it had diagnostics; a
        // host: `touched` relists it.
        if members.is_none() {
            self.with_diags.insert(rec.age.clone(), slot);
        }
    }

    // === indexes ===

    /// A record of an Ingress (hosts not yet indexed: `hosts` is empty), and its valid rule hosts.
    fn rec(
        &mut self,
        ing: &Ingress,
        idx: usize,
        set: Option<usize>,
        services: &FastMap<u64, u64>,
    ) -> (Rec, Vec<HostPattern>) {
        let ns = namespace_of(&ing.metadata);
        let spec = ing.spec.as_ref();
        let mut deps = Vec::new();
        let mut dep = |b: &IngressBackend| {
            if let Some(svc) = &b.service {
                deps.push(self.service_key(ns, &svc.name));
            }
        };
        let mut hosts: Vec<HostPattern> = Vec::new();
        if let Some(spec) = spec {
            spec.default_backend.as_deref().into_iter().for_each(&mut dep);
            for rule in spec.rules.iter().flatten() {
                if let Ok(h) = rule_host(rule.host.as_deref()) {
                    if !hosts.contains(&h) {
                        hosts.push(h);
                    }
                }
                for p in rule.http.iter().flat_map(|h| h.paths.iter()) {
                    dep(&p.backend);
                }
            }
            // The Ingress is a member of its other names' hosts too (see `model::alias`).
            for h in super::alias::names(ing) {
                if !hosts.contains(&h) {
                    hosts.push(h);
                }
            }
        }
        // The error pages' Service: the Ingress's own, or its set's.
        if let Some(name) = annotations::errors::service_name(&ing.metadata) {
            deps.push(self.service_key(ns, &name));
        }
        if let Some(e) = set
            .and_then(|s| self.opts.listener_sets.get(s))
            .and_then(|s| s.error_pages.as_ref())
        {
            deps.push(self.service_key(&e.namespace, &e.service));
        }
        let volatile = annotations::IngressPolicy::from_meta(&ing.metadata).is_ok_and(|p| p.reads_secrets());
        let (ts, ns, name) = age_key(&ing.metadata);
        let ns = match self.namespaces.get(ns) {
            Some(shared) => shared.clone(),
            None => {
                let shared: Arc<str> = ns.into();
                self.namespaces.insert(shared.clone());
                shared
            }
        };
        let rec = Rec {
            digest: self.digest_ingress(ing),
            dep_digest: dep_digest(&deps, services),
            deps: Few::from_vec(deps),
            // The Ingress's own name string, not a copy.
            age: (ts, ns, ing.metadata.name.clone().unwrap_or_else(|| name.into())),
            hosts: Few::Zero,
            idx: idx as u32,
            seen: self.round as u32,
            set: set.map(|s| u8::try_from(s).expect("at most 255 listener sets")),
            volatile,
            has_default: spec.is_some_and(|s| s.default_backend.is_some()),
            extra: None,
        };
        (rec, hosts)
    }

    /// Adds an Ingress of a set to its hosts' groups and its set's participant lists, marking them.
    fn index(&mut self, slot: Slot, rec: &mut Rec, hosts: Vec<HostPattern>, dirty: &mut Dirty) {
        let Some(s) = rec.set.map(usize::from) else { return };
        let set = &mut self.sets[s];
        let mut ids = Vec::with_capacity(hosts.len());
        for h in &hosts {
            let g = set.group(h);
            set.groups[g as usize].members.push(slot);
            dirty.groups[s].insert(g);
            ids.push(g);
        }
        rec.hosts = Few::from_vec(ids);
        if rec.has_default {
            set.defaults.insert(rec.age.clone(), slot);
        }
        if !rec.tls().is_empty() {
            set.tls.insert(rec.age.clone(), slot);
        }
        dirty.defaults[s] |= rec.has_default;
        dirty.tls[s] |= !rec.tls().is_empty();
    }

    fn unindex(&mut self, slot: Slot, rec: &Rec, dirty: &mut Dirty) {
        let Some(s) = rec.set.map(usize::from) else { return };
        let set = &mut self.sets[s];
        for g in rec.hosts.as_slice() {
            set.groups[*g as usize].members.remove(slot);
            dirty.groups[s].insert(*g);
        }
        if rec.has_default {
            set.defaults.remove(&rec.age);
        }
        if !rec.tls().is_empty() {
            set.tls.remove(&rec.age);
        }
        dirty.defaults[s] |= rec.has_default;
        dirty.tls[s] |= !rec.tls().is_empty();
    }

    fn refresh_owned(&mut self) {
        if !self.opts.owned_list {
            return;
        }
        let mut owned: Vec<(ObjectRef, usize)> = self
            .slots
            .values()
            .filter_map(|s| {
                let r = &self.recs[*s as usize];
                let set = r.set?;
                let iref = ObjectRef {
                    kind: "Ingress",
                    namespace: r.age.1.to_string(),
                    name: r.age.2.to_string(),
                };
                Some((iref, usize::from(set)))
            })
            .collect();
        owned.sort();
        owned.shrink_to_fit();
        if *self.owned != owned {
            self.owned = Arc::new(owned);
        }
    }

    fn assemble(&self) -> Translation {
        let mut diagnostics = self.class_diags.clone();
        for k in self.with_diags.values() {
            let first = diagnostics.len();
            for (_, _, d) in self.recs[*k as usize].diags() {
                if !diagnostics[first..].iter().any(|e| e.reason == d.reason) {
                    diagnostics.push(d.clone());
                }
            }
        }
        Translation {
            sets: self
                .opts
                .listener_sets
                .iter()
                .zip(&self.sets)
                .map(|(o, s)| SetModel {
                    name: o.name.clone(),
                    hosts: s
                        .order
                        .iter()
                        .filter_map(|g| s.groups[*g as usize].model.clone())
                        .collect(),
                    default_backend: s.default_backend.clone(),
                    tls: s.tls_models.clone(),
                })
                .collect(),
            diagnostics,
            owned: self.owned.clone(),
        }
    }

    // === digests ===

    fn key(&self, ns: &str, name: &str) -> Key {
        let half = |seed: u8| {
            let mut h = self.hasher.build_hasher();
            h.write_u8(seed);
            ns.hash(&mut h);
            name.hash(&mut h);
            h.finish()
        };
        (half(0), half(1))
    }

    fn service_key(&self, ns: &str, name: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write_u8(2);
        ns.hash(&mut h);
        name.hash(&mut h);
        h.finish()
    }

    /// Per (namespace, Service name): a digest of the Service and its EndpointSlices (the fields backends read).
    fn service_digests(&self, state: &ClusterState) -> FastMap<u64, u64> {
        let mut out: FastMap<u64, u64> = FastMap::with_capacity_and_hasher(state.services.len(), Default::default());
        for s in &state.services {
            if let Some(name) = s.metadata.name.as_deref() {
                let mut h = self.hasher.build_hasher();
                digest_service(&mut h, s);
                let e = out
                    .entry(self.service_key(namespace_of(&s.metadata), name))
                    .or_default();
                *e = e.wrapping_add(h.finish());
            }
        }
        for slice in &state.endpoint_slices {
            if let Some(svc) = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) {
                let mut h = self.hasher.build_hasher();
                digest_slice(&mut h, slice);
                let e = out
                    .entry(self.service_key(namespace_of(&slice.metadata), svc))
                    .or_default();
                *e = e.wrapping_add(h.finish());
            }
        }
        out
    }

    fn digest_ingress(&self, ing: &Ingress) -> u64 {
        let mut h = self.hasher.build_hasher();
        digest_ingress(&mut h, ing);
        h.finish()
    }
}

/// What a change marked, per listener set: host groups to translate again, and whether the default backend and
/// the TLS list must be recomputed.
struct Dirty {
    groups: Vec<BTreeSet<Slot>>,
    defaults: Vec<bool>,
    tls: Vec<bool>,
}

impl Rec {
    /// A free slot, or a new Ingress's before it is translated (seen in `round`; 0 for a free slot).
    fn placeholder(round: u32) -> Self {
        Rec {
            digest: 0,
            dep_digest: 0,
            deps: Few::Zero,
            age: (None, Arc::from(""), Arc::from("")),
            hosts: Few::Zero,
            idx: 0,
            seen: round,
            set: None,
            volatile: false,
            has_default: false,
            extra: None,
        }
    }

    fn diags(&self) -> &[Tagged] {
        self.extra.as_ref().map_or(&[], |e| &e.diags)
    }

    fn tls(&self) -> &[TlsModel] {
        self.extra.as_ref().map_or(&[], |e| &e.tls)
    }

    fn set_extra(&mut self, diags: Vec<Tagged>, tls: Vec<TlsModel>) {
        self.extra = (!diags.is_empty() || !tls.is_empty()).then(|| Box::new(Extra { diags, tls }));
    }

    /// Replaces the diagnostics `which` selects by `fresh` (see [`replace`]).
    fn replace_diags(&mut self, which: impl Fn(&Tagged) -> bool, fresh: impl IntoIterator<Item = Tagged>) {
        let mut fresh = fresh.into_iter().peekable();
        if self.extra.is_none() && fresh.peek().is_none() {
            return;
        }
        let extra = self.extra.get_or_insert_with(Default::default);
        replace(&mut extra.diags, which, fresh);
        if extra.diags.is_empty() && extra.tls.is_empty() {
            self.extra = None;
        }
    }
}

fn take_tagged(t: &mut Translator<'_>) -> Vec<Tagged> {
    t.tagged.as_mut().map(std::mem::take).unwrap_or_default()
}

/// Replaces the diagnostics `which` selects by `fresh`, keeping tag order (a stable sort: equal tags keep the
/// order they were found in).
fn replace(diags: &mut Vec<Tagged>, which: impl Fn(&Tagged) -> bool, fresh: impl IntoIterator<Item = Tagged>) {
    diags.retain(|d| !which(d));
    let before = diags.len();
    diags.extend(fresh);
    if diags.len() != before {
        diags.sort_by_key(|d| d.0);
    }
}

fn dep_digest(deps: &[u64], services: &FastMap<u64, u64>) -> u64 {
    deps.iter().fold(0u64, |acc, d| {
        let v = services.get(d).copied().unwrap_or(0x9e37_79b9_7f4a_7c15);
        (acc.rotate_left(23) ^ v).wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// Every field of an Ingress that translation reads (keep in step with `translate`).
fn digest_ingress(h: &mut impl Hasher, ing: &Ingress) {
    let m = &ing.metadata;
    m.name.hash(h);
    m.namespace.hash(h);
    m.creation_timestamp.as_ref().map(|t| t.0.as_second()).hash(h);
    m.annotations.hash(h);
    let Some(spec) = &ing.spec else {
        h.write_u8(0);
        return;
    };
    h.write_u8(1);
    spec.ingress_class_name.hash(h);
    digest_backend(h, spec.default_backend.as_deref());
    spec.rules.as_ref().map(|r| r.len()).hash(h);
    for rule in spec.rules.iter().flatten() {
        rule.host.hash(h);
        rule.http.as_ref().map(|x| x.paths.len()).hash(h);
        for p in rule.http.iter().flat_map(|x| x.paths.iter()) {
            p.path.hash(h);
            p.path_type.hash(h);
            digest_backend(h, Some(&p.backend));
        }
    }
    spec.tls.as_ref().map(|t| t.len()).hash(h);
    for tls in spec.tls.iter().flatten() {
        tls.hosts.hash(h);
        tls.secret_name.hash(h);
    }
}

fn digest_backend(h: &mut impl Hasher, b: Option<&IngressBackend>) {
    let Some(b) = b else {
        h.write_u8(0);
        return;
    };
    h.write_u8(1);
    b.resource.as_ref().map(|r| (&r.api_group, &r.kind, &r.name)).hash(h);
    b.service
        .as_ref()
        .map(|s| (&s.name, s.port.as_ref().map(|p| (&p.name, p.number))))
        .hash(h);
}

/// The fields of a Service that backends read.
fn digest_service(h: &mut impl Hasher, s: &Service) {
    h.write_u8(b's');
    let spec = s.spec.as_ref();
    spec.map(|s| &s.type_).hash(h);
    for p in spec.and_then(|s| s.ports.as_deref()).unwrap_or_default() {
        p.port.hash(h);
        p.name.hash(h);
    }
}

/// The fields of an EndpointSlice that backends read.
fn digest_slice(h: &mut impl Hasher, s: &EndpointSlice) {
    h.write_u8(b'e');
    s.address_type.hash(h);
    s.ports.as_ref().map(Vec::len).hash(h);
    for p in s.ports.iter().flatten() {
        (&p.name, &p.protocol, p.port).hash(h);
    }
    h.write_usize(s.endpoints.len());
    for ep in &s.endpoints {
        ep.conditions
            .as_ref()
            .map(|c| (c.ready, c.serving, c.terminating))
            .hash(h);
        ep.addresses.hash(h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    use crate::test_rng::Rng;

    fn options() -> Options {
        Options {
            controller: crate::config::CONTROLLER_NAME.to_string(),
            listener_sets: vec![
                SetOptions {
                    name: "external".into(),
                    classes: vec!["portico".into()],
                    adopted: vec!["adopted".into()],
                    share_hosts: false,
                    error_pages: None,
                },
                SetOptions {
                    name: "internal".into(),
                    classes: vec!["internal".into()],
                    adopted: Vec::new(),
                    share_hosts: true,
                    error_pages: None,
                },
            ],
            implicit_classes: vec![
                ImplicitClass {
                    name: "portico".into(),
                    default: true,
                },
                ImplicitClass {
                    name: "internal".into(),
                    default: false,
                },
            ],
            owned_list: true,
        }
    }

    const NAMESPACES: [&str; 2] = ["a", "b"];
    const HOSTS: [&str; 8] = [
        "a.example",
        "b.example",
        "*.example",
        "",
        "Bad_Host",
        "x.a.example.",
        "B.Example",
        "www.a.example",
    ];

    fn backend(rng: &mut Rng) -> Value {
        if rng.chance(4) {
            return json!({"resource": {"apiGroup": "x", "kind": "Bucket", "name": "b"}});
        }
        let port = match rng.below(5) {
            0 => json!({"number": 81}),
            1 => json!({}),
            2 => json!({"number": 80}),
            _ => json!({"name": "http"}),
        };
        json!({"service": {"name": format!("s{}", rng.below(5)), "port": port}})
    }

    fn ingress(rng: &mut Rng, ns: &str, name: &str) -> Ingress {
        let mut annotations = serde_json::Map::new();
        match rng.below(18) {
            0 => {
                annotations.insert("portico.dev/ssl-redirect".into(), "false".into());
            }
            1 => {
                annotations.insert("portico.dev/force-ssl-redirect".into(), "true".into());
            }
            2 => {
                annotations.insert("portico.dev/hsts-max-age".into(), "soon".into());
            }
            3 => {
                annotations.insert("portico.dev/backend-protocol".into(), "HTTPS".into());
                annotations.insert("portico.dev/proxy-ssl-verify".into(), "on".into());
                annotations.insert("portico.dev/proxy-ssl-secret".into(), "ca".into());
            }
            4 => {
                annotations.insert("kubernetes.io/ingress.class".into(), "internal".into());
            }
            // Canaries: attached to the main routes of their hosts, with bad values and refused annotations.
            5..=9 => {
                annotations.insert("nginx.ingress.kubernetes.io/canary".into(), "true".into());
                match rng.below(6) {
                    0 => {
                        annotations.insert(
                            "nginx.ingress.kubernetes.io/canary-weight".into(),
                            rng.pick(&["0", "20", "100", "150", "x"]).to_string().into(),
                        );
                    }
                    1 => {
                        annotations.insert("portico.dev/canary-by-header".into(), "x-canary".into());
                        annotations.insert(
                            "portico.dev/canary-by-header-pattern".into(),
                            rng.pick(&["^b", "(bad"]).to_string().into(),
                        );
                    }
                    2 => {
                        annotations.insert("portico.dev/allow-source-ranges".into(), "10.0.0.0/8".into());
                    }
                    3 => {
                        annotations.insert("portico.dev/load-balance".into(), "cookie".into());
                        annotations.insert("portico.dev/ssl-redirect".into(), "false".into());
                    }
                    _ => {}
                }
            }
            // Other names: aliases and www twins, taking and losing names against rules and each other.
            10 | 11 => {
                annotations.insert(
                    "nginx.ingress.kubernetes.io/server-alias".into(),
                    rng.pick(&[
                        "b.example",
                        "a.example, *.example",
                        "www.a.example",
                        "x.a.example",
                        "bad host",
                    ])
                    .to_string()
                    .into(),
                );
            }
            12 | 13 => {
                annotations.insert("portico.dev/from-to-www-redirect".into(), "true".into());
            }
            _ => {}
        }
        let mut rules = Vec::new();
        for _ in 0..rng.below(4) {
            let mut paths = Vec::new();
            for _ in 0..rng.below(4) {
                let mut p = json!({
                    "pathType": rng.pick(&["Prefix", "Exact", "ImplementationSpecific", "Regex"]),
                    "backend": backend(rng),
                });
                let path = *rng.pick(&["/", "/x", "/x/", "/y", "", "/a b", "/x/z"]);
                if !path.is_empty() {
                    p["path"] = path.into();
                }
                paths.push(p);
            }
            let mut rule = json!({});
            let host = *rng.pick(&HOSTS);
            if !host.is_empty() {
                rule["host"] = host.into();
            }
            if !rng.chance(10) {
                rule["http"] = json!({ "paths": paths });
            }
            rules.push(rule);
        }
        let mut spec = json!({ "rules": rules });
        if let Some(class) = *rng.pick(&[
            None,
            None,
            Some("portico"),
            Some("internal"),
            Some("other"),
            Some("adopted"),
        ]) {
            spec["ingressClassName"] = class.into();
        }
        if rng.chance(20) {
            spec["defaultBackend"] = backend(rng);
        }
        if rng.chance(25) {
            let hosts: Vec<&str> = (0..rng.below(3)).map(|_| *rng.pick(&HOSTS[..3])).collect();
            spec["tls"] = json!([{"hosts": hosts, "secretName": rng.pick(&["tls", ""])}]);
        }
        let mut meta = json!({"name": name, "namespace": ns, "annotations": annotations});
        if rng.chance(70) {
            meta["creationTimestamp"] = format!("2024-01-0{}T00:00:00Z", 1 + rng.below(3)).into();
        }
        let mut obj = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta});
        if !rng.chance(3) {
            obj["spec"] = spec;
        }
        serde_json::from_value::<k8s_openapi::api::networking::v1::Ingress>(obj)
            .expect("ingress")
            .into()
    }

    fn service(rng: &mut Rng, ns: &str, name: &str) -> Service {
        let mut ports = Vec::new();
        if rng.chance(80) {
            ports.push(json!({"name": "http", "port": 80}));
        }
        if rng.chance(30) {
            ports.push(json!({"port": 81}));
        }
        let mut spec = json!({ "ports": ports });
        if rng.chance(5) {
            spec["type"] = "ExternalName".into();
        }
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "spec": spec})).expect("service")
    }

    fn slice(rng: &mut Rng, ns: &str, svc: &str, n: usize) -> EndpointSlice {
        let endpoints: Vec<Value> = (0..rng.below(3))
            .map(|_| {
                json!({
                    "addresses": [format!("10.0.0.{}", rng.below(4))],
                    "conditions": {"ready": rng.chance(70), "serving": rng.chance(50), "terminating": rng.chance(50)},
                })
            })
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": format!("{svc}-{n}"), "namespace": ns,
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "ports": [{"name": rng.pick(&["http", ""]), "port": 8080 + rng.below(2)}],
            "endpoints": endpoints,
        }))
        .expect("slice")
    }

    fn class(rng: &mut Rng) -> IngressClass {
        let name = *rng.pick(&["portico", "internal", "other", "spare", "adopted"]);
        let controller = if rng.chance(70) {
            crate::config::CONTROLLER_NAME
        } else {
            "example.com/other"
        };
        let mut meta = json!({"name": name});
        if rng.chance(40) {
            meta["annotations"] = json!({"ingressclass.kubernetes.io/is-default-class": "true"});
        }
        serde_json::from_value(json!({"metadata": meta, "spec": {"controller": controller}})).expect("class")
    }

    fn ca_secret() -> k8s_openapi::api::core::v1::Secret {
        serde_json::from_value(json!({
            "metadata": {"name": "ca", "namespace": "a"},
            "stringData": {"ca.crt": "not a certificate"},
        }))
        .expect("secret")
    }

    /// One random edit of the objects.
    fn edit(rng: &mut Rng, s: &mut ClusterState, next_name: &mut usize) {
        match rng.below(10) {
            0..=2 if !s.ingresses.is_empty() => {
                let i = rng.below(s.ingresses.len());
                let m = &s.ingresses[i].metadata;
                let (ns, name) = (m.namespace.clone().unwrap(), m.name.clone().unwrap());
                let fresh = ingress(rng, &ns, &name);
                // The whole object, or only its annotations, or only its spec.
                match rng.below(3) {
                    0 => s.ingresses[i] = fresh,
                    1 => s.ingresses[i].metadata.annotations = fresh.metadata.annotations,
                    _ => s.ingresses[i].spec = fresh.spec,
                }
            }
            3 if !s.ingresses.is_empty() => {
                let i = rng.below(s.ingresses.len());
                s.ingresses.remove(i);
            }
            4 => {
                *next_name += 1;
                let ns = *rng.pick(&NAMESPACES);
                s.ingresses.push(ingress(rng, ns, &format!("i{next_name}")));
            }
            5 => {
                let (ns, name) = (*rng.pick(&NAMESPACES), format!("s{}", rng.below(5)));
                s.services.retain(|x| {
                    x.metadata.name.as_deref() != Some(name.as_str()) || x.metadata.namespace.as_deref() != Some(ns)
                });
                if rng.chance(80) {
                    s.services.push(service(rng, ns, &name));
                }
            }
            6 => {
                let (ns, svc) = (*rng.pick(&NAMESPACES), format!("s{}", rng.below(5)));
                let n = rng.below(2);
                let slice_name = format!("{svc}-{n}");
                s.endpoint_slices.retain(|x| {
                    x.metadata.name.as_deref() != Some(slice_name.as_str())
                        || x.metadata.namespace.as_deref() != Some(ns)
                });
                if rng.chance(80) {
                    s.endpoint_slices.push(slice(rng, ns, &svc, n));
                }
            }
            7 if rng.chance(30) => {
                if s.ingress_classes.len() < 3 && rng.chance(50) {
                    s.ingress_classes.push(class(rng));
                } else if !s.ingress_classes.is_empty() {
                    let i = rng.below(s.ingress_classes.len());
                    s.ingress_classes.remove(i);
                }
            }
            8 if rng.chance(30) => {
                if s.secrets.is_empty() {
                    s.secrets.push(ca_secret());
                } else {
                    s.secrets.clear();
                }
            }
            _ if s.ingresses.len() > 1 => {
                // The order of objects in the state does not matter.
                let (i, j) = (rng.below(s.ingresses.len()), rng.below(s.ingresses.len()));
                s.ingresses.swap(i, j);
            }
            _ => {}
        }
    }

    /// After each random edit (Ingresses edited, added, removed, Services and slices changed, classes and
    /// Secrets added and removed), the incremental translation equals a full translation of the same objects:
    /// routes, host ownership, path claims, default backends, TLS redirects, diagnostics in order, owned list.
    /// What the generator's canaries must come to at some step: attached, without a main route, second on a
    /// route, in another namespace than the main route, refused for an access annotation.
    const CANARY_CASES: [&str; 5] = [
        " [canary ",
        "canary: no main Ingress serves",
        "already has the canary",
        "of another namespace; a canary must be",
        "on a canary Ingress would not apply",
    ];

    #[test]
    fn equals_full_translation_after_random_edits() {
        let opts = options();
        let mut canary_cases = [0usize; CANARY_CASES.len()];
        for seed in 1..=12u64 {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x1234_5678_9abc_def1));
            let mut state = ClusterState::default();
            let mut next_name = 0;
            for _ in 0..12 {
                next_name += 1;
                let ns = *rng.pick(&NAMESPACES);
                state.ingresses.push(ingress(&mut rng, ns, &format!("i{next_name}")));
            }
            for ns in NAMESPACES {
                for k in 0..4 {
                    let name = format!("s{k}");
                    state.services.push(service(&mut rng, ns, &name));
                    state.endpoint_slices.push(slice(&mut rng, ns, &name, 0));
                }
            }
            let mut inc = Incremental::new(opts.clone());
            let steps = 250;
            for step in 0..steps {
                let full = super::super::translate(&state, &opts);
                let got = inc.translate(&state);
                let text = full.describe();
                for (i, needle) in CANARY_CASES.iter().enumerate() {
                    canary_cases[i] += usize::from(text.contains(needle));
                }
                assert_eq!(got.describe(), text, "seed {seed} step {step}: {state:#?}");
                assert_eq!(got, full, "seed {seed} step {step}");
                for _ in 0..1 + rng.below(2) {
                    edit(&mut rng, &mut state, &mut next_name);
                }
            }
            // Most calls took the incremental path (the others: the first, and class changes).
            let [all, incremental] = inc.passes();
            assert!(incremental > steps * 3 / 4, "{all} full, {incremental} incremental");
        }
        for (n, case) in canary_cases.iter().zip(CANARY_CASES) {
            assert!(*n > 10, "the generator made {case:?} only {n} times");
        }
    }

    /// A host none of whose inputs changed is handed out again (the same `Arc`); an edited one is new.
    #[test]
    fn unchanged_hosts_are_shared() {
        let opts = options();
        let mut rng = Rng(7);
        let mut state = ClusterState::default();
        for (i, host) in ["a.example", "b.example", "c.example"].iter().enumerate() {
            let mut ing = ingress(&mut rng, "a", &format!("i{i}"));
            let spec: k8s_openapi::api::networking::v1::IngressSpec = serde_json::from_value(json!({"rules": [{"host": host, "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "s0", "port": {"number": 80}}}}]}}]}))
            .unwrap();
            ing.spec = Some(spec.into());
            ing.metadata.annotations = None;
            state.ingresses.push(ing);
        }
        state.services.push(service(&mut rng, "a", "s0"));
        let mut inc = Incremental::new(opts.clone());
        let first = inc.translate(&state);
        assert_eq!(first.sets[0].hosts.len(), 3, "{}", first.describe());
        let spec = state.ingresses[1].spec.as_mut().unwrap();
        let http = spec.rules.as_mut().unwrap()[0].http.as_mut().unwrap();
        let mut paths = http.paths.to_vec();
        paths[0].path = Some("/v2".into());
        http.paths = paths.into();
        let second = inc.translate(&state);
        assert_eq!(second, super::super::translate(&state, &opts));
        let shared: Vec<bool> = first.sets[0]
            .hosts
            .iter()
            .zip(&second.sets[0].hosts)
            .map(|(a, b)| Arc::ptr_eq(a, b))
            .collect();
        assert_eq!(shared, [true, false, true]);
    }
}
