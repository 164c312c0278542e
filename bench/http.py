"""Decisions per second through ``POST /authorize`` on one uvicorn worker, against a bare Starlette endpoint.

    .venv/bin/python bench/http.py [--json] [--duration 5] [--connections 16] [--generator auto|wrk|python]

What runs, all on loopback:

- ``cedarkey serve`` (one uvicorn worker) on a fresh data dir, with a small realistic model: an access-key
  caller whose three roles hold a dozen rules of every rule type (deny rules and sub-claims included);
- a bare Starlette app whose one endpoint answers a constant, served by ``cedarkey.server.main.serve``
  itself in a child process (its app swapped for the bare one), so that uvicorn runs with exactly the same
  settings as ``cedarkey serve`` (loop, HTTP implementation, logging, no access log, no server header);
- the load generator, a separate process keeping ``--connections`` keep-alive connections busy: ``wrk``
  when it is installed (``apt-get install wrk``), else the asyncio HTTP/1.1 client of ``bench/load.py``.
  Both generators send the same bytes to both servers.

Measured, each after a warm-up, in interleaved rounds (the best of each kind counts, so that the drift of
a shared machine hits them alike): single decisions per second (one request per call, the calls cycling
through the 1,000 distinct requests of the batch, allowed and denied ones: after the first pass the engine's
memo answers them, as it does for a service asking the same questions again; ``ratio_uncached`` is the same
with every call a question never asked before) and their p50/p99 latency (with
``--connections`` calls in flight, so latency includes queueing); the bare endpoint's calls per second and
latency for the same bytes; their ratio; calls of all 1,000 requests each (decisions per second); and
``batch_vs_engine``: the HTTP batch decisions per second divided by what the same engine (built in this
process from the server's own store, checked to decide alike) does in-process with ``decide_batch``; both
run batches of paths never asked before, so every decision is evaluated.

The Python generator needs a core of its own to keep up: on a 2-CPU machine it is the bottleneck of the
bare endpoint (and so flatters the ratio); prefer wrk.

By default everything is measured twice: with the servers' default uvicorn settings (uvloop and httptools,
as ``cedarkey serve`` runs), and again with uvicorn's plain asyncio loop and h11 parser (key ``asyncio_h11``
of the JSON object). uvloop and httptools make the bare endpoint about 2.5 times faster and ``/authorize``
about twice as fast, so the ratio between them is lower there although every figure is higher.

``workers_2_vs_1``: the same single decisions through ``cedarkey serve --workers 2`` (on the same store) over
one worker, with ``generator_cores_workers_*``, the CPU the generator itself took during each (it shares the
machine's cores with the workers: on 2 CPUs it cannot be pinned apart).

Targets: ``ratio`` >= 0.6, ``batch_vs_engine`` >= 0.8, ``workers_2_vs_1`` >= 1.4 on 2 CPUs.
"""

from __future__ import annotations

import os
import sys

# This file is bench/http.py: run as a script, its folder would come first on sys.path and shadow the
# standard library's ``http`` package (which uvicorn, httpx and urllib import).
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path.append(sys.path.pop(0))  # behind the standard library: ``import support`` still finds bench/

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from cedarkey.policies import schema_text
from load import make_load, run_load
from support import CEDARKEY, HOST, admin_token, arguments, call, free_port, serving

SCHEMA = schema_text()

HERE = Path(__file__).resolve()
PYTHON = sys.executable
BATCH = 1000
#: Batches of never-asked paths (the HTTP batch runs cycle through them; the engine through half of them).
FRESH_BATCHES = 60
SINGLE_PATH = "/dev/app3/db-password"


# --- servers ---------------------------------------------------------------------------------------------


def serve_bare(port: int, loop: str = "auto", http: str = "auto") -> None:
    """Child process: the bare app, served by cedarkey's own ``serve`` (so with its uvicorn settings)."""
    from cedarkey.server import main
    from cedarkey.server.config import Settings
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    constant = b'{"ok":true}'

    async def endpoint(request: Request) -> Response:
        return Response(constant, media_type="application/json")

    async def health(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    bare = Starlette(
        routes=[Route("/health", health, methods=["GET"]), Route("/authorize", endpoint, methods=["POST"])]
    )
    settings = Settings(data_dir=Path(tempfile.mkdtemp()), host=HOST, port=port, loop=loop, http=http)
    # serve() logs where the service's store is and tells it of shutdown: a real one, never started here.
    bare.state.service = main.create_app(settings)[0].state.service
    main.create_app = lambda settings, worker=None: (bare, None)  # type: ignore[assignment]
    main.serve(settings)


# --- the model and the requests --------------------------------------------------------------------------


def setup_model(url: str, admin: dict[str, str]) -> dict[str, str]:
    """An access-key caller with three roles and a dozen rules; returns its access id and token."""
    import httpx

    with httpx.Client(base_url=url, timeout=10) as http:
        t = admin_token(http, admin)
        app = call(http, "create-auth-method", t, name="/bench/app")
        for role in ("/bench/readers", "/bench/writers", "/bench/ops"):
            call(http, "create-role", t, name=role)
        call(http, "assoc-role-am", t, role_name="/bench/readers", am_name="/bench/app")
        call(
            http,
            "assoc-role-am",
            t,
            role_name="/bench/writers",
            am_name="/bench/app",
            sub_claim=["principal_type=access-*"],
        )
        call(http, "assoc-role-am", t, role_name="/bench/ops", am_name="/bench/app", sub_claim=["role_name=ops-*"])
        for role, rule_type, path, caps in (
            ("/bench/readers", "item-rule", "/dev/*", ["read", "list"]),
            ("/bench/readers", "item-rule", "/shared/*", ["read"]),
            ("/bench/readers", "item-rule", "/dev/*/private/*", ["deny"]),
            ("/bench/readers", "role-rule", "/bench/*", ["list"]),
            ("/bench/readers", "auth-method-rule", "/bench/*", ["read", "list"]),
            ("/bench/writers", "item-rule", "/dev/app1/*", ["create", "update", "delete"]),
            ("/bench/writers", "item-rule", "/dev/app2/*", ["create", "update"]),
            ("/bench/writers", "item-rule", "/staging/*", ["read", "list", "create"]),
            ("/bench/writers", "item-rule", "/staging/locked*", ["deny"]),
            ("/bench/ops", "item-rule", "/prod/*", ["read", "list"]),
            ("/bench/ops", "role-rule", "/*", ["read"]),
            ("/bench/ops", "auth-method-rule", "/*", ["read"]),
        ):
            call(http, "set-role-rule", t, role_name=role, rule_type=rule_type, path=path, capability=caps)
        token = call(http, "auth", access_type="access_key", access_id=app["access-id"], access_key=app["access-key"])
        return {"access_id": app["access-id"], "token": token["token"]}


def batch_requests(round_: int = 0) -> list[dict[str, str]]:
    """1,000 requests over several folders, capabilities and rule types: allowed and denied ones. Each
    ``round_`` gives 1,000 other paths (so that no decision is answered from the engine's memo)."""
    caps = ["read", "list", "create", "update", "delete"]
    folders = ["/dev/app1", "/dev/app2", "/dev/app3/private", "/shared", "/staging", "/staging/locked", "/prod", "/x"]
    out = []
    for n in range(BATCH):
        k = f"{n}" if round_ == 0 else f"{n}-{round_}"
        if n % 10 == 9:
            out.append({"path": f"/bench/role{k}", "capability": caps[n % 2 * 4], "rule-type": "role-rule"})
        elif n % 10 == 8:
            out.append({"path": f"/bench/am{k}", "capability": "read", "rule-type": "auth-method-rule"})
        else:
            out.append({"path": f"{folders[n % len(folders)]}/item{k}", "capability": caps[n % len(caps)]})
    return out


# --- the in-process engine -------------------------------------------------------------------------------


class InProcessEngine:
    """An engine equal to the server's: loaded from the server's own store, deciding for the same identity."""

    def __init__(
        self, db: Path, access_id: str, requests: list[dict[str, str]], fresh: list[list[dict[str, str]]]
    ) -> None:
        from cedarkey.engine import Engine, Identity, canonical_path, parse_capability, parse_rule_type
        from cedarkey.server.sqlite_store import SqliteStore

        with SqliteStore(db) as store:
            snap = store.load()
        self.engine = Engine(SCHEMA)
        self.engine.load(snap.auth_methods, snap.roles, snap.associations, snap.rules)
        # What a login over loopback gives the server's session (see Service._login).
        self.identity = Identity(
            access_id=access_id, auth_type="access_key", principal_type="access-key", source_ip=HOST
        )
        # As Service.authorize hands them to decide_batch.
        self.requests = [
            (
                parse_capability(r["capability"]),
                canonical_path(r["path"]),
                parse_rule_type(r.get("rule-type", "item-rule")),
            )
            for r in requests
        ]
        # Batches of other paths each time, as the HTTP batch run sends (no answer from the memo).
        self.fresh = [[(r["capability"], r["path"], r.get("rule-type", "item-rule")) for r in b] for b in fresh]

    def decisions(self) -> list[str]:
        return ["allow" if d.allowed else "deny" for d in self.engine.decide_batch(self.identity, self.requests)]

    def rate(self, seconds: float) -> float:
        """decide_batch decisions per second over ``seconds``."""
        calls = 0
        t0 = time.perf_counter()
        deadline = t0 + seconds
        while True:
            self.engine.decide_batch(self.identity, self.fresh[calls % len(self.fresh)])
            calls += 1
            now = time.perf_counter()
            if now >= deadline:
                return calls * len(self.requests) / (now - t0)


# --- main ------------------------------------------------------------------------------------------------


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    tmp = Path(tempfile.mkdtemp(prefix="cedarkey-bench-http-"))
    try:
        data = tmp / "data"
        init = subprocess.run([CEDARKEY, "init", "--data-dir", str(data)], capture_output=True, text=True, check=True)
        admin = json.loads(init.stdout)
        cport, bport, wport = free_port(), free_port(), free_port()
        curl, burl, wurl = f"http://{HOST}:{cport}", f"http://{HOST}:{bport}", f"http://{HOST}:{wport}"
        serve = [
            CEDARKEY,
            "serve",
            "--data-dir",
            str(data),
            "--host",
            HOST,
            "--port",
            str(cport),
            "--server-id",
            "bench-http",
            "--loop",
            args.loop,
            "--http",
            args.http,
        ]
        # The same server again with two workers, on the same store (idle while the others are measured).
        serve_workers = [*serve, "--workers", "2"]
        serve_workers[serve_workers.index(str(cport))] = str(wport)
        with (
            serving(serve, curl, tmp / "cedarkey.log"),
            serving(serve_workers, wurl, tmp / "workers.log"),
            serving(
                [PYTHON, str(HERE), "_bare", "--port", str(bport), "--loop", args.loop, "--http", args.http],
                burl,
                tmp / "bare.log",
            ),
        ):
            caller = setup_model(curl, admin)
            headers = {"Authorization": f"Bearer {caller['token']}"}
            json_headers = {**headers, "Content-Type": "application/json"}  # the generators add their own
            many = batch_requests()
            singles = [json.dumps({"requests": [r]}, separators=(",", ":")).encode() for r in many]
            single = singles[0]
            batch = json.dumps({"requests": many}, separators=(",", ":")).encode()
            # Requests never asked before: single ones, and batches of 1,000 other paths each.
            fresh_batches = [batch_requests(k) for k in range(1, FRESH_BATCHES + 1)]
            fresh_singles = [
                json.dumps({"requests": [r]}, separators=(",", ":")).encode() for b in fresh_batches for r in b
            ]
            fresh_batch_bodies = [json.dumps({"requests": b}, separators=(",", ":")).encode() for b in fresh_batches]

            # Both answer, and the decisions are the expected ones.
            one = [{"path": SINGLE_PATH, "capability": "read"}]
            check = httpx.post(f"{curl}/authorize", json={"requests": one}, headers=headers, timeout=10).json()
            assert check["decisions"][0]["decision"] == "allow", check
            answers = httpx.post(f"{curl}/authorize", content=batch, headers=json_headers, timeout=30).json()[
                "decisions"
            ]
            assert [(d["path"], d["capability"]) for d in answers] == [(r["path"], r["capability"]) for r in many]
            allowed = sum(d["decision"] == "allow" for d in answers)
            assert 0 < allowed < BATCH, allowed
            assert httpx.post(f"{burl}/authorize", content=single, headers=json_headers).status_code == 200

            engine = InProcessEngine(
                data / "cedarkey.db", caller["access_id"], many, fresh_batches[: FRESH_BATCHES // 2]
            )
            assert engine.decisions() == [d["decision"] for d in answers], "the in-process engine is not equal"

            # Interleaved rounds (bare, authorize, batch, engine; again...), the best of each: the machine's
            # drift (other processes) hits every measurement alike.
            bare_runs, auth_runs, cold_runs, batch_runs, engine_rates, two_runs = [], [], [], [], [], []
            single_load = make_load(args, singles, headers, tmp)
            batch_load = make_load(args, fresh_batch_bodies, headers, tmp)
            half = len(fresh_singles) // args.rounds
            for r in range(args.rounds):
                bare_runs += run_load(single_load, [f"{burl}/authorize"])
                auth_runs += run_load(single_load, [f"{curl}/authorize"])
                two_runs += run_load(single_load, [f"{wurl}/authorize"])
                # Every call a new question (the memo never answers), each round other ones.
                cold_load = make_load(args, fresh_singles[r * half : (r + 1) * half], headers, tmp)
                cold_runs += run_load(cold_load, [f"{curl}/authorize"])
                batch_runs += run_load(batch_load, [f"{curl}/authorize"])
                engine_rates.append(engine.rate(args.engine_seconds))
        bare = max(bare_runs, key=lambda r: r["rps"])
        auth = max(auth_runs, key=lambda r: r["rps"])
        two = max(two_runs, key=lambda r: r["rps"])
        cold = max(cold_runs, key=lambda r: r["rps"])
        batch_run = max(batch_runs, key=lambda r: r["rps"])
        batch_decisions = batch_run["rps"] * BATCH
        engine_best = max(engine_rates)
        return {
            "authorize_rps": round(auth["rps"], 1),
            "bare_rps": round(bare["rps"], 1),
            "ratio": round(auth["rps"] / bare["rps"], 3),
            "authorize_p50_ms": round(auth["p50_ms"], 3),
            "authorize_p99_ms": round(auth["p99_ms"], 3),
            "workers_2_rps": round(two["rps"], 1),
            "workers_2_vs_1": round(two["rps"] / auth["rps"], 3),
            "workers_2_p99_ms": round(two["p99_ms"], 3),
            # The load generator's CPU time over the run's wall time, in cores: what it took from the servers.
            "generator_cores_workers_1": auth["generator_cores"],
            "generator_cores_workers_2": two["generator_cores"],
            "authorize_uncached_rps": round(cold["rps"], 1),
            "ratio_uncached": round(cold["rps"] / bare["rps"], 3),
            "authorize_uncached_p50_ms": round(cold["p50_ms"], 3),
            "authorize_uncached_p99_ms": round(cold["p99_ms"], 3),
            "bare_p50_ms": round(bare["p50_ms"], 3),
            "bare_p99_ms": round(bare["p99_ms"], 3),
            "batch_calls_per_s": round(batch_run["rps"], 2),
            "batch_p50_ms": round(batch_run["p50_ms"], 3),
            "batch_p99_ms": round(batch_run["p99_ms"], 3),
            "batch_decisions_per_s": round(batch_decisions, 1),
            "engine_decisions_per_s": round(engine_best, 1),
            "batch_vs_engine": round(batch_decisions / engine_best, 3),
            "authorize_rps_runs": [round(r["rps"], 1) for r in auth_runs],
            "workers_2_rps_runs": [round(r["rps"], 1) for r in two_runs],
            "bare_rps_runs": [round(r["rps"], 1) for r in bare_runs],
            "batch_decisions_per_s_runs": [round(r["rps"] * BATCH, 1) for r in batch_runs],
            "engine_decisions_per_s_runs": [round(x, 1) for x in engine_rates],
            "distinct_single_requests": len(singles),
            "generator": args.generator,
            "connections": args.connections,
            "uvicorn_loop": args.loop,
            "uvicorn_http": args.http,
            "duration_s": args.duration,
            "cpus": os.cpu_count(),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_bare":
        p = argparse.ArgumentParser()
        p.add_argument("_bare")
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--loop", default="auto")
        p.add_argument("--http", default="auto")
        bare_args = p.parse_args()
        serve_bare(bare_args.port, bare_args.loop, bare_args.http)
        return 0

    parser = arguments(__doc__, load=True)
    parser.add_argument("--engine-seconds", type=float, default=3.0, help="seconds per in-process engine run")
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto", help="both servers' loop")
    parser.add_argument("--http", choices=["auto", "h11", "httptools"], default="auto", help="both servers' parser")
    parser.add_argument(
        "--no-plain",
        dest="also_plain",
        action="store_false",
        help="skip the second measurement with uvicorn's plain asyncio loop and h11 parser",
    )
    args = parser.parse_args()
    if args.generator == "auto":
        args.generator = "wrk" if shutil.which("wrk") else "python"
    result = measure(args)
    plain = None
    if args.also_plain and (args.loop, args.http) != ("asyncio", "h11"):
        # The same again with uvicorn's plain event loop and parser (the setup the targets were first set on).
        plain = measure(argparse.Namespace(**{**vars(args), "loop": "asyncio", "http": "h11"}))
        result["asyncio_h11"] = {k: plain[k] for k in PLAIN_KEYS}
    if args.json:
        print(json.dumps(result))
        return 0
    print_result(result, args)
    if plain is not None:
        print("\nthe same with uvicorn's plain asyncio loop and h11 parser:")
        print_result(plain, args)
    return 0


PLAIN_KEYS = (
    "authorize_rps",
    "bare_rps",
    "ratio",
    "authorize_p50_ms",
    "authorize_p99_ms",
    "authorize_uncached_rps",
    "ratio_uncached",
    "batch_decisions_per_s",
    "engine_decisions_per_s",
    "batch_vs_engine",
)


def print_result(result: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"load generator: {result['generator']}, {args.connections} keep-alive connections, one uvicorn worker "
        f"(loop {result['uvicorn_loop']}, http {result['uvicorn_http']})"
    )
    print(
        f"POST /authorize, 1 request per call: {result['authorize_rps']:>10.1f} decisions/s   "
        f"p50 {result['authorize_p50_ms']:.2f} ms  p99 {result['authorize_p99_ms']:.2f} ms"
    )
    print(
        f"bare Starlette endpoint:             {result['bare_rps']:>10.1f} calls/s       "
        f"p50 {result['bare_p50_ms']:.2f} ms  p99 {result['bare_p99_ms']:.2f} ms"
    )
    print(f"ratio authorize/bare:                {result['ratio']:>10.3f}   (target >= 0.6)")
    print(
        f"  serve --workers 2:                 {result['workers_2_rps']:>10.1f} decisions/s   "
        f"x{result['workers_2_vs_1']:.3f} of one worker (target >= 1.4; the generator took "
        f"{result['generator_cores_workers_2']} of {result['cpus']} cores)"
    )
    print(
        f"  every call a new question:         {result['authorize_uncached_rps']:>10.1f} decisions/s   "
        f"p50 {result['authorize_uncached_p50_ms']:.2f} ms  p99 {result['authorize_uncached_p99_ms']:.2f} ms"
    )
    print(f"  ratio, uncached:                   {result['ratio_uncached']:>10.3f}")
    print(
        f"POST /authorize, 1,000 per call:     {result['batch_decisions_per_s']:>10.1f} decisions/s   "
        f"({result['batch_calls_per_s']:.1f} calls/s, p50 {result['batch_p50_ms']:.1f} ms)"
    )
    print(f"engine decide_batch in-process:      {result['engine_decisions_per_s']:>10.1f} decisions/s")
    print(f"batch_vs_engine:                     {result['batch_vs_engine']:>10.3f}   (target >= 0.8)")


if __name__ == "__main__":
    raise SystemExit(main())
