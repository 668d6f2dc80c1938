-- Per-project destination allowlist: host patterns with optional path prefixes.
CREATE TABLE project_destinations (
    project_id  TEXT    NOT NULL REFERENCES projects(id),
    rule        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (project_id, rule)
);
