"""Two ``cedarkey serve`` nodes on one PostgreSQL database: how fast a rule change made through one node is
decided by the other, and how many decisions per second both nodes answer together against one alone.

    .venv/bin/python bench/cluster.py [--json] [--changes 100] [--duration 5] [--connections 16]
                                      [--generator auto|wrk|python] [--postgres URL]

What runs, all on loopback:

- a fresh database on the PostgreSQL server (``--postgres``, else ``$CEDARKEY_TEST_POSTGRES``, else
  ``postgresql://root@127.0.0.1:5432/postgres``), made by this script and dropped at the end (failures and
  Ctrl-C included); ``cedarkey init --database-url`` on it, then two ``cedarkey serve`` nodes (one uvicorn
  worker each) with the same ``CEDARKEY_MASTER_KEY`` and ``--server-id``, as ``tests/test_cluster.py`` runs
  them;
- a small realistic model made through node A: an access-key caller whose roles hold a dozen rules of every
  rule type, and one more role of its own whose rule on ``/prop/*`` the propagation run rewrites. The
  caller's token is obtained with ``auth``.

Measured:

1. Propagation: ``--changes`` times, ``set-role-rule`` through node A's HTTP API, alternating ``read``
   (allowed) and ``deny`` on ``/prop/*``; after each, node B's ``POST /authorize`` for the caller is polled
   every ``--poll-ms`` (2 ms) until its decision for ``read /prop/x`` reflects the change (``--timeout`` 5 s).
   Latency = from the moment A's 200 answer is read to the moment B's first reflecting answer is read (so
   it includes one loopback round trip to B: ``poll_rtt_p50_ms`` tells how long one is). p50/p99/max.
2. Throughput: single-request ``POST /authorize`` calls (each call one request, the calls cycling through
   1,000 distinct requests, allowed and denied ones) from the load generator of ``bench/load.py`` (``wrk``
   when installed, else its asyncio client) against node A alone, then against A and B at
   once: one generator process per node, each with ``--connections`` keep-alive connections, the same
   duration and warm-up; the two rates summed. Interleaved rounds (one node, two nodes, again...); the best
   of each kind counts. ``two_vs_one`` = two nodes / one node. Every process (both nodes, both generators)
   shares the machine's cores: on a 2-CPU machine the ratio is expected near 1 or below, since one node
   and its generator already keep both cores busy.
"""

from __future__ import annotations

import os
import sys

# This file sits next to bench/http.py: run as a script, its folder would come first on sys.path and that
# file would shadow the standard library's ``http`` package (which uvicorn, httpx and urllib import).
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path.append(sys.path.pop(0))  # behind the standard library: ``import support`` still finds bench/

import argparse
import base64
import importlib.util
import json
import math
import secrets
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from load import make_load, run_load
from support import CEDARKEY, HOST, admin_token, arguments, call, free_port, start, stop, tail, wait_healthy

HERE = Path(__file__).resolve()
PYTHON = sys.executable
SERVER_ID = "bench-cluster"
DEFAULT_POSTGRES = os.environ.get("CEDARKEY_TEST_POSTGRES", "postgresql://root@127.0.0.1:5432/postgres")
BATCH = 1000
PROP_ROLE = "/bench/prop"
PROP_RULE_PATH = "/prop/*"
PROP_REQUEST = {"path": "/prop/x", "capability": "read"}


def _sibling(name: str) -> Any:
    """A script beside this one, as a module (bench/http.py cannot be imported as ``http``: the stdlib's)."""
    spec = importlib.util.spec_from_file_location(f"cedarkey_bench_{name}", HERE.with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: bench/http.py: its model and its requests serve here too.
bench_http = _sibling("http")


# --- database and nodes ----------------------------------------------------------------------------------


@contextmanager
def fresh_database(server: str) -> Iterator[str]:
    """Yields the URL of a new empty database on ``server``, dropped afterwards (whatever happened)."""
    import psycopg

    name = f"cedarkey_bench_{secrets.token_hex(6)}"
    with psycopg.connect(server, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # a name made here, not input
    try:
        yield server.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(server, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Node:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        stop(self.process)


def start_node(stack: ExitStack, name: str, data_dir: Path, database_url: str, env: dict[str, str]) -> Node:
    """``cedarkey serve`` on the shared database; stopped when ``stack`` closes. Not yet waited for."""
    port = free_port()
    cmd = [
        CEDARKEY,
        "serve",
        "--data-dir",
        str(data_dir),
        "--database-url",
        database_url,
        "--server-id",
        SERVER_ID,
        "--host",
        HOST,
        "--port",
        str(port),
    ]
    log = data_dir.parent / f"{name}.log"
    node = Node(name, f"http://{HOST}:{port}", start(cmd, log, env), log)
    stack.callback(node.stop)
    return node


# --- the model and the requests --------------------------------------------------------------------------


def setup_model(url: str, admin: dict[str, str]) -> dict[str, str]:
    """Through node ``url``: bench/http.py's model (an access-key caller with three roles and a dozen rules)
    plus a role of the caller's own for the propagation run; returns the admin's and the caller's tokens."""
    caller = bench_http.setup_model(url, admin)
    with httpx.Client(base_url=url, timeout=10) as http:
        t = admin_token(http, admin)
        call(http, "create-role", t, name=PROP_ROLE)
        call(http, "assoc-role-am", t, role_name=PROP_ROLE, am_name="/bench/app")
    return {"admin_token": t, "caller_token": caller["token"]}


batch_requests = bench_http.batch_requests


# --- 1. propagation --------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    rank = math.ceil(q / 100 * len(sorted_values))
    return sorted_values[max(0, min(len(sorted_values), rank) - 1)]


def propagation(args: argparse.Namespace, a: Node, b: Node, tokens: dict[str, str]) -> dict[str, Any]:
    """``args.changes`` rule changes through A, each timed until B decides by it."""

    poll_body = json.dumps({"requests": [PROP_REQUEST]}, separators=(",", ":")).encode()
    poll_headers = {"Authorization": f"Bearer {tokens['caller_token']}", "Content-Type": "application/json"}
    interval = args.poll_ms / 1000
    latencies: list[float] = []
    polls: list[int] = []
    rtts: list[float] = []
    timeouts = 0
    with httpx.Client(base_url=a.url, timeout=10) as ha, httpx.Client(base_url=b.url, timeout=10) as hb:

        def decision_at_b() -> str:
            answer = hb.post("/authorize", content=poll_body, headers=poll_headers)
            if answer.status_code != 200:
                raise RuntimeError(f"node B authorize: {answer.status_code} {answer.text}")
            return str(answer.json()["decisions"][0]["decision"])

        if decision_at_b() != "deny":
            raise RuntimeError("node B allows before any rule on /prop/*")
        for i in range(args.changes):
            caps, expected = (["read"], "allow") if i % 2 == 0 else (["deny"], "deny")
            body = {"token": tokens["admin_token"], "role-name": PROP_ROLE, "path": PROP_RULE_PATH, "capability": caps}
            answer = ha.post("/set-role-rule", json=body)
            acked = time.perf_counter()
            if answer.status_code != 200:
                raise RuntimeError(f"node A set-role-rule: {answer.status_code} {answer.text}")
            deadline = acked + args.timeout
            due = acked
            n = 0
            while True:
                sent = time.perf_counter()
                got = decision_at_b()
                now = time.perf_counter()
                rtts.append(now - sent)
                n += 1
                if got == expected:
                    latencies.append(now - acked)
                    polls.append(n)
                    break
                if now >= deadline:
                    timeouts += 1
                    break
                due += interval
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                else:
                    due = time.perf_counter()
            if timeouts >= args.max_timeouts:
                break
        # Both nodes settle on the last change (a sanity check, not timed; not "at once" for A: a change of
        # its own feed read before its write can briefly be applied after it).
        last = "allow" if (len(latencies) + timeouts) % 2 else "deny"
        settle = time.monotonic() + args.timeout
        while True:
            at_a = ha.post("/authorize", content=poll_body, headers=poll_headers).json()["decisions"][0]["decision"]
            if at_a == last and decision_at_b() == last:
                break
            if time.monotonic() > settle:
                raise RuntimeError(f"nodes A and B do not both decide {last!r} after the propagation run")
            time.sleep(0.01)
    ms = sorted(x * 1000 for x in latencies)
    rtts.sort()
    return {
        "changes": len(latencies) + timeouts,
        "propagation_timeouts": timeouts,
        "propagation_p50_ms": round(percentile(ms, 50), 3) if ms else None,
        "propagation_p99_ms": round(percentile(ms, 99), 3) if ms else None,
        "propagation_max_ms": round(ms[-1], 3) if ms else None,
        "propagation_min_ms": round(ms[0], 3) if ms else None,
        "propagation_mean_ms": round(statistics.fmean(ms), 3) if ms else None,
        "propagation_polls_p50": int(statistics.median(polls)) if polls else None,
        "poll_interval_ms": args.poll_ms,
        "poll_rtt_p50_ms": round(percentile(rtts, 50) * 1000, 3),
        "propagation_timeout_s": args.timeout,
    }


# --- 2. throughput ---------------------------------------------------------------------------------------


def throughput(args: argparse.Namespace, a: Node, b: Node, tokens: dict[str, str], tmp: Path) -> dict[str, Any]:

    headers = {"Authorization": f"Bearer {tokens['caller_token']}", "Content-Type": "application/json"}
    many = batch_requests()
    # Both nodes decide the batch alike, with allowed and denied decisions among them.
    batch = json.dumps({"requests": many}, separators=(",", ":")).encode()
    answers = [
        [
            d["decision"]
            for d in httpx.post(f"{n.url}/authorize", content=batch, headers=headers, timeout=30).json()["decisions"]
        ]
        for n in (a, b)
    ]
    if answers[0] != answers[1]:
        raise RuntimeError("nodes A and B decide the batch differently")
    allowed = answers[0].count("allow")
    if not 0 < allowed < BATCH:
        raise RuntimeError(f"{allowed} of {BATCH} allowed: the model is not the expected one")
    singles = [json.dumps({"requests": [r]}, separators=(",", ":")).encode() for r in many]
    load = make_load(args, singles, headers, tmp)

    ones: list[dict[str, Any]] = []
    twos: list[list[dict[str, Any]]] = []
    for _ in range(args.rounds):
        ones.append(run_load(load, [f"{a.url}/authorize"])[0])
        twos.append(run_load(load, [f"{a.url}/authorize", f"{b.url}/authorize"]))
    one = max(ones, key=lambda r: r["rps"])
    two = max(twos, key=lambda rs: sum(r["rps"] for r in rs))
    two_rps = sum(r["rps"] for r in two)
    return {
        "one_node_decisions_per_s": round(one["rps"], 1),
        "two_nodes_decisions_per_s": round(two_rps, 1),
        "two_vs_one": round(two_rps / one["rps"], 3),
        "one_node_p50_ms": round(one["p50_ms"], 3),
        "one_node_p99_ms": round(one["p99_ms"], 3),
        "two_nodes_per_node_decisions_per_s": [round(r["rps"], 1) for r in two],
        "two_nodes_p50_ms": [round(r["p50_ms"], 3) for r in two],
        "two_nodes_p99_ms": [round(r["p99_ms"], 3) for r in two],
        "one_node_runs": [round(r["rps"], 1) for r in ones],
        "two_nodes_runs": [round(sum(r["rps"] for r in rs), 1) for rs in twos],
        "distinct_single_requests": len(singles),
        "batch_allowed": allowed,
    }


# --- main ------------------------------------------------------------------------------------------------


def measure(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="cedarkey-bench-cluster-"))
    try:
        with fresh_database(args.postgres) as url, ExitStack() as stack:
            env = {**os.environ, "CEDARKEY_MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode()}
            init = subprocess.run(
                [CEDARKEY, "init", "--database-url", url, "--data-dir", str(tmp / "a")],
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
            )
            if init.returncode != 0:
                raise RuntimeError(f"cedarkey init failed: {init.stderr[-2000:]}")
            admin = json.loads(init.stdout)
            a = start_node(stack, "a", tmp / "a", url, env)
            b = start_node(stack, "b", tmp / "b", url, env)
            wait_healthy(a.url, a.process, a.log)
            wait_healthy(b.url, b.process, b.log)
            tokens = setup_model(a.url, admin)
            result: dict[str, Any] = {}
            result.update(propagation(args, a, b, tokens))
            result.update(throughput(args, a, b, tokens, tmp))
            for node in (a, b):
                if node.process.poll() is not None:
                    raise RuntimeError(f"node {node.name} exited during the run: {tail(node.log)}")
        result.update(
            {
                "generator": args.generator,
                "connections_per_generator": args.connections,
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "rounds": args.rounds,
                "cpus": os.cpu_count(),
                "runtime_s": round(time.monotonic() - started, 1),
            }
        )
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: nodes stopped, database dropped


def print_table(r: dict[str, Any]) -> None:
    def ms(v: float | None) -> str:
        return "     n/a" if v is None else f"{v:8.2f}"

    print(f"two cedarkey serve nodes (one uvicorn worker each) on one PostgreSQL database, {r['cpus']} CPUs")
    print()
    print(
        f"rule-change propagation, set-role-rule via A -> B's /authorize reflects it "
        f"({r['changes']} changes, polled every {r['poll_interval_ms']:g} ms)"
    )
    print(f"  p50   {ms(r['propagation_p50_ms'])} ms")
    print(f"  p99   {ms(r['propagation_p99_ms'])} ms")
    print(f"  max   {ms(r['propagation_max_ms'])} ms")
    print(f"  min   {ms(r['propagation_min_ms'])} ms   (one poll round trip to B: p50 {r['poll_rtt_p50_ms']:.2f} ms)")
    print(f"  timeouts ({r['propagation_timeout_s']:g} s): {r['propagation_timeouts']}")
    print()
    print(
        f"POST /authorize, 1 request per call ({r['generator']}, {r['connections_per_generator']} connections "
        f"per generator, {r['duration_s']:g} s, best of {r['rounds']})"
    )
    per_node = " + ".join(f"{x:.1f}" for x in r["two_nodes_per_node_decisions_per_s"])
    print(
        f"  node A alone          {r['one_node_decisions_per_s']:>10.1f} decisions/s   "
        f"p50 {r['one_node_p50_ms']:.2f} ms  p99 {r['one_node_p99_ms']:.2f} ms"
    )
    print(f"  nodes A and B at once {r['two_nodes_decisions_per_s']:>10.1f} decisions/s   ({per_node})")
    print(f"  two / one             {r['two_vs_one']:>10.3f}")
    print()
    print(f"runtime {r['runtime_s']:.1f} s")


def main() -> int:
    parser = arguments(__doc__, load=True)
    parser.add_argument("--changes", type=int, default=100, help="rule changes timed (default 100)")
    parser.add_argument("--poll-ms", type=float, default=2.0, help="polling interval at node B (default 2 ms)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds a change may take to show at B")
    parser.add_argument("--max-timeouts", type=int, default=3, help="stop the propagation run after so many")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="PostgreSQL server URL (a maintenance db)")
    args = parser.parse_args()
    if args.generator == "auto":
        args.generator = "wrk" if shutil.which("wrk") else "python"
    signal.signal(signal.SIGTERM, _terminated)
    result = measure(args)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
