//! Portico in front of three Kubernetes API servers (`examples/apiserver-ha/`): starts three loopback
//! stand-ins (TLS, self-signed, `/readyz`) on 127.0.0.1:16443, :26443 and :36443, and Portico in file mode with
//! `examples/apiserver-ha/portico.yaml` (or the file given as the first argument, e.g. `portico-source.yaml`):
//! a TCP listener on :6443 passing the TLS connections through, round robin, HTTPS `/readyz` checks with
//! fall 3 rise 2. Stop with Ctrl-C.
//!
//! ```sh
//! cargo run --release --example apiserver_ha
//! curl -k https://127.0.0.1:6443/version      # answered by cp1, cp2, cp3 in turn
//! curl -s http://127.0.0.1:9000/metrics | grep portico_l4_
//! ```
//!
//! With real API servers in place of the stand-ins (their addresses in `backends`), `kubectl --server
//! https://127.0.0.1:6443 get nodes` works unchanged: TLS, client certificates included, is end to end.

#[path = "common/mod.rs"]
#[allow(dead_code)] // the shared echo backends are not used here
mod common;

use std::time::Duration;

use portico::config::Config;
use portico::l4::standin::StandIn;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::init_logs();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/apiserver-ha");
    let file = std::env::args().nth(1).unwrap_or_else(|| "portico.yaml".into());
    let config = Config::from_file(&root.join(file))?;
    let mut standins = Vec::new();
    for (name, port) in [("cp1", 16443), ("cp2", 26443), ("cp3", 36443)] {
        standins.push(StandIn::start(name, ([127, 0, 0, 1], port).into()).await?);
    }
    let running = portico::app::start(
        config,
        portico::app::Source::Manifests {
            dir: root.join("manifests"),
            poll_interval: Duration::from_secs(1),
        },
    )
    .await?;
    let port = running.tcp_addrs[0][0].port();
    println!("\nPortico passes 127.0.0.1:{port} through to cp1, cp2 and cp3. Try:\n");
    println!("  curl -k https://127.0.0.1:{port}/version");
    println!("  curl -s http://{}/metrics | grep portico_l4_\n", running.admin_addr);
    tokio::signal::ctrl_c().await?;
    running.shutdown().await;
    drop(standins);
    Ok(())
}
