-- Calls made with an `Idempotency-Key`: one row per project and key (stored as a keyed hash,
-- since a caller may put anything in it), with a keyed hash of the request, and once the call
-- has an answer worth keeping, that answer sealed with the session key. `state` 0: running;
-- 1: answered (status and sealed answer set).
CREATE TABLE idempotency_keys (
    project_id    TEXT    NOT NULL,
    key_hash      BLOB    NOT NULL,
    request_hash  BLOB    NOT NULL,
    state         INTEGER NOT NULL,
    answer        BLOB,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    PRIMARY KEY (project_id, key_hash)
);
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);
