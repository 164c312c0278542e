"""moto's real server as the STS stand-in, with request authentication on.

:func:`start_moto` runs moto's own server (``ThreadedMotoServer``, the same WSGI app and request handler as
``moto_server``) in a child process on a loopback port, so its global state (backends, the auth switch) is
its own and not the test process's. :func:`make_aws_identities` then creates, in account 123456789012, an
IAM user and two roles and assumes them, returning real credentials that moto checks.

How moto's request authentication works (moto 5, ``moto/core/authorization.py``): every API action calls
``_authenticate_and_authorize_action``, which verifies the SigV4 signature (against the access keys of IAM
users and of assumed roles that moto itself issued) and the caller's IAM policies, once
``ActionAuthenticatorMixin.request_count >= settings.INITIAL_NO_AUTH_ACTION_COUNT``. The setting comes from
the environment variable ``INITIAL_NO_AUTH_ACTION_COUNT`` (default: infinity, i.e. off); a running server
changes it with ``POST /moto-api/reset-auth`` (body: the new count, which also zeroes the request count).
The child starts with the variable at 0 (on from the first request); :func:`make_aws_identities` turns it
off just long enough to create a bootstrap admin user (there is no principal to sign with before that), then
back on, and creates everything else signed by that admin, so the trust policies and
``sts:AssumeRole`` permissions are really checked.

``sts:GetCallerIdentity`` is always allowed by moto once the signature is good, as in AWS.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import botocore.session
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
ADMIN_USER = "cedarkey-admin"
APP_USER = "app-user"
DEV_ROLE = "dev-role"
OTHER_ROLE = "other-role"
OTHER_ROLE_PATH = "/team/"
#: The session name of ``dev-role``: what an EC2 instance profile uses (the instance id).
INSTANCE_ID = "i-0abc1234def567890"
OTHER_SESSION = "ci-job-42"

_STARTUP_TIMEOUT = 30.0

# Run in the child: start moto's threaded server on the given loopback port, print the bound port, then
# serve until standard input closes (so the child never outlives the process that started it).
_CHILD = """
import logging
import sys
from moto.server import ThreadedMotoServer
logging.getLogger("werkzeug").setLevel(logging.ERROR)
server = ThreadedMotoServer(ip_address=sys.argv[1], port=int(sys.argv[2]), verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
server.stop()
"""


@dataclass
class MotoHandle:
    """A running moto server. ``url`` is its STS URL (``http://127.0.0.1:PORT/``)."""

    host: str
    port: int
    process: subprocess.Popen[str] = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def __enter__(self) -> MotoHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the server (idempotent)."""
        if self.process.poll() is not None:
            return
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()
            self.process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()


def start_moto(port: int = 0, host: str = "127.0.0.1") -> MotoHandle:
    """Start moto's server with request authentication on; ``port=0`` picks a free port."""
    env = dict(os.environ)
    env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        env.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, "-c", _CHILD, host, str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], _STARTUP_TIMEOUT)
    line = process.stdout.readline().strip() if ready else ""
    if not line.isdigit():
        process.kill()
        process.wait()
        raise RuntimeError(f"moto server did not start (exit code {process.returncode})")
    handle = MotoHandle(host=host, port=int(line), process=process)
    try:
        _wait_ready(handle.url)
    except BaseException:
        handle.stop()
        raise
    return handle


def _wait_ready(url: str) -> None:
    deadline = time.monotonic() + _STARTUP_TIMEOUT
    while True:
        try:
            with urllib.request.urlopen(url + "moto-api/data.json", timeout=2) as response:
                response.read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _set_auth(url: str, initial_no_auth_action_count: str) -> None:
    request = urllib.request.Request(
        url + "moto-api/reset-auth",
        data=initial_no_auth_action_count.encode(),
        headers={"Content-Type": "text/plain"},  # not form-encoded: moto reads the raw body
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        json.loads(response.read())


def _client(service: str, url: str, credentials: dict[str, Any]) -> Any:
    return botocore.session.get_session().create_client(
        service,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=credentials["access_key_id"],
        aws_secret_access_key=credentials["secret_access_key"],
        aws_session_token=credentials.get("session_token"),
    )


def _new_access_key(iam: Any, user: str) -> dict[str, str | None]:
    for key in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]:
        iam.delete_access_key(UserName=user, AccessKeyId=key["AccessKeyId"])
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return {"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"], "session_token": None}


def _ignore_exists(call: Any, **kwargs: Any) -> None:
    try:
        call(**kwargs)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "EntityAlreadyExists":
            raise


def make_aws_identities(url: str) -> dict[str, dict[str, str | None]]:
    """Create the test principals in moto at ``url`` and return their credentials.

    Keys: ``admin`` (bootstrap user, may do anything), ``user`` (IAM user ``app-user``, no policies),
    ``dev_role`` (``dev-role`` assumed with session name ``i-0abc1234def567890``) and ``other_role``
    (``/team/other-role`` assumed with session name ``ci-job-42``). Each value is
    ``{access_key_id, secret_access_key, session_token}`` (``session_token`` is None for users).
    Calling it again on the same server re-issues fresh keys.
    """
    dummy = {"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": "bootstrap"}
    _set_auth(url, "inf")
    try:
        iam = _client("iam", url, dummy)
        _ignore_exists(iam.create_user, UserName=ADMIN_USER)
        iam.put_user_policy(
            UserName=ADMIN_USER,
            PolicyName="admin",
            PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
            ),
        )
        admin = _new_access_key(iam, ADMIN_USER)
    finally:
        _set_auth(url, "0")

    # From here on every call is signed and checked by moto.
    iam = _client("iam", url, admin)
    admin_arn = f"arn:aws:iam::{ACCOUNT_ID}:user/{ADMIN_USER}"
    trust = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"AWS": admin_arn}, "Action": "sts:AssumeRole"}],
        }
    )
    _ignore_exists(iam.create_role, RoleName=DEV_ROLE, AssumeRolePolicyDocument=trust)
    _ignore_exists(iam.create_role, RoleName=OTHER_ROLE, Path=OTHER_ROLE_PATH, AssumeRolePolicyDocument=trust)
    _ignore_exists(iam.create_user, UserName=APP_USER)
    user = _new_access_key(iam, APP_USER)

    sts = _client("sts", url, admin)
    identities: dict[str, dict[str, str | None]] = {"admin": admin, "user": user}
    for key, role, path, session in (
        ("dev_role", DEV_ROLE, "/", INSTANCE_ID),
        ("other_role", OTHER_ROLE, OTHER_ROLE_PATH, OTHER_SESSION),
    ):
        answer = sts.assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT_ID}:role{path}{role}", RoleSessionName=session)[
            "Credentials"
        ]
        identities[key] = {
            "access_key_id": answer["AccessKeyId"],
            "secret_access_key": answer["SecretAccessKey"],
            "session_token": answer["SessionToken"],
        }
    return identities


def botocore_credentials(credentials: dict[str, str | None]) -> Credentials:
    """A credentials dict from :func:`make_aws_identities` as botocore ``Credentials``."""
    return Credentials(credentials["access_key_id"], credentials["secret_access_key"], credentials.get("session_token"))
