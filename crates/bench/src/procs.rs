//! The processes under test: the vault (release binary) and nginx, with their CPU time and peak
//! memory read from /proc. Starting and stopping them is `cardvault-testkit`'s, shared with the
//! black-box tests.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cardvault_testkit::cardvault::{self, Keys, Listening};
use cardvault_testkit::process::{self, Process};

/// A started server process (and, for nginx, its workers); killed when dropped.
pub struct Server {
    pub process: Process,
    pub url: String,
}

impl Server {
    pub fn pids(&self) -> Vec<u32> {
        let pid = self.process.id();
        let mut pids = vec![pid];
        if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
            pids.extend(
                children
                    .split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
        pids
    }

    /// User + system CPU seconds used so far by the process and its children.
    pub fn cpu_seconds(&self) -> f64 {
        self.pids().iter().map(|pid| cpu_of(*pid)).sum()
    }

    /// Peak resident memory (VmHWM) in MiB, summed over the process and its children.
    pub fn peak_rss_mib(&self) -> f64 {
        self.pids()
            .iter()
            .map(|pid| peak_rss_kib(*pid))
            .sum::<f64>()
            / 1024.0
    }
}

/// How long a server gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

impl Drop for Server {
    /// SIGTERM first, as an operator stops a server: a build instrumented for profile-guided
    /// optimization (`bench/pgo-build.sh`) writes its profile only as it exits. Then SIGKILL
    /// for what is left, the children included: nginx's workers outlive a killed master, and
    /// would keep the port, CPU and any file lock the benchmark was started under.
    fn drop(&mut self) {
        // Listed while they are still its children.
        let children: Vec<String> = self.pids().iter().skip(1).map(u32::to_string).collect();
        let exited = self.process.stop_within(STOP_GRACE);
        // A server that exited has stopped its children itself (their ids may be reused now).
        if !exited && !children.is_empty() {
            let _ = Command::new("kill")
                .arg("-9")
                .args(children)
                .stderr(Stdio::null())
                .status();
        }
    }
}

pub fn cpu_of(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}

fn peak_rss_kib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// `cardvault init` on `data_dir` with `env` (the release binary); returns the keys it printed.
pub fn init_vault(data_dir: &Path, env: &[(String, String)]) -> Keys {
    let mut command = Command::new(cardvault::release_binary());
    command
        .args([
            "init",
            "--data-dir",
            data_dir.to_str().expect("utf-8 path"),
            "--json",
        ])
        .envs(env.iter().cloned());
    Keys::from_json(&cardvault::run_json(&mut command))
}

/// `cardvault serve` on `data_dir` with `env` (the release binary, its logs discarded), run by
/// `launcher` when it names a program (e.g. valgrind).
pub fn serve_vault(data_dir: &Path, env: &[(String, String)], launcher: &[String]) -> Server {
    let mut command = cardvault::serve_command(&cardvault::release_binary(), launcher, data_dir);
    command.envs(env.iter().cloned());
    let server = Listening::spawn(&mut command, None);
    Server {
        url: server.url(""),
        process: server.process,
    }
}

/// nginx proxying to the stub: a master and `workers` workers, or, run by `launcher` (e.g.
/// valgrind, which follows one process), a single process.
pub fn nginx(
    dir: &Path,
    stub_port: u16,
    ca_file: &Path,
    launcher: &[String],
    workers: u64,
) -> Server {
    let port = free_port();
    let processes = if launcher.is_empty() {
        format!("worker_processes {workers};")
    } else {
        "master_process off;\nworker_processes 1;".to_owned()
    };
    let conf = format!(
        "user root;\n{processes}\ndaemon off;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;\n\
         events {{ worker_connections 8192; }}\n\
         http {{\n  access_log off;\n  upstream stub {{ server 127.0.0.1:{stub_port}; keepalive 256; }}\n\
           server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass https://stub;\n\
               proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_ssl_server_name on;\n\
               proxy_ssl_name localhost;\n      proxy_ssl_verify on;\n      proxy_ssl_trusted_certificate {ca};\n\
               proxy_ssl_session_reuse on;\n    }}\n  }}\n}}\n",
        dir = dir.display(),
        ca = ca_file.display(),
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("write nginx.conf");
    let mut command = launched(launcher, Path::new("nginx"));
    command
        .args([
            "-p",
            dir.to_str().expect("utf-8 path"),
            "-c",
            conf_path.to_str().expect("utf-8 path"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let process = Process::spawn(&mut command, "nginx (bench/run.sh installs it)");
    // If it is not up by then, the measurement's errors say so.
    process::wait_for_port(port, startup_limit(launcher, Duration::from_secs(2)));
    Server {
        process,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// The vault's serving stack with none of its work (`cardvault-bare-forwarder`, built beside
/// this binary), sending every call on to the stub.
/// (Run by `launcher`, as [`nginx`].)
pub fn bare_forwarder(stub_url: &str, ca_file: &Path, launcher: &[String]) -> Server {
    let port = free_port();
    let binary = std::env::current_exe()
        .expect("this binary's path")
        .with_file_name("cardvault-bare-forwarder");
    let mut command = launched(launcher, &binary);
    command
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--upstream",
            stub_url,
            "--ca-file",
            ca_file.to_str().expect("utf-8 path"),
        ])
        .stdout(Stdio::null());
    let process = Process::spawn(
        &mut command,
        "cardvault-bare-forwarder (cargo build --release -p cardvault-bench builds it)",
    );
    process::wait_for_port(port, startup_limit(launcher, Duration::from_secs(5)));
    Server {
        process,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// `program`, or `launcher` with `program` as its last argument.
fn launched(launcher: &[String], program: &Path) -> Command {
    match launcher.split_first() {
        Some((first, rest)) => {
            let mut command = Command::new(first);
            command.args(rest).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// How long a server may take to listen: a launcher such as valgrind starts it far slower.
fn startup_limit(launcher: &[String], plain: Duration) -> Duration {
    if launcher.is_empty() {
        plain
    } else {
        plain * 30
    }
}

/// A loopback port nothing listens on now (for a server started next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}
