//! The dashboard in a real browser: headless Chromium loads `/` from the admin listener, runs its script against
//! the JSON API, and the rendered DOM must show the listener sets, hosts, paths, backends and a diagnostic. A
//! screenshot is kept under `target/test-artifacts/dashboard.png`.
//!
//! Chromium is not installed at test time: `.ci/run` installs Debian's `chromium`. Without it this test fails.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);

const TWO_SETS: &str = r#"
listenerSets:
  - name: external-web
    ingressClasses: [portico]
    http: ["127.0.0.1:0"]
  - name: internal-tools
    ingressClasses: [internal]
    http: ["127.0.0.1:0"]
admin: { address: "127.0.0.1:0" }
"#;

/// `target/test-artifacts` (next to the `tmp` directory cargo gives integration tests).
fn artifacts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs Chromium headless with a fresh profile and `extra` arguments, stdout to `stdout_to`; kills it by PID if
/// it runs longer than [`CHROMIUM_TIMEOUT`].
async fn chromium(url: &str, extra: &[String], stdout_to: &Path) {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run .ci/run (it installs Debian's chromium) before the test suite"
    );
    let profile = tempfile::tempdir().unwrap();
    let out = std::fs::File::create(stdout_to).unwrap();
    let err = std::fs::File::create(stdout_to.with_extension("stderr")).unwrap();
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg("--virtual-time-budget=5000")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("starting chromium");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            if !status.success() {
                let stderr = std::fs::read_to_string(stdout_to.with_extension("stderr")).unwrap_or_default();
                panic!("chromium exited with {status}: {stderr}");
            }
            return;
        }
        if started.elapsed() > CHROMIUM_TIMEOUT {
            let pid = child.id();
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium (pid {pid}) ran longer than {CHROMIUM_TIMEOUT:?}; killed");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn manifests(shop: SocketAddr, blog: SocketAddr, tools: SocketAddr) -> String {
    let mut m = service("shop", "storefront", &[shop]);
    m += &service("blog", "ghost", &[blog]);
    m += &service("ops", "grafana", &[tools]);
    m += &ingress(
        "shop",
        "storefront",
        "portico",
        &[
            ("shop.example.com", "/", "Prefix", "storefront"),
            ("shop.example.com", "/checkout", "Exact", "storefront"),
        ],
    );
    m += &ingress(
        "blog",
        "ghost",
        "portico",
        &[("*.blog.example.com", "/posts", "Prefix", "ghost")],
    );
    // A canary on the blog's route: shown under the route's backend.
    m += "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: ghost-canary\n  namespace: blog\n  annotations: {nginx.ingress.kubernetes.io/canary: \"true\", nginx.ingress.kubernetes.io/canary-weight: \"10\"}\nspec:\n  ingressClassName: portico\n  rules: [{host: \"*.blog.example.com\", http: {paths: [{path: /posts, pathType: Prefix, backend: {service: {name: ghost, port: {number: 80}}}}]}}]\n";
    m += &ingress(
        "ops",
        "grafana",
        "internal",
        &[("grafana.internal", "/", "Prefix", "grafana")],
    );
    m += &ingress(
        "ops",
        "dangling",
        "internal",
        &[("dangling.internal", "/", "Prefix", "gone-service")],
    );
    // A policy shown on its route, and an Ingress rejected for a snippet, shown in place.
    m += &annotated_ingress(
        "shop",
        "admin",
        "admin.shop.example.com",
        "storefront",
        &[("portico.dev/allow-source-ranges", "10.0.0.0/8")],
    );
    m += &annotated_ingress(
        "shop",
        "snippet",
        "snippet.shop.example.com",
        "storefront",
        &[(
            "nginx.ingress.kubernetes.io/configuration-snippet",
            "more_set_headers x: y;",
        )],
    );
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_renders_sets_routes_backends_and_diagnostics() {
    let (shop, blog, tools) = (echo("shop").await, echo("blog").await, echo("tools").await);
    let gw = Gateway::start_with(TWO_SETS, &manifests(shop.addr, blog.addr, tools.addr)).await;
    // Traffic the route's figures count: three answered, one refused by the allowlist.
    for _ in 0..3 {
        assert_eq!(get(gw.addr(0), "shop.example.com", "/").await.status, 200);
    }
    assert_eq!(get(gw.addr(0), "admin.shop.example.com", "/").await.status, 403);
    // The filter and the explain form are filled from the URL (as a shared link would).
    let url = format!(
        "http://{}/?host=shop.example.com&path=/checkout&set=external-web",
        gw.running().admin_addr
    );
    let artifacts = artifacts_dir();

    let dom_path = artifacts.join("dashboard.html");
    chromium(&url, &["--dump-dom".to_string()], &dom_path).await;
    let dom = std::fs::read_to_string(&dom_path).unwrap();
    let expected = [
        "external-web".to_string(),
        "internal-tools".to_string(),
        gw.addr(0).to_string(),
        gw.addr(1).to_string(),
        "shop.example.com".to_string(),
        "*.blog.example.com".to_string(),
        "grafana.internal".to_string(),
        "/checkout".to_string(),
        "/posts".to_string(),
        "shop/storefront:80".to_string(),
        "blog/ghost:80".to_string(),
        "ops/grafana:80".to_string(),
        shop.addr.to_string(),
        tools.addr.to_string(),
        "Ingress ops/dangling".to_string(),
        "blog/ghost-canary · weight=10".to_string(),
        "gone-service not found".to_string(),
        "generation 1".to_string(),
        // Health: version and uptime, the problems badge, the route's live figures, its policy.
        format!("v{}", env!("CARGO_PKG_VERSION")),
        "2 problems".to_string(),
        "backend <code>ops/gone-service:80</code> has no usable endpoint".to_string(),
        "3 req total".to_string(),
        "0.0% 5xx".to_string(),
        "[allow 10.0.0.0/8]".to_string(),
        // The rejected Ingress in place, with its reason.
        "not served".to_string(),
        "shop/snippet".to_string(),
        "configuration-snippet".to_string(),
        // The explain form's answer.
        "\"id\": \"shop/storefront:80\"".to_string(),
    ];
    for want in &expected {
        assert!(
            dom.contains(want.as_str()),
            "rendered DOM lacks {want:?}; see {}",
            dom_path.display()
        );
    }
    assert!(
        !dom.contains("cannot reach the admin API"),
        "the script failed to load the API"
    );

    let png = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&png);
    chromium(
        &url,
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1280,900".to_string(),
            "--hide-scrollbars".to_string(),
        ],
        &artifacts.join("screenshot.log"),
    )
    .await;
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", png.display()));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        bytes.len() > 20_000,
        "screenshot suspiciously small: {} bytes",
        bytes.len()
    );
    // Width and height from the IHDR chunk.
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((w, h), (1280, 900));

    gw.stop().await;
}
