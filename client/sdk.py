"""A small Python SDK: log in with a profile (or explicit credentials) and call commands.

    from cedarkey.client import Client
    client = Client.from_profile("default")
    value = client.get_secret_value("/dev/db-password")["value"]      # typed, one per command
    value = client.call("get-secret-value", name="/dev/db-password")["value"]  # or by name

Keyword arguments use underscores (``role_name``) or pass a dict with the flag names. An ``aws_iam`` login
signs its proof for the profile's pinned ``server_id`` only, and refuses a server whose /health announces
another id (:class:`ServerIdError`).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson

from .commands import Commands
from .profile import CachedToken, Profile, cache_token, cached_token, drop_cached_token, load_profile

# A host name the IDNA codec refuses (``a..b``) fails in getaddrinfo with UnicodeError, which httpx lets through.
_UNREACHABLE = (httpx.HTTPError, httpx.InvalidURL, UnicodeError)


def _printable(text: str, limit: int = 500) -> str:
    """A server's text as a terminal may show it: no control characters (a hostile server's escape sequences
    stay inert), at most ``limit`` characters."""
    shown = "".join(c if c.isprintable() else "?" for c in text[: limit + 1])
    return shown if len(shown) <= limit else shown[:limit] + "..."


class ApiError(Exception):
    """The server refused: ``status``, ``code`` (e.g. ``PermissionDenied``) and ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class LoginError(Exception):
    """Logging in failed (a refused login is an ApiError with code AuthenticationFailed as ``cause``)."""

    def __init__(self, message: str, cause: ApiError | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class ServerIdError(LoginError):
    """The client refused to sign a login proof: the profile pins no server id, or the server announces another."""


class Client(Commands):
    """A cedarkey server's API: :meth:`call` for any command by name, or the typed calls of
    :class:`~cedarkey.client.commands.Commands` (``client.get_secret_value(name)``, ``client.authorize([...])``)."""

    def __init__(self, gateway_url: str, profile: Profile | None = None, *, timeout: float = 30.0) -> None:
        self.gateway_url = gateway_url.rstrip("/")
        self.profile = profile
        try:
            self._http = httpx.Client(base_url=self.gateway_url, timeout=timeout)
        except _UNREACHABLE as exc:  # a URL httpx cannot use: no server is reachable there
            raise ApiError(0, "InvalidURL", f"the gateway URL {self.gateway_url!r} cannot be used: {exc}") from None
        self._token: CachedToken | None = None

    @classmethod
    def from_profile(cls, name: str = "default") -> Client:
        profile = load_profile(name)
        return cls(profile.gateway_url, profile)

    def close(self) -> None:
        self._http.close()

    # --- raw calls -----------------------------------------------------------------------------------

    def post(self, command: str, body: dict[str, Any]) -> dict[str, Any]:
        status, data = self._exchange(
            "POST", f"/{command}", content=orjson.dumps(body), headers={"content-type": "application/json"}
        )
        if status != 200:
            if isinstance(data, dict) and isinstance(data.get("error"), str):
                raise ApiError(status, _printable(data["error"], 80), _printable(str(data.get("message", ""))))
            raise ApiError(
                status,
                "HttpError",
                f"{self.gateway_url}/{command} answered HTTP {status}, not a cedarkey answer (check the gateway URL)",
            )
        if not isinstance(data, dict):
            raise ApiError(status, "BadResponse", f"{self.gateway_url}/{command} did not answer a JSON object")
        return data

    def _field(self, answer: dict[str, Any], command: str, key: str, kinds: type | tuple[type, ...]) -> Any:
        """``answer[key]`` when it is of ``kinds``; a server answering otherwise is not a cedarkey server."""
        value = answer.get(key)
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise ApiError(
                200, "BadResponse", f"{self.gateway_url}/{command} answered without a {key!r} (is this cedarkey?)"
            )
        return value

    def health(self) -> dict[str, Any]:
        status, data = self._exchange("GET", "/health")
        if status != 200 or not isinstance(data, dict) or not isinstance(data.get("server_id"), str):
            raise ApiError(
                status,
                "NotCedarkey",
                f"{self.gateway_url}/health answered HTTP {status} without a cedarkey server id"
                " (is this a cedarkey server?)",
            )
        return data

    def _exchange(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        """The status and the JSON (None when the answer is not JSON) of one exchange."""
        try:
            response = self._http.request(method, url, **kwargs)
        except _UNREACHABLE as exc:
            raise ApiError(0, "Unreachable", f"cannot reach {self.gateway_url}: {exc}") from None
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            data = None
        return response.status_code, data

    # --- login ---------------------------------------------------------------------------------------

    def login(self) -> str:
        """A fresh token for the profile (cached until it expires)."""
        profile = self._require_profile()
        if profile.access_type == "access_key":
            body = {"access-type": "access_key", "access-id": profile.access_id, "access-key": profile.access_key}
        elif profile.access_type == "aws_iam":
            body = {"access-type": "aws_iam", "access-id": profile.access_id, "cloud-id": self._cloud_id(profile)}
        else:
            raise LoginError(f"unknown access type {profile.access_type!r}")
        try:
            answer = self.post("auth", body)
        except ApiError as exc:
            raise LoginError(exc.message, exc) from None
        token = self._field(answer, "auth", "token", str)
        self._keep(CachedToken(token, float(self._field(answer, "auth", "expires-at", (int, float))), time.time()))
        return token

    def _keep(self, cached: CachedToken) -> None:
        self._token = cached
        if self.profile is not None:
            cache_token(self.profile, cached)

    def _cloud_id(self, profile: Profile) -> str:
        """A proof signed for the profile's pinned server id only, never for whatever id a server announces."""
        from .proof import ProofError, make_cloud_id

        try:
            server_id = self._pinned_server_id(profile)
            sts_url = profile.sts_url or self._field(
                self.post("lookup-sts-url", {"access-id": profile.access_id}), "lookup-sts-url", "sts-url", str
            )
            return make_cloud_id(sts_url, server_id)
        except ApiError as exc:
            raise LoginError(f"{exc.code}: {exc.message}", exc) from None
        except ProofError as exc:
            raise LoginError(str(exc)) from None

    def _pinned_server_id(self, profile: Profile) -> str:
        """The profile's server id, once this server's /health announces the same one."""
        pinned = profile.server_id
        if pinned is None:
            raise ServerIdError(
                f"profile {profile.name!r} pins no server id to sign login proofs for; run: cedarkey configure"
                f" --profile {profile.name} --access-id {profile.access_id} --access-type aws_iam"
                f" --gateway-url {profile.gateway_url} --server-id ID (the server's --server-id)"
            )
        announced = self.health()["server_id"]
        if announced != pinned:
            raise ServerIdError(
                f"the server at {self.gateway_url} announces server id {announced!r}, but this profile is pinned"
                f" to {pinned!r}; refusing to sign a login proof for it (a proof for {pinned!r} given to another"
                f" server can be relayed to {pinned!r}). If this is the server the profile is meant for and its id"
                f" changed, run: cedarkey configure --profile {profile.name} ... --server-id NEW_ID"
            )
        return pinned

    def token(self) -> str:
        """The profile's token: the cached one, renewed near its end (``renew-token``); a new login when there
        is none, or when the server will not renew it (revoked, or at its auth method's max TTL)."""
        profile = self._require_profile()
        if self._token is None:
            self._token = cached_token(profile)
        now = time.time()
        if self._token is None or not self._token.usable(now):
            return self.login()
        if self._token.near_end(now):
            return self._renew(self._token, now)
        return self._token.token

    def _renew(self, cached: CachedToken, now: float) -> str:
        try:
            answer = self.post("renew-token", {"token": cached.token})
        except ApiError:  # revoked, expired, or this server refuses: a fresh login decides
            return self.login()
        if answer.get("renewed") is not True:  # at its max TTL: log in again before it ends
            return self.login()
        self._keep(
            CachedToken(cached.token, float(self._field(answer, "renew-token", "expires-at", (int, float))), now)
        )
        return cached.token

    def _require_profile(self) -> Profile:
        if self.profile is None:
            raise LoginError("no profile: configure one or pass a token")
        return self.profile

    # --- commands ------------------------------------------------------------------------------------

    def call_anonymous(self, command: str, body: dict[str, Any]) -> dict[str, Any]:
        """A command that takes no token (``auth``, ``lookup-sts-url``); None values are left out."""
        return self.post(command, {k: v for k, v in body.items() if v is not None})

    def call(self, command: str, body: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        """Runs an authenticated command; a token held from before (cached, or of an earlier call) that the server
        refuses is dropped and login retried once."""
        args = {k.replace("_", "-"): v for k, v in kwargs.items()}
        args.update(body or {})
        args = {k: v for k, v in args.items() if v is not None}
        had_cached = self.profile is not None and (self._token is not None or cached_token(self.profile) is not None)
        try:
            return self.post(command, {**args, "token": self.token()})
        except ApiError as exc:
            if exc.code != "AuthenticationFailed" or self.profile is None or not had_cached:
                raise
        drop_cached_token(self.profile)
        self._token = None
        return self.post(command, {**args, "token": self.token()})
