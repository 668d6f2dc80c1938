-- The audit log: one hash chain per writing process (an instance, or a CLI run), so concurrent
-- writers neither fork a chain nor wait on one lock; `cardvault audit verify` checks them all.
-- `id` orders records across chains for reading; `hash` covers every other column but `id`.
CREATE TABLE audit_log (
    id              BIGSERIAL PRIMARY KEY,
    chain           TEXT    NOT NULL,
    seq             BIGINT  NOT NULL,
    at_ms           BIGINT  NOT NULL,
    request_id      TEXT    NOT NULL,
    project_id      TEXT    NOT NULL,
    application_id  TEXT    NOT NULL,
    action          TEXT    NOT NULL,
    outcome         TEXT    NOT NULL,
    token           TEXT    NOT NULL,
    detail          TEXT    NOT NULL,
    prev_hash       BYTEA   NOT NULL,
    hash            BYTEA   NOT NULL,
    UNIQUE (chain, seq)
);
CREATE INDEX audit_log_by_project ON audit_log (project_id, id);
