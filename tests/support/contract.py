"""The contract run: schemathesis, every check, against a real ``cedarkey serve`` and its ``/openapi.json``,
as one caller (``tests/test_contract.py`` keeps it short; ``bench/contract.py`` runs it longer).

The caller is given as auth's JSON body; ``tests/support/contract_hooks.py`` logs it in and keeps its
token fresh. Settings that are the contract's (expected statuses, the operations whose JSON-text flags a
schema cannot describe) are in ``tests/contract.toml``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.support.contract_hooks import CALLER_ADDRESS

ROOT = Path(__file__).resolve().parents[2]
SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
CONFIG = ROOT / "tests" / "contract.toml"
JSON = {"content-type": "application/json"}


@dataclass(frozen=True)
class ContractRun:
    returncode: int
    output: str
    selected: int
    tested: int
    cases: int
    passed: int

    @property
    def failing(self) -> list[str]:
        """The operations the report has a failure section for."""
        return re.findall(r"_{3,} ([A-Z]+ /\S*) _{3,}", self.output)


def _call(url: str, token: str, command: str, **body: Any) -> dict[str, Any]:
    answer = httpx.post(f"{url}/{command}", content=orjson.dumps({**body, "token": token}), headers=JSON)
    assert answer.status_code == 200, answer.text
    return answer.json()


def member_login(url: str, admin_token: str) -> bytes:
    """An access-key caller with every capability under /member, for items, roles and auth methods."""
    created = _call(url, admin_token, "create-auth-method", name="/contract/member")
    _call(url, admin_token, "create-role", name="/contract/members")
    _call(url, admin_token, "assoc-role-am", **{"role-name": "/contract/members", "am-name": "/contract/member"})
    for rule_type in ("item-rule", "role-rule", "auth-method-rule"):
        _call(
            url,
            admin_token,
            "set-role-rule",
            **{
                "role-name": "/contract/members",
                "path": "/member/*",
                "capability": ["read", "create", "update", "delete", "list"],
                "rule-type": rule_type,
            },
        )
    return login_body(created["access-id"], created["access-key"])


def login_body(access_id: str, access_key: str) -> bytes:
    return orjson.dumps({"access-type": "access_key", "access-id": access_id, "access-key": access_key})


#: What the contract's server is started with: the run's own logins come from an address of their own.
SERVER_FLAGS = ("--forwarded-allow-ips", "127.0.0.1")


def run_contract(url: str, login: bytes, *, max_examples: int, seed: int, timeout: float) -> ContractRun:
    """schemathesis against ``url`` as the caller whose login body is ``login``."""
    own = {**JSON, "x-forwarded-for": CALLER_ADDRESS}  # as the hooks log in: never limited by the run's /auth
    httpx.post(f"{url}/auth", content=login, headers=own).raise_for_status()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CEDARKEY_CONTRACT_URL": url,
        "CEDARKEY_CONTRACT_LOGIN": login.decode(),
        "NO_COLOR": "1",
    }
    command = [
        SCHEMATHESIS,
        "--config-file",
        str(CONFIG),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(max_examples),
        "--seed",
        str(seed),
        "--workers",
        "2",
        "--request-timeout",
        "30",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    output = done.stdout + done.stderr
    return ContractRun(
        done.returncode,
        output,
        _number(r"Selected: (\d+)/", output),
        _number(r"Tested: (\d+)", output),
        _number(r"(\d+) generated", output),
        _number(r"\d+ generated, (\d+) passed", output),
    )


def _number(pattern: str, text: str) -> int:
    found = re.search(pattern, text)
    return int(found.group(1)) if found else -1
