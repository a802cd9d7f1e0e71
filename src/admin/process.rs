//! The standard `process_*` metrics (as Prometheus client libraries export them) and `portico_build_info`, read
//! from `/proc/self` when `/metrics` is scraped. Linux only; elsewhere only the build info is written.

use std::fmt::Write;

/// Appends the process metrics and the build info to a text exposition.
pub fn render(out: &mut String) {
    let _ = writeln!(
        out,
        "# HELP portico_build_info The running build: version (constant 1)."
    );
    let _ = writeln!(out, "# TYPE portico_build_info gauge");
    let _ = writeln!(out, "portico_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    if let Some(p) = read() {
        let mut gauge = |name: &str, kind: &str, help: &str, v: f64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {v}");
        };
        gauge(
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent, in seconds.",
            p.cpu_seconds,
        );
        gauge(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            p.resident_bytes,
        );
        gauge(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            p.virtual_bytes,
        );
        gauge(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch, in seconds.",
            p.start_time,
        );
        if let Some(n) = p.open_fds {
            gauge("process_open_fds", "gauge", "Open file descriptors.", n);
        }
        if let Some(n) = p.max_fds {
            gauge("process_max_fds", "gauge", "The limit of open file descriptors.", n);
        }
        gauge("process_threads", "gauge", "Threads of the process.", p.threads);
    }
}

struct Process {
    cpu_seconds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    start_time: f64,
    threads: f64,
    open_fds: Option<f64>,
    max_fds: Option<f64>,
}

/// Clock ticks per second of `/proc/self/stat`'s times: 100 on every Linux architecture Portico builds for
/// (`USER_HZ`, fixed by the kernel's ABI).
const TICKS: f64 = 100.0;

fn read() -> Option<Process> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let p = parse_stat(&stat)?;
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as f64);
    // In kB whatever the page size (4 KiB, or 16/64 KiB on some arm64 kernels).
    let resident_bytes = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines().find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse::<f64>()
                .ok()
        })
    })? * 1024.0;
    let max_fds = std::fs::read_to_string("/proc/self/limits").ok().and_then(|l| {
        l.lines()
            .find(|l| l.starts_with("Max open files"))?
            .split_whitespace()
            .nth(3)?
            .parse::<f64>()
            .ok()
    });
    Some(Process {
        start_time: boot + p.start_ticks / TICKS,
        open_fds,
        max_fds,
        resident_bytes,
        ..p.process
    })
}

struct Stat {
    process: Process,
    start_ticks: f64,
}

/// Fields of `/proc/self/stat` after the command name (which may hold spaces and parentheses: split at the last
/// `)`), numbered as in proc(5) from 3.
fn parse_stat(stat: &str) -> Option<Stat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // proc(5) field n is f[n - 3].
    let num = |n: usize| f.get(n - 3)?.parse::<f64>().ok();
    Some(Stat {
        process: Process {
            cpu_seconds: (num(14)? + num(15)?) / TICKS,
            threads: num(20)?,
            virtual_bytes: num(23)?,
            resident_bytes: 0.0,
            start_time: 0.0,
            open_fds: None,
            max_fds: None,
        },
        start_ticks: num(22)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_a_tricky_name() {
        let line = "7860 (a) b (c)) R 7858 7858 18083 0 -1 4194304 126 0 0 0 250 50 0 0 20 0 7 0 1207350 3133440 390 18446744073709551615 0";
        let s = parse_stat(line).unwrap();
        assert!((s.process.cpu_seconds - 3.0).abs() < 1e-9);
        assert_eq!(s.process.threads, 7.0);
        assert_eq!(s.start_ticks, 1_207_350.0);
        assert_eq!(s.process.virtual_bytes, 3_133_440.0);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn renders_the_live_process() {
        let mut out = String::new();
        render(&mut out);
        assert!(out.contains(&format!(
            "portico_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
        let value = |name: &str| -> f64 {
            out.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("{name} in {out}"))
        };
        assert!(value("process_resident_memory_bytes") > 1e6);
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_threads") >= 1.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = value("process_start_time_seconds");
        assert!(start <= now + 1.0 && start > now - 3600.0, "{start} vs {now}");
    }
}
