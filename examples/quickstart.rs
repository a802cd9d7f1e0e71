//! Quickstart: starts six example backends and Portico in file mode on `examples/quickstart/manifests`, with the
//! default configuration (plain HTTP on 0.0.0.0:8080, HTTPS on 0.0.0.0:8443, admin on 127.0.0.1:9000). Stop
//! with Ctrl-C.
//!
//! ```sh
//! cargo run --release --example quickstart
//! curl -H 'Host: jenkins.local' http://127.0.0.1:8080/
//! curl -H 'Host: shop.local' http://127.0.0.1:8080/api/orders?id=7
//! ```

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use portico::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::init_logs();
    let backends = common::start_backends().await?;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart/manifests");
    let running = portico::app::start(
        Config::default(),
        portico::app::Source::Manifests {
            dir: dir.clone(),
            poll_interval: Duration::from_secs(1),
        },
    )
    .await?;
    let http = running.http_addrs[0][0].port();
    let https = running.https_addrs[0][0].port();
    println!(
        "\nPortico is serving {} (edit a file there and it reloads). Try:\n",
        dir.display()
    );
    for line in [
        "curl -H 'Host: jenkins.local' http://127.0.0.1:PORT/",
        "curl -H 'Host: argocd.local' http://127.0.0.1:PORT/applications",
        "curl -H 'Host: shop.local' 'http://127.0.0.1:PORT/api/orders?id=7'",
        "curl -H 'Host: shop.local' http://127.0.0.1:PORT/cart",
        "curl -H 'Host: pr-42.preview.local' http://127.0.0.1:PORT/",
        "curl -H 'Host: unknown.local' http://127.0.0.1:PORT/",
        "curl -i -H 'Host: shop.local' 'http://127.0.0.1:PORT/a/%2e%2e/%2e%2e/etc/passwd'",
        "curl -i -H 'Host: secure.local' http://127.0.0.1:PORT/cart",
        "curl --cacert examples/quickstart/example-ca.pem --resolve secure.local:TLSPORT:127.0.0.1 https://secure.local:TLSPORT/",
        "curl -k --resolve jenkins.local:TLSPORT:127.0.0.1 https://jenkins.local:TLSPORT/",
    ] {
        println!(
            "  {}",
            line.replace("TLSPORT", &https.to_string()).replace("PORT", &http.to_string())
        );
    }
    println!("  curl http://{}/readyz\n", running.admin_addr);
    tokio::signal::ctrl_c().await?;
    running.shutdown().await;
    drop(backends);
    Ok(())
}
