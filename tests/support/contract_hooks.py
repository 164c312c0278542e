"""schemathesis hooks for the contract run (``tests/test_contract.py``, ``bench/contract.py``): the caller
is the one the run was started for, never a token the generator made up, and no call ends that caller.

- A body's ``token`` is the API's truth (``/openapi.json`` lists it), but a generated string is never a live
  token: every call would be a 401 and no handler would run. A generated string is taken out (the caller
  rides in ``Authorization``); a value of the wrong type stays, to be refused.
- ``revoke-token`` and the console's sign-out end a token: they are given a fresh one of the same caller.
- The console's ``/ui/*`` calls carry the caller's session cookie and CSRF header.

The run's caller comes from the environment: ``CEDARKEY_CONTRACT_URL`` (the server) and
``CEDARKEY_CONTRACT_LOGIN`` (auth's JSON body for that caller). Its tokens are fresh every 20 seconds, and
again after a 401: a generated ``jwt-ttl`` may have shortened the life of its auth method's tokens.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import schemathesis
from cedarkey.server.commands.command import SUBJECT
from cedarkey.server.console import COOKIE, CSRF_HEADER, csrf_value


def _fresh_token() -> str:
    # From an address of its own (the server believes loopback's X-Forwarded-For): the generated /auth
    # calls, refused by the hundred, get the refused-login limit's 429s, and this login must not.
    answer = httpx.post(
        os.environ["CEDARKEY_CONTRACT_URL"] + "/auth",
        content=os.environ["CEDARKEY_CONTRACT_LOGIN"],
        headers={"content-type": "application/json", "x-forwarded-for": CALLER_ADDRESS},
    )
    answer.raise_for_status()
    return answer.json()["token"]


_REFRESH = 20
CALLER_ADDRESS = "192.0.2.10"


@schemathesis.auth(refresh_interval=_REFRESH).skip_for(
    path_regex=r"^/(ui(/.*)?|auth|lookup-sts-url|health|openapi\.json)?$"
)
class Bearer:
    """The run's caller, as ``Authorization: Bearer`` (what ``-H`` would give, but renewed)."""

    def get(self, case: Any, context: Any) -> str:
        return _fresh_token()

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@schemathesis.auth(refresh_interval=_REFRESH).apply_to(path_regex=r"^/ui/(api/.*|session/end)$")
class ConsoleSession:
    """The run's caller as the console's session: its cookie and CSRF header (renewed after a sign-out)."""

    def get(self, case: Any, context: Any) -> str:
        return _fresh_token()

    def set(self, case: Any, data: str, context: Any) -> None:
        case.cookies = {**(case.cookies or {}), COOKIE: data}
        case.headers = {**(case.headers or {}), CSRF_HEADER: csrf_value(data)}


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    if isinstance(case.body, dict) and isinstance(case.body.get("token"), str):
        del case.body["token"]
    if case.path.endswith("/revoke-token"):
        if case.body is None:
            case.body = {}
        subject = case.body.get("subject-token") if isinstance(case.body, dict) else 0
        # null is left out (the caller's own token); a too-long or ill-typed one stays, to be refused.
        if subject is None or (isinstance(subject, str) and len(subject) <= SUBJECT.max_length):
            case.body["subject-token"] = _fresh_token()
    return case
