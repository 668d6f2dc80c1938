-- Browser collection. The web origins allowed to embed a project's card fields (patterns as
-- browsers serialize origins, e.g. https://shop.example or https://*.example.com).
CREATE TABLE project_origins (
    project_id  TEXT    NOT NULL REFERENCES projects(id),
    origin      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (project_id, origin)
);

-- Tokenization sessions: a wax key (stored only as its keyed hash) lets the card fields of one
-- checkout (tokenization_session_id) tokenize at most remaining_calls more times, until expires_at
-- (unix seconds). Rows past expires_at are swept.
CREATE TABLE collect_sessions (
    key_hash                 BLOB    PRIMARY KEY,
    project_id               TEXT    NOT NULL REFERENCES projects(id),
    tokenization_session_id  TEXT    NOT NULL,
    remaining_calls          INTEGER NOT NULL,
    expires_at               INTEGER NOT NULL,
    created_at               INTEGER NOT NULL
);
CREATE INDEX collect_sessions_by_session ON collect_sessions (project_id, tokenization_session_id);
CREATE INDEX collect_sessions_by_expiry ON collect_sessions (expires_at);
