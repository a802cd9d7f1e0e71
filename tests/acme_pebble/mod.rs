//! Pebble for the ACME tests (Debian package `pebble`): Pebble and `pebble-challtestsrv` on free loopback
//! ports, and TLS clients that check what the gateway serves against Pebble's issuing root. Shared by
//! `tests/acme.rs` and `tests/acme_cluster.rs`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portico::certs::testing::{key, TestCa, DAY};
use portico::certs::{unix_now, CertInfo};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::support::free_port;

pub mod ari;

// === processes ===

/// A child process killed (by its pid) when dropped.
pub struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn require_pebble() {
    for bin in ["pebble", "pebble-challtestsrv"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
            .unwrap_or(false);
        assert!(
            found,
            "`{bin}` not found: the ACME tests need the Debian package `pebble`; run `.ci/run` (it installs it) \
             or `apt-get install -y pebble`"
        );
    }
}

/// Pebble with its own DNS server, on free loopback ports.
pub struct Pebble {
    pub dir: tempfile::TempDir,
    _procs: Vec<Proc>,
    pub port: u16,
    pub mgmt: u16,
    /// The DNS server's port (kept across [`Pebble::restart`]).
    dns: u16,
    env: Vec<(String, String)>,
    /// The test CA that signed Pebble's own HTTPS certificate (given to the gateway as `caRoot`).
    pub https_ca: TestCa,
}

impl Pebble {
    /// `http_port`: where Pebble's VA connects for HTTP-01 (the gateway's plain port); `a_record`: the address
    /// every name resolves to.
    pub async fn start(http_port: u16, a_record: &str, env: &[(&str, &str)]) -> Pebble {
        require_pebble();
        let dir = tempfile::tempdir().unwrap();
        let https_ca = TestCa::new();
        let k = key(&rcgen::PKCS_ECDSA_P256_SHA256);
        let cert = https_ca.issue_pem(&["127.0.0.1", "localhost"], &k, unix_now() - DAY, unix_now() + 30 * DAY);
        std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), k.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("https-ca.pem"), &https_ca.pem).unwrap();
        let (port, mgmt, dns, dns_mgmt) = (free_port(), free_port(), free_port(), free_port());
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{port}"),
                "managementListenAddress": format!("127.0.0.1:{mgmt}"),
                "certificate": dir.path().join("cert.pem"),
                "privateKey": dir.path().join("key.pem"),
                "httpPort": http_port,
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        std::fs::write(dir.path().join("pebble.json"), config.to_string()).unwrap();
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
        let dns_proc = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", a_record, "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-management", &format!("127.0.0.1:{dns_mgmt}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", ""])
            .stdout(log("dns.log"))
            .stderr(log("dns.err"))
            .spawn();
        // Older challtestsrv builds have no -doh flag: retry without it.
        let dns_proc = match dns_proc {
            Ok(mut c) => {
                std::thread::sleep(Duration::from_millis(150));
                if c.try_wait().unwrap().is_some() {
                    Command::new("pebble-challtestsrv")
                        .args(["-defaultIPv4", a_record, "-defaultIPv6", ""])
                        .args(["-dns01", &format!("127.0.0.1:{dns}")])
                        .args(["-management", &format!("127.0.0.1:{dns_mgmt}")])
                        .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                        .stdout(log("dns.log"))
                        .stderr(log("dns.err"))
                        .spawn()
                        .unwrap()
                } else {
                    c
                }
            }
            Err(e) => panic!("cannot start pebble-challtestsrv: {e}"),
        };
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let pebble = Self::spawn(dir.path(), dns, &env);
        let p = Pebble {
            _procs: vec![Proc(dns_proc), pebble],
            dir,
            port,
            mgmt,
            dns,
            env,
            https_ca,
        };
        p.wait_up().await;
        p
    }

    fn spawn(dir: &std::path::Path, dns: u16, env: &[(String, String)]) -> Proc {
        let log = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(name))
                .unwrap()
        };
        let mut cmd = Command::new("pebble");
        cmd.arg("-config")
            .arg(dir.join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proc(cmd.spawn().expect("cannot start pebble"))
    }

    /// Stops Pebble and starts a new one on the same ports: a CA that forgot every account, order and
    /// certificate (and has new roots), at the same directory URL.
    pub async fn restart(&mut self) {
        drop(self._procs.pop());
        self._procs.push(Self::spawn(self.dir.path(), self.dns, &self.env));
        self.wait_up().await;
    }

    async fn wait_up(&self) {
        let (port, mgmt) = (self.port, self.mgmt);
        let p = self;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).await.is_err()
            || TcpStream::connect(("127.0.0.1", mgmt)).await.is_err()
        {
            assert!(Instant::now() < deadline, "pebble did not start: {}", p.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    pub fn ca_root(&self) -> PathBuf {
        self.dir.path().join("https-ca.pem")
    }

    pub fn logs(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!(
            "pebble:\n{}{}\ndns:\n{}",
            read("pebble.log"),
            read("pebble.err"),
            read("dns.err")
        )
    }

    /// Pebble's issuing root (changes per Pebble run), from the management interface.
    pub async fn issuing_root(&self) -> CertificateDer<'static> {
        let body = https_get(self.mgmt, "/roots/0", &self.https_ca).await;
        let mut rd = body.as_bytes();
        rustls_pemfile_first(&mut rd)
    }
}

fn rustls_pemfile_first(pem: &mut &[u8]) -> CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem).expect("a PEM certificate from /roots/0")
}

/// GET over HTTPS/1.0 to 127.0.0.1:`port`, trusting `ca`; the body.
pub async fn https_get(port: u16, path: &str, ca: &TestCa) -> String {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der.clone()).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut tls = TlsConnector::from(client_config(roots))
        .connect(ServerName::try_from("127.0.0.1").unwrap().to_owned(), tcp)
        .await
        .unwrap();
    tls.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    body.to_string()
}

pub fn client_config(roots: RootCertStore) -> Arc<ClientConfig> {
    let mut c = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.resumption = rustls::client::Resumption::disabled();
    Arc::new(c)
}

/// The serial of the certificate the gateway presents for `host`, verified against `root`; the error when the
/// handshake fails (e.g. the default self-signed certificate is presented).
pub async fn served_serial(addr: SocketAddr, host: &str, root: &CertificateDer<'static>) -> Result<String, String> {
    let mut roots = RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let tls = TlsConnector::from(client_config(roots))
        .connect(ServerName::try_from(host.to_string()).unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let leaf = &tls.get_ref().1.peer_certificates().unwrap()[0];
    Ok(CertInfo::from_der(leaf, String::new()).unwrap().serial)
}

pub async fn wait_served(addr: SocketAddr, host: &str, root: &CertificateDer<'static>, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        match served_serial(addr, host, root).await {
            Ok(s) => return s,
            Err(e) => assert!(Instant::now() < deadline, "no trusted certificate for {host}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
