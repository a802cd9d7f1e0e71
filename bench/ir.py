#!/usr/bin/env python3
"""Instructions per request (callgrind) for Portico alone: harness.py's measure_ir on the scenarios given, without
the load-generator windows (so only nginx, wrk and valgrind are needed, not oha). Compare two builds by copying
each release binary out of target/ and alternating them:

    cargo build --release && cp target/release/portico /tmp/portico-NEW
    PORTICO_BIN=/tmp/portico-NEW IR_WINDOW=3 NICE=0 python3 bench/ir.py h1_keepalive h1_close body_1m

Prints one JSON line per scenario (with --table: a markdown table on stdout, the JSON lines on stderr); dumps
under OUT (default bench/results/<time>/). ir_per_req divides by the
requests counted around the window, and the same binary varies by about 1-3 % from run to run with it;
ir_per_parsed_req (HTTP/1.1 scenarios) divides by the request heads Portico parsed inside the window, as
callgrind counted them, which removes that counting error; what remains is the window's fixed costs (timers, the
file source's polling) spread over more or fewer requests. Compare medians of a few alternated runs.

Per-filter scenarios (keep-alive HTTP/1.1, one Ingress whose only difference is the filter's annotations; requests
counted by Portico's own portico_requests_total, since some never reach the origin):

    PORTICO_BIN=/tmp/portico-NEW IR_WINDOW=3 NICE=0 python3 bench/ir.py f_none f_basic f_fwd_cached f_fwd \
        f_cors_preflight f_cors_simple f_ratelimit f_deny f_regex f_rewrite f_404 f_errpage

f_none is h1_keepalive's shape through the filter scenarios' harness (the baseline for the others); f_404 is a
route without error pages whose origin answers 404, the baseline for f_errpage (the same 404 replaced by the
error backend's page, the error backend being the origin again).
"""

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as H  # noqa: E402


# The users file of f_basic: user `bench`, password `bench` (apr1-MD5, `openssl passwd -apr1 -salt benchslt bench`).
BASIC = "Basic YmVuY2g6YmVuY2g="
ORIGIN_URL = f"http://127.0.0.1:{H.ORIGIN_PORT}"

# scenario: (annotations, extra wrk headers, method, path)
FILTERS = {
    "f_none": ({}, [], "GET", "/"),
    "f_basic": ({"nginx.ingress.kubernetes.io/auth-type": "basic",
                 "nginx.ingress.kubernetes.io/auth-secret": "bench-users"}, [f"Authorization: {BASIC}"], "GET", "/"),
    "f_fwd_cached": ({"nginx.ingress.kubernetes.io/auth-url": f"{ORIGIN_URL}/",
                      "nginx.ingress.kubernetes.io/auth-cache-key": "$http_authorization",
                      "nginx.ingress.kubernetes.io/auth-cache-duration": "200 5m"},
                     [f"Authorization: {BASIC}"], "GET", "/"),
    "f_fwd": ({"nginx.ingress.kubernetes.io/auth-url": f"{ORIGIN_URL}/"}, [f"Authorization: {BASIC}"], "GET", "/"),
    "f_cors_preflight": ({"nginx.ingress.kubernetes.io/enable-cors": "true",
                          "nginx.ingress.kubernetes.io/cors-allow-origin": "https://app.example"},
                         ["Origin: https://app.example", "Access-Control-Request-Method: PUT"], "OPTIONS", "/"),
    "f_cors_simple": ({"nginx.ingress.kubernetes.io/enable-cors": "true",
                       "nginx.ingress.kubernetes.io/cors-allow-origin": "https://app.example"},
                      ["Origin: https://app.example"], "GET", "/"),
    # A limit the load never reaches: the cost of the bucket per request.
    "f_ratelimit": ({"nginx.ingress.kubernetes.io/limit-rps": "10000000"}, [], "GET", "/"),
    "f_deny": ({"nginx.ingress.kubernetes.io/denylist-source-range": "10.0.0.0/8, 192.168.0.0/16"}, [], "GET", "/"),
    # Regex paths (use-regex, issue #16): three ImplementationSpecific patterns, the request matching the last.
    "f_regex": ({"nginx.ingress.kubernetes.io/use-regex": "true"}, [], "GET", "/"),
    # A regex path with a capture rewritten (rewrite-target): /app/ reaches the origin as /.
    "f_rewrite": ({"nginx.ingress.kubernetes.io/use-regex": "true",
                   "nginx.ingress.kubernetes.io/rewrite-target": "/$2"}, [], "GET", "/app/"),
    "f_404": ({}, [], "GET", "/missing"),
    "f_errpage": ({"nginx.ingress.kubernetes.io/custom-http-errors": "404",
                   "nginx.ingress.kubernetes.io/default-backend": "origin"}, [], "GET", "/missing"),
}


# The rule's paths where a scenario needs others than one `/` Prefix path: (path, pathType).
PATHS = {
    "f_regex": [("/api/v[0-9]+/users", "ImplementationSpecific"),
                ("/static/.+[.](css|js)", "ImplementationSpecific"),
                ("/[a-z0-9]*", "ImplementationSpecific")],
    "f_rewrite": [("/app(/|$)(.*)", "ImplementationSpecific")],
}


def filter_manifests(sc, mdir: Path):
    import base64
    annotations, _, _, _ = FILTERS[sc]
    mdir.mkdir(parents=True, exist_ok=True)
    users = base64.b64encode(b"bench:$apr1$benchslt$xg8nhdNCXN8cv7mXxgHvB0\n").decode()
    notes = "".join(f"\n    {k}: {json.dumps(v)}" for k, v in annotations.items())
    notes = f"\n  annotations:{notes}" if notes else ""
    paths = "".join(f"""
      - path: {json.dumps(path)}
        pathType: {kind}
        backend: {{service: {{name: origin, port: {{name: http}}}}}}"""
                    for path, kind in PATHS.get(sc, [("/", "Prefix")]))
    (mdir / "all.yaml").write_text(H.origin_manifests() + f"""---
apiVersion: v1
kind: Secret
metadata: {{name: bench-users, namespace: bench}}
type: Opaque
data: {{auth: {users}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: ing-filter
  namespace: bench{notes}
spec:
  rules:
  - host: {{host}}
    http:
      paths:{paths}
""")


def portico_requests():
    """Requests Portico answered (portico_requests_total summed), from its admin listener."""
    _, body = H.http_get(H.ADMIN_PORT, "admin", "/metrics")
    total = 0
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("portico_requests_total{"):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def measure_filter(fx, sc, origin):
    """measure_ir's window for one filter scenario: Portico under callgrind, wrk at saturation, 64 keep-alive
    connections; requests counted by Portico itself."""
    import re
    import subprocess
    import threading
    import time

    annotations, headers, method, path = FILTERS[sc]
    d = H.OUT / "ir" / "portico" / sc
    d.mkdir(parents=True, exist_ok=True)
    host = fx.hosts_for("h1_keepalive").read_text().split()[0]
    mdir = d / "manifests"
    if mdir.exists():
        shutil.rmtree(mdir)
    filter_manifests(sc, mdir)
    text = (mdir / "all.yaml").read_text().replace("{host}", host)
    (mdir / "all.yaml").write_text(text)
    conf = d / "portico.yaml"
    H.portico_config(conf, False, fx)
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={d}/cg.%p.out", H.PORTICO_BIN, "run",
            "--manifests", str(mdir), "--config", str(conf), "--workers", "1", "--access-log", "off"]
    proc = H.start_pinned(H.PROXY_CPU, d / f"{sc}-vg.log", argv, cwd=d)
    try:
        # Ready: the admin listener answers and the route exists (any answer but 404 for the scenario's path, or for
        # / where the scenario asks for a 404).
        ready_path = "/" if path == "/missing" else path
        deadline = time.time() + 240
        while time.time() < deadline:
            st, _ = H.http_get(H.PX_PORT, host, ready_path)
            if st is not None and st != 404:
                break
            if proc.poll() is not None:
                return {"peer": "portico", "scenario": sc, "failed": f"portico exited; see {d}"}
            time.sleep(0.5)
        else:
            return {"peer": "portico", "scenario": sc, "failed": f"not ready; see {d}"}
        script = d / "method.lua"
        script.write_text(f'wrk.method = "{method}"\n')
        extra = []
        for h in [f"Host: {host}", *headers]:
            extra += ["-H", h]
        total = H.IR_WINDOW + 3 + 5
        load = ["wrk", "-t1", "-c64", f"-d{total}s", "--latency", "--timeout", "5s", "-s", str(script), *extra,
                f"http://127.0.0.1:{H.PX_PORT}{path}"]
        th = threading.Thread(target=H.run_load, args=(load, d / "load.txt", total))
        th.start()
        time.sleep(3)
        r0 = portico_requests()
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True)
        time.sleep(H.IR_WINDOW)
        r1 = portico_requests()
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True)
        th.join()
    finally:
        H.stop(proc)
    ir, dumps = H.window_ir(d)
    reqs = r1 - r0
    status = None
    lt = (d / "load.txt").read_text(errors="replace") if (d / "load.txt").exists() else ""
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", lt)
    if m:
        status = f"{m.group(1)} non-2xx/3xx"
    return {"peer": "portico", "scenario": sc, "ir": ir, "requests": reqs,
            "ir_per_req": ir / reqs if reqs > 0 else None, "note": status, **H.parsed_ir(ir, dumps)}


# What each feature scenario is compared with: the same shape without the feature.
BASELINE = {sc: "f_none" for sc in FILTERS}
BASELINE.update({"f_none": None, "f_404": None, "f_errpage": "f_404"})


def table(results):
    """The feature scenarios as a markdown table: instructions per request and the cost over the baseline."""
    by = {r["scenario"]: r for r in results}
    print("| scenario | instr / req | over its baseline | requests in the window | note |")
    print("|---|---|---|---|---|")
    for r in results:
        sc = r["scenario"]
        ir = r.get("ir_per_parsed_req") or r.get("ir_per_req")
        if ir is None:
            print(f"| {sc} | failed | | | {r.get('failed', '')} |")
            continue
        base = by.get(BASELINE.get(sc) or "", {})
        base_ir = base.get("ir_per_parsed_req") or base.get("ir_per_req")
        over = f"{ir - base_ir:+,.0f} vs {BASELINE[sc]}" if base_ir else "(baseline)"
        print(f"| {sc} | {ir:,.0f} | {over} | {r.get('requests', '')} | {r.get('note') or ''} |")


def main():
    args = sys.argv[1:]
    markdown = "--table" in args
    scenarios = [a for a in args if a != "--table"] or ["h1_keepalive"]
    results = []
    H.OUT.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="portico-ir."))
    os.chmod(run_dir, 0o755)  # nginx workers read www/
    fx = H.Fixtures(run_dir)
    conf = run_dir / "origin.conf"
    conf.write_text(H.origin_conf(fx, "origin", H.ORIGIN_PORT, H.ORIGIN_PORT + 1000))
    origin = H.start_pinned(H.LOAD_CPU, run_dir / "origin.log",
                            ["nginx", "-e", str(run_dir / "origin-error.log"), "-c", str(conf), "-g", "daemon off;"])
    try:
        if not H.wait_ready(H.ORIGIN_PORT, "origin", False, 30, origin):
            raise SystemExit("origin did not start")
        for sc in scenarios:
            if sc in FILTERS:
                r = measure_filter(fx, sc, origin)
            else:
                r = H.measure_ir(fx, "portico", sc, origin)
                r.pop("dumps", None)
            results.append(r)
            print(json.dumps(r), file=sys.stderr if markdown else sys.stdout, flush=True)
    finally:
        H.stop(origin)
        for p in H.started:
            H.stop(p)
        shutil.rmtree(run_dir, ignore_errors=True)
    if markdown:
        table(results)


if __name__ == "__main__":
    main()
