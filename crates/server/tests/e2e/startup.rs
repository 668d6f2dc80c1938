//! Start-up settings that could silence the vault are refused, and testing relaxations are
//! announced whatever the log settings.

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
        let warned = stderr_mentions(&mut child, "DANGER: allow_private_destinations is on");
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

#[test]
fn a_data_dir_that_is_a_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let out = Command::new(bin())
        .args(["init", "--data-dir"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(file.to_str().unwrap()), "{stderr}");
}

#[test]
fn an_unreachable_redis_is_a_warning_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let redis_url = format!("redis://{}/", closed.local_addr().unwrap());
    drop(closed);
    let mut child = Command::new(bin())
        .args(["serve", "--init", "--data-dir"])
        .arg(&data)
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .env("CARDVAULT_REDIS_URL", &redis_url)
        .env("CARDVAULT_LOG_LEVEL", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let warned = stderr_mentions(&mut child, "the CVC session store (Redis) is unreachable");
    assert!(warned, "no warning about Redis at start");
}

#[test]
fn every_option_of_every_command_is_described_with_its_default_and_environment() {
    for command in [
        &["init"][..],
        &["migrate"],
        &["serve"],
        &["project", "create"],
        &["project", "allow"],
        &["project", "disallow"],
        &["project", "tls"],
        &["app", "create"],
    ] {
        let out = Command::new(bin())
            .args(command)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{command:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        let options = help.split("Options:").nth(1).unwrap_or_default();
        for line in options.lines().filter(|l| l.trim_start().starts_with("--")) {
            // `--name <NAME>  description`: something after the option and its value.
            let described = line
                .trim_start()
                .split_once("  ")
                .is_some_and(|(_, text)| !text.trim().is_empty());
            assert!(described, "{command:?}: undescribed option {line:?}");
        }
        assert!(
            help.contains("[default: ./cardvault-data]") && help.contains("CARDVAULT_DATA_DIR"),
            "{command:?}: --data-dir default or environment missing:\n{help}"
        );
    }
}

#[test]
fn a_worker_count_out_of_range_is_refused_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["0", "many", "100000"] {
        let out = Command::new(bin())
            .args(["serve", "--init", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0"])
            .env("CARDVAULT_WORKER_THREADS", bad)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad}: the vault started");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("CARDVAULT_WORKER_THREADS must be a whole number from 1 to 1024"),
            "{bad}: {stderr}"
        );
    }
}

#[tokio::test]
async fn a_vault_on_one_worker_thread_serves_a_proxy_call() {
    let stub = Stub::start().await;
    let vault = Vault::start_with(&stub, &[("CARDVAULT_WORKER_THREADS", "1")]).await;
    let token = vault.token_in(&vault.keys, VISA).await;
    let (status, answer) = vault
        .proxy(&serde_json::json!({"token": token, "proxy_url": stub.url("/charge"), "request_data": {"n": "${cardNumber}"}}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(stub.last().json()["n"], VISA);
}
