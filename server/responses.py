"""The responses every route answers with: JSON, and the headers that keep a secret out of caches."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from .errors import ApiError

#: Every command's answer may carry a secret or a token: no cache keeps it, no browser guesses its type.
PRIVATE = {"cache-control": "no-store", "x-content-type-options": "nosniff"}
_CHALLENGE = {**PRIVATE, "www-authenticate": "Bearer"}


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class PrivateJSONResponse(JSONResponse):
    """A command's answer: JSON with :data:`PRIVATE`'s headers, built without Starlette's generic pass."""

    _FIXED = ((b"content-type", b"application/json"), *((k.encode(), v.encode()) for k, v in PRIVATE.items()))

    def init_headers(self, headers: Any = None) -> None:
        self.raw_headers = [(b"content-length", str(len(self.body)).encode()), *self._FIXED]


def error_response(exc: ApiError) -> JSONResponse:
    headers = _CHALLENGE if exc.status == 401 else PRIVATE
    if exc.headers:
        headers = {**headers, **exc.headers}
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)
