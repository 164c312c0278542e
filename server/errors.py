"""API errors: an HTTP status, a machine-readable code and a message that is safe to show the client."""

from __future__ import annotations

import math

from cedarkey.engine import ModelError
from cedarkey.engine.errors import clip

_STATUS = {"BadRequest": 400, "NotFound": 404, "AlreadyExists": 409, "VersionConflict": 409, "UntrustedStsUrl": 403}


#: The longest message an error carries (every value a message quotes is cut shorter still).
MAX_MESSAGE = 1000


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        message = clip(message, MAX_MESSAGE)
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        #: Headers the answer carries besides the usual ones (``Allow`` of a 405, ``Retry-After`` of a 429).
        self.headers = headers

    def body(self) -> dict[str, str]:
        return {"error": self.code, "message": self.message}


def too_many(code: str, message: str, retry_after: float) -> ApiError:
    """429 with ``Retry-After`` in whole seconds, at least one (a client that retries at 0 retries at once)."""
    return ApiError(429, code, message, {"Retry-After": str(max(1, math.ceil(retry_after)))})


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def from_model_error(exc: ModelError) -> ApiError:
    return ApiError(_STATUS.get(exc.code, 400), exc.code, str(exc))


class AuthenticationFailed(ApiError):
    """401, the same to every client whatever failed (the real reason goes to the audit log). A fresh instance
    per refusal: a shared one would collect every refusal's traceback, and the secrets in its frames."""

    def __init__(self) -> None:
        super().__init__(401, "AuthenticationFailed", "access authentication failed")


def permission_denied(capability: str, path: str, rule_type: str) -> ApiError:
    return ApiError(403, "PermissionDenied", f"no {capability} permission on {path} ({rule_type})")


class Unavailable(ApiError):
    def __init__(self, message: str = "the storage backend is unavailable; try again") -> None:
        super().__init__(503, "Unavailable", message)


def protected(message: str) -> ApiError:
    """A change no caller may make: the break-glass ``/admin`` auth method and role stay as they are."""
    return ApiError(403, "PermissionDenied", message)
