//! The audit records and their hash chain: each record's hash covers its fields and the hash of
//! the record before it in its chain, keyed with a key derived from the master key. Editing,
//! deleting, inserting or reordering a record breaks the chain at that record; cutting the tail
//! is caught against a head kept elsewhere.

use crate::crypto::Keyring;

/// One record, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// Database order across chains (not hashed: assigned on insert).
    pub id: i64,
    pub chain: String,
    pub seq: i64,
    pub at_ms: i64,
    pub request_id: String,
    pub project_id: String,
    pub application_id: String,
    pub action: String,
    pub outcome: String,
    pub token: String,
    /// A JSON object: the destination host, upstream status, latency… never card data, keys or
    /// full URLs.
    pub detail: String,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// The `prev_hash` of a chain's first record.
pub const GENESIS: [u8; 32] = [0; 32];

/// The hash of `row` given its `prev_hash` (every field but `id` and `hash`).
pub fn hash(keyring: &Keyring, row: &AuditRow) -> Vec<u8> {
    let mut data = Vec::with_capacity(256);
    for text in [
        row.chain.as_str(),
        &row.request_id,
        &row.project_id,
        &row.application_id,
        &row.action,
        &row.outcome,
        &row.token,
        &row.detail,
    ] {
        // Length-prefixed, so no two different records encode alike.
        data.extend_from_slice(&(text.len() as u64).to_be_bytes());
        data.extend_from_slice(text.as_bytes());
    }
    data.extend_from_slice(&row.seq.to_be_bytes());
    data.extend_from_slice(&row.at_ms.to_be_bytes());
    data.extend_from_slice(&row.prev_hash);
    keyring.audit_mac(&data)
}

/// What `verify` found wrong first, naming the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub chain: String,
    pub seq: i64,
    pub id: i64,
    pub reason: &'static str,
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "chain {} record {} (id {}): {}",
            self.chain, self.seq, self.id, self.reason
        )
    }
}

/// The last record of one chain: what an operator keeps to detect a cut tail later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub chain: String,
    pub seq: i64,
    pub hash: Vec<u8>,
}

impl Head {
    /// `chain:seq:hash-hex`, one line per chain in a head file.
    pub fn to_line(&self) -> String {
        format!("{}:{}:{}", self.chain, self.seq, hex::encode(&self.hash))
    }

    pub fn parse(line: &str) -> Option<Self> {
        let mut parts = line.trim().rsplitn(3, ':');
        let hash = hex::decode(parts.next()?).ok()?;
        let seq = parts.next()?.parse().ok()?;
        let chain = parts.next()?.to_owned();
        Some(Self { chain, seq, hash })
    }
}

/// Checks every chain in `rows` (any order) and, when given, that each kept head is still
/// there; returns the chains' heads, or the first break found.
pub fn verify(keyring: &Keyring, rows: &[AuditRow], kept: &[Head]) -> Result<Vec<Head>, Break> {
    let mut sorted: Vec<&AuditRow> = rows.iter().collect();
    sorted.sort_by(|a, b| a.chain.cmp(&b.chain).then(a.seq.cmp(&b.seq)));
    let mut heads: Vec<Head> = Vec::new();
    let mut expected_seq = 1;
    let mut prev: Vec<u8> = GENESIS.to_vec();
    for (i, row) in sorted.iter().enumerate() {
        let starts_chain = i == 0 || sorted.get(i - 1).is_none_or(|p| p.chain != row.chain);
        if starts_chain {
            expected_seq = 1;
            prev = GENESIS.to_vec();
        }
        let broken = |reason| Break {
            chain: row.chain.clone(),
            seq: row.seq,
            id: row.id,
            reason,
        };
        if row.seq != expected_seq {
            return Err(broken(if row.seq > expected_seq {
                "records are missing before this one"
            } else {
                "a record with this number appears twice"
            }));
        }
        if row.prev_hash != prev {
            return Err(broken("it does not follow the record before it"));
        }
        if hash(keyring, row) != row.hash {
            return Err(broken("its contents were changed"));
        }
        prev = row.hash.clone();
        expected_seq += 1;
        let ends_chain = sorted.get(i + 1).is_none_or(|n| n.chain != row.chain);
        if ends_chain {
            heads.push(Head {
                chain: row.chain.clone(),
                seq: row.seq,
                hash: row.hash.clone(),
            });
        }
    }
    for head in kept {
        let still = sorted
            .iter()
            .any(|r| r.chain == head.chain && r.seq == head.seq && r.hash == head.hash);
        if !still {
            return Err(Break {
                chain: head.chain.clone(),
                seq: head.seq,
                id: 0,
                reason: "the kept head is gone: the log was cut or rewritten after it",
            });
        }
    }
    Ok(heads)
}
