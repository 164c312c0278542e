"""The SQL both backends speak, as the store's modules run it: a transaction (:class:`Tx`) and two reads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from .store import ChangeKey

T = TypeVar("T")


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Tx(Protocol):
    """One transaction (or one call inside a batch) of a backend, and the change rows it records."""

    def execute(self, query: str, params: Sequence[Any] = ()) -> Cursor:
        """``query`` with ``?`` placeholders; a violated constraint of
        :data:`~cedarkey.server.sql_store.CONSTRAINTS` raises its error."""
        ...

    def changed(self, kind: str, *keys: ChangeKey) -> None: ...


def one(tx: Tx, query: str, params: Sequence[Any] = ()) -> Any:
    return tx.execute(query, params).fetchone()


def exists(tx: Tx, query: str, params: Sequence[Any] = ()) -> bool:
    return one(tx, query, params) is not None
