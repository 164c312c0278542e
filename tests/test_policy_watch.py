"""``serve --policies DIR``: the files are applied at start and every edit is live within a second; a broken
edit is refused and the last good model keeps serving. In-process (TestClient) and with a real process."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cedarkey.server.config import Settings
from cedarkey.server.main import create_app
from cedarkey.server.policy_watch import PolicyFilesError

from tests.support.server import CEDARKEY, Api, running_api, start_server

STORY = Path(__file__).resolve().parents[1] / "policies" / "examples" / "story"
LIVE_WITHIN = 1.0


def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> float:
    """Seconds until ``check()`` held (fails after ``timeout``)."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)
    return time.monotonic() - start


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    directory = tmp_path / "rules"
    shutil.copytree(STORY, directory)
    return directory


@pytest.fixture
def api(tmp_path: Path, rules: Path) -> Iterator[Api]:
    with running_api(tmp_path / "data", policies_dir=rules) as api:
        yield api


def capabilities(api: Api, role: str = "/dev-readers") -> list[list[str]]:
    return [r["capabilities"] for r in api.ok("get-role", name=role)["rules"]]


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_the_files_are_applied_at_start(api: Api) -> None:
    role = api.ok("get-role", name="/dev-readers")
    assert [r["path"] for r in role["rules"]] == ["/dev/*"]
    assert [a["am-name"] for a in role["associations"]] == ["/iamAuth1"]
    am = api.ok("get-auth-method", name="/iamAuth1")
    assert am["bound-role-name"] == ["dev-role"] and am["access-id"].startswith("p-")
    assert api.service.policy_watcher.generation == 1
    # the /admin role and auth method are untouched
    assert api.ok("get-role", name="/admin")["rules"]


def test_an_edit_is_live_within_a_second(api: Api, rules: Path) -> None:
    edit(rules / "roles.toml", 'capabilities = ["read", "list"]', 'capabilities = ["read", "list", "update"]')
    took = [wait_for(lambda: capabilities(api) == [["read", "update", "list"]])]
    # a new file, a new role: live too
    (rules / "ops.toml").write_text('[role.ops]\n[[role.ops.association]]\nauth_method = "iamAuth1"\n')
    took.append(wait_for(lambda: api.call("get-role", name="/ops").status_code == 200))
    # removing it removes the role
    (rules / "ops.toml").unlink()
    took.append(wait_for(lambda: api.call("get-role", name="/ops").status_code == 404))
    # Each is live in 0.1-0.2 s here. A stalled runner once made one of them take 1.16 s (CI, slow VM phase), so
    # one of the three may take up to twice the limit; a watcher that missed edits (and waited for its 1 s
    # rescan) would miss them all.
    assert sorted(took)[1] < LIVE_WITHIN and max(took) < 2 * LIVE_WITHIN, took


def test_a_broken_edit_is_refused_and_the_last_good_model_keeps_serving(
    api: Api, rules: Path, caplog: pytest.LogCaptureFixture
) -> None:
    watcher = api.service.policy_watcher
    before = api.ok("export-policies")["cedar"]
    edit(rules / "roles.toml", 'capabilities = ["read", "list"]', 'capabilities = ["read", "lisst"]')
    wait_for(lambda: watcher.last_error is not None)
    assert "roles.toml:11: role /dev-readers: rule 1: capabilities: unknown capability 'lisst'" in watcher.last_error
    assert any("refused" in r.getMessage() for r in caplog.records)
    time.sleep(1.2)  # a rescan later, still the last good model
    assert api.ok("export-policies")["cedar"] == before
    assert capabilities(api) == [["read", "list"]]
    # a broken Cedar file is refused too
    (rules / "extra.cedar").write_text("forbid (principal, action, resource) when { principal.colour };")
    edit(rules / "roles.toml", '"lisst"', '"list"')
    wait_for(lambda: watcher.last_error is not None and "extra.cedar:1" in watcher.last_error)
    assert api.ok("export-policies")["cedar"] == before
    # fixed: applied
    (rules / "extra.cedar").write_text('@id("x") forbid (principal, action, resource) when { false };')
    took = wait_for(lambda: '@id("file:\\"extra.cedar\\"/x")' in api.ok("export-policies")["cedar"])
    assert took < LIVE_WITHIN and watcher.last_error is None


def test_files_take_back_what_the_api_changed_on_the_next_edit(api: Api, rules: Path) -> None:
    api.ok("set-role-rule", role_name="/dev-readers", path="/tmp/*", capability=["read"])
    assert len(capabilities(api)) == 2
    (rules / "note.toml").write_text("# touched\n")
    assert wait_for(lambda: len(capabilities(api)) == 1) < LIVE_WITHIN


def test_deleting_an_auth_method_drops_its_tokens(api: Api, rules: Path) -> None:
    service = api.service
    access_id = api.ok("get-auth-method", name="/iamAuth1")["access-id"]
    from cedarkey.engine import Identity
    from cedarkey.server.tokens import Session, token_hash

    identity = Identity(access_id, "aws_iam", "assumed-role", account="123456789012", role_name="dev-role")
    service.tokens.add(token_hash("t-fake"), Session(identity, time.time(), time.time() + 60))
    (rules / "auth_methods.toml").unlink()
    (rules / "tests.toml").unlink()  # its cases log in through iamAuth1: an error once it is gone
    edit(rules / "roles.toml", '[[role.dev-readers.association]]\nauth_method = "iamAuth1"\n', "")
    wait_for(lambda: api.call("get-auth-method", name="/iamAuth1").status_code == 404)
    assert service.tokens.check("t-fake", time.time()) is None


def test_writes_through_the_api_wait_for_an_apply(api: Api, rules: Path) -> None:
    """The watcher and the API's writes share one lock: interleaving them loses nothing."""
    original = (rules / "roles.toml").read_text()
    for n in range(5):
        (rules / "roles.toml").write_text(original.replace("read the dev folder", f"read the dev folder ({n})"))
        api.ok("create-role", name=f"/api-made-{n}")
        time.sleep(0.05)
    wait_for(lambda: api.ok("get-role", name="/dev-readers")["description"].endswith("(4)"))
    model = api.service.engine.model
    stored = api.service.store.load()
    assert sorted(r.name for r in stored.roles) == sorted(model.roles)
    assert sorted(a.assoc_id for a in stored.associations) == sorted(model.associations)


def test_the_watcher_stops_with_the_app(tmp_path: Path, rules: Path) -> None:
    with running_api(tmp_path / "data", policies_dir=rules) as api:
        watcher = api.service.policy_watcher
        assert watcher.running
    assert not watcher.running


def test_broken_files_or_no_directory_stop_the_start(tmp_path: Path, rules: Path) -> None:
    edit(rules / "roles.toml", '"list"', '"lisst"')
    with pytest.raises(PolicyFilesError, match=r"roles\.toml:11"):
        create_app(Settings(data_dir=tmp_path / "a", policies_dir=rules))
    with pytest.raises(PolicyFilesError, match="not a directory"):
        create_app(Settings(data_dir=tmp_path / "b", policies_dir=tmp_path / "missing"))


# --- a real server process -------------------------------------------------------------------------------


def post(url: str, command: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}/{command}", json=body, timeout=10)


def test_a_real_server_serves_the_files_and_their_edits(tmp_path: Path, rules: Path) -> None:
    data = tmp_path / "data"
    init = subprocess.run([CEDARKEY, "init", "--data-dir", str(data)], capture_output=True, text=True, check=True)
    admin = json.loads(init.stdout)
    proc = start_server(data, "--policies", str(rules))
    try:
        login = {"access-type": "access_key", "access-id": admin["access_id"], "access-key": admin["access_key"]}
        token = post(proc.url, "auth", login).json()["token"]

        def rule_paths() -> list[str]:
            answer = post(proc.url, "get-role", {"name": "/dev-readers", "token": token})
            return [r["path"] for r in answer.json()["rules"]] if answer.status_code == 200 else []

        assert rule_paths() == ["/dev/*"]
        edit(rules / "roles.toml", 'path = "/dev/*"', 'path = "/development/*"')
        assert wait_for(lambda: rule_paths() == ["/development/*"]) < LIVE_WITHIN
        edit(rules / "roles.toml", 'path = "/development/*"', 'path = "/dev//*"')  # broken
        time.sleep(1.2)
        assert rule_paths() == ["/development/*"]
        assert proc.process.poll() is None
    finally:
        proc.stop()
    output = proc.process.stdout.read() if proc.process.stdout else ""
    assert "refused" in output and "roles.toml:10: role /dev-readers: rule 1: path" in output


def test_an_emptied_directory_does_not_remove_everything(api: Api, rules: Path) -> None:
    watcher = api.service.policy_watcher
    for path in rules.iterdir():
        path.unlink()
    wait_for(lambda: watcher.last_error is not None)
    assert "the files describe an empty model" in watcher.last_error
    assert api.call("get-role", name="/dev-readers").status_code == 200
    shutil.copytree(STORY, rules, dirs_exist_ok=True)
    wait_for(lambda: watcher.last_error is None)
