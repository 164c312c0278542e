"""The audit log: JSON lines, one event each, appended to a file and mirrored to the ``cedarkey.audit`` logger.

The mirror logs refusals and changes at INFO, and the routine events (a successful login, a secret read,
an ``authorize`` call) at DEBUG: those come by the hundred per second and the file already has them all,
while the server's own log at its default level stays readable and off the login path.

The last :data:`RECENT` events are also kept in memory, for ``list-audit-events`` (the console's Audit
page): this node's, since it started; the file is the record.

Events carry what happened and, for a refused login, the real reason. They never carry a secret value, an
access key, a token or a login proof: callers pass only names, ids and reasons.

A change's event (:meth:`AuditLog.event`) is stored in the change's own transaction (``Store.audited``, a
row of ``audit_events``) and appended once that committed (:meth:`AuditLog.export`), with the row's id as
``audit_id``; an event with no change to go with (a refused login, a read) is appended at once
(:meth:`AuditLog.write`). The file is fed from the table: at start, :meth:`AuditLog.catch_up` appends the
node's stored events that the file's tail lacks (a kill between a commit and its line), so a committed change
always has its line: at least once (a file removed by hand gets the last hour again), never not at all.
SIGHUP reopens the file (:meth:`AuditLog.reopen`: logrotate moves it, then signals); a new file starts with
an ``audit-log-opened`` line carrying the last id exported, so a start after it knows where the log stands.
Each data dir is one node (``DATA_DIR/node-id``, made at its first start): its file is fed from its own rows.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import orjson
from cedarkey.engine.errors import clip

from .store import AuditEvent, Store

logger = logging.getLogger("cedarkey.audit")

#: The longest string field an event records.
MAX_FIELD = 1100

#: Events that are mirrored at DEBUG unless they are a failure.
ROUTINE = frozenset({"login", "get-secret-value", "authorize"})

#: Events kept in memory for :meth:`AuditLog.recent`.
RECENT = 1000

#: How much of the file's end a start reads for the ids already exported (at least 2,000 lines).
TAIL_BYTES = 4 << 20
#: Seconds a stored event is kept once exported: the table is the log's outbox, the file the record.
RETENTION = 3600.0
#: The file naming a data dir's node.
NODE_FILE = "node-id"
#: The first line of a file opened empty by :meth:`AuditLog.reopen`.
OPENED = "audit-log-opened"


class AuditLog:
    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._recent: deque[bytes] = deque(maxlen=RECENT)  # as written: JSON, every value plain
        self._through = 0  # the highest id exported
        #: The node whose stored events this log exports ("" without a file).
        self.node = ""
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.node = node_id(path.with_name(NODE_FILE))
            self._fd = _open(path)

    def event(self, event: str, **fields: Any) -> AuditEvent:
        """An event to store with its change (``Store.audited``), then :meth:`export` once committed."""
        # Names are at most 1,024 characters; nothing longer is the caller's to decide the size of.
        fields = {k: clip(v, MAX_FIELD) if isinstance(v, str) else v for k, v in fields.items()}
        return AuditEvent(self.node, {"time": round(time.time(), 3), "event": event, **fields})

    def write(self, event: str, **fields: Any) -> None:
        """An event with no change to be stored with (a refused login, a read): appended at once."""
        self.export(self.event(event, **fields))

    def export(self, event: AuditEvent) -> None:
        """Appends ``event`` (with its ``audit_id`` once stored), mirrors it, keeps it among the recent."""
        record = event.fields if event.id is None else {**event.fields, "audit_id": event.id}
        line = orjson.dumps(record, default=str)
        level = logging.DEBUG if record["event"] in ROUTINE and record.get("outcome") != "failure" else logging.INFO
        if logger.isEnabledFor(level):
            logger.log(level, line.decode())
        with self._lock:
            self._recent.append(line)
            try:
                self._append(line)
            except OSError:
                if event.id is None:
                    raise  # nothing else holds it
                logger.exception("audit event %d is stored but not in the file: the next start appends it", event.id)
            self._through = max(self._through, event.id or 0)

    def catch_up(self, store: Store) -> int:
        """Appends this node's stored events that the file lacks (before serving); returns how many."""
        if self._path is None:
            return 0
        exported, after = _exported(self._path)
        appended = 0
        with self._lock:
            while rows := store.audit_events(self.node, after):
                for row_id, record in rows:
                    if row_id not in exported:
                        self._append(record[:-1].encode() + b',"audit_id":%d}' % row_id)
                        appended += 1
                after = rows[-1][0]
            self._through = max(after, *exported, 0)
        if appended:
            logger.warning(
                "%d audit events committed before the last stop were not in %s: appended", appended, self._path
            )
        return appended

    def reopen(self) -> None:
        """Opens the file again (SIGHUP: it may have been moved); a new one starts with the last id exported."""
        if self._path is None:
            return
        with self._lock:
            fd = _open(self._path)
            if self._fd is not None:
                os.close(self._fd)
            self._fd = fd
            if self._through and os.fstat(fd).st_size == 0:
                marker = {"time": round(time.time(), 3), "event": OPENED, "exported_through": self._through}
                self._append(orjson.dumps(marker))

    def prune(self, store: Store, now: float) -> int:
        """Deletes the stored events exported more than :data:`RETENTION` seconds ago (housekeeping)."""
        return store.prune_audit_events(self.node, self._through, now - RETENTION) if self._through else 0

    def recent(self) -> list[dict[str, Any]]:
        """The events kept in memory, newest first."""
        with self._lock:
            lines = list(self._recent)
        return [orjson.loads(line) for line in reversed(lines)]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _append(self, line: bytes) -> None:
        if self._fd is not None:
            os.write(self._fd, line + b"\n")


def _open(path: Path) -> int:
    """The file for appending; a last line cut short (a power loss) is ended first, so it spoils no other."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        os.write(fd, b"\n")
    return fd


def _exported(path: Path) -> tuple[set[int], int]:
    """The ids in the file's last :data:`TAIL_BYTES`, and the id above which the store is read: the lowest of
    them (a lower id committed later than a higher one, on PostgreSQL, is still seen) or a reopened file's
    ``exported_through``."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - TAIL_BYTES))
            tail = f.read()
    except FileNotFoundError:
        return set(), 0
    ids: set[int] = set()
    marks: list[int] = []
    for line in tail.splitlines():
        if b'"audit_id"' not in line and OPENED.encode() not in line:
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:  # the first, cut by the tail's start, or one cut by a power loss
            continue
        if isinstance(record.get("audit_id"), int):
            ids.add(record["audit_id"])
        if record.get("event") == OPENED and isinstance(record.get("exported_through"), int):
            marks.append(record["exported_through"])
    return ids, min((*ids, *marks), default=0)


def node_id(path: Path) -> str:
    """The node id kept in ``path``, made (random) when there is none; two processes starting at once agree."""
    try:
        return _read_node_id(path)
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, f"n-{secrets.token_hex(8)}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # never replaces a file another process linked first
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return _read_node_id(path)


def _read_node_id(path: Path) -> str:
    value = path.read_text().strip()
    if not value:
        raise RuntimeError(f"{path} is empty: remove it, and a new node id is made at the next start")
    return value
