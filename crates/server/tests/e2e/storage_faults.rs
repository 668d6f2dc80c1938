//! The embedded database's files failing under a running vault: removed, replaced, made
//! immutable, on a file system turned read-only or full. Whatever happens, no token is ever
//! acknowledged that a restart would lose, `/readyz` says so, and the process stays up.
//! (PostgreSQL has no files of ours; its readiness write probe is covered by the scale-out tests.)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

fn card() -> Value {
    json!({"type": "card", "data": {"cardNumber": VISA, "expirationMonth": "12", "expirationYear": "2033"}})
}

async fn tokenize_status(vault: &Vault) -> u16 {
    vault.post("/tokenize", &vault.keys, &card()).await.0
}

async fn readyz(vault: &Vault) -> (u16, Value) {
    send_with(vault.http.get(vault.url("/readyz")), &[]).await
}

fn database_files(vault: &Vault) -> Vec<PathBuf> {
    ["cardvault.db", "cardvault.db-wal", "cardvault.db-shm"]
        .iter()
        .map(|name| vault.data_dir().join(name))
        .collect()
}

/// Making files immutable and mounting file systems take root, as CI runs. Elsewhere these
/// tests say so and stop.
fn needs_root(test: &str) -> bool {
    let uid = Command::new("id").arg("-u").output().unwrap();
    let root = String::from_utf8_lossy(&uid.stdout).trim() == "0";
    if !root {
        eprintln!("{test}: SKIPPED, needs root (chattr, mount)");
    }
    !root
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status().unwrap();
    assert!(status.success(), "{program} {args:?}");
}

/// Waits until `/readyz` answers `status` (the file watch runs every 250 ms).
async fn readyz_becomes(vault: &Vault, status: u16) -> Value {
    for _ in 0..100 {
        let (got, body) = readyz(vault).await;
        if got == status {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/readyz never answered {status}");
}

#[tokio::test]
async fn removed_or_replaced_files_acknowledge_nothing() {
    let stub = Stub::start().await;
    if Backend::from_env().is_scaled() {
        return;
    }
    for replace in [false, true] {
        let mut vault = Vault::start(&stub).await;
        // The test removes or replaces the database files themselves: no log is left to check.
        vault.check_audit = false;
        assert_eq!(tokenize_status(&vault).await, 201);
        assert_eq!(readyz(&vault).await.0, 200);
        for file in database_files(&vault) {
            let copy = std::fs::read(&file).unwrap();
            std::fs::remove_file(&file).unwrap();
            if replace {
                std::fs::write(&file, copy).unwrap();
            }
        }
        let mut acknowledged = 0;
        for _ in 0..20 {
            let status = tokenize_status(&vault).await;
            assert_eq!(status, 503, "replace={replace}");
            acknowledged += usize::from(status == 201);
        }
        assert_eq!(acknowledged, 0);
        let body = readyz_becomes(&vault, 503).await;
        assert_eq!(body["data"]["database"], "unavailable", "{body}");
        assert!(vault.exit_status().is_none(), "the vault stays up");
        assert!(
            vault.logs().contains("was removed or replaced"),
            "the log says why"
        );
        vault.kill();
    }
}

/// Clears the immutable flag even if the test fails, so the temporary directory can go.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(files: Vec<PathBuf>) -> Self {
        for file in &files {
            run("chattr", &["+i", file.to_str().unwrap()]);
        }
        Self(files)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for file in &self.0 {
            let _ = Command::new("chattr")
                .args(["-i", file.to_str().unwrap()])
                .status();
        }
    }
}

#[tokio::test]
async fn immutable_files_are_refused_without_a_crash() {
    let stub = Stub::start().await;
    if Backend::from_env().is_scaled() || needs_root("immutable_files_are_refused_without_a_crash")
    {
        return;
    }
    let mut vault = Vault::start(&stub).await;
    let (token, _) = vault.visa().await;
    let immutable = Immutable::set(database_files(&vault));
    // Written back, the shared-memory pages are write-protected again: the next write to them
    // is the page fault that ext4 answers with SIGBUS for an immutable file.
    run("sync", &[]);
    for _ in 0..20 {
        assert_eq!(tokenize_status(&vault).await, 503);
    }
    let charge = json!({"token": token, "proxy_url": stub.url("/charge"), "request_data": {"n": "${cardNumber}"}});
    for _ in 0..5 {
        let (status, body) = vault.proxy(&charge).await;
        assert!(status == 503 || status == 200, "{status} {body}");
    }
    readyz_becomes(&vault, 503).await;
    assert!(
        vault.exit_status().is_none(),
        "the vault died: {:?}",
        vault.exit_status()
    );
    drop(immutable);
    readyz_becomes(&vault, 200).await;
    assert_eq!(tokenize_status(&vault).await, 201);
    assert!(vault.exit_status().is_none());
    vault.kill();
}

/// A mount over the vault's data directory, undone at the end (even if the test fails).
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn move_onto_tmpfs(data_dir: &Path, megabytes: u32) -> Mounted {
    let aside = data_dir.with_extension("aside");
    std::fs::rename(data_dir, &aside).unwrap();
    std::fs::create_dir(data_dir).unwrap();
    run(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            &format!("size={megabytes}m"),
            "tmpfs",
            data_dir.to_str().unwrap(),
        ],
    );
    for entry in std::fs::read_dir(&aside).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), data_dir.join(entry.file_name())).unwrap();
    }
    Mounted(data_dir.to_path_buf())
}

#[tokio::test]
async fn a_read_only_or_full_file_system_is_not_ready() {
    let stub = Stub::start().await;
    if Backend::from_env().is_scaled() || needs_root("a_read_only_or_full_file_system_is_not_ready")
    {
        return;
    }
    let mut vault = Vault::start(&stub).await;
    // The data directory is mounted over with other file systems: the log under them is not
    // the one the test ends with.
    vault.check_audit = false;
    vault.kill();
    let data_dir = vault.data_dir();
    let _tmpfs = move_onto_tmpfs(&data_dir, 48);
    vault.restart();
    assert_eq!(tokenize_status(&vault).await, 201);

    // Read-only: a read-only bind mount over the data directory (a file system with files
    // open for writing cannot be remounted read-only itself).
    let dir = data_dir.to_str().unwrap();
    run("mount", &["--bind", dir, dir]);
    let read_only = Mounted(data_dir.clone());
    run("mount", &["-o", "remount,bind,ro", dir]);
    assert_eq!(tokenize_status(&vault).await, 503);
    readyz_becomes(&vault, 503).await;
    drop(read_only);
    readyz_becomes(&vault, 200).await;
    assert_eq!(tokenize_status(&vault).await, 201);

    // Full: a file takes all but a little of the space.
    let filler = data_dir.join("filler");
    let free = {
        let out = Command::new("df")
            .args(["--output=avail", "-B1", data_dir.to_str().unwrap()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    std::fs::write(
        &filler,
        vec![0u8; usize::try_from(free - 2 * 1024 * 1024).unwrap()],
    )
    .unwrap();
    readyz_becomes(&vault, 503).await;
    assert_eq!(tokenize_status(&vault).await, 503);
    std::fs::remove_file(&filler).unwrap();
    readyz_becomes(&vault, 200).await;
    assert_eq!(tokenize_status(&vault).await, 201);
    assert!(vault.exit_status().is_none());
    vault.kill();
}
