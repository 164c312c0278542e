"""Requests per second through the ASGI middleware (``cedarkey.client.middleware``) with a warm cache, against
the same Starlette route without it, in one run.

    .venv/bin/python bench/middleware.py [--json] [--duration 3] [--paths 100]

A ``cedarkey serve`` on a fresh data dir holds a caller with read on ``/reports/*``; a small Starlette service
wraps one route in the middleware, its watch following that server. Requests go to the ASGI app in process
(no sockets: what is measured is the middleware's own cost), cycling over ``--paths`` report names, after one
pass that fills the cache. Also measured: the same requests with the cache cold each time (every request asks
cedarkey over HTTP). Prints requests/s and µs per request for each, and the ratios to the bare route.
"""

from __future__ import annotations

import sys

sys.path.append(sys.path.pop(0))  # bench/ at the end: its http.py must not shadow the standard library's

import asyncio
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from cedarkey.client import Client
from cedarkey.client.middleware import CedarkeyAuthz, Protected
from cedarkey.client.profile import Profile
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from support import CEDARKEY, HOST, admin_token, arguments, call, free_port, serving


async def report(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def protect(scope: dict[str, object]) -> Protected | None:
    path = str(scope["path"])
    return Protected(path, "read") if path.startswith("/reports/") else None


def setup(url: str, admin: dict[str, str]) -> tuple[str, dict[str, str]]:
    """A caller's token, and the service's own access-key auth method (for its watch)."""
    with httpx.Client(base_url=url, timeout=30) as http:
        t = admin_token(http, admin)
        service = call(http, "create-auth-method", t, name="/bench/service")
        app = call(http, "create-auth-method", t, name="/bench/caller")
        call(http, "create-role", t, name="/bench/readers")
        call(http, "assoc-role-am", t, role_name="/bench/readers", am_name="/bench/caller")
        call(http, "set-role-rule", t, role_name="/bench/readers", path="/reports/*", capability=["read"])
        token = call(http, "auth", access_type="access_key", access_id=app["access-id"], access_key=app["access-key"])
        return str(token["token"]), service


async def rate(
    app: object, token: str, paths: list[str], duration: float, *, cold: CedarkeyAuthz | None = None
) -> float:
    """Requests per second to ``app`` for ``duration`` seconds (``cold``: its cache emptied before each)."""
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        for path in paths:  # warm: every path asked once
            assert (await client.get(path, headers=headers)).status_code == 200
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < duration:
            for path in paths:
                if cold is not None:
                    cold.clear()
                response = await client.get(path, headers=headers)
                assert response.status_code == 200, response.text
                done += 1
        return done / (time.perf_counter() - start)


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of each measurement (default 3)")
    parser.add_argument("--paths", type=int, default=100, help="distinct report paths cycled over (default 100)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CEDARKEY_HOME"] = str(Path(tmp) / "home")
        data, port = Path(tmp) / "data", free_port()
        init = subprocess.run([CEDARKEY, "init", "--data-dir", str(data)], capture_output=True, check=True)
        admin = json.loads(init.stdout)
        url = f"http://{HOST}:{port}"
        with serving([CEDARKEY, "serve", "--data-dir", str(data), "--port", str(port)], url, Path(tmp) / "log"):
            token, service = setup(url, admin)
            watcher = Client(url, Profile("bench", service["access-id"], "access_key", url, service["access-key"]))
            bare = Starlette(routes=[Route("/reports/{name}", report)])
            authz = CedarkeyAuthz(bare, watcher=watcher, protect=protect)
            assert authz.wait_until_watching(), "the middleware's watch did not connect"
            paths = [f"/reports/r{n}" for n in range(args.paths)]

            async def measure() -> tuple[float, float, float]:
                bare_rate = await rate(bare, token, paths, args.duration)
                warm_rate = await rate(authz, token, paths, args.duration)
                return bare_rate, warm_rate, await rate(authz, token, paths[:10], args.duration, cold=authz)

            bare_rate, warm_rate, cold_rate = asyncio.run(measure())
            authz.stop()
    out = {
        "bare_req_per_s": round(bare_rate),
        "warm_req_per_s": round(warm_rate),
        "cold_req_per_s": round(cold_rate),
        "warm_us_per_request": round(1e6 / warm_rate, 1),
        "middleware_us_warm": round(1e6 / warm_rate - 1e6 / bare_rate, 1),
        "warm_vs_bare": round(warm_rate / bare_rate, 2),
        "cold_vs_bare": round(cold_rate / bare_rate, 3),
        "hit_rate": round(authz.stats.hits / max(1, authz.stats.hits + authz.stats.asked), 3),
    }
    if args.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            print(f"{key:>22}: {value}")


if __name__ == "__main__":
    main()
