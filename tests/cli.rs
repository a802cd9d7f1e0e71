//! The `portico` binary as a user runs it: `check` exit codes and messages, `run` refusing a bad config.

use std::process::Command;

fn portico() -> Command {
    Command::new(env!("CARGO_BIN_EXE_portico"))
}

fn quickstart_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart/manifests")
}

#[test]
fn check_passes_on_the_quickstart() {
    let out = portico()
        .arg("check")
        .arg("--manifests")
        .arg(quickstart_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("jenkins.local/ Prefix -> default/jenkins:80 [127.0.0.1:9101] (Ingress default/jenkins)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("*.preview.local/ Prefix -> default/preview:80"),
        "{stdout}"
    );
    assert!(stdout.contains("default -> default/fallback:80"), "{stdout}");
    assert!(stdout.contains("ok: no object rejected"), "{stdout}");
}

#[test]
fn check_names_the_broken_object_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("app.yaml"),
        r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: web}
spec:
  rules:
    - host: shop.example
      http:
        paths:
          - {path: "/api(/|$)(.*)", pathType: ImplementationSpecific, backend: {service: {name: api, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: broken, namespace: web}
spec: [1, 2]
"#,
    )
    .unwrap();
    let out = portico()
        .arg("check")
        .arg("--manifests")
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "diagnostic: Ingress web/shop: spec.rules[0].http.paths[0]: path \"/api(/|$)(.*)\" has the character '|'"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("diagnostic: app.yaml document 1: invalid Ingress"),
        "{stdout}"
    );
    assert!(stdout.contains("2 problem(s) found"), "{stdout}");
}

#[test]
fn unusable_input_exits_2() {
    let out = portico()
        .args(["check", "--manifests", "/nonexistent/portico"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read manifest directory"));

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        "listenerSets:\n  - name: a\n    ingressClasses: [x]\n    http: [\"0.0.0.0:1\"]\n    colour: blue\n",
    )
    .unwrap();
    for cmd in ["check", "run"] {
        let out = portico()
            .arg(cmd)
            .arg("--manifests")
            .arg(dir.path())
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("unknown field `colour`"), "{cmd}: {stderr}");
    }
}

#[test]
fn adopted_classes_are_served_and_a_class_listed_twice_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("app.yaml"),
        r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: web}
spec:
  ingressClassName: nginx
  rules: [{host: shop.example, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: shop, port: {number: 80}}}}]}}]
"#,
    )
    .unwrap();
    let cfg = dir.path().join("config.yaml");
    let check = |config: &str| {
        std::fs::write(&cfg, config).unwrap();
        portico()
            .arg("check")
            .arg("--manifests")
            .arg(dir.path())
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap()
    };
    let set = "listenerSets:\n  - name: a\n    ingressClasses: [portico]\n    http: [\"127.0.0.1:0\"]\n";
    // Without adoptClasses the Ingress of class nginx is someone else's.
    let out = check(set);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("shop.example"), "{stdout}");
    let out = check(&format!("{set}    adoptClasses: [nginx]\n"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("shop.example/ Prefix -> web/shop:80 [] (Ingress web/shop)"),
        "{stdout}"
    );
    for (config, needle) in [
        (
            format!("{set}    adoptClasses: [portico]\n"),
            "listenerSets[a].adoptClasses: class \"portico\" is listed twice",
        ),
        (
            format!("{set}    adoptClasses: [\"NGINX\"]\n"),
            "listenerSets[a].adoptClasses: \"NGINX\" is not an IngressClass name",
        ),
        (
            format!("{set}    adoptClases: [nginx]\n"),
            "unknown field `adoptClases`",
        ),
    ] {
        let out = check(&config);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{config}: {stderr}");
        assert!(stderr.contains(needle), "{config}: {stderr}");
    }
}

/// Runs the quickstart manifests on free loopback ports until the admin port answers, then SIGTERM; returns what
/// the process wrote to stdout and stderr.
fn run_briefly(extra: &[&str]) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (http, admin) = (port(), port());
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listenerSets: [{{name: default, ingressClasses: [portico], http: [\"127.0.0.1:{http}\"]}}]\nadmin: {{address: \"127.0.0.1:{admin}\"}}\n"
        ),
    )
    .unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = portico()
        .args(["run", "--manifests"])
        .arg(quickstart_dir())
        .arg("--config")
        .arg(&cfg)
        .args(extra)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", admin)).is_err() {
        assert!(std::time::Instant::now() < deadline, "portico did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // One request, for an access log line.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", http)).unwrap();
    std::io::Write::write_all(
        &mut s,
        b"GET / HTTP/1.1\r\nHost: nothing.example\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let _ = std::io::Read::read_to_end(&mut s, &mut Vec::new());
    let term = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(term.success());
    assert!(child.wait().unwrap().success());
    (
        std::fs::read_to_string(out).unwrap(),
        std::fs::read_to_string(err).unwrap(),
    )
}

#[test]
fn app_logs_go_to_stderr_as_text_without_colour_or_as_json() {
    let (out, err) = run_briefly(&[]);
    assert!(err.contains("INFO"), "text log on stderr: {err}");
    assert!(
        !err.contains('\x1b'),
        "no colour codes when stderr is not a terminal: {err:?}"
    );
    // stdout holds only the access log: JSON lines.
    assert!(!out.trim().is_empty(), "the access log line");
    for line in out.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    }

    let (_, err) = run_briefly(&["--log-format", "json"]);
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    assert!(lines.len() >= 2, "{err}");
    assert!(
        lines.iter().all(|l| l["level"].is_string() && l["message"].is_string()),
        "{err}"
    );
}

/// `listenerSets: []`: the gateway starts with no listener set (Gateways bring their own) and is ready once the
/// first (empty) table is published.
#[test]
fn runs_with_no_listener_set() {
    let dir = tempfile::tempdir().unwrap();
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!("listenerSets: []\nadmin: {{address: \"127.0.0.1:{admin}\"}}\n"),
    )
    .unwrap();
    let mut child = portico()
        .args(["run", "--manifests"])
        .arg(quickstart_dir())
        .arg("--config")
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let ready = loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", admin)) {
            std::io::Write::write_all(&mut s, b"GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap();
            let mut out = String::new();
            let _ = std::io::Read::read_to_string(&mut s, &mut out);
            if out.starts_with("HTTP/1.1 200") {
                break true;
            }
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let status = child.wait().unwrap();
    assert!(ready, "/readyz never answered 200");
    assert!(status.success());
}
