-- The audit log's `id` becomes a plain rowid (no AUTOINCREMENT). AUTOINCREMENT only keeps a
-- deleted highest id from being handed out again, at the price of a write to
-- `sqlite_sequence` in every commit — one more page in the write-ahead log of every proxy
-- call's record. The vault never deletes audit records, and ids are not part of the hash
-- chain (a deleted record is found by its missing `seq`), so nothing depends on it.
CREATE TABLE audit_log_rowid (
    id              INTEGER PRIMARY KEY,
    chain           TEXT    NOT NULL,
    seq             INTEGER NOT NULL,
    at_ms           INTEGER NOT NULL,
    request_id      TEXT    NOT NULL,
    project_id      TEXT    NOT NULL,
    application_id  TEXT    NOT NULL,
    action          TEXT    NOT NULL,
    outcome         TEXT    NOT NULL,
    token           TEXT    NOT NULL,
    detail          TEXT    NOT NULL,
    prev_hash       BLOB    NOT NULL,
    hash            BLOB    NOT NULL,
    UNIQUE (chain, seq)
);
INSERT INTO audit_log_rowid (id, chain, seq, at_ms, request_id, project_id, application_id, action, outcome, token, detail, prev_hash, hash)
    SELECT id, chain, seq, at_ms, request_id, project_id, application_id, action, outcome, token, detail, prev_hash, hash FROM audit_log;
DROP TABLE audit_log;
ALTER TABLE audit_log_rowid RENAME TO audit_log;
CREATE INDEX audit_log_by_project ON audit_log (project_id, id);
