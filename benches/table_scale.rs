//! Table-scale figures (a plain bench, `harness = false`): `cargo bench --bench table_scale`.
//!
//! 1. Build time and memory of `model::translate` + `snapshot::Snapshot::build` for 1,000 / 10,000 / 50,000
//!    Ingresses (each one host, one path, one Service with one EndpointSlice), generated in memory. Each size
//!    runs in a fresh child process (this binary re-executed), so its RSS figures start from the same floor;
//!    memory is VmRSS before and after, and the peak (VmHWM, reset first through /proc/self/clear_refs). Also
//!    the publish after one Ingress changed: translate again, then `Snapshot::rebuild` (unchanged hosts keep
//!    their routes), and (incremental) `model::Incremental` then a kept `snapshot::Builder`, as the gateway runs.
//! 2. Change to serving at 10,000 Ingresses: a gateway (`app::start`, manifest directory, poll interval
//!    `CHANGE_POLL_MS`, default 100) serves two echo backends; one Ingress is edited (written to a temporary file
//!    and renamed over the old one) to point at the other backend, and a client polls over HTTP until the new
//!    backend answers. Two layouts: `split` (the edited Ingress in its own file, the rest in one big file) and
//!    `single` (everything in one file, so the whole file is parsed again on each edit). Reported per edit, with
//!    the parts measured alone (reload of the changed directory, translate, rebuild).
//! 3. The same in cluster mode (`cluster` layout): the objects live in the fake API server
//!    (crates/fake-apiserver) and the gateway watches it; one Ingress is updated through the server, which sends
//!    the watch event; the gateway debounces 50 ms, then compiles and publishes.
//!
//! Knobs: `TABLE_SIZES` (e.g. "1000 10000"), `CHANGE_INGRESSES` (10000), `CHANGE_EDITS` (8), `CHANGE_POLL_MS`,
//! `CHANGE_LAYOUTS` ("split single cluster").

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use portico::app::{self, Source};
use portico::config::Config;
use portico::echo::EchoServer;
use portico::model::{translate, Incremental};
use portico::routing::Lookup;
use portico::snapshot::{Builder, Snapshot};
use portico::source::file::ManifestDir;

const CHILD_ENV: &str = "PORTICO_TABLE_SCALE_CHILD";

fn main() {
    if let Ok(n) = std::env::var(CHILD_ENV) {
        child(n.parse().expect("size"));
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing useful either: run only under bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("table_scale: run with `cargo bench --bench table_scale`");
        return;
    }
    let sizes: Vec<usize> = std::env::var("TABLE_SIZES")
        .unwrap_or_else(|_| "1000 10000 50000".into())
        .split_whitespace()
        .map(|s| s.parse().expect("TABLE_SIZES: numbers"))
        .collect();
    println!("## Table build: translate + Snapshot::build (each size in a fresh process; times: best of 3, or one run when it takes over 2 s)\n");
    println!("| Ingresses | translate ms | Snapshot::build ms | total ms | one Ingress changed: translate + rebuild ms | RSS after translate MiB | RSS after build MiB | peak during build MiB | per Ingress KiB (translation + table) | objects in memory MiB |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let exe = std::env::current_exe().expect("own path");
    for n in sizes {
        let out = Command::new(&exe)
            .env(CHILD_ENV, n.to_string())
            .output()
            .expect("run child");
        let line = String::from_utf8_lossy(&out.stdout);
        print!("{line}");
        if !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        }
    }
    println!();
    let layouts = std::env::var("CHANGE_LAYOUTS").unwrap_or_else(|_| "split single cluster".into());
    for layout in layouts.split_whitespace() {
        match layout {
            "cluster" => change_to_serving_cluster(),
            _ => change_to_serving(layout == "single"),
        }
    }
}

// === table build, one size per process ===

fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn reset_peak() {
    // "5" resets VmHWM to the current RSS (Linux >= 4.0)
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn child(n: usize) {
    let opts = common::options();
    let rss_start = status_kib("VmRSS:");
    let state = common::cluster_state(n);
    let rss_state = status_kib("VmRSS:");

    // memory: the first build, holding both results
    reset_peak();
    let rss0 = status_kib("VmRSS:");
    let t0 = Instant::now();
    let translation = translate(&state, &opts);
    let t_translate = t0.elapsed();
    let rss_t = status_kib("VmRSS:");
    let t1 = Instant::now();
    let snap = Snapshot::build(&translation, None, 1, None);
    let t_build = t1.elapsed();
    let rss_s = status_kib("VmRSS:");
    let peak = status_kib("VmHWM:");
    assert!(
        translation.diagnostics.is_empty(),
        "{:?}",
        &translation.diagnostics[..1]
    );
    assert!(matches!(
        snap.sets[0].lookup(&common::host(n / 2), "/"),
        Lookup::Route(_)
    ));

    // time: best of 3 (the first included); one run only when it already took seconds
    let mut best_t = t_translate;
    let mut best_b = t_build;
    let runs = if t_translate + t_build > Duration::from_secs(2) {
        1
    } else {
        3
    };
    for g in 2..=runs {
        let a = Instant::now();
        let t = translate(&state, &opts);
        let ta = a.elapsed();
        let b = Instant::now();
        let s = Snapshot::build(&t, None, g, Some(&snap));
        let tb = b.elapsed();
        std::hint::black_box(&s);
        best_t = best_t.min(ta);
        best_b = best_b.min(tb);
    }
    // One Ingress now points at another Service: translate everything again, rebuild reusing unchanged hosts.
    let mut changed = state.clone();
    let rules = changed.ingresses[n / 2].spec.as_mut().and_then(|s| s.rules.as_mut());
    let http = rules.expect("rules")[0].http.as_mut().expect("http");
    let mut paths = http.paths.to_vec();
    paths[0].backend.service.as_mut().expect("service").name = "svc-00000".into();
    http.paths = paths.into();
    let mut best_change = Duration::MAX;
    for g in 0..3 {
        let a = Instant::now();
        let t2 = translate(&changed, &opts);
        let s2 = Snapshot::rebuild(&t2, None, 10 + g, &snap, &translation);
        best_change = best_change.min(a.elapsed());
        assert!(matches!(s2.sets[0].lookup(&common::host(0), "/"), Lookup::Route(_)));
    }
    // The same with incremental translation (what the gateway runs): only the changed Ingress's host again.
    // The builder is kept from one build to the next, as the publisher keeps it.
    let mut incremental = Incremental::new(opts.clone());
    let mut builder = Builder::default();
    let metrics = portico::metrics::Metrics::new(&["a".to_string()]);
    let mut last = incremental.translate(&state);
    let mut last_snap = builder.build(&last, None, 1, None, &mut metrics.route_counters());
    let mut best_incremental = Duration::MAX;
    for g in 0..3 {
        let a = Instant::now();
        let t2 = incremental.translate(if g % 2 == 0 { &changed } else { &state });
        let s2 = builder.build(
            &t2,
            None,
            10 + g,
            Some((&last_snap, Some(&last))),
            &mut metrics.route_counters(),
        );
        best_incremental = best_incremental.min(a.elapsed());
        (last, last_snap) = (t2, s2);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "| {n} | {:.1} | {:.1} | {:.1} | {:.1} (incremental: {:.1}) | +{:.1} | +{:.1} | +{:.1} | {:.2} | {:.1} |",
        ms(best_t),
        ms(best_b),
        ms(best_t + best_b),
        ms(best_change),
        ms(best_incremental),
        mib(rss_t.saturating_sub(rss0)),
        mib(rss_s.saturating_sub(rss0)),
        mib(peak.saturating_sub(rss0)),
        rss_s.saturating_sub(rss0) as f64 / n as f64,
        mib(rss_state.saturating_sub(rss_start)),
    );
}

// === change to serving ===

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn service_yaml(name: &str, addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: bench}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: bench\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints: [{{addresses: [\"{}\"], conditions: {{ready: true}}}}]\n",
        addr.port(),
        addr.ip()
    )
}

fn ingress_yaml(name: &str, host: &str, service: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: bench}}\nspec:\n  rules:\n  - host: {host}\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: {service}, port: {{name: http}}}}}}}}\n"
    )
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// One plain HTTP/1.1 request on a fresh connection; returns the `x-backend` header of the reply.
/// Makes `edits` edits that point `edit_host` alternately at backend "b" and "a" (`apply` gets the Service,
/// `edit-b` or `edit-a`), each at a different phase against the poll timer, and times each until the new
/// backend answers.
fn time_edits(edits: usize, addr: SocketAddr, edit_host: &str, mut apply: impl FnMut(&str)) -> Vec<Duration> {
    let mut samples = Vec::new();
    let mut target = "b";
    for e in 0..edits {
        std::thread::sleep(Duration::from_millis(300 + (e as u64 * 37) % 100));
        apply(if target == "b" { "edit-b" } else { "edit-a" });
        let t = Instant::now();
        loop {
            if backend_of(addr, edit_host).as_deref() == Some(target) {
                break;
            }
            assert!(t.elapsed() <= Duration::from_secs(30), "edit {e} not seen after 30 s");
            std::thread::sleep(Duration::from_millis(1));
        }
        samples.push(t.elapsed());
        target = if target == "b" { "a" } else { "b" };
    }
    samples
}

/// The default configuration with its listener and admin API on free loopback ports, no HTTPS.
fn loopback_config() -> Config {
    let mut config = Config::default();
    config.listener_sets[0].http = vec![([127, 0, 0, 1], 0).into()];
    config.listener_sets[0].https = vec![];
    config.admin.address = ([127, 0, 0, 1], 0).into();
    config
}

fn backend_of(addr: SocketAddr, host: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.lines()
        .find_map(|l| l.strip_prefix("x-backend: ").map(|v| v.trim().to_string()))
}

fn change_to_serving(single: bool) {
    let n = env_usize("CHANGE_INGRESSES", 10_000);
    let edits = env_usize("CHANGE_EDITS", 8);
    let poll = Duration::from_millis(env_usize("CHANGE_POLL_MS", 100) as u64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = rt.block_on(two_echoes());
    // bulk: n-1 Ingresses, each with its own Service + EndpointSlice (endpoints: backend a)
    let mut bulk = String::new();
    for i in 0..n - 1 {
        let svc = format!("svc-{i:05}");
        bulk.push_str(&service_yaml(&svc, a.addr));
        bulk.push_str("---\n");
        bulk.push_str(&ingress_yaml(&format!("ing-{i:05}"), &common::host(i), &svc));
        bulk.push_str("---\n");
    }
    bulk.push_str(&service_yaml("edit-a", a.addr));
    bulk.push_str("---\n");
    bulk.push_str(&service_yaml("edit-b", b.addr));
    let edit_host = "edited.bench.example";
    let bulk_path = dir.path().join("bulk.yaml");
    let edit_path = dir.path().join("edited.yaml");
    // The file an edit rewrites, and its text with the edited Ingress pointing at `svc`.
    let (edited_file, text_for) = if single {
        (
            bulk_path.clone(),
            Box::new(move |svc: &str| format!("{bulk}---\n{}", ingress_yaml("edited", edit_host, svc)))
                as Box<dyn Fn(&str) -> String>,
        )
    } else {
        std::fs::write(&bulk_path, &bulk).expect("write bulk");
        (
            edit_path,
            Box::new(|svc: &str| ingress_yaml("edited", edit_host, svc)) as Box<dyn Fn(&str) -> String>,
        )
    };
    write_atomically(&edited_file, &text_for("edit-a"));

    // The parts measured alone (medians of 3): a cold load, a reload after the edit, translate, rebuild.
    let opts = common::options();
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (mut cold, mut reload, mut full_t, mut tr_t, mut rebuild_t) = (vec![], vec![], vec![], vec![], vec![]);
    for g in 0..3u64 {
        let mut md = ManifestDir::new(dir.path());
        let t = Instant::now();
        let (state, _) = md.load().expect("load");
        cold.push(t.elapsed());
        let mut incremental = Incremental::new(opts.clone());
        let mut builder = Builder::default();
        let metrics = portico::metrics::Metrics::new(&["a".to_string()]);
        let first = incremental.translate(&state);
        let snap = builder.build(&first, None, 1, None, &mut metrics.route_counters());
        drop(state);
        write_atomically(&edited_file, &text_for(if g % 2 == 0 { "edit-b" } else { "edit-a" }));
        let t = Instant::now();
        let (state, _) = md.load().expect("reload");
        reload.push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(translate(&state, &opts));
        full_t.push(t.elapsed());
        let t = Instant::now();
        let second = incremental.translate(&state);
        tr_t.push(t.elapsed());
        let t = Instant::now();
        let s = builder.build(
            &second,
            None,
            2,
            Some((&snap, Some(&first))),
            &mut metrics.route_counters(),
        );
        rebuild_t.push(t.elapsed());
        std::hint::black_box(&s);
    }
    write_atomically(&edited_file, &text_for("edit-a"));
    let (cold, reload, full_t, tr_t, rebuild_t) = (
        median(cold),
        median(reload),
        median(full_t),
        median(tr_t),
        median(rebuild_t),
    );

    let config = loopback_config();
    let started = Instant::now();
    let running = rt
        .block_on(app::start(
            config,
            Source::Manifests {
                dir: dir.path().to_path_buf(),
                poll_interval: poll,
            },
        ))
        .expect("start gateway");
    let startup = started.elapsed();
    let addr = running.http_addrs[0][0];
    assert_eq!(backend_of(addr, edit_host).as_deref(), Some("a"), "initial route");

    let samples = time_edits(edits, addr, edit_host, |svc| {
        write_atomically(&edited_file, &text_for(svc))
    });
    rt.block_on(running.shutdown());
    drop((a, b));

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut sorted: Vec<f64> = samples.iter().map(|d| ms(*d)).collect();
    sorted.sort_by(|x, y| x.partial_cmp(y).expect("finite"));
    let layout = if single {
        "single: all in one file"
    } else {
        "split: the edited Ingress in its own file"
    };
    println!(
        "## Change to serving at {n} Ingresses ({layout}; poll interval {} ms, {edits} edits)\n",
        poll.as_millis()
    );
    print_edit_times(&sorted);
    println!("| part | ms | where it comes from |");
    println!("|---|---|---|");
    println!(
        "| wait for the next poll | 0-{} (mean {:.0}) | polled every 20 ms while a fingerprint is cheap (at most `--poll-interval`, here {} ms) |",
        poll.min(Duration::from_millis(20)).as_millis(),
        ms(poll.min(Duration::from_millis(20))) / 2.0,
        poll.as_millis()
    );
    println!("| settle | 10 | `app::SETTLE`: the directory must stay unchanged this long before it is read |");
    println!(
        "| reload after the edit | {:.1} | `ManifestDir::load`: stat every file, parse the changed one (cold load: {:.0}) |",
        ms(reload),
        ms(cold)
    );
    println!(
        "| translate (incremental) | {:.1} | `model::Incremental`: digests of every object, then the changed Ingress's hosts (a full translation: {:.1}) |",
        ms(tr_t),
        ms(full_t)
    );
    println!(
        "| rebuild (snapshot::Builder) | {:.1} | unchanged hosts keep their routes; the host maps are copied and edited |",
        ms(rebuild_t)
    );
    println!(
        "| expected total (mean) | {:.0} | poll/2 + settle + the three above, plus the publish's comparisons and metrics |",
        ms(poll.min(Duration::from_millis(20))) / 2.0 + 10.0 + ms(reload + tr_t + rebuild_t)
    );
    println!(
        "\n(gateway start with {n} Ingresses, first table published: {:.0} ms)\n",
        ms(startup)
    );
}

// === change to serving, cluster mode ===

fn yaml_objects(text: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde_yaml::Value::deserialize(d).expect("yaml"))
        .filter(|v| !v.is_null())
        .map(|v| serde_json::to_value(v).expect("json"))
        .collect()
}

fn change_to_serving_cluster() {
    let n = env_usize("CHANGE_INGRESSES", 10_000);
    let edits = env_usize("CHANGE_EDITS", 8);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (server, a, b) = rt.block_on(async {
        let server = portico_fake_apiserver::FakeApiServer::start()
            .await
            .expect("fake API server");
        let (a, b) = two_echoes().await;
        (server, a, b)
    });
    let upsert = |text: &str| {
        for obj in yaml_objects(text) {
            server.upsert(obj).expect("upsert");
        }
    };
    upsert("apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: portico}\nspec: {controller: portico.dev/ingress-controller}\n");
    for i in 0..n - 1 {
        let svc = format!("svc-{i:05}");
        upsert(&service_yaml(&svc, a.addr));
        upsert(&with_class(&ingress_yaml(
            &format!("ing-{i:05}"),
            &common::host(i),
            &svc,
        )));
    }
    upsert(&service_yaml("edit-a", a.addr));
    upsert(&service_yaml("edit-b", b.addr));
    let edit_host = "edited.bench.example";
    let edited = |svc: &str| with_class(&ingress_yaml("edited", edit_host, svc));
    upsert(&edited("edit-a"));

    let config = loopback_config();
    let started = Instant::now();
    let running = rt
        .block_on(app::start(
            config,
            Source::Kube {
                client: {
                    let _runtime = rt.enter();
                    server.client()
                },
                options: portico::source::kube::ClusterOptions::default(),
            },
        ))
        .expect("start gateway");
    let addr = running.http_addrs[0][0];
    let t = Instant::now();
    while backend_of(addr, edit_host).as_deref() != Some("a") {
        assert!(t.elapsed() < Duration::from_secs(120), "first table not published");
        std::thread::sleep(Duration::from_millis(20));
    }
    let startup = started.elapsed();

    let samples = time_edits(edits, addr, edit_host, |svc| upsert(&edited(svc)));
    rt.block_on(running.shutdown());
    drop((a, b, server));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut sorted: Vec<f64> = samples.iter().map(|d| ms(*d)).collect();
    sorted.sort_by(|x, y| x.partial_cmp(y).expect("finite"));
    println!("## Change to serving at {n} Ingresses (cluster mode, fake API server; debounce 50 ms, {edits} edits)\n");
    print_edit_times(&sorted);
    println!(
        "(gateway start with {n} Ingresses, first table serving: {:.0} ms)\n",
        ms(startup)
    );
}

/// An Ingress of class `portico` (cluster mode has no implicit default class).
fn with_class(ingress: &str) -> String {
    ingress.replace("spec:\n", "spec:\n  ingressClassName: portico\n")
}

/// The edit-to-serving times (sorted, ms): each, then min / median / max.
fn print_edit_times(sorted: &[f64]) {
    println!(
        "edit -> new backend serving, ms: {}",
        sorted.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>().join(", ")
    );
    println!(
        "min {:.0} / median {:.0} / max {:.0} ms\n",
        sorted[0],
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1]
    );
}

/// The two loopback backends an edit switches between: `a` before, `b` after.
async fn two_echoes() -> (EchoServer, EchoServer) {
    let a = EchoServer::start("a", ([127, 0, 0, 1], 0).into())
        .await
        .expect("echo a");
    let b = EchoServer::start("b", ([127, 0, 0, 1], 0).into())
        .await
        .expect("echo b");
    (a, b)
}
