//! What the examples share: the six echo backends the example manifests name, and the log setup.

use std::net::SocketAddr;

use portico::echo::EchoServer;

/// The example backends and their loopback ports (the manifests' EndpointSlices name these).
pub const BACKENDS: [(&str, u16); 6] = [
    ("jenkins", 9101),
    ("argocd", 9102),
    ("shop-api", 9103),
    ("shop-web", 9104),
    ("preview", 9105),
    ("fallback", 9106),
];

/// Logs at `info` unless `RUST_LOG` says otherwise.
pub fn init_logs() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .init();
}

/// Starts every example backend on 127.0.0.1; they serve until dropped.
pub async fn start_backends() -> anyhow::Result<Vec<EchoServer>> {
    let mut backends = Vec::new();
    for (name, port) in BACKENDS {
        backends.push(EchoServer::start(name, SocketAddr::from(([127, 0, 0, 1], port))).await?);
    }
    Ok(backends)
}
