-- Bulk imports (`cardvault import`): the token each record of another vault's export became,
-- keyed by that vault's id within the project. Written in the same transaction as the tokens,
-- so a re-run or a run resumed after a kill imports no record twice. Holds no card data.
CREATE TABLE import_keys (
    project_id  TEXT    NOT NULL,
    old_id      TEXT    NOT NULL,
    token_id    TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    PRIMARY KEY (project_id, old_id)
);
