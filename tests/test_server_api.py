"""The HTTP API, command by command, against the real app (Starlette's TestClient around ``create_app``).

Everything is real: the SQLite store in a temporary data dir, the engine, the token registry, the audit log;
the AWS IAM logins go through the real verifier to moto's real STS (request authentication on).
"""

from __future__ import annotations

import gc
import hashlib
import re
import secrets
import sqlite3
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cedarkey.client.proof import make_cloud_id
from cedarkey.server.commands import COMMANDS
from cedarkey.server.config import Settings
from cedarkey.server.main import create_app
from starlette.testclient import TestClient

from tests.support.moto import ACCOUNT_ID, MotoHandle, botocore_credentials
from tests.support.server import Api, running_api

AUTH_FAILED = {"error": "AuthenticationFailed", "message": "access authentication failed"}
ALL_CAPS = ["read", "create", "update", "delete", "list"]


# --- fixtures and helpers ------------------------------------------------------------------------------


#: An STS URL nothing answers on, which the test servers are told to trust.
CLOSED_STS_URL = "http://127.0.0.1:9/"


@pytest.fixture
def api(tmp_path: Path, moto: MotoHandle) -> Iterator[Api]:
    with running_api(tmp_path / "data", allowed_sts_urls=(CLOSED_STS_URL, moto.url)) as api:
        yield api


def post(client: TestClient, command: str, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return client.post(f"/{command}", content=orjson.dumps(body), headers=headers)


def login_key(client: TestClient, access_id: str, key: str) -> httpx.Response:
    return post(client, "auth", {"access-type": "access_key", "access-id": access_id, "access-key": key})


def token_of(client: TestClient, access_id: str, key: str) -> str:
    answer = login_key(client, access_id, key)
    assert answer.status_code == 200, answer.text
    return answer.json()["token"]


def assert_error(response: httpx.Response, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "message"}, body
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    if field is not None:
        assert body["message"].startswith(f"{field}:"), body
    return body


def assert_401(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json() == AUTH_FAILED
    assert response.headers.get("www-authenticate") == "Bearer"


@dataclass
class Caller:
    """A non-admin caller: an access-key auth method, its key and a live token."""

    name: str
    access_id: str
    key: str
    token: str


def make_caller(api: Api, name: str, role: str, rules: list[tuple[str, str, list[str]]]) -> Caller:
    """An access-key auth method ``name`` associated with a new role ``role`` holding ``rules``
    (``(rule type, path, capabilities)``), logged in."""
    created = api.ok("create-auth-method", name=name)
    api.ok("create-role", name=role)
    api.ok("assoc-role-am", role_name=role, am_name=name)
    for rule_type, path, caps in rules:
        api.ok("set-role-rule", role_name=role, path=path, capability=caps, rule_type=rule_type)
    token = token_of(api.client, created["access-id"], created["access-key"])
    return Caller(name, created["access-id"], created["access-key"], token)


def limited(api: Api) -> Caller:
    """Item rules only: read and list under /dev, everything under /dev/rw."""
    return make_caller(
        api,
        "/apps/limited",
        "/apps/reader",
        [("item-rule", "/dev/*", ["read", "list"]), ("item-rule", "/dev/rw/*", ALL_CAPS)],
    )


@contextmanager
def reopened(data_dir: Path, **settings: Any) -> Iterator[TestClient]:
    """The app created again on the same data dir (a restart): no new admin is made."""
    app, admin = create_app(Settings(data_dir=data_dir, **settings))
    assert admin is None
    with TestClient(app, headers={"content-type": "application/json"}) as client:
        yield client


def data_dir(api: Api) -> Path:
    return api.settings.data_dir


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        sample_name, _, rest = sample.partition("{")
        got = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if sample_name == name and got == wanted:
            return float(value)
    return 0.0


# --- moto, for the aws_iam logins ----------------------------------------------------------------------


def aws_login(api: Api, access_id: str, sts_url: str, credentials: dict[str, Any]) -> httpx.Response:
    cloud_id = make_cloud_id(sts_url, api.settings.server_id, credentials=botocore_credentials(credentials))
    return post(api.client, "auth", {"access-type": "aws_iam", "access-id": access_id, "cloud-id": cloud_id})


# === happy paths: auth methods =========================================================================


def test_access_key_auth_method_key_shown_once_and_logs_in(api: Api) -> None:
    created = api.ok("create-auth-method", name="svc/batch", jwt_ttl=600)
    assert created["name"] == "/svc/batch"
    assert re.fullmatch(r"p-[a-z0-9]{16}", created["access-id"])
    key = created["access-key"]
    assert isinstance(key, str) and len(key) >= 32
    assert "warning" not in created

    # Never shown again: not by get, not by list.
    shown = api.ok("get-auth-method", name="/svc/batch")
    assert shown["access-id"] == created["access-id"] and shown["type"] == "access_key"
    assert shown["jwt-ttl"] == 600
    assert key not in orjson.dumps(shown).decode()
    assert key not in api.call("list-auth-methods").text

    answer = login_key(api.client, created["access-id"], key)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"token", "expires-at"}
    assert re.fullmatch(r"t-[A-Za-z0-9_-]{43}", body["token"])
    assert abs(body["expires-at"] - (time.time() + 600)) < 30
    # The token works (no role: an empty but successful listing).
    assert api.ok("list-items", token=body["token"]) == {"items": [], "folders": []}
    # Each login gives a new token.
    assert token_of(api.client, created["access-id"], key) != body["token"]


def test_aws_iam_auth_method_create_get_and_update_keeps_unspecified_fields(api: Api) -> None:
    created = api.ok(
        "create-auth-method-aws-iam",
        name="/iam/dev",
        bound_aws_account_id=[ACCOUNT_ID],
        bound_role_name=["dev-role"],
        sts_url="http://127.0.0.1:9/",
        jwt_ttl=900,
        bound_ips=["10.0.0.0/8"],
    )
    assert created["name"] == "/iam/dev" and created["access-id"].startswith("p-")
    assert "access-key" not in created and "warning" not in created
    before = api.ok("get-auth-method", name="/iam/dev")
    assert before["type"] == "aws_iam"
    assert before["bound-aws-account-id"] == [ACCOUNT_ID]
    assert before["bound-role-name"] == ["dev-role"]
    assert before["sts-url"] == "http://127.0.0.1:9/"
    assert before["jwt-ttl"] == 900 and before["bound-ips"] == ["10.0.0.0/8"]

    # Only the flags given change.
    updated = api.ok("update-auth-method-aws-iam", name="/iam/dev", bound_arn=["arn:aws:iam::123456789012:role/*"])
    assert updated["access-id"] == created["access-id"]
    after = api.ok("get-auth-method", name="/iam/dev")
    assert after == {**before, "bound-arn": ["arn:aws:iam::123456789012:role/*"]}

    api.ok("update-auth-method-aws-iam", name="/iam/dev", jwt_ttl=120, bound_role_name=["ops-role", "dev-role"])
    again = api.ok("get-auth-method", name="/iam/dev")
    assert again == {**after, "jwt-ttl": 120, "bound-role-name": ["ops-role", "dev-role"]}

    # A null flag is "not given": it keeps the value too.
    api.ok("update-auth-method-aws-iam", name="/iam/dev", bound_role_name=None)
    assert api.ok("get-auth-method", name="/iam/dev") == again

    # The STS URL a proof must be signed for, without a token.
    lookup = api.client.post("/lookup-sts-url", content=orjson.dumps({"access-id": created["access-id"]}))
    assert lookup.status_code == 200 and lookup.json() == {"sts-url": "http://127.0.0.1:9/"}

    # The default STS URL; a least-privilege warning for an account-only binding.
    wide = api.ok("create-auth-method-aws-iam", name="/iam/wide", bound_aws_account_id=[ACCOUNT_ID])
    assert "least privilege" in wide["warning"]
    assert api.ok("get-auth-method", name="/iam/wide")["sts-url"] == "https://sts.amazonaws.com/"

    # Only aws_iam auth methods are updated by this command.
    api.ok("create-auth-method", name="/keys/k")
    assert_error(api.call("update-auth-method-aws-iam", name="/keys/k", jwt_ttl=120), 404, "NotFound", "name")


def test_list_and_delete_auth_methods(api: Api) -> None:
    api.ok("create-auth-method", name="/b")
    api.ok("create-auth-method-aws-iam", name="/a", bound_aws_account_id=[ACCOUNT_ID], bound_role_name=["r"])
    listed = api.ok("list-auth-methods")["auth-methods"]
    assert [am["name"] for am in listed] == ["/a", "/admin", "/b"]
    assert all("access-key" not in am for am in listed)

    assert api.ok("delete-auth-method", name="/b") == {"name": "/b", "deleted": True}
    assert [am["name"] for am in api.ok("list-auth-methods")["auth-methods"]] == ["/a", "/admin"]
    assert_error(api.call("get-auth-method", name="/b"), 404, "NotFound", "name")
    assert_error(api.call("delete-auth-method", name="/b"), 404, "NotFound", "name")


# === happy paths: roles, associations, rules ============================================================


def test_roles_create_get_list_delete(api: Api) -> None:
    assert api.ok("create-role", name="team/readers", description="people who read") == {"name": "/team/readers"}
    api.ok("create-role", name="/team/writers")
    role = api.ok("get-role", name="/team/readers")
    assert role == {"name": "/team/readers", "description": "people who read", "associations": [], "rules": []}
    names = [r["name"] for r in api.ok("list-roles")["roles"]]
    assert names == ["/admin", "/team/readers", "/team/writers"]

    assert api.ok("delete-role", name="/team/readers") == {"name": "/team/readers", "deleted": True}
    assert [r["name"] for r in api.ok("list-roles")["roles"]] == ["/admin", "/team/writers"]
    assert_error(api.call("get-role", name="/team/readers"), 404, "NotFound", "name")
    assert_error(api.call("delete-role", name="/team/readers"), 404, "NotFound", "name")


def test_update_role_changes_only_the_description(api: Api) -> None:
    api.ok("create-role", name="/team/ops", description="before")
    api.ok("create-auth-method", name="/team/key")
    assoc = api.ok("assoc-role-am", role_name="/team/ops", am_name="/team/key")["assoc-id"]
    api.ok("set-role-rule", role_name="/team/ops", path="/ops/*", capability=["read"])
    assert api.ok("update-role", name="team/ops", description="after") == {"name": "/team/ops", "description": "after"}
    role = api.ok("get-role", name="/team/ops")
    assert role["description"] == "after" and [a["assoc-id"] for a in role["associations"]] == [assoc]
    assert role["rules"] == [{"rule-type": "item-rule", "path": "/ops/*", "capabilities": ["read"]}]
    assert_error(api.call("update-role", name="/team/none", description="x"), 404, "NotFound", "name")
    assert_error(api.call("update-role", name="/team/ops", description="a\x00b"), 400, "BadRequest", "description")
    with reopened(data_dir(api)) as client:  # stored, not only in memory
        answer = post(client, "get-role", {"name": "/team/ops", "token": api.admin_token})
        assert answer.json()["description"] == "after"


def test_apply_model_updates_a_description_in_place(api: Api) -> None:
    """A role whose description alone changed keeps its associations (their ids) and rules."""
    api.ok("create-role", name="/team/ops", description="before")
    api.ok("create-auth-method", name="/team/key")
    assoc = api.ok("assoc-role-am", role_name="/team/ops", am_name="/team/key")["assoc-id"]
    model = api.ok("export-model")
    next(r for r in model["roles"] if r["name"] == "/team/ops")["description"] = "after"
    answer = api.ok("apply-model", model=orjson.dumps(model).decode())
    assert answer["plan"]["summary"] == {"add": 0, "change": 1, "remove": 0}
    role = api.ok("get-role", name="/team/ops")
    assert role["description"] == "after" and [a["assoc-id"] for a in role["associations"]] == [assoc]


def test_assoc_with_sub_claims_and_delete_by_id_and_by_role_and_am(api: Api) -> None:
    am = api.ok("create-auth-method", name="/apps/k")
    token = token_of(api.client, am["access-id"], am["access-key"])
    api.ok("create-secret", name="/dev/a", value="v")
    api.ok("create-role", name="/r/dev")
    api.ok("set-role-rule", role_name="/r/dev", path="/dev/*", capability=["read"])

    def can_read() -> bool:
        answer = api.ok("authorize", token=token, requests=[{"path": "/dev/a", "capability": "read"}])
        return answer["decisions"][0]["decision"] == "allow"

    # A sub-claim the access-key identity does not meet: the role does not apply.
    miss = api.ok("assoc-role-am", role_name="/r/dev", am_name="/apps/k", sub_claim=["role_name=dev-*"])
    assert miss["sub-claims"] == {"role_name": ["dev-*"]}
    assert miss["role-name"] == "/r/dev" and miss["am-name"] == "/apps/k"
    assert miss["assoc-id"].startswith("ac-")
    assert not can_read()

    # One it meets: it does.
    hit = api.ok("assoc-role-am", role_name="/r/dev", am_name="/apps/k", sub_claim=["principal_type=access-*"])
    assert can_read()
    role = api.ok("get-role", name="/r/dev")
    assert {a["assoc-id"]: a["sub-claims"] for a in role["associations"]} == {
        miss["assoc-id"]: {"role_name": ["dev-*"]},
        hit["assoc-id"]: {"principal_type": ["access-*"]},
    }
    assert {a["am-name"] for a in role["associations"]} == {"/apps/k"}

    # By id.
    assert api.ok("delete-assoc", assoc_id=hit["assoc-id"]) == {"assoc-id": hit["assoc-id"], "deleted": True}
    assert not can_read()
    assert_error(api.call("delete-assoc", assoc_id=hit["assoc-id"]), 404, "NotFound", "assoc-id")

    # By role and auth method (exactly one association left between them).
    api.ok("delete-assoc", role_name="/r/dev", am_name="/apps/k")
    assert api.ok("get-role", name="/r/dev")["associations"] == []
    assert_error(api.call("delete-assoc", role_name="/r/dev", am_name="/apps/k"), 404, "NotFound")

    # Without sub-claims: applies to every identity of the auth method.
    api.ok("assoc-role-am", role_name="/r/dev", am_name="/apps/k")
    assert can_read()
    # Two associations between the same pair: by role and am is ambiguous, and says so.
    api.ok("assoc-role-am", role_name="/r/dev", am_name="/apps/k", sub_claim=["principal_type=x"])
    assert_error(api.call("delete-assoc", role_name="/r/dev", am_name="/apps/k"), 409, "Ambiguous", "assoc-id")


def test_aws_iam_login_through_moto_with_sub_claims(api: Api, moto: MotoHandle, aws: dict[str, Any]) -> None:
    am = api.ok("create-auth-method-aws-iam", name="/iam/acct", bound_aws_account_id=[ACCOUNT_ID], sts_url=moto.url)
    api.ok("create-role", name="/r/dev")
    api.ok("set-role-rule", role_name="/r/dev", path="/dev/*", capability=["read"])
    api.ok("assoc-role-am", role_name="/r/dev", am_name="/iam/acct", sub_claim=["role_name=dev-*"])

    decisions = {}
    for who in ("dev_role", "other_role"):
        answer = aws_login(api, am["access-id"], moto.url, aws[who])
        assert answer.status_code == 200, answer.text
        token = answer.json()["token"]
        asked = api.ok("authorize", token=token, requests=[{"path": "/dev/x", "capability": "read"}])
        decisions[who] = asked["decisions"][0]["decision"]
    assert decisions == {"dev_role": "allow", "other_role": "deny"}

    # Bound to the role name: the other role is refused at login, with the real reason in the audit log.
    api.ok("update-auth-method-aws-iam", name="/iam/acct", bound_role_name=["dev-role"])
    assert aws_login(api, am["access-id"], moto.url, aws["dev_role"]).status_code == 200
    assert_401(aws_login(api, am["access-id"], moto.url, aws["other_role"]))
    events = [orjson.loads(line) for line in (data_dir(api) / "audit.log").read_text().splitlines()]
    failures = [e for e in events if e["event"] == "login" and e["outcome"] == "failure"]
    assert failures[-1]["reason"] == "binding_mismatch" and "bound-role-name" in failures[-1]["detail"]
    assert failures[-1]["access_id"] == am["access-id"]

    # Every STS exchange (refused identities too: STS answered) is in the STS histogram, apart from the
    # request latency: four logins, four round trips, each shorter than its whole login.
    scraped = api.client.get("/metrics", headers={"authorization": f"Bearer {api.admin_token}"}).text
    assert metric(scraped, "cedarkey_sts_seconds_count", outcome="answered") == 4
    assert metric(scraped, "cedarkey_sts_seconds_count", outcome="unreachable") == 0
    sts_seconds = metric(scraped, "cedarkey_sts_seconds_sum", outcome="answered")
    assert 0 < sts_seconds < metric(scraped, "cedarkey_request_seconds_sum", command="auth")


def test_set_role_rule_replaces_and_delete_role_rule(api: Api) -> None:
    caller = limited(api)
    api.ok("create-secret", name="/dev/x", value="v")

    def decision(capability: str) -> str:
        answer = api.ok("authorize", token=caller.token, requests=[{"path": "/dev/x", "capability": capability}])
        return answer["decisions"][0]["decision"]

    assert (decision("read"), decision("list")) == ("allow", "allow")
    answer = api.ok("set-role-rule", role_name="/apps/reader", path="/dev/*", capability=["list"])
    assert answer == {"role-name": "/apps/reader", "rule-type": "item-rule", "path": "/dev/*", "capabilities": ["list"]}
    # Replaced, not merged: read is gone.
    assert (decision("read"), decision("list")) == ("deny", "allow")
    rules = api.ok("get-role", name="/apps/reader")["rules"]
    assert [r for r in rules if r["path"] == "/dev/*"] == [
        {"rule-type": "item-rule", "path": "/dev/*", "capabilities": ["list"]}
    ]
    # The same path under another rule type is another rule.
    api.ok("set-role-rule", role_name="/apps/reader", path="/dev/*", capability=["read"], rule_type="role-rule")
    assert len(api.ok("get-role", name="/apps/reader")["rules"]) == 3

    # A deny rule beats the allows.
    api.ok("set-role-rule", role_name="/apps/reader", path="/dev/x", capability=["deny"])
    assert decision("list") == "deny"
    deleted = api.ok("delete-role-rule", role_name="/apps/reader", path="/dev/x")
    assert deleted == {"role-name": "/apps/reader", "rule-type": "item-rule", "path": "/dev/x", "deleted": True}
    assert decision("list") == "allow"
    assert_error(api.call("delete-role-rule", role_name="/apps/reader", path="/dev/x"), 404, "NotFound", "path")
    api.ok("delete-role-rule", role_name="/apps/reader", path="/dev/*", rule_type="role-rule")
    assert len(api.ok("get-role", name="/apps/reader")["rules"]) == 2


# === happy paths: items =================================================================================


def test_items_create_get_update_describe_list_delete(api: Api) -> None:
    created = api.ok("create-secret", name="dev/db-password", value="s3cret-1", description="the db")
    assert created == {"name": "/dev/db-password", "version": 1}
    api.ok("create-secret", name="/dev/api/key", value="k")
    api.ok("create-secret", name="/prod/db-password", value="p")
    assert api.ok("get-secret-value", name="/dev/db-password") == {
        "name": "/dev/db-password",
        "value": "s3cret-1",
        "version": 1,
    }
    described = api.ok("describe-item", name="/dev/db-password")
    assert "value" not in described and "s3cret-1" not in orjson.dumps(described).decode()
    assert described["item_name"] == "/dev/db-password" and described["item_type"] == "STATIC_SECRET"
    assert described["description"] == "the db" and described["version"] == 1
    assert described["created_at"] == described["updated_at"]

    assert api.ok("update-secret-val", name="/dev/db-password", value="s3cret-2") == {
        "name": "/dev/db-password",
        "version": 2,
    }
    assert api.ok("update-secret-val", name="/dev/db-password", value="s3cret-3")["version"] == 3
    assert api.ok("get-secret-value", name="/dev/db-password")["value"] == "s3cret-3"
    again = api.ok("describe-item", name="/dev/db-password")
    assert again["version"] == 3 and again["description"] == "the db"
    assert again["created_at"] == described["created_at"]

    listed = api.ok("list-items")
    assert [i["item_name"] for i in listed["items"]] == ["/dev/api/key", "/dev/db-password", "/prod/db-password"]
    assert listed["folders"] == ["/dev/", "/dev/api/", "/prod/"]
    assert "s3cret" not in orjson.dumps(listed).decode()
    under = api.ok("list-items", path="/dev")
    assert [i["item_name"] for i in under["items"]] == ["/dev/api/key", "/dev/db-password"]

    assert api.ok("delete-item", name="/dev/db-password") == {"name": "/dev/db-password", "deleted": True}
    for command in ("get-secret-value", "describe-item", "delete-item"):
        assert_error(api.call(command, name="/dev/db-password"), 404, "NotFound", "name")
    assert_error(api.call("update-secret-val", name="/dev/db-password", value="x"), 404, "NotFound", "name")
    # Unicode values round-trip.
    api.ok("create-secret", name="/dev/unicode", value="päss\u00a0wörd ✓ \U0001f511\x00")
    assert api.ok("get-secret-value", name="/dev/unicode")["value"] == "päss\u00a0wörd ✓ \U0001f511\x00"


def test_list_items_accepts_the_folders_it_answers(api: Api) -> None:
    """``list-items`` answers folders as ``/dev/``; given back as ``path`` they list that folder (and ``/``,
    the root, lists everything) instead of a 400."""
    for name in ("/dev/a", "/dev/sub/b", "/prod/c"):
        api.ok("create-secret", name=name, value="v")
    listed = api.ok("list-items")
    assert listed["folders"] == ["/dev/", "/dev/sub/", "/prod/"]
    assert api.ok("list-items", path="/") == listed
    for folder in listed["folders"]:
        under = api.ok("list-items", path=folder)
        assert under == api.ok("list-items", path=folder.rstrip("/"))
        assert under["items"] and all(i["item_name"].startswith(folder) for i in under["items"])


# === happy paths: decisions =============================================================================


def test_authorize_one_request(api: Api) -> None:
    caller = limited(api)
    answer = api.ok("authorize", token=caller.token, requests=[{"path": "dev/a", "capability": "read"}])
    assert answer == {
        "decisions": [
            {
                "path": "/dev/a",
                "capability": "read",
                "rule-type": "item-rule",
                "decision": "allow",
                "reasons": [answer["decisions"][0]["reasons"][0]],
            }
        ]
    }
    assert answer["decisions"][0]["reasons"] == ['role:"/apps/reader"/item-rule:"/dev/*"']
    denied = api.ok("authorize", token=caller.token, requests=[{"path": "/prod/a", "capability": "read"}])
    assert denied["decisions"][0]["decision"] == "deny" and denied["decisions"][0]["reasons"] == []


def test_authorize_1000_requests_in_order(api: Api) -> None:
    caller = limited(api)
    requests = []
    expected = []
    for n in range(1000):
        kind = n % 5
        if kind == 0:
            requests.append({"path": f"/dev/i{n}", "capability": "read"})
            expected.append((f"/dev/i{n}", "read", "item-rule", "allow"))
        elif kind == 1:
            requests.append({"path": f"/dev/i{n}", "capability": "delete"})
            expected.append((f"/dev/i{n}", "delete", "item-rule", "deny"))
        elif kind == 2:
            requests.append({"path": f"/dev/rw/i{n}", "capability": "delete", "rule-type": "item-rule"})
            expected.append((f"/dev/rw/i{n}", "delete", "item-rule", "allow"))
        elif kind == 3:
            requests.append({"path": f"/prod/i{n}", "capability": "list"})
            expected.append((f"/prod/i{n}", "list", "item-rule", "deny"))
        else:
            requests.append({"path": f"/dev/i{n}", "capability": "read", "rule-type": "role-rule"})
            expected.append((f"/dev/i{n}", "read", "role-rule", "deny"))
    answer = api.ok("authorize", token=caller.token, requests=requests)
    got = [(d["path"], d["capability"], d["rule-type"], d["decision"]) for d in answer["decisions"]]
    assert got == expected


@pytest.mark.parametrize("count", [0, 1001])
def test_authorize_0_or_1001_requests_is_a_400_never_a_silent_cut(api: Api, count: int) -> None:
    requests = [{"path": f"/dev/{n}", "capability": "read"} for n in range(count)]
    body = assert_error(api.call("authorize", requests=requests), 400, "BadRequest", "requests")
    assert "1000" in body["message"]


def test_explain(api: Api) -> None:
    caller = limited(api)
    allowed = api.ok("explain", token=caller.token, path="/dev/a", capability="read")
    assert allowed["decision"] == "allow" and allowed["path"] == "/dev/a"
    assert allowed["capability"] == "read" and allowed["rule-type"] == "item-rule"
    assert allowed["roles"] == ["/apps/reader"]
    assert [d["name"] for d in allowed["determining"]] == ["/apps/reader"]
    assert allowed["determining"][0]["kind"] == "rule" and allowed["determining"][0]["path"] == "/dev/*"
    assert "permit" in allowed["cedar"]
    denied = api.ok("explain", token=caller.token, path="/prod/a", capability="read")
    assert denied["decision"] == "deny" and denied["determining"] == [] and "default deny" in denied["why"]
    # The admin asks about the caller's token.
    about = api.ok("explain", path="/prod/a", capability="read", subject_token=caller.token)
    assert about["decision"] == "deny" and about["roles"] == ["/apps/reader"]
    mine = api.ok("explain", path="/prod/a", capability="read")
    assert mine["decision"] == "allow" and mine["roles"] == ["/admin"]


def test_lookup_token_answers_the_callers_own_session(api: Api) -> None:
    caller = limited(api)
    before = int(time.time())
    looked = api.ok("lookup-token", token=caller.token)
    assert looked["auth-method"] == "/apps/limited" and looked["roles"] == ["/apps/reader"]
    assert looked["identity"]["access_id"] == caller.access_id and looked["identity"]["auth_type"] == "access_key"
    assert before - 5 <= looked["issued-at"] <= looked["expires-at"]
    assert api.ok("lookup-token")["roles"] == ["/admin"]
    assert caller.key not in str(looked) and caller.token not in str(looked)
    api.ok("revoke-token", token=caller.token)
    assert_401(api.call("lookup-token", token=caller.token))


def test_revoke_own_token_and_a_subjects_token(api: Api) -> None:
    caller = limited(api)
    other = token_of(api.client, caller.access_id, caller.key)
    # Own.
    assert api.ok("revoke-token", token=caller.token) == {"revoked": True}
    assert_401(api.call("list-items", token=caller.token))
    assert api.call("list-items", token=other).status_code == 200
    # A subject's (the admin may read every auth method).
    assert api.ok("revoke-token", subject_token=other) == {"revoked": True}
    assert_401(api.call("list-items", token=other))
    assert api.call("list-items").status_code == 200
    # A revoked token is not a live subject.
    assert_error(api.call("revoke-token", subject_token=other), 404, "NotFound", "subject-token")
    # Revoked stays revoked across a restart.
    api.client.__exit__(None, None, None)
    with reopened(data_dir(api)) as client:
        assert_401(post(client, "list-items", {"token": other}))
        assert_401(post(client, "list-items", {"token": caller.token}))
        assert post(client, "list-items", {"token": api.admin_token}).status_code == 200


def test_export_policies(api: Api) -> None:
    caller = limited(api)
    api.ok("set-role-rule", role_name="/apps/reader", path="/dev/secret*", capability=["deny"])
    cedar = api.ok("export-policies")["cedar"]
    ids = re.findall(r'^@id\("(.*)"\)$', cedar, re.MULTILINE)
    assert set(ids) >= {
        'auth-method:\\"/admin\\"/permit',
        'auth-method:\\"/apps/limited\\"/permit',
        'role:\\"/admin\\"/item-rule:\\"/*\\"',
        'role:\\"/apps/reader\\"/item-rule:\\"/dev/*\\"',
        'role:\\"/apps/reader\\"/item-rule:\\"/dev/secret*\\"',
    }
    assert cedar.count("permit(") + cedar.count("forbid(") == len(ids)
    assert "forbid(" in cedar and caller.access_id in cedar


# === errors =============================================================================================

BAD_REQUESTS: list[tuple[str, dict[str, Any], str]] = [
    ("create-role", {}, "name"),
    ("create-role", {"name": 5}, "name"),
    ("create-role", {"name": ["/a"]}, "name"),
    ("create-role", {"name": "/a", "bogus": 1}, "bogus"),
    ("create-role", {"name": "/a", "description": "x" * 1025}, "description"),
    ("create-role", {"name": "/a//b"}, "name"),
    ("set-role-rule", {"role-name": "/admin", "path": "/x", "capability": ["fly"]}, "capability"),
    ("set-role-rule", {"role-name": "/admin", "path": "/x", "capability": []}, "capability"),
    ("set-role-rule", {"role-name": "/admin", "path": "/x", "capability": ["deny", "read"]}, "capability"),
    ("set-role-rule", {"role-name": "/admin", "path": "/x", "capability": ["read"], "rule-type": "x"}, "rule-type"),
    ("set-role-rule", {"role-name": "/admin", "path": "", "capability": ["read"]}, "path"),
    ("set-role-rule", {"role-name": "/admin", "capability": ["read"]}, "path"),
    ("create-auth-method-aws-iam", {"name": "/a"}, "bound-aws-account-id"),
    ("create-auth-method-aws-iam", {"name": "/a", "bound-aws-account-id": ["12"]}, "bound-aws-account-id"),
    *(
        ("create-auth-method-aws-iam", {"name": "/a", "bound-aws-account-id": [ACCOUNT_ID], "sts-url": url}, "sts-url")
        for url in (
            "ftp://x/",
            "http://1.2.3.999/",
            "http://127.1/",
            "http://a..b/",
            "http://xn--zz/",
            "http://-sts.example/",
            "http://[fe80::1%25eth0]/",
            "http://127.0.0.1:0/",
        )
    ),
    ("create-auth-method", {"name": "/a", "jwt-ttl": "3600"}, "jwt-ttl"),
    ("create-auth-method", {"name": "/a", "jwt-ttl": 5}, "jwt-ttl"),
    ("create-auth-method", {"name": "/a", "jwt-ttl": 1.5}, "jwt-ttl"),
    ("create-auth-method", {"name": "/a", "access-expires": True}, "access-expires"),
    ("create-auth-method", {"name": "/a", "bound-ips": ["not-an-ip"]}, "bound-ips"),
    ("create-auth-method", {"name": "/a", "bound-ips": [1]}, "bound-ips"),
    ("create-secret", {"name": "/a/../b", "value": "v"}, "name"),
    ("create-secret", {"name": "/a*", "value": "v"}, "name"),
    ("create-secret", {"name": "/a\x00b", "value": "v"}, "name"),
    ("create-secret", {"name": "/a"}, "value"),
    ("create-secret", {"name": "/a", "value": "x" * (64 * 1024 + 1)}, "value"),
    ("create-secret", {"name": "/a", "value": 42}, "value"),
    ("authorize", {"requests": [{"path": "/a", "capability": "fly"}]}, "requests[0].capability"),
    ("authorize", {"requests": [{"path": "/a", "capability": "deny"}]}, "requests[0].capability"),
    ("authorize", {"requests": [{"path": "/a", "capability": "read", "x": "y"}]}, "requests[0]"),
    ("authorize", {"requests": [{"path": "/a", "capability": "read", "rule-type": "z"}]}, "requests[0].rule-type"),
    ("authorize", {"requests": [{"path": "/a*", "capability": "read"}]}, "requests[0].path"),
    ("authorize", {"requests": [{"capability": "read"}]}, "requests[0].path"),
    ("authorize", {"requests": [{"path": 1, "capability": "read"}]}, "requests[0].path"),
    ("authorize", {"requests": "read /a"}, "requests"),
    ("authorize", {}, "requests"),
    ("explain", {"path": "/a", "capability": "deny"}, "capability"),
    ("explain", {"path": "/a*", "capability": "read"}, "path"),
    ("assoc-role-am", {"role-name": "/admin", "am-name": "/admin", "sub-claim": ["nokey"]}, "sub-claim"),
    ("assoc-role-am", {"role-name": "/admin", "am-name": "/admin", "sub-claim": ["color=red"]}, "sub-claim"),
    ("delete-assoc", {}, "assoc-id"),
    ("list-items", {"path": 3}, "path"),
    ("get-role", {"name": None}, "name"),
]


@pytest.mark.parametrize(("command", "body", "field"), BAD_REQUESTS, ids=[f"{c}-{f}" for c, _, f in BAD_REQUESTS])
def test_400_names_the_field(api: Api, command: str, body: dict[str, Any], field: str) -> None:
    response = post(api.client, command, {**body, "token": api.admin_token})
    assert_error(response, 400, "BadRequest", field)


@pytest.mark.parametrize(
    "raw",
    [b"{", b"[]", b'"x"', b"1", b"null", b"\xff\xfe", b'{"name": "\xff"}', b'{"name": "\\ud800"}', b"[" * 5000],
)
def test_400_for_a_body_that_is_not_a_json_object(api: Api, raw: bytes) -> None:
    response = api.client.post("/create-role", content=raw, headers={"authorization": f"Bearer {api.admin_token}"})
    assert_error(response, 400, "BadRequest", "body")


def test_empty_body_is_an_empty_object(api: Api) -> None:
    response = api.client.post("/list-roles", content=b"", headers={"authorization": f"Bearer {api.admin_token}"})
    assert response.status_code == 200
    assert_error(api.client.post("/list-roles", content=b""), 401, "AuthenticationFailed")


def test_401_bad_tokens(api: Api) -> None:
    for token in (
        "t-" + "A" * 43,
        "",
        "x",
        "t-",
        api.admin_token + "x",
        api.admin_token[:-1],
        "T" + api.admin_token[1:],
    ):
        assert_401(api.call("list-items", token=token))
    for token in (1, True, ["t-x"], {"t": 1}, 1.5, "t-" + "a" * 10_000):
        assert_401(post(api.client, "list-items", {"token": token}))
    assert_401(post(api.client, "list-items", {}))
    assert_401(post(api.client, "list-items", {"token": None}))


def test_401_expired_token(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    am = api.ok("create-auth-method", name="/short", jwt_ttl=60)
    answer = login_key(api.client, am["access-id"], am["access-key"]).json()
    token = answer["token"]
    assert api.call("list-items", token=token).status_code == 200

    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 61)  # the clock, 61 s on
    assert_401(api.call("list-items", token=token))
    assert api.call("list-items").status_code == 200  # the admin's token lives an hour
    assert_401(api.call("revoke-token", token=token))


def test_housekeeping_forgets_expired_tokens_in_memory_and_in_the_store(api: Api) -> None:
    """A token nobody presents again must not stay forever: the periodic housekeeping drops it from memory
    and from the store (with expired login proofs); live tokens stay."""
    am = api.ok("create-auth-method", name="/brief", jwt_ttl=60)
    brief = [login_key(api.client, am["access-id"], am["access-key"]).json()["token"] for _ in range(3)]
    service = api.service
    held = len(service.tokens)
    db = data_dir(api) / "cedarkey.db"

    def stored() -> int:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT count(*) FROM tokens").fetchone()[0]

    before = stored()
    assert api.client.portal.call(service.housekeep, time.time()) == (0, 0)  # nothing expired yet
    later = time.time() + 61
    assert api.client.portal.call(service.housekeep, later) == (3, 3)
    assert (len(service.tokens), stored()) == (held - 3, before - 3)
    assert api.call("list-items").status_code == 200  # the admin's hour-long token is still there
    for token in brief:
        assert_401(api.call("list-items", token=token))


def test_the_token_registry_purges_by_expiry_only_what_expired() -> None:
    from cedarkey.engine import Identity
    from cedarkey.server.tokens import Session, TokenRegistry

    identity = Identity(access_id="p-0000000000000001", auth_type="access_key", principal_type="access-key")
    registry = TokenRegistry()
    for n, expires in enumerate([10.0, 30.0, 20.0, 40.0]):
        registry.add(bytes([n]), Session(identity, 0.0, expires))
    registry.revoke(bytes([2]))  # its heap entry stays until its time comes, and then finds nothing
    registry.add(bytes([0]), Session(identity, 0.0, 50.0))  # renewed under the same hash: not expired at 10
    assert registry.purge(25.0) == 0
    assert registry.purge(35.0) == 1  # only the one that expired at 30
    assert len(registry) == 2 and registry.get(bytes([0])) is not None and registry.get(bytes([3])) is not None
    assert registry.purge(100.0) == 2 and len(registry) == 0

    for n in range(3000):  # revoked long before they expire: their heap entries do not pile up
        registry.add(n.to_bytes(4, "big"), Session(identity, 0.0, 1e9))
        registry.revoke(n.to_bytes(4, "big"))
    registry.purge(200.0)
    assert len(registry._expiries) == 0  # rebuilt from the (empty) sessions


def test_generated_access_keys_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key starting with ``-`` could not follow ``--access-key`` on a command line: such draws are redrawn."""
    from cedarkey.server import tokens

    draws = iter(["-starts-with-a-dash", "--two", "fine-key"])
    monkeypatch.setattr(tokens.secrets, "token_urlsafe", lambda n: next(draws))
    assert tokens.new_access_key() == "fine-key"


def test_a_refused_request_is_not_kept_in_memory(api: Api) -> None:
    """Nothing of a request answered 401 outlives it: not its body (which may carry a secret value or a key
    that was tried), not its token, not its handler's frames. (Raising one shared exception instance chains
    every raise's traceback, and with it every frame and its locals, onto that instance for the life of the
    process: a leak any unauthenticated client can drive.)"""
    marker = "leak-marker-" + secrets.token_hex(8)
    refused_call = b'{"token": "t-bad", "role-name": "/admin", "path": "/x", "capability": ["%s"]}' % marker.encode()
    refused_login = b'{"access-type": "access_key", "access-id": "%s", "access-key": "%s"}' % (
        api.admin["access_id"].encode(),
        marker.encode(),
    )
    for _ in range(3):
        assert api.client.post("/set-role-rule", content=refused_call).status_code == 401
        assert api.client.post("/auth", content=refused_login).status_code == 401
    gc.collect()
    bodies = [o for o in gc.get_objects() if type(o) is list and marker in o]
    assert bodies == [], f"{len(bodies)} bodies of refused requests are still alive"
    frames = [
        o.f_code.co_name
        for o in gc.get_objects()
        if isinstance(o, types.FrameType) and o.f_code.co_name in ("command", "session", "auth", "_login")
    ]
    assert frames == [], f"frames of finished requests are still alive: {frames}"


def test_401_bad_access_keys_and_logins(api: Api) -> None:
    am = api.ok("create-auth-method", name="/k")
    access_id, key = am["access-id"], am["access-key"]
    for body in (
        {"access-type": "access_key", "access-id": access_id, "access-key": key + "x"},
        {"access-type": "access_key", "access-id": access_id, "access-key": ""},
        {"access-type": "access_key", "access-id": access_id, "access-key": api.admin["access_key"]},
        {"access-type": "access_key", "access-id": access_id},
        {"access-type": "access_key", "access-id": "p-0000000000000000", "access-key": key},
        {"access-type": "access_key", "access-id": "", "access-key": key},
        {"access-type": "aws_iam", "access-id": access_id, "access-key": key},
        {"access-type": "magic", "access-id": access_id, "access-key": key},
        {"access-type": "aws_iam", "access-id": access_id, "cloud-id": "bm90IGEgcHJvb2Y="},
    ):
        assert_401(post(api.client, "auth", body))
    assert login_key(api.client, access_id, key).status_code == 200


def test_401_for_the_key_of_an_auth_method_whose_login_has_expired(api: Api) -> None:
    am = api.ok("create-auth-method", name="/old", access_expires=int(time.time()) - 10)
    assert_401(login_key(api.client, am["access-id"], am["access-key"]))


ADMIN_CALLS: dict[str, dict[str, Any]] = {
    "create-auth-method-aws-iam": {"name": "/apps/x", "bound-aws-account-id": [ACCOUNT_ID]},
    "create-auth-method": {"name": "/apps/y"},
    "update-auth-method-aws-iam": {"name": "/iam/dev", "jwt-ttl": 120},
    "update-auth-method": {"name": "/admin", "jwt-ttl": 60},
    "get-auth-method": {"name": "/admin"},
    "delete-auth-method": {"name": "/admin"},
    "create-role": {"name": "/apps/new-role"},
    "get-role": {"name": "/admin"},
    "delete-role": {"name": "/admin"},
    "update-role": {"name": "/admin", "description": "mine now"},
    "assoc-role-am": {"role-name": "/apps/reader", "am-name": "/apps/limited", "sub-claim": ["principal_type=x"]},
    "delete-assoc": {"role-name": "/admin", "am-name": "/admin"},
    "set-role-rule": {"role-name": "/apps/reader", "path": "/*", "capability": ALL_CAPS},
    "delete-role-rule": {"role-name": "/admin", "path": "/*"},
    "export-policies": {},
    "export-model": {},
    "apply-model": {"model": '{"auth-methods": [], "roles": []}', "dry-run": 1},
    "who-can": {"path": "/dev/x", "capability": "read"},
    "can": {"identity": '{"auth_method": "/apps/limited"}', "path": "/dev/x", "capability": "read"},
}
#: Commands any logged-in caller may use; what they answer depends on the caller's rules.
CALLER_COMMANDS = {
    "auth",
    "lookup-sts-url",
    "list-auth-methods",
    "list-roles",
    "create-secret",
    "get-secret-value",
    "update-secret-val",
    "rollback-secret",
    "delete-item",
    "describe-item",
    "list-items",
    "authorize",
    "explain",
    "revoke-token",
    "renew-token",
    "lookup-token",
    "list-audit-events",
    "watch",
}


def test_every_command_is_classified() -> None:
    assert set(ADMIN_CALLS) | CALLER_COMMANDS == set(COMMANDS)
    assert not set(ADMIN_CALLS) & CALLER_COMMANDS


def test_403_for_a_non_admin_on_every_administrative_command(api: Api) -> None:
    caller = limited(api)
    api.ok("create-auth-method-aws-iam", name="/iam/dev", bound_aws_account_id=[ACCOUNT_ID], bound_role_name=["r"])
    admin_assoc = api.ok("get-role", name="/admin")["associations"][0]["assoc-id"]
    cedar_before = api.ok("export-policies")["cedar"]
    for command, body in ADMIN_CALLS.items():
        response = post(api.client, command, {**body, "token": caller.token})
        assert_error(response, 403, "PermissionDenied")
    by_id = post(api.client, "delete-assoc", {"assoc-id": admin_assoc, "token": caller.token})
    assert_error(by_id, 403, "PermissionDenied")
    # Nothing changed, and the admin still works.
    assert api.ok("export-policies")["cedar"] == cedar_before
    assert [am["name"] for am in api.ok("list-auth-methods")["auth-methods"]] == ["/admin", "/apps/limited", "/iam/dev"]
    assert [r["name"] for r in api.ok("list-roles")["roles"]] == ["/admin", "/apps/reader"]


def test_403_on_items_outside_the_callers_rules(api: Api) -> None:
    caller = limited(api)
    api.ok("create-secret", name="/prod/x", value="p")
    api.ok("create-secret", name="/dev/x", value="d")
    for command, body in (
        ("create-secret", {"name": "/prod/y", "value": "v"}),
        ("create-secret", {"name": "/dev/y", "value": "v"}),  # read and list only
        ("get-secret-value", {"name": "/prod/x"}),
        ("update-secret-val", {"name": "/dev/x", "value": "v"}),
        ("rollback-secret", {"name": "/dev/x", "version": 1}),
        ("delete-item", {"name": "/dev/x"}),
        ("delete-item", {"name": "/dev/x", "version": 1}),
        ("get-secret-value", {"name": ["/dev/x", "/prod/x"]}),  # one name refused: the whole call
        ("describe-item", {"name": "/prod/x"}),
        # Refused before existence is looked at: no 404 oracle.
        ("get-secret-value", {"name": "/prod/missing"}),
        ("describe-item", {"name": "/prod/missing"}),
    ):
        body = assert_error(post(api.client, command, {**body, "token": caller.token}), 403, "PermissionDenied")
    assert api.ok("get-secret-value", token=caller.token, name="/dev/x")["value"] == "d"
    api.ok("create-secret", token=caller.token, name="/dev/rw/new", value="n")
    assert api.ok("update-secret-val", token=caller.token, name="/dev/rw/new", value="m")["version"] == 2
    assert api.ok("delete-item", token=caller.token, name="/dev/rw/new")["deleted"]
    assert api.ok("get-secret-value", name="/dev/x")["value"] == "d"
    assert api.ok("get-secret-value", name="/prod/x")["value"] == "p"


def test_403_is_answered_before_existence_on_delete_assoc(api: Api) -> None:
    """A caller without role-rule update learns nothing from delete-assoc: it is refused the same way whether
    the role and auth method it names exist or not (as get-role, delete-role... already are)."""
    caller = limited(api)
    exists = post(api.client, "delete-assoc", {"role-name": "/admin", "am-name": "/admin", "token": caller.token})
    assert_error(exists, 403, "PermissionDenied")
    for body in (
        {"role-name": "/no/such-role", "am-name": "/admin"},
        {"role-name": "/admin", "am-name": "/no/such-am"},
        {"role-name": "/apps/reader", "am-name": "/admin"},  # both exist, not associated
    ):
        response = post(api.client, "delete-assoc", {**body, "token": caller.token})
        assert_error(response, 403, "PermissionDenied")


def test_404s(api: Api) -> None:
    assert_error(api.call("no-such-command"), 404, "NotFound")
    assert_error(api.call("get-auth-method", name="/nope"), 404, "NotFound", "name")
    assert_error(api.call("get-role", name="/nope"), 404, "NotFound", "name")
    assert_error(api.call("assoc-role-am", role_name="/nope", am_name="/admin"), 404, "NotFound", "role-name")
    assert_error(api.call("assoc-role-am", role_name="/admin", am_name="/nope"), 404, "NotFound", "am-name")
    assert_error(api.call("delete-assoc", assoc_id="ac-0000000000000000"), 404, "NotFound", "assoc-id")
    assert_error(
        api.call("set-role-rule", role_name="/nope", path="/a", capability=["read"]), 404, "NotFound", "role-name"
    )
    assert_error(api.call("delete-role-rule", role_name="/nope", path="/a"), 404, "NotFound", "role-name")
    assert_error(api.call("update-auth-method-aws-iam", name="/nope", jwt_ttl=60), 404, "NotFound", "name")
    lookup = api.client.post("/lookup-sts-url", content=orjson.dumps({"access-id": api.admin["access_id"]}))
    assert_error(lookup, 404, "NotFound")  # an access_key method has no STS URL
    for subject in ("t-not-a-live-token", "nope"):  # a token asked about is a thing looked up, not a syntax
        assert_error(api.call("revoke-token", subject_token=subject), 404, "NotFound", "subject-token")
        asked = api.call("authorize", requests=[{"path": "/a", "capability": "read"}], subject_token=subject)
        assert_error(asked, 404, "NotFound", "subject-token")


def test_non_command_routes_answer_json_errors(api: Api) -> None:
    """Every error of the API is JSON ``{"error", "message"}``, also for a route or method that does not
    exist (a client parsing errors should never meet Starlette's plain-text pages)."""
    for method, path, status, allow in (
        ("GET", "/auth", 405, "POST"),
        ("PUT", "/create-role", 405, "POST"),
        ("POST", "/a/b", 404, None),
        ("POST", "/health", 405, "GET, HEAD"),
        ("PUT", "/health", 405, "GET, HEAD"),
        ("POST", "/openapi.json", 405, "GET, HEAD"),
        ("DELETE", "/metrics", 405, "GET, HEAD"),
    ):
        response = api.client.request(method, path)
        assert response.status_code == status, (method, path)
        allowed = response.headers.get("allow")  # Starlette lists a route's methods in no fixed order
        assert (allowed and set(allowed.split(", "))) == (allow and set(allow.split(", "))), (method, path)
        assert set(response.json()) == {"error", "message"}, response.text


def test_409_on_duplicates(api: Api) -> None:
    api.ok("create-auth-method", name="/dup")
    api.ok("create-role", name="/dup")
    api.ok("create-secret", name="/dup", value="v")
    api.ok("assoc-role-am", role_name="/dup", am_name="/dup", sub_claim=["principal_type=access-key"])
    original = api.ok("get-auth-method", name="/dup")
    assert_error(api.call("create-auth-method", name="/dup"), 409, "AlreadyExists", "name")
    assert_error(
        api.call("create-auth-method-aws-iam", name="dup", bound_aws_account_id=[ACCOUNT_ID]),
        409,
        "AlreadyExists",
        "name",
    )
    assert_error(api.call("create-role", name="/dup"), 409, "AlreadyExists", "name")
    assert_error(api.call("create-secret", name="/dup", value="w"), 409, "AlreadyExists", "name")
    assert_error(
        api.call("assoc-role-am", role_name="/dup", am_name="/dup", sub_claim=["principal_type=access-key"]),
        409,
        "AlreadyExists",
    )
    # The originals are untouched.
    assert api.ok("get-auth-method", name="/dup") == original
    assert api.ok("get-secret-value", name="/dup")["value"] == "v"
    assert len(api.ok("get-role", name="/dup")["associations"]) == 1


def test_413_on_an_oversized_body(api: Api) -> None:
    limit = api.settings.max_body
    big = orjson.dumps({"name": "/a", "value": "x" * limit, "token": api.admin_token})
    assert_error(api.client.post("/create-secret", content=big), 413, "PayloadTooLarge")

    # Without a Content-Length (chunked): counted as it streams.
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "/a", "value": "'
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536
        yield b'"}'

    assert_error(api.client.post("/create-secret", content=chunks()), 413, "PayloadTooLarge")
    # A lying Content-Length is refused too.
    response = api.client.post("/create-role", content=b"{}", headers={"content-length": str(limit + 1)})
    assert response.status_code == 413
    assert_error(api.call("describe-item", name="/a"), 404, "NotFound")


def test_413_with_a_small_configured_limit(tmp_path: Path) -> None:
    with running_api(tmp_path / "data", max_body=2048) as api:
        assert api.ok("create-role", name="/r", description="x" * 1000)
        assert_error(api.call("create-role", name="/s", description="x" * 2100), 413, "PayloadTooLarge")
        assert_error(api.call("get-role", name="/s"), 404, "NotFound")


# === tokens =============================================================================================


def test_authorization_bearer_works_like_the_token_field(api: Api) -> None:
    caller = limited(api)
    for scheme in ("Bearer", "bearer", "BEARER"):
        response = post(api.client, "list-roles", {}, headers={"Authorization": f"{scheme} {api.admin_token}"})
        assert response.status_code == 200
        assert [r["name"] for r in response.json()["roles"]] == ["/admin", "/apps/reader"]
    assert_401(post(api.client, "list-roles", {}, headers={"Authorization": "Bearer t-nope"}))
    assert_401(post(api.client, "list-roles", {}, headers={"Authorization": f"Basic {api.admin_token}"}))
    assert_401(post(api.client, "list-roles", {}, headers={"Authorization": api.admin_token}))
    # The body's token wins over the header.
    both = post(
        api.client, "list-roles", {"token": caller.token}, headers={"Authorization": f"Bearer {api.admin_token}"}
    )
    assert both.json() == {"roles": []}
    # revoke-token revokes the header's token.
    headers = {"Authorization": f"Bearer {caller.token}"}
    assert post(api.client, "revoke-token", {}, headers=headers).json() == {"revoked": True}
    assert_401(post(api.client, "list-items", {}, headers=headers))
    assert post(api.client, "list-items", {}, headers={"Authorization": f"Bearer {api.admin_token}"}).status_code == 200


def test_a_deleted_auth_method_kills_its_tokens(api: Api) -> None:
    caller = limited(api)
    second = token_of(api.client, caller.access_id, caller.key)
    assert api.call("list-items", token=caller.token).status_code == 200
    api.ok("delete-auth-method", name=caller.name)
    assert_401(api.call("list-items", token=caller.token))
    assert_401(api.call("list-items", token=second))
    assert_401(login_key(api.client, caller.access_id, caller.key))
    # Its association went with it; the role stays.
    assert api.ok("get-role", name="/apps/reader")["associations"] == []
    # A new auth method of the same name has a new access id: the old key does not log in.
    again = api.ok("create-auth-method", name=caller.name)
    assert again["access-id"] != caller.access_id
    assert_401(login_key(api.client, again["access-id"], caller.key))
    # And after a restart the dead tokens stay dead.
    api.client.__exit__(None, None, None)
    with reopened(data_dir(api)) as client:
        assert_401(post(client, "list-items", {"token": caller.token}))
        assert_401(post(client, "list-items", {"token": second}))


def test_tokens_survive_a_restart(api: Api) -> None:
    caller = limited(api)
    api.ok("create-secret", name="/dev/x", value="v")
    api.client.__exit__(None, None, None)
    with reopened(data_dir(api)) as client:
        assert post(client, "get-secret-value", {"token": caller.token, "name": "/dev/x"}).json()["value"] == "v"
        assert_error(post(client, "get-role", {"token": caller.token, "name": "/admin"}), 403, "PermissionDenied")
        assert post(client, "list-roles", {"token": api.admin_token}).status_code == 200
        # The same keys still log in.
        assert login_key(client, caller.access_id, caller.key).status_code == 200
        assert login_key(client, api.admin["access_id"], api.admin["access_key"]).status_code == 200


def test_subject_token_needs_read_and_revoking_it_update_on_its_auth_method(api: Api) -> None:
    asker = make_caller(api, "/apps/asker", "/apps/asker-role", [("auth-method-rule", "/apps/subjects/*", ["read"])])
    subject = make_caller(api, "/apps/subjects/one", "/apps/subject-role", [("item-rule", "/s/*", ["read"])])
    outsider = make_caller(api, "/apps/outside", "/apps/outside-role", [("item-rule", "/o/*", ["read"])])
    request = [{"path": "/s/x", "capability": "read"}]

    answer = api.ok("authorize", token=asker.token, requests=request, subject_token=subject.token)
    assert answer["decisions"][0]["decision"] == "allow"  # the subject's decision, not the asker's
    assert api.ok("authorize", token=asker.token, requests=request)["decisions"][0]["decision"] == "deny"
    assert (
        api.ok("explain", token=asker.token, path="/s/x", capability="read", subject_token=subject.token)["decision"]
        == "allow"
    )
    for token in (outsider.token, api.admin_token):
        for command, body in (
            ("authorize", {"requests": request}),
            ("explain", {"path": "/s/x", "capability": "read"}),
            ("revoke-token", {}),
        ):
            response = post(api.client, command, {**body, "token": asker.token, "subject-token": token})
            assert_error(response, 403, "PermissionDenied")
    # The subjects asked about are alive still. Reading the subject's auth method is not enough to end its
    # session: revoking another's token needs update on its auth method.
    assert api.call("list-items", token=outsider.token).status_code == 200
    refused = post(api.client, "revoke-token", {"token": asker.token, "subject-token": subject.token})
    assert_error(refused, 403, "PermissionDenied")
    assert "update" in refused.json()["message"]
    assert api.call("list-items", token=subject.token).status_code == 200
    revoker = make_caller(
        api, "/apps/revoker", "/apps/revoker-role", [("auth-method-rule", "/apps/subjects/*", ["update"])]
    )
    assert api.ok("revoke-token", token=revoker.token, subject_token=subject.token) == {"revoked": True}
    assert_401(api.call("list-items", token=subject.token))
    assert api.call("list-items", token=asker.token).status_code == 200


# === a refused request changes nothing =================================================================


def test_a_failed_request_changes_nothing(api: Api) -> None:
    caller = limited(api)
    before = api.ok("get-role", name="/apps/reader")
    cedar = api.ok("export-policies")["cedar"]
    for body in (
        {"role-name": "/apps/reader", "path": "/dev/*", "capability": ["read", "fly"]},
        {"role-name": "/apps/reader", "path": "/dev/*", "capability": ["deny", "read"]},
        {"role-name": "/apps/reader", "path": "/dev/*", "capability": ["read"], "rule-type": "bad"},
        {"role-name": "/apps/reader", "path": "/dev/*", "capability": "read", "extra": 1},
        {"role-name": "/apps/reader", "path": "/dev//*", "capability": ["read"]},
    ):
        assert api.call("set-role-rule", **{k.replace("-", "_"): v for k, v in body.items()}).status_code == 400
    assert_error(
        api.call("set-role-rule", token=caller.token, role_name="/apps/reader", path="/*", capability=ALL_CAPS),
        403,
        "PermissionDenied",
    )
    assert api.ok("get-role", name="/apps/reader") == before
    assert api.ok("export-policies")["cedar"] == cedar

    # A refused update keeps the auth method as it was.
    api.ok("create-auth-method-aws-iam", name="/iam/a", bound_aws_account_id=[ACCOUNT_ID], bound_role_name=["r"])
    am = api.ok("get-auth-method", name="/iam/a")
    assert api.call("update-auth-method-aws-iam", name="/iam/a", jwt_ttl=120, bound_arn=["nope"]).status_code == 400
    assert api.call("update-auth-method-aws-iam", name="/iam/a", bound_aws_account_id=[]).status_code == 400
    assert api.ok("get-auth-method", name="/iam/a") == am

    # A refused assoc / secret leaves no trace.
    assert api.call("assoc-role-am", role_name="/apps/reader", am_name="/iam/a", sub_claim=["x=y"]).status_code == 400
    assert api.call("create-secret", name="/dev/big", value="x" * 70_000).status_code == 400
    assert_error(api.call("describe-item", name="/dev/big"), 404, "NotFound")
    assert api.ok("get-role", name="/apps/reader") == before
    # ... and survives a restart the same way.
    api.client.__exit__(None, None, None)
    with reopened(data_dir(api)) as client:
        assert post(client, "get-role", {"token": api.admin_token, "name": "/apps/reader"}).json() == before


# === listings only show what the caller may list =======================================================


def test_listings_only_show_what_the_caller_may_list(api: Api) -> None:
    for name in ("/dev/a", "/dev/sub/b", "/prod/c", "/devil/d"):
        api.ok("create-secret", name=name, value="v")
    api.ok("create-role", name="/teams/x")
    api.ok("create-role", name="/other/y")
    api.ok("create-auth-method", name="/teams/am")
    caller = make_caller(
        api,
        "/apps/lister",
        "/teams/lister",
        [
            ("item-rule", "/dev/*", ["list"]),
            ("item-rule", "/dev/sub/*", ["deny"]),
            ("role-rule", "/teams/*", ["list"]),
            ("auth-method-rule", "/teams/*", ["list"]),
        ],
    )
    items = api.ok("list-items", token=caller.token)
    assert [i["item_name"] for i in items["items"]] == ["/dev/a"]
    assert items["folders"] == ["/dev/"]
    assert api.ok("list-items", token=caller.token, path="/prod") == {"items": [], "folders": []}
    assert [r["name"] for r in api.ok("list-roles", token=caller.token)["roles"]] == ["/teams/lister", "/teams/x"]
    assert [a["name"] for a in api.ok("list-auth-methods", token=caller.token)["auth-methods"]] == ["/teams/am"]
    # list does not give read.
    assert_error(api.call("get-role", token=caller.token, name="/teams/x"), 403, "PermissionDenied")
    assert_error(api.call("get-secret-value", token=caller.token, name="/dev/a"), 403, "PermissionDenied")
    assert api.ok("describe-item", token=caller.token, name="/dev/a")["item_name"] == "/dev/a"
    # export-policies needs list on every role and auth method.
    assert_error(api.call("export-policies", token=caller.token), 403, "PermissionDenied")
    # A caller with no rules at all sees empty lists.
    nobody = api.ok("create-auth-method", name="/apps/nobody")
    token = token_of(api.client, nobody["access-id"], nobody["access-key"])
    assert api.ok("list-items", token=token) == {"items": [], "folders": []}
    assert api.ok("list-roles", token=token) == {"roles": []}
    assert api.ok("list-auth-methods", token=token) == {"auth-methods": []}


# === openapi, metrics ===================================================================================


def test_openapi_has_a_path_for_every_command(api: Api) -> None:
    response = api.client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    for name, command in COMMANDS.items():
        operation = paths[f"/{name}"]["post"]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert set(schema["properties"]) >= {f.name for f in command.flags}
        assert set(schema["required"]) == {f.name for f in command.flags if f.required}
        assert "200" in operation["responses"] and "400" in operation["responses"]
    assert set(paths) >= {"/health", "/metrics"}


def test_metrics_count_requests_decisions_and_login_failures(api: Api) -> None:
    def scrape() -> str:
        response = api.client.get("/metrics", headers={"authorization": f"Bearer {api.admin_token}"})
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        return response.text

    before = scrape()
    caller = limited(api)
    requests = [{"path": "/dev/a", "capability": "read"}] * 3 + [{"path": "/prod/a", "capability": "read"}] * 2
    api.ok("authorize", token=caller.token, requests=requests)
    assert api.call("no-such").status_code == 404
    assert api.call("list-items", token="t-bad").status_code == 401
    login_key(api.client, caller.access_id, "wrong")
    login_key(api.client, "p-0000000000000000", "wrong")
    after = scrape()

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("cedarkey_requests_total", command="authorize", status="200") == 1
    assert delta("cedarkey_requests_total", command="unknown", status="404") == 1
    assert delta("cedarkey_requests_total", command="list-items", status="401") == 1
    assert delta("cedarkey_requests_total", command="auth", status="401") == 2
    assert delta("cedarkey_decisions_total", outcome="allow") >= 3
    assert delta("cedarkey_decisions_total", outcome="deny") >= 2
    assert delta("cedarkey_login_failures_total", reason="bad_access_key") == 1
    assert delta("cedarkey_login_failures_total", reason="unknown_access_id") == 1
    assert delta("cedarkey_logins_total", type="access_key") == 1
    assert metric(after, "cedarkey_request_seconds_count", command="authorize") >= 1


def test_health(api: Api) -> None:
    response = api.client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "server_id": api.settings.server_id, "version": "0.1.0"}


# === nothing secret at rest or in the audit log ========================================================


def _secrets_at_work(api: Api) -> list[str]:
    """Drives every kind of secret through the API and returns them all: values, keys, tokens."""
    caller = limited(api)
    values = ["VALUE-one-7f3a9c1e2b", "VALUE-two-\u00e9\u00e8-5d4c3b2a", "VALUE-three-9e8d7c6b5a"]
    api.ok("create-secret", name="/dev/one", value=values[0])
    api.ok("create-secret", name="/dev/two", value=values[1])
    api.ok("update-secret-val", name="/dev/two", value=values[2])
    api.ok("get-secret-value", token=caller.token, name="/dev/two")
    other = token_of(api.client, caller.access_id, caller.key)
    api.ok("revoke-token", subject_token=other)
    third = token_of(api.client, caller.access_id, caller.key)
    api.ok("revoke-token", token=third)
    login_key(api.client, caller.access_id, caller.key + "-WRONG")
    login_key(api.client, api.admin["access_id"], caller.key)
    post(api.client, "list-items", {"token": caller.token + "x"})
    return [
        *values,
        caller.key,
        caller.key + "-WRONG",
        api.admin["access_key"],
        caller.token,
        other,
        third,
        api.admin_token,
    ]


def test_the_sqlite_files_hold_no_secret_value_key_or_token(api: Api) -> None:
    found = _secrets_at_work(api)
    directory = data_dir(api)

    def check(files: list[Path]) -> None:
        assert any(f.name == "cedarkey.db" for f in files)
        for file in files:
            raw = file.read_bytes()
            for secret in found:
                for encoded in (secret.encode(), secret.encode("utf-16-le")):
                    assert encoded not in raw, (file.name, secret)

    live = sorted(p for p in directory.iterdir() if p.name.startswith("cedarkey.db"))
    assert any(p.name == "cedarkey.db-wal" for p in live)
    check(live)
    api.client.__exit__(None, None, None)  # closed: the WAL is checkpointed into the main file
    check(sorted(p for p in directory.iterdir() if p.name.startswith("cedarkey.db")))


def test_the_audit_log_has_logins_with_reasons_and_no_secret(api: Api) -> None:
    found = _secrets_at_work(api)
    text = (data_dir(api) / "audit.log").read_text()
    for secret in found:
        assert secret not in text, secret
    events = [orjson.loads(line) for line in text.splitlines()]
    logins = [e for e in events if e["event"] == "login"]
    assert {e["outcome"] for e in logins} == {"success", "failure"}
    success = [e for e in logins if e["outcome"] == "success"]
    assert success and all(e["access_type"] == "access_key" and e["access_id"] for e in success)
    failures = [e for e in logins if e["outcome"] == "failure"]
    assert [e["reason"] for e in failures] == ["bad_access_key", "bad_access_key"]
    assert all(e["detail"] and "time" in e for e in failures)
    for reason, body in (
        ("unknown_access_id", {"access-type": "access_key", "access-id": "p-0000000000000000", "access-key": "k"}),
        ("wrong_access_type", {"access-type": "aws_iam", "access-id": api.admin["access_id"], "cloud-id": "x"}),
        ("missing_access_key", {"access-type": "access_key", "access-id": api.admin["access_id"]}),
    ):
        assert_401(post(api.client, "auth", body))
        last = orjson.loads((data_dir(api) / "audit.log").read_text().splitlines()[-1])
        assert last["event"] == "login" and last["outcome"] == "failure" and last["reason"] == reason
    # A /auth request refused before any login check is a refused login too: 401, the problem audited.
    for body, problem in (
        ({"access-type": "access_key"}, "access-id"),
        ({"access-type": "aws_iam", "access-id": "p-111111111111", "cloud-id": 5}, "cloud-id"),
        ({"access-type": "aws_iam", "access-id": "p-1", "cloud-id": "A" * 100_000}, "larger than 65536 bytes"),
        ({"access-type": "aws_iam", "access-id": "p-111111111111", "cloud-id": "x", "accept": "json"}, "accept"),
        ({"access-type": "aws_iam", "access-id": "p-1", "cloud-id": "x"}, "access-id: not an access id"),
        ({"access-type": ["aws_iam"], "access-id": {"a": 1}}, "access-type"),
    ):
        assert_401(post(api.client, "auth", body))
        last = orjson.loads((data_dir(api) / "audit.log").read_text().splitlines()[-1])
        assert (last["event"], last["outcome"], last["reason"]) == ("login", "failure", "bad_request")
        assert problem in last["detail"], last
        # An access id no auth method has is logged as a short hash: it may be a key sent in the wrong field.
        sent = body.get("access-id") if "larger than" not in problem else None  # a body too large is not read
        digest = hashlib.sha256(sent.encode()).hexdigest()[:16] if isinstance(sent, str) else None
        assert last["access_id"] == (f"sha256:{digest}" if digest else None)
    for raw in (b"{", b"[]", b"x" * (2 << 20)):
        assert_401(api.client.post("/auth", content=raw))
        last = orjson.loads((data_dir(api) / "audit.log").read_text().splitlines()[-1])
        assert (last["reason"], last["access_id"]) == ("bad_request", None)
    # Administrative events name who did what, never a value.
    created = [e for e in events if e["event"] == "create-secret"]
    assert [e["name"] for e in created] == ["/dev/one", "/dev/two"]
    assert all(e["access_id"] == api.admin["access_id"] for e in created)
    assert {e["event"] for e in events} >= {"create-auth-method", "set-role-rule", "revoke-token", "get-secret-value"}


def test_a_large_batch_is_decided_in_slices_as_one_batch_would_be(api: Api) -> None:
    api.ok("create-role", name="/slices")
    api.ok("set-role-rule", role_name="/slices", path="/s/even-*", capability=["read"])
    created = api.ok("create-auth-method", name="/slices/k")
    api.ok("assoc-role-am", role_name="/slices", am_name="/slices/k")
    token = api.ok("auth", access_type="access_key", access_id=created["access-id"], access_key=created["access-key"])
    requests = [{"path": f"/s/{'even' if n % 2 == 0 else 'odd'}-{n}", "capability": "read"} for n in range(1000)]
    whole = api.ok("authorize", token["token"], requests=requests)["decisions"]
    assert [d["decision"] for d in whole] == ["allow" if n % 2 == 0 else "deny" for n in range(1000)]
    assert [d["path"] for d in whole] == [r["path"] for r in requests]
    # A refused request deep in the batch is named by its place in the whole batch, not in its slice.
    requests[550] = {"path": "/s/x", "capability": "fly"}
    assert_error(api.call("authorize", requests=requests), 400, "BadRequest", "requests[550].capability")
