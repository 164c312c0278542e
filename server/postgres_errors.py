"""What PostgreSQL's errors mean for a store: unavailable for now (503, retried once when nothing was sent),
a known constraint (the catalog's error), bad input, or a fault."""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg
from cedarkey.engine import ModelError
from psycopg.pq import TransactionStatus

from .sql_store import CONSTRAINTS
from .store import StoreError, StoreUnavailable

#: SQLSTATE classes and codes of a database that does not answer now but may later (503, not 500).
UNAVAILABLE_CLASSES = ("08", "53", "57", "58", "40")  # connection, resources, operator, system, rolled back
UNAVAILABLE_CODES = ("55P03", "55006", "25006")  # lock not available, object in use, read-only (failover)
#: Connection failures that no retry will fix.
CONFIGURATION_ERRORS = ("does not exist", "authentication failed", "no pg_hba.conf entry", "permission denied")
#: The server rolled the transaction back by itself: running it again is safe.
ROLLED_BACK_CODES = ("40001", "40P01")  # serialization failure, deadlock


def connection_lost(conn: psycopg.Connection[Any], exc: psycopg.Error) -> bool:
    """Whether the connection is gone (the server restarted, terminated it, or cannot be reached)."""
    if conn.broken or conn.closed:
        return True
    state = exc.sqlstate or ""
    return state.startswith("08") or state in ("57P01", "57P02", "57P03")


def rollback_quietly(conn: psycopg.Connection[Any]) -> None:
    if conn.closed:
        return
    if conn.pgconn.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
        with contextlib.suppress(psycopg.Error):
            conn.execute("ROLLBACK")


def translate(exc: psycopg.Error, *, lost: bool, committing: bool, where: str) -> Exception:
    """The store error (or model error) a driver error means."""
    if lost and committing:
        return StoreUnavailable(
            f"the connection to the database {where} was lost while committing: the write may or may not "
            f"have been applied ({first_line(exc)})"
        )
    state = exc.sqlstate or ""
    if lost or state[:2] in UNAVAILABLE_CLASSES or state in UNAVAILABLE_CODES:
        return StoreUnavailable(f"database unavailable: {first_line(exc)}")
    if isinstance(exc, psycopg.IntegrityError):
        known = CONSTRAINTS.get(exc.diag.constraint_name or "")
        if known is not None:
            return known()
    # PostgreSQL text cannot hold NUL (the driver refuses it, jsonb refuses \\u0000): bad input, not a fault.
    if state in ("22021", "22P05") or (isinstance(exc, psycopg.DataError) and "NUL" in str(exc)):
        return ModelError("", "PostgreSQL cannot store the NUL character")
    if isinstance(exc, psycopg.InterfaceError):
        return StoreUnavailable(f"database unavailable: {first_line(exc)}")
    return StoreError(f"database error: {first_line(exc)}")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
