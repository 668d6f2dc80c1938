//! The `cardvault` binary as the tests and the benchmark drive it: where it is, its CLI's JSON
//! answers, and `serve` on port 0 with the address read from its first line of output.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::process::Process;

/// What `cardvault serve` prints first, before its URL (`http://ADDR` or `https://ADDR`): a
/// harness that listens on port 0 learns the real port from it.
const LISTENING: &str = "cardvault listening on ";

/// The release build of `cardvault`: `CARDVAULT_BIN` if set, else `target/release/cardvault`
/// in this workspace. (The server's own tests use the binary cargo built for them instead.)
pub fn release_binary() -> PathBuf {
    std::env::var_os("CARDVAULT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/cardvault")
        })
}

/// Runs a `cardvault` command that answers one JSON document (`--json`) and parses it; panics
/// with the command's stderr if it fails.
pub fn run_json(command: &mut Command) -> Value {
    let out = command.output().expect("run cardvault");
    assert!(
        out.status.success(),
        "cardvault failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cardvault printed JSON")
}

/// The keys `cardvault init` and `cardvault project create` print (`--json`).
#[derive(Debug, Clone)]
pub struct Keys {
    pub project_id: String,
    pub application_id: String,
    /// Empty when the answer has none.
    pub publishable_key: String,
    pub api_key: String,
}

impl Keys {
    /// Reads the keys out of the CLI's JSON; panics if a required one is missing.
    pub fn from_json(v: &Value) -> Self {
        let field = |name: &str| {
            v[name]
                .as_str()
                .unwrap_or_else(|| panic!("no {name} in {v}"))
                .to_owned()
        };
        Self {
            project_id: field("project_id"),
            application_id: field("application_id"),
            publishable_key: v["publishable_key"].as_str().unwrap_or_default().to_owned(),
            api_key: field("api_key"),
        }
    }
}

/// `[LAUNCHER…] BIN serve --data-dir DATA_DIR --listen 127.0.0.1:0`; the caller adds settings
/// (environment) and passes it to [`Listening::spawn`].
pub fn serve_command(bin: &Path, launcher: &[String], data_dir: &Path) -> Command {
    let mut command = match launcher.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(bin);
            command
        }
        None => Command::new(bin),
    };
    command.args([
        "serve",
        "--data-dir",
        data_dir.to_str().expect("a UTF-8 data directory"),
        "--listen",
        "127.0.0.1:0",
    ]);
    command
}

/// A `cardvault serve` process and the address it listens on.
pub struct Listening {
    pub process: Process,
    pub addr: SocketAddr,
    /// Whether it serves HTTPS (a certificate was configured).
    pub https: bool,
}

impl Listening {
    /// Spawns `command` (a [`serve_command`]) with stdout piped, stderr written to `log` (or
    /// discarded), and waits for its first line; panics, with the log, if that line does not
    /// give the address.
    pub fn spawn(command: &mut Command, log: Option<&Path>) -> Self {
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
            None => Stdio::null(),
        };
        let mut process = Process::spawn(
            command.stdout(Stdio::piped()).stderr(stderr),
            "cardvault serve",
        );
        let stdout = process.child_mut().stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let url = line.trim().strip_prefix(LISTENING).unwrap_or_else(|| {
            panic!(
                "unexpected first line {line:?}; log: {}",
                log.and_then(|l| std::fs::read_to_string(l).ok())
                    .unwrap_or_default()
            )
        });
        let (https, addr) = match url.split_once("://") {
            Some(("https", addr)) => (true, addr),
            Some(("http", addr)) => (false, addr),
            _ => panic!("unexpected URL in {line:?}"),
        };
        Self {
            process,
            addr: addr.parse().unwrap(),
            https,
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_the_cli_json_and_the_publishable_key_may_be_absent() {
        let keys = Keys::from_json(&serde_json::json!({
            "project_id": "proj_1", "application_id": "app_1", "api_key": "sk_1"
        }));
        assert_eq!(
            (
                keys.project_id.as_str(),
                keys.application_id.as_str(),
                keys.api_key.as_str(),
                keys.publishable_key.as_str()
            ),
            ("proj_1", "app_1", "sk_1", "")
        );
    }

    #[test]
    fn serve_runs_under_the_launcher_on_port_zero() {
        let launcher = ["prlimit".to_owned(), "--nofile=512".to_owned()];
        let command = serve_command(Path::new("/bin/cardvault"), &launcher, Path::new("/data"));
        assert_eq!(command.get_program(), "prlimit");
        let args: Vec<_> = command.get_args().collect();
        assert_eq!(
            args,
            [
                "--nofile=512",
                "/bin/cardvault",
                "serve",
                "--data-dir",
                "/data",
                "--listen",
                "127.0.0.1:0"
            ]
        );
    }
}
