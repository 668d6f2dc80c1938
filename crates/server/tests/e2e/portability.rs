//! `cardvault import` and `cardvault export`: another vault's (encrypted) export taken in
//! while the vault serves, refused records reported by line, resumption after a kill, and
//! the cards given back out to a second vault. No card number may reach any file.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pgp::composed::{
    EncryptionCaps, KeyType, MessageBuilder, SecretKeyParamsBuilder, SignedPublicKey,
    SignedSecretKey, SubkeyParamsBuilder,
};
use pgp::crypto::ecc_curve::ECCCurve;
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::types::CompressionAlgorithm;
use serde_json::{Value, json};
use sqlx::Row;

use crate::harness::*;

/// Records in the big import (the figure). The crates that do the heavy lifting in
/// it (SQLite, hashing, ciphers, compression) are built optimized in test builds too (see the
/// workspace's Cargo.toml); the release build's runs of 100,000 and 1,000,000 are in
/// docs/benchmarks.md.
const BIG: u64 = 100_000;
const PASSPHRASE: &str = "correct horse battery staple";

/// A fresh OpenPGP key pair (Ed25519 primary, Curve25519 encryption subkey), the private key
/// protected by `passphrase` (empty: none), both armored, in `dir`: (private, public) paths.
fn key_pair(dir: &Path, name: &str, passphrase: &str) -> (PathBuf, PathBuf) {
    let pw = (!passphrase.is_empty()).then(|| passphrase.to_owned());
    let mut sub = SubkeyParamsBuilder::default();
    sub.key_type(KeyType::ECDH(ECCCurve::Curve25519Legacy))
        .can_encrypt(EncryptionCaps::All)
        .passphrase(pw.clone());
    let mut params = SecretKeyParamsBuilder::default();
    params
        .key_type(KeyType::Ed25519Legacy)
        .can_certify(true)
        .can_sign(true)
        .primary_user_id(format!("{name} <{name}@example.com>"))
        .passphrase(pw)
        .subkeys(vec![sub.build().unwrap()]);
    let secret: SignedSecretKey = params
        .build()
        .unwrap()
        .generate(rand_pgp::thread_rng())
        .unwrap();
    let public = SignedPublicKey::from(secret.clone());
    let (private_path, public_path) = (
        dir.join(format!("{name}.sec.asc")),
        dir.join(format!("{name}.pub.asc")),
    );
    std::fs::write(
        &private_path,
        secret.to_armored_string(Default::default()).unwrap(),
    )
    .unwrap();
    std::fs::write(
        &public_path,
        public.to_armored_string(Default::default()).unwrap(),
    )
    .unwrap();
    (private_path, public_path)
}

/// Encrypts `plain` (held in memory only) to the public key at `public`, compressed as other
/// vaults' tools do, into `out`.
fn encrypt_to(public: &Path, plain: Vec<u8>, out: &Path) {
    let (key, _) = {
        use pgp::composed::Deserializable;
        SignedPublicKey::from_reader_single(std::fs::File::open(public).unwrap()).unwrap()
    };
    let mut rng = rand_pgp::thread_rng();
    let mut builder =
        MessageBuilder::from_bytes("", plain).seipd_v1(&mut rng, SymmetricKeyAlgorithm::AES256);
    builder.compression(CompressionAlgorithm::ZLIB);
    builder
        .encrypt_to_key(&mut rng, &key.public_subkeys[0])
        .unwrap();
    let file = std::fs::File::create(out).unwrap();
    builder.to_writer(&mut rng, file).unwrap();
}

/// A CSV of `n` distinct Visa cards in a common layout: `old_<i>` ids, `MM/YY` expiries.
fn cards_csv(n: u64) -> Vec<u8> {
    let mut csv = String::from("payment_method_token,card_number,expiry,full_name\n");
    for i in 0..n {
        csv.push_str(&format!("old_{i},{},07/31,Ada Lovelace\n", card_number(i)));
    }
    csv.into_bytes()
}

fn import_command(vault: &Vault, project: &str, input: &Path, extra: &[&str]) -> Command {
    let mut command = vault.cli();
    command
        .env("TMPDIR", temp_dir(vault))
        .args(["import", "--data-dir", vault.data_dir().to_str().unwrap()])
        .args(["--project", project, "--json"])
        .args(extra)
        .arg(input);
    command
}

/// The temp dir the CLI is given: inside the vault's test dir, so the scans for card numbers
/// cover any temp file a run leaves.
fn temp_dir(vault: &Vault) -> PathBuf {
    let dir = vault.dir.path().join("tmp");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs an import to its end; returns its `done` line.
fn import(vault: &Vault, project: &str, input: &Path, extra: &[&str]) -> Value {
    let out = import_command(vault, project, input, extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "import failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_output_clean(&out);
    let done: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(done["event"], "done", "{stdout}");
    done
}

/// A CLI run's output (progress, summary, errors) names no card or account number.
fn assert_output_clean(out: &std::process::Output) {
    let text = [out.stdout.as_slice(), out.stderr.as_slice()].concat();
    let text = String::from_utf8_lossy(&text);
    for secret in [
        VISA,
        MASTERCARD,
        AMEX,
        ACCOUNT,
        &card_number(0),
        &card_number(1),
    ] {
        assert!(
            !text.contains(secret),
            "the output holds a card number: {text}"
        );
    }
}

/// `old_id → token` from a mapping file (its header checked).
fn mapping(path: &Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("old_id,token"));
    let mut map = HashMap::new();
    for line in lines {
        let (old, token) = line.split_once(',').unwrap();
        assert!(token.starts_with("tok_"), "{line}");
        assert!(
            map.insert(old.to_owned(), token.to_owned()).is_none(),
            "{old} mapped twice"
        );
    }
    map
}

async fn count(vault: &Vault, sql: &str) -> i64 {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&mut vault.database().await)
        .await
        .unwrap()
        .get::<i64, _>(0)
}

/// The vault's `cards.*` audit records, oldest first: (action, detail).
fn card_records(vault: &Vault) -> Vec<(String, Value)> {
    let out = vault
        .cli()
        .args([
            "audit",
            "export",
            "--data-dir",
            vault.data_dir().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["action"].as_str().unwrap().starts_with("cards."))
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_owned(),
                r["detail"].clone(),
            )
        })
        .collect()
}

/// Proxies `token`; returns what the processor received for `${cardNumber}` (or another
/// placeholder).
async fn sent(vault: &Vault, stub: &Stub, token: &str, placeholder: &str) -> Value {
    let body = json!({"token": token, "proxy_url": stub.url("/charge"), "request_data": {"v": placeholder}});
    let (status, answer) = vault.proxy(&body).await;
    assert_eq!(status, 200, "{answer}");
    stub.last().json()["v"].clone()
}

/// No file under `dir` (database, its logs, mapping, reject report, the encrypted files)
/// holds any of `secrets`.
fn assert_no_file_holds(dir: &Path, secrets: &[String]) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let bytes = std::fs::read(&path).unwrap_or_default();
        for secret in secrets {
            assert!(
                memchr::memmem::find(&bytes, secret.as_bytes()).is_none(),
                "{} holds a card number",
                path.display()
            );
        }
    }
}

#[tokio::test]
async fn a_big_encrypted_csv_is_imported_completely() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let dir = tempfile::tempdir_in(vault.dir.path()).unwrap();
    let (private, public) = key_pair(dir.path(), "merchant", PASSPHRASE);
    let input = dir.path().join("cards.csv.gpg");
    encrypt_to(&public, cards_csv(BIG), &input);

    let started = std::time::Instant::now();
    let done = {
        let mut command = import_command(&vault, &vault.keys.project_id, &input, &[]);
        command
            .args(["--decrypt-key", private.to_str().unwrap()])
            .env("CARDVAULT_IMPORT_PASSPHRASE", PASSPHRASE);
        let out = command.output().unwrap();
        assert_output_clean(&out);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0], json!({"event": "checked", "total": BIG}));
        assert!(
            lines
                .iter()
                .any(|l| l["event"] == "progress" && l["done"] == BIG)
        );
        lines.last().unwrap().clone()
    };
    eprintln!(
        "imported {BIG} records in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(done["rows"], BIG);
    assert_eq!(done["imported"], BIG);
    assert_eq!(done["rejected"], 0);

    let map = mapping(&input.with_extension("gpg.mapping.csv"));
    assert_eq!(map.len() as u64, BIG);
    assert_eq!(
        map.values().collect::<HashSet<_>>().len() as u64,
        BIG,
        "every record has a token of its own"
    );
    assert_eq!(vault.token_count().await as u64, BIG);
    let rejects = std::fs::read_to_string(input.with_extension("gpg.rejects.csv")).unwrap();
    assert_eq!(rejects, "line,reason\n");

    // A sample of the tokens, proxied: the processor gets each record's own card.
    for i in [0, 1, BIG / 3, BIG / 2, BIG - 1] {
        let token = &map[&format!("old_{i}")];
        assert_eq!(
            sent(&vault, &stub, token, "${cardNumber}").await,
            card_number(i)
        );
        assert_eq!(sent(&vault, &stub, token, "${lastName}").await, "Lovelace");
        assert_eq!(
            sent(&vault, &stub, token, "${expirationYear4}").await,
            "2031"
        );
    }

    // Audited: its start (once the input is known intact), then the run with its counts.
    let records = card_records(&vault);
    assert_eq!(
        records.iter().map(|(a, _)| a.as_str()).collect::<Vec<_>>(),
        ["cards.import.started", "cards.import"]
    );
    assert_eq!(records[0].1, json!({"rows": BIG, "encrypted": true}));
    assert_eq!(records[1].1["imported"], BIG);
    assert_eq!(records[1].1["resumed"], false);

    let sample: Vec<String> = [0, 7, BIG / 2, BIG - 1]
        .iter()
        .map(|i| card_number(*i))
        .collect();
    assert_no_file_holds(vault.dir.path(), &sample);
}

#[tokio::test]
async fn bad_records_are_refused_by_line_and_reason_and_the_rest_imported() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let dir = tempfile::tempdir_in(vault.dir.path()).unwrap();
    let input = dir.path().join("mixed.csv");
    // The operator's own plain file: the one place card numbers are on disk in this test.
    let mut csv = b"id,type,number,exp_month,exp_year,routing_number,first_name\n".to_vec();
    let rows: [&[u8]; 12] = [
        b"a1,card,4242424242424242,07,2031,,Ada\n", // line 2: good
        b"a2,card,4242424242424241,07,2031,,Ada\n", // 3: bad Luhn
        b"a3,card,5555555555554444,01,2020,,Ada\n", // 4: expired
        b"a4,bank,12,,,110000000,Ada\n",            // 5: short account
        b"a5,card,378282246310005,07,2031\n",       // 6: a column missing
        b"a6,card,4242424242424242,07,2031,,Ad\xff\n", // 7: not UTF-8
        b",card,4242424242424242,07,2031,,Ada\n",   // 8: no id
        b"a1,card,5555555555554444,07,2031,,Ada\n", // 9: id seen before
        b"a9,card,5555555555554444,13,2031,,Ada\n", // 10: bad month
        b"a10,bank,000123456789,,,110000000,Ada\n", // 11: good bank account
        b"a11,card,,07,2031,,Ada\n",                // 12: no number
        b"a12,cheque,4242424242424242,07,2031,,Ada\n", // 13: unknown type
    ];
    for row in rows {
        csv.extend_from_slice(row);
    }
    std::fs::write(&input, csv).unwrap();
    let rejects = dir.path().join("rejects.csv");
    let done = import(
        &vault,
        &vault.keys.project_id,
        &input,
        &["--reject-file", rejects.to_str().unwrap()],
    );
    assert_eq!(done["rows"], 12);
    assert_eq!(done["imported"], 2);
    assert_eq!(done["rejected"], 10);
    assert_eq!(
        std::fs::read_to_string(&rejects).unwrap(),
        "line,reason\n\
         3,invalid_card_number\n\
         4,card_expired\n\
         5,invalid_field: account_number\n\
         6,missing_column\n\
         7,invalid_encoding\n\
         8,missing_field: id\n\
         9,duplicate_id\n\
         10,invalid_field: exp_month\n\
         12,missing_field: number\n\
         13,invalid_field: type\n"
    );
    let map = mapping(&input.with_extension("csv.mapping.csv"));
    assert_eq!(map.len(), 2);
    assert_eq!(sent(&vault, &stub, &map["a1"], "${cardNumber}").await, VISA);
    assert_eq!(
        sent(&vault, &stub, &map["a10"], "${accountNumber}").await,
        ACCOUNT
    );
    assert_eq!(
        sent(&vault, &stub, &map["a10"], "${routingNumber}").await,
        "110000000"
    );

    // JSON lines: a line that is no JSON object is refused too.
    let lines = dir.path().join("mixed.jsonl");
    std::fs::write(
        &lines,
        "{\"id\": \"j1\", \"number\": \"5555555555554444\", \"exp_month\": 7, \"exp_year\": 2031}\n\
         not json\n\
         \n\
         {\"id\": \"j2\", \"cardNumber\": \"5555555555554445\", \"expiry\": \"07/31\"}\n\
         {\"id\": \"j3\", \"number\": \"5555555555554444\", \"expiry\": \"07/31\", \"expires_at\": \"2020-01-01T00:00:00Z\"}\n\
         {\"id\": \"j4\", \"number\": \"5555555555554444\", \"expiry\": \"07/31\", \"allowed_destinations\": [\"https://api.stripe.com\"]}\n",
    )
    .unwrap();
    let done = import(
        &vault,
        &vault.keys.project_id,
        &lines,
        &["--format", "jsonl"],
    );
    assert_eq!(
        (done["imported"].as_u64(), done["rejected"].as_u64()),
        (Some(1), Some(4))
    );
    // A token's options are validated as /tokenize validates them: an expiry in the past, a
    // rule with a scheme.
    assert_eq!(
        std::fs::read_to_string(lines.with_extension("jsonl.rejects.csv")).unwrap(),
        "line,reason\n2,invalid_json\n4,invalid_card_number\n5,invalid_field: expires_at\n6,invalid_field: allowed_destinations\n"
    );

    // A header without a number column is refused before anything is read.
    let headless = dir.path().join("headless.csv");
    std::fs::write(&headless, "id,cc\nx1,4242424242424242\n").unwrap();
    let out = import_command(&vault, &vault.keys.project_id, &headless, &[])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--map number=COLUMN"));
    // ... and imported with an explicit mapping (no expiry: refused by line).
    let done = import(
        &vault,
        &vault.keys.project_id,
        &headless,
        &["--map", "number=cc"],
    );
    assert_eq!(done["rejected"], 1);
    assert_eq!(
        std::fs::read_to_string(headless.with_extension("csv.rejects.csv")).unwrap(),
        "line,reason\n2,missing_field: exp_month\n"
    );
    // The reject reports and mapping files hold no card data.
    for report in [rejects, lines.with_extension("jsonl.rejects.csv")] {
        assert_no_file_holds(&report, &[VISA.into(), MASTERCARD.into(), AMEX.into()]);
    }
    assert_no_file_holds(
        &vault.data_dir(),
        &[VISA.into(), MASTERCARD.into(), ACCOUNT.into()],
    );
}

#[tokio::test]
async fn a_killed_import_resumes_and_imports_every_record_exactly_once() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let dir = tempfile::tempdir_in(vault.dir.path()).unwrap();
    let (private, public) = key_pair(dir.path(), "resume", "");
    let input = dir.path().join("cards.csv.gpg");
    const N: u64 = 20_000;
    encrypt_to(&public, cards_csv(N), &input);
    let key = [
        "--decrypt-key",
        private.to_str().unwrap(),
        "--batch-size",
        "250",
    ];

    // Killed (SIGKILL) once the first batches are stored.
    let mut child = import_command(&vault, &vault.keys.project_id, &input, &key)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        if line["event"] == "progress" {
            assert!(
                line["done"].as_u64().unwrap() < N,
                "the import ended before the kill"
            );
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let stored = vault.token_count().await;
    assert!(
        stored > 0 && (stored as u64) < N,
        "{stored} stored before the kill"
    );
    assert_eq!(
        count(&vault, "SELECT count(*) FROM import_keys").await,
        stored,
        "every stored token has its key"
    );
    // The killed run left its start in the audit log, and no end.
    assert_eq!(
        card_records(&vault),
        vec![(
            "cards.import.started".to_owned(),
            json!({"rows": N, "encrypted": true})
        )]
    );

    // Resumed: the records stored before are found, the rest imported.
    let done = import(&vault, &vault.keys.project_id, &input, &key);
    assert_eq!(done["rows"], N);
    assert_eq!(done["already_imported"].as_i64(), Some(stored));
    assert_eq!(done["imported"].as_i64(), Some(N as i64 - stored));
    let records = card_records(&vault);
    assert_eq!(records.len(), 3);
    assert_eq!(
        (records[1].0.as_str(), records[2].0.as_str()),
        ("cards.import.started", "cards.import")
    );
    assert_eq!(records[2].1["resumed"], true);
    assert_eq!(records[2].1["already_imported"].as_i64(), Some(stored));
    assert_eq!(vault.token_count().await as u64, N);
    let map = mapping(&input.with_extension("gpg.mapping.csv"));
    assert_eq!(map.len() as u64, N);

    // Run again: nothing new.
    let again = import(&vault, &vault.keys.project_id, &input, &key);
    assert_eq!(
        (
            again["imported"].as_u64(),
            again["already_imported"].as_u64()
        ),
        (Some(0), Some(N))
    );
    assert_eq!(vault.token_count().await as u64, N);
    assert_eq!(mapping(&input.with_extension("gpg.mapping.csv")), map);
    for i in [0, N / 2, N - 1] {
        assert_eq!(
            sent(&vault, &stub, &map[&format!("old_{i}")], "${cardNumber}").await,
            card_number(i)
        );
    }
}

#[tokio::test]
async fn a_wrong_key_or_a_tampered_file_imports_nothing() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let dir = tempfile::tempdir_in(vault.dir.path()).unwrap();
    let (private, public) = key_pair(dir.path(), "intended", "");
    let (other, _) = key_pair(dir.path(), "other", "");
    let input = dir.path().join("cards.csv.gpg");
    encrypt_to(&public, cards_csv(5_000), &input);
    let before = vault.token_count().await;

    let refused = |args: &[&str], input: &Path| {
        let out = import_command(&vault, &vault.keys.project_id, input, args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert_output_clean(&out);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = refused(&["--decrypt-key", other.to_str().unwrap()], &input);
    assert!(stderr.contains("cannot decrypt the input"), "{stderr}");
    assert!(stderr.contains("nothing was imported"), "{stderr}");

    // One byte changed deep inside the ciphertext: caught by the integrity check, before any
    // record is stored (the first pass reads the whole file).
    let mut bytes = std::fs::read(&input).unwrap();
    let at = bytes.len() * 2 / 3;
    bytes[at] ^= 0x40;
    let tampered = dir.path().join("tampered.csv.gpg");
    std::fs::write(&tampered, &bytes).unwrap();
    let stderr = refused(&["--decrypt-key", private.to_str().unwrap()], &tampered);
    assert!(stderr.contains("nothing was imported"), "{stderr}");
    // Cut short: the same.
    let cut = dir.path().join("cut.csv.gpg");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let stderr = refused(&["--decrypt-key", private.to_str().unwrap()], &cut);
    assert!(stderr.contains("nothing was imported"), "{stderr}");
    // A passphrase-protected key with a wrong passphrase.
    let (locked, locked_public) = key_pair(dir.path(), "locked", PASSPHRASE);
    let for_locked = dir.path().join("locked.csv.gpg");
    encrypt_to(&locked_public, cards_csv(10), &for_locked);
    let wrong = dir.path().join("wrong-pass");
    std::fs::write(&wrong, "not it\n").unwrap();
    let stderr = refused(
        &[
            "--decrypt-key",
            locked.to_str().unwrap(),
            "--passphrase-file",
            wrong.to_str().unwrap(),
        ],
        &for_locked,
    );
    assert!(stderr.contains("cannot decrypt the input"), "{stderr}");

    assert_eq!(vault.token_count().await, before);
    assert_eq!(count(&vault, "SELECT count(*) FROM import_keys").await, 0);
    // A run refused before its first batch changed nothing worth a record.
    assert!(card_records(&vault).is_empty());
    // The right passphrase, from a file, works.
    let right = dir.path().join("right-pass");
    std::fs::write(&right, format!("{PASSPHRASE}\n")).unwrap();
    let done = import(
        &vault,
        &vault.keys.project_id,
        &for_locked,
        &[
            "--decrypt-key",
            locked.to_str().unwrap(),
            "--passphrase-file",
            right.to_str().unwrap(),
        ],
    );
    assert_eq!(done["imported"], 10);
}

#[tokio::test]
async fn an_export_imported_into_a_second_vault_gives_the_same_cards_new_tokens() {
    let stub = Stub::start().await;
    let first = Vault::start(&stub).await;
    let second = Vault::start(&stub).await;
    let dir = tempfile::tempdir_in(second.dir.path()).unwrap();
    let (private, public) = key_pair(dir.path(), "receiver", PASSPHRASE);

    let mut cards = HashMap::new();
    for (i, number) in [VISA, MASTERCARD, AMEX].iter().enumerate() {
        let body = first
            .tokenize(json!({"cardNumber": number, "expirationMonth": "7", "expirationYear": "2031", "firstName": HOLDER_FIRST, "lastName": format!("L{i}")}))
            .await;
        cards.insert(
            body["token"].as_str().unwrap().to_owned(),
            number.to_string(),
        );
    }
    for i in 0..50 {
        let number = card_number(i);
        cards.insert(first.token_in(&first.keys, &number).await, number);
    }
    // A token with a rule of its own on where it may be sent, and an expiry: both carried.
    let (status, ruled) = first
        .post(
            "/tokenize",
            &first.keys,
            &json!({"type": "card", "allowed_destinations": ["localhost/charge"],
                "expires_at": "2031-01-31T00:00:00Z",
                "data": {"cardNumber": card_number(500), "expirationMonth": "7", "expirationYear": "2031"}}),
        )
        .await;
    assert_eq!(status, 201, "{ruled}");
    let ruled = ruled["token"].as_str().unwrap().to_owned();
    cards.insert(ruled.clone(), card_number(500));
    let (status, bank) = first
        .post(
            "/tokenize",
            &first.keys,
            &json!({"type": "bank", "data": {"accountNumber": ACCOUNT, "routingNumber": "110000000"}}),
        )
        .await;
    assert_eq!(status, 201, "{bank}");
    let bank_token = bank["token"].as_str().unwrap().to_owned();
    // A deleted token is not exported.
    let deleted = first.token_in(&first.keys, &card_number(999)).await;
    let (status, body) =
        crate::tokens_lifecycle::delete_token(&first, &first.keys.api_key, &deleted).await;
    assert!((200..300).contains(&status), "{status} {body}");

    let output = dir.path().join("export.jsonl.gpg");
    let export = |extra: &[&str]| {
        first
            .cli()
            .env("TMPDIR", temp_dir(&first))
            .args(["export", "--data-dir", first.data_dir().to_str().unwrap()])
            .args(["--project", &first.keys.project_id])
            .args(["--recipient", public.to_str().unwrap()])
            .args(["--output", output.to_str().unwrap(), "--json"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = export(&[]);
    assert!(!out.status.success(), "an export needs its flag");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--i-understand-this-exports-card-data"));
    assert!(!output.exists());
    let out = export(&["--i-understand-this-exports-card-data"]);
    assert_output_clean(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(done["exported"], cards.len() as u64 + 1);

    let mut command = import_command(
        &second,
        &second.keys.project_id,
        &output,
        &["--format", "jsonl"],
    );
    command
        .args(["--decrypt-key", private.to_str().unwrap()])
        .env("CARDVAULT_IMPORT_PASSPHRASE", PASSPHRASE);
    let out = command.output().unwrap();
    assert_output_clean(&out);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let map = mapping(&output.with_extension("gpg.mapping.csv"));
    assert_eq!(map.len(), cards.len() + 1);
    for (old, number) in &cards {
        let new = &map[old];
        assert_ne!(new, old);
        assert_eq!(
            sent(&second, &stub, new, "${cardNumber}").await,
            number.as_str()
        );
    }
    let (old_visa, _) = cards.iter().find(|(_, n)| n.as_str() == VISA).unwrap();
    assert_eq!(
        sent(&second, &stub, &map[old_visa], "${firstName}").await,
        HOLDER_FIRST
    );
    assert_eq!(
        sent(&second, &stub, &map[&bank_token], "${accountNumber}").await,
        ACCOUNT
    );
    assert!(!map.contains_key(&deleted));
    // The rule and the expiry came along; a token with neither has neither.
    let meta = |token: &str| {
        let token = token.to_owned();
        let second = &second;
        async move {
            let (status, meta) =
                crate::tokens_lifecycle::get_token(second, &second.keys.api_key, &token).await;
            assert_eq!(status, 200, "{meta}");
            meta["data"].clone()
        }
    };
    let ruled_meta = meta(&map[&ruled]).await;
    assert_eq!(
        ruled_meta["allowed_destinations"],
        json!(["localhost/charge"])
    );
    assert_eq!(ruled_meta["expires_at"], "2031-01-31T00:00:00Z");
    let (status, answer) = second
        .proxy(&json!({"token": map[&ruled], "proxy_url": stub.url("/echo"), "request_data": {"n": "${cardNumber}"}}))
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("invalid_proxy_url")),
        "{answer}"
    );
    let free_meta = meta(&map[old_visa]).await;
    assert!(
        free_meta.get("allowed_destinations").is_none(),
        "{free_meta}"
    );
    assert_eq!(free_meta["expires_at"], Value::Null);

    // Audited on both sides; nothing in the clear anywhere.
    assert_eq!(
        card_records(&first),
        vec![(
            "cards.export".to_owned(),
            json!({"exported": cards.len() + 1})
        )]
    );
    let imported: Vec<String> = card_records(&second).into_iter().map(|(a, _)| a).collect();
    assert_eq!(imported, ["cards.import.started", "cards.import"]);
    let secrets: Vec<String> = cards
        .values()
        .cloned()
        .chain([ACCOUNT.to_owned()])
        .collect();
    assert_no_file_holds(second.dir.path(), &secrets);
    assert_no_file_holds(first.dir.path(), &secrets);
}

#[tokio::test]
async fn deduplication_maps_the_same_card_to_one_token() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let project = vault.create_project(&["--deduplicate"]);
    let held = vault.token_in(&project, VISA).await;
    // A token that has expired, which the sweeper (running at start, then once a minute) has
    // not erased yet: it still holds its card's fingerprint.
    let (status, expired) = vault
        .post(
            "/tokenize",
            &project,
            &json!({"type": "card", "ttl_seconds": 1,
                "data": {"cardNumber": AMEX, "expirationMonth": "7", "expirationYear": "2031"}}),
        )
        .await;
    assert_eq!(status, 201, "{expired}");
    let expired = expired["token"].as_str().unwrap().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let dir = tempfile::tempdir_in(vault.dir.path()).unwrap();
    let input = dir.path().join("dupes.csv");
    std::fs::write(
        &input,
        format!(
            "id,number,expiry,allowed_destinations,expires_at\nd1,{VISA},07/31,localhost/charge,2031-01-31T00:00:00Z\nd2,{MASTERCARD},07/31,,\nd3,{MASTERCARD},08/32,,\nd4,{},07/31,,\nd5,{AMEX},07/31,,\n",
            card_number(1)
        ),
    )
    .unwrap();
    let done = import(&vault, &project.project_id, &input, &[]);
    assert_eq!(
        (done["imported"].as_u64(), done["deduplicated"].as_u64()),
        (Some(3), Some(2))
    );
    // The expired token was erased on the way, as `/tokenize` erases it, and the card has a
    // new token.
    let map = mapping(&input.with_extension("csv.mapping.csv"));
    assert_ne!(map["d5"], expired);
    assert_eq!(
        count(
            &vault,
            &format!("SELECT count(*) FROM tokens WHERE id = '{expired}' AND deleted_at IS NOT NULL AND fingerprint IS NULL")
        )
        .await,
        1
    );
    assert_eq!(vault.token_in(&project, AMEX).await, map["d5"]);
    assert_eq!(map["d1"], held);
    assert_eq!(map["d2"], map["d3"]);
    assert_ne!(map["d2"], map["d4"]);
    // A record of a card the project held refreshed its token as `/tokenize` does: d1's rule
    // is the held token's now (its expiry the later of the two), and a later record of the same card in the file
    // (d3, a new expiry date) replaced the data of the token d2 created.
    let meta = |token: String| {
        let (vault, key) = (&vault, project.api_key.clone());
        async move {
            let (status, meta) = crate::tokens_lifecycle::get_token(vault, &key, &token).await;
            assert_eq!(status, 200, "{meta}");
            meta["data"].clone()
        }
    };
    let held_meta = meta(held.clone()).await;
    assert_eq!(
        held_meta["allowed_destinations"],
        json!(["localhost/charge"])
    );
    // It never expired, and the later of "never" and 2031 is never.
    assert_eq!(held_meta["expires_at"], Value::Null);
    let (status, answer) = vault
        .post(
            "/proxy/transaction",
            &project,
            &json!({"token": held, "proxy_url": stub.url("/echo"), "request_data": {"n": "${cardNumber}"}}),
        )
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("invalid_proxy_url")),
        "{answer}"
    );
    let (status, _) = vault
        .post(
            "/proxy/transaction",
            &project,
            &json!({"token": map["d2"], "proxy_url": stub.url("/charge"), "request_data": {"m": "${expirationMonth}", "y": "${expirationYear}"}}),
        )
        .await;
    assert_eq!(status, 200);
    let sent = stub.last().json();
    assert_eq!(
        (sent["m"].as_str(), sent["y"].as_str()),
        (Some("08"), Some("32")),
        "{sent}"
    );
    // Tokenizing an imported card afterwards finds its token.
    assert_eq!(vault.token_in(&project, MASTERCARD).await, map["d2"]);
}

#[tokio::test]
async fn the_retention_period_bounds_and_gives_imported_tokens_expiry() {
    let stub = Stub::start().await;
    let vault = Vault::start(&stub).await;
    let dir = tempfile::tempdir_in(vault.dir.path()).unwrap();
    let input = dir.path().join("kept.csv");
    let far = "2099-01-01T00:00:00Z";
    std::fs::write(
        &input,
        format!("id,number,expiry,expires_at\nr1,{VISA},07/31,\nr2,{MASTERCARD},07/31,{far}\n"),
    )
    .unwrap();
    let before = cardvault_server::clock::now_unix();
    let done = import(
        &vault,
        &vault.keys.project_id,
        &input,
        &["--token-retention-seconds", "3600"],
    );
    assert_eq!(
        (done["imported"].as_u64(), done["rejected"].as_u64()),
        (Some(1), Some(1))
    );
    let rejects = std::fs::read_to_string(input.with_extension("csv.rejects.csv")).unwrap();
    assert_eq!(rejects, "line,reason\n3,invalid_field: expires_at\n");
    let map = mapping(&input.with_extension("csv.mapping.csv"));
    let (status, meta) =
        crate::tokens_lifecycle::get_token(&vault, &vault.keys.api_key, &map["r1"]).await;
    assert_eq!(status, 200, "{meta}");
    let at = meta["data"]["expires_at"].as_str().unwrap();
    let at = cardvault_server::clock::parse_rfc3339(at).unwrap();
    assert!(
        (before + 3600..=before + 3600 + 120).contains(&at),
        "{at} vs {before}"
    );
    // No retention of zero: it would store tokens already expired.
    let out = import_command(
        &vault,
        &vault.keys.project_id,
        &input,
        &["--token-retention-seconds", "0"],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token-retention-seconds"));
}
