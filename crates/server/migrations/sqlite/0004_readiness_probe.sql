-- One row rewritten by each readiness check: proof that the database still takes writes.
CREATE TABLE readiness_probe (
    id         INTEGER PRIMARY KEY,
    checked_at BIGINT  NOT NULL
);
