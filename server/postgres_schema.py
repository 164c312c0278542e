"""The PostgreSQL schema of the store, as its migrations: script *n* brings a database to schema version *n*."""

from __future__ import annotations

#: Migration *n* (1-based) brings the schema to version *n*. Append only: never edit a released script.
#: Version numbers match SQLite's (2 is the change feed in both). The ``seq`` identity columns give the
#: creation order that :meth:`PostgresStore.load` returns.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE schema_version (
        version     integer PRIMARY KEY,
        applied_at  double precision NOT NULL
    );
    CREATE TABLE auth_methods (
        name             text NOT NULL,
        access_id        text NOT NULL,
        type             text NOT NULL,
        config           jsonb NOT NULL,
        access_key_hash  bytea,
        seq              bigint GENERATED ALWAYS AS IDENTITY,
        CONSTRAINT auth_methods_pkey PRIMARY KEY (name),
        CONSTRAINT auth_methods_access_id_key UNIQUE (access_id)
    );
    CREATE TABLE roles (
        name         text NOT NULL,
        description  text NOT NULL DEFAULT '',
        seq          bigint GENERATED ALWAYS AS IDENTITY,
        CONSTRAINT roles_pkey PRIMARY KEY (name)
    );
    -- sub_claims can be far larger than a btree entry may be: uniqueness is on their SHA-256 (of the
    -- canonical JSON the shared codec writes).
    CREATE TABLE associations (
        assoc_id           text NOT NULL,
        role_name          text NOT NULL,
        access_id          text NOT NULL,
        sub_claims         jsonb NOT NULL,
        sub_claims_digest  bytea NOT NULL,
        seq                bigint GENERATED ALWAYS AS IDENTITY,
        CONSTRAINT associations_pkey PRIMARY KEY (assoc_id),
        CONSTRAINT associations_role_name_fkey FOREIGN KEY (role_name)
            REFERENCES roles (name) ON DELETE CASCADE,
        CONSTRAINT associations_access_id_fkey FOREIGN KEY (access_id)
            REFERENCES auth_methods (access_id) ON DELETE CASCADE,
        CONSTRAINT associations_role_access_sub_claims_key UNIQUE (role_name, access_id, sub_claims_digest)
    );
    CREATE INDEX associations_access_id ON associations (access_id);
    CREATE TABLE rules (
        role_name     text NOT NULL,
        rule_type     text NOT NULL,
        path          text NOT NULL,
        capabilities  jsonb NOT NULL,
        seq           bigint GENERATED ALWAYS AS IDENTITY,
        CONSTRAINT rules_pkey PRIMARY KEY (role_name, rule_type, path),
        CONSTRAINT rules_role_name_fkey FOREIGN KEY (role_name) REFERENCES roles (name) ON DELETE CASCADE
    );
    CREATE TABLE items (
        name         text NOT NULL,
        item_type    text NOT NULL,
        ciphertext   bytea NOT NULL,
        nonce        bytea NOT NULL,
        created_at   double precision NOT NULL,
        updated_at   double precision NOT NULL,
        version      bigint NOT NULL,
        description  text NOT NULL DEFAULT '',
        CONSTRAINT items_pkey PRIMARY KEY (name)
    );
    CREATE TABLE tokens (
        token_hash  bytea NOT NULL,
        access_id   text NOT NULL,
        identity    jsonb NOT NULL,
        issued_at   double precision NOT NULL,
        expires_at  double precision NOT NULL,
        revoked     boolean NOT NULL DEFAULT false,
        seq         bigint GENERATED ALWAYS AS IDENTITY,
        CONSTRAINT tokens_pkey PRIMARY KEY (token_hash),
        CONSTRAINT tokens_access_id_fkey FOREIGN KEY (access_id)
            REFERENCES auth_methods (access_id) ON DELETE CASCADE
    );
    CREATE INDEX tokens_access_id ON tokens (access_id);
    CREATE INDEX tokens_expires_at ON tokens (expires_at);
    CREATE TABLE login_proofs (
        proof_key   bytea NOT NULL,
        expires_at  double precision NOT NULL,
        CONSTRAINT login_proofs_pkey PRIMARY KEY (proof_key)
    );
    CREATE INDEX login_proofs_expires_at ON login_proofs (expires_at);
    CREATE TABLE meta (
        key    text NOT NULL,
        value  text NOT NULL,
        CONSTRAINT meta_pkey PRIMARY KEY (key)
    );
    """,
    # 2: the change feed (see cedarkey.server.store).
    """
    CREATE TABLE changes (
        seq   bigserial PRIMARY KEY,
        kind  text NOT NULL,
        key   jsonb NOT NULL,
        at    double precision NOT NULL
    );
    CREATE INDEX changes_at ON changes (at);
    """,
    # 3: items get a random id, bound into their ciphertext with the version (see cedarkey.server.secret_box).
    """
    ALTER TABLE items ADD COLUMN item_id text NOT NULL DEFAULT '';
    UPDATE items SET item_id = substr(md5(random()::text || name), 1, 16) WHERE item_id = '';
    """,
    # 4: SQLite's sub_claims_digest, which PostgreSQL's unique key has held since version 1.
    "SELECT 1;",
    # 5: audit records, each written in the transaction of its change (see sqlite_schema's).
    """
    CREATE TABLE audit_events (
        id      bigserial PRIMARY KEY,
        node    text NOT NULL,
        at      double precision NOT NULL,
        record  text NOT NULL
    );
    CREATE INDEX audit_events_node ON audit_events (node, id);
    """,
    # 6: secret versions (see sqlite_schema's).
    """
    ALTER TABLE items ADD COLUMN max_versions bigint NOT NULL DEFAULT 10;
    ALTER TABLE items ADD COLUMN updated_by text NOT NULL DEFAULT '';
    CREATE TABLE item_versions (
        item_id     text NOT NULL,
        version     bigint NOT NULL,
        ciphertext  bytea NOT NULL,
        nonce       bytea NOT NULL,
        created_at  double precision NOT NULL,
        created_by  text NOT NULL DEFAULT '',
        CONSTRAINT item_versions_pkey PRIMARY KEY (item_id, version)
    );
    """,
)
