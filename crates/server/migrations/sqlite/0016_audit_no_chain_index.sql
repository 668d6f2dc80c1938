-- The audit log drops its UNIQUE (chain, seq) index: one b-tree fewer to update, one page
-- fewer in the write-ahead log, in every commit of every call's record (docs/benchmarks.md,
-- issue 17, ninth step). A chain has one writer, which numbers its records itself, and
-- SQLite's commits are synchronous (a failed one has landed or not before the writer reads
-- its head back), so the index never refused anything here; `cardvault audit verify` still
-- finds a number missing or written twice ("a record with this number appears twice"), and
-- the hash chain any change. A writer reading its chain's head back after a failed commit
-- finds it by `id` (its records' ids grow with their numbers), from the newest record down.
-- PostgreSQL keeps the index: there a commit reported failed may land later.
-- The rebuild copies the log once, inside the migration's transaction.
CREATE TABLE audit_log_unindexed (
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
    hash            BLOB    NOT NULL
);
INSERT INTO audit_log_unindexed (id, chain, seq, at_ms, request_id, project_id, application_id, action, outcome, token, detail, prev_hash, hash)
    SELECT id, chain, seq, at_ms, request_id, project_id, application_id, action, outcome, token, detail, prev_hash, hash FROM audit_log;
DROP TABLE audit_log;
ALTER TABLE audit_log_unindexed RENAME TO audit_log;
CREATE INDEX audit_log_by_project ON audit_log (project_id, id);
