"""The HTTP contract: ``/openapi.json`` is the exact truth of what the server accepts and answers.

schemathesis runs every check (schema-valid requests accepted, schema-violating ones refused, every status
and header documented, no 5xx, 405 for other methods, auth enforced) against a real ``cedarkey serve``, as
a caller with a few grants and as the administrator, through every operation, the stateful links included.
``bench/contract.py`` runs the same with more examples.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.contract import JSON, SERVER_FLAGS, login_body, member_login, run_contract
from tests.support.server import ServerProcess, start_initialized

#: Few examples per operation: the suite's run is a smoke of every check; bench/contract.py goes deeper.
EXAMPLES = 4
SEED = int(os.environ.get("CEDARKEY_CONTRACT_SEED", "20261204"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    data = tmp_path_factory.mktemp("contract")
    process, admin = start_initialized(data / "data", *SERVER_FLAGS, log=data / "server.log")
    try:
        yield process, admin
    finally:
        process.stop()


def test_the_document_is_the_servers_truth_for_a_member_and_for_the_administrator(
    server: tuple[ServerProcess, dict[str, str]],
) -> None:
    process, admin = server
    admin_login = login_body(admin["access_id"], admin["access_key"])
    admin_token = httpx.post(f"{process.url}/auth", content=admin_login, headers=JSON).json()["token"]
    # The member first: the administrator's run may delete what the member's grants hang on.
    for login in (member_login(process.url, admin_token), admin_login):
        run = run_contract(process.url, login, max_examples=EXAMPLES, seed=SEED, timeout=240)
        assert run.returncode == 0 and not run.failing, run.output[-6000:]
        assert run.selected == run.tested > 60, run.output[-3000:]  # every operation, API and console
        assert run.cases == run.passed > 1000, run.output[-3000:]
    assert process.process.poll() is None  # and the server is still up
    assert httpx.get(f"{process.url}/health").json()["status"] == "ok"


def test_the_document_is_valid_openapi_3_1(server: tuple[ServerProcess, dict[str, str]]) -> None:
    from openapi_spec_validator import validate

    document = httpx.get(f"{server[0].url}/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_the_server_log_holds_no_traceback(server: tuple[ServerProcess, dict[str, str]]) -> None:
    log = Path(server[0].process.args[server[0].process.args.index("--data-dir") + 1]).parent / "server.log"
    assert "Traceback" not in log.read_text()
