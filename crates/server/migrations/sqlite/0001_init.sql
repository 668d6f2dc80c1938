CREATE TABLE data_keys (
    version     INTEGER PRIMARY KEY,
    wrapped     BLOB    NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE projects (
    id            TEXT    PRIMARY KEY,
    name          TEXT    NOT NULL,
    mode          TEXT    NOT NULL CHECK (mode IN ('test', 'live')),
    pub_key_hash  BLOB    NOT NULL UNIQUE,
    deduplicate   INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);

CREATE TABLE applications (
    id            TEXT    PRIMARY KEY,
    project_id    TEXT    NOT NULL REFERENCES projects(id),
    name          TEXT    NOT NULL,
    key_hash      BLOB    NOT NULL UNIQUE,
    permissions   TEXT    NOT NULL,
    revoked       INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);

CREATE TABLE tokens (
    id            TEXT    PRIMARY KEY,
    project_id    TEXT    NOT NULL REFERENCES projects(id),
    kind          TEXT    NOT NULL CHECK (kind IN ('card', 'bank')),
    key_version   INTEGER NOT NULL,
    nonce         BLOB    NOT NULL,
    ciphertext    BLOB    NOT NULL,
    fingerprint   BLOB,
    bin           TEXT,
    last4         TEXT    NOT NULL,
    brand         TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    deleted_at    INTEGER
);

-- Deduplication: one live token per card per project.
CREATE UNIQUE INDEX tokens_project_fingerprint
    ON tokens (project_id, fingerprint)
    WHERE fingerprint IS NOT NULL AND deleted_at IS NULL;
