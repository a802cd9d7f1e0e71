#!/usr/bin/env python3
"""Layer-4 benchmark (issue #20): Portico's TCP forwarding and TLS passthrough against HAProxy `mode tcp`.

Started by bench/l4.sh; usable directly (`python3 bench/l4.py run`). Standard library only; the /proc accounting
and process helpers are bench/harness.py's. Everything listens on 127.0.0.1; every load run is bounded in bytes,
connections and time; only processes this script started are stopped, by PID.

Per proxy (PEERS: portico, haproxy, and direct = the client straight at the backends, the floor; optionally
haproxy_splice = HAProxy with `option splice-auto`, portico_b = the binary PORTICO_B_BIN for an A/B), started once per round, proxies alternated between rounds:

  tcp_stream   one connection streams STREAM_GIB GiB through the proxy to a sink backend (which answers the count):
               proxy CPU seconds per GiB (utime+stime of its process tree from /proc/PID/stat) and MiB/s;
  tcp_conns    CONNS short connections (connect, send 64 bytes, read the echo, close), CONCURRENCY at a time:
               proxy CPU-ms per 1,000 connections and connections/s;
  tls_stream   the same as tcp_stream over TLS 1.3 through the proxy's SNI passthrough (the sink backend terminates);
  tls_conns    the same as tcp_conns over TLS (a full handshake with the backend per connection).

The proxy runs alone on PROXY_CPU; the load tool and the backends (one Python process, asyncio) on LOAD_CPU.
TLS is the client's and the backend's cost, on LOAD_CPU: the proxy's figures are its own CPU only.

Subcommands used internally: `backend` (the four backends), `stream` and `conns` (the load clients); `report DIR`
re-renders a report, `self DUMP N` lists a callgrind dump's functions by own cost per unit (bench/l4-ir.sh).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import os
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent

# The proxy on core 1 and the load on core 0 unless told otherwise (set before harness reads them).
os.environ.setdefault("PROXY_CPU", "1")
os.environ.setdefault("LOAD_CPU", "0")
sys.path.insert(0, str(BENCH_DIR))
import harness as H  # noqa: E402

env = H.env
PEERS = env("PEERS", "portico haproxy direct").split()
TESTS = env("TESTS", "tcp_stream tcp_conns tls_stream tls_conns").split()
ROUNDS = int(env("ROUNDS", "2"))
STREAM_GIB = float(env("STREAM_GIB", "2"))
TLS_STREAM_GIB = float(env("TLS_STREAM_GIB", env("STREAM_GIB", "1")))
CONNS = int(env("CONNS", "20000"))
TLS_CONNS = int(env("TLS_CONNS", "3000"))
CONCURRENCY = int(env("CONCURRENCY", "32"))
PAYLOAD = int(env("PAYLOAD", "64"))
CHUNK = int(env("CHUNK", str(1 << 20)))
L4_LOG = env("L4_LOG", "0") == "1"  # Portico's per-connection log line (HAProxy here logs nothing)
PORTICO_BIN = env("PORTICO_BIN", str(REPO / "target/release/portico"))
PORTICO_B_BIN = env("PORTICO_B_BIN", PORTICO_BIN)  # peer portico_b: another build, for an A/B in one run
LOAD_TIMEOUT = int(env("LOAD_TIMEOUT", "300"))
OUT = Path(env("OUT", str(BENCH_DIR / "results" / ("l4-" + time.strftime("%Y%m%d-%H%M%S")))))

BASE = int(env("L4_PORT_BASE", "29100"))
SINK, ECHO, SINK_TLS, ECHO_TLS = BASE + 1, BASE + 2, BASE + 3, BASE + 4  # backends
PX_HTTP, PX_SINK, PX_ECHO, PX_TLS, PX_ADMIN = BASE + 10, BASE + 11, BASE + 12, BASE + 13, BASE + 19  # proxies
SNI_SINK, SNI_ECHO = "sink.l4.test", "echo.l4.test"
log = H.log


# ------------------------------------------------------------------ backends (LOAD_CPU)


class Sink(asyncio.Protocol):
    """Reads an 8-byte big-endian length, then that many bytes; answers b"OK" + the count and closes."""

    def connection_made(self, transport):
        self.t, self.head, self.want, self.got = transport, b"", None, 0

    def data_received(self, data):
        if self.want is None:
            self.head += data
            if len(self.head) < 8:
                return
            self.want = struct.unpack("!Q", self.head[:8])[0]
            self.got = len(self.head) - 8
            self.head = b""
        else:
            self.got += len(data)
        if self.got >= self.want:
            self.t.write(b"OK" + struct.pack("!Q", self.got))
            self.t.close()

    def eof_received(self):
        return None


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.t = transport

    def data_received(self, data):
        self.t.write(data)

    def eof_received(self):
        return None


async def backends(a):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)
    loop = asyncio.get_running_loop()
    for proto, port, tls in ((Sink, SINK, None), (Echo, ECHO, None), (Sink, SINK_TLS, ctx), (Echo, ECHO_TLS, ctx)):
        await loop.create_server(proto, "127.0.0.1", port, ssl=tls, backlog=4096, reuse_address=True)
    print("ready", flush=True)
    await asyncio.Event().wait()


# ------------------------------------------------------------------ load clients (LOAD_CPU)


def client_ctx(ca):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def stream(a):
    total = int(a.bytes)
    chunk = memoryview(os.urandom(CHUNK))
    s = socket.create_connection(("127.0.0.1", a.port), timeout=30)
    if a.sni:
        s = client_ctx(a.ca).wrap_socket(s, server_hostname=a.sni)
    t0 = time.perf_counter()
    s.sendall(struct.pack("!Q", total))
    left = total
    while left:
        n = min(left, len(chunk))
        s.sendall(chunk[:n])
        left -= n
    reply = b""
    while True:
        b = s.recv(64)
        if not b:
            break
        reply += b
    el = time.perf_counter() - t0
    s.close()
    got = struct.unpack("!Q", reply[2:10])[0] if len(reply) == 10 and reply[:2] == b"OK" else -1
    ok = got == total
    print(json.dumps({"bytes": total, "seconds": el, "mib_s": total / el / 2**20, "ok": ok, "received": got}))
    return 0 if ok else 1


async def conns_async(a):
    ctx = client_ctx(a.ca) if a.sni else None
    payload = os.urandom(PAYLOAD)
    todo = a.count
    done = errors = 0

    async def one():
        r, w = await asyncio.open_connection("127.0.0.1", a.port, ssl=ctx, server_hostname=a.sni or None)
        try:
            w.write(payload)
            back = await r.readexactly(len(payload))
            if back != payload:
                raise ValueError("echo differs")
        finally:
            w.close()
            await w.wait_closed()

    async def worker():
        nonlocal todo, done, errors
        while todo > 0:
            todo -= 1
            try:
                await asyncio.wait_for(one(), 30)
                done += 1
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, ssl.SSLError):
                errors += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(a.concurrency)))
    el = time.perf_counter() - t0
    print(json.dumps({"conns": done, "errors": errors, "seconds": el, "per_s": done / el, "ok": errors == 0}))
    return 0 if errors == 0 else 1


# ------------------------------------------------------------------ proxies (PROXY_CPU)


def gen_certs(d: Path):
    key, crt = d / "backend.key", d / "backend.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(crt), "-days", "2", "-subj", "/CN=l4 bench backend",
                    "-addext", f"subjectAltName=DNS:{SNI_SINK},DNS:{SNI_ECHO},IP:127.0.0.1"],
                   check=True, capture_output=True)
    return key, crt


def haproxy_conf(splice: bool):
    return f"""global
  nbthread 1
  maxconn 4000
defaults
  mode tcp
{"  option splice-auto" + chr(10) if splice else ""}  timeout connect 5s
  timeout client 50s
  timeout server 50s
frontend tcp_sink
  bind 127.0.0.1:{PX_SINK} backlog 4096
  default_backend sink
frontend tcp_echo
  bind 127.0.0.1:{PX_ECHO} backlog 4096
  default_backend echo
frontend tls
  bind 127.0.0.1:{PX_TLS} backlog 4096
  tcp-request inspect-delay 10s
  tcp-request content accept if {{ req_ssl_hello_type 1 }}
  use_backend sink_tls if {{ req_ssl_sni -i {SNI_SINK} }}
  use_backend echo_tls if {{ req_ssl_sni -i {SNI_ECHO} }}
backend sink
  server s 127.0.0.1:{SINK}
backend echo
  server e 127.0.0.1:{ECHO}
backend sink_tls
  server s 127.0.0.1:{SINK_TLS}
backend echo_tls
  server e 127.0.0.1:{ECHO_TLS}
"""


def portico_files(d: Path):
    conf = d / "portico.yaml"
    conf.write_text(f"""listenerSets:
  - name: default
    ingressClasses: [portico]
    http: ["127.0.0.1:{PX_HTTP}"]
    https: ["127.0.0.1:{PX_TLS}"]
admin: {{ address: "127.0.0.1:{PX_ADMIN}" }}
tcp:
  - name: sink
    listen: ["127.0.0.1:{PX_SINK}"]
    backends: ["127.0.0.1:{SINK}"]
    idleTimeout: 50s          # as HAProxy's timeout client/server
  - name: echo
    listen: ["127.0.0.1:{PX_ECHO}"]
    backends: ["127.0.0.1:{ECHO}"]
    idleTimeout: 50s
""")
    mdir = d / "manifests"
    mdir.mkdir(exist_ok=True)
    docs = []
    for name, host, port in (("sink", SNI_SINK, SINK_TLS), ("echo", SNI_ECHO, ECHO_TLS)):
        docs.append(f"""apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: bench}}
spec:
  ports: [{{name: https, port: 443}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: bench
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: https, port: {port}, protocol: TCP}}]
endpoints: [{{addresses: ["127.0.0.1"], conditions: {{ready: true}}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
  namespace: bench
  annotations: {{nginx.ingress.kubernetes.io/ssl-passthrough: "true"}}
spec:
  rules:
  - host: {host}
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: {name}, port: {{name: https}}}}}}}}
""")
    (mdir / "l4.yaml").write_text("---\n".join(docs))
    return conf, mdir


def start_proxy(peer, d: Path):
    if peer == "direct":
        return None
    if peer in ("haproxy", "haproxy_splice"):
        conf = d / f"{peer}.cfg"
        conf.write_text(haproxy_conf(peer == "haproxy_splice"))
        argv, extra = ["haproxy", "-db", "-f", str(conf)], None
    elif peer in ("portico", "portico_b"):
        conf, mdir = portico_files(d)
        argv = [PORTICO_BIN if peer == "portico" else PORTICO_B_BIN, "run", "--manifests", str(mdir), "--config", str(conf), "--workers", "1",
                "--access-log", "off"]
        extra = {"RUST_LOG": "info" if L4_LOG else "info,portico::l4=warn"}
    else:
        raise SystemExit(f"unknown peer {peer}")
    return H.start_pinned(H.PROXY_CPU, d / f"{peer}.log", argv, cwd=d, extra_env=extra)


def ports(peer):
    """(tcp sink, tcp echo, tls sink, tls echo) the client connects to."""
    if peer == "direct":
        return SINK, ECHO, SINK_TLS, ECHO_TLS
    return PX_SINK, PX_ECHO, PX_TLS, PX_TLS


def client_argv(peer, test, ca, count=None, gib=None):
    sink, echo, tsink, techo = ports(peer)
    me = [sys.executable, str(Path(__file__).resolve())]
    if test == "tcp_stream":
        return [*me, "stream", "--port", str(sink), "--bytes", str(int((gib or STREAM_GIB) * 2**30))]
    if test == "tls_stream":
        return [*me, "stream", "--port", str(tsink), "--bytes", str(int((gib or TLS_STREAM_GIB) * 2**30)),
                "--sni", SNI_SINK, "--ca", str(ca)]
    if test == "tcp_conns":
        return [*me, "conns", "--port", str(echo), "--count", str(count or CONNS), "--concurrency", str(CONCURRENCY)]
    if test == "tls_conns":
        return [*me, "conns", "--port", str(techo), "--count", str(count or TLS_CONNS), "--concurrency",
                str(CONCURRENCY), "--sni", SNI_ECHO, "--ca", str(ca)]
    raise SystemExit(f"unknown test {test}")


def run_client(argv, out: Path):
    """Runs a load client pinned to LOAD_CPU; returns (its JSON line, its CPU seconds)."""
    cmd = ["nice", "-n", H.NICE, "taskset", "-c", str(H.LOAD_CPU), "timeout", str(LOAD_TIMEOUT), *argv]
    with open(out, "w") as o, open(str(out) + ".err", "w") as e:
        p = subprocess.Popen(cmd, stdout=o, stderr=e, stdin=subprocess.DEVNULL)
        H.started.append(p)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    try:
        res = json.loads(out.read_text().strip().splitlines()[-1])
    except (ValueError, IndexError):
        res = {"ok": False, "error": (Path(str(out) + ".err").read_text()[-400:] or "no output")}
    return res, ru.ru_utime + ru.ru_stime


def wait_ready(peer, ca, d: Path, proc, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        good = True
        for test in ("tcp_conns", "tls_conns"):
            res, _ = run_client(client_argv(peer, test, ca, count=1), d / "ready.json")
            good = good and res.get("ok", False)
        if good:
            return True
        time.sleep(0.3)
    return False


def measure(peer, test, proxy, backend_pid, ksoft, ca, d: Path):
    ppids = H.tree(proxy.pid) if proxy else []
    p0, bk0, k0, c0, t0 = H.tree_ticks(ppids), H.proc_ticks(backend_pid), H.tree_ticks(ksoft), H.core_ticks(), time.time()
    res, client_cpu = run_client(client_argv(peer, test, ca), d / f"{peer}-{test}.json")
    t1 = time.time()
    p1, bk1, k1, c1 = H.tree_ticks(H.tree(proxy.pid) if proxy else []), H.proc_ticks(backend_pid), H.tree_ticks(ksoft), \
        H.core_ticks()
    el = t1 - t0
    proxy_s = (p1 - p0) / H.CLK_TCK
    backend_s = (bk1 - bk0) / H.CLK_TCK
    busy = sum(c1[c][0] - c0[c][0] for c in c0) / H.CLK_TCK
    foreign = max(0.0, busy - proxy_s - backend_s - client_cpu - (k1 - k0) / H.CLK_TCK) / el
    core = (c1[H.PROXY_CPU][0] - c0[H.PROXY_CPU][0]) / H.CLK_TCK
    r = {"peer": peer, "test": test, "ok": res.get("ok", False), "client": res, "proxy_cpu_s": proxy_s,
         "backend_cpu_s": backend_s, "client_cpu_s": client_cpu, "elapsed_s": el, "foreign_cores": foreign,
         "proxy_core_other_s": max(0.0, core - proxy_s)}
    if test.endswith("stream") and res.get("ok"):
        gib = res["bytes"] / 2**30
        r.update(gib=gib, mib_s=res["mib_s"], cpu_s_per_gib=proxy_s / gib, load_cpu_s_per_gib=(backend_s + client_cpu) / gib)
    elif res.get("ok"):
        k = res["conns"] / 1000
        r.update(conns=res["conns"], per_s=res["per_s"], cpu_ms_per_1k=proxy_s * 1000 / k,
                 load_cpu_ms_per_1k=(backend_s + client_cpu) * 1000 / k)
    return r


def summary(r):
    if not r["ok"]:
        return f"FAILED {r['client']}"
    fr = f"foreign {r['foreign_cores']:.2f}"
    if "cpu_s_per_gib" in r:
        return f"{r['cpu_s_per_gib']:.3f} CPU-s/GiB, {r['mib_s']:,.0f} MiB/s, {fr}"
    return f"{r['cpu_ms_per_1k']:.1f} CPU-ms/1k conns, {r['per_s']:,.0f} conns/s, {fr}"


# ------------------------------------------------------------------ report


def fmt(v, nd):
    return "—" if v is None else f"{v:,.{nd}f}"


def report(rows, envtxt):
    out = ["# Layer-4 benchmark (bench/l4.sh)", "", "```", envtxt.rstrip(), "```", ""]
    heads = [("tcp_stream", "cpu_s_per_gib", "TCP: proxy CPU-s / GiB", 3), ("tcp_stream", "mib_s", "TCP: MiB/s", 0),
             ("tcp_conns", "cpu_ms_per_1k", "TCP: proxy CPU-ms / 1k conns", 1),
             ("tcp_conns", "per_s", "TCP: conns/s", 0),
             ("tls_stream", "cpu_s_per_gib", "TLS passthrough: proxy CPU-s / GiB", 3),
             ("tls_stream", "mib_s", "TLS passthrough: MiB/s", 0),
             ("tls_conns", "cpu_ms_per_1k", "TLS passthrough: proxy CPU-ms / 1k conns", 1),
             ("tls_conns", "per_s", "TLS passthrough: conns/s", 0)]
    peers = [p for p in PEERS if any(r["peer"] == p for r in rows)]
    rounds = sorted({r["round"] for r in rows})
    out.append("Per round, then the mean over rounds; `—`: failed or not run. `direct` has no proxy: its rows "
               "show the load side's rate (the floor).")
    out.append("")
    out.append("| figure | " + " | ".join(peers) + (" | Portico / HAProxy |" if {"portico", "haproxy"} <= set(peers)
                                                      else " |"))
    out.append("|---" * (len(peers) + 1 + ({"portico", "haproxy"} <= set(peers))) + "|")
    for test, key, title, nd in heads:
        if test not in TESTS:
            continue
        means = {}
        for rd in rounds:
            cells = []
            for p in peers:
                v = next((r.get(key) for r in rows if r["peer"] == p and r["test"] == test and r["round"] == rd), None)
                if p == "direct" and key.startswith("cpu"):
                    v = None
                cells.append(fmt(v, nd))
            out.append(f"| {title}, round {rd} | " + " | ".join(cells) + (" | |" if {"portico", "haproxy"} <= set(peers) else " |"))
        for p in peers:
            vs = [r.get(key) for r in rows if r["peer"] == p and r["test"] == test and r.get(key) is not None]
            means[p] = sum(vs) / len(vs) if vs and not (p == "direct" and key.startswith("cpu")) else None
        ratio = ""
        if {"portico", "haproxy"} <= set(peers):
            a, b = means.get("portico"), means.get("haproxy")
            ratio = f" | **{a / b:.2f}x** |" if a and b else " | — |"
        out.append(f"| **{title}, mean** | " + " | ".join(f"**{fmt(means[p], nd)}**" for p in peers) + (ratio or " |"))
    worst = max((r["foreign_cores"] for r in rows), default=0)
    out += ["", f"Foreign CPU (other processes on the two bench cores) at most {worst:.2f} cores in any window.", ""]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------ callgrind dump: functions by own cost


def self_cost(path, n, top=30):
    """Prints the functions of a callgrind dump by their own (exclusive) instructions, per unit of `n`."""
    import collections
    import re

    names, cost, cur, after_call = {}, collections.Counter(), None, False

    def name(ref):
        m = re.match(r"\((\d+)\)(?: (.*))?", ref)
        if m.group(2):
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), m.group(1))

    for line in open(path):
        if line.startswith("fn="):
            cur, after_call = name(line[3:].strip()), False
        elif line.startswith("cfn="):
            name(line[4:].strip())
        elif line.startswith("calls="):
            after_call = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            parts = line.split()
            if len(parts) >= 2:
                if after_call:
                    after_call = False  # the callee's inclusive cost, not this function's own
                else:
                    cost[cur] += int(parts[1])
    total = sum(cost.values())
    print(f"{total:,} instructions, {total / n:,.0f} per unit")
    for f, v in cost.most_common(top):
        print(f"{v / n:10,.0f} {100 * v / total:5.1f}%  {f[:150]}")


# ------------------------------------------------------------------ main


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix="portico-l4bench."))
    t_start = time.time()
    key, ca = gen_certs(d)
    rev = H.tool_version(["git", "-C", str(REPO), "describe", "--always", "--dirty"])
    envtxt = "".join(f"{k}: {v}\n" for k, v in [
        ("date", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
        ("kernel", os.uname().release),
        ("load average at start", open("/proc/loadavg").read().strip()),
        ("portico", f"{PORTICO_BIN} (tree {rev})" + (f", portico_b: {PORTICO_B_BIN}" if "portico_b" in PEERS else "")),
        ("haproxy", H.tool_version(["haproxy", "-v"])),
        ("python", sys.version.split()[0]),
        ("settings", f"peers={' '.join(PEERS)} rounds={ROUNDS} stream={STREAM_GIB} GiB tls_stream={TLS_STREAM_GIB} GiB "
                     f"conns={CONNS} tls_conns={TLS_CONNS} concurrency={CONCURRENCY} payload={PAYLOAD} B "
                     f"chunk={CHUNK} proxy_cpu={H.PROXY_CPU} load_cpu={H.LOAD_CPU} nice={H.NICE} l4_log={int(L4_LOG)}"),
    ])
    (OUT / "env.txt").write_text(envtxt)
    log(f"results -> {OUT}")
    ksoft = H.ksoftirqd_pids()
    backend = H.start_pinned(H.LOAD_CPU, d / "backend.log",
                             [sys.executable, str(Path(__file__).resolve()), "backend", "--cert", str(ca), "--key",
                              str(key)])
    rows = []
    try:
        deadline = time.time() + 20
        while "ready" not in (d / "backend.log").read_text():
            if time.time() > deadline or backend.poll() is not None:
                raise SystemExit(f"backends did not start: {(d / 'backend.log').read_text()[-500:]}")
            time.sleep(0.1)
        for rd in range(1, ROUNDS + 1):
            order = PEERS if rd % 2 else list(reversed(PEERS))
            for peer in order:
                log(f"round {rd}: {peer}")
                proxy = start_proxy(peer, d)
                try:
                    if not wait_ready(peer, ca, d, proxy):
                        log(f"   {peer} not ready; see {d}/{peer}.log")
                        continue
                    # warm-up: a short stream and a few connections each way
                    for test in TESTS:
                        argv = client_argv(peer, test, ca, count=200, gib=0.0625)
                        run_client(argv, d / "warmup.json")
                    for test in TESTS:
                        r = measure(peer, test, proxy, backend.pid, ksoft, ca, d)
                        r["round"] = rd
                        rows.append(r)
                        with open(OUT / "results.jsonl", "a") as f:
                            f.write(json.dumps(r) + "\n")
                        log(f"   {test:<10} {summary(r)}")
                finally:
                    H.stop(proxy)
                    time.sleep(0.5)
    finally:
        H.stop(backend)
        for p in H.started:
            H.stop(p)
        for f in d.glob("*.log"):
            shutil.copy(f, OUT / f.name)
        shutil.rmtree(d, ignore_errors=True)
    envtxt += f"wall time: {time.time() - t_start:.0f} s\n"
    (OUT / "env.txt").write_text(envtxt)
    rep = report(rows, envtxt)
    (OUT / "report.md").write_text(rep)
    print(rep)


def cli():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    sub.add_parser("run")
    b = sub.add_parser("backend")
    b.add_argument("--cert", required=True)
    b.add_argument("--key", required=True)
    s = sub.add_parser("stream")
    c = sub.add_parser("conns")
    for p in (s, c):
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--sni")
        p.add_argument("--ca")
    s.add_argument("--bytes", required=True)
    c.add_argument("--count", type=int, required=True)
    c.add_argument("--concurrency", type=int, default=CONCURRENCY)
    r = sub.add_parser("report")
    r.add_argument("dir")
    sc = sub.add_parser("self")
    sc.add_argument("dump")
    sc.add_argument("n", type=int)
    a = ap.parse_args()
    if a.cmd == "backend":
        asyncio.run(backends(a))
    elif a.cmd == "stream":
        sys.exit(stream(a))
    elif a.cmd == "conns":
        sys.exit(asyncio.run(conns_async(a)))
    elif a.cmd == "self":
        self_cost(a.dump, a.n)
    elif a.cmd == "report":
        rows = [json.loads(x) for x in open(Path(a.dir) / "results.jsonl")]
        print(report(rows, (Path(a.dir) / "env.txt").read_text()))
    else:
        main()


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    cli()
