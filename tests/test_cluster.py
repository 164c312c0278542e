"""Several real `cedarkey serve` nodes on one PostgreSQL database act as one service."""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cedarkey.client.proof import make_cloud_id

from tests.support.moto import MotoHandle, botocore_credentials
from tests.support.postgres import cut_connections, execute, fresh_database, maintenance_url
from tests.support.server import CEDARKEY, ServerProcess, start_server

SERVER_ID = "cluster-under-test"


@dataclass
class Cluster:
    url: str
    env: dict[str, str]
    admin: dict[str, str]
    nodes: list[ServerProcess]
    root: Path
    sts_url: str  # moto's, which every node trusts

    def start_node(self, name: str) -> ServerProcess:
        flags = ("--database-url", self.url, "--server-id", SERVER_ID, "--allowed-sts-url", self.sts_url)
        node = start_server(self.root / name, *flags, env=self.env)
        self.nodes.append(node)
        return node


def call(
    node: ServerProcess, command: str, token: str | None = None, name: str | None = None, **body: Any
) -> httpx.Response:
    data = {k.replace("_", "-"): v for k, v in body.items()}
    if name is not None:
        data["name"] = name
    if token is not None:
        data["token"] = token
    return httpx.post(f"{node.url}/{command}", json=data, timeout=30)


def ok(node: ServerProcess, command: str, token: str | None = None, **body: Any) -> dict[str, Any]:
    response = call(node, command, token, **body)
    assert response.status_code == 200, response.text
    return response.json()


def login(node: ServerProcess, access_id: str, key: str) -> str:
    return ok(node, "auth", access_type="access_key", access_id=access_id, access_key=key)["token"]


@pytest.fixture
def cluster(tmp_path: Path, moto: MotoHandle) -> Iterator[Cluster]:
    with fresh_database() as url:
        env = {"CEDARKEY_MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode()}
        init = subprocess.run(
            [CEDARKEY, "init", "--database-url", url, "--data-dir", str(tmp_path / "a")],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            check=True,
        )
        c = Cluster(url, env, json.loads(init.stdout), [], tmp_path, moto.url)
        try:
            c.start_node("a")
            c.start_node("b")
            yield c
        finally:
            for node in c.nodes:
                node.stop()


def _has_rule(node: ServerProcess, token: str, role: str, path: str) -> bool:
    """Whether ``node`` has ``role`` with a rule on ``path`` yet (a follower may not know the role yet)."""
    answer = call(node, "get-role", token, name=role)
    return answer.status_code == 200 and any(r["path"] == path for r in answer.json()["rules"])


def until(predicate: Any, timeout: float) -> float:
    """Seconds until ``predicate()`` is true; fails after ``timeout``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not true within {timeout} s")
        time.sleep(0.01)
    return time.monotonic() - start


def caller(c: Cluster, admin_token: str, name: str) -> tuple[str, str]:
    """An access-key auth method with a role of its own (no rules yet): its access id and key."""
    a = c.nodes[0]
    made = ok(a, "create-auth-method", admin_token, name=name)
    ok(a, "create-role", admin_token, name=f"{name}-role")
    ok(a, "assoc-role-am", admin_token, role_name=f"{name}-role", am_name=name)
    return made["access-id"], made["access-key"]


def test_init_twice_is_safe_and_prints_nothing_new(cluster: Cluster) -> None:
    again = subprocess.run(
        [CEDARKEY, "init", "--database-url", cluster.url, "--data-dir", str(cluster.root / "c")],
        capture_output=True,
        text=True,
        env={**os.environ, **cluster.env},
    )
    assert again.returncode == 0 and again.stdout == ""  # no new admin, no key shown again
    assert "already initialized" in again.stderr and "/" + cluster.url.rsplit("/", 1)[1] in again.stderr
    rows = execute(cluster.url, "SELECT count(*) FROM auth_methods")
    assert rows[0][0] == 1


def test_reset_admin_on_one_node_ends_the_old_key_on_every_node(cluster: Cluster) -> None:
    a, b = cluster.nodes
    old = cluster.admin
    on_b = login(b, old["access_id"], old["access_key"])
    reset = subprocess.run(
        [CEDARKEY, "init", "--reset-admin", "--database-url", cluster.url, "--data-dir", str(cluster.root / "a")],
        capture_output=True,
        text=True,
        env={**os.environ, **cluster.env},
        timeout=60,
    )
    assert reset.returncode == 0, reset.stderr
    new = json.loads(reset.stdout)
    assert new["access_id"] == old["access_id"] and new["access_key"] != old["access_key"]
    until(lambda: call(b, "list-items", on_b).status_code == 401, 2.0)  # b learns it from the change feed
    for node in (a, b):
        refused = call(node, "auth", access_type="access_key", access_id=old["access_id"], access_key=old["access_key"])
        assert refused.status_code == 401
        assert ok(node, "list-roles", login(node, new["access_id"], new["access_key"]))


def test_a_token_from_one_node_works_on_the_other_at_once(cluster: Cluster) -> None:
    a, b = cluster.nodes
    token = login(a, cluster.admin["access_id"], cluster.admin["access_key"])
    assert ok(b, "list-roles", token)["roles"]
    assert ok(a, "get-auth-method", token, name="/admin")["type"] == "access_key"


def test_rule_changes_revocations_and_deletions_are_live_everywhere_within_a_second(cluster: Cluster) -> None:
    a, b = cluster.nodes
    admin = login(a, cluster.admin["access_id"], cluster.admin["access_key"])
    access_id, key = caller(cluster, admin, "svc")
    svc = login(b, access_id, key)
    request = [{"path": "/app/x", "capability": "read"}]

    def decision(node: ServerProcess) -> str:
        return ok(node, "authorize", svc, requests=request)["decisions"][0]["decision"]

    assert decision(b) == "deny"
    ok(a, "set-role-rule", admin, role_name="svc-role", path="/app/*", capability=["read"])
    assert until(lambda: decision(b) == "allow", 1.0) < 1.0
    ok(b, "set-role-rule", admin, role_name="svc-role", path="/app/x", capability=["deny"])
    assert until(lambda: decision(a) == "deny", 1.0) < 1.0

    # The node that acknowledged a change answers by it at once, whatever its change feed is doing.
    for n in range(30):
        capability = ["read"] if n % 2 else ["deny"]
        ok(a, "set-role-rule", admin, role_name="svc-role", path="/app/x", capability=capability)
        assert decision(a) == ("allow" if n % 2 else "deny"), n
    ok(a, "update-role", admin, name="svc-role", description="renamed on a")
    assert until(lambda: ok(b, "get-role", admin, name="svc-role")["description"] == "renamed on a", 1.0) < 1.0
    ok(a, "revoke-token", svc)
    assert until(lambda: call(b, "list-items", svc).status_code == 401, 1.0) < 1.0

    svc2 = login(a, access_id, key)
    assert call(b, "list-items", svc2).status_code == 200
    ok(b, "delete-auth-method", admin, name="svc")
    assert until(lambda: call(a, "list-items", svc2).status_code == 401, 1.0) < 1.0


def test_a_login_proof_accepted_by_one_node_is_refused_by_every_other(
    cluster: Cluster, moto: MotoHandle, aws: dict[str, Any]
) -> None:
    a, b = cluster.nodes
    admin = login(a, cluster.admin["access_id"], cluster.admin["access_key"])
    creds = botocore_credentials(aws["dev_role"])
    made = ok(
        a,
        "create-auth-method-aws-iam",
        admin,
        name="iam",
        bound_aws_account_id=["123456789012"],
        bound_role_name=["dev-role"],
        sts_url=moto.url,
    )
    until(lambda: call(b, "get-auth-method", admin, name="iam").status_code == 200, 1.0)

    def attempt(node: ServerProcess, proof: str) -> int:
        body = {"access-type": "aws_iam", "access-id": made["access-id"], "cloud-id": proof}
        return httpx.post(f"{node.url}/auth", json=body, timeout=30).status_code

    proof = make_cloud_id(moto.url, SERVER_ID, credentials=creds)
    assert attempt(a, proof) == 200
    assert attempt(b, proof) == 401
    assert attempt(a, proof) == 401
    for _ in range(5):  # two copies at the two nodes at the same moment: exactly one gets in
        proof = make_cloud_id(moto.url, SERVER_ID, credentials=creds)
        with ThreadPoolExecutor(2) as pool:
            codes = sorted(pool.map(attempt, [a, b], [proof, proof]))
        assert codes == [200, 401]


def test_concurrent_writes_through_two_nodes_all_land_and_names_conflict_cleanly(cluster: Cluster) -> None:
    a, b = cluster.nodes
    admin = login(a, cluster.admin["access_id"], cluster.admin["access_key"])

    def write(n: int) -> int:
        node = (a, b)[n % 2]
        return call(node, "create-secret", admin, name=f"/load/s{n}", value=f"v{n}").status_code

    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(write, range(200)))
    assert codes == [200] * 200
    for node in (a, b):
        names = {i["item_name"] for i in ok(node, "list-items", admin, path="/load")["items"]}
        assert names == {f"/load/s{n}" for n in range(200)}
    assert ok(b, "get-secret-value", admin, name="/load/s7")["value"] == "v7"

    for n in range(5):  # the same name created on both nodes at once: one wins, the other is told 409
        with ThreadPoolExecutor(2) as pool:
            codes = sorted(
                r.status_code for r in pool.map(call, [a, b], ["create-role"] * 2, [admin] * 2, [f"race{n}"] * 2)
            )
        assert codes == [200, 409]


def test_a_killed_node_loses_nothing_acknowledged_and_the_other_keeps_serving(cluster: Cluster) -> None:
    a, b = cluster.nodes
    admin = login(a, cluster.admin["access_id"], cluster.admin["access_key"])
    acknowledged: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            name = f"/killed/s{n}"
            try:
                if call(a, "create-secret", admin, name=name, value="v").status_code == 200:
                    acknowledged.append(name)
            except httpx.HTTPError:
                return
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    until(lambda: len(acknowledged) >= 20, 30)
    a.stop(signal.SIGKILL)
    stop.set()
    thread.join(30)
    assert a.process.returncode == -signal.SIGKILL
    names = {i["item_name"] for i in ok(b, "list-items", admin, path="/killed")["items"]}
    assert set(acknowledged) <= names
    assert ok(b, "create-secret", admin, name="/after/kill", value="v")


def test_a_node_whose_database_connections_are_cut_answers_503_then_recovers(cluster: Cluster) -> None:
    a, b = cluster.nodes
    admin = login(a, cluster.admin["access_id"], cluster.admin["access_key"])
    dbname = cluster.url.rsplit("/", 1)[1]
    # No new connections, and every existing one cut: the database is gone for the nodes.
    maintenance = maintenance_url(cluster.url)
    execute(maintenance, f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
    cut_connections(cluster.url)
    try:
        answer = call(a, "create-secret", admin, name="/outage/x", value="v")
        assert answer.status_code == 503 and answer.json()["error"] == "Unavailable"
        # Decisions are answered from memory meanwhile.
        decided = ok(b, "authorize", admin, requests=[{"path": "/outage/x", "capability": "read"}])
        assert decided["decisions"][0]["decision"] == "allow"
    finally:
        execute(maintenance, f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
    until(lambda: call(a, "create-secret", admin, name="/outage/y", value="v").status_code in (200, 409), 15)
    assert ok(b, "get-secret-value", admin, name="/outage/y")["value"] == "v"
    # pg_terminate_backend alone (the server stays up): the next requests just work.
    cut_connections(cluster.url)
    assert ok(a, "create-secret", admin, name="/outage/z", value="v")
    ok(a, "create-role", admin, name="/z-readers")
    ok(a, "set-role-rule", admin, role_name="/z-readers", path="/z/*", capability=["read"])
    until(lambda: _has_rule(b, admin, "/z-readers", "/z/*"), 5)


def test_a_binding_change_ends_the_tokens_it_refuses_on_every_node(
    cluster: Cluster, moto: MotoHandle, aws: dict[str, Any]
) -> None:
    a, b = cluster.nodes
    admin = login(a, cluster.admin["access_id"], cluster.admin["access_key"])
    bound = {"bound_aws_account_id": ["123456789012"], "sts_url": moto.url}
    made = ok(a, "create-auth-method-aws-iam", admin, name="iam", bound_role_name=["dev-role"], **bound)
    until(lambda: call(b, "get-auth-method", admin, name="iam").status_code == 200, 1.0)
    proof = make_cloud_id(moto.url, SERVER_ID, credentials=botocore_credentials(aws["dev_role"]))
    token = ok(a, "auth", access_type="aws_iam", access_id=made["access-id"], cloud_id=proof)["token"]

    def works(node: ServerProcess) -> bool:
        return call(node, "lookup-token", token).status_code == 200

    assert works(a) and works(b)  # b holds it now
    # A change that still admits the identity keeps the token.
    ok(a, "update-auth-method-aws-iam", admin, name="iam", bound_role_name=["dev-role", "ops-role"], **bound)
    until(
        lambda: call(b, "get-auth-method", admin, name="iam").json()["bound-role-name"] == ["dev-role", "ops-role"], 1
    )
    assert works(a) and works(b)
    # The machine's role is no longer bound: its token ends here at once, there within a second.
    ok(a, "update-auth-method-aws-iam", admin, name="iam", bound_role_name=["ops-role"], **bound)
    assert call(a, "lookup-token", token).status_code == 401
    until(lambda: not works(b), 1.0)
    # A node started afterwards never serves it either (the store still holds the token's row).
    c = cluster.start_node("c")
    assert call(c, "lookup-token", token).json()["error"] == "AuthenticationFailed"
    assert call(c, "lookup-token", admin).status_code == 200
