-- Token expiry (unix seconds; NULL: the token lives until it is deleted). A token past its
-- expiry is answered as not found everywhere, and the sweeper erases its sealed data as a delete
-- does; this index finds the live rows it has to erase.
ALTER TABLE tokens ADD COLUMN expires_at BIGINT;
CREATE INDEX tokens_by_expiry ON tokens (expires_at)
    WHERE expires_at IS NOT NULL AND deleted_at IS NULL;
