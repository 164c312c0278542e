"""Attacks on the AWS IAM login: each must be refused with the right reason, and the ones the verifier can
see locally must be refused before anything is sent to STS.

"Nothing sent" is proved by pointing the verifier's STS URL at a small real HTTP server on loopback that
records every request it gets (:class:`FakeSts`); the same server plays a hostile STS for the answer
checks. Signature checks are left to moto's real server with request authentication on.
"""

from __future__ import annotations

import asyncio
import base64
import encodings.aliases
import gzip
import hashlib
import json
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cedarkey.client.proof import CONTENT_TYPE, encode_cloud_id, make_cloud_id
from cedarkey.engine import ModelError
from cedarkey.engine.auth_method import canonical_sts_url
from cedarkey.server.sts import BODY, LoginFailed, MemoryReplayGuard, StsVerifier, signing_host
from cedarkey.server.sts_client import StsTransport
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.moto import ACCOUNT_ID, MotoHandle, botocore_credentials

SERVER = "cedarkey-test-a"
OTHER_SERVER = "cedarkey-test-b"
FAKE_CREDS = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
NS = "https://sts.amazonaws.com/doc/2011-06-15/"


# -- a recording, scriptable HTTP server -----------------------------------------------------------------


@dataclass
class Hit:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "text/xml"})
    body: bytes = b""
    delay: float = 0.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    answer: Answer
    hits: list[Hit]
    release: threading.Event

    def handle_error(self, request: Any, client_address: Any) -> None:  # a client that gave up: fine
        pass


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.server.hits.append(Hit(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        answer = self.server.answer
        if answer.delay:
            self.server.release.wait(answer.delay)
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        if "Content-Length" not in answer.headers:
            self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    do_GET = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        pass


class FakeSts:
    """A loopback HTTP server that records requests and answers with :attr:`answer`."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.hits = []
        self._server.answer = Answer()
        self._server.release = threading.Event()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    @property
    def hits(self) -> list[Hit]:
        return self._server.hits

    def reset(self, answer: Answer | None = None) -> None:
        self._server.hits.clear()
        self._server.answer = answer or Answer()

    def __enter__(self) -> FakeSts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._server.release.set()
        self._server.shutdown()
        self._server.server_close()


# -- fixtures and helpers --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def _fake_sts() -> Iterator[FakeSts]:
    with FakeSts() as server:
        yield server


@pytest.fixture
def fake(_fake_sts: FakeSts) -> FakeSts:
    _fake_sts.reset()
    return _fake_sts


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def run_verify(
    cloud_id: Any,
    sts_url: str,
    *,
    server_id: str = SERVER,
    clock_offset: float = 0.0,
    timeout: float = 5.0,
    on_sts: Callable[[float, str], None] | None = None,
) -> dict[str, str]:
    async def run() -> dict[str, str]:
        verifier = StsVerifier(
            server_id, MemoryReplayGuard(), timeout=timeout, clock=lambda: time.time() + clock_offset, on_sts=on_sts
        )
        try:
            return await verifier.verify(cloud_id, sts_url)
        finally:
            await verifier.aclose()

    return asyncio.run(run())


def refused(cloud_id: Any, sts_url: str, reason: str, **kwargs: Any) -> LoginFailed:
    with pytest.raises(LoginFailed) as caught:
        run_verify(cloud_id, sts_url, **kwargs)
    assert caught.value.reason == reason, str(caught.value)
    return caught.value


def sign(
    url: str,
    *,
    creds: Credentials = FAKE_CREDS,
    server_id: str | None = SERVER,
    body: bytes = BODY,
    extra: dict[str, str] | None = None,
    service: str = "sts",
    region: str = "us-east-1",
) -> AWSRequest:
    """A signed request built like the client's, with knobs the real client does not have."""
    headers = {"Content-Type": CONTENT_TYPE, "X-Cedarkey-Nonce": secrets.token_hex(16)}
    if server_id is not None:
        headers["X-Cedarkey-Server-ID"] = server_id
    headers.update(extra or {})
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    SigV4Auth(creds, service, region).add_auth(request)
    return request


def pack(
    request: AWSRequest,
    *,
    url: str | None = None,
    method: str = "POST",
    body: bytes | None = None,
    add: dict[str, list[str]] | None = None,
    drop: tuple[str, ...] = (),
    replace: dict[str, str] | None = None,
) -> str:
    headers = {name: [value] for name, value in request.headers.items() if name not in drop}
    for name, value in (replace or {}).items():
        headers[name] = [value]
    headers.update(add or {})
    return encode_cloud_id(method, url or request.url, request.data if body is None else body, headers)


def b64json(document: Any) -> str:
    return base64.b64encode(json.dumps(document).encode()).decode()


def good_document(url: str) -> dict[str, Any]:
    return json.loads(base64.b64decode(make_cloud_id(url, SERVER, credentials=FAKE_CREDS)))


# -- refused before anything reaches STS -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("make_url", "reason"),
    [
        (lambda url: "http://evil.example/", "url_mismatch"),  # attacker's host
        (lambda url: url.replace("http://", "https://"), "url_mismatch"),  # scheme
        (lambda url: url.rstrip("/").rsplit(":", 1)[0] + ":1/", "url_mismatch"),  # port
        (lambda url: url + "evil", "url_mismatch"),  # path
        (lambda url: url + "./", "url_mismatch"),  # a path that normalises to the same one is still refused
        (lambda url: "http://localhost:" + url.rsplit(":", 1)[1], "url_mismatch"),  # another name, same place
        (lambda url: url + "?Action=AssumeRole", "url_invalid"),  # query
        (lambda url: url.replace("http://", "http://sts.amazonaws.com@"), "url_invalid"),  # userinfo
        (lambda url: url + "#frag", "url_invalid"),  # fragment
        (lambda url: url.rstrip("/").rsplit(":", 1)[0] + ":0/", "url_invalid"),  # port 0 is not the default port
    ],
)
def test_attacker_chosen_url(fake: FakeSts, make_url: Any, reason: str) -> None:
    url = make_url(fake.url)
    refused(pack(sign(url)), fake.url, reason)
    assert fake.hits == []


@pytest.mark.parametrize("url", ["file:///etc/passwd", "http:///", "//127.0.0.1/", "http://[::1/"])
def test_url_that_is_not_an_sts_url(fake: FakeSts, url: str) -> None:
    refused(pack(sign(fake.url), url=url), fake.url, "url_invalid")
    assert fake.hits == []


@pytest.mark.parametrize(
    "body",
    [
        b"Action=GetSessionToken&Version=2011-06-15",  # another action
        b"Action=GetCallerIdentity&Version=2011-06-15&Action=AssumeRole",  # extra parameters
        b"Action=GetCallerIdentity&Version=2011-06-15&RoleArn=x",
        b"Version=2011-06-15&Action=GetCallerIdentity",  # same meaning, not the exact body
        b"Action=GetCallerIdentity&Version=2011-06-15\n",
        b"",
    ],
)
def test_wrong_body(fake: FakeSts, body: bytes) -> None:
    refused(pack(sign(fake.url, body=body)), fake.url, "bad_body")
    assert fake.hits == []


def test_wrong_method(fake: FakeSts) -> None:
    refused(pack(sign(fake.url), method="GET"), fake.url, "bad_method")
    refused(pack(sign(fake.url), method="post"), fake.url, "bad_method")
    assert fake.hits == []


def test_missing_server_id(fake: FakeSts) -> None:
    refused(pack(sign(fake.url, server_id=None)), fake.url, "missing_header")
    assert fake.hits == []


def test_unsigned_server_id(fake: FakeSts) -> None:
    # Signed without the header, which is then added: STS would not notice; the verifier must.
    request = sign(fake.url, server_id=None)
    refused(pack(request, add={"X-Cedarkey-Server-ID": [SERVER]}), fake.url, "unsigned_header")
    assert fake.hits == []


def test_proof_for_server_a_replayed_to_server_b(fake: FakeSts) -> None:
    cloud_id = make_cloud_id(fake.url, SERVER, credentials=FAKE_CREDS)
    refused(cloud_id, fake.url, "server_id_mismatch", server_id=OTHER_SERVER)
    assert fake.hits == []


def test_stale_and_future_dates(fake: FakeSts) -> None:
    cloud_id = make_cloud_id(fake.url, SERVER, credentials=FAKE_CREDS)
    refused(cloud_id, fake.url, "stale_date", clock_offset=16 * 60)
    refused(cloud_id, fake.url, "future_date", clock_offset=-16 * 60)
    assert fake.hits == []


def test_signed_accept_header(fake: FakeSts) -> None:
    refused(pack(sign(fake.url, extra={"Accept": "application/json"})), fake.url, "unknown_header")
    assert fake.hits == []


@pytest.mark.parametrize(
    "name", ["X-Forwarded-Host", "Accept", "X-Amz-Target", "Transfer-Encoding", "Connection", "User-Agent"]
)
def test_unknown_unsigned_header(fake: FakeSts, name: str) -> None:
    refused(pack(sign(fake.url), add={name: ["x"]}), fake.url, "unknown_header")
    assert fake.hits == []


def test_signed_host_of_another_server(fake: FakeSts) -> None:
    request = sign(fake.url, extra={"Host": "sts.amazonaws.com"})
    refused(pack(request), fake.url, "host_mismatch")
    assert fake.hits == []


def test_unsigned_host(fake: FakeSts) -> None:
    # A Host header added after signing: botocore signed the URL's host, the proof now claims another.
    refused(pack(sign(fake.url), add={"Host": ["sts.amazonaws.com"]}), fake.url, "host_mismatch")
    # SignedHeaders without host at all.
    request = sign(fake.url)
    auth = request.headers["Authorization"].replace("host;", "")
    refused(pack(request, replace={"Authorization": auth}), fake.url, "unsigned_header")
    assert fake.hits == []


def test_unsigned_security_token(fake: FakeSts) -> None:
    refused(pack(sign(fake.url), add={"X-Amz-Security-Token": ["token"]}), fake.url, "unsigned_header")
    assert fake.hits == []


def test_signed_header_not_sent(fake: FakeSts) -> None:
    request = sign(fake.url, creds=Credentials("ASIAIOSFODNN7EXAMPLE", "secret", "token"))
    refused(pack(request, drop=("X-Amz-Security-Token",)), fake.url, "bad_authorization")
    assert fake.hits == []


def test_duplicate_header_in_two_cases(fake: FakeSts) -> None:
    request = sign(fake.url)
    refused(pack(request, add={"x-amz-date": [request.headers["X-Amz-Date"]]}), fake.url, "duplicate_header")
    assert fake.hits == []


def test_header_with_two_values(fake: FakeSts) -> None:
    request = sign(fake.url)
    refused(pack(request, add={"X-Cedarkey-Server-ID": [SERVER, SERVER]}), fake.url, "bad_header")
    refused(pack(request, add={"X-Cedarkey-Server-ID": []}), fake.url, "bad_header")
    refused(pack(request, add={"X-Cedarkey-Server-ID": SERVER}), fake.url, "bad_header")  # type: ignore[dict-item]
    assert fake.hits == []


@pytest.mark.parametrize(
    "value",
    [f"{SERVER}\r\nX-Forwarded-Host: evil", f" {SERVER}", f"{SERVER}\t", "caf\u00e9", "", "cedarkey  test"],
)
def test_header_value_injection(fake: FakeSts, value: str) -> None:
    refused(pack(sign(fake.url), replace={"X-Cedarkey-Server-ID": value}), fake.url, "bad_header")
    assert fake.hits == []


def test_a_proof_for_one_server_id_is_not_good_for_the_same_id_with_more_spaces(
    moto: MotoHandle, aws: dict[str, Any]
) -> None:
    """SigV4 signs a header value with its runs of spaces collapsed: a proof made for server ``team a``, its
    header changed to ``team  a``, still has a signature STS accepts. So such values (and such server ids)
    are refused: the value compared is always the value signed."""
    creds = botocore_credentials(aws["dev_role"])
    signed_for_a = make_cloud_id(moto.url, "team a", credentials=creds)
    document = json.loads(base64.b64decode(signed_for_a))
    document["headers"]["X-Cedarkey-Server-ID"] = ["team  a"]
    refused(b64json(document), moto.url, "bad_header", server_id="team a")
    with pytest.raises(ValueError, match="runs of spaces"):
        StsVerifier("team  a", MemoryReplayGuard())
    # STS itself cannot tell the two apart: the changed proof, sent as it is, is answered.
    headers = {name: values[0] for name, values in document["headers"].items()}
    answer = httpx.post(moto.url, content=BODY, headers=headers)
    assert answer.status_code == 200 and b"assumed-role/dev-role" in answer.content
    assert run_verify(signed_for_a, moto.url, server_id="team a")["role_name"] == "dev-role"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Content-Type", "application/json"),
        ("Content-Length", "4096"),
        ("X-Amz-Content-SHA256", "UNSIGNED-PAYLOAD"),
        ("X-Cedarkey-Nonce", "not-a-nonce"),
    ],
)
def test_bad_signed_header_values(fake: FakeSts, name: str, value: str) -> None:
    refused(pack(sign(fake.url, extra={name: value})), fake.url, "bad_header")
    assert fake.hits == []


def test_signed_for_another_service(fake: FakeSts) -> None:
    refused(pack(sign(fake.url, service="iam")), fake.url, "wrong_service")
    assert fake.hits == []


@pytest.mark.parametrize(
    "mangle",
    [
        lambda a: "AWS AKIAIOSFODNN7EXAMPLE:c2lnbmF0dXJl",  # SigV2
        lambda a: a.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA1"),
        lambda a: a.replace(", ", ","),
        lambda a: a[:-1] + "X",  # not hex
        lambda a: a[:-2],  # short signature
        lambda a: a.upper().replace("AWS4-HMAC-SHA256 CREDENTIAL", "AWS4-HMAC-SHA256 Credential"),
        lambda a: a + ", Signature=" + "0" * 64,
        lambda a: a.replace("/aws4_request", "/aws4_request/extra"),
        lambda a: a.replace("SignedHeaders=", "SignedHeaders=x-amz-date;"),  # unsorted, duplicate
    ],
)
def test_malformed_authorization(fake: FakeSts, mangle: Any) -> None:
    request = sign(fake.url)
    refused(
        pack(request, replace={"Authorization": mangle(request.headers["Authorization"])}),
        fake.url,
        "bad_authorization",
    )
    assert fake.hits == []


def test_credential_scope_date_not_the_request_date(fake: FakeSts) -> None:
    request = sign(fake.url)
    auth = request.headers["Authorization"]
    date = request.headers["X-Amz-Date"][:8]
    refused(
        pack(request, replace={"Authorization": auth.replace(f"/{date}/", "/20200101/")}), fake.url, "scope_mismatch"
    )
    assert fake.hits == []


@pytest.mark.parametrize(
    "value",
    [
        "20261301T000000Z",
        "20260230T000000Z",  # February 30th
        "20260101T240000Z",
        "20260101T000060Z",
        "2026-01-01T00:00:00Z",
        "Wed, 01 Jan 2026 00:00:00 GMT",
    ],
)
def test_bad_date(fake: FakeSts, value: str) -> None:
    refused(pack(sign(fake.url), replace={"X-Amz-Date": value}), fake.url, "bad_date")
    assert fake.hits == []


def test_oversized_fields(fake: FakeSts) -> None:
    refused("A" * (16 * 1024 + 4), fake.url, "too_large")
    refused(pack(sign(fake.url), replace={"X-Amz-Security-Token": "a" * 9000}), fake.url, "too_large")
    refused(pack(sign(fake.url), url=fake.url + "a" * 600), fake.url, "too_large")
    many = {f"X-Amz-Meta-{n}": ["x"] for n in range(20)}
    refused(pack(sign(fake.url), add=many), fake.url, "too_large")
    refused(pack(sign(fake.url), add={"X" * 65: ["x"]}), fake.url, "too_large")
    assert fake.hits == []


@pytest.mark.parametrize(
    "cloud_id",
    [
        "not base64!",
        b64json({"a": 1}).rstrip("="),  # missing padding
        b64json({"a": 1}).replace("+", "-").replace("/", "_") + "-_",  # urlsafe alphabet
        " " + b64json({"a": 1}),
        b64json({"a": 1})[:-2] + "\n" + b64json({"a": 1})[-2:],
        "QQ==\n",
        "",
        12345,
        None,
    ],
)
def test_bad_base64(fake: FakeSts, cloud_id: Any) -> None:
    refused(cloud_id, fake.url, "bad_encoding")
    assert fake.hits == []


def test_body_field_bad_base64(fake: FakeSts) -> None:
    document = good_document(fake.url)
    document["body"] = base64.urlsafe_b64encode(BODY).decode().rstrip("=")
    refused(b64json(document), fake.url, "bad_encoding")
    assert fake.hits == []


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b'{"method": "POST", "url": NaN}',
        b"\xff\xfe{}",
        b"[" * 5000 + b"]" * 5000,
        b'{"method": "POST", "method": "GET", "url": "", "body": "", "headers": {}}',  # duplicate key
    ],
)
def test_not_json(fake: FakeSts, raw: bytes) -> None:
    refused(base64.b64encode(raw).decode(), fake.url, "bad_json")
    assert fake.hits == []


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: [d],
        lambda d: "string",
        lambda d: {k: v for k, v in d.items() if k != "headers"},
        lambda d: {**d, "extra": 1},
        lambda d: {**d, "method": ["POST"]},
        lambda d: {**d, "url": None},
        lambda d: {**d, "body": 5},
        lambda d: {**d, "headers": [["Host", "x"]]},
    ],
)
def test_wrong_shape(fake: FakeSts, mutate: Any) -> None:
    refused(b64json(mutate(good_document(fake.url))), fake.url, "bad_shape")
    assert fake.hits == []


def test_header_names_must_be_tokens(fake: FakeSts) -> None:
    document = good_document(fake.url)
    document["headers"]["X-Cedarkey-Server-ID\r\nX"] = ["x"]
    refused(b64json(document), fake.url, "bad_header")
    assert fake.hits == []


# -- what is sent to STS ---------------------------------------------------------------------------------


def answer_xml(arn: str, user_id: str = "AIDAEXAMPLE", account: str = ACCOUNT_ID) -> bytes:
    return (
        f'<GetCallerIdentityResponse xmlns="{NS}"><GetCallerIdentityResult><Arn>{arn}</Arn>'
        f"<UserId>{user_id}</UserId><Account>{account}</Account></GetCallerIdentityResult>"
        "<ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></GetCallerIdentityResponse>"
    ).encode()


def test_request_to_sts_is_rebuilt_from_signed_parts(fake: FakeSts) -> None:
    fake.reset(Answer(body=answer_xml(f"arn:aws:iam::{ACCOUNT_ID}:user/alice")))
    creds = Credentials("ASIAIOSFODNN7EXAMPLE", "secret", "session-token")
    cloud_id = make_cloud_id(fake.url, SERVER, credentials=creds)
    assert run_verify(cloud_id, fake.url)["user_name"] == "alice"
    [hit] = fake.hits
    assert (hit.method, hit.path, hit.body) == ("POST", "/", BODY)
    host = fake.url.removeprefix("http://").rstrip("/")
    document = json.loads(base64.b64decode(cloud_id))
    sent = {name.lower(): values[0] for name, values in document["headers"].items()}
    assert hit.headers == {**sent, "host": host, "content-length": str(len(BODY))}


def test_optional_signed_headers_are_forwarded(fake: FakeSts) -> None:
    fake.reset(Answer(body=answer_xml(f"arn:aws:iam::{ACCOUNT_ID}:user/alice")))
    extra = {"Content-Length": str(len(BODY)), "X-Amz-Content-SHA256": hashlib.sha256(BODY).hexdigest()}
    assert run_verify(pack(sign(fake.url, extra=extra)), fake.url)["user_name"] == "alice"
    [hit] = fake.hits
    assert hit.headers["content-length"] == str(len(BODY))
    assert hit.headers["x-amz-content-sha256"] == extra["X-Amz-Content-SHA256"]


# -- refused by STS (moto, request authentication on) ----------------------------------------------------


def test_replay_sequential(moto: MotoHandle, aws: dict[str, Any]) -> None:
    cloud_id = make_cloud_id(moto.url, SERVER, credentials=botocore_credentials(aws["dev_role"]))

    async def run() -> None:
        guard = MemoryReplayGuard()
        first, second = StsVerifier(SERVER, guard), StsVerifier(SERVER, guard)  # e.g. two workers
        try:
            assert (await first.verify(cloud_id, moto.url))["role_name"] == "dev-role"
            with pytest.raises(LoginFailed) as caught:
                await second.verify(cloud_id, moto.url)
            assert caught.value.reason == "replay"
            with pytest.raises(LoginFailed) as caught:
                await first.verify(cloud_id, moto.url)
            assert caught.value.reason == "replay"
        finally:
            await first.aclose()
            await second.aclose()

    asyncio.run(run())


def test_replay_concurrent(moto: MotoHandle, aws: dict[str, Any]) -> None:
    cloud_id = make_cloud_id(moto.url, SERVER, credentials=botocore_credentials(aws["user"]))

    async def run() -> list[Any]:
        verifier = StsVerifier(SERVER, MemoryReplayGuard())
        try:
            return await asyncio.gather(
                *(verifier.verify(cloud_id, moto.url) for _ in range(2)), return_exceptions=True
            )
        finally:
            await verifier.aclose()

    results = asyncio.run(run())
    assert sum(isinstance(r, dict) for r in results) == 1
    assert [r.reason for r in results if isinstance(r, LoginFailed)] == ["replay"]


def test_tampered_signature(moto: MotoHandle, aws: dict[str, Any]) -> None:
    request = sign(moto.url, creds=botocore_credentials(aws["dev_role"]))
    auth = request.headers["Authorization"]
    tampered = auth[:-1] + ("0" if auth[-1] != "0" else "1")
    failure = refused(pack(request, replace={"Authorization": tampered}), moto.url, "sts_rejected")
    assert failure.detail == "SignatureDoesNotMatch"


def test_signed_value_changed_after_signing(moto: MotoHandle, aws: dict[str, Any]) -> None:
    # The nonce is well formed and signed, but not the value that was signed.
    request = sign(moto.url, creds=botocore_credentials(aws["user"]))
    failure = refused(pack(request, replace={"X-Cedarkey-Nonce": secrets.token_hex(16)}), moto.url, "sts_rejected")
    assert failure.detail == "SignatureDoesNotMatch"


def test_tampered_session_token(moto: MotoHandle, aws: dict[str, Any]) -> None:
    creds = dict(aws["dev_role"])
    creds["session_token"] = "forged"
    failure = refused(
        make_cloud_id(moto.url, SERVER, credentials=botocore_credentials(creds)), moto.url, "sts_rejected"
    )
    assert failure.detail == "InvalidClientTokenId"


def test_unknown_access_key(moto: MotoHandle) -> None:
    failure = refused(make_cloud_id(moto.url, SERVER, credentials=FAKE_CREDS), moto.url, "sts_rejected")
    assert failure.detail == "InvalidClientTokenId"


# -- hostile STS answers ---------------------------------------------------------------------------------


def test_redirect_is_not_followed(fake: FakeSts) -> None:
    fake.reset(Answer(status=302, headers={"Location": fake.url + "followed", "Content-Type": "text/xml"}))
    refused(make_cloud_id(fake.url, SERVER, credentials=FAKE_CREDS), fake.url, "sts_rejected")
    assert [hit.path for hit in fake.hits] == ["/"]


GOOD_ARN = f"arn:aws:iam::{ACCOUNT_ID}:user/alice"
HOSTILE_ANSWERS = {
    "dtd_entity": (
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY arn "arn:aws:iam::123456789012:root">]>'
        + answer_xml("&arn;", "123456789012"),
        "sts_bad_answer",
    ),
    "billion_laughs": (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
        + answer_xml("&lol2;"),
        "sts_bad_answer",
    ),
    "external_entity": (
        b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>' + answer_xml("&x;"),
        "sts_bad_answer",
    ),
    "dtd_only": (b"<!DOCTYPE r>" + answer_xml(GOOD_ARN), "sts_bad_answer"),
    "two_results": (
        answer_xml(GOOD_ARN).replace(
            b"</GetCallerIdentityResponse>",
            b"<GetCallerIdentityResult><Arn>arn:aws:iam::123456789012:root</Arn><UserId>123456789012</UserId>"
            b"<Account>123456789012</Account></GetCallerIdentityResult></GetCallerIdentityResponse>",
        ),
        "sts_bad_answer",
    ),
    "two_arns": (
        answer_xml(GOOD_ARN).replace(b"<UserId>", b"<Arn>arn:aws:iam::123456789012:root</Arn><UserId>"),
        "sts_bad_answer",
    ),
    "nested_arn_elsewhere": (
        answer_xml(GOOD_ARN).replace(b"<RequestId>r</RequestId>", b"<Arn>arn:aws:iam::123456789012:root</Arn>"),
        "sts_bad_answer",
    ),
    "foreign_namespace": (
        answer_xml(GOOD_ARN).replace(
            b"<Arn>", b'<x:Arn xmlns:x="urn:evil">arn:aws:iam::123456789012:root</x:Arn><Arn>'
        ),
        "sts_bad_answer",
    ),
    "no_namespace": (answer_xml(GOOD_ARN).replace(f' xmlns="{NS}"'.encode(), b""), "sts_bad_answer"),
    "missing_account": (answer_xml(GOOD_ARN).replace(b"<Account>123456789012</Account>", b""), "sts_bad_answer"),
    "element_in_value": (
        answer_xml(GOOD_ARN).replace(b"<Account>123456789012", b"<Account><x/>123456789012"),
        "sts_bad_answer",
    ),
    "other_root": (answer_xml(GOOD_ARN).replace(b"GetCallerIdentityResponse", b"AssumeRoleResponse"), "sts_bad_answer"),
    "not_xml": (json.dumps({"Arn": GOOD_ARN}).encode(), "sts_bad_answer"),
    "truncated": (answer_xml(GOOD_ARN)[:-10], "sts_bad_answer"),
    "account_mismatch": (answer_xml(GOOD_ARN, account="210987654321"), "account_mismatch"),
    "other_partition": (answer_xml("arn:aws-iso:iam::123456789012:user/alice"), "bad_arn"),
    "moto_fallback_arn": (answer_xml("arn:aws:sts::123456789012:user/moto"), "bad_arn"),
    "arn_with_wildcard": (answer_xml("arn:aws:iam::123456789012:user/*"), "bad_arn"),
    "arn_with_whitespace": (answer_xml(" " + GOOD_ARN), "bad_arn"),
}


@pytest.mark.parametrize("status", [200, 403])
@pytest.mark.parametrize("encoding", ["rot13", "base64", "zlib", "hex", "undefined", "no-such-codec", "utf-32"])
def test_answer_declaring_an_encoding_that_is_not_a_text_encoding(fake: FakeSts, encoding: str, status: int) -> None:
    declared = f'<?xml version="1.0" encoding="{encoding}"?>'.encode()
    fake.reset(Answer(status=status, body=declared + answer_xml(GOOD_ARN)))
    refused(
        make_cloud_id(fake.url, SERVER, credentials=FAKE_CREDS),
        fake.url,
        "sts_bad_answer" if status == 200 else "sts_rejected",
    )


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([200, 400, 403, 500]),
    st.sampled_from(sorted({*encodings.aliases.aliases.values(), "rot13", "base64", "hex", "zlib", "idna", "x"})),
    st.binary(max_size=64),
)
def test_any_answer_is_parsed_or_refused(status: int, encoding: str, tail: bytes) -> None:
    """Whatever STS answers (here: any codec name in the XML declaration, then any bytes or a real answer),
    parsing it gives attributes or LoginFailed, never another exception (which would be a 500)."""
    from cedarkey.server.sts import _parse_answer

    for body in (answer_xml(GOOD_ARN), tail, answer_xml(GOOD_ARN)[:-20] + tail):
        try:
            _parse_answer(status, "text/xml", f'<?xml version="1.0" encoding="{encoding}"?>'.encode() + body)
        except LoginFailed:
            pass


@pytest.mark.parametrize("name", sorted(HOSTILE_ANSWERS))
def test_hostile_answer(fake: FakeSts, name: str) -> None:
    body, reason = HOSTILE_ANSWERS[name]
    fake.reset(Answer(body=body))
    refused(make_cloud_id(fake.url, SERVER, credentials=FAKE_CREDS), fake.url, reason)
    assert len(fake.hits) == 1


@pytest.mark.parametrize("content_type", ["application/json", "text/html", "text/xml-evil", ""])
def test_wrong_content_type(fake: FakeSts, content_type: str) -> None:
    fake.reset(Answer(body=answer_xml(GOOD_ARN), headers={"Content-Type": content_type}))
    refused(make_cloud_id(fake.url, SERVER, credentials=FAKE_CREDS), fake.url, "sts_rejected")


def test_xml_content_types_with_parameters_are_fine(fake: FakeSts) -> None:
    fake.reset(Answer(body=answer_xml(GOOD_ARN), headers={"Content-Type": "Application/XML; charset=UTF-8"}))
    assert run_verify(make_cloud_id(fake.url, SERVER, credentials=FAKE_CREDS), fake.url)["user_name"] == "alice"


def test_error_status_with_good_body(fake: FakeSts) -> None:
    fake.reset(Answer(status=500, body=answer_xml(GOOD_ARN)))
    refused(make_cloud_id(fake.url, SERVER, credentials=FAKE_CREDS), fake.url, "sts_rejected")


def test_oversized_answer(fake: FakeSts) -> None:
    padding = b"<!-- " + b"x" * (70 * 1024) + b" -->"
    fake.reset(Answer(body=answer_xml(GOOD_ARN) + padding))
    refused(make_cloud_id(fake.url, SERVER, credentials=FAKE_CREDS), fake.url, "sts_bad_answer")


def test_compressed_answer(fake: FakeSts) -> None:
    headers = {"Content-Type": "text/xml", "Content-Encoding": "gzip"}
    fake.reset(Answer(body=gzip.compress(answer_xml(GOOD_ARN)), headers=headers))
    refused(make_cloud_id(fake.url, SERVER, credentials=FAKE_CREDS), fake.url, "sts_bad_answer")


def test_hanging_sts_is_refused_within_the_budget(fake: FakeSts) -> None:
    fake.reset(Answer(body=answer_xml(GOOD_ARN), delay=10.0))
    cloud_id = make_cloud_id(fake.url, SERVER, credentials=FAKE_CREDS)
    started = time.monotonic()
    refused(cloud_id, fake.url, "sts_unreachable", timeout=0.5)
    assert time.monotonic() - started < 2.0
    assert len(fake.hits) == 1  # sent once; never retried after the request went out


def test_sts_down() -> None:
    url = closed_port_url()
    started = time.monotonic()
    refused(make_cloud_id(url, SERVER, credentials=FAKE_CREDS), url, "sts_unreachable", timeout=2.0)
    assert time.monotonic() - started < 2.5


def test_every_sts_exchange_is_reported_with_its_outcome(fake: FakeSts) -> None:
    """What the server's cedarkey_sts_seconds histogram is fed: one report per exchange with STS, none for a
    proof refused before it."""
    reports: list[tuple[float, str]] = []

    def report(seconds: float, outcome: str) -> None:
        reports.append((seconds, outcome))

    fake.reset(Answer(body=answer_xml(GOOD_ARN)))
    run_verify(make_cloud_id(fake.url, SERVER, credentials=FAKE_CREDS), fake.url, on_sts=report)
    fake.reset(Answer(body=b"<Error/>", status=403))
    refused(make_cloud_id(fake.url, SERVER, credentials=FAKE_CREDS), fake.url, "sts_rejected", on_sts=report)
    fake.reset(Answer(body=answer_xml(GOOD_ARN) + b"<!-- " + b"x" * (70 * 1024) + b" -->"))
    refused(make_cloud_id(fake.url, SERVER, credentials=FAKE_CREDS), fake.url, "sts_bad_answer", on_sts=report)
    assert [outcome for _, outcome in reports] == ["answered"] * 3

    reports.clear()
    fake.reset(Answer(body=answer_xml(GOOD_ARN), delay=10.0))
    refused(
        make_cloud_id(fake.url, SERVER, credentials=FAKE_CREDS), fake.url, "sts_unreachable", timeout=0.5, on_sts=report
    )
    url = closed_port_url()
    refused(make_cloud_id(url, SERVER, credentials=FAKE_CREDS), url, "sts_unreachable", timeout=2.0, on_sts=report)
    assert [outcome for _, outcome in reports] == ["unreachable"] * 2
    assert 0.5 <= reports[0][0] < 2.0  # the hang is timed to the budget

    reports.clear()
    hits = len(fake.hits)
    refused(
        make_cloud_id(fake.url, "another-server", credentials=FAKE_CREDS), fake.url, "server_id_mismatch", on_sts=report
    )
    assert reports == [] and len(fake.hits) == hits


_HOST_PARTS = st.sampled_from(
    [
        "a",
        "sts",
        "amazonaws",
        "com",
        "-",
        "_",
        ".",
        "..",
        "xn--",
        "bcher-kva",
        "zz",
        "0",
        "1",
        "255",
        "256",
        "0x7f",
        "999",
        "%",
        "%41",
        ":",
        "[",
        "]",
        "::1",
        "fe80::1",
        "@",
        "*",
        "\u00e9",
        "\u0130",
        "a" * 62,
        "\x00",
        " ",
    ]
)


@settings(max_examples=3000, deadline=None)
@given(
    st.sampled_from(["http", "https"]),
    st.lists(_HOST_PARTS, min_size=1, max_size=8).map("".join),
    st.sampled_from(["", ":1", ":443", ":8080", ":65535", ":0"]),
)
def test_every_sts_url_an_auth_method_accepts_is_one_a_client_can_use(scheme: str, host: str, port: str) -> None:
    """What ``canonical_sts_url`` accepts, httpx can send a request to, IDNA can encode (to resolve it), and
    botocore signs the same Host for as the verifier expects."""
    url = f"{scheme}://{host}{port}/"
    try:
        canonical = canonical_sts_url(url)
    except ModelError:
        return
    request = httpx.Request("POST", canonical, content=BODY)
    request.url.host.encode("idna")
    signed = SigV4Auth(FAKE_CREDS, "sts", "us-east-1").headers_to_sign(sign(canonical))
    assert signing_host(canonical) == signed["host"]
    assert signing_host(canonical) == request.headers["host"].lower()


@pytest.mark.parametrize(
    "url", ["http://1.2.3.999/", "http://a..b/", "http://xn--zz/", "http://" + "a" * 64 + ".com/", "http://127.1/"]
)
def test_a_configured_sts_url_no_client_can_use_refuses_the_login(url: str) -> None:
    """An auth method stored with such a URL (the API refuses to create one now) fails every login as the
    server's configuration, never with an exception from the HTTP client."""
    refused(pack(sign(url)), url, "server_config")


@pytest.mark.parametrize("host", ["a..b", ".a", "a" * 64])
def test_the_transport_refuses_a_host_idna_cannot_encode(host: str) -> None:
    async def run() -> None:
        async with StsTransport() as transport:
            with pytest.raises(httpx.ConnectError, match="not a host name"):
                await transport.handle_async_request(httpx.Request("POST", f"http://{host}/", content=BODY))

    asyncio.run(run())


def test_timeout_is_capped() -> None:
    with pytest.raises(ValueError, match="timeout"):
        StsVerifier(SERVER, MemoryReplayGuard(), timeout=30.0)
    with pytest.raises(ValueError, match="server id"):
        StsVerifier(" bad", MemoryReplayGuard())


# -- the base64 check ---------------------------------------------------------------------------------------

# Canonical: the bits a padded last group leaves unused are zero (so "AA==" but not "AB==").
_GROUPED_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?")


@settings(max_examples=3000, deadline=None)
@given(
    st.text(alphabet="ABQRgw+/=-_ \n\u00e9", max_size=24)
    | st.binary(max_size=18).map(lambda b: base64.b64encode(b).decode())
)
def test_the_base64_check_accepts_exactly_padded_standard_base64(value: str) -> None:
    """The check (character class, at most two '=', a length that is a multiple of 4, zero unused bits)
    accepts exactly the strings the grouped grammar of canonical padded base64 does, and those decode
    strictly: one text per byte string, so a proof cannot be re-encoded into another that decodes the same."""
    from cedarkey.server.sts import _strict_b64decode

    expected = _GROUPED_BASE64.fullmatch(value) is not None
    try:
        decoded = _strict_b64decode(value, "value")
    except LoginFailed as exc:
        assert exc.reason == "bad_encoding"
        assert not expected, value
    else:
        assert expected, value
        assert len(decoded) == len(value) // 4 * 3 - value.count("=")
