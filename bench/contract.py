"""The HTTP contract, at length: schemathesis with every check against a fresh ``cedarkey serve``.

    .venv/bin/python bench/contract.py [--json] [--max-examples 50] [--seed N]

The run of ``tests/test_contract.py`` with more examples per operation: as a member (every capability
under ``/member``) and then as the administrator, all four phases (examples, coverage, fuzzing, stateful
links). Prints, per caller, the operations tested, the cases generated and passed, the failing operations,
and the seconds taken; ``--json`` prints one object. Target: 0 failures, every operation tested.
"""

from __future__ import annotations

import os
import sys

sys.path.append(sys.path.pop(0))  # bench/ at the end: its http.py must not shadow the standard library's
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import json
import tempfile
import time
from pathlib import Path

import httpx
from support import arguments

from tests.support.contract import JSON, SERVER_FLAGS, login_body, member_login, run_contract
from tests.support.server import start_initialized


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--max-examples", type=int, default=50, help="examples per operation (default 50)")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        process, admin = start_initialized(Path(tmp) / "data", *SERVER_FLAGS, log=Path(tmp) / "server.log")
        try:
            admin_login = login_body(admin["access_id"], admin["access_key"])
            token = httpx.post(f"{process.url}/auth", content=admin_login, headers=JSON).json()["token"]
            out: dict[str, object] = {"max_examples": args.max_examples, "seed": args.seed}
            for caller, login in (("member", member_login(process.url, token)), ("admin", admin_login)):
                start = time.perf_counter()
                run = run_contract(process.url, login, max_examples=args.max_examples, seed=args.seed, timeout=3600)
                out[caller] = {
                    "operations": run.tested,
                    "of": run.selected,
                    "cases": run.cases,
                    "passed": run.passed,
                    "failing": run.failing,
                    "returncode": run.returncode,
                    "seconds": round(time.perf_counter() - start, 1),
                }
            out["server_alive"] = process.process.poll() is None
            out["tracebacks"] = (Path(tmp) / "server.log").read_text().count("Traceback")
        finally:
            process.stop()
    if args.json:
        print(json.dumps(out))
        return
    for caller in ("member", "admin"):
        r = out[caller]
        assert isinstance(r, dict)
        print(
            f"{caller:>6}: {r['operations']}/{r['of']} operations, {r['cases']} cases, {r['passed']} passed, "
            f"failing {r['failing'] or 'none'}, {r['seconds']} s"
        )
    print(f"server alive after both: {out['server_alive']}, tracebacks in its log: {out['tracebacks']}")


if __name__ == "__main__":
    main()
