//! Start-up settings that could silence the vault are refused, and testing relaxations are
//! announced whatever the log settings.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::harness::*;

#[test]
fn a_misspelt_log_level_is_a_start_up_error_naming_the_valid_ones() {
    let dir = tempfile::tempdir().unwrap();
    for level in ["verbose", "debu"] {
        let out = Command::new(bin())
            .args(["serve", "--init", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0"])
            .env_remove("RUST_LOG")
            .env("CARDVAULT_LOG_LEVEL", level)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{level}: the vault started");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stdout.contains("listening"), "{level}: {stdout}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(level), "{level}: {stderr}");
        for valid in ["error", "warn", "info", "debug", "trace"] {
            assert!(stderr.contains(valid), "{level}: {stderr} lacks {valid}");
        }
    }
}

#[test]
fn relaxation_warnings_appear_at_every_log_level() {
    let dir = tempfile::tempdir().unwrap();
    for level in ["error", "warn", "info"] {
        let mut child = Command::new(bin())
            .args(["serve", "--init", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0"])
            .env_remove("RUST_LOG")
            .env("CARDVAULT_LOG_LEVEL", level)
            .env("CARDVAULT_ALLOW_PRIVATE_DESTINATIONS", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let mut warned = false;
        for line in stderr.lines() {
            let line = line.unwrap();
            if line.contains("DANGER: allow_private_destinations is on") {
                warned = true;
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(warned, "no warning at log level {level}");
    }
}

#[test]
fn an_unknown_key_in_the_settings_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cardvault.toml");
    std::fs::write(&config, "cvc_ttl = 5\n").unwrap();
    let out = Command::new(bin())
        .args(["serve", "--init", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown setting `cvc_ttl`") && stderr.contains("`cvc_ttl_seconds`"),
        "{stderr}"
    );
}

/// Runs `serve` on `data_dir` with `env`; returns (exit success, stdout, stderr) once it exits.
fn serve_once(
    data_dir: &std::path::Path,
    listen: &str,
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let out = Command::new(bin())
        .args(["serve", "--data-dir"])
        .arg(data_dir)
        .args(["--listen", listen])
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn start_up_mistakes_fail_before_listening_and_name_their_object() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let init = Command::new(bin())
        .args(["init", "--data-dir"])
        .arg(&data)
        .args(["--json"])
        .output()
        .unwrap();
    assert!(init.status.success());

    // A master key that is not this vault's.
    let other_key = "11".repeat(32);
    let (ok, stdout, stderr) = serve_once(
        &data,
        "127.0.0.1:0",
        &[("CARDVAULT_MASTER_KEY", &other_key)],
    );
    assert!(!ok && !stdout.contains("listening"), "{stdout}");
    assert!(
        stderr.contains("the master key does not match this vault"),
        "{stderr}"
    );

    // An address already in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (ok, stdout, stderr) = serve_once(&data, &addr, &[]);
    assert!(!ok && !stdout.contains("listening"), "{stdout}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );

    // No vault in the directory.
    let (ok, stdout, stderr) = serve_once(&dir.path().join("empty"), "127.0.0.1:0", &[]);
    assert!(!ok && !stdout.contains("listening"), "{stdout}");
    assert!(stderr.contains("cardvault init"), "{stderr}");
}
