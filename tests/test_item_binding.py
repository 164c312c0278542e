"""A value is bound to its item's id, name and version: ciphertext moved in the database by hand is refused,
and values stored before the binding are re-encrypted once at start, under the right key only."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from cedarkey.server.config import Settings
from cedarkey.server.main import create_app
from cedarkey.server.secret_box import KEY_CHECK_META, MasterKeyError, SecretBox, load_or_create_master_key
from cedarkey.server.service import ITEMS_BOUND_META
from cedarkey.server.sqlite_store import SqliteStore
from cedarkey.server.store import STATIC_SECRET, StoredItem
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from starlette.testclient import TestClient

from tests.support.server import Api, running_api

JSON = {"content-type": "application/json"}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with running_api(tmp_path / "data") as api:
        yield api


def row(db: Path, name: str) -> tuple[bytes, bytes]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT ciphertext, nonce FROM items WHERE name = ?", (name,)).fetchone()


def overwrite(db: Path, name: str, value: tuple[bytes, bytes]) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE items SET ciphertext = ?, nonce = ? WHERE name = ?", (*value, name))


def test_an_older_version_copied_back_over_the_newer_is_refused(api: Api) -> None:
    db = api.settings.data_dir / "cedarkey.db"
    api.ok("create-secret", name="/prod/db", value="old-password")
    first = row(db, "/prod/db")
    assert api.ok("update-secret-val", name="/prod/db", value="new-password")["version"] == 2
    overwrite(db, "/prod/db", first)  # a rollback by database write: the row still says version 2
    refused = api.call("get-secret-value", name="/prod/db")
    assert refused.status_code == 503 and refused.json()["error"] == "ItemUnreadable"


def test_a_value_copied_to_another_item_or_a_recreated_one_is_refused(api: Api) -> None:
    db = api.settings.data_dir / "cedarkey.db"
    api.ok("create-secret", name="/a", value="a-value")
    api.ok("create-secret", name="/b", value="b-value")
    overwrite(db, "/b", row(db, "/a"))
    assert api.call("get-secret-value", name="/b").json()["error"] == "ItemUnreadable"
    # Deleted and created again under the same name: the same version number, another item id.
    before = row(db, "/a")
    api.ok("delete-item", name="/a")
    api.ok("create-secret", name="/a", value="fresh")
    overwrite(db, "/a", before)
    assert api.call("get-secret-value", name="/a").json()["error"] == "ItemUnreadable"


def legacy_store(data_dir: Path, key: bytes) -> None:
    """The data dir as an older cedarkey left it: values bound to the item's name alone, no marker."""
    with SqliteStore(data_dir / "cedarkey.db") as store:
        for name, value in (("/old/one", "v1"), ("/old/two", "v2")):
            nonce = bytes(12) if name.endswith("one") else b"\x01" * 12
            ciphertext = AESGCM(key).encrypt(nonce, value.encode(), name.encode())
            store.add_item(StoredItem(name, STATIC_SECRET, ciphertext, nonce, 1.0, 1.0, 3, "", f"id{name[-3:]}"))
    with sqlite3.connect(data_dir / "cedarkey.db") as conn:
        conn.execute("DELETE FROM meta WHERE key = ?", (ITEMS_BOUND_META,))


def token(client: TestClient, admin: dict[str, str]) -> str:
    body = {"access-type": "access_key", "access-id": admin["access_id"], "access-key": admin["access_key"]}
    return client.post("/auth", content=orjson.dumps(body)).json()["token"]


def test_legacy_values_are_re_encrypted_once_and_then_only_the_binding_is_accepted(api: Api) -> None:
    data_dir, admin = api.settings.data_dir, api.admin
    key = load_or_create_master_key(data_dir, {})
    api.client.__exit__(None, None, None)  # the server stops
    legacy_store(data_dir, key)
    app, _ = create_app(Settings(data_dir=data_dir))
    with TestClient(app, headers=JSON) as client:
        admin_token = token(client, admin)
        for name, value in (("/old/one", "v1"), ("/old/two", "v2")):
            answer = client.post("/get-secret-value", content=orjson.dumps({"name": name, "token": admin_token}))
            assert answer.json()["value"] == value
    with SqliteStore(data_dir / "cedarkey.db") as store:
        assert store.get_meta(ITEMS_BOUND_META)
        stored = store.get_item("/old/one")
        assert stored.version == 3  # re-encrypted, not a new version
        assert SecretBox(key).decrypt(stored, stored.nonce, stored.ciphertext) == "v1"  # bound: no legacy needed


@pytest.mark.parametrize("key_check", [True, False], ids=["with-key-check", "store-from-before-the-check"])
def test_a_node_with_another_master_key_refuses_and_re_encrypts_nothing(
    api: Api, monkeypatch: pytest.MonkeyPatch, key_check: bool
) -> None:
    data_dir = api.settings.data_dir
    key = load_or_create_master_key(data_dir, {})
    api.client.__exit__(None, None, None)
    legacy_store(data_dir, key)
    if not key_check:
        with sqlite3.connect(data_dir / "cedarkey.db") as conn:
            conn.execute("DELETE FROM meta WHERE key = ?", (KEY_CHECK_META,))
    before = row(data_dir / "cedarkey.db", "/old/one")
    monkeypatch.setenv("CEDARKEY_MASTER_KEY", "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVpbXF1eX2A=")
    with pytest.raises(MasterKeyError, match="CEDARKEY_MASTER_KEY"):
        create_app(Settings(data_dir=data_dir))
    assert row(data_dir / "cedarkey.db", "/old/one") == before
    with SqliteStore(data_dir / "cedarkey.db") as store:
        assert store.get_meta(ITEMS_BOUND_META) is None
        assert (store.get_meta(KEY_CHECK_META) is not None) is key_check  # no check written for a wrong key
