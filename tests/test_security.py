"""The pentest's medium and low findings, each through the API (or the unit that decides it): what a caller
chooses never passes for what AWS vouches for, nothing a client sends comes back or goes to a log uncut,
refusal reasons are for operators only, and answers carrying secrets are private."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from cedarkey.engine import AuthMethod, Engine, Identity
from cedarkey.policies import schema_text
from cedarkey.server.arn import parse_caller
from cedarkey.server.config import Settings
from cedarkey.server.main import create_app
from cedarkey.server.store import StoredToken
from cedarkey.server.sts_urls import StsUrls, allowed_entry
from cedarkey.server.tokens import session_of
from starlette.testclient import TestClient

from tests.support.moto import ACCOUNT_ID, MotoHandle, botocore_credentials
from tests.support.server import Api, running_api

SCHEMA = schema_text()

A = ACCOUNT_ID


@pytest.fixture
def api(tmp_path: Path, moto: MotoHandle) -> Iterator[Api]:
    with running_api(tmp_path / "data", allowed_sts_urls=(moto.url,)) as api:
        yield api


def login_key(api: Api, created: dict[str, Any]) -> str:
    body = {"access-type": "access_key", "access-id": created["access-id"], "access-key": created["access-key"]}
    return api.client.post("/auth", content=orjson.dumps(body)).json()["token"]


# --- 4. a federated user's name is its own attribute ----------------------------------------------------


def test_a_federated_users_name_never_lands_in_user_name() -> None:
    attrs = parse_caller(f"arn:aws:sts::{A}:federated-user/alice", f"{A}:alice", A)
    assert attrs["federated_name"] == "alice"
    assert "user_name" not in attrs and "user_id" not in attrs


def test_bound_user_name_and_a_user_name_sub_claim_refuse_a_federated_alice() -> None:
    engine = Engine(SCHEMA)
    am = AuthMethod("/users", "p-users0000000001", "aws_iam", bound_aws_account_id=(A,), bound_user_name=("alice",))
    engine.add_auth_method(am)
    federated = Identity(
        "p-users0000000001", "aws_iam", "federated-user", account=A, federated_name="alice",
        arn=f"arn:aws:sts::{A}:federated-user/alice",
    )  # fmt: skip
    assert not engine.authenticate(federated, 0).allowed
    iam_user = Identity("p-users0000000001", "aws_iam", "user", account=A, user_name="alice")
    assert engine.authenticate(iam_user, 0).allowed


def test_a_federated_token_stored_before_gets_its_name_moved() -> None:
    identity = {"access_id": "p-a0000000000001", "auth_type": "aws_iam", "principal_type": "federated-user"}
    stored = StoredToken(b"h" * 32, "p-a0000000000001", {**identity, "user_name": "alice"}, 1.0, 2.0)
    session = session_of(stored)
    assert session.identity.user_name is None and session.identity.federated_name == "alice"


# --- 5. a resource id alone proves nothing -------------------------------------------------------------


def test_a_resource_id_binding_without_a_role_binding_is_warned_about(api: Api, moto: MotoHandle) -> None:
    alone = {"bound_aws_account_id": [A], "bound_resource_id": ["i-0abc"], "sts_url": moto.url}
    created = api.ok("create-auth-method-aws-iam", name="/ec2/alone", **alone)
    assert "whoever calls AssumeRole chooses" in created["warning"]
    paired = api.ok("create-auth-method-aws-iam", name="/ec2/paired", **alone, bound_role_name=["dev-role"])
    assert "warning" not in paired
    updated = api.ok("update-auth-method-aws-iam", name="/ec2/paired", bound_role_name=[])
    assert "whoever calls AssumeRole chooses" in updated["warning"]


# --- 6. no amplification -------------------------------------------------------------------------------


def test_a_huge_key_in_a_refused_login_is_not_echoed_or_logged_whole(api: Api, caplog: Any) -> None:
    key = "k" * 60_000
    caplog.set_level(logging.INFO, logger="cedarkey")
    audit = api.settings.data_dir / "audit.log"
    before = audit.stat().st_size
    answer = api.call("auth", access_type="access_key", access_id="p-x", **{key: "v"})
    assert answer.status_code == 401 and len(answer.content) < 200
    assert audit.stat().st_size - before < 2000
    assert sum(len(r.getMessage()) for r in caplog.records) < 2000
    # The login body itself is capped well below the general limit.
    assert api.call("auth", access_type="aws_iam", access_id="p-x", cloud_id="A" * 70_000).status_code == 401
    assert "larger than 65536 bytes" in audit.read_text().splitlines()[-1]


def test_messages_quote_long_client_values_cut_short(api: Api) -> None:
    answer = api.call("authorize", requests=[{"path": "/a", "capability": "x" * 5000}])
    assert answer.status_code == 400 and len(answer.json()["message"]) < 300
    answer = api.call("get-role", name="/" + "r" * 1000)
    assert answer.status_code == 404 and len(answer.json()["message"]) < 300


def test_an_access_key_sent_as_the_access_id_is_never_logged(api: Api) -> None:
    created = api.ok("create-auth-method", name="/apps/keyed")
    key = created["access-key"]
    api.call("auth", access_type="access_key", access_id=key, access_key=key)
    assert key not in (api.settings.data_dir / "audit.log").read_text()


# --- 7. refusal reasons are for operators ---------------------------------------------------------------


def test_metrics_on_the_main_port_need_a_token_that_may_list_everything(api: Api) -> None:
    assert api.client.get("/metrics").status_code == 401
    created = api.ok("create-auth-method", name="/apps/nobody")
    nobody = login_key(api, created)
    refused = api.client.get("/metrics", headers={"authorization": f"Bearer {nobody}"})
    assert refused.status_code == 403 and refused.json()["error"] == "PermissionDenied"
    scraped = api.client.get("/metrics", headers={"authorization": f"Bearer {api.admin_token}"})
    assert scraped.status_code == 200 and "cedarkey_login_failures" in scraped.text


# --- private answers, JSON only, names that show what they are ---------------------------------------


def test_every_command_answer_is_private_and_typed(api: Api) -> None:
    api.ok("create-secret", name="/dev/s", value="v")
    for response in (
        api.call("get-secret-value", name="/dev/s"),
        api.call("get-secret-value", name="/dev/missing"),
        api.call("list-items", token="t-wrong"),
        api.client.post("/auth", content=b"{}"),
    ):
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None]
)
def test_a_body_that_is_not_declared_json_is_refused(api: Api, content_type: str | None) -> None:
    """A browser's cross-site form post can never be a command."""
    body = orjson.dumps({"name": "/dev/forged", "value": "v", "token": api.admin_token})
    request = api.client.build_request("POST", "/create-secret", content=body)
    del request.headers["content-type"]  # the client's default is JSON
    if content_type is not None:
        request.headers["content-type"] = content_type
    answer = api.client.send(request)
    assert answer.status_code == 415 and answer.json()["error"] == "UnsupportedMediaType"
    assert api.call("get-secret-value", name="/dev/forged").status_code == 404
    assert api.call("create-secret", name="/dev/ok", value="v").status_code == 200  # JSON is fine


@pytest.mark.parametrize("hidden", ["\u200b", "\u202e", "\u2066", "\ufeff", "\u2028", "\u00ad", "\ufdd0", "\uffff"])
def test_names_with_invisible_characters_are_refused(api: Api, hidden: str) -> None:
    api.ok("create-secret", name="/dev/x", value="real")
    for command, body in (
        ("create-secret", {"name": f"/dev/x{hidden}", "value": "look-alike"}),
        ("create-role", {"name": f"/team{hidden}/ops"}),
        ("create-auth-method", {"name": f"/apps/{hidden}keys"}),
        ("set-role-rule", {"role-name": "/admin", "path": f"/dev/{hidden}*", "capability": ["read"]}),
    ):
        answer = api.call(command, **body)
        assert answer.status_code == 400, (command, answer.text)
        assert "invisible" in answer.json()["message"]


# --- 2 and 11. STS URLs are pinned by the operator ------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://sts.amazonaws.com/",
        "https://sts.eu-west-1.amazonaws.com/",
        "https://sts-fips.us-east-1.amazonaws.com/",
        "https://sts.cn-north-1.amazonaws.com.cn/",
        "https://sts.us-gov-west-1.amazonaws.com/",
    ],
)
def test_aws_sts_endpoints_are_always_allowed(url: str) -> None:
    assert StsUrls().allows(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://sts.amazonaws.com/",  # not https
        "https://sts.amazonaws.com/x",  # another path
        "https://sts.amazonaws.com:8443/",
        "https://sts.a.b.amazonaws.com/",  # '*' is one label
        "https://evil.com/",
        "https://sts.amazonaws.com.evil.com/",
        "http://127.0.0.1:9/",
        "http://169.254.169.254/",
    ],
)
def test_other_urls_are_refused_unless_the_operator_adds_them(url: str) -> None:
    assert not StsUrls().allows(url)


def test_allow_list_entries() -> None:
    urls = StsUrls(["https://*.sts.us-east-1.vpce.amazonaws.com/", "http://127.0.0.1:4566/"])
    assert urls.allows("https://vpce-0abc.sts.us-east-1.vpce.amazonaws.com/")
    assert not urls.allows("https://vpce-0abc.x.sts.us-east-1.vpce.amazonaws.com/")
    assert urls.allows("http://127.0.0.1:4566/") and not urls.allows("http://127.0.0.1:4567/")
    assert allowed_entry("HTTPS://STS.Example.COM") == "https://sts.example.com/"
    for bad in ("https://sts*.amazonaws.com/", "https://sts.amazonaws.com/*", "ftp://x/", "https://a@b/"):
        with pytest.raises(ValueError):
            allowed_entry(bad)


def test_an_auth_method_cannot_point_outside_the_allow_list(api: Api) -> None:
    for command in ("create-auth-method-aws-iam", "update-auth-method-aws-iam"):
        if command.startswith("update"):
            api.ok("create-auth-method-aws-iam", name="/iam/x", bound_aws_account_id=[A], bound_role_name=["r"])
        answer = api.call(command, name="/iam/x", bound_aws_account_id=[A], sts_url="http://169.254.169.254/")
        assert answer.status_code == 403 and answer.json()["error"] == "UntrustedStsUrl"
        assert "not an STS URL this server trusts" in answer.json()["message"]


def test_a_login_through_a_url_no_longer_allowed_is_refused(
    tmp_path: Path, moto: MotoHandle, aws: dict[str, Any]
) -> None:
    """The allow-list is checked again at login: an operator narrowing it takes effect for stored methods."""
    from cedarkey.client.proof import make_cloud_id

    data = tmp_path / "data"
    with running_api(data, allowed_sts_urls=(moto.url,)) as first:
        access_id = first.ok(
            "create-auth-method-aws-iam", name="/iam/dev", bound_aws_account_id=[A], bound_role_name=["dev-role"],
            sts_url=moto.url,
        )["access-id"]  # fmt: skip
        server_id = first.settings.server_id
    app, _ = create_app(Settings(data_dir=data))
    with TestClient(app, headers={"content-type": "application/json"}) as client:
        proof = make_cloud_id(moto.url, server_id, credentials=botocore_credentials(aws["dev_role"]))
        body = {"access-type": "aws_iam", "access-id": access_id, "cloud-id": proof}
        assert client.post("/auth", content=orjson.dumps(body)).status_code == 401
    last = orjson.loads((data / "audit.log").read_text().splitlines()[-1])
    assert last["reason"] == "sts_url_not_allowed"


def test_only_a_full_admin_changes_an_sts_url_and_widening_needs_create(api: Api, moto: MotoHandle) -> None:
    other = moto.url.replace("127.0.0.1", "localhost")
    with running_api(api.settings.data_dir.parent / "two", allowed_sts_urls=(moto.url, other)) as two:
        two.ok(
            "create-auth-method-aws-iam", name="/prod-am", bound_aws_account_id=[A], bound_role_name=["dev-role"],
            sts_url=moto.url,
        )  # fmt: skip
        operator_am = two.ok("create-auth-method", name="/ops/operator")
        two.ok("create-role", name="/ops/operators")
        two.ok("assoc-role-am", role_name="/ops/operators", am_name="/ops/operator")
        two.ok(
            "set-role-rule", role_name="/ops/operators", path="/prod-am", capability=["read", "update"],
            rule_type="auth-method-rule",
        )  # fmt: skip
        operator = login_key(two, operator_am)
        refused = two.call("update-auth-method-aws-iam", operator, name="/prod-am", sts_url=other)
        assert refused.status_code == 403 and "sts-url" in refused.json()["message"]
        assert two.ok("get-auth-method", name="/prod-am")["sts-url"] == moto.url
        # Narrowing is an update; widening (a new account, a binding removed) needs create.
        two.ok("update-auth-method-aws-iam", operator, name="/prod-am", bound_role_id=["AROA1"])
        for widening in ({"bound_aws_account_id": [A, "111111111111"]}, {"bound_role_name": []}):
            answer = two.call("update-auth-method-aws-iam", operator, name="/prod-am", **widening)
            assert answer.status_code == 403 and "create" in answer.json()["message"], widening
        assert two.ok("update-auth-method-aws-iam", name="/prod-am", sts_url=other)["name"] == "/prod-am"
