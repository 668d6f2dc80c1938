-- An application may hold more than one key while a rolled key's overlap runs: keys move to a
-- table of their own, each with an optional expiry. (applications.key_hash keeps the first key's
-- hash for old rows and is no longer read.)
CREATE TABLE application_keys (
    key_hash        BLOB    PRIMARY KEY,
    application_id  TEXT    NOT NULL REFERENCES applications(id),
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER
);
CREATE INDEX application_keys_by_application ON application_keys (application_id);
INSERT INTO application_keys (key_hash, application_id, created_at, expires_at)
    SELECT key_hash, id, created_at, NULL FROM applications WHERE revoked = 0;

-- Application names are unique among a project's live applications; older duplicates get
-- their id appended so the rule can hold.
UPDATE applications SET name = name || ' (' || id || ')'
    WHERE revoked = 0 AND EXISTS (
        SELECT 1 FROM applications b
        WHERE b.project_id = applications.project_id AND b.name = applications.name
          AND b.revoked = 0 AND b.id < applications.id);
CREATE UNIQUE INDEX applications_live_name ON applications (project_id, name) WHERE revoked = 0;
