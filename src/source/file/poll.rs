//! The polling loop: the manifest directory's fingerprint is checked at an adaptive interval; a change is loaded
//! once the directory has settled, compiled off the serving threads, and published.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{ManifestDir, ManifestError};
use crate::acme::AcmeHandle;
use crate::publish::{Compiler, Publisher};

/// Loads and publishes the directory once (an unreadable directory is an error: startup fails), then returns the
/// loop that polls it every `poll_interval` (at most: checks run more often while they are cheap) until `shutdown`. `acme` is fed
/// every compilation.
pub fn start(
    mut manifests: ManifestDir,
    compiler: Arc<Compiler>,
    mut publisher: Publisher,
    poll_interval: Duration,
    shutdown: watch::Receiver<bool>,
    acme: Option<AcmeHandle>,
) -> Result<impl Future<Output = ()>, ManifestError> {
    // The baseline is taken before the first load, so an edit made at any moment after it is seen.
    let baseline = manifests.fingerprint().ok();
    let (state, diags) = manifests.load()?;
    let compiled = compiler.compile(&state, diags, crate::certs::unix_now());
    if let Some(a) = &acme {
        a.feed(&compiled.translation, &state);
    }
    publisher.publish(compiled);
    Ok(run(
        manifests,
        baseline,
        compiler,
        publisher,
        poll_interval,
        shutdown,
        acme,
    ))
}

/// After a change is seen, the directory must stay unchanged this long before it is loaded, so that a writer's
/// several writes (an editor, a copy of many files) publish once and a file is not read half-written.
const SETTLE: Duration = Duration::from_millis(10);
/// Longest wait for the directory to settle while it keeps changing.
const SETTLE_MAX: Duration = Duration::from_millis(500);
/// Polling adapts its interval so that fingerprinting (a `stat` per file) takes 1/`POLL_COST_RATIO` of the time:
/// shorter than the configured interval (down to [`POLL_MIN`]) when a check is cheap, longer when many files
/// make it expensive.
const POLL_COST_RATIO: u32 = 50;
/// The shortest poll interval: a directory of a few files is checked this often (a change waits half of it on
/// average before it is seen).
const POLL_MIN: Duration = Duration::from_millis(20);

/// The next poll interval after a fingerprint that took `cost`: `cost * POLL_COST_RATIO`, at least [`POLL_MIN`]
/// (or the configured interval when that is shorter), at most the configured interval unless checking is slower.
fn next_poll_interval(configured: Duration, cost: Duration) -> Duration {
    (cost * POLL_COST_RATIO).max(POLL_MIN.min(configured))
}

async fn run(
    mut manifests: ManifestDir,
    mut seen: Option<u64>,
    compiler: Arc<Compiler>,
    mut publisher: Publisher,
    poll_interval: Duration,
    mut shutdown: watch::Receiver<bool>,
    acme: Option<AcmeHandle>,
) {
    let mut interval = poll_interval;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let started = Instant::now();
        let mut now = manifests.fingerprint().ok();
        interval = next_poll_interval(poll_interval, started.elapsed());
        if now == seen {
            continue;
        }
        let first = Instant::now();
        loop {
            tokio::time::sleep(SETTLE).await;
            let again = manifests.fingerprint().ok();
            let settled = again == now;
            now = again;
            if settled || first.elapsed() >= SETTLE_MAX {
                break;
            }
        }
        seen = now;
        // Reading, parsing and translating are CPU work (a 10,000-Ingress file parses for about a second): keep
        // them off the threads serving requests. A panic in translation keeps the last table.
        let compiler = compiler.clone();
        let now = crate::certs::unix_now();
        let job = tokio::task::spawn_blocking(move || {
            let out = manifests.load().map(|(state, diags)| {
                let compiled =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| compiler.compile(&state, diags, now)));
                (compiled, state)
            });
            (manifests, out)
        });
        let out;
        (manifests, out) = match job.await {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, "reading the manifest directory panicked; no more reloads");
                return;
            }
        };
        match out {
            Ok((Ok(c), state)) => {
                if let Some(a) = &acme {
                    a.feed(&c.translation, &state);
                }
                drop(state);
                publisher.publish(c);
            }
            Ok((Err(_), _)) => tracing::error!("translation panicked; keeping the last table"),
            Err(e) => tracing::warn!(error = %e, "manifest directory unreadable; keeping the last table"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_interval_follows_the_cost_of_a_check() {
        let ms = Duration::from_millis;
        // Cheap checks: as often as POLL_MIN, or the configured interval when shorter.
        assert_eq!(next_poll_interval(ms(100), Duration::from_micros(30)), POLL_MIN);
        assert_eq!(next_poll_interval(ms(5), Duration::from_micros(30)), ms(5));
        // In between: 2 % of the time.
        assert_eq!(next_poll_interval(ms(100), ms(1)), ms(50));
        // Expensive checks stretch past the configured interval.
        assert_eq!(next_poll_interval(ms(100), ms(4)), ms(200));
    }
}
