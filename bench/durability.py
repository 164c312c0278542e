"""kill -9 durability: rounds of writers, a SIGKILL at a random moment, a restart and a check.

    .venv/bin/python bench/durability.py [--json] [--store sqlite|postgres] [--rounds N] [--seed N]

Each round starts ``cedarkey serve`` on the same data, runs 8 concurrent writers (create-secret,
update-secret-val, set-role-rule, create-role, delete-item), kills the server with SIGKILL after 0.5 to
2 s (on PostgreSQL it first cuts the server's database connections with ``pg_terminate_backend``), restarts
it and checks, with a token issued before the kill, that every acknowledged write is there with its
acknowledged value (a write whose answer never came may be there or not), that the SQLite database passes
``PRAGMA integrity_check``, and that every acknowledged write has its audit record. Rounds default to 20 on
SQLite and 5 on PostgreSQL (``postgresql://root@127.0.0.1:5432``, a fresh database, dropped after).

Prints rounds, acknowledged writes, lost, corrupted, audit records missing, and the writes that were
committed but never answered (the kill came between) with how many of those have no audit record; ``--json``
prints one object. Target: 0 lost, 0 corrupted, 0 missing.

The scenario itself is ``tests/support/durability.py``, which ``tests/test_durability.py`` runs for a few rounds.
"""

from __future__ import annotations

import os
import sys

sys.path.append(sys.path.pop(0))  # bench/ at the end: its http.py must not shadow the standard library's
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import json
import random
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

from support import arguments

from tests.support.durability import initialized, one_round
from tests.support.postgres import cut_connections, fresh_database


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--rounds", type=int, help="default: 20 on sqlite, 5 on postgres")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    rounds = args.rounds or (20 if args.store == "sqlite" else 5)
    rng = random.Random(args.seed)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, fresh_database() if args.store == "postgres" else nullcontext() as url:
        target, admin = initialized(Path(tmp) / "data", url)
        cut = (lambda: cut_connections(url)) if url else None
        results = [one_round(target, admin, rng, cut=cut) for _ in range(rounds)]
    out = {
        "store": args.store,
        "rounds": rounds,
        "acknowledged": sum(r.acknowledged for r in results),
        "lost": sum(len(r.lost) for r in results),
        "corrupted": sum(len(r.corrupted) for r in results),
        "audit_missing": sum(r.audit_missing for r in results),
        "in_flight_committed": sum(len(r.in_flight) for r in results),
        "in_flight_unaudited": sum(r.in_flight_unaudited for r in results),
        "writer_errors": sum(len(r.errors) for r in results),
        "seconds": round(time.perf_counter() - start, 1),
        "seed": args.seed,
    }
    details = [x for r in results for x in (*r.lost, *r.corrupted, *r.errors)][:10]
    if args.json:
        print(json.dumps({**out, "details": details}))
        return
    print(
        f"{out['store']}: {rounds} rounds, {out['acknowledged']} acknowledged writes, {out['lost']} lost, "
        f"{out['corrupted']} corrupted, {out['audit_missing']} without audit record, {out['seconds']} s"
    )
    print(
        f"committed but unanswered at the kill: {out['in_flight_committed']}, "
        f"of which without audit record: {out['in_flight_unaudited']}"
    )
    for line in details:
        print("  ", line)


if __name__ == "__main__":
    main()
