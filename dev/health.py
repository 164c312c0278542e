"""Waiting for a server process to answer ``GET /health`` (the tests and the benches start real servers)."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx


def wait_healthy(url: str, gone: Callable[[], str | None], timeout: float = 30) -> None:
    """Returns once ``url/health`` answers 200. ``gone()`` says why the process exited (None while it runs):
    RuntimeError with that, or when ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        why = gone()
        if why is not None:
            raise RuntimeError(f"server at {url} exited: {why}")
        try:
            if httpx.get(f"{url}/health", timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server at {url} did not become healthy within {timeout:g} s")
