"""The audit log: JSON lines, one event each, appended to a file and mirrored to the ``cedarkey.audit`` logger.

The mirror logs refusals and changes at INFO, and the routine events (a successful login, a secret read,
an ``authorize`` call) at DEBUG: those come by the hundred per second and the file already has them all,
while the server's own log at its default level stays readable and off the login path.

The last :data:`RECENT` events are also kept in memory, for ``list-audit-events`` (the console's Audit
page): this node's, since it started; the file is the record.

Events carry what happened and, for a refused login, the real reason. They never carry a secret value, an
access key, a token or a login proof: callers pass only names, ids and reasons.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import orjson
from cedarkey.engine.errors import clip

logger = logging.getLogger("cedarkey.audit")

#: The longest string field an event records.
MAX_FIELD = 1100

#: Events that are mirrored at DEBUG unless they are a failure.
ROUTINE = frozenset({"login", "get-secret-value", "authorize"})

#: Events kept in memory for :meth:`AuditLog.recent`.
RECENT = 1000


class AuditLog:
    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._recent: deque[bytes] = deque(maxlen=RECENT)  # as written: JSON, every value plain
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def write(self, event: str, **fields: Any) -> None:
        # Names are at most 1,024 characters; nothing longer is the caller's to decide the size of.
        fields = {k: clip(v, MAX_FIELD) if isinstance(v, str) else v for k, v in fields.items()}
        record = {"time": round(time.time(), 3), "event": event, **fields}
        line = orjson.dumps(record, default=str)
        level = logging.DEBUG if event in ROUTINE and fields.get("outcome") != "failure" else logging.INFO
        if logger.isEnabledFor(level):
            logger.log(level, line.decode())
        with self._lock:
            self._recent.append(line)
            if self._fd is not None:
                os.write(self._fd, line + b"\n")

    def recent(self) -> list[dict[str, Any]]:
        """The events kept in memory, newest first."""
        with self._lock:
            lines = list(self._recent)
        return [orjson.loads(line) for line in reversed(lines)]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
