"""The audit log is fed from the store: a change's event is stored in the change's transaction, a start appends
what a kill left stored but not in the file, and SIGHUP reopens the file (logrotate). The kill itself is
``tests/test_durability.py``'s (every committed in-flight write has its line after the restart)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import orjson
from cedarkey.server.audit import NODE_FILE, OPENED, AuditLog, node_id
from cedarkey.server.sqlite_store import SqliteStore

from tests.support.server import start_initialized

JSON = {"content-type": "application/json"}


def _lines(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [orjson.loads(line) for line in path.read_text().splitlines() if line]


def _stored_change(store: SqliteStore, log: AuditLog, name: str) -> int:
    """A role created with its audit event stored, and the event NOT appended (a kill came between)."""
    event = log.event("create-role", name=name)
    with store.audited(event):
        store.add_role(name, "")
    assert event.id is not None
    return event.id


def test_a_start_appends_the_committed_events_the_file_lacks_once(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "cedarkey.db")
    path = tmp_path / "audit.log"
    first = AuditLog(path)
    exported = first.event("create-role", name="/exported")
    with store.audited(exported):
        store.add_role("/exported", "")
    first.export(exported)
    lost = [_stored_change(store, first, f"/lost{k}") for k in range(3)]
    first.close()

    again = AuditLog(path)
    assert again.node == first.node  # the data dir is one node
    assert again.catch_up(store) == 3
    assert again.catch_up(store) == 0  # a second start appends nothing twice
    again.close()
    lines = _lines(path)
    assert [r["name"] for r in lines] == ["/exported", "/lost0", "/lost1", "/lost2"]
    assert [r["audit_id"] for r in lines[1:]] == lost
    assert AuditLog(path).catch_up(store) == 0
    store.close()


def test_a_line_cut_by_a_power_loss_spoils_no_other(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "cedarkey.db")
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    stored = _stored_change(store, log, "/after-the-cut")
    log.close()
    with path.open("ab") as f:
        f.write(b'{"time": 1, "event": "create-ro')  # the last line, half written
    again = AuditLog(path)
    assert again.catch_up(store) == 1
    again.close()
    last = path.read_text().splitlines()[-1]
    assert orjson.loads(last)["audit_id"] == stored


def test_reopen_starts_a_moved_file_anew_and_a_later_start_knows_where_it_stands(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "cedarkey.db")
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    event = log.event("create-role", name="/before")
    with store.audited(event):
        store.add_role("/before", "")
    log.export(event)
    path.rename(tmp_path / "audit.log.1")  # what logrotate does before it signals
    log.reopen()
    after = log.event("create-role", name="/after")
    with store.audited(after):
        store.add_role("/after", "")
    log.export(after)
    log.close()
    opened, line = _lines(path)
    assert opened["event"] == OPENED and opened["exported_through"] == event.id
    assert line["name"] == "/after"
    assert AuditLog(path).catch_up(store) == 0  # the rotated-away event is not appended again
    assert [r["name"] for r in _lines(tmp_path / "audit.log.1")] == ["/before"]
    store.close()


def test_pruning_keeps_what_was_not_exported(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "cedarkey.db")
    log = AuditLog(tmp_path / "audit.log")
    exported = log.event("create-role", name="/exported")
    with store.audited(exported):
        store.add_role("/exported", "")
    log.export(exported)
    pending = _stored_change(store, log, "/pending")
    assert log.prune(store, time.time() + 7200) == 1
    assert [i for i, _ in store.audit_events(log.node, 0)] == [pending]
    log.close()
    store.close()


def test_two_processes_making_a_node_id_at_once_agree(tmp_path: Path) -> None:
    pids, path = [], tmp_path / NODE_FILE
    for _ in range(8):
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the child)
            code = 0
            try:
                (tmp_path / f"id-{os.getpid()}").write_text(node_id(path))
            except BaseException:
                code = 1
            os._exit(code)
        pids.append(pid)
    assert all(os.waitpid(pid, 0)[1] == 0 for pid in pids)
    ids = {(tmp_path / f"id-{pid}").read_text() for pid in pids}
    assert ids == {path.read_text().strip()} and len(ids) == 1


def test_sighup_reopens_the_servers_audit_log(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server, admin = start_initialized(data)
    try:
        login = {"access-type": "access_key", "access-id": admin["access_id"], "access-key": admin["access_key"]}
        token = httpx.post(f"{server.url}/auth", content=orjson.dumps(login), headers=JSON).json()["token"]

        def create(name: str) -> None:
            body = orjson.dumps({"name": name, "token": token})
            assert httpx.post(f"{server.url}/create-role", content=body, headers=JSON).status_code == 200

        create("/before-rotation")
        (data / "audit.log").rename(data / "audit.log.1")
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while not (data / "audit.log").exists():
            assert time.monotonic() < deadline, "SIGHUP did not reopen audit.log"
            time.sleep(0.02)
        create("/after-rotation")
        assert server.process.poll() is None  # SIGHUP reopens; it does not stop the server
    finally:
        server.stop()
    rotated = [r.get("name") for r in _lines(data / "audit.log.1")]
    fresh = _lines(data / "audit.log")
    assert "/before-rotation" in rotated and "/after-rotation" not in rotated
    assert fresh[0]["event"] == OPENED
    assert [r["name"] for r in fresh if r["event"] == "create-role"] == ["/after-rotation"]
