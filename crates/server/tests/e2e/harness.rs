//! Black-box harness: runs the real `cardvault` binary (init, then serve on 127.0.0.1:0) against
//! a local HTTPS processor stub, and checks every server log for card data when it stops.
//!
//! The stub, the process handling and the CLI plumbing are `cardvault-testkit`'s (shared with
//! the benchmark); what is here is this suite's own: its vaults, backends and log scan.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use cardvault_testkit::cardvault::{Listening, run_json, serve_command};
use cardvault_testkit::process::Process;
use serde_json::{Value, json};

pub use cardvault_testkit::Stub;
pub use cardvault_testkit::cardvault::Keys;

/// Card data used by the tests; none of it may ever appear in a server log.
pub const VISA: &str = "4242424242424242";

/// A Luhn-valid Visa number from a counter, so every card of a load test is distinct.
pub fn card_number(n: u64) -> String {
    let body = format!("411111{n:09}");
    (0..10)
        .map(|d| format!("{body}{d}"))
        .find(|c| cardvault_core::card::luhn_valid(c))
        .unwrap()
}
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

/// Every test vault serves `/metrics` on its listener with this token (a test may set a token of
/// its own, or turn metrics off by setting `CARDVAULT_METRICS_TOKEN` to ""), and the last scrape,
/// taken when the vault is dropped, must parse and hold no card data or key.
pub const METRICS_TOKEN: &str = "harness-metrics-token-5f0c2a9e";
const METRICS_TOKEN_VAR: &str = "CARDVAULT_METRICS_TOKEN";

/// Application names are unique in a project: each test app gets a number of its own.
static NEXT_APP: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cardvault")
}

/// Runs a CLI command and parses its single JSON line.
pub fn cli_json(args: &[&str]) -> Value {
    run_json(Command::new(bin()).args(args))
}

/// Where a vault keeps its data: the embedded default, or PostgreSQL and Redis with a database
/// and a key prefix of its own, created here and removed on drop. `CARDVAULT_TEST_BACKEND=postgres`
/// runs the whole suite on the scale-out backends; they must be reachable, never skipped.
pub struct Backend {
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
    pub redis_prefix: String,
    database_name: Option<String>,
    /// The token holding the master key (`CARDVAULT_TEST_KEY_PROVIDER=pkcs11`); none: a key
    /// file.
    pub hsm: Option<crate::softhsm::SoftHsm>,
}

/// Where the scale-out tests find PostgreSQL (they create and drop databases of their own there)
/// and Redis (they use key prefixes of their own): `CARDVAULT_TEST_DATABASE_URL` and
/// `CARDVAULT_TEST_REDIS_URL`, else the local defaults `.ci/services` starts.
const DEFAULT_POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/";
const HOW_TO_START: &str = "start it with `bash .ci/services` (or point CARDVAULT_TEST_DATABASE_URL / CARDVAULT_TEST_REDIS_URL at yours)";

pub fn postgres_admin_url() -> String {
    std::env::var("CARDVAULT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| DEFAULT_POSTGRES_ADMIN_URL.to_owned())
}

pub fn redis_url() -> String {
    std::env::var("CARDVAULT_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.to_owned())
}

/// The admin URL with another database name.
fn postgres_url_for(database: &str) -> String {
    let mut url =
        url::Url::parse(&postgres_admin_url()).expect("CARDVAULT_TEST_DATABASE_URL is a URL");
    url.set_path(database);
    url.to_string()
}

/// Fails the test in one line if Redis does not answer at all.
fn require_redis() {
    let url = url::Url::parse(&redis_url()).expect("CARDVAULT_TEST_REDIS_URL is a URL");
    let addr = format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(6379)
    );
    if std::net::TcpStream::connect(&addr).is_err() {
        panic!("Redis is not reachable at {addr}: {HOW_TO_START}");
    }
}

impl Backend {
    /// The suite's backend (`CARDVAULT_TEST_BACKEND`) and master key provider
    /// (`CARDVAULT_TEST_KEY_PROVIDER`).
    pub fn from_env() -> Self {
        let mut backend = match std::env::var("CARDVAULT_TEST_BACKEND").as_deref() {
            Ok("postgres") => Self::scaled(),
            Ok("sqlite") | Err(_) => Self::embedded(),
            Ok(other) => panic!("unknown CARDVAULT_TEST_BACKEND {other}"),
        };
        match std::env::var("CARDVAULT_TEST_KEY_PROVIDER").as_deref() {
            Ok("pkcs11") => backend.hsm = Some(crate::softhsm::SoftHsm::new()),
            Ok("file") | Err(_) => {}
            Ok(other) => panic!("unknown CARDVAULT_TEST_KEY_PROVIDER {other}"),
        }
        backend
    }

    pub fn embedded() -> Self {
        Self {
            database_url: None,
            redis_url: None,
            redis_prefix: String::new(),
            database_name: None,
            hsm: None,
        }
    }

    /// A fresh PostgreSQL database, and a key prefix on the Redis at `redis_url`.
    pub fn scaled_with_redis(redis_url: &str) -> Self {
        let mut backend = Self::scaled();
        backend.redis_url = Some(redis_url.to_owned());
        backend
    }

    /// A fresh PostgreSQL database and Redis key prefix.
    pub fn scaled() -> Self {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("cv_{}", &suffix[..16]);
        require_redis();
        psql(&format!("CREATE DATABASE {name}"));
        Self {
            database_url: Some(postgres_url_for(&name)),
            redis_url: Some(redis_url()),
            redis_prefix: format!("cvtest:{}:", &suffix[..12]),
            database_name: Some(name),
            hsm: None,
        }
    }

    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if let Some(url) = &self.database_url {
            env.push(("CARDVAULT_DATABASE_URL".to_owned(), url.clone()));
        }
        if let Some(url) = &self.redis_url {
            env.push(("CARDVAULT_REDIS_URL".to_owned(), url.clone()));
            env.push((
                "CARDVAULT_REDIS_KEY_PREFIX".to_owned(),
                self.redis_prefix.clone(),
            ));
        }
        if let Some(hsm) = &self.hsm {
            env.extend(hsm.master_env(crate::softhsm::SUITE_KEY_LABEL));
        }
        env
    }

    pub fn is_scaled(&self) -> bool {
        self.database_url.is_some()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(name) = &self.database_name {
            psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
        if self.redis_url.is_some() {
            let keys = Command::new("redis-cli")
                .args([
                    "-h",
                    "127.0.0.1",
                    "--scan",
                    "--pattern",
                    &format!("{}*", self.redis_prefix),
                ])
                .output();
            if let Ok(out) = keys {
                for key in String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|k| !k.is_empty())
                {
                    let _ = Command::new("redis-cli")
                        .args(["-h", "127.0.0.1", "DEL", key])
                        .output();
                }
            }
        }
    }
}

/// Runs SQL on the PostgreSQL server's `test` database as the `postgres` user.
pub fn psql(sql: &str) {
    let admin = postgres_admin_url();
    let out = match Command::new("psql")
        .args([admin.as_str(), "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
    {
        Ok(out) => out,
        Err(_) => {
            panic!("psql not found: install the PostgreSQL client (Debian: postgresql-client)")
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("could not connect") || stderr.contains("Connection refused") {
        panic!("PostgreSQL is not reachable at {admin}: {HOW_TO_START}");
    }
    assert!(out.status.success(), "psql {sql}: {stderr}");
}

pub struct Vault {
    pub dir: Arc<tempfile::TempDir>,
    pub keys: Keys,
    pub addr: SocketAddr,
    /// Whether the server speaks HTTPS (a certificate was configured).
    pub https: bool,
    /// Whether dropping the vault checks its audit log with `cardvault audit verify` (every
    /// test's log, so the whole suite's are checked; off only for a test that breaks the log).
    pub check_audit: bool,
    pub http: reqwest::Client,
    pub backend: Arc<Backend>,
    env: Vec<(String, String)>,
    process: Option<Process>,
    log_files: Vec<PathBuf>,
    instance: usize,
    /// A program the server is started under (e.g. `prlimit` with its options); empty: none.
    launcher: Vec<String>,
}

impl Vault {
    /// A vault with the local-testing relaxations on and the stub's CA trusted.
    pub async fn start(stub: &Stub) -> Self {
        Self::start_with(stub, &[]).await
    }

    pub async fn start_with(stub: &Stub, extra_env: &[(&str, &str)]) -> Self {
        Self::start_on(Arc::new(Backend::from_env()), &stub_env(stub, extra_env))
    }

    /// A vault with exactly these settings (the secure defaults otherwise).
    pub async fn start_env(env: &[(&str, &str)]) -> Self {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::start_on(Arc::new(Backend::from_env()), &env)
    }

    /// Initializes a vault on `backend` and starts its first instance.
    pub fn start_on(backend: Arc<Backend>, env: &[(String, String)]) -> Self {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let data_dir = dir.path().join("data");
        let init = ["init", "--data-dir", data_dir.to_str().unwrap(), "--json"];
        let keys = Keys::from_json(&run_json(
            Command::new(bin()).envs(backend.env()).args(init),
        ));
        let mut vault = Self {
            dir,
            keys,
            addr: "127.0.0.1:0".parse().unwrap(),
            https: false,
            check_audit: true,
            http: reqwest::Client::new(),
            backend,
            env: env.to_vec(),
            process: None,
            log_files: Vec::new(),
            instance: 0,
            launcher: Vec::new(),
        };
        vault.spawn();
        vault
    }

    /// A vault started under `launcher` (a program and its options, the server's command line
    /// appended), with the stub's settings.
    pub fn start_under(stub: &Stub, launcher: &[&str]) -> Self {
        let backend = Arc::new(Backend::from_env());
        let mut vault = Self::start_on(backend, &stub_env(stub, &[]));
        vault.terminate();
        vault.launcher = launcher.iter().map(|s| s.to_string()).collect();
        vault.spawn();
        vault
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.process.as_ref().expect("the server is running").id()
    }

    /// Another server process on the same data (same backend, same master key): a second
    /// instance behind a load balancer.
    pub fn another_instance(&self) -> Self {
        let mut other = Self {
            dir: self.dir.clone(),
            keys: self.keys.clone(),
            addr: "127.0.0.1:0".parse().unwrap(),
            https: false,
            check_audit: true,
            http: reqwest::Client::new(),
            backend: self.backend.clone(),
            env: self.env.clone(),
            process: None,
            log_files: Vec::new(),
            instance: self.instance + 1,
            launcher: self.launcher.clone(),
        };
        other.spawn();
        other
    }

    /// A `cardvault` command with this vault's backend settings.
    pub fn cli(&self) -> Command {
        let mut command = Command::new(bin());
        command.envs(self.backend.env());
        command
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self) {
        let log = self.dir.path().join(format!(
            "server-{}-{}.log",
            self.instance,
            self.log_files.len()
        ));
        let mut command = serve_command(Path::new(bin()), &self.launcher, &self.data_dir());
        command
            .env_remove("RUST_LOG")
            .env("CARDVAULT_LOG_LEVEL", "debug")
            .env("CARDVAULT_LOG_FORMAT", "json")
            .envs(self.backend.env())
            .env(METRICS_TOKEN_VAR, METRICS_TOKEN)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if self.metrics_token().is_none() {
            command.env_remove(METRICS_TOKEN_VAR);
        }
        let server = Listening::spawn(&mut command, Some(&log));
        self.addr = server.addr;
        self.https = server.https;
        self.process = Some(server.process);
        self.log_files.push(log);
    }

    /// Settings for the next start (they win over earlier ones of the same name).
    pub fn set_env(&mut self, env: &[(String, String)]) {
        self.env.extend_from_slice(env);
    }

    /// Stops the server (SIGKILL: nothing may depend on a clean exit) and starts it again on
    /// the same data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        self.process.take().is_some_and(Process::terminate)
    }

    /// How the server process ended, if it has (`None` while it runs).
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.process.as_mut().and_then(Process::exit_status)
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill();
        }
    }

    /// `http://ADDR{path}`, or `https://localhost:PORT{path}` over TLS (the name the test
    /// certificates are issued for).
    pub fn url(&self, path: &str) -> String {
        if self.https {
            format!("https://localhost:{}{path}", self.addr.port())
        } else {
            format!("http://{}{path}", self.addr)
        }
    }

    /// The token `/metrics` opens with on the main listener, if metrics are on there.
    pub fn metrics_token(&self) -> Option<&str> {
        match self.env.iter().rev().find(|(k, _)| k == METRICS_TOKEN_VAR) {
            Some((_, token)) if token.is_empty() => None,
            Some((_, token)) => Some(token),
            None => Some(METRICS_TOKEN),
        }
    }

    /// `GET /metrics` with the vault's token: the status and the exposition text.
    pub async fn scrape(&self) -> (u16, String) {
        let mut request = self.http.get(self.url("/metrics"));
        if let Some(token) = self.metrics_token() {
            request = request.bearer_auth(token);
        }
        let resp = request.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// The exposition of `/metrics`, parsed (the test fails if it does not parse).
    pub async fn metrics(&self) -> crate::exposition::Exposition {
        let (status, text) = self.scrape().await;
        assert_eq!(status, 200, "{text}");
        crate::exposition::Exposition::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    /// The last scrape before the vault stops, over plain HTTP with blocking I/O (it runs in
    /// `drop`); `None` when metrics are off, the vault is gone or speaks HTTPS, or the scrape is
    /// refused (a test that filled the connection cap, a stopped database).
    fn last_scrape(&mut self) -> Option<String> {
        use std::io::{Read, Write};
        let token = self.metrics_token()?.to_owned();
        if self.https || self.exit_status().is_some() {
            return None;
        }
        let mut stream =
            std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .ok()?;
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .ok()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (head, body) = raw.split_once("\r\n\r\n")?;
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        (head.starts_with("HTTP/1.1 200") && !chunked).then(|| body.to_owned())
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
        Keys::from_json(&run_json(self.cli().args(&args)))
    }

    /// Creates an application with the given permissions in the default project.
    pub fn create_app(&self, permissions: &str) -> String {
        let dir = self.data_dir();
        let v = run_json(self.cli().args([
            "app",
            "create",
            "--data-dir",
            dir.to_str().unwrap(),
            "--project",
            &self.keys.project_id,
            "--name",
            &format!(
                "limited {}",
                NEXT_APP.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
            "--permissions",
            permissions,
            "--json",
        ]));
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

    /// Tokenizes `number` (no CVC) in the project of `keys`; returns the token.
    pub async fn token_in(&self, keys: &Keys, number: &str) -> String {
        let card = json!({"type": "card", "data": {"cardNumber": number, "expirationMonth": "1", "expirationYear": "2033"}});
        let (status, body) = self.post("/tokenize", keys, &card).await;
        assert_eq!(status, 201, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    pub async fn proxy(&self, body: &Value) -> (u16, Value) {
        self.post("/proxy/transaction", &self.keys, body).await
    }

    /// Counts stored tokens by reading the database directly.
    pub async fn token_count(&self) -> i64 {
        use sqlx::Row;
        let row = sqlx::query("SELECT count(*) AS n FROM tokens")
            .fetch_one(&mut self.database().await)
            .await
            .unwrap();
        row.get::<i64, _>("n")
    }

    /// A direct connection to this vault's database (SQLite file or PostgreSQL).
    pub async fn database(&self) -> sqlx::AnyConnection {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let url = match &self.backend.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}",
                self.data_dir().join("cardvault.db").display()
            ),
        };
        sqlx::AnyConnection::connect(&url).await.unwrap()
    }
}

impl Drop for Vault {
    fn drop(&mut self) {
        let exposition = if std::thread::panicking() {
            None
        } else {
            self.last_scrape()
        };
        self.kill();
        if !std::thread::panicking() {
            assert_logs_clean(&self.logs());
            if let Some(text) = exposition {
                assert_metrics_clean(&text, &self.keys);
            }
            if self.check_audit {
                let dir = self.data_dir();
                let out = self
                    .cli()
                    .args(["audit", "verify", "--data-dir", dir.to_str().unwrap()])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "the audit log does not verify: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
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

/// The exposition parses, and no card number, account number, holder name, CVC or key of the
/// vault is in it.
pub fn assert_metrics_clean(text: &str, keys: &Keys) {
    let parsed = crate::exposition::Exposition::parse(text)
        .unwrap_or_else(|e| panic!("the metrics do not parse: {e}\n{text}"));
    for secret in SECRETS
        .iter()
        .copied()
        .chain([keys.api_key.as_str(), keys.publishable_key.as_str()])
        .filter(|s| !s.is_empty())
    {
        assert!(
            !text.contains(secret),
            "the metrics contain {secret:?}:\n{text}"
        );
    }
    for sample in &parsed.samples {
        for value in sample.labels.values() {
            assert!(
                !SHORT_SECRETS.contains(&value.as_str()),
                "a metrics label is a CVC: {sample:?}"
            );
        }
    }
}

pub fn stub_env(stub: &Stub, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "CARDVAULT_ALLOW_PRIVATE_DESTINATIONS".to_owned(),
            "true".to_owned(),
        ),
        (
            "CARDVAULT_UPSTREAM_CA_FILE".to_owned(),
            stub.ca_file.to_str().unwrap().to_owned(),
        ),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// Sends `req` with extra `headers`; returns the status and the JSON body (null if none).
pub async fn send_with(mut req: reqwest::RequestBuilder, headers: &[(&str, &str)]) -> (u16, Value) {
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
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

/// Whether the child's stderr has a line containing `needle` within 30 s; the child is killed
/// either way (a vault that never says it would otherwise keep the test waiting).
pub fn stderr_mentions(child: &mut std::process::Child, needle: &str) -> bool {
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (found, seen) = std::sync::mpsc::channel();
    let needle = needle.to_owned();
    std::thread::spawn(move || {
        let hit = stderr
            .lines()
            .map_while(Result::ok)
            .any(|line| line.contains(&needle));
        let _ = found.send(hit);
    });
    let hit = seen
        .recv_timeout(std::time::Duration::from_secs(30))
        .unwrap_or(false);
    let _ = child.kill();
    let _ = child.wait();
    hit
}

/// Runs futures concurrently on this task (no extra dependency for `join_all`).
pub async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let futures: Vec<_> = futures.map(Box::pin).collect();
    let mut results = Vec::with_capacity(futures.len());
    let mut pending: Vec<_> = futures.into_iter().map(Some).collect();
    let mut outputs: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (slot, out) in pending.iter_mut().zip(outputs.iter_mut()) {
            if let Some(fut) = slot {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *out = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    results.extend(outputs.into_iter().map(|o| o.unwrap()));
    results
}
