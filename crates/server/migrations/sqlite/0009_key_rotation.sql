-- Data-key rotation: a key is added inactive (instances learn to open it first), then made
-- active (new records are sealed with it) while older records are resealed in batches.
ALTER TABLE data_keys ADD COLUMN active INTEGER NOT NULL DEFAULT 1;

-- One row per background key job (`rotation`): who runs it (empty when nobody), its last sign of
-- life, and the version it moves records to, kept until it is done so a stopped run resumes.
CREATE TABLE key_jobs (
    name            TEXT    PRIMARY KEY,
    owner           TEXT    NOT NULL,
    heartbeat_at    INTEGER NOT NULL,
    target_version  INTEGER
);

-- A shredded token holds no ciphertext, so no key version: 0, which no data key has.
UPDATE tokens SET key_version = 0 WHERE deleted_at IS NOT NULL;
-- Counting records per version (status, retire, metrics) without reading the table.
CREATE INDEX tokens_by_key_version ON tokens (key_version);
