"""Secrets at rest: items are stored only as AES-256-GCM ciphertext under the master key.

Every encryption draws a fresh random 96-bit nonce, and binds the ciphertext to the item's id, name and
version as associated data: a ciphertext copied onto another item's row, onto a newer version of the same
item, or onto an item of the same name created after a delete, does not decrypt. GCM authenticates, so any
change to nonce, ciphertext or what it is bound to fails loudly instead of giving garbage. (A whole row
copied back, version number included, is a rollback nothing in the database can tell from the real thing:
that takes a counter kept outside it.) Values written before cedarkey bound the id and version were bound
to the name alone (``LEGACY``): the server re-encrypts them once at start (``Service``).

The master key is 32 random bytes, taken from ``CEDARKEY_MASTER_KEY`` (their base64) when that is set, else
from ``DATA_DIR/master.key`` (the same base64 text), which is created on first start with mode 0600. A key
file that group or others can access is refused. Nothing here logs, prints or puts the key in a message.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import orjson
from cedarkey.engine.errors import shown
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_SIZE = 32
NONCE_SIZE = 12
ENV_VAR = "CEDARKEY_MASTER_KEY"
KEY_FILE = "master.key"
_MAX_KEY_FILE = 4096
#: The store's meta key of the master key's check value, and what that value seals.
KEY_CHECK_META = "master_key_check"
KEY_CHECK_TEXT = b"cedarkey master key check"
KEY_CHECK_AAD = b"cedarkey-key-check-v1"


class SecretBoxError(Exception):
    """A value cannot be decrypted: tampered with, moved to another name, or under another key."""


class MasterKeyError(Exception):
    """The master key is missing, malformed, or its file is unsafe. The message never holds the key."""


class SecretBox:
    """Encrypts and decrypts item values with one AES-256-GCM key."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) != KEY_SIZE:
            raise MasterKeyError(f"the master key must be {KEY_SIZE} bytes")
        self._aead = AESGCM(bytes(key))

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    def encrypt(self, item: ItemBinding, plaintext: str) -> tuple[bytes, bytes]:
        """``(nonce, ciphertext)`` of ``plaintext`` for the item version ``item``."""
        nonce = secrets.token_bytes(NONCE_SIZE)
        return nonce, self._aead.encrypt(nonce, plaintext.encode("utf-8"), aad(item))

    def key_check(self) -> str:
        """A check value of this key for the store (``KEY_CHECK_META``): a constant sealed under it, never the
        key; a node whose key does not open it must not serve (:meth:`opens`)."""
        nonce = secrets.token_bytes(NONCE_SIZE)
        return encode_key(nonce + self._aead.encrypt(nonce, KEY_CHECK_TEXT, KEY_CHECK_AAD))

    def opens(self, check: str) -> bool:
        """Whether ``check`` (a :meth:`key_check`) was made under this key."""
        try:
            raw = base64.b64decode(check, validate=True)
            return self._aead.decrypt(raw[:NONCE_SIZE], raw[NONCE_SIZE:], KEY_CHECK_AAD) == KEY_CHECK_TEXT
        except (binascii.Error, ValueError, InvalidTag):
            return False

    def decrypt(self, item: ItemBinding, nonce: bytes, ciphertext: bytes, *, legacy: bool = False) -> str:
        """The plaintext of the item version ``item``; SecretBoxError when it does not authenticate. With
        ``legacy``, a value bound to the item's name alone (as written before ids and versions) is accepted."""
        if len(nonce) != NONCE_SIZE:
            raise SecretBoxError(f"cannot decrypt item {shown(item.name)}: the stored nonce is not {NONCE_SIZE} bytes")
        bindings = (aad(item), item.name.encode("utf-8")) if legacy else (aad(item),)
        for bound in bindings:
            try:
                return self._aead.decrypt(bytes(nonce), bytes(ciphertext), bound).decode("utf-8")
            except InvalidTag:
                continue
        raise SecretBoxError(
            f"cannot decrypt item {shown(item.name)}: the ciphertext was altered, belongs to another item or "
            "version, or was encrypted under another master key"
        )


class ItemBinding(Protocol):
    """What a value is bound to: a :class:`cedarkey.server.store.StoredItem` is one."""

    @property
    def item_id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> int: ...


def aad(item: ItemBinding) -> bytes:
    """The associated data of an item version: a JSON array, so no name can run into the id or version."""
    return b"cedarkey-item-v2" + orjson.dumps([item.item_id, item.name, item.version])


def load_or_create_master_key(
    data_dir: Path, env: Mapping[str, str], *, env_var: str = ENV_VAR, create: bool = True
) -> bytes:
    """The master key: from ``env[env_var]`` if set, else ``data_dir/master.key`` (created if absent and
    ``create``: a store initialized already needs the key it was initialized with, never a new one).

    An empty variable is an error, not "unset": silently making a new key instead of the one meant would
    leave every stored item unreadable.
    """
    value = env.get(env_var)
    if value is not None:
        return _decode_key(value, f"the environment variable {env_var}")
    path = Path(data_dir) / KEY_FILE
    try:
        return _read_key_file(path)
    except FileNotFoundError:
        if not create:
            raise MasterKeyError(
                f"the store is initialized but its master key is not here: set {env_var} to the key it was "
                f"initialized with, or restore {path}"
            ) from None
    return _create_key_file(path)


def encode_key(key: bytes) -> str:
    """The text form of a master key (what ``CEDARKEY_MASTER_KEY`` and ``master.key`` hold)."""
    return base64.b64encode(key).decode("ascii")


def _decode_key(text: str | bytes, where: str) -> bytes:
    hint = f"{where} must hold the base64 of {KEY_SIZE} random bytes (e.g. from `openssl rand -base64 32`)"
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise MasterKeyError(hint) from None
    text = text.strip().replace("-", "+").replace("_", "/")
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MasterKeyError(hint) from None
    if len(key) != KEY_SIZE:
        raise MasterKeyError(f"{hint}; it decodes to {len(key)} bytes")
    return key


def _read_key_file(path: Path) -> bytes:
    """Reads an existing key file (FileNotFoundError when there is none)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise MasterKeyError(f"cannot read the master key file {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise MasterKeyError(f"the master key file {path} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise MasterKeyError(
                f"the master key file {path} can be accessed by group or others (mode {mode:04o}); "
                f"restrict it with `chmod 600 {path}`"
            )
        data = os.read(fd, _MAX_KEY_FILE + 1)
    finally:
        os.close(fd)
    if not data.strip():
        raise MasterKeyError(f"the master key file {path} is empty")
    return _decode_key(data, f"the master key file {path}")


def _create_key_file(path: Path) -> bytes:
    """Creates the key file with a fresh key, never exposing a partial or group-readable file.

    The key is written to a temporary file created with O_CREAT|O_EXCL and mode 0600, fsynced, then linked
    to its final name (a link never replaces an existing file); when another process won the race, its key
    is the one returned.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = secrets.token_bytes(KEY_SIZE)
    content = (encode_key(key) + "\n").encode("ascii")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(tmp, flags, 0o600)
    except OSError as exc:
        raise MasterKeyError(f"cannot create the master key file in {path.parent}: {exc.strerror}") from None
    try:
        try:
            os.fchmod(fd, 0o600)  # the umask can only have removed bits; make it exactly 0600
            os.write(fd, content)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _read_key_file(path)
        except OSError:
            # A file system without hard links: create the final name exclusively instead.
            return _create_directly(path, key, content)
    except OSError as exc:
        raise MasterKeyError(f"cannot create the master key file {path}: {exc.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return key


def _create_directly(path: Path, key: bytes, content: bytes) -> bytes:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        return _read_key_file(path)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_dir(path.parent)
    return key


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
