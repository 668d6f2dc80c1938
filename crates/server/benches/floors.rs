//! The steps every proxy call must take that are more than forwarding, as the vault does them
//! and at their floor: the token read and the audit record committed before the answer (alone,
//! and in the groups the writer forms under load) on the embedded database, against the same
//! kinds of statements on a bare SQLite connection (the token read without the vault's deleted
//! and expiry checks and with 3 of its columns); the record's chain hash; the request's JSON
//! parse. Issue 17 asks, for a throughput target still missed, what remains and why it cannot
//! go lower: these are the floors (docs/benchmarks.md, fourteenth step). The bare statements'
//! settings and columns copy `store::sql`'s private ones (`SQLITE_PRAGMAS`, the audit insert's
//! columns); change them together.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use cardvault_server::audit::{AuditLog, AuditRow, Entry, chain};
use cardvault_server::crypto::{Keyring, MasterKey, Sealed};
use cardvault_server::store::{
    AuditStore, Database, Mode, Project, SqlStore, Store, TokenKind, TokenRecord,
};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use rusqlite::{Connection, params};

const TOKENS: usize = 10_000;
/// The settings of the vault's connections that serve calls (`store::sql`: `SQLITE_PRAGMAS`
/// and no checkpoint inline, a keeper's work there), for the bare statements.
const PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA journal_size_limit = 16777216; PRAGMA secure_delete = ON; PRAGMA wal_autocheckpoint = 0;";

/// Groups between two checkpoints, and the groups a timed batch holds: criterion runs a batch's
/// setups (one of them the checkpoint) before timing it, so the log grows by at most this many
/// groups while timed and no timed commit pays for a checkpoint, as the vault's keeper keeps
/// its log short and checkpoints away from the calls.
const GROUPS_A_CHECKPOINT: usize = 32;

/// The fields of a proxy request the handler reads, borrowed from the body; the body template
/// kept as it came (the least a handler can parse of it).
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct ProxyRequestFields<'a> {
    #[serde(borrow)]
    token: &'a str,
    #[serde(borrow)]
    proxy_url: &'a str,
    #[serde(borrow)]
    request_data: &'a serde_json::value::RawValue,
    #[serde(borrow)]
    http_headers: std::collections::HashMap<&'a str, &'a str>,
}

fn token(i: usize) -> TokenRecord {
    TokenRecord {
        id: format!("tok_{i:024}"),
        project_id: "proj_1".into(),
        kind: TokenKind::Card,
        sealed: Sealed {
            key_version: 1,
            nonce: vec![1; 12],
            ciphertext: vec![2; 120],
        },
        fingerprint: None,
        bin: Some("424242".into()),
        last4: "4242".into(),
        brand: Some("visa".into()),
        created_at: 1,
        expires_at: None,
    }
}

/// A proxy call's record as the handler describes it.
fn entry(i: usize) -> Entry {
    let mut entry = Entry::new("proxy");
    entry.request_id = format!("0193a1b2-c3d4-7e5f-8a9b-{i:012}");
    entry.project_id = "proj_1".into();
    entry.application_id = "app_0193a1b2c3d47e5f".into();
    entry.token = token(i % TOKENS).id;
    entry.detail.set("host", "api.processor.example");
    entry.detail.set("status", 200);
    entry.detail.set("latency_ms", 1);
    entry
}

/// The same record as a stored row, its chain fields filled in.
fn row(keyring: &Keyring, seq: i64, prev_hash: Vec<u8>) -> AuditRow {
    let entry = entry(seq as usize);
    let mut row = AuditRow {
        id: 0,
        chain: "0193a1b2-c3d4-7e5f-8a9b-000000000000".into(),
        seq,
        at_ms: 1_764_950_400_000,
        request_id: entry.request_id,
        project_id: entry.project_id,
        application_id: entry.application_id,
        action: entry.action.into(),
        outcome: entry.outcome,
        token: entry.token,
        detail: serde_json::to_string(&entry.detail).expect("a detail is JSON"),
        prev_hash,
        hash: Vec::new(),
    };
    row.hash = chain::hash(keyring, &row);
    row
}

fn floors(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.db");
    let master = MasterKey::generate().unwrap();
    let keyring =
        Keyring::new(&master, &[Keyring::wrap_new_data_key(&master, 1).unwrap()]).unwrap();
    let keyring = Arc::new(keyring);
    let store = runtime.block_on(async {
        let store = SqlStore::open(&Database::Sqlite(path.clone()), true)
            .await
            .unwrap();
        let project = Project {
            id: "proj_1".into(),
            name: "p".into(),
            mode: Mode::Test,
            deduplicate: false,
        };
        store.insert_project(&project, b"pub").await.unwrap();
        let tokens: Vec<TokenRecord> = (0..TOKENS).map(token).collect();
        for chunk in tokens.chunks(1000) {
            store.insert_tokens(chunk).await.unwrap();
        }
        Arc::new(store)
    });
    let ids: Vec<String> = (0..TOKENS).map(|i| token(i).id).collect();

    let mut next = 0usize;
    let mut pick = move || {
        next = (next + 7919) % TOKENS;
        next
    };
    c.bench_function("floor/token_read/vault", |b| {
        b.iter(|| {
            let id = &ids[pick()];
            runtime
                .block_on(store.token(black_box("proj_1"), id))
                .unwrap()
        })
    });
    let bare = Connection::open(&path).unwrap();
    bare.execute_batch(PRAGMAS).unwrap();
    c.bench_function("floor/token_read/bare_sqlite", |b| {
        b.iter(|| {
            let id = &ids[pick()];
            let mut statement = bare
                .prepare_cached(
                    "SELECT key_version, nonce, ciphertext FROM tokens WHERE id = ?1 AND project_id = ?2",
                )
                .unwrap();
            statement
                .query_row(params![id, "proj_1"], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, Vec<u8>>(1)?,
                        row.get::<_, Vec<u8>>(2)?,
                    ))
                })
                .unwrap()
        })
    });

    let record = row(&keyring, 1, chain::GENESIS.to_vec());
    c.bench_function("floor/audit/chain_hash", |b| {
        b.iter(|| chain::hash(&keyring, black_box(&record)))
    });
    // The request the benchmark sends (crates/bench): parsed into a tree of values (as the
    // handler does), into the fields it reads, and only checked.
    let request = serde_json::to_vec(&serde_json::json!({
        "token": ids[0],
        "proxy_url": "https://127.0.0.1:40123/v1/charges",
        "request_data": {"amount": 2000, "currency": "usd",
            "source": {"number": "${cardNumber}", "exp_month": "${expirationMonth}", "exp_year": "${expirationYear}"},
            "metadata": {"order_id": "A-1001"}},
        "http_headers": {"Authorization": "Bearer sk_test_bench"},
    }))
    .unwrap();
    c.bench_function("floor/request_json/values", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&request)).unwrap())
    });
    c.bench_function("floor/request_json/borrowed_fields", |b| {
        b.iter(|| serde_json::from_slice::<ProxyRequestFields>(black_box(&request)).unwrap())
    });
    // Any parse reads every byte once: checking the body is JSON and building nothing.
    c.bench_function("floor/request_json/scan", |b| {
        b.iter(|| serde_json::from_slice::<serde::de::IgnoredAny>(black_box(&request)).unwrap())
    });

    // The vault's way: the call queues its record for its chain's writer task and waits for
    // the commit. Alone, a group of one; calls in flight together, one group (or a few).
    let audit = runtime.block_on(async {
        let audit_store: Arc<dyn AuditStore> = store.clone();
        AuditLog::start(
            audit_store,
            keyring.clone(),
            "bench",
            cardvault_server::audit::ChainPerThread(false),
        )
        .await
        .unwrap()
    });
    let mut groups = 0usize;
    let mut checkpoint_now_and_then = || {
        groups += 1;
        if groups.is_multiple_of(GROUPS_A_CHECKPOINT) {
            bare.execute_batch("PRAGMA wal_checkpoint(PASSIVE)")
                .unwrap();
        }
    };
    let mut group = c.benchmark_group("floor/audit/vault");
    for calls in [1usize, 4, 16, 64] {
        group.throughput(criterion::Throughput::Elements(calls as u64));
        group.bench_function(format!("{calls}_calls_at_once"), |b| {
            b.iter_batched(
                || {
                    checkpoint_now_and_then();
                    (0..calls).map(entry).collect::<Vec<_>>()
                },
                |entries| {
                    runtime.block_on(async {
                        // Each call is a task of its own, as each request is in the vault.
                        let mut calls = tokio::task::JoinSet::new();
                        for e in entries {
                            let audit = audit.clone();
                            calls.spawn(async move { audit.record(e).await });
                        }
                        while let Some(done) = calls.join_next().await {
                            done.unwrap().unwrap();
                        }
                    })
                },
                BatchSize::NumIterations(GROUPS_A_CHECKPOINT as u64),
            )
        });
    }
    group.finish();

    // SQLite's floor: the same rows in one transaction, in statements of at most 16 rows as
    // the vault writes them, on the benchmark's own connection with the serving connections'
    // settings.
    let mut group = c.benchmark_group("floor/audit/bare_sqlite");
    for rows in [1usize, 4, 16, 64] {
        let per_statement = rows.min(16);
        let sql = format!(
            "INSERT INTO audit_log (chain, seq, at_ms, request_id, project_id, application_id, action, outcome, token, detail, prev_hash, hash) VALUES {}",
            vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; per_statement].join(", ")
        );
        let mut seq = 1_000_000_000i64 * rows as i64;
        group.throughput(criterion::Throughput::Elements(rows as u64));
        group.bench_function(format!("{rows}_rows_a_commit"), |b| {
            b.iter_batched(
                || {
                    checkpoint_now_and_then();
                    (0..rows)
                        .map(|_| {
                            seq += 1;
                            row(&keyring, seq, vec![0; 32])
                        })
                        .collect::<Vec<_>>()
                },
                |group_rows| {
                    bare.execute_batch("BEGIN IMMEDIATE").unwrap();
                    let mut statement = bare.prepare_cached(&sql).unwrap();
                    for chunk in group_rows.chunks(per_statement) {
                        let mut values: Vec<&dyn rusqlite::ToSql> =
                            Vec::with_capacity(per_statement * 12);
                        for r in chunk {
                            values.extend_from_slice(&[
                                &r.chain,
                                &r.seq,
                                &r.at_ms,
                                &r.request_id,
                                &r.project_id,
                                &r.application_id,
                                &r.action,
                                &r.outcome,
                                &r.token,
                                &r.detail,
                                &r.prev_hash,
                                &r.hash,
                            ]);
                        }
                        statement.execute(values.as_slice()).unwrap();
                    }
                    drop(statement);
                    bare.execute_batch("COMMIT").unwrap();
                },
                BatchSize::NumIterations(GROUPS_A_CHECKPOINT as u64),
            )
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = floors
}
criterion_main!(benches);
