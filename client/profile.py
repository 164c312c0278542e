"""Profiles and the token cache, under ``~/.cedarkey`` (or ``$CEDARKEY_HOME``): directories 0700, files 0600.

- ``profiles/<name>.json``: gateway URL, access id, access type, access key (access_key only), STS URL
  override, and the server id that login proofs are signed for (pinned by ``configure``);
- ``.tmp_creds/<profile>-<access-id>``: the cached token, its expiry and when it was obtained (renewed near its
  end). Removing it forces a new login.

Files are written to a new temp file of a random name (``O_EXCL|O_NOFOLLOW``, mode 0600), synced, then
renamed over the final name: a symlink planted at either name is never followed or written through. They are
read with ``O_NOFOLLOW`` too, so a planted link cannot hand the client someone else's profile or token.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

DEFAULT_GATEWAY = "http://127.0.0.1:8200"
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


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
    server_id: str | None = None

    @property
    def cache_path(self) -> Path:
        return home() / ".tmp_creds" / f"{self.name}-{self.access_id}"


def _check_name(name: str) -> str:
    if not _SAFE_NAME.fullmatch(name):
        raise ProfileError(f"profile name {name!r}: letters, digits, '.', '_' and '-' only")
    return name


def _private_dir(path: Path) -> None:
    """``path`` exists as a directory only its owner can enter (an existing one of ours is tightened)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        info = os.stat(path)
        if info.st_uid != os.geteuid() or stat.S_IMODE(info.st_mode) & 0o077 == 0:
            return
    os.chmod(path, 0o700)  # mkdir's mode is masked by the umask; an old home may have been made 0755


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_private(path: Path, data: bytes) -> None:
    try:
        home().parent.mkdir(parents=True, exist_ok=True)
        _private_dir(home())
        _private_dir(path.parent)
        _replace_with(path, data)
    except OSError as exc:
        raise ProfileError(f"cannot write {path}: {exc.strerror or exc}") from None


def _replace_with(path: Path, data: bytes) -> None:
    """Writes a new temp file of a random name, then renames it over ``path`` (a symlink there is replaced)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, _CREATE, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # exactly 0600 whatever the umask
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_private(path: Path) -> bytes:
    """The file's bytes; a symlink raises OSError (ELOOP) instead of being followed."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as file:
        return file.read()


def save_profile(profile: Profile) -> Path:
    path = home() / "profiles" / f"{_check_name(profile.name)}.json"
    _write_private(path, orjson.dumps(asdict(profile), option=orjson.OPT_INDENT_2))
    return path


def load_profile(name: str) -> Profile:
    path = home() / "profiles" / f"{_check_name(name)}.json"
    try:
        data = orjson.loads(_read_private(path))
    except FileNotFoundError:
        raise ProfileError(
            f"profile {name!r} is not configured; run: cedarkey configure --profile {name} ..."
        ) from None
    except orjson.JSONDecodeError:
        raise ProfileError(f"profile file {path} is not valid JSON") from None
    except OSError as exc:
        raise ProfileError(f"cannot read profile file {path} (a symlink is refused): {exc.strerror}") from None
    try:
        return Profile(**data)
    except TypeError:  # not an object, a missing field or an unknown one
        raise ProfileError(f"profile file {path} is not a cedarkey profile") from None


#: A cached token is renewed once it is in the last third of its lifetime, or this many seconds before its end.
RENEW_BEFORE = 300.0
#: A cached token this close to its end is not used at all.
EXPIRY_MARGIN = 5.0


@dataclass(frozen=True)
class CachedToken:
    token: str
    expires_at: float
    obtained_at: float  # when it was issued or last renewed, by this machine's clock

    def usable(self, now: float) -> bool:
        return self.expires_at > now + EXPIRY_MARGIN

    def near_end(self, now: float) -> bool:
        """Time to renew it: in the last third of its lifetime, or within :data:`RENEW_BEFORE` of its end."""
        return self.expires_at - now < min(RENEW_BEFORE, (self.expires_at - self.obtained_at) / 3)


def cached_token(profile: Profile) -> CachedToken | None:
    """The profile's cached token while it is usable."""
    try:
        data = orjson.loads(_read_private(profile.cache_path))
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    token, expires_at, obtained_at = data.get("token"), data.get("expires_at"), data.get("obtained_at", 0.0)
    if not isinstance(token, str) or not all(type(t) in (int, float) for t in (expires_at, obtained_at)):
        return None
    cached = CachedToken(token, float(expires_at), float(obtained_at))
    return cached if cached.usable(time.time()) else None


def cache_token(profile: Profile, cached: CachedToken) -> None:
    _write_private(profile.cache_path, orjson.dumps(asdict(cached)))


def drop_cached_token(profile: Profile) -> None:
    try:
        profile.cache_path.unlink()
    except FileNotFoundError:
        pass
