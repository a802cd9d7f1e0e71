//! The `portico` binary: `portico run` serves, `portico check` validates, `portico migrate` reports what would
//! become of a set of Ingresses (read-only).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use portico::config::{self, Config};

/// glibc's allocator without its slow path for tokio's cache-line-aligned tasks (see the crate).
#[global_allocator]
static ALLOCATOR: portico_heap_trim::Allocator = portico_heap_trim::Allocator;

#[derive(Parser)]
#[command(name = "portico", version, about = "A Kubernetes ingress gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Parsed once at startup: the size difference between variants does not matter.
#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Serve traffic.
    Run {
        /// Directory of Kubernetes YAML manifests (file mode). Without it: cluster mode, watching the API.
        #[arg(long)]
        manifests: Option<PathBuf>,
        /// Configuration file (YAML). Without it: one listener set `default` serving class `portico` on :8080.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Longest wait between checks of the manifest directory for changes, e.g. 500ms or 2s. Checks run more
        /// often (down to every 20ms) while one (a `stat` per file) costs under 2% of the time, less often when more.
        #[arg(long, default_value = "100ms", value_parser = parse_duration)]
        poll_interval: Duration,
        /// Worker threads serving traffic (default: one per core).
        #[arg(long)]
        workers: Option<usize>,
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Access log, one JSON line per request: `off`, `stdout`, or a file to append to.
        #[arg(long, default_value = "stdout")]
        access_log: portico::accesslog::Target,
        /// Log one request in N.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        access_log_sample: u64,
        /// File mode: where ACME accounts and issued certificates are kept (needed when a listener set has
        /// `acme`). Issued certificates are Secret manifests under DIR/secrets, read like the manifest directory.
        /// Cluster mode does not use it: certificates and the account are Secrets written through the API.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// The application log's format on stderr: `text` (colours only when stderr is a terminal) or `json`
        /// (one object per line, for Loki, Elasticsearch and `kubectl logs | jq`). Level: `RUST_LOG`.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Load and translate without serving; print the routes and every diagnostic.
    /// Exit 0 when clean, 1 when an object was rejected, 2 when the input is unusable.
    Check {
        #[arg(long)]
        manifests: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Report, read-only, what Portico would make of a directory of manifests or of a live cluster's Ingresses:
    /// per Ingress its class, each ingress-nginx or Portico annotation as implemented, no-op or unsupported, and
    /// other problems; then a verdict. Exit 0 when nothing would be disabled, 1 when something would, 2 when the
    /// input is unusable.
    Migrate {
        /// Directory of Kubernetes YAML manifests. Without it: a live cluster, listed once (nothing is written).
        #[arg(long)]
        manifests: Option<PathBuf>,
        #[arg(long)]
        config: Option<PathBuf>,
        /// Kubeconfig file. Default: in-cluster service account, else $KUBECONFIG or ~/.kube/config.
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// Read only this namespace (repeatable). Default: all namespaces.
        #[arg(long = "namespace")]
        namespaces: Vec<String>,
        /// Report as if the first listener set adopted this class (repeatable), e.g. `--adopt nginx`: what
        /// `adoptClasses` would serve after the switch.
        #[arg(long = "adopt", value_name = "CLASS")]
        adopt: Vec<String>,
    },
}

/// Cluster mode (`portico run` without `--manifests`).
#[derive(clap::Args)]
struct ClusterArgs {
    /// Kubeconfig file. Default: in-cluster service account, else $KUBECONFIG or ~/.kube/config.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Watch only this namespace (repeatable). Default: all namespaces.
    #[arg(long = "namespace")]
    namespaces: Vec<String>,
    /// Elect one leader (a coordination.k8s.io Lease) to write status and Events. Without it, this replica writes.
    #[arg(long)]
    leader_elect: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "portico-leader")]
    lease_name: String,
    /// Namespace of the Lease. Default: the client's namespace (the pod's, in a cluster).
    #[arg(long)]
    lease_namespace: Option<String>,
    /// This replica's identity in the Lease and Events. Default: $HOSTNAME, else /etc/hostname.
    #[arg(long)]
    identity: Option<String>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    config::parse_duration(s).ok_or_else(|| format!("{s:?} is not a duration like 500ms or 2s"))
}

fn load_config(path: Option<&PathBuf>) -> Result<Config, ExitCode> {
    match path {
        None => Ok(Config::default()),
        Some(p) => Config::from_file(p).map_err(|e| {
            eprintln!("portico: {e}");
            ExitCode::from(2)
        }),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { manifests, config } => check(&manifests, config.as_ref()),
        Command::Migrate {
            manifests,
            config,
            kubeconfig,
            namespaces,
            adopt,
        } => migrate(manifests, config.as_ref(), kubeconfig, &namespaces, &adopt),
        Command::Run {
            manifests,
            config,
            poll_interval,
            workers,
            cluster,
            access_log,
            access_log_sample,
            state_dir,
            log_format,
        } => {
            let config = match load_config(config.as_ref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            // Cluster mode stores certificates as Secrets through the API; file mode needs a state directory.
            if manifests.is_some() && state_dir.is_none() && config.listener_sets.iter().any(|s| s.acme.is_some()) {
                eprintln!("portico: a listener set has acme configured: --state-dir DIR is required with --manifests");
                return ExitCode::from(2);
            }
            init_tracing(log_format);
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = workers.filter(|n| *n > 0) {
                rt.worker_threads(n);
            }
            let rt = match rt.enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("portico: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let extras = portico::app::Extras {
                state_dir,
                access_log: portico::accesslog::Settings {
                    target: access_log,
                    sample: access_log_sample,
                },
                ..Default::default()
            };
            rt.block_on(run(config, manifests, poll_interval, cluster, extras))
        }
    }
}

/// The application log goes to stderr, the access log (JSON) to stdout or its file: the two never interleave in one
/// stream, and colour codes are written only to a terminal.
fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).init(),
    }
}

async fn run(
    config: Config,
    manifests: Option<PathBuf>,
    poll_interval: Duration,
    cluster: ClusterArgs,
    extras: portico::app::Extras,
) -> ExitCode {
    let source = match manifests {
        Some(dir) => portico::app::Source::Manifests { dir, poll_interval },
        None => match kube_source(cluster).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot connect to the Kubernetes API: {e:#}");
                return ExitCode::FAILURE;
            }
        },
    };
    // The handlers go in before anything listens: a SIGTERM that arrives as soon as a port answers must find
    // them (without, the default action kills the process with no drain).
    let signals = Signals::install();
    let running = match portico::app::start_with(config, source, extras).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    // Hand memory back after bursts of connections (checked every second).
    let trimmer = tokio::spawn(portico::proxy::memory::return_memory_after_bursts(Duration::from_secs(
        1,
    )));
    signals.wait().await;
    trimmer.abort();
    tracing::info!("shutting down: no new connections; finishing in-flight requests");
    running.drain_and_shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

fn migrate(
    manifests: Option<PathBuf>,
    config_path: Option<&PathBuf>,
    kubeconfig: Option<PathBuf>,
    namespaces: &[String],
    adopt: &[String],
) -> ExitCode {
    let mut config = match load_config(config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for class in adopt {
        if config.set_for_class(class).is_none() {
            if let Some(first) = config.listener_sets.first_mut() {
                first.adopt_classes.push(class.clone());
            }
        }
    }
    let (state, diags, file_mode) = match manifests {
        Some(dir) => match portico::source::file::ManifestDir::new(&dir).load() {
            Ok((state, diags)) => (state, diags, true),
            Err(e) => {
                eprintln!("portico: {e}");
                return ExitCode::from(2);
            }
        },
        None => {
            let read = async {
                let client = kube_client(kubeconfig.as_ref()).await?;
                anyhow::Ok(portico::migrate::read_cluster(client, namespaces).await?)
            };
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("portico: cannot start the runtime: {e}");
                    return ExitCode::from(2);
                }
            };
            match rt.block_on(read) {
                Ok(state) => (std::sync::Arc::new(state), Vec::new(), false),
                Err(e) => {
                    eprintln!("portico: cannot read the cluster: {e:#}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    let report = portico::migrate::report(&state, &config, file_mode, diags);
    print!("{}", report.render());
    if report.ready() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

async fn kube_client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}

async fn kube_source(args: ClusterArgs) -> anyhow::Result<portico::app::Source> {
    let client = kube_client(args.kubeconfig.as_ref()).await?;
    let identity = args
        .identity
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "portico".to_string());
    let options = portico::source::kube::ClusterOptions {
        namespaces: args.namespaces,
        leader_election: args.leader_elect.then(|| portico::source::kube::LeaseConfig {
            name: args.lease_name,
            namespace: args.lease_namespace,
            ..Default::default()
        }),
        identity,
        ..Default::default()
    };
    Ok(portico::app::Source::Kube { client, options })
}

/// SIGTERM (Kubernetes) and SIGINT (a terminal's Ctrl-C), registered when installed.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Self {
            term: signal(SignalKind::terminate()).expect("SIGTERM handler"),
            int: signal(SignalKind::interrupt()).expect("SIGINT handler"),
        }
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

fn check(manifests: &PathBuf, config_path: Option<&PathBuf>) -> ExitCode {
    let config = match load_config(config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut dir = portico::source::file::ManifestDir::new(manifests);
    let (state, mut diags) = match dir.load() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("portico: {e}");
            return ExitCode::from(2);
        }
    };
    let compiler = match portico::publish::Compiler::new(&config, true) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("portico: {e:#}");
            return ExitCode::from(2);
        }
    };
    let compiled = compiler.compile(&state, std::mem::take(&mut diags), portico::certs::unix_now());
    print!("{}", compiled.describe());
    let t = &compiled.translation;
    let errors = t.errors();
    let warnings = t.diagnostics.len() - errors;
    let also = match warnings {
        0 => String::new(),
        n => format!(" ({n} warning(s))"),
    };
    if errors == 0 {
        println!("ok: no object rejected{also}");
        ExitCode::SUCCESS
    } else {
        println!("{errors} problem(s) found{also}");
        ExitCode::from(1)
    }
}
