"""AWS IAM logins per second through ``POST /auth``, and the server's own cost per login.

    .venv/bin/python bench/login.py [--json] [--logins 300] [--duration 5] [--concurrency 8]
                                    [--placement split|shared]

What runs, all on loopback: moto's real server as STS (request authentication on; see
``cedarkey.dev.moto``) and ``cedarkey serve`` (one uvicorn worker, data dir on the temp dir's disk)
with an aws_iam auth method bound to the account and to ``dev-role``, whose STS URL is moto. Every login
carries a fresh proof (``make_cloud_id`` with the dev-role credentials moto issued; a new nonce and signature
each time, made outside the timed part): the server checks it, claims it in its replay guard (memory and
the store), sends it to STS, parses the answer, asks the engine, stores the token's hash and audits.

- sequential phase: ``--logins`` logins, each followed (or preceded, alternately) by the same kind of signed
  GetCallerIdentity sent by this process directly to moto, so the STS round trip is measured alone, in the
  same run, under the same conditions. Both pay a TCP connect each time, as the server does: moto's
  werkzeug server answers every request with ``Connection: close``. The server's own cost per login is
  ``login_ms_mean - sts_roundtrip_ms_mean`` (and the same with medians), and ``own_cost_per_sts`` that mean
  against the STS round trip's: the VM's speed moves both together (STS alone took 2.6 to 6.6 ms within
  one session on one machine, own cost 0.9 to 3.0 ms with it), so the ratio compares runs that the absolute
  figure cannot. Then, as many ``GET /health``
  calls on the same connection, apart (interleaved, they would change the pacing of the two measurements
  above): ``http_hop_ms`` is what one exchange with the server costs at all (HTTP client, loopback,
  uvicorn), the part of the own cost that is not the login's work;
- the server's own clock: ``GET /metrics`` read before and after the sequential phase gives the time spent
  in the ``/auth`` handler (``cedarkey_request_seconds``) and, within it, waiting for STS
  (``cedarkey_sts_seconds``): ``handler_own_ms_mean`` is the login's work as the server sees it. The rest of
  ``own_cost_ms`` is the exchange with the server around the handler, which on a VM includes waking an idle
  process: ``http_hop_after_pause_ms_mean`` is ``GET /health`` after a pause as long as an STS round trip (as a
  login finds the server), against ``http_hop_ms`` back to back. A login wakes two processes more than an STS
  call alone does (the server on the request, and STS's stand-in on the server's call);
- throughput phase: ``--concurrency`` threads logging in for ``--duration`` seconds: ``logins_per_s``.

Placement (``--placement``): in production STS and the clients are other machines, and the server's cores
are its own. Here all three share one small machine, so by default (``split``) the server runs on half of
this process's CPUs and moto and this client on the other half: moto's few milliseconds of Python per call
then do not evict the server's caches between its two halves of a login, and the scheduler does not stack
the three processes on one core. ``shared`` leaves every process to the scheduler, as earlier runs did; the
login's work is the same, what differs is what the stand-ins cost the server. With one CPU both are shared.

This process's garbage collector is off while it times (``support.collector_paused``, as ``timeit`` does):
with botocore's models on its heap one full collection took 134 ms, and it landed in whichever exchange was
being timed, most often a login (the longer window), which put 0.1 ms on a run's mean own cost that was the
client's, not the server's. The servers keep theirs.

Target: ``own_cost_ms`` <= 2.
"""

from __future__ import annotations

import os
import sys

# bench/http.py sits beside this file: run as a script, this folder would come first on sys.path and that
# file would shadow the standard library's ``http`` package (which httpx and urllib import).
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path.append(sys.path.pop(0))  # behind the standard library: ``import support`` still finds bench/

import argparse
import base64
import json
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from cedarkey.client.proof import make_cloud_id
from cedarkey.dev.moto import ACCOUNT_ID, DEV_ROLE, botocore_credentials, make_aws_identities, start_moto
from prometheus_client.parser import text_string_to_metric_families
from support import (
    CEDARKEY,
    HOST,
    admin_token,
    arguments,
    call,
    collector_paused,
    free_port,
    on_cpus,
    serving,
    split_cpus,
)

SERVER_ID = "bench-login"


@contextmanager
def cedarkey_server(data: Path, log: Path, sts_url: str) -> Iterator[str]:
    port = free_port()
    url = f"http://{HOST}:{port}"
    cmd = [CEDARKEY, "serve", "--data-dir", str(data), "--host", HOST, "--port", str(port), "--server-id", SERVER_ID]
    cmd += ["--allowed-sts-url", sts_url]
    with serving(cmd, url, log):
        yield url


def setup(url: str, admin: dict[str, str], sts_url: str) -> tuple[str, str]:
    """The aws_iam auth method (and a role associated with it); returns its access id and the admin's token
    (which may read /metrics)."""
    with httpx.Client(base_url=url, timeout=10) as http:
        token = admin_token(http, admin)
        am = call(
            http,
            "create-auth-method-aws-iam",
            token,
            name="/bench/iam",
            bound_aws_account_id=[ACCOUNT_ID],
            bound_role_name=[DEV_ROLE],
            sts_url=sts_url,
        )
        call(http, "create-role", token, name="/bench/dev")
        call(http, "assoc-role-am", token, role_name="/bench/dev", am_name="/bench/iam", sub_claim=["role_name=dev-*"])
        call(http, "set-role-rule", token, role_name="/bench/dev", path="/dev/*", capability=["read", "list"])
        return str(am["access-id"]), token


class Prover:
    """Fresh login proofs for dev-role (each with its own nonce and signature)."""

    def __init__(self, sts_url: str, credentials: dict[str, Any]) -> None:
        self.sts_url = sts_url
        self.credentials = botocore_credentials(credentials)

    def cloud_id(self) -> str:
        return make_cloud_id(self.sts_url, SERVER_ID, credentials=self.credentials)

    def request(self) -> tuple[str, bytes, dict[str, str]]:
        """The same signed GetCallerIdentity, decoded: what the server would send STS."""
        doc = json.loads(base64.b64decode(self.cloud_id()))
        headers = {name: values[0] for name, values in doc["headers"].items()}
        return doc["url"], base64.b64decode(doc["body"]), headers


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def sequential(url: str, access_id: str, prover: Prover, n: int, token: str) -> dict[str, Any]:
    """Samples (lists of seconds) of logins, STS calls alone and /health calls; ``handler`` and ``server_sts``:
    mean seconds per login in the /auth handler and waiting for STS, by the server's own clock."""
    logins: list[float] = []
    sts: list[float] = []
    hops: list[float] = []
    idle_hops: list[float] = []
    with httpx.Client(base_url=url, timeout=30) as server, httpx.Client(timeout=30, trust_env=False) as direct:

        def login() -> None:
            body = json.dumps({"access-type": "aws_iam", "access-id": access_id, "cloud-id": prover.cloud_id()})
            t0 = time.perf_counter()
            answer = server.post("/auth", content=body, headers={"Content-Type": "application/json"})
            elapsed = time.perf_counter() - t0
            if answer.status_code != 200:
                raise RuntimeError(f"login failed: {answer.status_code} {answer.text}")
            logins.append(elapsed)

        def sts_alone() -> None:
            sts_url, body, headers = prover.request()
            t0 = time.perf_counter()
            answer = direct.post(sts_url, content=body, headers=headers)
            elapsed = time.perf_counter() - t0
            if answer.status_code != 200 or b"GetCallerIdentityResult" not in answer.content:
                raise RuntimeError(f"STS refused the proof: {answer.status_code} {answer.text[:300]}")
            sts.append(elapsed)

        def hop(into: list[float]) -> None:
            t0 = time.perf_counter()
            answer = server.get("/health")
            into.append(time.perf_counter() - t0)
            if answer.status_code != 200:
                raise RuntimeError(f"health failed: {answer.status_code}")

        for _ in range(10):  # warm-up: connections, caches, moto's first requests
            login()
            sts_alone()
        logins.clear()
        sts.clear()
        with collector_paused():
            before = server_clock(server, token)
            for i in range(n):
                if i % 2:
                    login()
                    sts_alone()
                else:
                    sts_alone()
                    login()
            after = server_clock(server, token)
            for _ in range(n):
                hop(hops)
            pause = statistics.fmean(sts)
            for _ in range(n):  # each after a pause as long as an STS round trip: how a login finds the server
                time.sleep(pause)
                hop(idle_hops)
    return {
        "login": logins,
        "sts": sts,
        "hop": hops,
        "hop_after_pause": idle_hops,
        "handler": (after[0] - before[0]) / (after[2] - before[2]),
        "server_sts": (after[1] - before[1]) / (after[3] - before[3]),
    }


def server_clock(http: httpx.Client, token: str) -> tuple[float, float, int, int]:
    """The server's own clocks, from ``GET /metrics``: seconds in the ``auth`` handler and waiting for STS,
    and their counts."""
    answer = http.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    answer.raise_for_status()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }
    auth, sts = (("command", "auth"),), (("outcome", "answered"),)
    return (
        samples[("cedarkey_request_seconds_sum", auth)],
        samples[("cedarkey_sts_seconds_sum", sts)],
        int(samples[("cedarkey_request_seconds_count", auth)]),
        int(samples[("cedarkey_sts_seconds_count", sts)]),
    )


def throughput(url: str, access_id: str, prover: Prover, threads: int, duration: float) -> tuple[int, float]:
    # Proofs are made up front (moto-issued credentials, fresh nonces): the timed loop only logs in.
    per_thread = [[prover.cloud_id() for _ in range(int(duration * 400 / threads) + 50)] for _ in range(threads)]
    counts = [0] * threads
    failures: list[str] = []
    start = threading.Barrier(threads + 1)
    stop_at = [0.0]

    def worker(k: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            start.wait()
            ready = iter(per_thread[k])
            while time.perf_counter() < stop_at[0]:
                cloud_id = next(ready, None) or prover.cloud_id()  # fresh ones, should the made ones run out
                body = json.dumps({"access-type": "aws_iam", "access-id": access_id, "cloud-id": cloud_id})
                answer = http.post("/auth", content=body, headers={"Content-Type": "application/json"})
                if answer.status_code != 200:
                    failures.append(f"{answer.status_code} {answer.text[:200]}")
                    return
                counts[k] += 1

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    with collector_paused():
        stop_at[0] = time.perf_counter() + duration
        t0 = time.perf_counter()
        start.wait()
        for t in pool:
            t.join()
        elapsed = time.perf_counter() - t0
    if failures:
        raise RuntimeError(f"{len(failures)} logins failed, e.g. {failures[0]}")
    return sum(counts), elapsed


def measure(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="cedarkey-bench-login-"))
    halves = split_cpus() if args.placement == "split" else None
    server_cpus, other_cpus = halves or (None, None)
    with on_cpus(other_cpus):
        moto = start_moto()
    try:
        identities = make_aws_identities(moto.url)
        data = tmp / "data"
        init = subprocess.run([CEDARKEY, "init", "--data-dir", str(data)], capture_output=True, text=True, check=True)
        admin = json.loads(init.stdout)
        # The server starts on its CPUs (it inherits this process's set); this client then moves to moto's.
        with on_cpus(server_cpus), cedarkey_server(data, tmp / "cedarkey.log", moto.url) as url, on_cpus(other_cpus):
            access_id, token = setup(url, admin, moto.url)
            prover = Prover(moto.url, identities["dev_role"])
            seq = sequential(url, access_id, prover, args.logins, token)
            count, elapsed = throughput(url, access_id, prover, args.concurrency, args.duration)
        login_ms = [x * 1000 for x in seq["login"]]
        hop_ms = [x * 1000 for x in seq["hop"]]
        idle_hop_ms = [x * 1000 for x in seq["hop_after_pause"]]
        handler_ms, server_sts_ms = seq["handler"] * 1000, seq["server_sts"] * 1000
        sts_ms = [x * 1000 for x in seq["sts"]]
        login_mean, sts_mean = statistics.fmean(login_ms), statistics.fmean(sts_ms)
        login_p50, sts_p50 = percentile(login_ms, 0.5), percentile(sts_ms, 0.5)
        return {
            "logins_per_s": round(count / elapsed, 1),
            "sequential_logins_per_s": round(1000 / login_mean, 1),
            "login_ms_mean": round(login_mean, 3),
            "login_ms_p50": round(login_p50, 3),
            "login_ms_p99": round(percentile(login_ms, 0.99), 3),
            "sts_roundtrip_ms_mean": round(sts_mean, 3),
            "sts_roundtrip_ms_p50": round(sts_p50, 3),
            "sts_roundtrip_ms_p99": round(percentile(sts_ms, 0.99), 3),
            "own_cost_ms": round(login_mean - sts_mean, 3),
            "own_cost_ms_p50": round(login_p50 - sts_p50, 3),
            # the own cost against the baseline of the same run: what moves with the machine's speed cancels
            "own_cost_per_sts": round((login_mean - sts_mean) / sts_mean, 3),
            "http_hop_ms_mean": round(statistics.fmean(hop_ms), 3),
            "http_hop_ms_p50": round(percentile(hop_ms, 0.5), 3),
            "http_hop_after_pause_ms_mean": round(statistics.fmean(idle_hop_ms), 3),
            "http_hop_after_pause_ms_p50": round(percentile(idle_hop_ms, 0.5), 3),
            "handler_ms_mean": round(handler_ms, 3),
            "handler_sts_ms_mean": round(server_sts_ms, 3),
            "handler_own_ms_mean": round(handler_ms - server_sts_ms, 3),
            "logins_sequential": len(login_ms),
            "logins_concurrent": count,
            "concurrency": args.concurrency,
            "cpus": os.cpu_count(),
            "placement": "split" if halves else "shared",
            "server_cpus": sorted(server_cpus) if server_cpus else None,
        }
    finally:
        moto.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--logins", type=int, default=300, help="sequential logins (each with an STS call alone)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of the concurrent phase")
    parser.add_argument("--concurrency", type=int, default=8, help="threads logging in at once")
    parser.add_argument(
        "--placement",
        choices=["split", "shared"],
        default="split",
        help="split: the server on half the CPUs, moto and this client on the others (the default); "
        "shared: every process anywhere, as the scheduler likes",
    )
    args = parser.parse_args()
    result = measure(args)
    if args.json:
        print(json.dumps(result))
        return 0
    cpus = f"server on CPUs {result['server_cpus']}" if result["server_cpus"] else "all processes on all CPUs"
    print(f"placement: {result['placement']} ({cpus}; {result['cpus']} CPUs)")
    print(f"logins/s ({args.concurrency} concurrent):      {result['logins_per_s']:>8.1f}")
    print(f"logins/s (one at a time):         {result['sequential_logins_per_s']:>8.1f}")
    print(
        f"login latency     mean {result['login_ms_mean']:7.2f} ms  p50 {result['login_ms_p50']:7.2f}  "
        f"p99 {result['login_ms_p99']:7.2f}"
    )
    print(
        f"STS round trip    mean {result['sts_roundtrip_ms_mean']:7.2f} ms  p50 {result['sts_roundtrip_ms_p50']:7.2f}  "
        f"p99 {result['sts_roundtrip_ms_p99']:7.2f}"
    )
    print(
        f"server's own cost per login: {result['own_cost_ms']:.2f} ms mean, {result['own_cost_ms_p50']:.2f} ms "
        f"median (target <= 2 ms); {result['own_cost_per_sts']:.2f} x the STS round trip alone"
    )
    print(
        f"  in the /auth handler, by the server's own clock: {result['handler_ms_mean']:.2f} ms, of which STS "
        f"{result['handler_sts_ms_mean']:.2f}: own {result['handler_own_ms_mean']:.2f} ms"
    )
    print(
        f"  one HTTP exchange at all (GET /health): {result['http_hop_ms_mean']:.2f} ms back to back, "
        f"{result['http_hop_after_pause_ms_mean']:.2f} ms after an idle pause as long as an STS round trip"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
