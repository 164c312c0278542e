"""The SQLite schema of the store, as its migrations: script *n* brings a database to schema version *n*."""

from __future__ import annotations

#: Migration *n* (1-based) brings the schema to version *n*. Append only: never edit a released script.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE schema_version (
        version     INTEGER PRIMARY KEY,
        applied_at  REAL NOT NULL
    );
    CREATE TABLE auth_methods (
        name             TEXT PRIMARY KEY,
        access_id        TEXT NOT NULL UNIQUE,
        type             TEXT NOT NULL,
        config           TEXT NOT NULL,
        access_key_hash  BLOB
    );
    CREATE TABLE roles (
        name         TEXT PRIMARY KEY,
        description  TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE associations (
        assoc_id    TEXT PRIMARY KEY,
        role_name   TEXT NOT NULL REFERENCES roles (name) ON DELETE CASCADE,
        access_id   TEXT NOT NULL REFERENCES auth_methods (access_id) ON DELETE CASCADE,
        sub_claims  TEXT NOT NULL,
        UNIQUE (role_name, access_id, sub_claims)
    );
    CREATE INDEX associations_access_id ON associations (access_id);
    CREATE TABLE rules (
        role_name     TEXT NOT NULL REFERENCES roles (name) ON DELETE CASCADE,
        rule_type     TEXT NOT NULL,
        path          TEXT NOT NULL,
        capabilities  TEXT NOT NULL,
        PRIMARY KEY (role_name, rule_type, path)
    );
    CREATE TABLE items (
        name         TEXT PRIMARY KEY,
        item_type    TEXT NOT NULL,
        ciphertext   BLOB NOT NULL,
        nonce        BLOB NOT NULL,
        created_at   REAL NOT NULL,
        updated_at   REAL NOT NULL,
        version      INTEGER NOT NULL,
        description  TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE tokens (
        token_hash  BLOB PRIMARY KEY,
        access_id   TEXT NOT NULL REFERENCES auth_methods (access_id) ON DELETE CASCADE,
        identity    TEXT NOT NULL,
        issued_at   REAL NOT NULL,
        expires_at  REAL NOT NULL,
        revoked     INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX tokens_access_id ON tokens (access_id);
    CREATE INDEX tokens_expires_at ON tokens (expires_at);
    CREATE TABLE login_proofs (
        proof_key   BLOB PRIMARY KEY,
        expires_at  REAL NOT NULL
    );
    CREATE INDEX login_proofs_expires_at ON login_proofs (expires_at);
    CREATE TABLE meta (
        key    TEXT PRIMARY KEY,
        value  TEXT NOT NULL
    );
    """,
    # 2: the change feed (see cedarkey.server.store). AUTOINCREMENT: a seq is never reused, even once pruned.
    """
    CREATE TABLE changes (
        seq   INTEGER PRIMARY KEY AUTOINCREMENT,
        kind  TEXT NOT NULL,
        key   TEXT NOT NULL,
        at    REAL NOT NULL
    );
    CREATE INDEX changes_at ON changes (at);
    """,
    # 3: items get a random id, bound into their ciphertext with the version (see cedarkey.server.secret_box).
    """
    ALTER TABLE items ADD COLUMN item_id TEXT NOT NULL DEFAULT '';
    UPDATE items SET item_id = lower(hex(randomblob(8))) WHERE item_id = '';
    """,
    # 4: the sub-claims' digest that PostgreSQL's unique key holds, so both backends check one column.
    """
    ALTER TABLE associations ADD COLUMN sub_claims_digest BLOB;
    UPDATE associations SET sub_claims_digest = cedarkey_sha256(sub_claims);
    """,
    # 5: audit records, each written in the transaction of its change; a node's audit.log is fed from its own.
    # AUTOINCREMENT: an id is never reused once pruned (the log's lines name the ids already exported).
    """
    CREATE TABLE audit_events (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        node    TEXT NOT NULL,
        at      REAL NOT NULL,
        record  TEXT NOT NULL
    );
    CREATE INDEX audit_events_node ON audit_events (node, id);
    """,
    # 6: secret versions: the latest stays in items; the earlier ones kept (up to max_versions) live here.
    """
    ALTER TABLE items ADD COLUMN max_versions INTEGER NOT NULL DEFAULT 10;
    ALTER TABLE items ADD COLUMN updated_by TEXT NOT NULL DEFAULT '';
    CREATE TABLE item_versions (
        item_id     TEXT NOT NULL,
        version     INTEGER NOT NULL,
        ciphertext  BLOB NOT NULL,
        nonce       BLOB NOT NULL,
        created_at  REAL NOT NULL,
        created_by  TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (item_id, version)
    );
    """,
)
