"""Secret versions (Akeyless's static-secret versions, Vault KV v2's): kept or overwritten, read by number,
rolled back, deleted one by one, bounded by max-versions; check-and-set; several secrets in one read. Through
the HTTP API in process, then the CLI against a real server."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import Api, cli, cli_ok, running_api, start_initialized, user_env


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with running_api(tmp_path / "data") as api:
        yield api


def value(api: Api, name: str, version: int | None = None) -> str:
    args = {"name": name} if version is None else {"name": name, "version": version}
    return api.ok("get-secret-value", **args)["value"]


def versions(api: Api, name: str) -> list[int]:
    return [v["version"] for v in api.ok("describe-item", name=name)["versions"]]


def test_an_update_overwrites_the_latest_unless_it_keeps_the_previous(api: Api) -> None:
    api.ok("create-secret", name="/v/db", value="one")
    assert api.ok("update-secret-val", name="/v/db", value="two")["version"] == 2
    assert versions(api, "/v/db") == [2]  # "one" is gone
    assert api.call("get-secret-value", name="/v/db", version=1).json()["error"] == "NotFound"
    assert api.ok("update-secret-val", name="/v/db", value="three", keep_prev_version="true")["version"] == 3
    assert versions(api, "/v/db") == [3, 2]
    assert (value(api, "/v/db"), value(api, "/v/db", 2), value(api, "/v/db", 3)) == ("three", "two", "three")
    described = api.ok("describe-item", name="/v/db")
    assert described["max_versions"] == 10 and "value" not in json.dumps(described)
    assert all(v["created_by"] == "access-key:" + api.admin["access_id"] for v in described["versions"])
    assert described["versions"][0]["created_at"] >= described["versions"][1]["created_at"]


def test_max_versions_drops_the_oldest(api: Api) -> None:
    api.ok("create-secret", name="/v/few", value="v1", max_versions=3)
    for n in range(2, 7):
        api.ok("update-secret-val", name="/v/few", value=f"v{n}", keep_prev_version="true")
    assert versions(api, "/v/few") == [6, 5, 4]
    api.ok("update-secret-val", name="/v/few", value="v7", keep_prev_version="true", max_versions=2)
    assert versions(api, "/v/few") == [7, 6]
    for bad in (0, 101):
        refused = api.call("create-secret", name="/v/bad", value="x", max_versions=bad)
        assert refused.status_code == 400 and "max-versions" in refused.json()["message"]


def test_rollback_makes_an_old_value_the_new_latest(api: Api) -> None:
    api.ok("create-secret", name="/v/rb", value="good")
    api.ok("update-secret-val", name="/v/rb", value="bad", keep_prev_version="true")
    rolled = api.ok("rollback-secret", name="/v/rb", version=1)
    assert rolled == {"name": "/v/rb", "version": 3, "from-version": 1}
    assert value(api, "/v/rb") == "good" and value(api, "/v/rb", 2) == "bad"  # history kept
    assert versions(api, "/v/rb") == [3, 2, 1]
    again = api.ok("rollback-secret", name="/v/rb", version=3)  # the latest's own value: a copy, harmless
    assert again["version"] == 4 and value(api, "/v/rb") == "good"
    assert api.call("rollback-secret", name="/v/rb", version=9).json()["error"] == "NotFound"


def test_one_version_is_deleted_the_latest_stays(api: Api) -> None:
    api.ok("create-secret", name="/v/del", value="a")
    api.ok("update-secret-val", name="/v/del", value="b", keep_prev_version="true")
    assert api.ok("delete-item", name="/v/del", version=1) == {"name": "/v/del", "deleted": True, "version": 1}
    assert versions(api, "/v/del") == [2]
    latest = api.call("delete-item", name="/v/del", version=2)
    assert latest.status_code == 409 and latest.json()["error"] == "VersionConflict"
    assert value(api, "/v/del") == "b"
    api.ok("delete-item", name="/v/del")
    assert api.call("describe-item", name="/v/del").status_code == 404


def test_check_and_set_refuses_a_stale_writer(api: Api) -> None:
    api.ok("create-secret", name="/v/cas", value="a")
    assert api.ok("update-secret-val", name="/v/cas", value="b", cas=1)["version"] == 2
    stale = api.call("update-secret-val", name="/v/cas", value="c", cas=1)
    assert stale.status_code == 409 and stale.json()["error"] == "VersionConflict"
    assert "at version 2, not 1" in stale.json()["message"]
    assert value(api, "/v/cas") == "b"


def test_several_names_answer_values_by_name_each_decided(api: Api) -> None:
    for name in ("/team/a", "/team/b", "/other/c"):
        api.ok("create-secret", name=name, value=name.upper())
    both = api.ok("get-secret-value", name=["/team/a", "team/b", "/team/a"])
    assert both == {"values": {"/team/a": "/TEAM/A", "/team/b": "/TEAM/B"}}
    member = api.ok("create-auth-method", name="/m")
    api.ok("create-role", name="/team-readers")
    api.ok("assoc-role-am", role_name="/team-readers", am_name="/m")
    api.ok("set-role-rule", role_name="/team-readers", path="/team/*", capability=["read"])
    token = api.ok("auth", access_type="access_key", access_id=member["access-id"], access_key=member["access-key"])
    mine = api.ok("get-secret-value", token["token"], name=["/team/a", "/team/b"])
    assert mine["values"] == {"/team/a": "/TEAM/A", "/team/b": "/TEAM/B"}
    refused = api.call("get-secret-value", token["token"], name=["/team/a", "/other/c"])
    assert refused.status_code == 403 and "/other/c" in refused.json()["message"]
    api.ok("update-secret-val", name="/team/a", value="A2", keep_prev_version="true")
    assert api.ok("get-secret-value", name=["/team/a", "/team/b"], version=1)["values"]["/team/a"] == "/TEAM/A"
    missing = api.call("get-secret-value", name=["/team/a", "/team/b"], version=2)
    assert missing.status_code == 404 and "/team/b" in missing.json()["message"]
    assert api.call("get-secret-value", name=[]).status_code == 400
    assert api.call("get-secret-value", name=[f"/n{i}" for i in range(101)]).status_code == 400


def test_a_versions_ciphertext_copied_elsewhere_does_not_decrypt(api: Api) -> None:
    api.ok("create-secret", name="/v/x", value="first")
    api.ok("update-secret-val", name="/v/x", value="second", keep_prev_version="true")
    db = api.settings.data_dir / "cedarkey.db"
    with sqlite3.connect(db) as conn:
        old = conn.execute("SELECT ciphertext, nonce FROM item_versions WHERE version = 1").fetchone()
        conn.execute("UPDATE items SET ciphertext = ?, nonce = ? WHERE name = '/v/x'", old)  # v1 as v2
    refused = api.call("get-secret-value", name="/v/x")
    assert refused.status_code == 503 and refused.json()["error"] == "ItemUnreadable"
    assert value(api, "/v/x", 1) == "first"


def test_the_cli_plays_versions_end_to_end(tmp_path: Path) -> None:
    server, admin = start_initialized(tmp_path / "data")
    try:
        env = user_env(tmp_path / "home")
        cli_ok(env, "configure", "--access-id", admin["access_id"], "--access-type", "access_key",
               "--access-key", admin["access_key"], "--gateway-url", server.url)  # fmt: skip
        cli_ok(env, "create-secret", "--name", "/cli/db", "--value", "one", "--max-versions", "5")
        cli_ok(env, "update-secret-val", "--name", "/cli/db", "--value", "two", "--keep-prev-version", "true")
        assert cli_ok(env, "get-secret-value", "--name", "/cli/db", "--version", "1") == "one\n"
        assert cli_ok(env, "get-secret-value", "--name", "/cli/db") == "two\n"
        described = json.loads(cli_ok(env, "describe-item", "--name", "/cli/db"))
        assert [v["version"] for v in described["versions"]] == [2, 1] and described["max_versions"] == 5
        stale = cli(env, "update-secret-val", "--name", "/cli/db", "--value", "x", "--cas", "1")
        assert stale.returncode == 1 and "VersionConflict" in stale.stderr
        assert json.loads(cli_ok(env, "rollback-secret", "--name", "/cli/db", "--version", "1"))["version"] == 3
        cli_ok(env, "create-secret", "--name", "/cli/other", "--value", "o")
        several = json.loads(cli_ok(env, "get-secret-value", "--name", "/cli/db", "--name", "/cli/other"))
        assert several == {"/cli/db": "one", "/cli/other": "o"}
        cli_ok(env, "delete-item", "--name", "/cli/db", "--version", "2")
        assert [v["version"] for v in json.loads(cli_ok(env, "describe-item", "--name", "/cli/db"))["versions"]] == [
            3,
            1,
        ]
    finally:
        server.stop()
