//! The processes under test: the vault (release binary) and nginx, with their CPU time and peak
//! memory read from /proc.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A started server process (and, for nginx, its workers).
pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn pids(&self) -> Vec<u32> {
        let pid = self.child.id();
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

fn cpu_of(pid: u32) -> f64 {
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

pub fn vault_binary() -> PathBuf {
    std::env::var_os("CARDVAULT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/cardvault")
        })
}

/// Keys printed by `cardvault init --json`.
pub struct Keys {
    pub project_id: String,
    pub api_key: String,
    pub publishable_key: String,
}

pub fn init_vault(data_dir: &Path, env: &[(String, String)]) -> Keys {
    let out = Command::new(vault_binary())
        .args([
            "init",
            "--data-dir",
            data_dir.to_str().expect("utf-8 path"),
            "--json",
        ])
        .envs(env.iter().cloned())
        .output()
        .expect("run cardvault init");
    assert!(
        out.status.success(),
        "cardvault init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("init JSON");
    Keys {
        project_id: v["project_id"].as_str().expect("project_id").to_owned(),
        api_key: v["api_key"].as_str().expect("api_key").to_owned(),
        publishable_key: v["publishable_key"]
            .as_str()
            .expect("publishable_key")
            .to_owned(),
    }
}

pub fn serve_vault(data_dir: &Path, env: &[(String, String)]) -> Server {
    let mut child = Command::new(vault_binary())
        .args([
            "serve",
            "--data-dir",
            data_dir.to_str().expect("utf-8 path"),
            "--listen",
            "127.0.0.1:0",
        ])
        .envs(env.iter().cloned())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run cardvault serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let addr = line
        .trim()
        .strip_prefix("cardvault listening on ")
        .expect("listening line")
        .to_owned();
    Server { child, url: addr }
}

pub fn nginx(dir: &Path, stub_port: u16, ca_file: &Path) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let conf = format!(
        "user root;\nworker_processes 2;\ndaemon off;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;\n\
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
    let child = Command::new("nginx")
        .args([
            "-p",
            dir.to_str().expect("utf-8 path"),
            "-c",
            conf_path.to_str().expect("utf-8 path"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx is installed (bench/run.sh installs it)");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}
