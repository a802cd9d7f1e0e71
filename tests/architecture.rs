//! Import direction, checked by reading the sources (see `docs/architecture.md`):
//!
//! 1. `model/` and `routing/` are pure: they import no I/O crate (`kube`, `hyper*`, `tokio*`) and none of the
//!    modules that do I/O, hold the configuration or live state (`config`, `proxy`, `upstream`, `snapshot`,
//!    `metrics`, `certs`, `app`, `publish`, `source`, `status`, `admin`). So routing knows backends by id only;
//!    their live state is attached by `snapshot`, which sits above both.
//! 2. No cycle between top-level modules (`crate::x` for each `src/x.rs` or `src/x/`).
//! 3. Nothing imports `app` (the wiring sits on top).
//! 4. The data plane (`routing/`, `snapshot`, `proxy/`) knows routes, not Ingresses: it imports nothing of
//!    `model::annotations` or `model::ingress` (the source-specific parts of the model); it reads the
//!    source-neutral route model (`model::route`).
//!
//! A scanner, not a compiler: it strips comments and literals, drops `#[cfg(test)]` items (tests may reach
//! across layers: an ACME test parses manifests), tracks inline `mod x { }` blocks, and resolves every path that
//! starts with `crate::`, `super::` or `self::` (inline or in a `use` tree, `{a, b::{c}}` groups included) to the
//! top-level module it names. `super::super::` is resolved like any other path, so it is no way around the rules.
//! Known exceptions are listed in [`EXCEPTIONS`]; an exception that no longer matches anything fails the test,
//! so the list only shrinks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Crates that do I/O: never imported by `model/` or `routing/`.
const IO_CRATES: &[&str] = &["kube", "hyper", "hyper_util", "hyper_rustls", "tokio", "tokio_rustls"];
/// Top-level modules `model/` and `routing/` must not import.
const NOT_FROM_PURE: &[&str] = &[
    "config", "proxy", "upstream", "snapshot", "metrics", "certs", "app", "publish", "source", "status", "admin",
];
/// The data plane's modules (a file or folder under `src/`), and the source-specific parts of the model they must
/// not import.
const DATA_PLANE: &[&str] = &["routing", "snapshot", "proxy"];
const SOURCE_SPECIFIC: &[&str] = &["crate::model::annotations", "crate::model::ingress"];
/// The pure layers.
const PURE: &[&str] = &["model", "routing"];

/// A reference the rules allow for now: (file under `src/`, path prefix as written after resolution, why).
/// Each is matched against the resolved path (`crate::a::b`, or the crate name for an external one).
const EXCEPTIONS: &[(&str, &str, &str)] = &[];

// === the rules, on the real sources ===

#[test]
fn pure_layers_import_no_io_and_no_config() {
    let scan = Scan::of_src();
    let mut bad = Vec::new();
    for r in scan.live_refs() {
        let from = top_of(&r.file);
        if !PURE.contains(&from.as_str()) {
            continue;
        }
        match &r.target {
            Target::External(krate) if IO_CRATES.contains(&krate.as_str()) => bad.push(r.to_string()),
            Target::Internal(path) if NOT_FROM_PURE.contains(&path[0].as_str()) => bad.push(r.to_string()),
            _ => {}
        }
    }
    assert!(
        bad.is_empty(),
        "model/ and routing/ must stay pure (no I/O crates, no config/proxy/upstream/app/...):\n  {}",
        bad.join("\n  ")
    );
}

#[test]
fn the_data_plane_knows_routes_not_ingresses() {
    let scan = Scan::of_src();
    let bad: Vec<String> = scan
        .live_refs()
        .filter(|r| DATA_PLANE.contains(&top_of(&r.file).as_str()))
        .filter(|r| SOURCE_SPECIFIC.iter().any(|p| r.matches(p)))
        .map(|r| r.to_string())
        .collect();
    assert!(
        bad.is_empty(),
        "routing/, snapshot and proxy/ read the route model (model::route), not Ingress annotations:\n  {}",
        bad.join("\n  ")
    );
}

#[test]
fn no_cycle_between_top_level_modules() {
    let scan = Scan::of_src();
    let graph = scan.graph();
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "import cycle between top-level modules:\n{}",
            describe_cycle(&graph, &cycle)
        );
    }
}

#[test]
fn nothing_imports_app() {
    let scan = Scan::of_src();
    let bad: Vec<String> = scan
        .live_refs()
        .filter(|r| matches!(&r.target, Target::Internal(p) if p[0] == "app") && top_of(&r.file) != "app")
        .map(|r| r.to_string())
        .collect();
    assert!(
        bad.is_empty(),
        "app.rs is the wiring on top; nothing imports it:\n  {}",
        bad.join("\n  ")
    );
}

#[test]
fn every_exception_is_still_needed() {
    let scan = Scan::of_src();
    for (file, prefix, why) in EXCEPTIONS {
        assert!(
            scan.refs.iter().any(|r| r.file == *file && r.matches(prefix)),
            "exception ({file}, {prefix}, {why}) matches nothing any more: remove it from EXCEPTIONS"
        );
    }
}

// === the scanner ===

/// What a path names: a module of this crate (absolute segments, the first a top-level module), or another crate.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Internal(Vec<String>),
    External(String),
}

#[derive(Debug, Clone)]
struct Ref {
    /// Relative to `src/`, with `/` separators.
    file: String,
    line: usize,
    target: Target,
}

impl Ref {
    fn matches(&self, prefix: &str) -> bool {
        match &self.target {
            Target::Internal(p) => {
                let full = format!("crate::{}", p.join("::"));
                full == prefix || full.starts_with(&format!("{prefix}::"))
            }
            Target::External(k) => k == prefix,
        }
    }

    fn excepted(&self) -> bool {
        EXCEPTIONS.iter().any(|(f, p, _)| self.file == *f && self.matches(p))
    }
}

impl std::fmt::Display for Ref {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.target {
            Target::Internal(p) => write!(f, "src/{}:{}: crate::{}", self.file, self.line, p.join("::")),
            Target::External(k) => write!(f, "src/{}:{}: {k}::", self.file, self.line),
        }
    }
}

struct Scan {
    refs: Vec<Ref>,
    /// Top-level modules (the first component of every scanned file's module path).
    tops: BTreeSet<String>,
}

impl Scan {
    fn of_src() -> Scan {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        collect_rs(&root, &mut files);
        let sources: Vec<(String, String)> = files
            .iter()
            .map(|p| {
                let rel = p.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/");
                (rel, std::fs::read_to_string(p).unwrap())
            })
            .collect();
        let scan = Scan::of(&sources);
        assert!(
            scan.tops.len() > 10 && !scan.refs.is_empty(),
            "scanned nothing: {:?}",
            scan.tops
        );
        scan
    }

    /// Scans `(path under src/, text)` pairs. `main.rs` is another crate (the binary) and is skipped.
    fn of(sources: &[(String, String)]) -> Scan {
        let mut test_files: BTreeSet<String> = BTreeSet::new();
        let mut per_file = Vec::new();
        for (file, text) in sources {
            if file == "main.rs" || file.starts_with("bin/") {
                continue;
            }
            let scanned = scan_file(file, text);
            for m in &scanned.test_mods {
                let dir = module_dir(file);
                test_files.insert(format!("{dir}{m}.rs"));
                test_files.insert(format!("{dir}{m}/"));
            }
            per_file.push((file.clone(), scanned));
        }
        let is_test_file = |f: &str| {
            test_files
                .iter()
                .any(|t| f == t || (t.ends_with('/') && f.starts_with(t)))
        };
        let mut refs = Vec::new();
        let mut tops = BTreeSet::new();
        for (file, scanned) in per_file {
            if scanned.whole_file_is_test || is_test_file(&file) {
                continue;
            }
            if let Some(top) = module_path(&file).first() {
                tops.insert(top.clone());
            }
            refs.extend(scanned.refs);
        }
        // A root-relative path (`model::x` in lib.rs) names a top-level module only if there is one.
        refs.retain(|r| match &r.target {
            Target::Internal(p) => tops.contains(&p[0]),
            Target::External(_) => true,
        });
        Scan { refs, tops }
    }

    /// References the rules judge: all but the known exceptions.
    fn live_refs(&self) -> impl Iterator<Item = &Ref> {
        self.refs.iter().filter(|r| !r.excepted())
    }

    /// Edges between different top-level modules, each with the first reference that makes it.
    fn graph(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        let mut g: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for t in &self.tops {
            g.entry(t.clone()).or_default();
        }
        for r in self.live_refs() {
            let Target::Internal(p) = &r.target else { continue };
            let from = top_of(&r.file);
            if from.is_empty() || from == p[0] {
                continue;
            }
            g.entry(from)
                .or_default()
                .entry(p[0].clone())
                .or_insert_with(|| r.to_string());
        }
        g
    }
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect_rs(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file under `src/`: `lib.rs` → [], `a.rs` → [a], `a/mod.rs` → [a], `a/b.rs` → [a, b].
fn module_path(file: &str) -> Vec<String> {
    let mut parts: Vec<String> = file.trim_end_matches(".rs").split('/').map(String::from).collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    parts
}

/// The top-level module a file belongs to ("" for `lib.rs`).
fn top_of(file: &str) -> String {
    module_path(file).first().cloned().unwrap_or_default()
}

/// Where the files of a file's child modules live: `a/mod.rs`, `lib.rs` → their own folder; `a/b.rs` → `a/b/`.
fn module_dir(file: &str) -> String {
    let (dir, name) = file.rsplit_once('/').map_or(("", file), |(d, n)| (d, n));
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    if name == "mod.rs" || name == "lib.rs" {
        prefix
    } else {
        format!("{prefix}{}/", name.trim_end_matches(".rs"))
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    Sep,
    Punct(char),
}

#[derive(Debug, Default)]
struct Scanned {
    refs: Vec<Ref>,
    /// `#[cfg(test)] mod NAME;`: the file of NAME is test code.
    test_mods: Vec<String>,
    /// `#![cfg(test)]` at the top.
    whole_file_is_test: bool,
}

/// Tokens of Rust source with comments, string, char and number literals removed; each with its line.
fn lex(text: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = text.chars().collect();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let ident_start = |ch: char| ch.is_alphabetic() || ch == '_';
    let ident_char = |ch: char| ch.is_alphanumeric() || ch == '_';
    let (mut i, mut line, mut out) = (0, 1, Vec::new());
    // Skips a string body from the opening quote at `i`; returns the index after the closing quote.
    let skip_string = |mut i: usize, line: &mut usize| -> usize {
        i += 1;
        while i < c.len() && c[i] != '"' {
            if c[i] == '\\' {
                i += 1;
            }
            if at(i) == '\n' {
                *line += 1;
            }
            i += 1;
        }
        i + 1
    };
    // A raw string from `r` at `i` (`r"…"`, `r#"…"#`): the index after it, or None when it is not one.
    let skip_raw = |i: usize, line: &mut usize| -> Option<usize> {
        let mut j = i + 1;
        let mut hashes = 0;
        while at(j) == '#' {
            hashes += 1;
            j += 1;
        }
        if at(j) != '"' {
            return None;
        }
        j += 1;
        loop {
            if j >= c.len() {
                return Some(j);
            }
            if c[j] == '\n' {
                *line += 1;
            }
            if c[j] == '"' && (1..=hashes).all(|k| at(j + k) == '#') {
                return Some(j + 1 + hashes);
            }
            j += 1;
        }
    };
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if ch == '"' {
            i = skip_string(i, &mut line);
        } else if (ch == 'b' || ch == 'c') && at(i + 1) == '"' {
            i = skip_string(i + 1, &mut line);
        } else if ch == 'r' && (at(i + 1) == '"' || at(i + 1) == '#') && (i == 0 || !ident_char(c[i - 1])) {
            match skip_raw(i, &mut line) {
                Some(j) => i = j,
                // A raw identifier: `r#type`.
                None => i += 2,
            }
        } else if (ch == 'b' || ch == 'c') && at(i + 1) == 'r' && (at(i + 2) == '"' || at(i + 2) == '#') {
            i = skip_raw(i + 1, &mut line).unwrap_or(i + 2);
        } else if ch == 'b' && at(i + 1) == '\'' {
            i += 1; // a byte literal: the char literal rule below skips it
        } else if ch == '\'' {
            if at(i + 1) == '\\' {
                // An escaped char literal: '\n', '\'', '\u{1F600}'.
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3; // 'x'
            } else {
                i += 1; // a lifetime or a label: its name lexes as an identifier, harmlessly
            }
        } else if ch.is_ascii_digit() {
            while i < c.len() && ident_char(c[i]) {
                i += 1;
            }
        } else if ident_start(ch) {
            let start = i;
            while i < c.len() && ident_char(c[i]) {
                i += 1;
            }
            out.push((Tok::Ident(c[start..i].iter().collect()), line));
        } else if ch == ':' && at(i + 1) == ':' {
            out.push((Tok::Sep, line));
            i += 2;
        } else {
            out.push((Tok::Punct(ch), line));
            i += 1;
        }
    }
    out
}

/// The index after the bracketed group opening at `i` (`(`, `[` or `{`), nested groups included.
fn skip_group(toks: &[(Tok, usize)], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < toks.len() {
        match toks[i].0 {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

fn is(t: Option<&(Tok, usize)>, want: &Tok) -> bool {
    t.is_some_and(|(t, _)| t == want)
}

fn ident(s: &str) -> Tok {
    Tok::Ident(s.into())
}

/// Removes `#[cfg(test)]` items (the attribute, further attributes, the item up to its `;` or its `{ … }`).
fn strip_test_items(toks: Vec<(Tok, usize)>, scanned: &mut Scanned) -> Vec<(Tok, usize)> {
    let cfg_test = |toks: &[(Tok, usize)], i: usize| -> Option<usize> {
        // `#` `[` `cfg` `(` `test` `)` `]`, or `#` `!` `[` … for an inner attribute.
        let inner = is(toks.get(i + 1), &Tok::Punct('!'));
        let j = i + 1 + usize::from(inner);
        let pattern = [
            Tok::Punct('['),
            ident("cfg"),
            Tok::Punct('('),
            ident("test"),
            Tok::Punct(')'),
            Tok::Punct(']'),
        ];
        let matched =
            is(toks.get(i), &Tok::Punct('#')) && pattern.iter().enumerate().all(|(k, p)| is(toks.get(j + k), p));
        matched.then_some(j + pattern.len())
    };
    let mut out = Vec::with_capacity(toks.len());
    let mut i = 0;
    while i < toks.len() {
        let Some(mut j) = cfg_test(&toks, i) else {
            out.push(toks[i].clone());
            i += 1;
            continue;
        };
        if is(toks.get(i + 1), &Tok::Punct('!')) {
            scanned.whole_file_is_test = true;
            return Vec::new();
        }
        // Further attributes of the same item.
        while is(toks.get(j), &Tok::Punct('#')) && is(toks.get(j + 1), &Tok::Punct('[')) {
            j = skip_group(&toks, j + 1);
        }
        // `mod NAME;` (possibly `pub`, `pub(crate)`): the module's file is test code.
        let mut k = j;
        if is(toks.get(k), &ident("pub")) {
            k += 1;
            if is(toks.get(k), &Tok::Punct('(')) {
                k = skip_group(&toks, k);
            }
        }
        if is(toks.get(k), &ident("mod")) && is(toks.get(k + 2), &Tok::Punct(';')) {
            if let Some((Tok::Ident(name), _)) = toks.get(k + 1) {
                scanned.test_mods.push(name.clone());
            }
        }
        // An item runs to a `;` outside brackets, or through its `{ … }` body; anything else (a field, a variant,
        // an expression) to the `,` or `}` that ends it.
        const ITEMS: &[&str] = &[
            "fn",
            "mod",
            "impl",
            "struct",
            "enum",
            "trait",
            "union",
            "const",
            "static",
            "type",
            "use",
            "extern",
            "macro_rules",
            "unsafe",
            "async",
            "let",
            "default",
        ];
        let item = matches!(toks.get(k), Some((Tok::Ident(kw), _)) if ITEMS.contains(&kw.as_str()));
        while j < toks.len() {
            match toks[j].0 {
                Tok::Punct(';') => {
                    j += 1;
                    break;
                }
                Tok::Punct('{') => {
                    j = skip_group(&toks, j);
                    if item {
                        break;
                    }
                }
                Tok::Punct(',') if !item => {
                    j += 1;
                    break;
                }
                Tok::Punct('}') if !item => break,
                Tok::Punct('(' | '[') => j = skip_group(&toks, j),
                _ => j += 1,
            }
        }
        i = j;
    }
    out
}

/// The paths of a `use` tree or an inline path starting at `i` (an identifier): each as its segments, with
/// groups expanded (`a::{b, c::{d}}` → a::b, a::c::d; `self` in a group names the prefix). Returns the index
/// after it.
fn parse_tree(toks: &[(Tok, usize)], mut i: usize) -> (Vec<Vec<String>>, usize) {
    if is(toks.get(i), &Tok::Punct('{')) {
        let mut all = Vec::new();
        i += 1;
        while i < toks.len() && !is(toks.get(i), &Tok::Punct('}')) {
            match &toks[i].0 {
                Tok::Ident(s) if s == "as" => i += 2,
                Tok::Ident(_) | Tok::Punct('{') => {
                    let (paths, next) = parse_tree(toks, i);
                    all.extend(paths);
                    i = next;
                }
                _ => i += 1,
            }
        }
        return (all, i + 1);
    }
    let mut segs = Vec::new();
    while let Some((Tok::Ident(s), _)) = toks.get(i) {
        if s != "self" || segs.is_empty() {
            segs.push(s.clone());
        }
        i += 1;
        if !is(toks.get(i), &Tok::Sep) {
            break;
        }
        i += 1;
        if is(toks.get(i), &Tok::Punct('{')) {
            let (subs, next) = parse_tree(toks, i);
            let paths = subs
                .into_iter()
                .map(|sub| {
                    let sub = sub.into_iter().skip_while(|s| s == "self");
                    segs.iter().cloned().chain(sub).collect()
                })
                .collect::<Vec<Vec<String>>>();
            return (if paths.is_empty() { vec![segs] } else { paths }, next);
        }
        if is(toks.get(i), &Tok::Punct('*')) {
            i += 1;
            break;
        }
    }
    (vec![segs], i)
}

/// Resolves `segs` written in module `current` (absolute segments).
fn resolve(current: &[String], segs: &[String], file: &str, line: usize) -> Option<Ref> {
    let (first, rest) = segs.split_first()?;
    let absolute: Vec<String> = match first.as_str() {
        "crate" => rest.to_vec(),
        "self" => current.iter().chain(rest).cloned().collect(),
        "super" => {
            let mut base = current.to_vec();
            base.pop()?;
            let mut rest = rest;
            while rest.first().is_some_and(|s| s == "super") {
                base.pop()?;
                rest = &rest[1..];
            }
            base.into_iter().chain(rest.iter().cloned()).collect()
        }
        // In the crate root, a relative path may name a top-level module (checked against the files later).
        _ if current.is_empty() => segs.to_vec(),
        // Elsewhere a relative path names a local item or another crate; only the crate matters here.
        _ => {
            return Some(Ref {
                file: file.into(),
                line,
                target: Target::External(first.clone()),
            })
        }
    };
    (!absolute.is_empty()).then(|| Ref {
        file: file.into(),
        line,
        target: Target::Internal(absolute),
    })
}

/// Every path in a file, resolved.
fn scan_file(file: &str, text: &str) -> Scanned {
    let mut scanned = Scanned::default();
    let toks = strip_test_items(lex(text), &mut scanned);
    let base = module_path(file);
    // Inline modules: (name, brace depth inside them).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        match &toks[i].0 {
            Tok::Punct('{') => {
                depth += 1;
                i += 1;
                continue;
            }
            Tok::Punct('}') => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
                i += 1;
                continue;
            }
            Tok::Ident(m) if m == "mod" => {
                if let (Some((Tok::Ident(name), _)), true) = (toks.get(i + 1), is(toks.get(i + 2), &Tok::Punct('{'))) {
                    inline.push((name.clone(), depth + 1));
                }
                i += 1;
                continue;
            }
            _ => {}
        }
        let prev = i.checked_sub(1).map(|p| &toks[p].0);
        // `$crate::` in a macro, a field or method (`.x::<T>`), a path's later segment: not a path start.
        let continues = matches!(prev, Some(Tok::Sep | Tok::Punct('$' | '.')));
        let leading_sep = matches!(toks[i].0, Tok::Sep)
            && !matches!(prev, Some(Tok::Ident(_) | Tok::Punct('>')))
            && matches!(toks.get(i + 1), Some((Tok::Ident(_), _)));
        if leading_sep {
            // `::krate::x`: always another crate.
            if let Some((Tok::Ident(k), line)) = toks.get(i + 1) {
                scanned.refs.push(Ref {
                    file: file.into(),
                    line: *line,
                    target: Target::External(k.clone()),
                });
            }
            i += 2;
            continue;
        }
        let starts = matches!(toks[i].0, Tok::Ident(_)) && !continues && is(toks.get(i + 1), &Tok::Sep);
        if !starts {
            i += 1;
            continue;
        }
        let line = toks[i].1;
        let current: Vec<String> = base
            .iter()
            .cloned()
            .chain(inline.iter().map(|(n, _)| n.clone()))
            .collect();
        let (paths, next) = parse_tree(&toks, i);
        for p in paths {
            if let Some(r) = resolve(&current, &p, file, line) {
                scanned.refs.push(r);
            }
        }
        i = next.max(i + 1);
    }
    scanned
}

// === cycles ===

/// A cycle in `graph` (its nodes in order, the first repeated at the end), if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeMap<String, String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeMap<String, String>>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(n.to_string(), Mark::Open);
        stack.push(n.to_string());
        for next in graph.get(n).into_iter().flat_map(|e| e.keys()) {
            match marks.get(next).copied().unwrap_or(Mark::New) {
                Mark::Open => {
                    let from = stack.iter().position(|s| s == next).unwrap();
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = visit(next, graph, marks, stack) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks.insert(n.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for n in graph.keys() {
        if marks.get(n).copied().unwrap_or(Mark::New) == Mark::New {
            if let Some(c) = visit(n, graph, &mut marks, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

fn describe_cycle(graph: &BTreeMap<String, BTreeMap<String, String>>, cycle: &[String]) -> String {
    let mut out = format!("  {}\n", cycle.join(" -> "));
    for w in cycle.windows(2) {
        out.push_str(&format!("  {} -> {}: {}\n", w[0], w[1], graph[&w[0]][&w[1]]));
    }
    out
}

// === tests of the scanner itself ===

fn scan(files: &[(&str, &str)]) -> Scan {
    let owned: Vec<(String, String)> = files.iter().map(|(f, t)| (f.to_string(), t.to_string())).collect();
    Scan::of(&owned)
}

fn targets(s: &Scan, file: &str) -> Vec<String> {
    s.refs
        .iter()
        .filter(|r| r.file == file)
        .map(|r| match &r.target {
            Target::Internal(p) => format!("crate::{}", p.join("::")),
            Target::External(k) => format!("extern {k}"),
        })
        .collect()
}

/// Every top-level module a test scan may name.
const TOPS: &[(&str, &str)] = &[
    ("a.rs", ""),
    ("b/mod.rs", ""),
    ("c.rs", ""),
    ("app.rs", ""),
    ("config.rs", ""),
];

fn with_tops<'a>(files: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all: Vec<(&str, &str)> = TOPS
        .iter()
        .filter(|(f, _)| !files.iter().any(|(g, _)| g == f))
        .copied()
        .collect();
    all.extend_from_slice(files);
    all
}

#[test]
fn scanner_reads_use_lines_inline_paths_and_groups() {
    let s = scan(&with_tops(&[(
        "a.rs",
        "use crate::b::X;\nuse crate::{c, config::{self, Y as Z}};\nfn f() { crate::app::start(); let _ = super_x::y(); }\n",
    )]));
    assert_eq!(
        targets(&s, "a.rs"),
        [
            "crate::b::X",
            "crate::c",
            "crate::config",
            "crate::config::Y",
            "crate::app::start",
            "extern super_x"
        ]
    );
    assert_eq!(s.refs.iter().find(|r| r.matches("crate::app")).unwrap().line, 3);
}

#[test]
fn scanner_resolves_super_and_self_through_files_and_inline_modules() {
    let s = scan(&with_tops(&[
        (
            "b/deep/x.rs",
            "use super::super::super::c::Y;\nuse super::super::W;\nuse self::inner::Z;\nuse super::sibling;\n",
        ),
        (
            "b/mod.rs",
            "mod m { mod n { use super::super::super::config::K; } }\nuse super::a::W;\n",
        ),
    ]));
    assert_eq!(
        targets(&s, "b/deep/x.rs"),
        [
            "crate::c::Y",
            "crate::b::W",
            "crate::b::deep::x::inner::Z",
            "crate::b::deep::sibling"
        ]
    );
    assert_eq!(targets(&s, "b/mod.rs"), ["crate::config::K", "crate::a::W"]);
}

#[test]
fn scanner_ignores_comments_literals_and_test_code() {
    let text = r##"
// use crate::app::X;
/* crate::app::Y /* nested */ crate::app::Z */
/// [`crate::app::start`]
const S: &str = "crate::app::A \" crate::app::B";
const R: &str = r#"crate::app::C "quoted" "#;
const Q: char = '"'; const E: char = '\''; const U: u8 = b'"';
fn lifetimes<'a>(x: &'a str) -> &'a str { x }
#[cfg(test)]
mod tests { use crate::app::D; }
#[cfg(test)]
#[allow(dead_code)]
fn helper() { crate::app::E(); }
#[cfg(test)]
mod more_tests;
struct S {
    #[cfg(test)]
    probe: crate::app::G,
    kept: crate::c::Field,
}
fn generic<K>(x: K) -> K
where
    K: Clone,
{
    x
}
#[cfg(test)]
fn contents<K>(x: K) -> Vec<K>
where
    K: Clone,
    K: Send,
{
    crate::app::H(x)
}
use crate::c::Kept;
"##;
    let s = scan(&with_tops(&[("a.rs", text), ("a/more_tests.rs", "use crate::app::F;")]));
    assert_eq!(targets(&s, "a.rs"), ["crate::c::Field", "crate::c::Kept"]);
    assert!(targets(&s, "a/more_tests.rs").is_empty());
}

#[test]
fn scanner_names_external_crates() {
    let s = scan(&with_tops(&[(
        "a.rs",
        "use tokio::sync::watch;\nfn f() { let _ = ::hyper::Request::new(()); let x = y.map::<u8>(); }\n",
    )]));
    assert_eq!(targets(&s, "a.rs"), ["extern tokio", "extern hyper"]);
}

#[test]
fn cycles_are_found_and_printed() {
    let s = scan(&with_tops(&[
        ("a.rs", "use crate::b::X;"),
        ("b/mod.rs", "mod inner;"),
        ("b/inner.rs", "fn f() { super::super::c::g(); }"),
        ("c.rs", "use crate::a::Y;"),
    ]));
    let g = s.graph();
    let cycle = find_cycle(&g).expect("a -> b -> c -> a");
    assert_eq!(cycle, ["a", "b", "c", "a"]);
    let text = describe_cycle(&g, &cycle);
    assert!(text.contains("b -> c: src/b/inner.rs:1: crate::c::g"), "{text}");

    let acyclic = scan(&with_tops(&[
        ("a.rs", "use crate::b::X;"),
        ("b/mod.rs", "use crate::c::Y;"),
    ]));
    assert_eq!(find_cycle(&acyclic.graph()), None);
}
