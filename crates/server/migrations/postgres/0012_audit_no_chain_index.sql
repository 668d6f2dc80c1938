-- The audit log drops its UNIQUE (chain, seq) index: one index fewer to update in every
-- commit of every call's record (docs/benchmarks.md, issue 17, ninth step). A chain has one
-- writer, which numbers its records itself, so the index never refused anything;
-- `cardvault audit verify` still finds a number missing or written twice, and the hash chain
-- any change. A writer reading its chain's head back after a failed commit finds it by `id`.
ALTER TABLE audit_log DROP CONSTRAINT IF EXISTS audit_log_chain_seq_key;
