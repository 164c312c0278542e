"""How long ``GET /health`` waits while 1,000-request ``authorize`` batches keep the server busy.

    .venv/bin/python bench/loop.py [--json] [--duration 5] [--batchers 2]

A ``cedarkey serve`` on a fresh data dir, with a caller whose role has a few rules. ``--batchers``
clients each send batches of 1,000 never-asked paths back to back (every decision evaluated, none from the
memo) while one client times ``/health`` every 10 ms; the same probe runs first against the idle server,
the baseline. Large batches are decided a slice at a time with the event loop free in between
(``cedarkey.server.commands.decisions``), so a short request waits for a slice, not for a batch.

Prints ``/health`` p50/p99 idle and under batches (ms), their ratio, and the batches' decisions per second;
``--json`` prints one object.
"""

from __future__ import annotations

import sys

sys.path.append(sys.path.pop(0))  # bench/ at the end: its http.py must not shadow the standard library's

import argparse
import json
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
from support import CEDARKEY, HOST, admin_token, arguments, call, free_port, serving

BATCH = 1000


def caller(url: str, admin: dict[str, str]) -> str:
    with httpx.Client(base_url=url, timeout=30) as http:
        t = admin_token(http, admin)
        created = call(http, "create-auth-method", t, name="/loop/app")
        call(http, "create-role", t, name="/loop/readers")
        call(http, "assoc-role-am", t, role_name="/loop/readers", am_name="/loop/app")
        for path, caps in (("/loop/*", ["read", "list"]), ("/loop/secret/*", ["deny"]), ("/other/*", ["read"])):
            call(http, "set-role-rule", t, role_name="/loop/readers", path=path, capability=caps)
        answer = call(
            http, "auth", access_type="access_key", access_id=created["access-id"], access_key=created["access-key"]
        )
        return str(answer["token"])


def probe(url: str, seconds: float) -> list[float]:
    """``/health`` latencies (ms), one call every 10 ms for ``seconds``."""
    out: list[float] = []
    with httpx.Client(base_url=url, timeout=30) as http:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            start = time.perf_counter()
            http.get("/health")
            out.append((time.perf_counter() - start) * 1000)
            time.sleep(0.01)
    return out


def batches(url: str, token: str, stop: threading.Event, counts: list[int], seed: int) -> None:
    n = 0
    with httpx.Client(base_url=url, timeout=60) as http:
        while not stop.is_set():
            requests = [{"path": f"/loop/{seed}/{n}/{i}", "capability": "read"} for i in range(BATCH)]
            call(http, "authorize", token, requests=requests)
            counts[seed] += BATCH
            n += 1


def quantiles(values: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(values, n=100)
    return round(cuts[49], 2), round(cuts[98], 2)


def main() -> None:
    parser: argparse.ArgumentParser = arguments(__doc__)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of each measurement (default 5)")
    parser.add_argument("--batchers", type=int, default=2, help="clients sending batches at once (default 2)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data, port = Path(tmp) / "data", free_port()
        init = subprocess.run([CEDARKEY, "init", "--data-dir", str(data)], capture_output=True, check=True)
        admin = json.loads(init.stdout)
        url = f"http://{HOST}:{port}"
        with serving([CEDARKEY, "serve", "--data-dir", str(data), "--port", str(port)], url, Path(tmp) / "log"):
            token = caller(url, admin)
            idle = probe(url, args.duration)
            stop, counts = threading.Event(), [0] * args.batchers
            workers = [
                threading.Thread(target=batches, args=(url, token, stop, counts, k)) for k in range(args.batchers)
            ]
            for w in workers:
                w.start()
            time.sleep(0.5)
            start, before = time.monotonic(), sum(counts)
            busy = probe(url, args.duration)
            rate = (sum(counts) - before) / (time.monotonic() - start)
            stop.set()
            for w in workers:
                w.join()
    (idle50, idle99), (busy50, busy99) = quantiles(idle), quantiles(busy)
    out = {
        "health_idle_p50_ms": idle50,
        "health_idle_p99_ms": idle99,
        "health_busy_p50_ms": busy50,
        "health_busy_p99_ms": busy99,
        "busy_vs_idle_p50": round(busy50 / idle50, 1),
        "batch_decisions_per_s": round(rate),
        "batchers": args.batchers,
    }
    if args.json:
        print(json.dumps(out))
        return
    print(f"/health idle: p50 {idle50} ms, p99 {idle99} ms")
    print(f"/health under {args.batchers} batch clients: p50 {busy50} ms, p99 {busy99} ms ({out['busy_vs_idle_p50']}x)")
    print(f"batch decisions/s meanwhile: {out['batch_decisions_per_s']:,}")


if __name__ == "__main__":
    main()
