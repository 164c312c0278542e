"""AWS IAM login, happy paths: proofs made by the client, verified by the server against moto's real STS
(request authentication on), plus unit tests of the proof format, the ARN parser and the replay guard."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from typing import Any

import botocore.session
import pytest
from botocore.credentials import Credentials
from cedarkey.client import proof
from cedarkey.client.proof import ProofError, make_cloud_id, sts_region
from cedarkey.server import sts
from cedarkey.server.arn import ArnError, parse_caller
from cedarkey.server.sts import LoginFailed, MemoryReplayGuard, StsVerifier

from tests.support.moto import (
    ACCOUNT_ID,
    INSTANCE_ID,
    MotoHandle,
    botocore_credentials,
)

SERVER = "cedarkey-test-a"


def verify(cloud_id: str, sts_url: str, server_id: str = SERVER) -> dict[str, str]:
    async def run() -> dict[str, str]:
        verifier = StsVerifier(server_id, MemoryReplayGuard(), timeout=5.0)
        try:
            return await verifier.verify(cloud_id, sts_url)
        finally:
            await verifier.aclose()

    return asyncio.run(run())


def decode(cloud_id: str) -> dict[str, Any]:
    return json.loads(base64.b64decode(cloud_id, validate=True))


# -- logins against moto ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "unique_id", "pattern", "expected"),
    [
        (
            "dev_role",
            "role_id",
            r"AROA[A-Z0-9]+",
            {
                "arn": f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/dev-role/{INSTANCE_ID}",
                "iam_arn": f"arn:aws:iam::{ACCOUNT_ID}:role/dev-role",
                "principal_type": "assumed-role",
                "role_name": "dev-role",
                "session_name": INSTANCE_ID,
                "resource_id": INSTANCE_ID,
            },
        ),
        (
            "user",
            "user_id",
            r"[A-Za-z0-9]+",
            {
                "arn": f"arn:aws:iam::{ACCOUNT_ID}:user/app-user",
                "iam_arn": f"arn:aws:iam::{ACCOUNT_ID}:user/app-user",
                "principal_type": "user",
                "user_name": "app-user",
            },
        ),
    ],
)
def test_a_login_says_who_signed(
    moto: MotoHandle, aws: dict[str, Any], who: str, unique_id: str, pattern: str, expected: dict[str, str]
) -> None:
    """An assumed role and an IAM user, as moto's STS vouches for them (their unique ids are moto's own)."""
    attrs = verify(make_cloud_id(moto.url, SERVER, credentials=botocore_credentials(aws[who])), moto.url)
    assert re.fullmatch(pattern, attrs.pop(unique_id))
    assert attrs == {"account": ACCOUNT_ID, **expected}


def test_assumed_role_with_path_loses_the_path(moto: MotoHandle, aws: dict[str, Any]) -> None:
    cloud_id = make_cloud_id(moto.url, SERVER, credentials=botocore_credentials(aws["other_role"]))
    attrs = verify(cloud_id, moto.url)
    assert attrs["role_name"] == "other-role"
    assert attrs["session_name"] == "ci-job-42"
    # The role lives at /team/other-role, but STS's assumed-role ARN does not say so.
    assert attrs["iam_arn"] == f"arn:aws:iam::{ACCOUNT_ID}:role/other-role"


def test_credentials_from_a_session(moto: MotoHandle, aws: dict[str, Any]) -> None:
    session = botocore.session.Session()
    creds = aws["dev_role"]
    session.set_credentials(creds["access_key_id"], creds["secret_access_key"], creds["session_token"])
    attrs = verify(make_cloud_id(moto.url, SERVER, session=session), moto.url)
    assert attrs["role_name"] == "dev-role"


def test_credentials_from_the_default_chain(
    moto: MotoHandle, aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = aws["user"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", creds["access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", creds["secret_access_key"])
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    attrs = verify(make_cloud_id(moto.url, SERVER), moto.url)
    assert attrs["user_name"] == "app-user"


def test_no_credentials_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(ProofError, match="no AWS credentials"):
        make_cloud_id("https://sts.amazonaws.com/", SERVER)


@pytest.mark.parametrize("bad", ["ftp://sts.amazonaws.com/", "https://sts.amazonaws.com/?a=b", "nope"])
def test_bad_sts_url_is_a_proof_error(bad: str) -> None:
    with pytest.raises(ProofError, match="STS URL"):
        make_cloud_id(bad, SERVER, credentials=Credentials("AKIAIOSFODNN7EXAMPLE", "secret"))


@pytest.mark.parametrize("bad", ["", " padded", "line\nbreak", "x" * 257])
def test_bad_server_id_is_a_proof_error(bad: str) -> None:
    with pytest.raises(ProofError, match="server id"):
        make_cloud_id("https://sts.amazonaws.com/", bad, credentials=Credentials("AKIAIOSFODNN7EXAMPLE", "secret"))


# -- the proof's format ----------------------------------------------------------------------------------


def test_proof_format() -> None:
    creds = Credentials("ASIAIOSFODNN7EXAMPLE", "secret", "token/with+chars=")
    cloud_id = make_cloud_id("https://STS.eu-west-1.amazonaws.com", "srv", credentials=creds)
    document = decode(cloud_id)
    assert set(document) == {"method", "url", "body", "headers"}
    assert document["method"] == "POST"
    assert document["url"] == "https://sts.eu-west-1.amazonaws.com/"
    assert base64.b64decode(document["body"]) == b"Action=GetCallerIdentity&Version=2011-06-15"
    headers = {name.lower(): values for name, values in document["headers"].items()}
    assert all(len(values) == 1 for values in headers.values())
    assert set(headers) == {
        "authorization",
        "content-type",
        "x-amz-date",
        "x-amz-security-token",
        "x-cedarkey-nonce",
        "x-cedarkey-server-id",
    }
    assert headers["content-type"] == ["application/x-www-form-urlencoded; charset=utf-8"]
    assert headers["x-cedarkey-server-id"] == ["srv"]
    assert re.fullmatch(r"[0-9a-f]{32}", headers["x-cedarkey-nonce"][0])
    authorization = headers["authorization"][0]
    assert "/eu-west-1/sts/aws4_request" in authorization
    assert (
        "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-cedarkey-nonce;x-cedarkey-server-id,"
        in authorization
    )
    # Two proofs are never equal (the nonce), so single use never refuses a legitimate second login.
    again = decode(make_cloud_id("https://sts.eu-west-1.amazonaws.com/", "srv", credentials=creds))
    assert again["headers"]["X-Cedarkey-Nonce"] != document["headers"]["X-Cedarkey-Nonce"]


def test_the_proof_passes_the_local_checks() -> None:
    creds = Credentials("AKIAIOSFODNN7EXAMPLE", "secret")
    url = "https://sts.us-west-2.amazonaws.com/"
    verifier = StsVerifier("srv", MemoryReplayGuard())
    checked = verifier.check(make_cloud_id(url, "srv", credentials=creds), url)
    assert checked.headers["host"] == "sts.us-west-2.amazonaws.com"
    assert set(checked.headers) == {
        "authorization",
        "content-type",
        "host",
        "x-amz-date",
        "x-cedarkey-nonce",
        "x-cedarkey-server-id",
    }
    asyncio.run(verifier.aclose())


def test_region_override() -> None:
    creds = Credentials("AKIAIOSFODNN7EXAMPLE", "secret")
    url = "https://vpce-0123-abcd.sts.eu-west-1.vpce.amazonaws.com/"
    document = decode(make_cloud_id(url, "srv", credentials=creds, region="eu-west-1"))
    assert "/eu-west-1/sts/aws4_request" in document["headers"]["Authorization"][0]
    with pytest.raises(ProofError, match="region"):
        make_cloud_id(url, "srv", credentials=creds, region="EU WEST")


def test_client_and_server_agree_on_the_fixed_parts() -> None:
    assert proof.BODY == sts.BODY
    assert proof.SERVER_ID_HEADER == sts.SERVER_ID_HEADER
    assert proof.NONCE_HEADER == sts.NONCE_HEADER
    assert proof.CONTENT_TYPE in sts.CONTENT_TYPES


@pytest.mark.parametrize(
    ("url", "region"),
    [
        ("https://sts.amazonaws.com/", "us-east-1"),
        ("https://sts.eu-west-1.amazonaws.com/", "eu-west-1"),
        ("https://sts.us-gov-west-1.amazonaws.com/", "us-gov-west-1"),
        ("https://sts-fips.us-east-2.amazonaws.com/", "us-east-2"),
        ("https://sts.cn-north-1.amazonaws.com.cn/", "cn-north-1"),
        ("http://127.0.0.1:5000/", "us-east-1"),
        ("https://sts.eu-west-1.amazonaws.com.evil.example/", "us-east-1"),
        ("https://vpce-0123.sts.eu-west-1.vpce.amazonaws.com/", "us-east-1"),
    ],
)
def test_sts_region(url: str, region: str) -> None:
    assert sts_region(url) == region


# -- ARN parsing -----------------------------------------------------------------------------------------

A = "123456789012"


ASSUMED = "i-0abc1234def567890"

#: (ARN, user id, the attributes beside account and arn) for every shape GetCallerIdentity answers.
SHAPES = [
    *(
        (
            f"arn:{p}:sts::{A}:assumed-role/dev-role/{ASSUMED}",
            f"AROAEXAMPLE123:{ASSUMED}",
            {"principal_type": "assumed-role", "iam_arn": f"arn:{p}:iam::{A}:role/dev-role", "role_name": "dev-role",
             "role_id": "AROAEXAMPLE123", "session_name": ASSUMED, "resource_id": ASSUMED},
        )
        for p in ("aws", "aws-cn", "aws-us-gov")
    ),
    *(
        (f"arn:aws:iam::{A}:user{path}alice@example.com", "AIDAEXAMPLE123",
         {"principal_type": "user", "user_name": "alice@example.com", "user_id": "AIDAEXAMPLE123"})
        for path in ("/", "/division/team/")
    ),
    (f"arn:aws:iam::{A}:role/service/deployer", "AROAEXAMPLE123",
     {"principal_type": "role", "role_name": "deployer", "role_id": "AROAEXAMPLE123"}),
    (f"arn:aws:sts::{A}:federated-user/bob", f"{A}:bob", {"principal_type": "federated-user", "federated_name": "bob"}),
]  # fmt: skip


@pytest.mark.parametrize(("arn", "user_id", "attributes"), SHAPES, ids=lambda v: v if isinstance(v, str) else "")
def test_arn_shapes(arn: str, user_id: str, attributes: dict[str, str]) -> None:
    expected = {"account": A, "arn": arn, **attributes}
    if attributes["principal_type"] in ("user", "role"):
        expected["iam_arn"] = arn  # an IAM user's or role's ARN is its IAM ARN
    assert parse_caller(arn, user_id, A) == expected


def test_arn_root() -> None:
    arn = f"arn:aws:iam::{A}:root"
    assert parse_caller(arn, A, A) == {"account": A, "arn": arn, "principal_type": "root", "iam_arn": arn}


@pytest.mark.parametrize(
    ("arn", "user_id", "account", "reason"),
    [
        (f"arn:aws-iso:sts::{A}:assumed-role/r/session", "AROAX:session", A, "bad_arn"),
        (f"arn:AWS:sts::{A}:assumed-role/r/session", "AROAX:session", A, "bad_arn"),
        (f"arn:aws:sts::{A}:user/moto", "AKIAIOSFODNN7EXAMPLE", A, "bad_arn"),  # moto's fallback answer
        (f"arn:aws:sts::{A}:assumed-role/dev-role", "AROAX:dev-role", A, "bad_arn"),
        (f"arn:aws:sts::{A}:assumed-role/team/dev-role/session", "AROAX:session", A, "bad_arn"),
        (f"arn:aws:iam::{A}:assumed-role/r/session", "AROAX:session", A, "bad_arn"),
        (f"arn:aws:sts:us-east-1:{A}:assumed-role/r/session", "AROAX:session", A, "bad_arn"),
        (f"arn:aws:sts::{A}:assumed-role/r*/session", "AROAX:session", A, "bad_arn"),
        (f"arn:aws:sts::{A}:assumed-role/r/session\n", "AROAX:session", A, "bad_arn"),
        (f"arn:aws:sts::{A}:assumed-role/r/séssion", "AROAX:séssion", A, "bad_arn"),
        (f"arn:aws:sts::{A}:assumed-role/r/s", "AROAX:s", A, "bad_arn"),  # session names are 2+
        ("arn:aws:sts::12345678901:assumed-role/r/session", "AROAX:session", "12345678901", "bad_account"),
        (f"arn:aws:sts::{A}:assumed-role/r/session", "AROAX:session", "210987654321", "account_mismatch"),
        (f"arn:aws:sts::{A}:assumed-role/r/session", "AROAX:other", A, "bad_user_id"),
        (f"arn:aws:sts::{A}:assumed-role/r/session", "AROAX", A, "bad_user_id"),
        (f"arn:aws:iam::{A}:user//alice", "AIDAX", A, "bad_arn"),
        (f"arn:aws:iam::{A}:user/team/", "AIDAX", A, "bad_arn"),
        (f"arn:aws:iam::{A}:user/alice", "AIDAX:alice", A, "bad_user_id"),
        (f"arn:aws:iam::{A}:group/admins", "AGPAX", A, "bad_arn"),
        (f"arn:aws:sts::{A}:federated-user/bob", "AIDAX", A, "bad_user_id"),
        (f"arn:aws:iam::{A}:root", "AIDAX", A, "bad_user_id"),
        (f"arn:aws:iam::{A}:root/extra", A, A, "bad_arn"),
        ("", "", A, "bad_arn"),
        ("arn:aws:s3:::bucket", "x", A, "bad_arn"),
    ],
)
def test_arn_malformed(arn: str, user_id: str, account: str, reason: str) -> None:
    with pytest.raises(ArnError) as caught:
        parse_caller(arn, user_id, account)
    assert caught.value.reason == reason


# -- the replay guard ------------------------------------------------------------------------------------


def test_memory_replay_guard_claims_once_and_expires() -> None:
    now = [1000.0]
    guard = MemoryReplayGuard(clock=lambda: now[0])

    async def run() -> None:
        assert await guard.claim("a", 1100.0)
        assert not await guard.claim("a", 1100.0)
        assert await guard.claim("b", 2000.0)
        now[0] = 1100.5  # a has expired: pruned, claimable again
        assert await guard.claim("a", 1200.0)
        assert not await guard.claim("b", 2000.0)
        assert len(guard) == 2
        results = await asyncio.gather(*(guard.claim("c", 3000.0) for _ in range(10)))
        assert results.count(True) == 1

    asyncio.run(run())


def test_login_failed_carries_reason() -> None:
    exc = LoginFailed("replay", "used")
    assert exc.reason == "replay" and str(exc) == "used" and exc.detail is None
