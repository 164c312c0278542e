"""The access model in SQL, written once for both backends.

:class:`SqlStore` implements every domain method of :class:`~cedarkey.server.store.Store` (the checks, their
order, the errors of the catalog in ``cedarkey.engine.errors``, the change rows) in SQL that SQLite and
PostgreSQL both speak, run through a :class:`Tx`. A backend supplies only what differs: how a transaction
is opened, committed and retried (``_write``, ``_read``), how a placeholder and a JSON value are written,
which constraint a violation names, and the change feed's notifications, pruning and sequence.

Audit events (``Store.audited``) are stored by the backends' transaction runners, which call
:meth:`SqlStore._audit_row` last in every write transaction that is not part of a batch (and a batch at its
end), then :func:`audit_committed` once it committed.

Each write checks up front what it can (so both backends refuse the same way, in the same order) and relies
on the constraints for what another node may do meanwhile: a violation of a known constraint is the same
error the check would have raised (:data:`CONSTRAINTS`), never a driver error.
"""

from __future__ import annotations

import hashlib
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Self

from cedarkey.engine import ACCESS_KEY, AccessRole, Association, AuthMethod, ModelError, RoleRule, errors

from .sql_items import SqlItems
from .sql_tx import Tx, exists, one
from .store import (
    AuditEvent,
    Change,
    Kind,
    Snapshot,
    StoredToken,
    auth_method_config,
    auth_method_from_row,
    capabilities_json,
    change_from_row,
    identity_from_json,
    identity_json,
    rule_from_row,
    sub_claims_from_json,
    sub_claims_json,
)

#: An audit event stored in a transaction not yet committed, with its row's id.
StoredAudit = tuple[AuditEvent, int]

#: What the violation of a constraint (by its PostgreSQL name) means when no up-front check said it first.
CONSTRAINTS: dict[str, Callable[[], ModelError]] = {
    "auth_methods_pkey": errors.auth_method_exists,
    "auth_methods_access_id_key": errors.access_id_taken,
    "roles_pkey": errors.role_exists,
    "associations_pkey": errors.assoc_id_taken,
    "associations_role_access_sub_claims_key": errors.already_associated,
    "associations_role_name_fkey": lambda: errors.no_role(field="role-name"),
    "associations_access_id_fkey": errors.no_access_id,
    "rules_role_name_fkey": lambda: errors.no_role(field="role-name"),
    "items_pkey": errors.item_exists,
    "tokens_pkey": errors.token_taken,
    "tokens_access_id_fkey": errors.no_access_id,
}

_SELECT_TOKENS = "SELECT token_hash, access_id, identity, issued_at, expires_at FROM tokens"
_CLAIM_PROOF = (
    "INSERT INTO login_proofs (proof_key, expires_at) VALUES (?, ?) ON CONFLICT (proof_key) "
    "DO UPDATE SET expires_at = excluded.expires_at WHERE login_proofs.expires_at <= ?"
)


def sub_claims_digest(sub_claims: str) -> bytes:
    """What makes an association unique with its role and auth method (sub-claims may be too long to index)."""
    return hashlib.sha256(sub_claims.encode("utf-8")).digest()


class SqlStore(SqlItems):
    """The domain methods of a store in SQL (items in :class:`SqlItems`). Subclasses implement ``_write``,
    ``_read`` and ``json``."""

    #: The column that orders rows by creation (what ``load`` replays them in).
    creation_order = "rowid"
    #: The database, as a message names it (never a password).
    where: str

    def __init__(self) -> None:
        self._audit = threading.local()  # .event: the AuditEvent of this thread's audited() block

    @abstractmethod
    def close(self) -> None:
        """Releases the database; later calls raise StoreError. Closing twice is harmless."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.where!r})"

    def json(self, text: str) -> Any:
        """A JSON text as a query parameter for a JSON column."""
        return text

    # --- load ------------------------------------------------------------------------------------------

    def load(self) -> Snapshot:
        def work(tx: Tx) -> Snapshot:
            order = self.creation_order

            def rows(table: str, columns: str) -> list[Any]:
                return tx.execute(_ORDERED[(table, columns, order)]).fetchall()

            auth_methods = [auth_method_from_row(*r) for r in rows("auth_methods", "name, access_id, type, config")]
            roles = [AccessRole(name, description) for name, description in rows("roles", "name, description")]
            associations = [
                Association(assoc_id, role_name, access_id, sub_claims_from_json(claims))
                for assoc_id, role_name, access_id, claims in rows(
                    "associations", "assoc_id, role_name, access_id, sub_claims"
                )
            ]
            rules = [
                (role_name, rule_from_row(rule_type, path, caps))
                for role_name, rule_type, path, caps in rows("rules", "role_name, rule_type, path, capabilities")
            ]
            return Snapshot(auth_methods, roles, associations, rules)

        return self._read(work, snapshot=True)

    # --- auth methods ----------------------------------------------------------------------------------

    def add_auth_method(self, am: AuthMethod, access_key_hash: bytes | None = None) -> None:
        def work(tx: Tx) -> None:
            if exists(tx, "SELECT 1 FROM auth_methods WHERE name = ?", (am.name,)):
                raise errors.auth_method_exists(am.name)
            if exists(tx, "SELECT 1 FROM auth_methods WHERE access_id = ?", (am.access_id,)):
                raise errors.access_id_taken()
            tx.execute(
                "INSERT INTO auth_methods (name, access_id, type, config, access_key_hash) VALUES (?, ?, ?, ?, ?)",
                (am.name, am.access_id, am.type, self.json(auth_method_config(am)), _bytes(access_key_hash)),
            )
            tx.changed(Kind.AUTH_METHOD, am.name)

        self._write(work)

    def update_auth_method(self, am: AuthMethod) -> None:
        def work(tx: Tx) -> None:
            updated = tx.execute(
                "UPDATE auth_methods SET config = ? WHERE name = ? AND access_id = ? AND type = ?",
                (self.json(auth_method_config(am)), am.name, am.access_id, am.type),
            ).rowcount
            if updated == 0:
                if exists(tx, "SELECT 1 FROM auth_methods WHERE name = ?", (am.name,)):
                    raise errors.keeps_identity()
                raise errors.no_auth_method(am.name)
            tx.changed(Kind.AUTH_METHOD, am.name)

        self._write(work)

    def delete_auth_method(self, name: str) -> None:
        def work(tx: Tx) -> None:
            row = one(tx, "SELECT access_id FROM auth_methods WHERE name = ?", (name,))
            if row is None:
                raise errors.no_auth_method(name)
            access_id = row[0]
            # What the delete cascades to is in the change feed too: children before their parent.
            live = tx.execute(
                "SELECT token_hash FROM tokens WHERE access_id = ? AND revoked = false AND expires_at > ? "
                "ORDER BY issued_at, token_hash",
                (access_id, time.time()),
            ).fetchall()
            tx.changed(Kind.TOKEN, *(bytes(t[0]).hex() for t in live))
            assocs = tx.execute(
                "SELECT assoc_id FROM associations WHERE access_id = ? ORDER BY assoc_id", (access_id,)
            ).fetchall()
            tx.changed(Kind.ASSOCIATION, *(a[0] for a in assocs))
            tx.execute("DELETE FROM tokens WHERE access_id = ?", (access_id,))
            tx.execute("DELETE FROM associations WHERE access_id = ?", (access_id,))
            if tx.execute("DELETE FROM auth_methods WHERE name = ? AND access_id = ?", (name, access_id)).rowcount == 0:
                raise errors.no_auth_method(name)  # another node replaced it meanwhile: nothing of this stays
            tx.changed(Kind.AUTH_METHOD, name)

        self._write(work)

    def access_key_hash(self, access_id: str) -> bytes | None:
        row = self._read(
            lambda tx: one(tx, "SELECT access_key_hash FROM auth_methods WHERE access_id = ?", (access_id,))
        )
        return None if row is None or row[0] is None else bytes(row[0])

    def replace_access_key(self, access_id: str, access_key_hash: bytes) -> int:
        def work(tx: Tx) -> int:
            row = one(tx, "SELECT name FROM auth_methods WHERE access_id = ? AND type = ?", (access_id, ACCESS_KEY))
            if row is None:
                raise errors.no_access_id(access_id)
            tx.execute(
                "UPDATE auth_methods SET access_key_hash = ? WHERE access_id = ?", (_bytes(access_key_hash), access_id)
            )
            live = tx.execute(
                "SELECT token_hash FROM tokens WHERE access_id = ? AND revoked = false ORDER BY token_hash",
                (access_id,),
            ).fetchall()
            tx.execute("UPDATE tokens SET revoked = true WHERE access_id = ? AND revoked = false", (access_id,))
            tx.changed(Kind.TOKEN, *(bytes(t[0]).hex() for t in live))
            tx.changed(Kind.AUTH_METHOD, row[0])
            return len(live)

        return self._write(work)

    # --- roles -----------------------------------------------------------------------------------------

    def add_role(self, name: str, description: str) -> None:
        def work(tx: Tx) -> None:
            if exists(tx, "SELECT 1 FROM roles WHERE name = ?", (name,)):
                raise errors.role_exists(name)
            tx.execute("INSERT INTO roles (name, description) VALUES (?, ?)", (name, description))
            tx.changed(Kind.ROLE, name)

        self._write(work)

    def update_role(self, name: str, description: str) -> None:
        def work(tx: Tx) -> None:
            if tx.execute("UPDATE roles SET description = ? WHERE name = ?", (description, name)).rowcount == 0:
                raise errors.no_role(name)
            tx.changed(Kind.ROLE, name)

        self._write(work)

    def delete_role(self, name: str) -> None:
        def work(tx: Tx) -> None:
            if not exists(tx, "SELECT 1 FROM roles WHERE name = ?", (name,)):
                raise errors.no_role(name)
            assocs = tx.execute(
                "SELECT assoc_id FROM associations WHERE role_name = ? ORDER BY assoc_id", (name,)
            ).fetchall()
            tx.changed(Kind.ASSOCIATION, *(a[0] for a in assocs))
            rules = tx.execute(
                "SELECT rule_type, path FROM rules WHERE role_name = ? ORDER BY rule_type, path", (name,)
            ).fetchall()
            tx.changed(Kind.RULE, *((name, rule_type, path) for rule_type, path in rules))
            tx.execute("DELETE FROM associations WHERE role_name = ?", (name,))
            tx.execute("DELETE FROM rules WHERE role_name = ?", (name,))
            if tx.execute("DELETE FROM roles WHERE name = ?", (name,)).rowcount == 0:
                raise errors.no_role(name)
            tx.changed(Kind.ROLE, name)

        self._write(work)

    def add_association(self, assoc: Association) -> None:
        claims = sub_claims_json(assoc.sub_claims)
        digest = sub_claims_digest(claims)

        def work(tx: Tx) -> None:
            if not exists(tx, "SELECT 1 FROM roles WHERE name = ?", (assoc.role_name,)):
                raise errors.no_role(assoc.role_name, "role-name")
            if not exists(tx, "SELECT 1 FROM auth_methods WHERE access_id = ?", (assoc.access_id,)):
                raise errors.no_access_id(assoc.access_id)
            if exists(tx, "SELECT 1 FROM associations WHERE assoc_id = ?", (assoc.assoc_id,)):
                raise errors.assoc_id_taken()
            if exists(
                tx,
                "SELECT 1 FROM associations WHERE role_name = ? AND access_id = ? AND sub_claims_digest = ?",
                (assoc.role_name, assoc.access_id, digest),
            ):
                raise errors.already_associated()
            tx.execute(
                "INSERT INTO associations (assoc_id, role_name, access_id, sub_claims, sub_claims_digest) "
                "VALUES (?, ?, ?, ?, ?)",
                (assoc.assoc_id, assoc.role_name, assoc.access_id, self.json(claims), digest),
            )
            tx.changed(Kind.ASSOCIATION, assoc.assoc_id)

        self._write(work)

    def delete_association(self, assoc_id: str) -> None:
        def work(tx: Tx) -> None:
            if tx.execute("DELETE FROM associations WHERE assoc_id = ?", (assoc_id,)).rowcount == 0:
                raise errors.no_association(assoc_id)
            tx.changed(Kind.ASSOCIATION, assoc_id)

        self._write(work)

    def set_rule(self, role_name: str, rule: RoleRule) -> None:
        def work(tx: Tx) -> None:
            if not exists(tx, "SELECT 1 FROM roles WHERE name = ?", (role_name,)):
                raise errors.no_role(role_name, "role-name")
            tx.execute(
                "INSERT INTO rules (role_name, rule_type, path, capabilities) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (role_name, rule_type, path) DO UPDATE SET capabilities = excluded.capabilities",
                (role_name, str(rule.rule_type), rule.path, self.json(capabilities_json(rule.capabilities))),
            )
            tx.changed(Kind.RULE, (role_name, str(rule.rule_type), rule.path))

        self._write(work)

    def delete_rule(self, role_name: str, rule_type: str, path: str) -> None:
        def work(tx: Tx) -> None:
            if not exists(tx, "SELECT 1 FROM roles WHERE name = ?", (role_name,)):
                raise errors.no_role(role_name, "role-name")
            deleted = tx.execute(
                "DELETE FROM rules WHERE role_name = ? AND rule_type = ? AND path = ?",
                (role_name, str(rule_type), path),
            ).rowcount
            if deleted == 0:
                raise errors.no_rule(role_name, rule_type, path)
            tx.changed(Kind.RULE, (role_name, str(rule_type), path))

        self._write(work)

    # --- tokens ----------------------------------------------------------------------------------------

    def add_token(self, token: StoredToken, proof: tuple[bytes, float, float] | None = None) -> bool:
        return self._write(lambda tx: self._insert_token(tx, token, proof))

    def add_token_now(self, token: StoredToken, proof: tuple[bytes, float, float] | None = None) -> bool | None:
        return None  # a backend that can write without waiting says so

    def _insert_token(self, tx: Tx, token: StoredToken, proof: tuple[bytes, float, float] | None) -> bool:
        if proof is not None and not _claim(tx, *proof):
            return False
        inserted = tx.execute(  # one statement: the token, only while its auth method exists
            "INSERT INTO tokens (token_hash, access_id, identity, issued_at, expires_at) "
            "SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM auth_methods WHERE access_id = ?)",
            (
                bytes(token.token_hash),
                token.access_id,
                self.json(identity_json(token.identity)),
                float(token.issued_at),
                float(token.expires_at),
                token.access_id,
            ),
        ).rowcount
        if inserted != 1:
            raise errors.no_access_id(token.access_id)
        tx.changed(Kind.TOKEN, bytes(token.token_hash).hex())
        return True

    def revoke_token(self, token_hash: bytes) -> bool:
        def work(tx: Tx) -> bool:
            revoked = tx.execute(
                "UPDATE tokens SET revoked = true WHERE token_hash = ? AND revoked = false", (bytes(token_hash),)
            ).rowcount
            if revoked != 1:
                return False
            tx.changed(Kind.TOKEN, bytes(token_hash).hex())
            return True

        return self._write(work)

    def renew_token(self, token_hash: bytes, expires_at: float, now: float) -> bool:
        def work(tx: Tx) -> bool:
            renewed = tx.execute(
                "UPDATE tokens SET expires_at = ? WHERE token_hash = ? AND revoked = false AND expires_at > ?",
                (float(expires_at), bytes(token_hash), float(now)),
            ).rowcount
            if renewed != 1:
                return False
            tx.changed(Kind.TOKEN, bytes(token_hash).hex())
            return True

        return self._write(work)

    def load_tokens(self, now: float) -> list[StoredToken]:
        rows = self._read(
            lambda tx: tx.execute(
                _SELECT_TOKENS + " WHERE revoked = false AND expires_at > ? ORDER BY issued_at, token_hash",
                (float(now),),
            ).fetchall()
        )
        return [_token(row) for row in rows]

    def purge_expired(self, now: float) -> int:
        def work(tx: Tx) -> int:
            purged = tx.execute("DELETE FROM tokens WHERE expires_at <= ?", (float(now),)).rowcount
            tx.execute("DELETE FROM login_proofs WHERE expires_at <= ?", (float(now),))
            return purged

        return self._write(work)

    def claim_proof(self, key: bytes, expires_at: float, now: float) -> bool:
        return self._write(lambda tx: _claim(tx, key, expires_at, now))

    def get_token(self, token_hash: bytes, now: float | None = None) -> StoredToken | None:
        at = float(time.time() if now is None else now)
        row = self._read(
            lambda tx: one(
                tx,
                _SELECT_TOKENS + " WHERE token_hash = ? AND revoked = false AND expires_at > ?",
                (bytes(token_hash), at),
            )
        )
        return None if row is None else _token(row)

    def live_tokens(self, token_hashes: Sequence[bytes], now: float) -> set[bytes]:
        query = "SELECT 1 FROM tokens WHERE token_hash = ? AND revoked = false AND expires_at > ?"

        def work(tx: Tx) -> set[bytes]:  # one snapshot; each lookup is a primary-key read
            return {bytes(h) for h in token_hashes if one(tx, query, (bytes(h), float(now))) is not None}

        return self._read(work, snapshot=True) if token_hashes else set()

    # --- audit records ---------------------------------------------------------------------------------

    @contextmanager
    def audited(self, event: AuditEvent) -> Iterator[AuditEvent]:
        if getattr(self._audit, "event", None) is not None:
            raise RuntimeError("audited() blocks do not nest")
        self._audit.event = event
        try:
            yield event
        finally:
            self._audit.event = None

    def _audit_row(self, tx: Tx, wrote: bool) -> StoredAudit | None:
        """Stores this thread's pending audit event in ``tx`` when the transaction changed a row (``wrote``)."""
        event: AuditEvent | None = getattr(self._audit, "event", None)
        if event is None or event.id is not None or not wrote:
            return None
        row = one(
            tx,
            "INSERT INTO audit_events (node, at, record) VALUES (?, ?, ?) RETURNING id",
            (event.node, event.at, event.record()),
        )
        return event, int(row[0])

    def audit_events(self, node: str, after: int, limit: int = 1000) -> list[tuple[int, str]]:
        rows = self._read(
            lambda tx: tx.execute(
                "SELECT id, record FROM audit_events WHERE node = ? AND id > ? ORDER BY id LIMIT ?",
                (node, int(after), int(limit)),
            ).fetchall()
        )
        return [(int(i), str(record)) for i, record in rows]

    def prune_audit_events(self, node: str, through: int, before: float) -> int:
        return self._write(
            lambda tx: (
                tx.execute(
                    "DELETE FROM audit_events WHERE node = ? AND id <= ? AND at < ?",
                    (node, int(through), float(before)),
                ).rowcount
            )
        )

    # --- meta ------------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._read(lambda tx: one(tx, "SELECT value FROM meta WHERE key = ?", (key,)))
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        def work(tx: Tx) -> None:
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
            tx.changed(Kind.META, key)

        self._write(work)

    # --- the change feed's reads -----------------------------------------------------------------------

    def changes_since(self, seq: int, limit: int = 1000) -> list[Change]:
        rows = self._read(
            lambda tx: tx.execute(
                "SELECT seq, kind, key, at FROM changes WHERE seq > ? ORDER BY seq LIMIT ?", (int(seq), int(limit))
            ).fetchall()
        )
        return [change_from_row(*row) for row in rows]

    def get_auth_method(self, name: str) -> AuthMethod | None:
        row = self._read(
            lambda tx: one(tx, "SELECT name, access_id, type, config FROM auth_methods WHERE name = ?", (name,))
        )
        return None if row is None else auth_method_from_row(*row)

    def get_role(self, name: str) -> AccessRole | None:
        row = self._read(lambda tx: one(tx, "SELECT name, description FROM roles WHERE name = ?", (name,)))
        return None if row is None else AccessRole(row[0], row[1])

    def get_association(self, assoc_id: str) -> Association | None:
        row = self._read(
            lambda tx: one(
                tx,
                "SELECT assoc_id, role_name, access_id, sub_claims FROM associations WHERE assoc_id = ?",
                (assoc_id,),
            )
        )
        return None if row is None else Association(row[0], row[1], row[2], sub_claims_from_json(row[3]))

    def get_rule(self, role_name: str, rule_type: str, path: str) -> RoleRule | None:
        row = self._read(
            lambda tx: one(
                tx,
                "SELECT rule_type, path, capabilities FROM rules WHERE role_name = ? AND rule_type = ? AND path = ?",
                (role_name, str(rule_type), path),
            )
        )
        return None if row is None else rule_from_row(*row)


def audit_committed(stored: StoredAudit | None) -> None:
    """After the commit of the transaction that stored it: the event has its row."""
    if stored is not None:
        event, row_id = stored
        event.id = row_id


def _claim(tx: Tx, key: bytes, expires_at: float, now: float) -> bool:
    # One statement: a new key is inserted, this key's expired claim is taken over (the others go with
    # purge_expired, which the server's housekeeping runs every minute), a live claim is left as it is and
    # changes no row. A concurrent claim of the same key waits for the first to commit, then sees its row.
    return tx.execute(_CLAIM_PROOF, (bytes(key), float(expires_at), float(now))).rowcount == 1


#: ``load``'s queries, by table, columns and the column of creation order (each backend has one).
_ORDERED: dict[tuple[str, str, str], str] = {
    (table, columns, order): f"SELECT {columns} FROM {table} ORDER BY {order}"  # noqa: S608 - literals only
    for order in ("rowid", "seq")
    for table, columns in (
        ("auth_methods", "name, access_id, type, config"),
        ("roles", "name, description"),
        ("associations", "assoc_id, role_name, access_id, sub_claims"),
        ("rules", "role_name, rule_type, path, capabilities"),
    )
}


def _bytes(value: bytes | None) -> bytes | None:
    return None if value is None else bytes(value)


def _token(row: Sequence[Any]) -> StoredToken:
    token_hash, access_id, identity, issued_at, expires_at = row
    return StoredToken(bytes(token_hash), access_id, identity_from_json(identity), float(issued_at), float(expires_at))
