"""Verification of the AWS IAM login proof and the ``sts:GetCallerIdentity`` call behind it.

A proof (see :mod:`cedarkey.client.proof`) is a signed GetCallerIdentity request. This module treats it as
hostile input (Vault's CVE-2020-16250 came from forwarding what the client chose and from parsing STS's
answer leniently):

1. Everything is checked locally before any network traffic: sizes, strict base64 and JSON, the method, the
   URL (it must be the auth method's STS URL), the exact body, an allow-list of headers each sent once and
   each covered by the signature, a strictly parsed ``Authorization`` for service ``sts``, this server's id,
   the date (15 minutes either way) and the signed ``Host``.
2. The signature is claimed in a :class:`ReplayGuard`: a proof is good for one login.
3. The request to STS is rebuilt from the configured URL, the fixed body and the client's signed headers
   only; redirects are never followed; the whole exchange has a hard time budget.
4. STS's answer must be a 200 XML document with exactly one ``GetCallerIdentityResult`` holding exactly one
   ``Arn``, ``UserId`` and ``Account``; it is parsed with ``defusedxml`` (no DTD, no entities) and a size
   cap, and the ARN by :mod:`cedarkey.server.arn`.

Every refusal is a :class:`LoginFailed` with a short machine ``reason`` for the audit log and metrics.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import json
import re
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import defusedxml
import defusedxml.ElementTree
import httpx
from cedarkey.engine.auth_method import canonical_sts_url
from cedarkey.engine.errors import ModelError

from .arn import ArnError, parse_caller
from .expiry import ExpiryQueue
from .sts_client import DEFAULT_PORTS, StsTransport, effective_port

# The proof's fixed parts; cedarkey.client.proof makes them (the server does not import the client).
BODY = b"Action=GetCallerIdentity&Version=2011-06-15"
SERVER_ID_HEADER = "X-Cedarkey-Server-ID"
NONCE_HEADER = "X-Cedarkey-Nonce"
MAX_SERVER_ID = 256

#: The largest cloud id accepted, in base64 characters.
MAX_CLOUD_ID = 16 * 1024
MAX_URL = 512
MAX_HEADERS = 12
MAX_HEADER_NAME = 64
MAX_HEADER_VALUE = 8 * 1024
#: Claims the in-memory replay guard holds at most.
MAX_CLAIMS = 100_000
#: Maximum distance between the proof's X-Amz-Date and the server clock, either way.
MAX_SKEW = 15 * 60
#: Replay entries outlive the acceptance window by this margin, for clock differences between the
#: verifier and a shared guard.
REPLAY_MARGIN = 60
MAX_ANSWER = 64 * 1024
MAX_BUDGET = 10.0
STS_ATTEMPTS = 2
STS_NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"

_SERVER_ID = SERVER_ID_HEADER.lower()
_NONCE = NONCE_HEADER.lower()
#: Headers a proof may carry; every one but ``authorization`` must be signed.
ALLOWED_HEADERS = frozenset(
    {
        "host",
        "content-type",
        "content-length",
        "x-amz-date",
        "x-amz-security-token",
        "x-amz-content-sha256",
        _SERVER_ID,
        _NONCE,
        "authorization",
    }
)
REQUIRED_HEADERS = ("authorization", "content-type", "x-amz-date", _SERVER_ID, _NONCE)
CONTENT_TYPES = ("application/x-www-form-urlencoded; charset=utf-8", "application/x-www-form-urlencoded")
XML_TYPES = ("text/xml", "application/xml")
_PROOF_KEYS = frozenset({"method", "url", "body", "headers"})

#: Standard base64 with its padding, when the length is also a multiple of 4: the same language as
#: ``(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?`` (a property test checks), at a third
#: of the cost on a 1.5 KB proof.
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,64}")
#: A header value in SigV4's canonical form (printable ASCII, no outer spaces, no run of spaces): SigV4 signs a
#: value trimmed and with its runs of spaces collapsed, so a value outside this form is not the value signed
#: (``team  a`` would pass for a proof made for server ``team a``).
_HEADER_VALUE = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*")
_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[A-Z0-9]{16,128})/(?P<date>\d{8})/(?P<region>[a-z0-9-]{1,32})"
    r"/(?P<service>[a-z0-9-]{1,32})/aws4_request, SignedHeaders=(?P<signed>[a-z0-9-]{1,64}(?:;[a-z0-9-]{1,64}){0,31}),"
    r" Signature=(?P<signature>[0-9a-f]{64})"
)
_AMZ_DATE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})T([0-9]{2})([0-9]{2})([0-9]{2})Z")
_NONCE_VALUE = re.compile(r"[0-9a-fA-F]{32}")
_ERROR_CODE = re.compile(r"[A-Za-z0-9.]{1,64}")
_BODY_SHA256 = hashlib.sha256(BODY).hexdigest()


class LoginFailed(Exception):
    """A refused login. ``reason``: a short machine string (audit log, metrics); ``str()``: an explanation.

    ``detail`` holds STS's error code when STS refused the proof (e.g. ``SignatureDoesNotMatch``).
    """

    def __init__(self, reason: str, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.detail = detail


class ReplayGuard(Protocol):
    async def claim(self, key: str, expires_at: float) -> bool:
        """True the first time ``key`` is claimed (atomically), False while an earlier claim is live."""
        ...


class MemoryReplayGuard:
    """An in-process :class:`ReplayGuard`: a dict of claims pruned by expiry (an :class:`ExpiryQueue` keeps
    pruning cheap); a claim is gone once its expiry time is reached.

    At most ``max_claims`` are held: beyond that the claims that expire soonest (the oldest) are forgotten,
    so a flood of well-formed proofs (a claim is taken before STS checks the signature) cannot grow memory.
    A forgotten proof replayed is then caught by a shared guard only: the server backs this one with the
    store's unique row (``ProofGuard`` in ``service``).

    ``claim`` never awaits, so it is atomic under asyncio.
    """

    def __init__(self, clock: Callable[[], float] = time.time, *, max_claims: int = MAX_CLAIMS) -> None:
        self._clock = clock
        self._max = max_claims
        self._claims: dict[str, float] = {}
        self._expiries: ExpiryQueue[str] = ExpiryQueue()

    def __len__(self) -> int:
        return len(self._claims)

    async def claim(self, key: str, expires_at: float) -> bool:
        self._forget(self._clock())
        if key in self._claims:
            return False
        while len(self._claims) >= self._max:
            self._forget(float("inf"), one=True)
        self._claims[key] = expires_at
        self._expiries.push(expires_at, key)
        return True

    def _forget(self, now: float, *, one: bool = False) -> None:
        for expired, old in self._expiries.expired(now):
            if self._claims.get(old) == expired:
                del self._claims[old]
                if one:
                    return


@dataclass(frozen=True)
class CheckedProof:
    headers: dict[str, str]  # lower-case name -> value: what goes to STS (signed headers + authorization)
    signature: str
    date: float


class StsVerifier:
    """Checks login proofs made for the server ``server_id`` and asks STS who signed them."""

    def __init__(
        self,
        server_id: str,
        replay: ReplayGuard,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = MAX_BUDGET,
        clock: Callable[[], float] = time.time,
        on_sts: Callable[[float, str], None] | None = None,
    ) -> None:
        """``on_sts(seconds, outcome)`` is told of every STS exchange: how long it took (retries and reading
        the answer included), and ``"answered"`` (an HTTP answer, read whole or refused as too large) or
        ``"unreachable"`` (no connection, or no whole answer within the budget)."""
        if not isinstance(server_id, str) or len(server_id) > MAX_SERVER_ID or not _HEADER_VALUE.fullmatch(server_id):
            raise ValueError(
                "the server id must be 1 to 256 printable ASCII characters, without outer spaces or runs of spaces"
            )
        self._server_id = server_id
        if not 0 < timeout <= MAX_BUDGET:
            raise ValueError(f"timeout must be more than 0 and at most {MAX_BUDGET} seconds")
        self._replay = replay
        self._budget = float(timeout)
        self._clock = clock
        self._timeouts = httpx.Timeout(self._budget).as_dict()
        self._owns_transport = transport is None
        self._transport = transport or StsTransport()
        self._on_sts = on_sts

    async def aclose(self) -> None:
        if self._owns_transport:
            await self._transport.aclose()

    async def verify(self, cloud_id: str, sts_url: str) -> dict[str, str]:
        """Identity attributes from a verified proof: account, arn, iam_arn, principal_type, role_name,
        role_id, session_name, resource_id, user_name, user_id (only those that apply). Raises LoginFailed."""
        try:
            url, target = _sts_target(sts_url)
        except (ModelError, httpx.InvalidURL) as exc:  # canonical_sts_url refuses what httpx refuses (tested)
            raise LoginFailed("server_config", f"the auth method's STS URL is not usable: {exc}") from None
        proof = self.check(cloud_id, url)
        key = hashlib.sha256(proof.signature.encode()).hexdigest()
        if not await self._replay.claim(key, proof.date + MAX_SKEW + REPLAY_MARGIN):
            raise LoginFailed("replay", "this proof was already used; make a new one for each login")
        status, content_type, body = await self._call_sts(target, proof)
        return _parse_answer(status, content_type, body)

    # -- local checks ---------------------------------------------------------------------------------

    def check(self, cloud_id: str, sts_url: str) -> CheckedProof:
        """All the checks that need no network, against the canonical ``sts_url``. Raises LoginFailed."""
        document = _decode(cloud_id)
        method, url, body, raw_headers = (document[k] for k in ("method", "url", "body", "headers"))
        if method != "POST":
            raise LoginFailed("bad_method", "the proof's method must be POST")
        _check_url(url, sts_url)
        if _strict_b64decode(body, "body") != BODY:
            raise LoginFailed("bad_body", f"the proof's body must be exactly {BODY.decode()}")
        headers = _check_headers(raw_headers)
        auth = _AUTHORIZATION.fullmatch(headers["authorization"])
        if auth is None:
            raise LoginFailed("bad_authorization", "the Authorization header is not a SigV4 header")
        if auth["service"] != "sts":
            raise LoginFailed("wrong_service", "the proof is not signed for the sts service")
        signed = auth["signed"].split(";")
        if signed != sorted(set(signed)):
            raise LoginFailed("bad_authorization", "SignedHeaders must be sorted and without duplicates")
        for name in signed:
            if name not in ALLOWED_HEADERS or name == "authorization":
                raise LoginFailed("unknown_header", f"the signed header {name!r} is not allowed")
            if name != "host" and name not in headers:
                raise LoginFailed("bad_authorization", f"the signed header {name!r} was not sent")
        if "host" not in signed:
            raise LoginFailed("unsigned_header", "the Host header must be signed")
        for name in headers:
            if name != "authorization" and name not in signed:
                raise LoginFailed("unsigned_header", f"the header {name!r} is not signed")

        if headers[_SERVER_ID] != self._server_id:
            raise LoginFailed("server_id_mismatch", "the proof was made for another cedarkey server")
        date = _parse_amz_date(headers["x-amz-date"])
        now = self._clock()
        if now - date > MAX_SKEW:
            raise LoginFailed("stale_date", "the proof is more than 15 minutes old")
        if date - now > MAX_SKEW:
            raise LoginFailed("future_date", "the proof is dated more than 15 minutes ahead")
        if auth["date"] != headers["x-amz-date"][:8]:
            raise LoginFailed("scope_mismatch", "the credential scope's date is not the X-Amz-Date date")
        expected_host = signing_host(sts_url)
        sent_host = headers.get("host")
        if (signing_host(url) if sent_host is None else sent_host) != expected_host:
            raise LoginFailed("host_mismatch", "the signed Host is not the STS URL's host")
        return CheckedProof(
            headers={name: headers[name] for name in [*signed, "authorization"] if name != "host"}
            | {"host": expected_host},
            signature=auth["signature"],
            date=date,
        )

    # -- STS ------------------------------------------------------------------------------------------

    async def _call_sts(self, url: httpx.URL, proof: CheckedProof) -> tuple[int, str, bytes]:
        # Nothing but the signed headers (and Content-Length, the framing httpx owns) goes to STS. The request
        # goes straight to httpx's transport: the client layer above it would add default headers (to strip
        # again), a cookie jar and redirect handling, none of which a proof may have (and its cost shows in
        # bench/login.py).
        request = httpx.Request(
            "POST", url, headers=proof.headers, content=BODY, extensions={"timeout": self._timeouts}
        )
        start = time.perf_counter()
        try:
            async with asyncio.timeout(self._budget):
                response = await self._send(request)
                try:
                    answer = response.status_code, response.headers.get("content-type", ""), await _read(response)
                finally:
                    await response.aclose()
        except TimeoutError:
            self._observe(start, "unreachable")
            raise LoginFailed("sts_unreachable", f"STS did not answer within {self._budget:g} s") from None
        except httpx.HTTPError as exc:
            self._observe(start, "unreachable")
            raise LoginFailed("sts_unreachable", f"STS could not be reached: {type(exc).__name__}") from None
        except LoginFailed:  # an answer too large or content-encoded: STS (or what poses as it) answered
            self._observe(start, "answered")
            raise
        self._observe(start, "answered")
        return answer

    def _observe(self, start: float, outcome: str) -> None:
        if self._on_sts is not None:
            self._on_sts(time.perf_counter() - start, outcome)

    async def _send(self, request: httpx.Request) -> httpx.Response:
        # Retry only when no connection was made (so the request was never delivered).
        for attempt in range(1, STS_ATTEMPTS + 1):
            try:
                return await self._transport.handle_async_request(request)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                if attempt == STS_ATTEMPTS:
                    raise
                await asyncio.sleep(0.05 * attempt)
        raise AssertionError("unreachable")


@functools.lru_cache(maxsize=256)
def _sts_target(sts_url: str) -> tuple[str, httpx.URL]:
    """An auth method's STS URL in canonical form (what proofs are checked against) and parsed for the request
    (parsing is half the cost of building it: 11 of 26 µs), once per URL: it is the same on every login.
    Raises ``ModelError`` or ``httpx.InvalidURL`` each time for a URL that cannot be used (exceptions are not
    cached); ``httpx.URL`` is immutable."""
    url = canonical_sts_url(sts_url)
    return url, httpx.URL(url)


@functools.lru_cache(maxsize=256)
def signing_host(url: str) -> str:
    """The Host value botocore signs for ``url``: lower case, ``[v6]`` brackets, no default port (cached:
    it is asked for the auth method's URL on every login)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is not None and port != DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{port}"
    return host


# -- decoding and header checks ------------------------------------------------------------------------


def _strict_b64decode(value: str, what: str) -> bytes:
    if len(value) % 4 or not _BASE64.fullmatch(value):
        raise LoginFailed("bad_encoding", f"the {what} is not standard base64")
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise LoginFailed("bad_encoding", f"the {what} is not standard base64") from None
    if value.endswith("=") and base64.b64encode(decoded) != value.encode():
        # the bits a padded last group leaves unused must be zero: one text per byte string
        raise LoginFailed("bad_encoding", f"the {what} is not canonical base64")
    return decoded


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise LoginFailed("bad_json", f"duplicate key {key[:64]!r} in the proof")
        out[key] = value
    return out


def _no_constants(name: str) -> None:
    raise LoginFailed("bad_json", f"{name} is not JSON")


def _decode(cloud_id: object) -> dict[str, Any]:
    if not isinstance(cloud_id, str):
        raise LoginFailed("bad_encoding", "the cloud id must be a string")
    if not cloud_id:
        raise LoginFailed("bad_encoding", "the cloud id is empty")
    if len(cloud_id) > MAX_CLOUD_ID:
        raise LoginFailed("too_large", f"the cloud id is longer than {MAX_CLOUD_ID} characters")
    raw = _strict_b64decode(cloud_id, "cloud id")
    try:
        document = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise LoginFailed("bad_json", "the cloud id is not a JSON document") from None
    if not isinstance(document, dict) or set(document) != _PROOF_KEYS:
        raise LoginFailed("bad_shape", "the proof must be an object with method, url, body and headers")
    if not all(isinstance(document[k], str) for k in ("method", "url", "body")):
        raise LoginFailed("bad_shape", "the proof's method, url and body must be strings")
    if not isinstance(document["headers"], dict):
        raise LoginFailed("bad_shape", "the proof's headers must be an object")
    return document


def _check_url(url: str, sts_url: str) -> None:
    if url == sts_url:  # the usual case: the client signed for the configured (canonical) URL as it is
        return
    if len(url) > MAX_URL:
        raise LoginFailed("too_large", "the proof's URL is too long")
    try:
        canonical = canonical_sts_url(url)
    except ModelError as exc:
        raise LoginFailed("url_invalid", f"the proof's URL is not allowed ({exc.message})") from None
    if _origin(canonical) != _origin(sts_url):
        raise LoginFailed("url_mismatch", "the proof is not for this auth method's STS URL")


def _origin(url: str) -> tuple[str, str, int, str]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), effective_port(parts.scheme, parts.port), parts.path


def _check_headers(raw: dict[str, Any]) -> dict[str, str]:
    if len(raw) > MAX_HEADERS:
        raise LoginFailed("too_large", f"the proof has more than {MAX_HEADERS} headers")
    headers: dict[str, str] = {}
    for name, values in raw.items():
        if len(name) > MAX_HEADER_NAME:
            raise LoginFailed("too_large", "a header name is too long")
        if not _HEADER_NAME.fullmatch(name):
            raise LoginFailed("bad_header", "a header name is not a token")
        lower = name.lower()
        if lower in headers:
            raise LoginFailed("duplicate_header", f"the header {lower!r} is sent twice")
        if lower not in ALLOWED_HEADERS:
            raise LoginFailed("unknown_header", f"the header {lower!r} is not allowed in a proof")
        if not isinstance(values, list) or len(values) != 1 or not isinstance(values[0], str):
            raise LoginFailed("bad_header", f"the header {lower!r} must have exactly one string value")
        value = values[0]
        if len(value) > MAX_HEADER_VALUE:
            raise LoginFailed("too_large", f"the header {lower!r} is too long")
        if not _HEADER_VALUE.fullmatch(value):
            raise LoginFailed(
                "bad_header", f"the header {lower!r} is not printable ASCII without outer spaces or runs of spaces"
            )
        headers[lower] = value
    for name in REQUIRED_HEADERS:
        if name not in headers:
            raise LoginFailed("missing_header", f"the proof has no {name!r} header")
    if headers["content-type"] not in CONTENT_TYPES:
        raise LoginFailed("bad_header", "the Content-Type must be application/x-www-form-urlencoded")
    if headers.get("content-length", str(len(BODY))) != str(len(BODY)):
        raise LoginFailed("bad_header", "the Content-Length is not the body's length")
    if headers.get("x-amz-content-sha256", _BODY_SHA256) != _BODY_SHA256:
        raise LoginFailed("bad_header", "X-Amz-Content-SHA256 is not the body's hash")
    if not _NONCE_VALUE.fullmatch(headers[_NONCE]):
        raise LoginFailed("bad_header", f"{NONCE_HEADER} must be 32 hexadecimal characters")
    return headers


def _parse_amz_date(value: str) -> float:
    match = _AMZ_DATE.fullmatch(value)
    if match is None:
        raise LoginFailed("bad_date", "X-Amz-Date is not YYYYMMDDTHHMMSSZ")
    try:  # datetime checks every field's range (time.strptime costs ten times as much)
        return datetime(*map(int, match.groups()), tzinfo=UTC).timestamp()
    except ValueError:
        raise LoginFailed("bad_date", "X-Amz-Date is not a valid date") from None


# -- STS's answer ------------------------------------------------------------------------------------


async def _read(response: httpx.Response) -> bytes:
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise LoginFailed("sts_bad_answer", "STS's answer is content-encoded")
    declared = response.headers.get("content-length")
    if declared is not None and (not declared.isdecimal() or int(declared) > MAX_ANSWER):
        raise LoginFailed("sts_bad_answer", "STS's answer is too large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        size += len(chunk)
        if size > MAX_ANSWER:
            raise LoginFailed("sts_bad_answer", "STS's answer is too large")
        chunks.append(chunk)
    return b"".join(chunks)


def _xml(body: bytes) -> ET.Element:
    try:
        return defusedxml.ElementTree.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (defusedxml.DefusedXmlException, ET.ParseError, ValueError, LookupError):
        # LookupError: an XML declaration naming an encoding Python has no codec for, or not a text codec
        raise LoginFailed("sts_bad_answer", "STS's answer is not plain XML (no DTD, no entities)") from None


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _error_code(body: bytes) -> str | None:
    try:
        root = _xml(body)
    except LoginFailed:
        return None
    for error in root.iter():
        if _local(error.tag) == "Error":
            for child in error:
                if _local(child.tag) == "Code" and child.text and _ERROR_CODE.fullmatch(child.text):
                    return child.text
    return None


def _parse_answer(status: int, content_type: str, body: bytes) -> dict[str, str]:
    media_type = content_type.partition(";")[0].strip().lower()
    if status != 200 or media_type not in XML_TYPES:
        code = _error_code(body) if status != 200 else None
        what = f"HTTP {status}" if status != 200 else f"content type {media_type or 'none'!r}"
        raise LoginFailed("sts_rejected", f"STS refused the proof ({what}{': ' + code if code else ''})", code)
    root = _xml(body)
    ns = f"{{{STS_NAMESPACE}}}"
    if root.tag != ns + "GetCallerIdentityResponse":
        raise LoginFailed("sts_bad_answer", "STS's answer is not a GetCallerIdentityResponse")
    named = Counter(_local(e.tag) for e in root.iter())  # local names anywhere in the document
    result = _only_child(root, ns + "GetCallerIdentityResult", named)
    values = {name: _only_child(result, ns + name, named) for name in ("Arn", "UserId", "Account")}
    texts: dict[str, str] = {}
    for name, element in values.items():
        if len(element) or not element.text:
            raise LoginFailed("sts_bad_answer", f"STS's {name} is not a plain value")
        texts[name] = element.text
    try:
        return parse_caller(texts["Arn"], texts["UserId"], texts["Account"])
    except ArnError as exc:
        raise LoginFailed(exc.reason, f"STS's answer: {exc}") from None


def _only_child(parent: ET.Element, tag: str, named: Counter[str]) -> ET.Element:
    """The one element named ``tag`` (local name, anywhere in the document: ``named`` counts them), which
    must be a child of parent."""
    local = _local(tag)
    children = [e for e in parent if e.tag == tag]
    if named[local] != 1 or len(children) != 1:
        raise LoginFailed("sts_bad_answer", f"STS's answer must have exactly one {local}")
    return children[0]
