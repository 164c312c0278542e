"""A soak: a bounded mixed load against a real ``cedarkey serve`` for minutes, watching what the server process
holds as time goes by (memory, file descriptors, database, WAL and audit log).

    .venv/bin/python bench/soak.py [--json] [--duration 300] [--sample 10] [--warmup 120] [--rate 150]
                                   [--workers 4] [--no-aws]

What runs, all on loopback: moto's real server as STS (request authentication on; see ``cedarkey.dev.moto``)
and ``cedarkey serve`` on a fresh SQLite data dir, on half of this process's CPUs (moto and the load on the
others, as ``bench/login.py`` places them). The model: four access-key callers (``/soak/app0..3``) and an
aws_iam auth method bound to ``dev-role``, each with a role reading its own folder and listing all of
``/soak``, tokens living 60 s (the shortest ``jwt-ttl``: expiry and the minute's purge run all along); 200
secrets.

The load, paced at ``--rate`` requests a second over ``--workers`` threads (keep-alive connections; a worker
that falls behind skips ahead rather than bursting): ``authorize`` (50 %: 1 to 5 requests a call over
20,000 paths of three rule types, for every caller), ``get-secret-value`` (20 %), access-key logins
(``auth``, 8 %: each replaces its caller's token), aws_iam logins with a fresh proof (3 %; 0 with
``--no-aws``, then access-key logins take their share), ``list-items`` (12 %), ``describe-item`` (7 %); and
beside them a ``set-role-rule`` every second (the administrator, on a role every caller holds: every decision
memo of theirs starts over each second). Every answer but a 200 is an error.

Every ``--sample`` seconds: the server process's RSS (``/proc/PID/status``), its open file descriptors
(``/proc/PID/fd``), the sizes of ``cedarkey.db``, its WAL and ``audit.log``, and the latency of the window.
The RSS slope is a least-squares fit of the samples taken after ``--warmup`` seconds: by 120 s what is bounded
has filled (live tokens: a login's token lives 60 s and goes at the next minute's purge; memos, slice caches,
allocator arenas). Two things still fill slowly, to bounds of their own: the replay guard's claims of aws_iam
proofs and their rows in the store live 16 minutes (15 of date skew and one of margin).

Targets: no errors, ``rss_slope_mib_per_h`` < 5 after the warm-up, ``fds_end`` == ``fds_start`` (within the
few sockets in flight), the WAL bounded (``wal_max_bytes`` reached early and not passed).
"""

from __future__ import annotations

import os
import sys

# bench/http.py sits beside this file: run as a script, this folder would come first on sys.path and that
# file would shadow the standard library's ``http`` package (which httpx and urllib import).
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path.append(sys.path.pop(0))  # behind the standard library: ``import support`` still finds bench/

import argparse
import json
import random
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cedarkey.client.proof import make_cloud_id
from cedarkey.dev.moto import ACCOUNT_ID, DEV_ROLE, botocore_credentials, make_aws_identities, start_moto
from support import CEDARKEY, HOST, admin_token, arguments, call, free_port, on_cpus, serving, split_cpus

SERVER_ID = "bench-soak"
APPS = 4
SECRETS_PER_APP = 50
#: Distinct paths ``authorize`` asks about, per caller and rule type.
PATHS = 20_000
#: The shortest jwt-ttl: with the minute's purge, live tokens reach their steady state within 120 s.
TOKEN_TTL = 60
#: Rule patterns the churn cycles through (a rule set on a path it has replaces it: the model stays as big).
CHURN_PATHS = 10
RULE_TYPES = ("item-rule", "role-rule", "auth-method-rule")
MIB = 1 << 20


# --- the server and its model ------------------------------------------------------------------------------


@dataclass
class Caller:
    name: str
    access_id: str
    key: str | None = None  # an access key; None for the aws_iam caller
    token: str = ""


def build_model(http: httpx.Client, admin: str, sts_url: str | None) -> list[Caller]:
    """The callers, their roles and secrets, and the churn role they all hold; returns the callers logged in."""
    callers = []
    call(http, "create-role", admin, name="/soak/churn")
    for k in range(APPS):
        am = call(http, "create-auth-method", admin, name=f"/soak/app{k}", jwt_ttl=TOKEN_TTL)
        callers.append(Caller(f"/soak/app{k}", am["access-id"], am["access-key"]))
    if sts_url is not None:
        am = call(
            http,
            "create-auth-method-aws-iam",
            admin,
            name="/soak/iam",
            bound_aws_account_id=[ACCOUNT_ID],
            bound_role_name=[DEV_ROLE],
            sts_url=sts_url,
            jwt_ttl=TOKEN_TTL,
        )
        callers.append(Caller("/soak/iam", am["access-id"]))
    for k, caller in enumerate(callers):
        role = f"/soak/readers{k}"
        call(http, "create-role", admin, name=role)
        call(http, "assoc-role-am", admin, role_name=role, am_name=caller.name)
        call(http, "assoc-role-am", admin, role_name="/soak/churn", am_name=caller.name)
        call(http, "set-role-rule", admin, role_name=role, path=f"/soak/app{k % APPS}/*", capability=["read", "list"])
        call(http, "set-role-rule", admin, role_name=role, path="/soak/*", capability=["list"])
        call(http, "set-role-rule", admin, role_name=role, path="/soak/*/private/*", capability=["deny"])
        call(http, "set-role-rule", admin, role_name=role, rule_type="role-rule", path="/soak/*", capability=["read"])
    for k in range(APPS):
        for j in range(SECRETS_PER_APP):
            call(http, "create-secret", admin, name=f"/soak/app{k}/secret-{j}", value=f"value-{k}-{j}-" + "x" * 40)
    return callers


def churn_rule(n: int) -> dict[str, Any]:
    """The n-th set-role-rule of the churn: a bounded set of paths, capabilities alternating."""
    caps = ["read"] if (n // CHURN_PATHS) % 2 else ["read", "list"]
    return {"role_name": "/soak/churn", "path": f"/soak/churn{n % CHURN_PATHS}/*", "capability": caps}


# --- the load --------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the workers saw; each worker has its own (no lock), merged at the end."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    #: (monotonic time, seconds) of every request: the sampler cuts them into windows.
    timeline: list[tuple[float, float]] = field(default_factory=list)

    def record(self, command: str, started: float, answer: httpx.Response | Exception) -> None:
        elapsed = time.monotonic() - started
        self.latencies.setdefault(command, []).append(elapsed)
        self.timeline.append((started, elapsed))
        if isinstance(answer, Exception):
            status = f"exception:{type(answer).__name__}"
        else:
            status = str(answer.status_code)
        self.statuses[status] += 1
        if status != "200":
            self.errors[status] += 1
            if len(self.examples) < 5:
                text = str(answer) if isinstance(answer, Exception) else answer.text[:200]
                self.examples.append(f"{command}: {status} {text}")


class Load:
    """The mixed load's operations, over shared callers (a login replaces its caller's token for everyone)."""

    def __init__(self, url: str, callers: list[Caller], prover: Any, seed: int) -> None:
        self.url = url
        self.callers = callers
        self.prover = prover
        self.seed = seed
        self.key_callers = [c for c in callers if c.key is not None]
        aws = 3 if any(c.key is None for c in callers) else 0
        self.mix = [
            ("authorize", 50),
            ("get-secret-value", 20),
            ("auth", 11 - aws),
            ("auth-aws", aws),
            ("list-items", 12),
            ("describe-item", 7),
        ]

    def worker(self, k: int, rate: float, stop_at: float, tally: Tally) -> None:
        rng = random.Random(self.seed * 1000 + k)
        names, weights = zip(*[(n, w) for n, w in self.mix if w], strict=True)
        period = 1.0 / rate
        with httpx.Client(base_url=self.url, timeout=30) as http:
            due = time.monotonic()
            while True:
                now = time.monotonic()
                if now >= stop_at:
                    return
                if due > now:
                    time.sleep(due - now)
                elif now - due > 1.0:  # behind by over a second: skip ahead, the load stays bounded
                    due = now
                due += period
                operation = rng.choices(names, weights)[0]
                self.one(http, operation, rng, tally)

    def one(self, http: httpx.Client, operation: str, rng: random.Random, tally: Tally) -> None:
        command, body, who = self.body(operation, rng.choice(self.callers), rng)
        started = time.monotonic()
        try:
            answer: httpx.Response | Exception = http.post(f"/{command}", json=body)
        except httpx.HTTPError as exc:
            answer = exc
        tally.record(operation, started, answer)
        if command == "auth" and isinstance(answer, httpx.Response) and answer.status_code == 200:
            who.token = answer.json()["token"]  # the caller's requests use its newest token from now on

    def body(self, operation: str, caller: Caller, rng: random.Random) -> tuple[str, dict[str, Any], Caller]:
        """The command and body of one operation by ``caller``, and the caller it is for."""
        k = self.callers.index(caller) % APPS
        if operation == "authorize":
            requests = [self._request(rng) for _ in range(rng.randint(1, 5))]
            return "authorize", {"token": caller.token, "requests": requests}, caller
        if operation in ("get-secret-value", "describe-item"):
            name = f"/soak/app{k}/secret-{rng.randrange(SECRETS_PER_APP)}"
            return operation, {"token": caller.token, "name": name}, caller
        if operation == "list-items":
            return "list-items", {"token": caller.token, "path": f"/soak/app{rng.randrange(APPS)}"}, caller
        return "auth", *self.login(operation == "auth-aws", caller)

    def login(self, aws: bool, caller: Caller) -> tuple[dict[str, Any], Caller]:
        """An ``auth`` body: a fresh aws_iam proof, or ``caller``'s access key (the first app's for the aws_iam
        caller when the operation is an access-key login)."""
        if aws:
            iam = next(c for c in self.callers if c.key is None)
            return {"access-type": "aws_iam", "access-id": iam.access_id, "cloud-id": self.prover()}, iam
        who = caller if caller.key is not None else self.key_callers[0]
        return {"access-type": "access_key", "access-id": who.access_id, "access-key": who.key}, who

    @staticmethod
    def _request(rng: random.Random) -> dict[str, str]:
        rule_type = rng.choice(RULE_TYPES)
        n = rng.randrange(PATHS)
        folder = f"/soak/app{n % APPS}" + ("/private" if n % 7 == 0 else "")
        return {"path": f"{folder}/p{n}", "capability": rng.choice(["read", "list", "update"]), "rule-type": rule_type}


def churn(url: str, admin: str, stop_at: float, tally: Tally) -> None:
    """A set-role-rule every second, as the administrator."""
    with httpx.Client(base_url=url, timeout=30) as http:
        n, due = 0, time.monotonic()
        while due < stop_at:
            time.sleep(max(0.0, due - time.monotonic()))
            body = {k.replace("_", "-"): v for k, v in churn_rule(n).items()}
            started = time.monotonic()
            try:
                answer: httpx.Response | Exception = http.post("/set-role-rule", json={**body, "token": admin})
            except httpx.HTTPError as exc:
                answer = exc
            tally.record("set-role-rule", started, answer)
            n, due = n + 1, due + 1.0


# --- watching the server -----------------------------------------------------------------------------------


def process_sample(pid: int, data: Path) -> dict[str, int]:
    """What the server process holds now: RSS, open fds and threads; the sizes of its files."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return {
        "rss_bytes": rss,
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": len(os.listdir(f"/proc/{pid}/task")),
        "db_bytes": _size(data / "cedarkey.db"),
        "wal_bytes": _size(data / "cedarkey.db-wal"),
        "audit_bytes": _size(data / "audit.log"),
    }


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def sampler(pid: int, data: Path, start: float, every: float, stop_at: float, out: list[dict[str, Any]]) -> None:
    """A sample now (before the load), then every ``every`` seconds until ``stop_at`` and once at its end."""
    due = start
    while True:
        time.sleep(max(0.0, due - time.monotonic()))
        out.append({"t": round(time.monotonic() - start, 1), **process_sample(pid, data)})
        if due >= stop_at:
            return
        due = min(due + every, stop_at)


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """The least-squares slope of ``(seconds, value)``, per hour; None with fewer than two points."""
    if len(points) < 2:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mx) ** 2 for x in xs)
    return None if spread == 0 else 3600 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / spread


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else 0.0


def windows(timeline: list[tuple[float, float]], start: float, samples: list[dict[str, Any]]) -> None:
    """Adds to each sample the requests of the window it closes and their p50/p99 latency (ms)."""
    by_start = sorted(timeline)
    lo = 0
    for sample in samples:
        end = start + sample["t"]
        hi = lo
        while hi < len(by_start) and by_start[hi][0] < end:
            hi += 1
        window = [e for _, e in by_start[lo:hi]]
        sample["requests"] = len(window)
        sample["p50_ms"] = round(percentile(window, 0.5) * 1000, 2)
        sample["p99_ms"] = round(percentile(window, 0.99) * 1000, 2)
        lo = hi


# --- the run ---------------------------------------------------------------------------------------------


def merged(tallies: list[Tally]) -> Tally:
    total = Tally()
    for t in tallies:
        for command, values in t.latencies.items():
            total.latencies.setdefault(command, []).extend(values)
        total.statuses.update(t.statuses)
        total.errors.update(t.errors)
        total.examples.extend(t.examples)
        total.timeline.extend(t.timeline)
    return total


def run_load(args: argparse.Namespace, url: str, pid: int, data: Path, admin: str, load: Load) -> dict[str, Any]:
    tallies = [Tally() for _ in range(args.workers + 1)]
    samples: list[dict[str, Any]] = []
    start = time.monotonic()
    stop_at = start + args.duration
    threads = [
        threading.Thread(target=load.worker, args=(k, args.rate / args.workers, stop_at, tallies[k]))
        for k in range(args.workers)
    ]
    threads.append(threading.Thread(target=churn, args=(url, admin, stop_at, tallies[-1])))
    watcher = threading.Thread(target=sampler, args=(pid, data, start, args.sample, stop_at, samples))
    watcher.start()
    for t in threads:
        t.start()
    for t in [*threads, watcher]:
        t.join()
    elapsed = time.monotonic() - start
    tally = merged(tallies)
    windows(tally.timeline, start, samples)
    return summary(args, tally, samples, elapsed)


def summary(args: argparse.Namespace, tally: Tally, samples: list[dict[str, Any]], elapsed: float) -> dict[str, Any]:
    requests = sum(tally.statuses.values())
    after = [(s["t"], s["rss_bytes"] / MIB) for s in samples if s["t"] >= args.warmup]
    slope = slope_per_hour(after)
    first, last = samples[0], samples[-1]
    return {
        "duration_s": round(elapsed, 1),
        "warmup_s": args.warmup,
        "rate_target": args.rate,
        "requests": requests,
        "req_per_s": round(requests / elapsed, 1),
        "errors": sum(tally.errors.values()),
        "errors_by_status": dict(tally.errors),
        "error_examples": tally.examples,
        "by_command": {
            command: {
                "count": len(values),
                "p50_ms": round(percentile(values, 0.5) * 1000, 2),
                "p99_ms": round(percentile(values, 0.99) * 1000, 2),
            }
            for command, values in sorted(tally.latencies.items())
        },
        "rss_start_mib": round(first["rss_bytes"] / MIB, 1),
        "rss_warm_mib": round(after[0][1], 1) if after else None,
        "rss_end_mib": round(last["rss_bytes"] / MIB, 1),
        "rss_max_mib": round(max(s["rss_bytes"] for s in samples) / MIB, 1),
        "rss_slope_mib_per_h": None if slope is None else round(slope, 2),
        "fds_start": first["fds"],
        "fds_end": last["fds"],
        "fds_max": max(s["fds"] for s in samples),
        "threads_start": first["threads"],
        "threads_end": last["threads"],
        "db_start_bytes": first["db_bytes"],
        "db_end_bytes": last["db_bytes"],
        "wal_max_bytes": max(s["wal_bytes"] for s in samples),
        "wal_end_bytes": last["wal_bytes"],
        "audit_bytes": last["audit_bytes"],
        "audit_bytes_per_s": round((last["audit_bytes"] - first["audit_bytes"]) / elapsed, 1),
        "samples": samples,
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="cedarkey-bench-soak-"))
    halves = split_cpus()
    server_cpus, other_cpus = halves or (None, None)
    try:
        with ExitStack() as stack, on_cpus(other_cpus):
            moto = None if args.no_aws else stack.enter_context(start_moto())
            data = tmp / "data"
            init = [CEDARKEY, "init", "--data-dir", str(data)]
            admin = json.loads(subprocess.run(init, capture_output=True, text=True, check=True).stdout)
            port = free_port()
            url = f"http://{HOST}:{port}"
            cmd = [CEDARKEY, "serve", "--data-dir", str(data), "--host", HOST, "--port", str(port)]
            cmd += ["--server-id", SERVER_ID]
            if moto is not None:
                cmd += ["--allowed-sts-url", moto.url]
            with on_cpus(server_cpus):
                proc = stack.enter_context(serving(cmd, url, tmp / "cedarkey.log"))
            with httpx.Client(base_url=url, timeout=30) as http:
                token = admin_token(http, admin)
                callers = build_model(http, token, moto.url if moto else None)
            prover = None
            if moto is not None:
                credentials = botocore_credentials(make_aws_identities(moto.url)["dev_role"])
                sts_url = moto.url

                def prover() -> str:
                    return make_cloud_id(sts_url, SERVER_ID, credentials=credentials)

            load = Load(url, callers, prover, args.seed)
            with httpx.Client(base_url=url, timeout=30) as http:
                for caller in callers:  # every caller starts with a token
                    body, _ = load.login(caller.key is None, caller)
                    answer = http.post("/auth", json=body)
                    answer.raise_for_status()
                    caller.token = answer.json()["token"]
            result = run_load(args, url, proc.pid, data, token, load)
            result["server_exit"] = proc.poll()
            result["aws_logins"] = moto is not None
            result["placement"] = "split" if halves else "shared"
            return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load (default 300)")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples (default 10)")
    parser.add_argument("--warmup", type=float, default=120.0, help="seconds before the RSS slope is fitted (120)")
    parser.add_argument("--rate", type=float, default=150.0, help="requests a second, all workers (default 150)")
    parser.add_argument("--workers", type=int, default=4, help="threads sending requests (default 4)")
    parser.add_argument("--no-aws", action="store_true", help="no moto, no aws_iam logins (access keys only)")
    parser.add_argument("--seed", type=int, default=1, help="the load's random seed")
    args = parser.parse_args()
    if args.warmup >= args.duration:
        parser.error("--warmup must be shorter than --duration")
    result = measure(args)
    if args.json:
        print(json.dumps(result))
    else:
        print_result(result)
    return 0 if result["errors"] == 0 else 1


def print_result(r: dict[str, Any]) -> None:
    print(f"{r['duration_s']:.0f} s, {r['requests']} requests, {r['req_per_s']:.1f}/s (target {r['rate_target']:g})")
    print(f"errors: {r['errors']} {r['errors_by_status'] or ''}")
    for example in r["error_examples"]:
        print(f"  e.g. {example}")
    for command, c in r["by_command"].items():
        print(f"  {command:17} {c['count']:>7}   p50 {c['p50_ms']:7.2f} ms   p99 {c['p99_ms']:7.2f} ms")
    slope = r["rss_slope_mib_per_h"]
    print(
        f"RSS: {r['rss_start_mib']} MiB at start, {r['rss_warm_mib']} after the {r['warmup_s']:g} s warm-up, "
        f"{r['rss_end_mib']} at the end (max {r['rss_max_mib']}); slope after the warm-up "
        f"{'n/a' if slope is None else f'{slope:+.2f}'} MiB/h (target < 5)"
    )
    print(f"fds: {r['fds_start']} at start, {r['fds_end']} at the end (max {r['fds_max']}); threads {r['threads_end']}")
    print(
        f"db: {r['db_start_bytes']} -> {r['db_end_bytes']} bytes; WAL max {r['wal_max_bytes']} bytes; "
        f"audit log {r['audit_bytes']} bytes ({r['audit_bytes_per_s']:.0f} B/s)"
    )
    print("   t    RSS MiB  fds  WAL bytes   db bytes  requests  p50 ms  p99 ms")
    for s in r["samples"]:
        print(
            f"{s['t']:6.0f}  {s['rss_bytes'] / MIB:8.1f} {s['fds']:4} {s['wal_bytes']:10} {s['db_bytes']:10} "
            f"{s['requests']:9} {s['p50_ms']:7.2f} {s['p99_ms']:7.2f}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
