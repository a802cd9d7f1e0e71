//! Table-scale figures (a plain bench, `harness = false`): `cargo bench --bench table_scale`.
//!
//! 1. Build time and memory of `model::translate` + `routing::Snapshot::build` for 1,000 / 10,000 / 50,000
//!    Ingresses (each one host, one path, one Service with one EndpointSlice), generated in memory. Each size
//!    runs in a fresh child process (this binary re-executed), so its RSS figures start from the same floor;
//!    memory is VmRSS before and after, and the peak (VmHWM, reset first through /proc/self/clear_refs).
//! 2. Change to serving at 10,000 Ingresses: a gateway (`app::start`, manifest directory, poll interval
//!    `CHANGE_POLL_MS`, default 100) serves two echo backends; one Ingress is edited to point at the other
//!    backend, and requests poll until the change is seen. Reported per edit, with the parts the gateway's own
//!    constants explain (the poll interval, the 100 ms debounce) and the measured reload (read + parse +
//!    translate + build) separated out.
//!
//! Knobs: `TABLE_SIZES` (e.g. "1000 10000"), `CHANGE_INGRESSES` (10000), `CHANGE_EDITS` (8), `CHANGE_POLL_MS`.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use portico::app::{self, Source};
use portico::config::Config;
use portico::echo::EchoServer;
use portico::model::translate;
use portico::routing::{Lookup, Snapshot};
use portico::source::manifests::ManifestDir;

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
    println!("| Ingresses | translate ms | Snapshot::build ms | total ms | RSS after translate MiB | RSS after build MiB | peak during build MiB | per Ingress KiB (translation + table) | objects in memory MiB |");
    println!("|---|---|---|---|---|---|---|---|---|");
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
    change_to_serving();
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
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "| {n} | {:.1} | {:.1} | {:.1} | +{:.1} | +{:.1} | +{:.1} | {:.2} | {:.1} |",
        ms(best_t),
        ms(best_b),
        ms(best_t + best_b),
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
fn backend_of(addr: SocketAddr, host: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.lines()
        .find_map(|l| l.strip_prefix("x-backend: ").map(|v| v.trim().to_string()))
}

fn change_to_serving() {
    let n = env_usize("CHANGE_INGRESSES", 10_000);
    let edits = env_usize("CHANGE_EDITS", 8);
    let poll = Duration::from_millis(env_usize("CHANGE_POLL_MS", 100) as u64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = rt.block_on(async {
        let a = EchoServer::start("a", ([127, 0, 0, 1], 0).into())
            .await
            .expect("echo a");
        let b = EchoServer::start("b", ([127, 0, 0, 1], 0).into())
            .await
            .expect("echo b");
        (a, b)
    });
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
    std::fs::write(dir.path().join("bulk.yaml"), bulk).expect("write bulk");
    let edit_host = "edited.bench.example";
    let edit_path = dir.path().join("edited.yaml");
    write_atomically(&edit_path, &ingress_yaml("edited", edit_host, "edit-a"));

    // the reload the gateway does after noticing a change, measured alone (read + parse + translate + build)
    let opts = common::options();
    let mut reload = Vec::new();
    for g in 1..=3 {
        let t = Instant::now();
        let mut md = ManifestDir::new(dir.path());
        let (state, _) = md.load().expect("load");
        let parse = t.elapsed();
        let tr = translate(&state, &opts);
        let s = Snapshot::build(&tr, None, g, None);
        std::hint::black_box(&s);
        reload.push((parse, t.elapsed()));
    }
    reload.sort();
    let (parse, reload_total) = reload[1];

    let mut config = Config::default();
    config.listener_sets[0].http = vec![([127, 0, 0, 1], 0).into()];
    config.listener_sets[0].https = vec![];
    config.admin.address = ([127, 0, 0, 1], 0).into();
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

    let mut samples = Vec::new();
    let mut target = "b";
    for e in 0..edits {
        // vary the phase against the poll timer
        std::thread::sleep(Duration::from_millis(300 + (e as u64 * 37) % 100));
        let svc = if target == "b" { "edit-b" } else { "edit-a" };
        write_atomically(&edit_path, &ingress_yaml("edited", edit_host, svc));
        let t = Instant::now();
        let mut polls = 0u32;
        loop {
            polls += 1;
            if backend_of(addr, edit_host).as_deref() == Some(target) {
                break;
            }
            if t.elapsed() > Duration::from_secs(30) {
                panic!("edit {e} not seen after 30 s");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        samples.push((t.elapsed(), polls));
        target = if target == "b" { "a" } else { "b" };
    }
    rt.block_on(running.shutdown());
    drop((a, b));

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut sorted: Vec<f64> = samples.iter().map(|(d, _)| ms(*d)).collect();
    sorted.sort_by(|x, y| x.partial_cmp(y).expect("finite"));
    let median = sorted[sorted.len() / 2];
    println!(
        "## Change to serving at {n} Ingresses (poll interval {} ms, {edits} edits)\n",
        poll.as_millis()
    );
    println!(
        "edit -> new backend serving, ms: {}",
        sorted.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>().join(", ")
    );
    println!(
        "min {:.0} / median {:.0} / max {:.0} ms\n",
        sorted[0],
        median,
        sorted[sorted.len() - 1]
    );
    println!("| part | ms | where it comes from |");
    println!("|---|---|---|");
    println!(
        "| wait for the next poll | 0-{} (mean {:.0}) | `--poll-interval`: the fingerprint is checked once per interval |",
        poll.as_millis(),
        ms(poll) / 2.0
    );
    println!("| debounce | 100 | `app::DEBOUNCE`: after a change is seen, wait 100 ms and fingerprint again |");
    println!(
        "| reload: read + parse {n} Ingresses | {:.0} | `ManifestDir::load` (serde_yaml into k8s-openapi types) |",
        ms(parse)
    );
    println!(
        "| reload: translate + Snapshot::build | {:.0} | measured alone, same directory |",
        ms(reload_total - parse)
    );
    println!(
        "| expected total (mean) | {:.0} | poll/2 + debounce + reload + two fingerprints of the directory |",
        ms(poll) / 2.0 + 100.0 + ms(reload_total)
    );
    println!(
        "\n(gateway start with {n} Ingresses, first table published: {:.0} ms)",
        ms(startup)
    );
}
