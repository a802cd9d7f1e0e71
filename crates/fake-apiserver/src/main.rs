//! `fake-apiserver`: serve the in-memory fake Kubernetes API server until Ctrl-C.
//!
//! ```text
//! fake-apiserver [--addr 127.0.0.1:0] [--kubeconfig PATH] [--bookmark-interval-ms N] [--apply-as-merge]
//! ```
//!
//! Prints a kubeconfig for the server on stdout (and writes it to PATH if given). Test controls are served
//! under `/__control/` (see the crate docs).

use std::net::SocketAddr;
use std::time::Duration;

use portico_fake_apiserver::{FakeApiServer, Options};

fn usage() -> ! {
    eprintln!(
        "usage: fake-apiserver [--addr 127.0.0.1:0] [--kubeconfig PATH] [--bookmark-interval-ms N] [--apply-as-merge]"
    );
    std::process::exit(2)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut addr: SocketAddr = "127.0.0.1:0".parse().expect("valid default address");
    let mut kubeconfig: Option<String> = None;
    let mut opts = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--addr" => addr = args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage()),
            "--kubeconfig" => kubeconfig = Some(args.next().unwrap_or_else(|| usage())),
            "--bookmark-interval-ms" => {
                let ms: u64 = args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage());
                opts.bookmark_interval = Duration::from_millis(ms.max(1));
            }
            "--apply-as-merge" => opts.apply_as_merge = true,
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    let server = match FakeApiServer::bind(addr, opts).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fake-apiserver: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    if let Some(path) = &kubeconfig {
        if let Err(e) = server.write_kubeconfig(path) {
            eprintln!("fake-apiserver: cannot write {path}: {e}");
            std::process::exit(1);
        }
    }
    print!("{}", server.kubeconfig_yaml());
    eprintln!("fake-apiserver: serving on {} (Ctrl-C to stop)", server.url());
    let _ = tokio::signal::ctrl_c().await;
}
