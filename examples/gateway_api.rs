//! Gateway API quickstart: starts the quickstart's six example backends and Portico in file mode on
//! `examples/gateway-api/manifests` with `examples/gateway-api/config.yaml` (no listener set: only the Gateway's
//! sockets, 127.0.0.1:8080 and :8443; admin on 127.0.0.1:9000). Stop with Ctrl-C.
//!
//! ```sh
//! cargo run --release --example gateway_api
//! curl -H 'Host: shop.local' http://127.0.0.1:8080/api/orders
//! ```

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use portico::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::init_logs();
    let backends = common::start_backends().await?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gateway-api");
    let config = Config::from_yaml(&std::fs::read_to_string(root.join("config.yaml"))?)?;
    let dir = root.join("manifests");
    let running = portico::app::start(
        config,
        portico::app::Source::Manifests {
            dir: dir.clone(),
            poll_interval: Duration::from_secs(1),
        },
    )
    .await?;
    println!(
        "\nPortico is serving the Gateway in {} (edit a file there and it reloads). Try:\n",
        dir.display()
    );
    for line in [
        "curl -H 'Host: shop.local' http://127.0.0.1:8080/cart",
        "curl -H 'Host: shop.local' http://127.0.0.1:8080/api/orders",
        "curl -H 'Host: shop.local' -H 'x-preview: true' http://127.0.0.1:8080/api/orders",
        "curl -i -H 'Host: shop.local' http://127.0.0.1:8080/old-cart/items",
        "curl -H 'Host: shop.local' http://127.0.0.1:8080/v1/orders",
        "curl -X POST -H 'Host: tools.local' http://127.0.0.1:8080/",
        "curl -H 'Host: tools.local' http://127.0.0.1:8080/",
        "curl --cacert examples/quickstart/example-ca.pem --resolve secure.local:8443:127.0.0.1 https://secure.local:8443/",
    ] {
        println!("  {line}");
    }
    println!("  curl http://{}/readyz\n", running.admin_addr);
    tokio::signal::ctrl_c().await?;
    running.shutdown().await;
    drop(backends);
    Ok(())
}
