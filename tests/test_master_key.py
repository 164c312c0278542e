"""A node with a missing or wrong master key does not serve: the store keeps a check value of its key (a
constant sealed under it, never the key) from ``init`` on, and a start whose key does not open it is refused
before anything is written, on SQLite and PostgreSQL alike. The story this guards against: a PostgreSQL node
started without ``CEDARKEY_MASTER_KEY`` made its own key and wrote secrets no other node could read."""

from __future__ import annotations

import base64
import os
import secrets
import sqlite3
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from cedarkey.server.config import Settings
from cedarkey.server.main import initialize
from cedarkey.server.secret_box import KEY_CHECK_META, KEY_FILE, MasterKeyError, SecretBox
from cedarkey.server.store import STATIC_SECRET, StoredItem

from tests.support.postgres import fresh_database
from tests.support.server import CEDARKEY

ENV = "CEDARKEY_MASTER_KEY"


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def start(data_dir: Path, database_url: str | None = None) -> tuple[SecretBox, dict[str, str] | None]:
    store, box, admin = initialize(Settings(data_dir, database_url=database_url))
    store.close()
    return box, admin


def add_secret(data_dir: Path, database_url: str | None = None) -> None:
    store, box, _ = initialize(Settings(data_dir, database_url=database_url))
    item = StoredItem("/prod/db", STATIC_SECRET, b"", b"", 1.0, 1.0, 1, "", "i-0000000000000001")
    nonce, ciphertext = box.encrypt(item, "s3cret")
    store.add_item(replace(item, nonce=nonce, ciphertext=ciphertext))
    store.close()


def test_a_wrong_key_is_refused_and_the_right_one_serves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, key := new_key())
    _, admin = start(tmp_path / "a")
    assert admin is not None
    monkeypatch.setenv(ENV, new_key())
    with pytest.raises(MasterKeyError, match=f"from {ENV} is not the one this store was initialized with"):
        start(tmp_path / "a")
    monkeypatch.setenv(ENV, key)
    assert start(tmp_path / "a")[1] is None  # the right key: served, the admin not made twice


def test_a_lost_key_file_is_not_replaced_by_a_new_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    start(tmp_path)
    (tmp_path / KEY_FILE).unlink()
    with pytest.raises(MasterKeyError, match="the store is initialized but its master key is not here"):
        start(tmp_path)
    assert not (tmp_path / KEY_FILE).exists()


def test_the_store_holds_a_check_value_never_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, key := new_key())
    start(tmp_path)
    with sqlite3.connect(tmp_path / "cedarkey.db") as db:
        dump = "\n".join(db.iterdump())
        (check,) = db.execute("SELECT value FROM meta WHERE key = ?", (KEY_CHECK_META,)).fetchone()
    raw = base64.b64decode(key)
    assert key not in dump and raw.hex() not in dump and base64.b64encode(raw[:16]).decode()[:20] not in dump
    assert SecretBox(raw).opens(check) and not SecretBox(secrets.token_bytes(32)).opens(check)


def test_a_store_from_before_the_check_gets_one_from_its_items_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, key := new_key())
    add_secret(tmp_path)
    with sqlite3.connect(tmp_path / "cedarkey.db") as db:
        db.execute("DELETE FROM meta WHERE key = ?", (KEY_CHECK_META,))
    monkeypatch.setenv(ENV, new_key())
    with pytest.raises(MasterKeyError, match="does not decrypt this store's items"):
        start(tmp_path)
    monkeypatch.setenv(ENV, key)
    start(tmp_path)
    with sqlite3.connect(tmp_path / "cedarkey.db") as db:
        assert db.execute("SELECT 1 FROM meta WHERE key = ?", (KEY_CHECK_META,)).fetchone() is not None


def test_a_postgres_node_without_the_key_does_not_join(tmp_path: Path) -> None:
    key = new_key()
    with fresh_database() as url:
        first = subprocess.run(
            [CEDARKEY, "init", "--data-dir", str(tmp_path / "n1"), "--database-url", url],
            capture_output=True,
            text=True,
            env={**os.environ, ENV: key},
        )
        assert first.returncode == 0, first.stderr
        env = {k: v for k, v in os.environ.items() if k != ENV}
        for extra, words in (({}, "its master key is not here"), ({ENV: new_key()}, "is not the one this store")):
            second = subprocess.run(
                [CEDARKEY, "serve", "--data-dir", str(tmp_path / "n2"), "--database-url", url, "--port", "0"],
                capture_output=True,
                text=True,
                env={**env, **extra},
                timeout=60,
            )
            assert second.returncode != 0
            assert words in second.stderr and "Traceback" not in second.stderr, second.stderr
            assert not (tmp_path / "n2" / KEY_FILE).exists()
