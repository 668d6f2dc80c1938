-- Secrets other than data keys, wrapped by the master key: `root`, from which the hashing and
-- session keys are derived. A vault made with a key file stores none until its first rewrap
-- (the key file's own bytes are its root until then).
CREATE TABLE wrapped_secrets (
    name        TEXT    PRIMARY KEY,
    wrapped     BYTEA   NOT NULL,
    updated_at  BIGINT  NOT NULL
);
