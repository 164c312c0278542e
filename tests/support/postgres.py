"""A fresh PostgreSQL database per test, on the machine's server (``$CEDARKEY_TEST_POSTGRES`` or
``postgresql://root@127.0.0.1:5432/postgres``). Unreachable: skipped, unless ``$CI`` is set (then it fails)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

SERVER = os.environ.get("CEDARKEY_TEST_POSTGRES", "postgresql://root@127.0.0.1:5432/postgres")


def require_server() -> None:
    try:
        psycopg.connect(SERVER, connect_timeout=3).close()
    except psycopg.Error as exc:
        reason = f"PostgreSQL is not reachable at {SERVER}: {exc}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set: the PostgreSQL tests must run)")
        pytest.skip(reason)


@contextmanager
def fresh_database() -> Iterator[str]:
    """Yields the URL of a new empty database, dropped afterwards."""
    require_server()
    name = f"cedarkey_test_{secrets.token_hex(6)}"
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # a name made here, not input
    try:
        yield SERVER.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(SERVER, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def execute(url: str, query: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def maintenance_url(url: str) -> str:
    return url.rsplit("/", 1)[0] + "/postgres"


def cut_connections(url: str) -> None:
    """Ends every session on the database of ``url`` (the server itself stays up)."""
    execute(
        maintenance_url(url),
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (url.rsplit("/", 1)[1],),
    )
