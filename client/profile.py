"""Profiles and the token cache, under ``~/.cedarkey`` (or ``$CEDARKEY_HOME``), files mode 0600.

- ``profiles/<name>.json``: gateway URL, access id, access type, access key (access_key only), STS URL
  override;
- ``.tmp_creds/<profile>-<access-id>``: the cached token and its expiry. Removing it forces a new login.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

DEFAULT_GATEWAY = "http://127.0.0.1:8200"
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class ProfileError(Exception):
    pass


def home() -> Path:
    return Path(os.environ.get("CEDARKEY_HOME") or Path.home() / ".cedarkey")


@dataclass
class Profile:
    name: str
    access_id: str
    access_type: str
    gateway_url: str = DEFAULT_GATEWAY
    access_key: str | None = None
    sts_url: str | None = None

    @property
    def cache_path(self) -> Path:
        return home() / ".tmp_creds" / f"{self.name}-{self.access_id}"


def _check_name(name: str) -> str:
    if not _SAFE_NAME.fullmatch(name):
        raise ProfileError(f"profile name {name!r}: letters, digits, '.', '_' and '-' only")
    return name


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def save_profile(profile: Profile) -> Path:
    path = home() / "profiles" / f"{_check_name(profile.name)}.json"
    _write_private(path, orjson.dumps(asdict(profile), option=orjson.OPT_INDENT_2))
    return path


def load_profile(name: str) -> Profile:
    path = home() / "profiles" / f"{_check_name(name)}.json"
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise ProfileError(
            f"profile {name!r} is not configured; run: cedarkey configure --profile {name} ..."
        ) from None
    except orjson.JSONDecodeError:
        raise ProfileError(f"profile file {path} is not valid JSON") from None
    return Profile(**data)


def cached_token(profile: Profile) -> str | None:
    try:
        data = orjson.loads(profile.cache_path.read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("expires_at", 0) <= time.time() + 5:
        return None
    token = data.get("token")
    return token if isinstance(token, str) else None


def cache_token(profile: Profile, token: str, expires_at: float) -> None:
    _write_private(profile.cache_path, orjson.dumps({"token": token, "expires_at": expires_at}))


def drop_cached_token(profile: Profile) -> None:
    try:
        profile.cache_path.unlink()
    except FileNotFoundError:
        pass
