"""The HTTP benches' load generators: ``wrk`` when it is installed (``apt-get install wrk``), else an asyncio
HTTP/1.1 client of this file's own (pre-encoded requests, one task per keep-alive connection). Both POST the
same bodies, in turn, with the same headers, and report the same fields.

Run as a script, this file is the asyncio generator, printing one JSON object:

    .venv/bin/python bench/load.py --url URL --body-file FILE [--header 'Name: value']...
                                   --duration S --warmup S --connections N
"""

from __future__ import annotations

import os
import sys

# This file sits next to bench/http.py: run as a script, its folder would come first on sys.path and that
# file would shadow the standard library's ``http`` package.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path.append(sys.path.pop(0))  # behind the standard library: ``import support`` still finds bench/

import argparse
import asyncio
import json
import resource
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from support import HOST

HERE = Path(__file__).resolve()
PYTHON = sys.executable

_WRK_SCRIPT = """
wrk.method = "POST"
%(headers)s
local bodies = {}
for line in io.lines(%(bodies)s) do bodies[#bodies + 1] = line end
-- Each request is formatted once, in each thread's init: the run then only hands out the bytes.
local formatted = {}
init = function(args)
  for i, body in ipairs(bodies) do formatted[i] = wrk.format(nil, nil, nil, body) end
end
local n = 0
request = function()
  n = n %% #formatted + 1
  return formatted[n]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "\\nJSON {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"p50_us\\": %%.1f, \\"p99_us\\": %%.1f, " ..
    "\\"non2xx\\": %%d, \\"socket_errors\\": %%d}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""


@dataclass(frozen=True)
class Load:
    """What every generator process of one kind of run is given: the same bodies, headers and settings."""

    generator: str
    connections: int
    duration: float
    warmup: float
    body_file: Path
    headers: dict[str, str]
    wrk_script: Path


def make_load(args: argparse.Namespace, bodies: list[bytes], headers: dict[str, str], tmp: Path) -> Load:
    """Writes ``bodies`` (one per line: compact JSON has no newline) and the wrk script in a folder of their
    own under ``tmp``; ``args`` holds the ``--generator``, ``--connections``, ``--duration``, ``--warmup``."""
    folder = Path(tempfile.mkdtemp(prefix="load-", dir=tmp))
    body_file = folder / "bodies.jsonl"
    body_file.write_bytes(b"\n".join(bodies) + b"\n")
    # Both generators send their own Content-Type.
    headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
    script = folder / "post.lua"
    lines = [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    lines.append('wrk.headers["Content-Type"] = "application/json"')
    script.write_text(_WRK_SCRIPT % {"bodies": json.dumps(str(body_file)), "headers": "\n".join(lines)})
    return Load(args.generator, args.connections, args.duration, args.warmup, body_file, headers, script)


def run_load(load: Load, urls: list[str]) -> list[dict[str, Any]]:
    """One generator process per URL, all at once (a warm-up, then the measured run); one result per URL,
    each with ``generator_cores``: the CPU all generators took over the run's wall time."""
    timeout = load.duration + load.warmup + 60
    if load.generator == "wrk":
        _run_together([_wrk_command(load, url, load.warmup) for url in urls], timeout)
    # The asyncio generator's own warm-up falls inside this window, so its CPU is divided by the wall time.
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    outs = _run_together([_command(load, url) for url in urls], timeout)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    results = [_wrk_result(out) if load.generator == "wrk" else json.loads(out) for out in outs]
    for r in results:
        if r["errors"]:
            raise RuntimeError(f"the load generator saw {r['errors']} failed calls")
        r["generator_cores"] = round(cpu / wall, 3)
    return results


def _command(load: Load, url: str) -> list[str]:
    """The measured run's command; the asyncio generator runs its own warm-up first."""
    if load.generator == "wrk":
        return _wrk_command(load, url, load.duration)
    cmd = [PYTHON, str(HERE), "--url", url, "--body-file", str(load.body_file), "--connections", str(load.connections)]
    cmd += ["--duration", str(load.duration), "--warmup", str(load.warmup)]
    for name, value in load.headers.items():
        cmd += ["--header", f"{name}: {value}"]
    return cmd


def _wrk_command(load: Load, url: str, seconds: float) -> list[str]:
    settings = ["-t1", f"-c{load.connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s"]
    return ["wrk", *settings, "-s", str(load.wrk_script), url]


def _wrk_result(out: str) -> dict[str, Any]:
    r = json.loads(next(ln for ln in out.splitlines() if ln.startswith("JSON "))[5:])
    seconds = r["duration_us"] / 1e6
    return {
        "requests": r["requests"],
        "seconds": seconds,
        "rps": r["requests"] / seconds,
        "p50_ms": r["p50_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
        "errors": r["non2xx"] + r["socket_errors"],
    }


def _run_together(commands: list[list[str]], timeout: float) -> list[str]:
    """Starts every command at once, waits for all; their stdouts. Every child is ended on the way out."""
    procs: list[subprocess.Popen[str]] = []
    try:
        for cmd in commands:
            procs.append(
                subprocess.Popen(
                    cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
                )
            )
        deadline = time.monotonic() + timeout
        outs = []
        for proc in procs:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            if proc.returncode != 0:
                raise RuntimeError(f"load generator failed ({proc.returncode}): {err[-2000:]}")
            outs.append(out)
        return outs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


# --- the asyncio generator -------------------------------------------------------------------------------


async def generate(args: argparse.Namespace) -> dict[str, Any]:
    """One task per keep-alive connection, each cycling through the pre-encoded requests and reading the
    whole answer before sending the next; latencies of the measured window only."""
    parts = urlsplit(args.url)
    host, port = parts.hostname or HOST, parts.port or 80
    requests = []
    for body in Path(args.body_file).read_bytes().splitlines():
        head = [
            f"POST {parts.path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            *args.header,
        ]
        requests.append(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
    start = time.perf_counter() + args.warmup
    end = start + args.duration
    latencies: list[float] = []
    statuses: Counter[int] = Counter()

    async def connection(k: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        n = k * 7919
        try:
            while True:
                t0 = time.perf_counter()
                if t0 >= end:
                    return
                n += 1
                writer.write(requests[n % len(requests)])
                header = await reader.readuntil(b"\r\n\r\n")
                status = int(header[9:12])
                length = 0
                for line in header.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                t1 = time.perf_counter()
                if t0 >= start:
                    latencies.append(t1 - t0)
                    statuses[status] += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection(k) for k in range(args.connections)))
    latencies.sort()
    n = len(latencies)
    return {
        "requests": n,
        "seconds": args.duration,
        "rps": n / args.duration,
        "p50_ms": latencies[n // 2] * 1000,
        "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1000,
        "errors": sum(c for s, c in statuses.items() if s != 200),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--body-file", required=True)
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--warmup", type=float, required=True)
    p.add_argument("--connections", type=int, required=True)
    print(json.dumps(asyncio.run(generate(p.parse_args()))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
