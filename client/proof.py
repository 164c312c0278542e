"""The AWS IAM login proof ("cloud id"): a signed ``sts:GetCallerIdentity`` request.

The workload signs the request with its own AWS credentials and gives it to cedarkey instead of a secret;
the server checks it, sends it on to STS (which checks the signature) and learns from STS's answer who
signed it. The request carries two extra signed headers: ``X-Cedarkey-Server-ID`` (so that a proof made for
one cedarkey server is useless at another) and ``X-Cedarkey-Nonce`` (so that two proofs are never equal).

Wire format: standard base64 of the JSON object
``{"method": "POST", "url": URL, "body": BASE64(BODY), "headers": {NAME: [VALUE]}}``. Only the headers the
signature covers (and ``Authorization``) are in it: botocore computes ``Host`` from the URL and signs it
without adding it to the headers, and the server does the same.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from urllib.parse import urlsplit

import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.session import Session
from cedarkey.engine.auth_method import canonical_sts_url
from cedarkey.engine.errors import ModelError

BODY = b"Action=GetCallerIdentity&Version=2011-06-15"
CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"
SERVER_ID_HEADER = "X-Cedarkey-Server-ID"
NONCE_HEADER = "X-Cedarkey-Nonce"
SERVICE = "sts"
DEFAULT_REGION = "us-east-1"
MAX_SERVER_ID_LENGTH = 256

_REGIONAL_HOST = re.compile(r"sts(?:-fips)?\.([a-z]{2}(?:-[a-z]+)+-\d{1,2})\.amazonaws\.com(?:\.cn)?")
_REGION = re.compile(r"[a-z0-9-]{1,32}")
_SERVER_ID = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")


class ProofError(Exception):
    """The proof cannot be made (no credentials, a bad STS URL or server id)."""


def sts_region(sts_url: str) -> str:
    """The signing region for an STS URL.

    ``sts.REGION.amazonaws.com`` (and ``.amazonaws.com.cn``, and the ``sts-fips.`` hosts) sign for REGION;
    the global ``sts.amazonaws.com`` and any other host (a VPC endpoint, a local stand-in) for us-east-1.
    """
    host = (urlsplit(sts_url).hostname or "").lower()
    match = _REGIONAL_HOST.fullmatch(host)
    return match.group(1) if match else DEFAULT_REGION


def check_server_id(server_id: object) -> str:
    """A server id as it goes in a header: 1 to 256 printable ASCII characters, no outer spaces."""
    if not isinstance(server_id, str) or len(server_id) > MAX_SERVER_ID_LENGTH or not _SERVER_ID.fullmatch(server_id):
        raise ProofError("the server id must be 1 to 256 printable ASCII characters without outer spaces")
    return server_id


def make_cloud_id(
    sts_url: str,
    server_id: str,
    credentials: Credentials | None = None,
    session: Session | None = None,
    *,
    region: str | None = None,
) -> str:
    """A login proof for the cedarkey server ``server_id`` whose auth method uses ``sts_url``.

    Without ``credentials``, the credentials come from ``session`` or else botocore's default chain
    (environment, shared files, container or instance metadata). ``region`` overrides the signing region
    that :func:`sts_region` derives from the URL (needed for e.g. a VPC endpoint of a regional STS).
    """
    try:
        url = canonical_sts_url(sts_url)
    except ModelError as exc:
        raise ProofError(f"bad STS URL: {exc}") from None
    check_server_id(server_id)
    if region is not None and not _REGION.fullmatch(region):
        raise ProofError(f"bad region {region!r}")
    if credentials is None:
        credentials = (session or botocore.session.get_session()).get_credentials()
    if credentials is None:
        raise ProofError(
            "no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, "
            "or run where an instance or container role provides them"
        )
    # A consistent snapshot: refreshable credentials may rotate between reads of key, secret and token.
    frozen = credentials.get_frozen_credentials()
    signer = SigV4Auth(
        Credentials(frozen.access_key, frozen.secret_key, frozen.token), SERVICE, region or sts_region(url)
    )
    request = AWSRequest(
        method="POST",
        url=url,
        data=BODY,
        headers={
            "Content-Type": CONTENT_TYPE,
            SERVER_ID_HEADER: server_id,
            NONCE_HEADER: secrets.token_hex(16),
        },
    )
    signer.add_auth(request)
    # Send exactly what the signature covers (botocore may add unsigned headers such as User-Agent).
    authorization = request.headers["Authorization"]
    signed = set(authorization.partition("SignedHeaders=")[2].partition(",")[0].split(";"))
    headers = {
        name: [value]
        for name, value in request.headers.items()
        if name.lower() in signed or name.lower() == "authorization"
    }
    return encode_cloud_id("POST", url, BODY, headers)


def encode_cloud_id(method: str, url: str, body: bytes, headers: dict[str, list[str]]) -> str:
    """The wire form of a request: base64 of ``{"method", "url", "body" (base64), "headers"}``."""
    document = {
        "method": method,
        "url": url,
        "body": base64.b64encode(body).decode("ascii"),
        "headers": headers,
    }
    return base64.b64encode(json.dumps(document, separators=(",", ":")).encode()).decode("ascii")
