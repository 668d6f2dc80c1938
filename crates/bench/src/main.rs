//! `cardvault-bench`: the vault measured side by side with its floor (the processor stub called
//! directly) and its ceiling (nginx proxying to the same stub), on loopback only.
//!
//! Run it with `bench/run.sh` (builds the release binary, installs nginx, then runs this).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod host_cpu;
mod instructions;
mod load;
mod oha;
mod procs;
mod stages;

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cardvault_testkit::Stub;
use cardvault_testkit::cardvault::Keys;
use clap::Parser;
use load::{BodyFn, Outcome, Target};

#[derive(Parser)]
#[command(about = "Load benchmark of cardvault (loopback only)")]
struct Args {
    /// Short runs (3 s per measurement) to check the benchmark works.
    #[arg(long)]
    quick: bool,
    /// Skip the PostgreSQL + Redis vault.
    #[arg(long)]
    skip_postgres: bool,
    /// Skip the SQLite vault (for comparisons of the PostgreSQL + Redis path alone).
    #[arg(long)]
    skip_sqlite: bool,
    /// Only the stored-token runs (skips the proxy and tokenize comparisons).
    #[arg(long)]
    only_tokens: bool,
    /// Skip nginx.
    #[arg(long)]
    skip_nginx: bool,
    /// Skip the vault's serving stack without its work (`cardvault-bare-forwarder`).
    #[arg(long)]
    skip_bare: bool,
    /// Stored-token counts for the latency-versus-size runs (comma list; 0 to skip).
    #[arg(long, value_delimiter = ',', default_value = "10000,1000000")]
    tokens: Vec<u64>,
    /// Live CVC sessions created (by tokenizing cards with a CVC) before the largest
    /// stored-token run, whose peak RSS then covers both.
    #[arg(long, default_value_t = 100_000)]
    cvc_sessions: u64,
    /// Connections of the closed-loop (saturation) runs; every run docs/benchmarks.md reports
    /// used 64 unless it says otherwise.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    connections: u64,
    /// nginx's worker processes (2, one per core, unless said).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    nginx_workers: u64,
    /// Processor stub delay in milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Fixed rates (requests per second) for the latency runs.
    #[arg(long, value_delimiter = ',', default_value = "500,1000,2000")]
    rates: Vec<u64>,
    /// Stored tokens for the run measuring the proxy during a data-key rotation (0 to skip).
    #[arg(long, default_value_t = 0)]
    rotation_tokens: u64,
    /// The independent load generator (default: `target/tools/bin/oha`, then `oha` on PATH;
    /// its row is left out when there is none).
    #[arg(long)]
    oha: Option<std::path::PathBuf>,
    /// Instead of the timed runs: count the instructions of this many proxy calls, made one
    /// after another, each server (nginx, the stack alone, the vault on SQLite + memory and on
    /// PostgreSQL + Redis, less those skipped) served under callgrind (valgrind's).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    instructions: Option<u64>,
}

/// The row of `cardvault-bare-forwarder`: what the vault's stack costs when its own work costs
/// nothing.
const BARE_STACK: &str = "vault's stack, no vault work (bare forwarder)";
const POSTGRES_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Connections of the closed-loop runs besides the measured saturation (loads, the rotation).
const CONNECTIONS: usize = 64;
/// The rate the added-latency targets are stated at.
const ONE_THOUSAND: u64 = 1000;

fn processor_body() -> bytes::Bytes {
    bytes::Bytes::from_static(
        br#"{"amount":2000,"currency":"usd","source":{"number":"4242424242424242","exp_month":"07","exp_year":"2031"},"metadata":{"order_id":"A-1001"}}"#,
    )
}

fn proxy_body(token: &str, url: &str) -> bytes::Bytes {
    serde_json::to_vec(&serde_json::json!({
        "token": token,
        "proxy_url": url,
        "request_data": {"amount": 2000, "currency": "usd",
            "source": {"number": "${cardNumber}", "exp_month": "${expirationMonth}", "exp_year": "${expirationYear}"},
            "metadata": {"order_id": "A-1001"}},
        "http_headers": {"Authorization": "Bearer sk_test_bench"},
    }))
    .expect("JSON")
    .into()
}

/// A Luhn-valid card number per index, so every tokenize is a new card.
fn card(n: u64) -> String {
    let body = format!("4{:014}", n % 100_000_000_000_000);
    (0..10)
        .map(|d| format!("{body}{d}"))
        .find(|c| cardvault_core::card::luhn_valid(c))
        .expect("a check digit")
}

struct Row {
    name: String,
    saturation: Outcome,
    rates: Vec<(u64, Outcome)>,
    cpu_per_1000: Option<f64>,
    peak_rss_mib: Option<f64>,
    /// The independent generator at 1,000 req/s (proxy targets only).
    oha: Option<oha::OhaRun>,
    /// A vault's own account of the 1,000 req/s run by stage, then the whole request (empty
    /// for the others).
    stages: Vec<stages::StageTime>,
    /// The host's CPU per call by process group: at saturation, and at 1,000 req/s.
    host_cpu: Option<(host_cpu::PerCall, host_cpu::PerCall)>,
}

struct Bench {
    args: Args,
    duration: Duration,
    oha: Option<std::path::PathBuf>,
    /// The processor stub's CA (oha trusts it for the direct target).
    ca_file: std::path::PathBuf,
}

impl Bench {
    /// The saturation runs' connections (`--connections`).
    fn connections(&self) -> usize {
        usize::try_from(self.args.connections).unwrap_or(CONNECTIONS)
    }

    async fn measure(
        &self,
        name: &str,
        client: &reqwest::Client,
        target: &Target,
        bodies: Option<BodyFn>,
        server: Option<&procs::Server>,
    ) -> Row {
        eprintln!("-- {name}");
        // Warm up connections and caches.
        let _ = load::saturate(
            client,
            target,
            bodies.clone(),
            self.connections(),
            Duration::from_secs(1),
        )
        .await;
        let server_pids = server.map(procs::Server::pids).unwrap_or_default();
        let host_before = host_cpu::Snapshot::take(&server_pids);
        let saturation = load::saturate(
            client,
            target,
            bodies.clone(),
            self.connections(),
            self.duration,
        )
        .await;
        let host_saturation = host_cpu::PerCall::between(
            &host_before,
            &host_cpu::Snapshot::take(&server_pids),
            saturation.completed,
            saturation.elapsed.as_secs_f64(),
        );
        let mut host_at_1000 = None;
        eprintln!(
            "   saturation {:.0} req/s ({} errors)",
            saturation.throughput(),
            saturation.errors
        );
        let mut rates = Vec::new();
        let mut cpu_per_1000 = None;
        let mut stages = Vec::new();
        for &rate in &self.args.rates {
            let cpu_before = server.map(procs::Server::cpu_seconds);
            let scrape_before = match server {
                Some(server) if rate == ONE_THOUSAND => {
                    stages::Scrape::take(client, &server.url).await
                }
                _ => None,
            };
            let host_before = host_cpu::Snapshot::take(&server_pids);
            let outcome =
                load::fixed_rate(client, target, bodies.clone(), rate, self.duration).await;
            if rate == ONE_THOUSAND {
                host_at_1000 = Some(host_cpu::PerCall::between(
                    &host_before,
                    &host_cpu::Snapshot::take(&server_pids),
                    outcome.completed,
                    outcome.elapsed.as_secs_f64(),
                ));
            }
            if let (Some(before), Some(server)) = (&scrape_before, server)
                && let Some(after) = stages::Scrape::take(client, &server.url).await
            {
                let route = reqwest::Url::parse(&target.url).expect("a URL");
                stages = stages::between(before, &after, route.path());
            }
            if let (true, Some(before), Some(server)) =
                (rate == 1000 || cpu_per_1000.is_none(), cpu_before, server)
            {
                let used = server.cpu_seconds() - before;
                cpu_per_1000 = Some(used / outcome.completed.max(1) as f64 * 1000.0);
            }
            eprintln!(
                "   {rate} req/s: p50 {:.3} ms p99 {:.3} ms ({} errors)",
                outcome.ms(0.5),
                outcome.ms(0.99),
                outcome.errors
            );
            rates.push((rate, outcome));
        }
        // The same request every time (oha sends one body): the proxy targets, not tokenize.
        let oha = match (&self.oha, &bodies) {
            (Some(oha), None) => {
                let run = oha::run(oha, target, &self.ca_file, ONE_THOUSAND, self.duration);
                if let Some(run) = &run {
                    eprintln!(
                        "   oha at {ONE_THOUSAND} req/s: p50 {:.3} ms p99 {:.3} ms p99.9 {:.3} ms ({} failed)",
                        run.p50, run.p99, run.p999, run.failed
                    );
                }
                run
            }
            _ => None,
        };
        Row {
            name: name.to_owned(),
            saturation,
            rates,
            cpu_per_1000,
            peak_rss_mib: server.map(procs::Server::peak_rss_mib),
            oha,
            stages,
            host_cpu: host_at_1000.map(|at_1000| (host_saturation, at_1000)),
        }
    }
}

impl Bench {
    /// The proxy and tokenize measurements of one vault on the given backend.
    async fn measure_vault(
        &self,
        stub: &Stub,
        client: &reqwest::Client,
        proxy_label: &str,
        tokenize_label: &str,
        backend_env: &[(String, String)],
    ) -> (Row, Row) {
        let vault = start_vault(stub, backend_env);
        let token = tokenize_one(client, &vault).await;
        let target = proxy_target(&vault, proxy_body(&token, &stub.url("/v1/charges")));
        let proxy = self
            .measure(
                &format!("cardvault, {proxy_label}"),
                client,
                &target,
                None,
                Some(&vault.server),
            )
            .await;
        let (tok_target, bodies) = tokenize_target(&vault);
        let tokenize = self
            .measure(
                &format!("tokenize, {tokenize_label}"),
                client,
                &tok_target,
                Some(bodies),
                Some(&vault.server),
            )
            .await;
        (proxy, tokenize)
    }
}

/// A vault on its own data directory (and database, when `database_url` is set).
struct VaultUnderTest {
    server: procs::Server,
    keys: Keys,
    _dir: tempfile::TempDir,
}

fn start_vault(stub: &Stub, backend_env: &[(String, String)]) -> VaultUnderTest {
    start_vault_with(stub, backend_env, &[])
}

/// [`start_vault`], its `serve` run by `launcher` (see [`procs::serve_vault`]).
fn start_vault_with(
    stub: &Stub,
    backend_env: &[(String, String)],
    launcher: &[String],
) -> VaultUnderTest {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let mut env = backend_env.to_vec();
    env.push(("CARDVAULT_ALLOW_PRIVATE_DESTINATIONS".into(), "true".into()));
    env.push((
        "CARDVAULT_UPSTREAM_CA_FILE".into(),
        stub.ca_file.display().to_string(),
    ));
    // Rate limits stay on, so their cost is part of what is measured, but out of reach: the
    // benchmark drives one key far past the per-key defaults on purpose.
    // Metrics on, as in production: their cost is part of what is measured, and the stage
    // histograms say where a call's time goes.
    env.push((
        "CARDVAULT_METRICS_TOKEN".into(),
        stages::METRICS_TOKEN.into(),
    ));
    for budget in ["TOKENIZE", "PROXY"] {
        env.push((format!("CARDVAULT_RATE_LIMIT_{budget}"), "1000000/s".into()));
        env.push((
            format!("CARDVAULT_RATE_LIMIT_{budget}_BURST"),
            "1000000".into(),
        ));
    }
    let keys = procs::init_vault(&data_dir, &env);
    let server = procs::serve_vault(&data_dir, &env, launcher);
    VaultUnderTest {
        server,
        keys,
        _dir: dir,
    }
}

async fn tokenize_one(client: &reqwest::Client, vault: &VaultUnderTest) -> String {
    let resp: serde_json::Value = client
        .post(format!("{}/tokenize", vault.server.url))
        .header("X-API-Key", &vault.keys.api_key)
        .header("X-Pub-Key", &vault.keys.publishable_key)
        .json(&serde_json::json!({"type": "card", "data": {"cardNumber": "4242424242424242", "expirationMonth": "07", "expirationYear": "2031"}}))
        .send()
        .await
        .expect("tokenize")
        .json()
        .await
        .expect("tokenize JSON");
    resp["token"].as_str().expect("token").to_owned()
}

fn proxy_target(vault: &VaultUnderTest, body: bytes::Bytes) -> Target {
    Target {
        url: format!("{}/proxy/transaction", vault.server.url),
        body,
        headers: vec![
            ("X-API-Key".into(), vault.keys.api_key.clone()),
            ("Content-Type".into(), "application/json".into()),
        ],
    }
}

fn tokenize_target(vault: &VaultUnderTest) -> (Target, BodyFn) {
    tokenize_target_with(vault, false)
}

fn tokenize_target_with(vault: &VaultUnderTest, with_cvc: bool) -> (Target, BodyFn) {
    let target = Target {
        url: format!("{}/tokenize", vault.server.url),
        body: bytes::Bytes::new(),
        headers: vec![
            ("X-API-Key".into(), vault.keys.api_key.clone()),
            ("X-Pub-Key".into(), vault.keys.publishable_key.clone()),
            ("Content-Type".into(), "application/json".into()),
        ],
    };
    let seed = Instant::now().elapsed().as_nanos() as u64 ^ std::process::id() as u64;
    let bodies: BodyFn = Arc::new(move |n| {
        let mut data = serde_json::json!({"cardNumber": card(seed.wrapping_mul(1_000_003).wrapping_add(n)), "expirationMonth": "07", "expirationYear": "2031"});
        if with_cvc {
            data["cvv"] = serde_json::json!("123");
        }
        serde_json::to_vec(&serde_json::json!({"type": "card", "data": data}))
            .expect("JSON")
            .into()
    });
    (target, bodies)
}

/// A fresh PostgreSQL database and Redis key prefix for one vault, and the settings that point
/// it at them; the database is dropped with this.
struct PostgresBackend {
    database: String,
    env: Vec<(String, String)>,
}

impl PostgresBackend {
    fn create() -> Self {
        let database = format!("cardvault_bench_{}", std::process::id());
        psql(&format!("DROP DATABASE IF EXISTS {database}"));
        psql(&format!("CREATE DATABASE {database}"));
        let env = vec![
            (
                "CARDVAULT_DATABASE_URL".to_owned(),
                format!("postgres://postgres@127.0.0.1:5432/{database}"),
            ),
            (
                "CARDVAULT_REDIS_URL".to_owned(),
                "redis://127.0.0.1:6379/".to_owned(),
            ),
            (
                "CARDVAULT_REDIS_KEY_PREFIX".to_owned(),
                format!("cardvault-bench-{}:", std::process::id()),
            ),
        ];
        Self { database, env }
    }
}

impl Drop for PostgresBackend {
    fn drop(&mut self) {
        psql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.database
        ));
    }
}

fn psql(sql: &str) {
    let status = std::process::Command::new("psql")
        .args([POSTGRES_ADMIN, "-qc", sql])
        .status()
        .expect("psql");
    assert!(status.success(), "psql {sql}");
}

/// Fills a fresh SQLite vault with `count` tokens and returns a sample of their ids.
async fn bulk_load(data_dir: &Path, project_id: &str, count: u64) -> Vec<String> {
    use cardvault_core::card::{Expiry, Pan};
    use cardvault_server::store::{Database, TokenKind, TokenRecord};
    use cardvault_server::tokens::{Holder, TokenData};
    let store =
        cardvault_server::open_store(&Database::Sqlite(data_dir.join("cardvault.db")), false)
            .await
            .expect("store");
    let master = cardvault_server::crypto::MasterKey::load(data_dir).expect("master key");
    let keyring = cardvault_server::load_keyring(store.as_ref(), std::sync::Arc::new(master))
        .await
        .expect("keyring");
    let data = TokenData::Card {
        pan: Pan::parse("4242424242424242").expect("a valid card number"),
        expiry: Expiry::from_stored("07".into(), "2031".into()),
        holder: Holder::default(),
    };
    let mut sample = Vec::new();
    let started = Instant::now();
    let batch = 20_000u64;
    let mut loaded = 0u64;
    while loaded < count {
        let n = batch.min(count - loaded);
        let records: Vec<TokenRecord> = (0..n)
            .map(|_| {
                let id = format!("tok_{}", keyring.random_hex(16).expect("random"));
                TokenRecord {
                    sealed: data.seal(&keyring, project_id, &id).expect("seal"),
                    id,
                    project_id: project_id.to_owned(),
                    kind: TokenKind::Card,
                    fingerprint: None,
                    bin: Some("424242".into()),
                    last4: "4242".into(),
                    brand: Some("visa".into()),
                    created_at: cardvault_server::clock::now_unix(),
                    expires_at: None,
                }
            })
            .collect();
        sample.extend(
            records
                .iter()
                .step_by(((count / 10_000).max(1)) as usize)
                .map(|r| r.id.clone()),
        );
        insert_with_retries(store.as_ref(), &records).await;
        loaded += n;
    }
    eprintln!(
        "   loaded {count} tokens in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    sample
}

/// A batch of the bulk load, inserted again after a busy database: another connection (the
/// likeliest, the vault's truncating checkpoint of the load's log, which holds the write lock
/// through its sync) can hold the lock longer than a writer's 5-s wait on a slow disk, and a
/// batch is all or none, so a retry stores it once.
async fn insert_with_retries(
    store: &dyn cardvault_server::store::Store,
    records: &[cardvault_server::store::TokenRecord],
) {
    const ATTEMPTS: u32 = 5;
    let mut attempt = 1;
    let inserted = loop {
        match store.insert_tokens(records).await {
            Err(cardvault_server::store::StoreError::Unavailable(e)) if attempt < ATTEMPTS => {
                eprintln!("   a batch met a busy database ({e}); inserting it again");
                attempt += 1;
            }
            done => break done,
        }
    };
    inserted.expect("bulk insert");
}

/// Writes every dirty page on the host to disk (`sync`), so that a measurement right after a
/// bulk load times the lookups, not the disk's write-back of the load (gigabytes written at
/// 10 M tokens).
fn settle_disk() {
    let started = Instant::now();
    let synced = std::process::Command::new("sync").status();
    eprintln!(
        "   dirty pages written back ({}) in {:.1} s",
        match synced {
            Ok(status) if status.success() => "sync",
            _ => "sync failed",
        },
        started.elapsed().as_secs_f64()
    );
}

fn latency_cells(row: &Row, rate: u64) -> String {
    row.rates
        .iter()
        .find(|(r, _)| *r == rate)
        .map(|(_, o)| {
            format!(
                "{:.2} / {:.2} / {:.2} / {:.2}",
                o.ms(0.5),
                o.ms(0.9),
                o.ms(0.99),
                o.ms(0.999)
            )
        })
        .unwrap_or_default()
}

fn table(rows: &[Row], rates: &[u64]) -> String {
    let mut out = String::new();
    let _ = write!(out, "| target | saturation (req/s) |");
    for r in rates {
        let _ = write!(out, " {r} req/s p50 / p90 / p99 / p99.9 (ms) |");
    }
    let _ = writeln!(out, " CPU s per 1,000 req | peak RSS (MiB) |");
    let _ = write!(out, "|---|---:|");
    for _ in rates {
        let _ = write!(out, "---|");
    }
    let _ = writeln!(out, "---:|---:|");
    for row in rows {
        let _ = write!(out, "| {} | {:.0} |", row.name, row.saturation.throughput());
        for r in rates {
            let _ = write!(out, " {} |", latency_cells(row, *r));
        }
        let cpu = row
            .cpu_per_1000
            .map_or_else(|| "–".to_owned(), |c| format!("{c:.3}"));
        let rss = row
            .peak_rss_mib
            .map_or_else(|| "–".to_owned(), |m| format!("{m:.0}"));
        let _ = writeln!(out, " {cpu} | {rss} |");
    }
    out
}

/// Each vault's mean µs per call by stage at 1,000 req/s, as its own `/metrics` timed them, and
/// its CPU per call.
fn stage_table(rows: &[Row]) -> String {
    let vaults: Vec<&Row> = rows.iter().filter(|r| !r.stages.is_empty()).collect();
    let mut out = String::new();
    if vaults.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "\n### Where a proxy call's time goes at {ONE_THOUSAND} req/s (mean µs per call, the vault's own /metrics)\n"
    );
    let _ = write!(out, "| stage |");
    for row in &vaults {
        let _ = write!(out, " {} |", row.name);
    }
    let _ = write!(out, "\n|---|");
    for _ in &vaults {
        let _ = write!(out, "---:|");
    }
    let _ = writeln!(out);
    let mut names: Vec<&str> = stages::names().to_vec();
    names.extend([
        "outside the stages (HTTP, parse, middleware, logging)",
        "request",
    ]);
    for name in names {
        let _ = write!(out, "| {name} |");
        for row in &vaults {
            let find = |n: &str| row.stages.iter().find(|s| s.name == n).map(|s| s.mean_us);
            let value = if name.starts_with("outside") {
                find("request").map(|total| {
                    total
                        - row
                            .stages
                            .iter()
                            .filter(|s| s.name != "request")
                            .map(|s| s.mean_us)
                            .sum::<f64>()
                })
            } else {
                find(name)
            };
            let _ = write!(
                out,
                " {} |",
                value.map_or_else(|| "–".to_owned(), |us| format!("{us:.0}"))
            );
        }
        let _ = writeln!(out);
    }
    let _ = write!(out, "| server CPU per call |");
    for row in &vaults {
        let _ = write!(
            out,
            " {} |",
            row.cpu_per_1000
                .map_or_else(|| "–".to_owned(), |s| format!("{:.0}", s * 1000.0))
        );
    }
    let _ = writeln!(out);
    // The tail: which stages the slowest calls spent their time in.
    let _ = write!(
        out,
        "| calls over {} ms: by our generator; by the vault's own timing, the request then each stage that had any |",
        stages::SLOW_BOUND_MICROS as f64 / 1e3
    );
    for row in &vaults {
        let _ = write!(out, " {} |", slow_calls(row));
    }
    let _ = writeln!(out);
    out
}

/// `ours 15; the vault 12 of 10,000: upstream 5, audit 3`: what the generator saw at 1,000
/// req/s, then the request's count by the vault and each stage's.
fn slow_calls(row: &Row) -> String {
    let stages = &row.stages;
    let Some(request) = stages.iter().find(|s| s.name == "request") else {
        return "–".to_owned();
    };
    let ours = row
        .rates
        .iter()
        .find(|(rate, _)| *rate == ONE_THOUSAND)
        .map_or_else(
            || "–".to_owned(),
            |(_, outcome)| {
                let latency = &outcome.latency;
                let within = latency.count_between(0, stages::SLOW_BOUND_MICROS);
                (latency.len() - within).to_string()
            },
        );
    let by_stage: Vec<String> = stages
        .iter()
        .filter(|s| s.name != "request" && s.slow_calls > 0)
        .map(|s| format!("{} {}", s.name, s.slow_calls))
        .collect();
    let mut text = format!(
        "ours {ours}; the vault {} of {}",
        request.slow_calls, request.calls
    );
    if !by_stage.is_empty() {
        text = format!("{text}: {}", by_stage.join(", "));
    }
    text
}

/// Where the host's CPU went per call, by process, at saturation and at 1,000 req/s.
fn host_cpu_table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n### Where the host's CPU goes (CPU ms per call, by process, from /proc)\n"
    );
    let _ = write!(out, "| target | load |");
    for group in host_cpu::GROUPS {
        let _ = write!(out, " {group} |");
    }
    let _ = writeln!(out, " other | host (cores busy) |");
    let _ = writeln!(
        out,
        "|---|---|{}---:|---:|",
        "---:|".repeat(host_cpu::GROUPS.len())
    );
    for row in rows {
        let Some((saturation, at_1000)) = &row.host_cpu else {
            continue;
        };
        for (load, split) in [("saturation", saturation), ("1,000 req/s", at_1000)] {
            let _ = write!(out, "| {} | {load} |", row.name);
            split.cells(&mut out);
            let _ = writeln!(out);
        }
    }
    out
}

/// Both generators' latency at 1,000 req/s side by side, and each one's added latency over the
/// direct call (the floor) by quantile.
fn oha_table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n### The same targets at {ONE_THOUSAND} req/s, two generators (ms: p50 / p99 / p99.9)\n"
    );
    let _ = writeln!(
        out,
        "oha: open loop, {} connections, latency from when each request was due (`--latency-correction`).\n",
        oha::CONNECTIONS
    );
    let _ = writeln!(
        out,
        "| target | oha | oha, added over direct | this repository's generator | its added over direct | oha failed |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---:|");
    let ours = |row: &Row| {
        row.rates
            .iter()
            .find(|(r, _)| *r == ONE_THOUSAND)
            .map(|(_, o)| [o.ms(0.5), o.ms(0.99), o.ms(0.999)])
    };
    let theirs = |row: &Row| row.oha.as_ref().map(|o| [o.p50, o.p99, o.p999]);
    let cell = |q: Option<[f64; 3]>| {
        q.map_or_else(
            || "–".to_owned(),
            |[a, b, c]| format!("{a:.2} / {b:.2} / {c:.2}"),
        )
    };
    let added = |q: Option<[f64; 3]>, floor: Option<[f64; 3]>| match (q, floor) {
        (Some(q), Some(f)) => format!(
            "{:+.2} / {:+.2} / {:+.2}",
            q[0] - f[0],
            q[1] - f[1],
            q[2] - f[2]
        ),
        _ => "–".to_owned(),
    };
    let direct = rows.first();
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            row.name,
            cell(theirs(row)),
            added(theirs(row), direct.and_then(theirs)),
            cell(ours(row)),
            added(ours(row), direct.and_then(ours)),
            row.oha.as_ref().map_or_else(
                || "–".to_owned(),
                |o| format!("{} ({:.0} req/s)", o.failed, o.requests_per_sec)
            )
        );
    }
    out
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let duration = Duration::from_secs(if args.quick { 3 } else { 10 });
    let stub = Stub::start_lean(Duration::from_millis(args.delay_ms));
    if let Some(calls) = args.instructions {
        instructions::run(
            &stub,
            calls,
            instructions::Servers {
                nginx: !args.skip_nginx,
                bare: !args.skip_bare,
                sqlite: !args.skip_sqlite,
                postgres: !args.skip_postgres,
            },
        )
        .await;
        return;
    }
    let oha = oha::find(args.oha.as_deref());
    if oha.is_none() {
        eprintln!(
            "oha not found (bench/run.sh installs it): the independent generator's row is left out"
        );
    }
    let bench = Bench {
        duration,
        args,
        oha,
        ca_file: stub.ca_file.clone(),
    };
    let direct_client = load::client(Some(&stub.ca_file));
    let client = load::client(None);
    let mut proxy_rows = Vec::new();
    let mut tokenize_rows = Vec::new();

    if !bench.args.only_tokens {
        let direct = Target {
            url: stub.url("/v1/charges"),
            body: processor_body(),
            headers: vec![("Content-Type".into(), "application/json".into())],
        };
        proxy_rows.push(
            bench
                .measure(
                    "processor stub, direct (floor)",
                    &direct_client,
                    &direct,
                    None,
                    None,
                )
                .await,
        );

        let nginx_dir = tempfile::tempdir().expect("tempdir");
        if !bench.args.skip_nginx {
            let nginx = procs::nginx(
                nginx_dir.path(),
                stub.addr.port(),
                &stub.ca_file,
                &[],
                bench.args.nginx_workers,
            );
            let target = Target {
                url: format!("{}/v1/charges", nginx.url),
                body: processor_body(),
                headers: direct.headers.clone(),
            };
            let row = bench
                .measure(
                    "nginx proxy_pass (ceiling)",
                    &client,
                    &target,
                    None,
                    Some(&nginx),
                )
                .await;
            if row.saturation.errors > 0 {
                let log =
                    std::fs::read_to_string(nginx_dir.path().join("error.log")).unwrap_or_default();
                eprintln!(
                    "nginx errors:\n{}",
                    log.lines().rev().take(5).collect::<Vec<_>>().join("\n")
                );
            }
            proxy_rows.push(row);
        }

        if !bench.args.skip_bare {
            let forwarder = procs::bare_forwarder(&stub.url("/v1/charges"), &stub.ca_file, &[]);
            let target = Target {
                url: format!("{}/v1/charges", forwarder.url),
                body: processor_body(),
                headers: direct.headers.clone(),
            };
            proxy_rows.push(
                bench
                    .measure(BARE_STACK, &client, &target, None, Some(&forwarder))
                    .await,
            );
        }

        if !bench.args.skip_sqlite {
            let (proxy, tokenize) = bench
                .measure_vault(&stub, &client, "SQLite + memory", "SQLite", &[])
                .await;
            proxy_rows.push(proxy);
            tokenize_rows.push(tokenize);
        }

        if !bench.args.skip_postgres {
            let backend = PostgresBackend::create();
            let (proxy, tokenize) = bench
                .measure_vault(
                    &stub,
                    &client,
                    "PostgreSQL + Redis",
                    "PostgreSQL",
                    &backend.env,
                )
                .await;
            proxy_rows.push(proxy);
            tokenize_rows.push(tokenize);
        }
    }

    let mut size_rows = Vec::new();
    let largest = bench.args.tokens.iter().copied().max().unwrap_or(0);
    for &count in bench.args.tokens.iter().filter(|c| **c > 0) {
        eprintln!("-- {count} stored tokens");
        let vault = start_vault(
            &stub,
            &[("CARDVAULT_CVC_TTL_SECONDS".to_owned(), "3600".to_owned())],
        );
        let data_dir = vault._dir.path().join("data");
        let sample = bulk_load(&data_dir, &vault.keys.project_id, count).await;
        let mut sessions = 0;
        if count == largest && bench.args.cvc_sessions > 0 {
            let (target, bodies) = tokenize_target_with(&vault, true);
            sessions = load::count(
                &client,
                &target,
                bodies,
                CONNECTIONS,
                bench.args.cvc_sessions,
            )
            .await;
            eprintln!("   {sessions} live CVC sessions created");
        }
        settle_disk();
        let url = stub.url("/v1/charges");
        let bodies: BodyFn =
            Arc::new(move |n| proxy_body(&sample[(n as usize * 7919) % sample.len()], &url));
        let target = proxy_target(&vault, bytes::Bytes::new());
        // Warmed up like the other targets: the first calls open the processor connections,
        // and the first checkpoints copy the loaded tokens into the database file.
        let _ = load::fixed_rate(
            &client,
            &target,
            Some(bodies.clone()),
            1000,
            Duration::from_secs(2),
        )
        .await;
        let outcome = load::fixed_rate(&client, &target, Some(bodies), 1000, bench.duration).await;
        eprintln!(
            "   1000 req/s: p50 {:.3} ms p99 {:.3} ms ({} errors)",
            outcome.ms(0.5),
            outcome.ms(0.99),
            outcome.errors
        );
        let rss = vault.server.peak_rss_mib();
        size_rows.push((count, sessions, outcome, rss));
    }

    let rates = bench.args.rates.clone();
    println!(
        "\n## Proxy: POST /proxy/transaction (JSON mode, Stripe-like body) vs the same body sent directly and through nginx\n"
    );
    println!("{}", table(&proxy_rows, &rates));
    if let Some(direct) = proxy_rows.first() {
        println!("Added latency (target p50 minus direct p50, ms):\n");
        for row in &proxy_rows[1..] {
            let added: Vec<String> = rates
                .iter()
                .filter_map(|r| {
                    let d = direct.rates.iter().find(|(x, _)| x == r)?.1.ms(0.5);
                    let t = row.rates.iter().find(|(x, _)| x == r)?.1.ms(0.5);
                    let d99 = direct.rates.iter().find(|(x, _)| x == r)?.1.ms(0.99);
                    let t99 = row.rates.iter().find(|(x, _)| x == r)?.1.ms(0.99);
                    Some(format!(
                        "{r} req/s: p50 +{:.2}, p99 +{:.2}",
                        t - d,
                        t99 - d99
                    ))
                })
                .collect();
            println!("- {}: {}", row.name, added.join("; "));
        }
        if let Some(nginx) = proxy_rows.iter().find(|r| r.name.starts_with("nginx")) {
            for row in proxy_rows
                .iter()
                .filter(|r| r.name.starts_with("cardvault") || r.name == BARE_STACK)
            {
                println!(
                    "- {} saturation = {:.0} % of nginx",
                    row.name,
                    100.0 * row.saturation.throughput() / nginx.saturation.throughput()
                );
            }
        }
    }
    if proxy_rows.iter().any(|r| r.oha.is_some()) {
        println!("{}", oha_table(&proxy_rows));
    }
    println!("{}", stage_table(&proxy_rows));
    println!("{}", host_cpu_table(&proxy_rows));
    println!("\n## Tokenize: POST /tokenize, a new card each time\n");
    println!("{}", table(&tokenize_rows, &rates));
    println!("{}", host_cpu_table(&tokenize_rows));
    if !size_rows.is_empty() {
        println!(
            "\n## Proxy latency against the number of stored tokens (SQLite, random tokens, 1000 req/s)\n"
        );
        println!(
            "| stored tokens | live CVC sessions | p50 (ms) | p90 (ms) | p99 (ms) | p99.9 (ms) | peak RSS (MiB) |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        for (count, sessions, o, rss) in &size_rows {
            println!(
                "| {count} | {sessions} | {:.2} | {:.2} | {:.2} | {:.2} | {rss:.0} |",
                o.ms(0.5),
                o.ms(0.9),
                o.ms(0.99),
                o.ms(0.999)
            );
        }
    }

    if bench.args.rotation_tokens > 0 {
        rotation_run(&bench, &stub, &client, bench.args.rotation_tokens).await;
    }
}

/// Proxy throughput before, during and after `cardvault keys rotate` reseals `count` tokens.
async fn rotation_run(bench: &Bench, stub: &Stub, client: &reqwest::Client, count: u64) {
    const CACHE_TTL_MS: &str = "1000";
    eprintln!("-- rotation of {count} tokens");
    let vault = start_vault(
        stub,
        &[("CARDVAULT_CACHE_TTL_MS".to_owned(), CACHE_TTL_MS.to_owned())],
    );
    let data_dir = vault._dir.path().join("data");
    let sample = bulk_load(&data_dir, &vault.keys.project_id, count).await;
    let url = stub.url("/v1/charges");
    let bodies: BodyFn =
        Arc::new(move |n| proxy_body(&sample[(n as usize * 7919) % sample.len()], &url));
    let target = proxy_target(&vault, bytes::Bytes::new());
    let before = load::saturate(
        client,
        &target,
        Some(bodies.clone()),
        CONNECTIONS,
        bench.duration,
    )
    .await;

    let mut rotation = std::process::Command::new(cardvault_testkit::cardvault::release_binary())
        .args([
            "keys",
            "rotate",
            "--json",
            "--cache-ttl-ms",
            CACHE_TTL_MS,
            "--data-dir",
        ])
        .arg(&data_dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("cardvault keys rotate");
    let started = Instant::now();
    let mut during = Vec::new();
    while rotation.try_wait().expect("rotation status").is_none() {
        during.push(
            load::saturate(
                client,
                &target,
                Some(bodies.clone()),
                CONNECTIONS,
                Duration::from_secs(5),
            )
            .await,
        );
    }
    let took = started.elapsed().as_secs_f64();
    let output = rotation.wait_with_output().expect("rotation output");
    assert!(output.status.success(), "the rotation failed");
    let done: serde_json::Value = String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .expect("the rotation's last JSON line");
    let after = load::saturate(client, &target, Some(bodies), CONNECTIONS, bench.duration).await;

    let completed: u64 = during.iter().map(|o| o.completed).sum();
    let errors: u64 = during.iter().map(|o| o.errors).sum();
    let seconds: f64 = during.iter().map(|o| o.elapsed.as_secs_f64()).sum();
    println!("\n## Proxy throughput during a data-key rotation (SQLite, random tokens)\n");
    println!(
        "| stored tokens | before (req/s) | during (req/s) | errors during | rotation (s) | resealed/s | after (req/s) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {count} | {:.0} | {:.0} | {errors} | {took:.1} | {:.0} | {:.0} |",
        before.throughput(),
        completed as f64 / seconds.max(f64::EPSILON),
        done["resealed"].as_f64().unwrap_or(0.0) / took,
        after.throughput()
    );
}
