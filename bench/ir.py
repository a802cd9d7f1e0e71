#!/usr/bin/env python3
"""Instructions per request (callgrind) for Portico alone: harness.py's measure_ir on the scenarios given, without
the load-generator windows (so only nginx, wrk and valgrind are needed, not oha). Compare two builds by copying
each release binary out of target/ and alternating them:

    cargo build --release && cp target/release/portico /tmp/portico-NEW
    PORTICO_BIN=/tmp/portico-NEW IR_WINDOW=3 NICE=0 python3 bench/ir.py h1_keepalive h1_close body_1m

Prints one JSON line per scenario (ir_per_req is the figure); dumps under OUT (default bench/results/<time>/).
The same binary varies by about 1-3 % from run to run: compare medians of a few alternated runs.
"""

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as H  # noqa: E402


def main():
    scenarios = sys.argv[1:] or ["h1_keepalive"]
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
            r = H.measure_ir(fx, "portico", sc, origin)
            r.pop("dumps", None)
            print(json.dumps(r), flush=True)
    finally:
        H.stop(origin)
        for p in H.started:
            H.stop(p)
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
