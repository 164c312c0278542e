"""Items and their versions in SQL, for both backends: the part of :class:`~cedarkey.server.sql_store.SqlStore`
that holds secrets (their ciphertexts only: encrypting is the server's ``secret_box``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from cedarkey.engine import errors

from .sql_tx import T, Tx, exists, one
from .store import StoredItem, StoredVersion

_SELECT_ITEMS = (
    "SELECT name, item_type, ciphertext, nonce, created_at, updated_at, version, description, item_id, "
    "max_versions, updated_by FROM items"
)
#: Reads of an item a version-less update makes while other writers keep replacing it under it (PostgreSQL).
_UPDATE_ATTEMPTS = 100
_SELECT_VERSIONS = "SELECT version, ciphertext, nonce, created_at, created_by FROM item_versions"


class SqlItems(ABC):
    """The item methods of :class:`~cedarkey.server.store.Store`, run through the store's transactions."""

    @abstractmethod
    def _write(self, work: Callable[[Tx], T]) -> T:
        """Runs ``work`` in a write transaction (or a call of the open batch) and records its change rows."""

    @abstractmethod
    def _read(self, work: Callable[[Tx], T], *, snapshot: bool = False) -> T:
        """Runs ``work`` reading (``snapshot``: every statement sees the same committed state)."""

    def add_item(self, item: StoredItem) -> None:
        def work(tx: Tx) -> None:
            if exists(tx, "SELECT 1 FROM items WHERE name = ?", (item.name,)):
                raise errors.item_exists(item.name)
            tx.execute(
                "INSERT INTO items (name, item_type, ciphertext, nonce, created_at, updated_at, version, "
                "description, item_id, max_versions, updated_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    item.name,
                    item.item_type,
                    bytes(item.ciphertext),
                    bytes(item.nonce),
                    float(item.created_at),
                    float(item.updated_at),
                    int(item.version),
                    item.description,
                    item.item_id,
                    int(item.max_versions),
                    item.updated_by,
                ),
            )

        self._write(work)

    def update_item(
        self,
        name: str,
        ciphertext: bytes,
        nonce: bytes,
        updated_at: float,
        *,
        version: int | None = None,
        description: str | None = None,
        keep_previous: bool = False,
        max_versions: int | None = None,
        updated_by: str = "",
    ) -> StoredItem:
        def work(tx: Tx) -> StoredItem:
            for _ in range(_UPDATE_ATTEMPTS):
                row = one(tx, _SELECT_ITEMS + " WHERE name = ?", (name,))
                if row is None:
                    raise errors.no_item(name)
                current = _item(row)
                if version is not None and version != current.version + 1:
                    raise errors.item_not_at(name, version - 1)
                updated = tx.execute(  # the version just read, still: another writer in between means read again
                    "UPDATE items SET ciphertext = ?, nonce = ?, updated_at = ?, version = version + 1, "
                    "description = coalesce(?, description), max_versions = coalesce(?, max_versions), "
                    "updated_by = ? WHERE name = ? AND version = ?",
                    (
                        bytes(ciphertext),
                        bytes(nonce),
                        float(updated_at),
                        description,
                        max_versions,
                        updated_by,
                        name,
                        current.version,
                    ),
                ).rowcount
                if updated:
                    break
            else:
                raise errors.item_not_at(name, current.version)
            if keep_previous:  # what the update replaced is ``current``: its WHERE held
                tx.execute(
                    "INSERT INTO item_versions (item_id, version, ciphertext, nonce, created_at, created_by) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        current.item_id,
                        current.version,
                        current.ciphertext,
                        current.nonce,
                        current.updated_at,
                        current.updated_by,
                    ),
                )
            kept = (max_versions or current.max_versions) - 1  # the latest is one of them
            tx.execute(
                "DELETE FROM item_versions WHERE item_id = ? AND version NOT IN "
                "(SELECT version FROM item_versions WHERE item_id = ? ORDER BY version DESC LIMIT ?)",
                (current.item_id, current.item_id, kept),
            )
            return _item(one(tx, _SELECT_ITEMS + " WHERE name = ?", (name,)))

        return self._write(work)

    def item_versions(self, name: str) -> list[StoredVersion]:
        def work(tx: Tx) -> list[StoredVersion]:
            row = one(tx, "SELECT item_id FROM items WHERE name = ?", (name,))
            if row is None:
                raise errors.no_item(name)
            rows = tx.execute(_SELECT_VERSIONS + " WHERE item_id = ? ORDER BY version DESC", (row[0],)).fetchall()
            return [_version(r) for r in rows]

        return self._read(work, snapshot=True)

    def get_item_version(self, name: str, version: int) -> StoredItem:
        def work(tx: Tx) -> StoredItem:
            row = one(tx, _SELECT_ITEMS + " WHERE name = ?", (name,))
            if row is None:
                raise errors.no_item(name)
            item = _item(row)
            if item.version == version:
                return item
            kept = one(tx, _SELECT_VERSIONS + " WHERE item_id = ? AND version = ?", (item.item_id, int(version)))
            if kept is None:
                raise errors.no_item_version(name, version)
            old = _version(kept)
            return replace(
                item,
                ciphertext=old.ciphertext,
                nonce=old.nonce,
                version=old.version,
                updated_at=old.created_at,
                updated_by=old.created_by,
            )

        return self._read(work, snapshot=True)

    def delete_item_version(self, name: str, version: int) -> None:
        def work(tx: Tx) -> None:
            row = one(tx, "SELECT item_id, version FROM items WHERE name = ?", (name,))
            if row is None:
                raise errors.no_item(name)
            if int(row[1]) == version:
                raise errors.latest_version_kept(name, version)
            deleted = tx.execute(
                "DELETE FROM item_versions WHERE item_id = ? AND version = ?", (row[0], int(version))
            ).rowcount
            if deleted == 0:
                raise errors.no_item_version(name, version)

        self._write(work)

    def rewrite_items(self, items: Sequence[StoredItem]) -> None:
        def work(tx: Tx) -> None:
            for item in items:
                rewritten = tx.execute(
                    "UPDATE items SET ciphertext = ?, nonce = ? WHERE name = ? AND version = ?",
                    (bytes(item.ciphertext), bytes(item.nonce), item.name, int(item.version)),
                ).rowcount
                if rewritten == 0:
                    raise errors.item_not_at(item.name, item.version)

        self._write(work)

    def get_item(self, name: str) -> StoredItem:
        row = self._read(lambda tx: one(tx, _SELECT_ITEMS + " WHERE name = ?", (name,)))
        if row is None:
            raise errors.no_item(name)
        return _item(row)

    def delete_item(self, name: str) -> None:
        def work(tx: Tx) -> None:
            row = one(tx, "SELECT item_id FROM items WHERE name = ?", (name,))
            if row is None or tx.execute("DELETE FROM items WHERE name = ?", (name,)).rowcount == 0:
                raise errors.no_item(name)
            tx.execute("DELETE FROM item_versions WHERE item_id = ?", (row[0],))

        self._write(work)

    def list_items(self) -> list[StoredItem]:
        rows = self._read(lambda tx: tx.execute(_SELECT_ITEMS).fetchall())
        return sorted((_item(row) for row in rows), key=lambda i: i.name)  # code point order on both backends


def _item(row: Sequence[Any]) -> StoredItem:
    name, item_type, ciphertext, nonce, created_at, updated_at, version, description, item_id, most, by = row
    return StoredItem(
        name, item_type, bytes(ciphertext), bytes(nonce), float(created_at), float(updated_at), int(version),
        description, item_id, int(most), by,
    )  # fmt: skip


def _version(row: Sequence[Any]) -> StoredVersion:
    version, ciphertext, nonce, created_at, created_by = row
    return StoredVersion(int(version), bytes(ciphertext), bytes(nonce), float(created_at), created_by)
