"""Secrets at rest: AES-256-GCM item encryption, the master key, and no plaintext in the database files."""

from __future__ import annotations

import base64
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cedarkey.server.secret_box import (
    ENV_VAR,
    KEY_FILE,
    NONCE_SIZE,
    MasterKeyError,
    SecretBox,
    SecretBoxError,
    aad,
    load_or_create_master_key,
)
from cedarkey.server.sqlite_store import SqliteStore
from cedarkey.server.store import STATIC_SECRET, StoredItem
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY = bytes(range(32))


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(KEY)


# --- SecretBox -----------------------------------------------------------------------------------------------


def item(name: str = "/app/db-password", version: int = 1, item_id: str = "0123456789abcdef") -> StoredItem:
    return StoredItem(name, STATIC_SECRET, b"", b"", 0.0, 0.0, version, "", item_id)


@pytest.mark.parametrize("plaintext", ["hunter2", "", "ünïcødé 🔑 \n\t multi\nline", "x" * 100_000])
def test_round_trip(box: SecretBox, plaintext: str) -> None:
    nonce, ciphertext = box.encrypt(item(), plaintext)
    assert len(nonce) == NONCE_SIZE
    assert box.decrypt(item(), nonce, ciphertext) == plaintext
    # A new box with the same key (a restarted server) decrypts too.
    assert SecretBox(KEY).decrypt(item(), nonce, ciphertext) == plaintext


def test_tampering_is_detected(box: SecretBox) -> None:
    nonce, ciphertext = box.encrypt(item("/a"), "secret value")
    flipped = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
    tag_flipped = ciphertext[:-1] + bytes([ciphertext[-1] ^ 0x80])
    other_nonce = bytes([nonce[0] ^ 1]) + nonce[1:]
    for n, c in ((nonce, flipped), (nonce, tag_flipped), (other_nonce, ciphertext), (nonce, ciphertext[:-1])):
        with pytest.raises(SecretBoxError, match="altered"):
            box.decrypt(item("/a"), n, c)
    with pytest.raises(SecretBoxError, match="nonce"):
        box.decrypt(item("/a"), nonce[:-1], ciphertext)


def test_a_ciphertext_moved_to_another_item_or_version_does_not_decrypt(box: SecretBox) -> None:
    """Another name, another version of the same item (a rollback by database write), or an item of the same
    name created after a delete (another id): none decrypts."""
    nonce, ciphertext = box.encrypt(item("/team-a/token", version=3), "value")
    others = [
        *(item(name, version=3) for name in ("/team-b/token", "/team-a/token/", "/team-a/Token", "")),
        item("/team-a/token", version=4),
        item("/team-a/token", version=2),
        item("/team-a/token", version=3, item_id="fedcba9876543210"),
    ]
    for other in others:
        with pytest.raises(SecretBoxError, match="another item"):
            box.decrypt(other, nonce, ciphertext)


def test_names_cannot_run_into_the_id_or_version() -> None:
    """The associated data is a JSON array: no choice of id and name gives another item's bytes."""
    assert aad(item("/a", 1, "b")) != aad(item("/", 1, "ba"))
    assert aad(item('/a",1', 1, "x")) != aad(item("/a", 1, "x"))


def test_a_legacy_value_decrypts_only_while_legacy_values_are_accepted(box: SecretBox) -> None:
    nonce = bytes(NONCE_SIZE)
    legacy = AESGCM(KEY).encrypt(nonce, b"old", b"/app/db-password")  # bound to the name alone
    assert box.decrypt(item(), nonce, legacy, legacy=True) == "old"
    with pytest.raises(SecretBoxError):
        box.decrypt(item(), nonce, legacy)


def test_another_key_does_not_decrypt(box: SecretBox) -> None:
    nonce, ciphertext = box.encrypt(item("/a"), "value")
    with pytest.raises(SecretBoxError):
        SecretBox(bytes(32)).decrypt(item("/a"), nonce, ciphertext)


def test_every_encryption_draws_a_fresh_nonce(box: SecretBox) -> None:
    results = [box.encrypt(item("/a"), "same value") for _ in range(2000)]
    assert len({nonce for nonce, _ in results}) == len(results)
    assert len({ciphertext for _, ciphertext in results}) == len(results)


def test_key_size_is_enforced_and_the_key_never_shows() -> None:
    for bad in (b"", bytes(16), bytes(31), bytes(33)):
        with pytest.raises(MasterKeyError):
            SecretBox(bad)
    box = SecretBox(KEY)
    assert KEY.hex() not in repr(box) and repr(KEY) not in repr(box)
    assert not hasattr(box, "__dict__")


# --- the master key ------------------------------------------------------------------------------------------


@pytest.fixture
def umask() -> Iterator[None]:
    """A permissive umask, so that only the code's own mode choice can make the file private."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_the_key_file_is_created_0600_and_reused(tmp_path: Path, umask: None) -> None:
    data_dir = tmp_path / "data"
    key = load_or_create_master_key(data_dir, {})
    assert len(key) == 32
    path = data_dir / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert base64.b64decode(path.read_text().strip()) == key
    assert load_or_create_master_key(data_dir, {}) == key
    assert sorted(p.name for p in data_dir.iterdir()) == [KEY_FILE]  # no temporary file left behind
    assert load_or_create_master_key(tmp_path / "other", {}) != key


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o610])
def test_a_key_file_others_can_access_is_refused(tmp_path: Path, mode: int) -> None:
    key = load_or_create_master_key(tmp_path, {})
    path = tmp_path / KEY_FILE
    path.chmod(mode)
    with pytest.raises(MasterKeyError, match="chmod 600") as exc:
        load_or_create_master_key(tmp_path, {})
    assert base64.b64encode(key).decode() not in str(exc.value)
    path.chmod(0o600)
    assert load_or_create_master_key(tmp_path, {}) == key
    path.chmod(0o400)
    assert load_or_create_master_key(tmp_path, {}) == key


def test_a_malformed_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    for content in (b"", b"not base64 !!!", base64.b64encode(bytes(16)), bytes(32)):
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, content)
        os.close(fd)
        with pytest.raises(MasterKeyError, match=str(path)):
            load_or_create_master_key(tmp_path, {})


def test_the_environment_variable_wins(tmp_path: Path) -> None:
    key = os.urandom(32)
    for text in (base64.b64encode(key).decode(), base64.urlsafe_b64encode(key).decode() + "\n"):
        assert load_or_create_master_key(tmp_path, {ENV_VAR: text}) == key
    assert not (tmp_path / KEY_FILE).exists()
    assert load_or_create_master_key(tmp_path, {"OTHER_KEY": text}, env_var="OTHER_KEY") == key


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "not-base64-at-all!",
        base64.b64encode(os.urandom(31)).decode(),
        base64.b64encode(os.urandom(48)).decode(),
    ],
)
def test_a_malformed_environment_variable_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(MasterKeyError, match=ENV_VAR) as exc:
        load_or_create_master_key(tmp_path, {ENV_VAR: value})
    if value.strip():
        assert value not in str(exc.value)
    assert not (tmp_path / KEY_FILE).exists()


def test_concurrent_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    keys: list[bytes] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        keys.append(load_or_create_master_key(tmp_path, {}))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 8 and len(set(keys)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [KEY_FILE]


# --- nothing in the clear on disk ----------------------------------------------------------------------------


def test_the_database_files_hold_no_plaintext(tmp_path: Path) -> None:
    box = SecretBox(load_or_create_master_key(tmp_path, {}))
    db = tmp_path / "cedarkey.db"
    wal = tmp_path / "cedarkey.db-wal"
    first, second = "first-PLAINTEXT-value-3f9a1c", "second-PLAINTEXT-value-77be02"
    name = "/prod/plaintext-canary-name"
    store = SqliteStore(db)
    try:
        nonce, ciphertext = box.encrypt(item(name), first)
        store.add_item(StoredItem(name, STATIC_SECRET, ciphertext, nonce, 1.0, 1.0, 1, "desc", item().item_id))
        nonce, ciphertext = box.encrypt(item(name, version=2), second)
        store.update_item(name, ciphertext, nonce, 2.0, version=2)

        stored = store.get_item(name)
        assert box.decrypt(stored, stored.nonce, stored.ciphertext) == second
        files = {p: p.read_bytes() for p in (db, wal) if p.exists()}
        assert files.get(wal)  # the writes sit in the WAL until a checkpoint
        everything = b"".join(files.values())
        assert name.encode() in everything  # sanity: we are looking at the right bytes
        assert ciphertext in everything
    finally:
        store.close()
    everything += db.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    for secret in (first, second):
        for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
            assert secret.encode(encoding) not in everything
        assert base64.b64encode(secret.encode()) not in everything
