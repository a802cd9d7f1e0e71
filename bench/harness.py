#!/usr/bin/env python3
"""Portico's proxy benchmark: Portico, nginx and HAProxy side by side, measured in the same run.

Started by bench/run.sh (which installs the tools and builds Portico); usable directly once they exist.
Standard library only. Everything listens on 127.0.0.1; every load run is bounded in time; only processes
this script started are stopped, by PID.

Method (see docs/performance.md for the reasoning):
  - the proxy under test runs alone on PROXY_CPU with one worker; the load tool and the one origin (an nginx
    answering "ok" and a 1 MiB file) share LOAD_CPU;
  - per (peer, scenario) the proxy is started fresh, warmed up, then measured in two windows:
      sat    wrk (oha for HTTP/2) as fast as it goes: requests/s, informational (the load core often saturates
             before the proxy does);
      fixed  oha at a fixed rate with latency correction: p50/p99, and the proxy's CPU from /proc/PID/stat
             (utime+stime over its process tree) divided by the requests served: CPU-ms per 1,000 requests;
  - every window records "foreign" CPU: busy time of the two bench cores not spent by proxy, origin, load tool
    or ksoftirqd, i.e. other people's work. A window above NOISY_CORES is repeated (NOISY_RETRIES) and the
    least disturbed attempt kept; a row still above it is flagged N;
  - instructions per request: the proxy is restarted under callgrind, driven at saturation; the counters are
    zeroed in the middle of the run and dumped IR_WINDOW seconds later; requests in that window come from the
    origin's request counter. User-space instructions only; connection set-up inside the window counts too
    (it is the point of the new-connection scenarios).
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import http.client
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def env(name, default):
    v = os.environ.get(name)
    return default if v is None or v == "" else v


QUICK = env("QUICK", "0") == "1"
ALL_SCENARIOS = "h1_keepalive h1_close tls_keepalive tls_handshake body_1m h2_tls hosts_10k idle_10k"
SCENARIOS = env("SCENARIOS", "h1_keepalive hosts_10k body_1m" if QUICK else ALL_SCENARIOS).split()
PEERS = env("PEERS", "nginx haproxy portico").split()
DURATION = int(env("DURATION", "3" if QUICK else "10"))
WARMUP = int(env("WARMUP", "1" if QUICK else "2"))
IR = env("IR", "1") == "1"
IR_WINDOW = int(env("IR_WINDOW", "2" if QUICK else "5"))
IR_SCENARIOS = env(
    "IR_SCENARIOS", "h1_keepalive" if QUICK else "h1_keepalive h1_close tls_keepalive body_1m h2_tls hosts_10k"
).split()
PROXY_CPU = int(env("PROXY_CPU", "0"))
LOAD_CPU = int(env("LOAD_CPU", "1"))
NICE = env("NICE", "-10")
NOISY_CORES = float(env("NOISY_CORES", "0.15"))
NOISY_RETRIES = int(env("NOISY_RETRIES", "0" if QUICK else "1"))
QUIET_MAX_WAIT = int(env("QUIET_MAX_WAIT", "5" if QUICK else "20"))
QUIET_CORES = float(env("QUIET_CORES", "0.10"))
N_HOSTS = int(env("N_HOSTS", "10000"))
N_IDLE = int(env("N_IDLE", "2000" if QUICK else "10000"))
PORTICO_BIN = env("PORTICO_BIN", str(REPO / "target/release/portico"))
PORTICO_TLS = env("PORTICO_TLS", "auto")  # auto: offer TLS and report n/a when no TLS listener answers
OUT = Path(env("OUT", str(BENCH_DIR / "results" / time.strftime("%Y%m%d-%H%M%S"))))

# fixed request rates: below the slowest peer's saturation point on a 2-core machine
RATES = {
    "h1_keepalive": 10000,
    "h1_close": 3000,
    "tls_keepalive": 8000,
    "tls_handshake": 500,
    "body_1m": 300,
    "h2_tls": 8000,
    "hosts_10k": 10000,
}
for _k in list(RATES):
    RATES[_k] = int(env("RATE_" + _k, str(RATES[_k])))

# haproxy refuses to start unless 2 * maxconn + 14 fds fit under the open-file limit (a hard 20,000 on the
# machine this was written on, which root cannot raise without CAP_SYS_RESOURCE)
try:
    import resource

    FD_LIMIT = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
except (ImportError, ValueError):
    FD_LIMIT = 20000
HAPROXY_MAXCONN = max(1000, min(40000, (FD_LIMIT - 100) // 2))

# ports: a range of their own, so a reference run of peers.sh (18080...) does not collide
ORIGIN_PORT = int(env("ORIGIN_PORT", "28080"))
PX_PORT = int(env("PX_PORT", "28081"))
PX_TLS_PORT = int(env("PX_TLS_PORT", "28443"))
ADMIN_PORT = int(env("ADMIN_PORT", "28090"))
DIRECT_PORT = int(env("DIRECT_PORT", "28091"))
DIRECT_TLS_PORT = int(env("DIRECT_TLS_PORT", "28453"))

TLS_SCENARIOS = {"tls_keepalive", "tls_handshake", "h2_tls"}
SCENARIO_TITLES = {
    "h1_keepalive": "HTTP/1.1 keep-alive, 64 connections, 2-byte body",
    "h1_close": "new connection per request (Connection: close), 64 concurrent",
    "tls_keepalive": "HTTPS keep-alive (TLS 1.3, ECDSA P-256), 64 connections",
    "tls_handshake": "HTTPS, new TLS handshake per request, 64 concurrent",
    "body_1m": "1 MiB response streamed, 16 keep-alive connections",
    "h2_tls": "HTTP/2 over TLS, 4 connections x 16 streams",
    "hosts_10k": f"{N_HOSTS:,} hosts in the table, every request another Host, 64 connections",
    "idle_10k": f"{N_IDLE:,} idle keep-alive connections",
}

started: list[subprocess.Popen] = []


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ /proc accounting


def children_map():
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            kids.setdefault(int(rest[1]), []).append(int(d))
        except (OSError, IndexError):
            pass
    return kids


def tree(pid):
    kids = children_map()
    out, queue = [], [pid]
    while queue:
        p = queue.pop()
        out.append(p)
        queue.extend(kids.get(p, []))
    return out


def proc_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12])
    except (OSError, IndexError):
        return 0


def tree_ticks(pids):
    return sum(proc_ticks(p) for p in pids)


def tree_mem(pid):
    """(rss_kib summed, pss_kib summed, max VmHWM kib) over the process tree."""
    rss = pss = hwm = 0
    for p in tree(pid):
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = max(hwm, int(line.split()[1]))
            for line in open(f"/proc/{p}/smaps_rollup"):
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            pass
    return rss, pss, hwm


def tree_fds(pid):
    n = 0
    for p in tree(pid):
        try:
            n += len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            pass
    return n


def core_ticks():
    """{cpu: (busy, total)} for the two bench cores, from /proc/stat."""
    out = {}
    for line in open("/proc/stat"):
        f = line.split()
        if f[0] in (f"cpu{PROXY_CPU}", f"cpu{LOAD_CPU}"):
            v = [int(x) for x in f[1:]]
            total = sum(v[:8])
            out[int(f[0][3:])] = (total - v[3] - v[4], total)
    return out


def ksoftirqd_pids():
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                c = open(f"/proc/{d}/comm").read().strip()
            except OSError:
                continue
            if c in (f"ksoftirqd/{PROXY_CPU}", f"ksoftirqd/{LOAD_CPU}"):
                pids.append(int(d))
    return pids


def wait_quiet():
    """Waits (up to QUIET_MAX_WAIT s) until the two bench cores are idle; returns the last busy figure."""
    busy = 0.0
    for _ in range(max(1, QUIET_MAX_WAIT)):
        a = core_ticks()
        time.sleep(1)
        b = core_ticks()
        busy = sum(b[c][0] - a[c][0] for c in a) / CLK_TCK
        if busy < QUIET_CORES:
            break
    return busy


# ------------------------------------------------------------------ processes


def start_pinned(cpu, logfile, argv, cwd=None, extra_env=None):
    e = dict(os.environ)
    e.update(extra_env or {})
    p = subprocess.Popen(
        ["nice", "-n", NICE, "taskset", "-c", str(cpu), *argv],
        stdout=open(logfile, "w"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
        env=e,
    )
    started.append(p)
    return p


def stop(p: subprocess.Popen | None):
    if p is None or p.poll() is not None:
        return
    pids = tree(p.pid)
    try:
        p.send_signal(signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.time() + 10
    while time.time() < deadline:
        if p.poll() is not None and not any(os.path.exists(f"/proc/{x}") and proc_alive(x) for x in pids[1:]):
            break
        time.sleep(0.1)
    for x in pids:
        if proc_alive(x):
            try:
                os.kill(x, signal.SIGKILL)
            except ProcessLookupError:
                pass
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def proc_alive(pid):
    try:
        st = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        return st != "Z"
    except OSError:
        return False


def http_get(port, host, path="/", tls=False, timeout=2.0):
    try:
        if tls:
            ctx = ssl._create_unverified_context()
            c = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=ctx)
        else:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("GET", path, headers={"Host": host})
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status, body
    except (OSError, http.client.HTTPException):
        return None, b""


def wait_ready(port, host, tls, timeout, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        if http_get(port, host, tls=tls)[0] == 200:
            return True
        time.sleep(0.2)
    return False


def origin_requests():
    _, body = http_get(ORIGIN_PORT, "origin", "/bench_status")
    lines = body.decode(errors="replace").splitlines()
    try:
        return int(lines[2].split()[2])
    except (IndexError, ValueError):
        return None


# ------------------------------------------------------------------ fixtures and configs


class Fixtures:
    def __init__(self, d: Path):
        self.d = d
        (d / "www").mkdir(parents=True)
        (d / "www" / "1m").write_bytes(b"x" * 1048576)
        self.key, self.crt, self.pem = d / "tls.key", d / "tls.crt", d / "tls.pem"
        subprocess.run(
            ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(self.key)],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            ["openssl", "req", "-new", "-x509", "-key", str(self.key), "-out", str(self.crt), "-days", "30",
             "-subj", "/CN=bench.localhost", "-addext", "subjectAltName=DNS:bench.localhost,DNS:*.localhost"],
            check=True,
            capture_output=True,
        )
        self.pem.write_text(self.crt.read_text() + self.key.read_text())
        self.hosts1 = d / "hosts_1.txt"
        self.hosts1.write_text("bench.localhost\n")
        self.hosts10k = d / "hosts_10k.txt"
        self.hosts10k.write_text("".join(f"h{i:05d}.localhost\n" for i in range(N_HOSTS)))

    def hosts_for(self, sc):
        return self.hosts10k if sc == "hosts_10k" else self.hosts1


NGINX_COMMON = """worker_processes 1;
{master}
pid {d}/{tag}.pid;
error_log {d}/{tag}-error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 19000; }}
"""


def origin_conf(fx: Fixtures, tag, http_port, tls_port, under_valgrind=False):
    return NGINX_COMMON.format(master="master_process off;" if under_valgrind else "", d=fx.d, tag=tag) + f"""
http {{
  access_log off;
  server_tokens off;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  sendfile on;
  tcp_nopush off;
  default_type application/octet-stream;
  ssl_certificate {fx.crt};
  ssl_certificate_key {fx.key};
  ssl_protocols TLSv1.2 TLSv1.3;
  server {{
    listen 127.0.0.1:{http_port} default_server backlog=4096;
    listen 127.0.0.1:{tls_port} ssl http2 default_server backlog=4096;
    root {fx.d}/www;
    location = / {{ default_type text/plain; return 200 "ok"; }}
    location = /1m {{ }}
    location = /bench_status {{ stub_status; }}
  }}
}}
"""


def nginx_conf(fx: Fixtures, sc, under_valgrind):
    tls = sc in TLS_SCENARIOS
    h2 = " http2" if sc == "h2_tls" else ""
    lines = [
        NGINX_COMMON.format(master="master_process off;" if under_valgrind else "", d=fx.d, tag="nginx-proxy"),
        "http {",
        "  access_log off;",
        "  server_tokens off;",
        "  keepalive_requests 10000000;",
        "  keepalive_timeout 120s;",
        "  server_names_hash_max_size 65536;",
        "  server_names_hash_bucket_size 128;",
        f"  upstream origin {{ server 127.0.0.1:{ORIGIN_PORT}; keepalive 256; keepalive_requests 10000000;"
        " keepalive_timeout 120s; }",
        "  proxy_http_version 1.1;",
        '  proxy_set_header Connection "";',
        "  proxy_set_header Host $http_host;",
        "  proxy_buffering off;",
        "  proxy_buffer_size 16k;",
        "  proxy_buffers 8 16k;",
    ]
    listen_tls = ""
    if tls:
        lines += [f"  ssl_certificate {fx.crt};", f"  ssl_certificate_key {fx.key};", "  ssl_protocols TLSv1.2 TLSv1.3;"]
        listen_tls = f"listen 127.0.0.1:{PX_TLS_PORT} ssl{h2};"
    default_tls = f"listen 127.0.0.1:{PX_TLS_PORT} ssl{h2} default_server backlog=4096;" if tls else ""
    lines.append(f"  server {{ listen 127.0.0.1:{PX_PORT} default_server backlog=4096; {default_tls} return 404; }}")
    # one server block per host, as ingress controllers render it
    for h in fx.hosts_for(sc).read_text().split():
        lines.append(
            f"  server {{ listen 127.0.0.1:{PX_PORT}; {listen_tls} server_name {h}; "
            "location / { proxy_pass http://origin; } }"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def haproxy_conf(fx: Fixtures, sc, d: Path):
    tls = sc in TLS_SCENARIOS
    mapfile = d / f"hosts-{sc}.map"
    mapfile.write_text("".join(f"{h} be_origin\n" for h in fx.hosts_for(sc).read_text().split()))
    alpn = " alpn h2,http/1.1" if sc == "h2_tls" else ""
    bind_tls = f"  bind 127.0.0.1:{PX_TLS_PORT} ssl crt {fx.pem}{alpn} backlog 4096\n" if tls else ""
    return f"""global
  nbthread 1
  maxconn {HAPROXY_MAXCONN}
defaults
  mode http
  maxconn {HAPROXY_MAXCONN}
  timeout connect 5s
  timeout client 120s
  timeout server 120s
  timeout http-keep-alive 120s
  http-reuse always
frontend fe
  bind 127.0.0.1:{PX_PORT} backlog 4096
{bind_tls}  use_backend %[req.hdr(host),field(1,:),lower,map({mapfile},be_404)]
backend be_origin
  server origin 127.0.0.1:{ORIGIN_PORT}
backend be_404
  http-request return status 404
"""


def origin_manifests() -> str:
    """The origin as a Service `bench/origin` (port 80) with one ready endpoint, 127.0.0.1:ORIGIN_PORT."""
    return f"""apiVersion: v1
kind: Service
metadata: {{name: origin, namespace: bench}}
spec:
  ports: [{{name: http, port: 80}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: origin-1
  namespace: bench
  labels: {{kubernetes.io/service-name: origin}}
addressType: IPv4
ports: [{{name: http, port: {ORIGIN_PORT}, protocol: TCP}}]
endpoints: [{{addresses: ["127.0.0.1"], conditions: {{ready: true}}}}]
"""


def portico_manifests(fx: Fixtures, sc, mdir: Path, tls: bool):
    """One Service + EndpointSlice for the origin, and one Ingress per host (as a cluster would have them)."""
    mdir.mkdir(parents=True, exist_ok=True)
    import base64

    parts = [
        origin_manifests()
    ]
    if tls:
        parts.append(
            f"""apiVersion: v1
kind: Secret
metadata: {{name: bench-tls, namespace: bench}}
type: kubernetes.io/tls
data:
  tls.crt: {base64.b64encode(fx.crt.read_bytes()).decode()}
  tls.key: {base64.b64encode(fx.key.read_bytes()).decode()}
"""
        )
    (mdir / "origin.yaml").write_text("---\n".join(parts))
    docs = []
    for i, h in enumerate(fx.hosts_for(sc).read_text().split()):
        tls_block = f"  tls: [{{hosts: [{h}], secretName: bench-tls}}]\n" if tls else ""
        # Like the peers, serve the host on both listeners (an Ingress with TLS redirects plain HTTP by default).
        annotations = ", annotations: {portico.dev/ssl-redirect: \"false\"}" if tls else ""
        docs.append(
            f"""apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: ing-{i:05d}, namespace: bench{annotations}}}
spec:
{tls_block}  rules:
  - host: {h}
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {{service: {{name: origin, port: {{name: http}}}}}}
"""
        )
    (mdir / "ingresses.yaml").write_text("---\n".join(docs))


def portico_config(path: Path, tls: bool, fx: Fixtures):
    # The load tools connect to 127.0.0.1 and send no SNI: like nginx's and HAProxy's default certificate here, the
    # bench certificate answers those handshakes (Portico's built-in default would cover no host, and a request for
    # a host its certificate does not cover gets 421).
    https = (
        f'    https: ["127.0.0.1:{PX_TLS_PORT}"]\n'
        f"    defaultCertificate: {{certFile: {fx.crt}, keyFile: {fx.key}}}\n"
        if tls
        else ""
    )
    path.write_text(
        f"""listenerSets:
  - name: default
    ingressClasses: [portico]
    http: ["127.0.0.1:{PX_PORT}"]
{https}admin: {{ address: "127.0.0.1:{ADMIN_PORT}" }}
"""
    )


# ------------------------------------------------------------------ peers


class NotAvailable(Exception):
    pass


def start_peer(fx: Fixtures, peer, sc, d: Path, valgrind_out: Path | None = None):
    """Starts `peer` configured for `sc`; returns (proc, http_port, tls_port, host)."""
    d.mkdir(parents=True, exist_ok=True)
    vg = []
    if valgrind_out is not None:
        vg = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={valgrind_out}/cg.%p.out"]
        # e.g. CALLGRIND_ARGS="--dump-instr=yes" for per-instruction annotations of a `profiling` build
        vg += os.environ.get("CALLGRIND_ARGS", "").split()
    tls = sc in TLS_SCENARIOS
    host = fx.hosts_for(sc).read_text().split()[0]
    port, tport = PX_PORT, PX_TLS_PORT
    if peer == "direct":
        port, tport = DIRECT_PORT, DIRECT_TLS_PORT
        conf = d / f"direct-{sc}.conf"
        conf.write_text(origin_conf(fx, "direct", DIRECT_PORT, DIRECT_TLS_PORT, valgrind_out is not None))
        argv = [*vg, "nginx", "-e", str(d / "direct-error.log"), "-c", str(conf), "-g", "daemon off;"]
    elif peer == "nginx":
        conf = d / f"nginx-{sc}.conf"
        conf.write_text(nginx_conf(fx, sc, valgrind_out is not None))
        argv = [*vg, "nginx", "-e", str(d / "nginx-error.log"), "-c", str(conf), "-g", "daemon off;"]
    elif peer == "haproxy":
        conf = d / f"haproxy-{sc}.cfg"
        conf.write_text(haproxy_conf(fx, sc, d))
        argv = [*vg, "haproxy", "-db", "-f", str(conf)]
    elif peer == "portico":
        if tls and PORTICO_TLS == "0":
            raise NotAvailable("n/a — TLS not built yet")
        mdir = d / f"manifests-{sc}"
        if mdir.exists():
            shutil.rmtree(mdir)
        portico_manifests(fx, sc, mdir, tls)
        conf = d / f"portico-{sc}.yaml"
        portico_config(conf, tls, fx)
        argv = [*vg, PORTICO_BIN, "run", "--manifests", str(mdir), "--config", str(conf), "--workers", "1", "--access-log", "off"]
    else:
        raise SystemExit(f"unknown peer {peer}")
    proc = start_pinned(PROXY_CPU, d / f"{sc}{'-vg' if vg else ''}.log", argv, cwd=d)
    t = 240 if vg else 60
    if not wait_ready(port, host, False, t, proc):
        stop(proc)
        raise RuntimeError(f"{peer} did not become ready for {sc}; see {d}")
    if tls and not wait_ready(tport, host, True, 8 if peer == "portico" else 30, proc):
        stop(proc)
        if peer == "portico":
            raise NotAvailable("n/a — TLS not built yet")
        raise RuntimeError(f"{peer} TLS listener not ready for {sc}")
    return proc, port, tport, host


# ------------------------------------------------------------------ load


def scenario_load(fx: Fixtures, sc, port, tport, host, d: Path):
    """(conns, wrk_argv or None, oha_base_argv, url)."""
    conns = 16 if sc == "body_1m" else 64
    path = "/1m" if sc == "body_1m" else "/"
    scheme_port = (f"https://127.0.0.1:{tport}" if sc in TLS_SCENARIOS else f"http://127.0.0.1:{port}")
    url = scheme_port + path
    wrk_extra = ["-H", f"Host: {host}"]
    oha_extra = ["-H", f"Host: {host}"]
    if sc in ("h1_close", "tls_handshake"):
        wrk_extra += ["-H", "Connection: close"]
        oha_extra += ["--disable-keepalive"]
    if sc in TLS_SCENARIOS:
        oha_extra += ["--insecure"]
    oha_url = url
    if sc == "hosts_10k":
        wrk_extra = ["-s", str(BENCH_DIR / "spread.lua")]
        urls = d / f"urls-{port}.txt"
        names = fx.hosts10k.read_text().split()
        urls.write_text("".join(f"http://{h}:{port}/\n" for h in names))
        oha_extra = []
        for h in names:
            oha_extra += ["--connect-to", f"{h}:{port}:127.0.0.1:{port}"]
        oha_extra += ["--urls-from-file"]
        oha_url = str(urls)
    wrk = None
    if sc == "h2_tls":
        # HTTP/2 routes by :authority, so the URL must name the routed host (oha's -H Host does not set it)
        conns = 4
        oha_url = f"https://{host}:{tport}{path}"
        oha_extra = ["--insecure", "--connect-to", f"{host}:{tport}:127.0.0.1:{tport}", "--http2", "-p", "16"]
    else:
        wrk = ["-t1", f"-c{conns}", "--latency", "--timeout", "5s", *wrk_extra, url]
        if sc == "hosts_10k":
            wrk += ["--", str(fx.hosts10k)]
    oha = ["--no-tui", "--output-format", "json", "-c", str(conns), *oha_extra]
    return conns, wrk, oha, oha_url


def run_load(argv, out: Path, duration):
    """Runs a load tool pinned to LOAD_CPU; returns its CPU seconds (user+sys, from wait4)."""
    cmd = ["nice", "-n", NICE, "taskset", "-c", str(LOAD_CPU), "timeout", str(duration + 30), *argv]
    with open(out, "w") as o, open(str(out) + ".err", "w") as e:
        p = subprocess.Popen(cmd, stdout=o, stderr=e, stdin=subprocess.DEVNULL)
        started.append(p)
        _, _, ru = os.wait4(p.pid, 0)
        p.returncode = 0
    return ru.ru_utime + ru.ru_stime


def window(proxy_pid, origin_pid, ksoft, fn):
    """Runs fn() and returns the accounting of that window (seconds and cores)."""
    ppids = tree(proxy_pid) if proxy_pid else []
    opids = tree(origin_pid)
    c0, o0, k0, b0, t0 = tree_ticks(ppids), tree_ticks(opids), tree_ticks(ksoft), core_ticks(), time.time()
    load_cpu = fn()
    t1 = time.time()
    ppids2 = tree(proxy_pid) if proxy_pid else []
    c1, o1, k1, b1 = tree_ticks(ppids2), tree_ticks(opids), tree_ticks(ksoft), core_ticks()
    el = t1 - t0
    busy = {c: (b1[c][0] - b0[c][0]) / CLK_TCK / el for c in b0}
    proxy_s = (c1 - c0) / CLK_TCK
    origin_s = (o1 - o0) / CLK_TCK
    ksoft_s = (k1 - k0) / CLK_TCK
    ours = (proxy_s + origin_s + ksoft_s + load_cpu) / el
    return {
        "elapsed": el,
        "proxy_cpu_s": proxy_s,
        "origin_cpu_s": origin_s,
        "load_cpu_s": load_cpu,
        "ksoftirqd_s": ksoft_s,
        "busy_proxy_core": busy.get(PROXY_CPU, 0),
        "busy_load_core": busy.get(LOAD_CPU, 0),
        "foreign_cores": sum(busy.values()) - ours,
    }


def parse_wrk(text):
    r = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    r["rps"] = float(m.group(1)) if m else None
    m = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", text)
    if m:
        mult = {"B": 1 / 1048576, "KB": 1 / 1024, "MB": 1, "GB": 1024}.get(m.group(2), 0)
        r["mib_s"] = float(m.group(1)) * mult
    m = re.search(r"(\d+) requests in", text)
    r["requests"] = int(m.group(1)) if m else None
    r["errors"] = bool(re.search(r"Socket errors|Non-2xx", text))
    return r


def parse_oha(path: Path):
    try:
        j = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"ok": False}
    codes = j.get("statusCodeDistribution", {}) or {}
    n = sum(codes.values())
    # requests still in flight when the duration ends are reported as errors: not failures
    errors = sum(v for k, v in (j.get("errorDistribution") or {}).items() if "deadline" not in k)
    lp = j.get("latencyPercentiles", {}) or {}
    s = j.get("summary", {}) or {}
    return {
        "ok": True,
        "requests": n,
        "non2xx": sum(v for k, v in codes.items() if not k.startswith("2")),
        "errors": errors,
        "rps": s.get("requestsPerSec"),
        "p50_ms": (lp.get("p50") or 0) * 1000,
        "p99_ms": (lp.get("p99") or 0) * 1000,
        "p999_ms": (lp.get("p99.9") or 0) * 1000,
    }


# ------------------------------------------------------------------ measurements


def measure_once(fx, peer, sc, d: Path, origin, ksoft):
    d.mkdir(parents=True, exist_ok=True)
    quiet = wait_quiet()
    proc, port, tport, host = start_peer(fx, peer, sc, d)
    try:
        rss, pss, _ = tree_mem(proc.pid)
        row = {"peer": peer, "scenario": sc, "idle_rss_kib": rss, "idle_pss_kib": pss, "pre_busy": quiet}
        if sc in TLS_SCENARIOS:
            row["tls"] = negotiated(tport, host, sc)
        conns, wrk, oha, oha_url = scenario_load(fx, sc, port, tport, host, d)
        if wrk is not None:
            run_load(["wrk", *wrk[:1], *wrk[1:2], f"-d{WARMUP}s", *wrk[2:]], d / "warmup.txt", WARMUP)
            sat = window(proc.pid, origin.pid, ksoft,
                         lambda: run_load(["wrk", *wrk[:2], f"-d{DURATION}s", *wrk[2:]], d / "wrk.txt", DURATION))
            sat.update(parse_wrk((d / "wrk.txt").read_text()))
        else:
            run_load(["oha", *oha, "-z", f"{WARMUP}s", oha_url], d / "warmup.json", WARMUP)
            sat = window(proc.pid, origin.pid, ksoft,
                         lambda: run_load(["oha", *oha, "-z", f"{DURATION}s", oha_url], d / "sat.json", DURATION))
            o = parse_oha(d / "sat.json")
            sat.update({"rps": o.get("rps"), "requests": o.get("requests"), "errors": bool(o.get("errors"))})
        time.sleep(1)
        rate = RATES[sc]
        fixed = window(proc.pid, origin.pid, ksoft, lambda: run_load(
            ["oha", *oha, "-q", str(rate), "-z", f"{DURATION}s", "--latency-correction", oha_url],
            d / "oha.json", DURATION))
        fixed.update(parse_oha(d / "oha.json"))
        fixed["rate"] = rate
        _, _, hwm = tree_mem(proc.pid)
        row.update({"sat": sat, "fixed": fixed, "peak_rss_kib": hwm})
        if fixed.get("requests"):
            row["cpu_ms_per_1k"] = fixed["proxy_cpu_s"] * 1000 / (fixed["requests"] / 1000)
        if sat.get("requests"):
            row["cpu_ms_per_1k_sat"] = sat["proxy_cpu_s"] * 1000 / (sat["requests"] / 1000)
        row["foreign"] = max(sat["foreign_cores"], fixed["foreign_cores"])
        return row
    finally:
        stop(proc)


def negotiated(tport, host, sc):
    try:
        ctx = ssl._create_unverified_context()
        if sc == "h2_tls":
            ctx.set_alpn_protocols(["h2", "http/1.1"])
        with socket.create_connection(("127.0.0.1", tport), timeout=3) as s:
            with ctx.wrap_socket(s, server_hostname=host) as t:
                return f"{t.version()} {t.cipher()[0]} alpn={t.selected_alpn_protocol()}"
    except OSError as e:
        return f"? ({e})"


def measure(fx, peer, sc, origin, ksoft):
    best = None
    for attempt in range(NOISY_RETRIES + 1):
        d = OUT / "raw" / peer / (sc if attempt == 0 else f"{sc}.retry{attempt}")
        try:
            row = measure_once(fx, peer, sc, d, origin, ksoft) if sc != "idle_10k" else measure_idle(fx, peer, d)
        except NotAvailable as e:
            return {"peer": peer, "scenario": sc, "na": str(e)}
        except RuntimeError as e:
            log(f"   FAILED: {e}")
            return {"peer": peer, "scenario": sc, "failed": str(e)}
        row["attempts"] = attempt + 1
        if best is None or row["foreign"] < best["foreign"]:
            best = row
        if row["foreign"] <= NOISY_CORES:
            break
        log(f"   disturbed: {row['foreign']:.2f} cores used by others during the run"
            + ("; repeating" if attempt < NOISY_RETRIES else ""))
    best["noisy"] = best["foreign"] > NOISY_CORES
    return best


IDLE_CLIENT = r"""
import socket, sys, time, selectors
port, host, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
req = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
socks, bad = [], 0
for start in range(0, n, 200):
    batch = []
    for _ in range(min(200, n - start)):
        s = socket.socket(); s.settimeout(3)
        try:
            s.connect(("127.0.0.1", port)); s.sendall(req)
        except OSError:
            bad += 1; s.close(); continue
        batch.append(s)
    for s in batch:  # read each reply: a served request, then the connection sits idle in keep-alive
        buf = b""
        try:
            while b"\r\n\r\n" not in buf or not buf.endswith(b"ok"):
                c = s.recv(4096)
                if not c: raise OSError("closed")
                buf += c
            socks.append(s)
        except OSError:
            bad += 1; s.close()
print(f"open {len(socks)} failed {bad}", flush=True)
sys.stdin.readline()
for s in socks: s.close()
print("closed", flush=True)
"""


def measure_idle(fx, peer, d: Path):
    d.mkdir(parents=True, exist_ok=True)
    quiet = wait_quiet()
    proc, port, _, host = start_peer(fx, peer, "h1_keepalive", d)
    try:
        for _ in range(20):
            http_get(port, host)
        time.sleep(1)
        base = tree_mem(proc.pid)
        fds_base = tree_fds(proc.pid)
        c0 = tree_ticks(tree(proc.pid))
        n_conns = min(N_IDLE, HAPROXY_MAXCONN - 50) if peer == "haproxy" else N_IDLE
        client = subprocess.Popen(
            ["nice", "-n", NICE, "taskset", "-c", str(LOAD_CPU), sys.executable, "-c", IDLE_CLIENT,
             str(port), host, str(n_conns)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        started.append(client)
        line = client.stdout.readline().split()
        opened = int(line[1]) if len(line) >= 4 else 0
        failed = int(line[3]) if len(line) >= 4 else n_conns
        time.sleep(3)
        held = tree_mem(proc.pid)
        fds_held = tree_fds(proc.pid)
        client.stdin.write("close\n")
        client.stdin.flush()
        client.stdout.readline()
        client.wait(timeout=60)
        time.sleep(5)
        after = tree_mem(proc.pid)
        fds_after = tree_fds(proc.pid)
        c1 = tree_ticks(tree(proc.pid))
        per_conn = (held[0] - base[0]) / opened if opened else None
        return {
            "peer": peer, "scenario": "idle_10k", "opened": opened, "failed": failed,
            "base_rss_kib": base[0], "held_rss_kib": held[0], "after_rss_kib": after[0],
            "base_pss_kib": base[1], "held_pss_kib": held[1], "after_pss_kib": after[1],
            "peak_rss_kib": after[2], "kib_per_conn": per_conn,
            "fds": [fds_base, fds_held, fds_after],
            "cpu_s": (c1 - c0) / CLK_TCK, "foreign": 0.0, "pre_busy": quiet,
        }
    finally:
        stop(proc)


def measure_ir(fx, peer, sc, origin):
    d = OUT / "ir" / peer / sc
    d.mkdir(parents=True, exist_ok=True)
    try:
        proc, port, tport, host = start_peer(fx, peer, sc, d, valgrind_out=d)
    except NotAvailable as e:
        return {"peer": peer, "scenario": sc, "na": str(e)}
    except RuntimeError as e:
        return {"peer": peer, "scenario": sc, "failed": str(e)}
    try:
        _, wrk, oha, oha_url = scenario_load(fx, sc, port, tport, host, d)
        # the window must start after every connection's set-up (TLS handshakes under valgrind take seconds)
        settle = 8 if sc in TLS_SCENARIOS else 3
        total = IR_WINDOW + settle + 5
        if wrk is not None:
            argv = ["wrk", *wrk[:2], f"-d{total}s", *wrk[2:]]
        else:
            argv = ["oha", *oha, "-z", f"{total}s", oha_url]
        import threading

        th = threading.Thread(target=run_load, args=(argv, d / "load.txt", total))
        th.start()
        time.sleep(settle)
        r0 = origin_requests()
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True)
        time.sleep(IR_WINDOW)
        r1 = origin_requests()
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True)
        th.join()
    finally:
        stop(proc)
    ir, dumps = window_ir(d)
    reqs = (r1 or 0) - (r0 or 0)
    out = {"peer": peer, "scenario": sc, "ir": ir, "requests": reqs, "ir_per_req": ir / reqs if reqs > 0 else None,
           "dumps": [str(x) for x in dumps]}
    if peer == "portico":
        out.update(parsed_ir(ir, dumps))
    return out


def window_ir(d: Path):
    """The instructions of the callgrind window (the dumps `callgrind_control -d` wrote in `d`) and the dumps."""
    ir = 0
    dumps = sorted(p for p in d.glob("cg.*.out.*") if re.search(r"\.out\.\d+$", p.name))
    for f in dumps:
        for line in open(f, errors="replace"):
            if line.startswith("summary:") or line.startswith("totals:"):
                ir += int(line.split()[1])
                break
    return ir, dumps


PARSE_FN = "portico::http1::request::parse"


def parsed_ir(ir, dumps):
    """Portico's HTTP/1.1 requests inside the callgrind window exactly: the calls of its request-head parser in the
    dumps. The origin's counter is read a moment before the window opens and after it closes, so ir_per_req moves
    1-3 % from run to run with the same binary; this count does not (HTTP/1.1 scenarios only)."""
    names, calls, cur = {}, 0, None
    for f in dumps:
        for line in open(f, errors="replace"):
            if line.startswith(("fn=(", "cfn=(")):
                key, _, name = line.split("=", 1)[1].rstrip("\n").partition(" ")
                if name:
                    names[key] = name
                if line.startswith("cfn="):
                    cur = names.get(key, "")
            elif line.startswith("calls=") and cur == PARSE_FN:
                calls += int(line[6:].split()[0])
    if calls == 0:
        return {}
    return {"parsed_requests": calls, "ir_per_parsed_req": ir / calls}


# ------------------------------------------------------------------ report


def fnum(v, nd=0, suffix=""):
    if v is None:
        return "-"
    return f"{v:,.{nd}f}{suffix}"


def report(rows, irs, envtxt):
    byk = {(r["peer"], r["scenario"]): r for r in rows}
    irk = {(r["peer"], r["scenario"]): r for r in irs}
    out = ["# Portico benchmark (bench/run.sh)", ""]
    out.append(
        "Proxy pinned alone to one core with one worker; load tool and origin on the other core. "
        "CPU-ms/1k = the proxy's utime+stime per 1,000 requests at the fixed rate. 'foreign' = CPU of the two "
        "bench cores used by other processes during the measurement (cores); flag N = above "
        f"{NOISY_CORES} even after retries. instr/req = user-space instructions (callgrind) per request at "
        "saturation.\n"
    )
    for sc in SCENARIOS:
        out.append(f"## {sc}: {SCENARIO_TITLES.get(sc, sc)}\n")
        if sc == "idle_10k":
            out.append("| peer | conns held | RSS before MiB | RSS held MiB | KiB per conn | RSS after close MiB "
                       "| after - before MiB | PSS held MiB | open fds before / held / after | proxy CPU s |")
            out.append("|---|---|---|---|---|---|---|---|---|---|")
            for p in PEERS:
                r = byk.get((p, sc))
                if not r or "opened" not in r:
                    out.append(f"| {p} | {(r or {}).get('na') or (r or {}).get('failed') or '-'} ||||||||")
                    continue
                out.append(
                    f"| {p} | {r['opened']:,} ({r['failed']} failed) | {r['base_rss_kib'] / 1024:.1f} | "
                    f"{r['held_rss_kib'] / 1024:.1f} | {fnum(r['kib_per_conn'], 1)} | {r['after_rss_kib'] / 1024:.1f} | "
                    f"{(r['after_rss_kib'] - r['base_rss_kib']) / 1024:+.1f} | {r['held_pss_kib'] / 1024:.1f} | "
                    f"{' / '.join(str(x) for x in r.get('fds', []))} | "
                    f"{r['cpu_s']:.2f} |")
            out.append("")
            continue
        rate = RATES.get(sc)
        mib = sc == "body_1m"
        out.append(f"| peer | sat RPS | {'sat MiB/s | ' if mib else ''}proxy core busy @sat | p50 ms @{rate}/s | "
                   f"p99 ms @{rate}/s | achieved rate | CPU-ms/1k @{rate}/s | CPU-ms/1k @sat | instr/req | "
                   "idle PSS MiB | peak RSS MiB | foreign | flags |")
        out.append("|---|" + "---|" * (12 if mib else 11))
        for p in PEERS:
            r = byk.get((p, sc))
            if r is None:
                continue
            if "na" in r or "failed" in r:
                msg = r.get("na") or ("FAILED: " + r["failed"])
                out.append(f"| {p} | {msg} |" + " |" * (11 if mib else 10))
                continue
            s, f = r["sat"], r["fixed"]
            flags = ""
            if s.get("errors"):
                flags += "E"
            if f.get("errors") or f.get("non2xx"):
                flags += "e"
            if f.get("rps") and f["rps"] < 0.97 * rate:
                flags += "R"
            if r.get("noisy"):
                flags += "N"
            ir = irk.get((p, sc), {})
            out.append(
                f"| {p} | {fnum(s.get('rps'))} | {fnum(s.get('mib_s')) + ' | ' if mib else ''}"
                f"{s['busy_proxy_core'] * 100:.0f}% | {fnum(f.get('p50_ms'), 3)} | {fnum(f.get('p99_ms'), 3)} | "
                f"{fnum(f.get('rps'))} | {fnum(r.get('cpu_ms_per_1k'), 1)} | {fnum(r.get('cpu_ms_per_1k_sat'), 1)} | "
                f"{fnum(ir.get('ir_per_req')) if ir.get('ir_per_req') else ir.get('na', '-')} | "
                f"{r['idle_pss_kib'] / 1024:.1f} | {r['peak_rss_kib'] / 1024:.1f} | {r['foreign']:.2f} | {flags or '-'} |")
        tl = [f"{r['peer']}: {r['tls']}" for p in PEERS if (r := byk.get((p, sc))) and r.get("tls")]
        if tl:
            out.append("\nNegotiated: " + "; ".join(tl))
        out.append("")
    out += ratio_section(byk, irk)
    out += targets_section(byk, irk)
    out.append("Flags: E wrk saw socket errors or non-2xx; e oha saw errors/non-2xx; R fixed rate not sustained "
               "(< 97%); N disturbed by other processes (foreign CPU above the threshold in every attempt).\n")
    out.append("## Environment\n\n```\n" + envtxt + "```\n")
    return "\n".join(out)


def ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "-"


def ratio_section(byk, irk):
    if "portico" not in PEERS:
        return []
    out = ["## Portico relative to the peers (same run; < 1 = cheaper / faster than the peer)\n",
           "| scenario | CPU/req vs nginx | CPU/req vs haproxy | instr/req vs nginx | instr/req vs haproxy | "
           "p99 vs nginx | p99 vs haproxy | sat RPS vs nginx | sat RPS vs haproxy |",
           "|---|---|---|---|---|---|---|---|---|"]
    for sc in SCENARIOS:
        if sc == "idle_10k":
            continue
        me = byk.get(("portico", sc), {})
        if "na" in me or "failed" in me or not me:
            out.append(f"| {sc} | {me.get('na') or me.get('failed') or '-'} ||||||||")
            continue
        cells = []
        for metric in ("cpu", "ir", "p99", "rps"):
            for peer in ("nginx", "haproxy"):
                o = byk.get((peer, sc), {})
                if metric == "cpu":
                    cells.append(ratio(me.get("cpu_ms_per_1k"), o.get("cpu_ms_per_1k")))
                elif metric == "ir":
                    cells.append(ratio(irk.get(("portico", sc), {}).get("ir_per_req"),
                                       irk.get((peer, sc), {}).get("ir_per_req")))
                elif metric == "p99":
                    cells.append(ratio(me.get("fixed", {}).get("p99_ms"), o.get("fixed", {}).get("p99_ms")))
                else:
                    cells.append(ratio(me.get("sat", {}).get("rps"), o.get("sat", {}).get("rps")))
        out.append(f"| {sc} | " + " | ".join(cells) + " |")
    out.append("")
    return out


def targets_section(byk, irk):
    if "portico" not in PEERS:
        return []
    P = lambda sc: byk.get(("portico", sc), {})  # noqa: E731
    N = lambda sc: byk.get(("nginx", sc), {})  # noqa: E731
    H = lambda sc: byk.get(("haproxy", sc), {})  # noqa: E731
    I = lambda p, sc: irk.get((p, sc), {}).get("ir_per_req")  # noqa: E731
    out = ["## Issue-9 targets (this run)\n", "| target | Portico | reference (same run) | verdict |",
           "|---|---|---|---|"]

    def row(name, mine, ref, ok, fmt="{:,.1f}"):
        if mine is None or ref is None:
            out.append(f"| {name} | {'-' if mine is None else fmt.format(mine)} | "
                       f"{'-' if ref is None else fmt.format(ref)} | not measured |")
        else:
            out.append(f"| {name} | {fmt.format(mine)} | {fmt.format(ref)} | {'met' if ok(mine, ref) else 'MISSED'} |")

    le = lambda a, b: a <= b  # noqa: E731
    ge = lambda a, b: a >= b  # noqa: E731
    row("keep-alive: CPU-ms/1k @10k/s <= nginx", P("h1_keepalive").get("cpu_ms_per_1k"),
        N("h1_keepalive").get("cpu_ms_per_1k"), le)
    row("keep-alive: instr/req <= haproxy", I("portico", "h1_keepalive"), I("haproxy", "h1_keepalive"), le, "{:,.0f}")
    row("keep-alive: p99 @10k/s <= nginx (ms)", P("h1_keepalive").get("fixed", {}).get("p99_ms"),
        N("h1_keepalive").get("fixed", {}).get("p99_ms"), le, "{:.3f}")
    row("new conn/request: CPU-ms/1k <= nginx", P("h1_close").get("cpu_ms_per_1k"), N("h1_close").get("cpu_ms_per_1k"),
        le)
    row("1 MiB: CPU-ms per GiB <= haproxy", P("body_1m").get("cpu_ms_per_1k"), H("body_1m").get("cpu_ms_per_1k"), le)
    row("1 MiB: throughput MiB/s >= haproxy", P("body_1m").get("sat", {}).get("mib_s"),
        H("body_1m").get("sat", {}).get("mib_s"), ge, "{:,.0f}")
    a, b = P("hosts_10k").get("cpu_ms_per_1k"), P("h1_keepalive").get("cpu_ms_per_1k")
    row("10k hosts: CPU/req within 5% of 1 host", a, b, lambda x, y: x <= 1.05 * y)
    a = P("hosts_10k").get("idle_pss_kib")
    b = P("h1_keepalive").get("idle_pss_kib")
    row("10k hosts: memory growth < 10 MiB (idle PSS, MiB)", a / 1024 if a else None, b / 1024 if b else None,
        lambda x, y: x - y < 10)
    r = byk.get(("portico", "idle_10k"), {})
    if r.get("kib_per_conn") is not None:
        row("idle conns: < 30 KiB each", r["kib_per_conn"], 30.0, le)
        row("idle conns: back to baseline after close (RSS MiB after vs before)", r["after_rss_kib"] / 1024,
            r["base_rss_kib"] / 1024, lambda x, y: x - y < 1.0)
    out.append("\n(Change-to-serving and table-build targets come from `cargo bench --bench table_scale`.)\n")
    return out


# ------------------------------------------------------------------ main


def tool_version(argv):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="portico-bench."))
    os.chmod(run_dir, 0o755)  # nginx workers (www-data) read www/
    t_start = time.time()
    fx = Fixtures(run_dir)
    envtxt = "".join(f"{k}: {v}\n" for k, v in [
        ("date", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
        ("kernel", os.uname().release),
        ("cpus", os.cpu_count()),
        ("cpu model", next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
                           "?")),
        ("portico", f"{PORTICO_BIN} ({tool_version(['git', '-C', str(REPO), 'describe', '--always', '--dirty'])})"),
        ("nginx", tool_version(["nginx", "-v"])),
        ("haproxy", tool_version(["haproxy", "-v"])),
        ("wrk", tool_version(["wrk", "-v"])),
        ("oha", tool_version(["oha", "--version"])),
        ("valgrind", tool_version(["valgrind", "--version"])),
        ("settings", f"quick={QUICK} duration={DURATION}s warmup={WARMUP}s proxy_cpu={PROXY_CPU} load_cpu={LOAD_CPU} "
                     f"nice={NICE} ir={IR} ir_window={IR_WINDOW}s noisy_cores={NOISY_CORES} "
                     f"retries={NOISY_RETRIES} n_hosts={N_HOSTS} n_idle={N_IDLE}"),
        ("rates", " ".join(f"{k}={v}" for k, v in RATES.items())),
        ("scenarios", " ".join(SCENARIOS)),
        ("peers", " ".join(PEERS)),
    ])
    (OUT / "env.txt").write_text(envtxt)
    log(f"results -> {OUT}")
    ksoft = ksoftirqd_pids()
    conf = run_dir / "origin.conf"
    conf.write_text(origin_conf(fx, "origin", ORIGIN_PORT, ORIGIN_PORT + 1000))
    origin = start_pinned(LOAD_CPU, run_dir / "origin.log",
                          ["nginx", "-e", str(run_dir / "origin-error.log"), "-c", str(conf), "-g", "daemon off;"])
    rows, irs = [], []
    try:
        if not wait_ready(ORIGIN_PORT, "origin", False, 30, origin):
            raise SystemExit("origin did not start")
        for sc in SCENARIOS:
            for peer in PEERS:
                log(f"{sc}  {peer}")
                r = measure(fx, peer, sc, origin, ksoft)
                rows.append(r)
                with open(OUT / "results.jsonl", "a") as f:
                    f.write(json.dumps(r) + "\n")
                summary = r.get("na") or r.get("failed") or (
                    f"cpu-ms/1k {r['cpu_ms_per_1k']:.1f}, p99 {r['fixed'].get('p99_ms', 0):.3f} ms, "
                    f"sat {r['sat'].get('rps') or 0:,.0f}/s, foreign {r['foreign']:.2f}"
                    if "cpu_ms_per_1k" in r else
                    f"{r.get('kib_per_conn') or 0:.1f} KiB/conn" if "opened" in r else "?")
                log(f"   {summary}")
        if IR:
            for sc in SCENARIOS:
                if sc not in IR_SCENARIOS or sc == "idle_10k":
                    continue
                for peer in PEERS:
                    log(f"instructions/request (callgrind)  {sc}  {peer}")
                    r = measure_ir(fx, peer, sc, origin)
                    irs.append(r)
                    with open(OUT / "ir.jsonl", "a") as f:
                        f.write(json.dumps(r) + "\n")
                    log(f"   {fnum(r.get('ir_per_req'))} instr/req over {r.get('requests', 0):,} requests"
                        if "ir" in r else f"   {r.get('na') or r.get('failed')}")
    finally:
        stop(origin)
        for p in started:
            stop(p)
    envtxt += f"wall time: {time.time() - t_start:.0f} s\n"
    (OUT / "env.txt").write_text(envtxt)
    rep = report(rows, irs, envtxt)
    (OUT / "report.md").write_text(rep)
    print(rep)
    shutil.rmtree(run_dir, ignore_errors=True)


def rebuild_report(out_dir):
    """Re-renders report.md from a results directory (python3 bench/harness.py report DIR)."""
    global OUT
    OUT = Path(out_dir)
    rows = [json.loads(x) for x in open(OUT / "results.jsonl")]
    irs = [json.loads(x) for x in open(OUT / "ir.jsonl")] if (OUT / "ir.jsonl").exists() else []
    print(report(rows, irs, (OUT / "env.txt").read_text()))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    if len(sys.argv) == 3 and sys.argv[1] == "report":
        rebuild_report(sys.argv[2])
    else:
        main()
