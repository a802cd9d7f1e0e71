#!/usr/bin/env python3
"""Two callgrind dumps compared per crate: every function's own cost, summed by the crate its name (or its source
file) belongs to, per request. Used for issue 21's "where the gap is" figures (docs/performance.md):

    python3 bench/cg_groups.py A.out.1 REQUESTS_A B.out.1 REQUESTS_B

e.g. a keep-alive and a new-connection dump of one `bench/run.sh` run (bench/results/<run>/ir/portico/<scenario>/,
requests from ir.jsonl's parsed_requests or requests). Thread roots, which callgrind_annotate lists with the
whole program's cost, are left out. Prints A, B and B - A per group, largest difference first.
"""

import collections
import re
import subprocess
import sys

TLS = {"ring", "rustls", "aws_lc_rs", "tokio_rustls"}


def group(fl, fn):
    if "malloc" in fl or "arena.c" in fl or "__rust_alloc" in fn or "__rust_dealloc" in fn:
        return "malloc/free"
    if any(k in fl for k in ("memmove", "memset", "memcmp", "memchr")):
        return "mem* (copies)"
    m = re.search(r"index\.crates\.io-[0-9a-f]+/([a-zA-Z_\-]+?)-\d", fl)
    if m:
        key = m.group(1).replace("-", "_")
    elif "/rustc/" in fl or fl == "???":
        # Without line tables (a release build) or inlined from std: the crate of the function's path.
        name = fn.lstrip("<")
        key = name.split("::")[0]
        if key in ("core", "alloc", "std"):
            m = re.search(r"(h2|hyper|http|tokio|rustls|portico|bytes|tracing|httparse)::", name)
            key = m.group(1) if m else key
    elif "/src/" in fl:
        key = "portico"
    else:
        key = "other: " + fl.rsplit("/", 1)[-1][:25]
    return "TLS (rustls, ring)" if key in TLS or key.startswith("ring_core") else key


def load(path, requests):
    out = subprocess.run(["callgrind_annotate", "--auto=no", "--threshold=100", "--inclusive=no", path],
                         capture_output=True, text=True, check=True).stdout
    rows, total = [], None
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)$", line)
        if not m:
            continue
        cost, name = int(m.group(1).replace(",", "")), re.sub(r"\s*\[.*\]$", "", m.group(2))
        if "PROGRAM TOTALS" in name:
            total = cost
        else:
            rows.append((cost, name))
    groups = collections.Counter()
    for cost, name in rows:
        if total and cost > total / 2:
            continue
        fl, _, fn = name.partition(":")
        groups[group(fl, fn)] += cost / requests
    return groups


def main():
    a, b = load(sys.argv[1], float(sys.argv[2])), load(sys.argv[3], float(sys.argv[4]))
    for k in sorted(set(a) | set(b), key=lambda k: -(b.get(k, 0) - a.get(k, 0))):
        if abs(b.get(k, 0) - a.get(k, 0)) < 150 and b.get(k, 0) < 500:
            continue
        print(f"{a.get(k, 0):9.0f} {b.get(k, 0):9.0f} {b.get(k, 0) - a.get(k, 0):+9.0f}  {k}")
    print(f"{sum(a.values()):9.0f} {sum(b.values()):9.0f}  (all)")


if __name__ == "__main__":
    main()
