CREATE TABLE data_keys (
    version     BIGINT  PRIMARY KEY,
    wrapped     BYTEA   NOT NULL,
    created_at  BIGINT  NOT NULL
);

CREATE TABLE projects (
    id            TEXT    PRIMARY KEY,
    name          TEXT    NOT NULL,
    mode          TEXT    NOT NULL CHECK (mode IN ('test', 'live')),
    pub_key_hash  BYTEA   NOT NULL UNIQUE,
    deduplicate   BIGINT  NOT NULL DEFAULT 0,
    created_at    BIGINT  NOT NULL
);

CREATE TABLE applications (
    id            TEXT    PRIMARY KEY,
    project_id    TEXT    NOT NULL REFERENCES projects(id),
    name          TEXT    NOT NULL,
    key_hash      BYTEA   NOT NULL UNIQUE,
    permissions   TEXT    NOT NULL,
    revoked       BIGINT  NOT NULL DEFAULT 0,
    created_at    BIGINT  NOT NULL
);

CREATE TABLE tokens (
    id            TEXT    PRIMARY KEY,
    project_id    TEXT    NOT NULL REFERENCES projects(id),
    kind          TEXT    NOT NULL CHECK (kind IN ('card', 'bank')),
    key_version   BIGINT  NOT NULL,
    nonce         BYTEA   NOT NULL,
    ciphertext    BYTEA   NOT NULL,
    fingerprint   BYTEA,
    bin           TEXT,
    last4         TEXT    NOT NULL,
    brand         TEXT,
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL,
    deleted_at    BIGINT
);

-- Deduplication: one live token per card per project.
CREATE UNIQUE INDEX tokens_project_fingerprint
    ON tokens (project_id, fingerprint)
    WHERE fingerprint IS NOT NULL AND deleted_at IS NULL;

CREATE TABLE project_destinations (
    project_id  TEXT    NOT NULL REFERENCES projects(id),
    rule        TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    PRIMARY KEY (project_id, rule)
);

CREATE TABLE destination_tls (
    project_id       TEXT    NOT NULL REFERENCES projects(id),
    host             TEXT    NOT NULL,
    ca_pem           TEXT,
    client_cert_pem  TEXT,
    key_version      BIGINT,
    key_nonce        BYTEA,
    key_ciphertext   BYTEA,
    updated_at       BIGINT  NOT NULL,
    PRIMARY KEY (project_id, host)
);
