"""A client flooding ``POST /auth`` from one address, in a process of its own (so that the test measuring
others during the flood does not share its interpreter): ``start_flood`` starts it, ``Flood.finish`` stops it
and says what it was answered.

    python -m tests.support.flood URL ADDRESS AT_LEAST CONNECTIONS  (auth's JSON body on standard input)

It sends ``X-Forwarded-For: ADDRESS`` (the server must believe loopback's) over ``CONNECTIONS`` keep-alive
connections as fast as they are answered, from the line ``go`` on standard input until the line ``stop``
and at least ``AT_LEAST`` requests, then prints ``{"statuses": {...}, "seconds": ...}``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Flood:
    process: subprocess.Popen[str]

    def finish(self) -> dict[str, Any]:
        """Stops the flood (once it has sent its least); its answers' statuses and how long it ran."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("stop\n")
        self.process.stdin.flush()
        result = json.loads(self.process.stdout.readline())
        self.process.wait(30)
        return result


def start_flood(url: str, address: str, body: dict[str, Any], *, at_least: int, connections: int) -> Flood:
    """The flood, running once this returns."""
    args = [sys.executable, "-m", "tests.support.flood", url, address, str(at_least), str(connections)]
    process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(json.dumps(body) + "\n")
    process.stdin.flush()
    assert process.stdout.readline().strip() == "ready"
    process.stdin.write("go\n")
    process.stdin.flush()
    return Flood(process)


def _flood(url: str, address: str, body: bytes, at_least: int, connections: int) -> dict[str, Any]:
    statuses: Counter[int] = Counter()
    lock, stopped = threading.Lock(), threading.Event()
    headers = {"content-type": "application/json", "x-forwarded-for": address}

    def connection() -> None:
        with httpx.Client(timeout=30) as http:
            while not stopped.is_set() or statuses.total() < at_least:
                status = http.post(f"{url}/auth", content=body, headers=headers).status_code
                with lock:
                    statuses[status] += 1

    threads = [threading.Thread(target=connection) for _ in range(connections)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    sys.stdin.readline()  # "stop"
    stopped.set()
    for thread in threads:
        thread.join()
    return {"statuses": {str(k): v for k, v in statuses.items()}, "seconds": time.monotonic() - start}


def main() -> None:
    url, address, at_least, connections = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    body = sys.stdin.readline().strip().encode()
    print("ready", flush=True)
    sys.stdin.readline()  # "go"
    print(json.dumps(_flood(url, address, body, at_least, connections)), flush=True)


if __name__ == "__main__":
    main()
