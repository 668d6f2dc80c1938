//! Black-box harness: runs the real `cardvault` binary (init, then serve on 127.0.0.1:0) against
//! a local HTTPS processor stub, and checks every server log for card data when it stops.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

pub use crate::stub::Stub;

/// Card data used by the tests; none of it may ever appear in a server log.
pub const VISA: &str = "4242424242424242";
pub const VISA_SPACED: &str = "4242 4242 4242 4242";
pub const MASTERCARD: &str = "5555555555554444";
pub const AMEX: &str = "378282246310005";
pub const CVC: &str = "739";
pub const AMEX_CVC: &str = "7391";
pub const ACCOUNT: &str = "000123456789";
pub const HOLDER_FIRST: &str = "Zebulon";
const SECRETS: [&str; 7] = [
    VISA,
    VISA_SPACED,
    MASTERCARD,
    AMEX,
    ACCOUNT,
    HOLDER_FIRST,
    "4242-4242",
];
const SHORT_SECRETS: [&str; 2] = [CVC, AMEX_CVC];

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cardvault")
}

/// The keys `cardvault init`/`project create` print.
#[derive(Debug, Clone)]
pub struct Keys {
    pub project_id: String,
    pub application_id: String,
    pub publishable_key: String,
    pub api_key: String,
}

impl Keys {
    fn from_json(v: &Value) -> Self {
        Self {
            project_id: v["project_id"].as_str().unwrap().to_owned(),
            application_id: v["application_id"].as_str().unwrap().to_owned(),
            publishable_key: v["publishable_key"].as_str().unwrap_or_default().to_owned(),
            api_key: v["api_key"].as_str().unwrap().to_owned(),
        }
    }
}

/// Runs a CLI command and parses its single JSON line.
pub fn cli_json(args: &[&str]) -> Value {
    let out = Command::new(bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "cardvault {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub struct Vault {
    pub dir: tempfile::TempDir,
    pub keys: Keys,
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    env: Vec<(String, String)>,
    child: Option<Child>,
    log_files: Vec<PathBuf>,
}

impl Vault {
    /// A vault with the local-testing relaxations on and the stub's CA trusted.
    pub async fn start(stub: &Stub) -> Self {
        Self::start_with(stub, &[]).await
    }

    pub async fn start_with(stub: &Stub, extra_env: &[(&str, &str)]) -> Self {
        let mut env = vec![
            ("CARDVAULT_ALLOW_PRIVATE_DESTINATIONS", "true"),
            ("CARDVAULT_UPSTREAM_CA_FILE", stub.ca_file.to_str().unwrap()),
        ];
        env.extend_from_slice(extra_env);
        Self::start_env(&env).await
    }

    /// A vault with exactly these settings (the secure defaults otherwise).
    pub async fn start_env(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let keys = Keys::from_json(&cli_json(&[
            "init",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--json",
        ]));
        let mut vault = Self {
            dir,
            keys,
            addr: "127.0.0.1:0".parse().unwrap(),
            http: reqwest::Client::new(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
            log_files: Vec::new(),
        };
        vault.spawn();
        vault
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self) {
        let log = self
            .dir
            .path()
            .join(format!("server-{}.log", self.log_files.len()));
        let mut child = Command::new(bin())
            .args([
                "serve",
                "--data-dir",
                self.data_dir().to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .env_remove("RUST_LOG")
            .env("CARDVAULT_LOG_LEVEL", "debug")
            .env("CARDVAULT_LOG_FORMAT", "json")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("cardvault listening on http://")
            .unwrap_or_else(|| {
                panic!(
                    "unexpected first line {line:?}; log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        self.addr = addr.parse().unwrap();
        self.child = Some(child);
        self.log_files.push(log);
    }

    /// Stops the server (SIGKILL: nothing may depend on a clean exit) and starts it again on
    /// the same data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn logs(&self) -> String {
        self.log_files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap_or_default())
            .collect()
    }

    /// Creates another project (with its own keys) in this vault.
    pub fn create_project(&self, extra: &[&str]) -> Keys {
        let dir = self.data_dir();
        let mut args = vec![
            "project",
            "create",
            "--data-dir",
            dir.to_str().unwrap(),
            "--name",
            "other",
            "--json",
        ];
        args.extend_from_slice(extra);
        Keys::from_json(&cli_json(&args))
    }

    /// Creates an application with the given permissions in the default project.
    pub fn create_app(&self, permissions: &str) -> String {
        let dir = self.data_dir();
        let v = cli_json(&[
            "app",
            "create",
            "--data-dir",
            dir.to_str().unwrap(),
            "--project",
            &self.keys.project_id,
            "--name",
            "limited",
            "--permissions",
            permissions,
            "--json",
        ]);
        v["api_key"].as_str().unwrap().to_owned()
    }

    pub async fn post(&self, path: &str, keys: &Keys, body: &Value) -> (u16, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .header("X-API-Key", &keys.api_key)
            .header("X-Pub-Key", &keys.publishable_key)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn tokenize(&self, data: Value) -> Value {
        let (status, body) = self
            .post(
                "/tokenize",
                &self.keys,
                &json!({"type": "card", "data": data}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    /// A Visa card with CVC: returns (token, cvc_session_id).
    pub async fn visa(&self) -> (String, String) {
        let body = self
            .tokenize(json!({"cardNumber": VISA_SPACED, "expirationMonth": "7", "expirationYear": "2031", "cvv": CVC, "firstName": HOLDER_FIRST}))
            .await;
        (
            body["token"].as_str().unwrap().to_owned(),
            body["cvc_session_id"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn proxy(&self, body: &Value) -> (u16, Value) {
        self.post("/proxy/transaction", &self.keys, body).await
    }

    /// Counts stored tokens by reading the database file directly.
    pub async fn token_count(&self) -> i64 {
        count_tokens(&self.data_dir().join("cardvault.db")).await
    }
}

pub async fn count_tokens(db: &Path) -> i64 {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM tokens")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    n
}

impl Drop for Vault {
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            assert_logs_clean(&self.logs());
        }
    }
}

/// No card number, account number, holder name or CVC in any log line.
pub fn assert_logs_clean(logs: &str) {
    assert!(!logs.is_empty(), "the server wrote no logs at all");
    for secret in SECRETS {
        assert!(
            !logs.contains(secret),
            "a server log contains {secret:?}:\n{logs}"
        );
    }
    // CVCs are short digit strings: look for them as values, not inside ids or numbers.
    for cvc in SHORT_SECRETS {
        for form in [
            format!("\"{cvc}\""),
            format!("={cvc} "),
            format!(": {cvc}"),
            format!("\\\"{cvc}\\\""),
        ] {
            assert!(
                !logs.contains(&form),
                "a server log contains the CVC as {form:?}:\n{logs}"
            );
        }
    }
}

/// Waits until `cond` holds, up to `limit` (for background effects such as TTL expiry).
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}
