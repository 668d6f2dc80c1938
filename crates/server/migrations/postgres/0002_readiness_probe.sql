-- One row rewritten by each readiness check: proof that the database still takes writes (a
-- read-only replica promoted by mistake, a full disk).
CREATE TABLE readiness_probe (
    id         INTEGER PRIMARY KEY,
    checked_at BIGINT  NOT NULL
);
