//! The access log: one JSON line per request (1 in N when sampled), written by a task of its own.
//!
//! The request path builds a small owned [`Entry`] and hands it to a bounded channel with `try_send`; when the
//! writer falls behind the line is dropped and counted (`portico_access_log_dropped_total`), so logging never
//! blocks a request. JSON encoding and I/O happen in the writer thread.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use std::io::Write;

use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// Lines waiting for the writer before new ones are dropped.
const CHANNEL_CAPACITY: usize = 8192;

/// Where the access log goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Target {
    /// No access log.
    #[default]
    Off,
    Stdout,
    /// Appended to this file (created if missing).
    File(PathBuf),
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "" => Err("empty access-log target; use off, stdout or a file path".into()),
            "off" => Ok(Target::Off),
            "stdout" | "-" => Ok(Target::Stdout),
            path => Ok(Target::File(PathBuf::from(path))),
        }
    }
}

/// Access-log settings (from `portico run --access-log`, `--access-log-sample`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub target: Target,
    /// Log one request in `sample` (1: every request).
    pub sample: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            target: Target::Off,
            sample: 1,
        }
    }
}

/// One request, as the writer will print it.
#[derive(Debug)]
pub struct Entry {
    pub time: SystemTime,
    pub set: usize,
    pub client: SocketAddr,
    pub method: http::Method,
    pub host: String,
    pub path: String,
    pub status: u16,
    pub bytes_in: Option<u64>,
    pub bytes_out: Option<u64>,
    pub duration: Duration,
    pub upstream: Option<SocketAddr>,
    pub ingress: Option<Arc<str>>,
    pub service: Option<Arc<crate::upstream::Backend>>,
    /// The canary Ingress, when its backend served (`service` is then the canary's).
    pub canary: Option<Arc<str>>,
    pub tls: bool,
    pub tls_version: Option<&'static str>,
    pub sni: Option<Arc<str>>,
}

/// The request side: decides sampling and queues entries.
pub struct AccessLog {
    tx: mpsc::Sender<Entry>,
    sample: u64,
    seen: AtomicU64,
    metrics: Arc<Metrics>,
}

impl AccessLog {
    /// Whether this request is to be logged (call once per request).
    pub fn sampled(&self) -> bool {
        self.sample <= 1 || self.seen.fetch_add(1, Ordering::Relaxed) % self.sample == 0
    }

    /// Queues an entry; drops and counts it when the writer is behind.
    pub fn log(&self, e: Entry) {
        if self.tx.try_send(e).is_err() {
            self.metrics.access_log_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Opens the target and starts the writer thread. `None` when the log is off. The thread ends when the last
/// [`AccessLog`] is dropped, after writing what was queued.
pub fn start(settings: &Settings, metrics: Arc<Metrics>) -> std::io::Result<Option<AccessLog>> {
    let out: Box<dyn Write + Send> = match &settings.target {
        Target::Off => return Ok(None),
        Target::Stdout => Box::new(std::io::stdout()),
        Target::File(p) => Box::new(std::fs::OpenOptions::new().create(true).append(true).open(p)?),
    };
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let writer_metrics = metrics.clone();
    std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || write_lines(rx, out, &writer_metrics))?;
    Ok(Some(AccessLog {
        tx,
        sample: settings.sample.max(1),
        seen: AtomicU64::new(0),
        metrics,
    }))
}

/// The writer: a plain thread (blocking writes to stdout or a file never stall the runtime's workers), writing
/// whatever is queued in one batch and flushing after each batch.
fn write_lines(mut rx: mpsc::Receiver<Entry>, out: Box<dyn Write + Send>, metrics: &Metrics) {
    let mut out = std::io::BufWriter::new(out);
    let names = metrics.set_names().to_vec();
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(first) = rx.blocking_recv() {
        buf.clear();
        let mut n = 0u64;
        let mut next = Some(first);
        while let Some(e) = next {
            let set = names
                .get(e.set)
                .or(names.last().filter(|n| *n == "gateway"))
                .map_or("", String::as_str);
            if serde_json::to_writer(&mut buf, &Line::new(&e, set)).is_ok() {
                buf.push(b'\n');
                n += 1;
            }
            next = if n < 512 { rx.try_recv().ok() } else { None };
        }
        let counter = if out.write_all(&buf).and_then(|()| out.flush()).is_ok() {
            &metrics.access_log_written
        } else {
            &metrics.access_log_dropped
        };
        counter.fetch_add(n, Ordering::Relaxed);
    }
    let _ = out.flush();
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    set: &'a str,
    client: String,
    method: &'a str,
    host: &'a str,
    path: &'a str,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_out: Option<u64>,
    duration_ms: f64,
    upstream: Option<String>,
    ingress: Option<&'a str>,
    service: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    canary: Option<&'a str>,
    tls: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sni: Option<&'a str>,
}

impl<'a> Line<'a> {
    fn new(e: &'a Entry, set: &'a str) -> Self {
        Self {
            time: rfc3339(e.time),
            set,
            client: e.client.to_string(),
            method: e.method.as_str(),
            host: &e.host,
            path: &e.path,
            status: e.status,
            bytes_in: e.bytes_in,
            bytes_out: e.bytes_out,
            duration_ms: (e.duration.as_micros() as f64) / 1000.0,
            upstream: e.upstream.map(|u| u.to_string()),
            ingress: e.ingress.as_deref(),
            service: e.service.as_ref().map(|b| b.id.as_str()),
            canary: e.canary.as_deref(),
            tls: e.tls,
            tls_version: e.tls_version,
            sni: e.sni.as_deref(),
        }
    }
}

/// `2026-11-22T04:29:06.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_321_746_123);
        assert_eq!(rfc3339(t), "2026-11-22T04:29:06.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn parses_targets() {
        assert_eq!("off".parse::<Target>(), Ok(Target::Off));
        assert_eq!("stdout".parse::<Target>(), Ok(Target::Stdout));
        assert_eq!("/tmp/x.log".parse::<Target>(), Ok(Target::File("/tmp/x.log".into())));
    }
}
