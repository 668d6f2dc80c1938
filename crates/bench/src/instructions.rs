//! Instructions a call costs, counted by callgrind (valgrind's), for nginx, the vault's stack
//! alone (`cardvault-bare-forwarder`) and the vault (SQLite + memory): each served under
//! `valgrind --tool=callgrind`, warmed up with counting off, then a fixed number of calls made
//! one after another, counted and nothing else. Unlike the timed runs the count does not move
//! with the host's load or with what else runs on it, so a change of a fraction of a per cent
//! shows in one run. It counts user-space instructions, not time: a cache miss, a wait, the
//! kernel's side of a system call are not in it; and valgrind hides some of the CPU's
//! extensions (SHA-NI among them), so a hash takes more instructions under it than natively.
//! Background work a server does while the calls run (the vault's keeper) is counted, as it is
//! in the timed runs' CPU.
//!
//! Each profile (`callgrind.out`, kept in the printed directory) says by function where the
//! instructions go: `callgrind_annotate --inclusive=yes FILE`.

use std::path::{Path, PathBuf};
use std::process::Command;

use cardvault_testkit::Stub;

use super::load::Target;
use super::procs::{self, Server};
use super::{processor_body, proxy_body, proxy_target, start_vault_with, tokenize_one};

/// Calls made before counting starts: the caches, pools and the runtime's threads settled.
const WARM_UP: u64 = 200;

/// Which servers [`run`] counts.
pub struct Servers {
    pub nginx: bool,
    pub bare: bool,
    pub sqlite: bool,
    pub postgres: bool,
}

/// Counts `calls` calls through each of `servers` and prints the instructions a call.
pub async fn run(stub: &Stub, calls: u64, servers: Servers) {
    let dir = tempfile::Builder::new()
        .prefix("cardvault-instructions-")
        .tempdir()
        .expect("tempdir")
        .keep();
    let direct_headers = vec![("Content-Type".to_owned(), "application/json".to_owned())];
    let processor = stub.url("/v1/charges");
    let mut rows = Vec::new();

    if servers.nginx {
        let nginx_dir = dir.join("nginx");
        std::fs::create_dir(&nginx_dir).expect("nginx's directory");
        let launcher = callgrind(&nginx_dir);
        let nginx = procs::nginx(&nginx_dir, stub.addr.port(), &stub.ca_file, &launcher, 1);
        let target = Target {
            url: format!("{}/v1/charges", nginx.url),
            body: processor_body(),
            headers: direct_headers.clone(),
        };
        let total = count(nginx, &target, calls, &nginx_dir).await;
        rows.push(("nginx proxy_pass", total));
    }
    if servers.bare {
        let bare_dir = dir.join("bare");
        std::fs::create_dir(&bare_dir).expect("the forwarder's directory");
        let forwarder = procs::bare_forwarder(&processor, &stub.ca_file, &callgrind(&bare_dir));
        let target = Target {
            url: format!("{}/v1/charges", forwarder.url),
            body: processor_body(),
            headers: direct_headers,
        };
        let total = count(forwarder, &target, calls, &bare_dir).await;
        rows.push((super::BARE_STACK, total));
    }

    if servers.sqlite {
        let total = count_vault(stub, &processor, &[], &dir.join("vault"), calls).await;
        rows.push(("cardvault, SQLite + memory", total));
    }
    if servers.postgres {
        let backend = super::PostgresBackend::create();
        let total = count_vault(
            stub,
            &processor,
            &backend.env,
            &dir.join("vault-postgres"),
            calls,
        )
        .await;
        rows.push(("cardvault, PostgreSQL + Redis", total));
    }

    println!(
        "| {calls} calls, one at a time, under callgrind | instructions a call | of nginx's |"
    );
    println!("|---|---:|---:|");
    let nginx_total = servers.nginx.then_some(rows[0].1);
    for (name, total) in &rows {
        let of_nginx = nginx_total.map_or_else(
            || "–".to_owned(),
            |n| format!("{:.2}×", *total as f64 / n as f64),
        );
        println!(
            "| {name} | {:.0} | {of_nginx} |",
            *total as f64 / calls as f64
        );
    }
    println!(
        "profiles: {}/*/callgrind.out (callgrind_annotate --inclusive=yes FILE)",
        dir.display()
    );
}

/// Counts `calls` proxy calls to `processor` through a vault on `backend_env`'s storage, its
/// profile in `dir`.
async fn count_vault(
    stub: &Stub,
    processor: &str,
    backend_env: &[(String, String)],
    dir: &Path,
    calls: u64,
) -> u64 {
    std::fs::create_dir(dir).expect("the vault's directory");
    let vault = start_vault_with(stub, backend_env, &callgrind(dir));
    let token = tokenize_one(&super::load::client(None), &vault).await;
    let target = proxy_target(&vault, proxy_body(&token, processor));
    count(vault.server, &target, calls, dir).await
}

/// valgrind's command line for a server whose profile goes to `dir`, counting switched off
/// until the warm-up is over.
fn callgrind(dir: &Path) -> Vec<String> {
    vec![
        "valgrind".to_owned(),
        "--tool=callgrind".to_owned(),
        "--instr-atstart=no".to_owned(),
        format!("--callgrind-out-file={}", profile(dir).display()),
        format!("--log-file={}", dir.join("valgrind.log").display()),
    ]
}

fn profile(dir: &Path) -> PathBuf {
    dir.join("callgrind.out")
}

/// Warms `server` up, counts the instructions of `calls` calls to `target`, stops it (the
/// profile is written as it exits) and returns the count.
async fn count(mut server: Server, target: &Target, calls: u64, dir: &Path) -> u64 {
    let pid = server.process.id();
    let client = super::load::client(None);
    calls_to(&client, target, WARM_UP).await;
    instrumentation(pid, "on");
    calls_to(&client, target, calls).await;
    instrumentation(pid, "off");
    drop(client);
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = server.process.child_mut().wait();
    total_instructions(&profile(dir))
}

async fn calls_to(client: &reqwest::Client, target: &Target, calls: u64) {
    for _ in 0..calls {
        let succeeded = super::load::send(client, target, target.body.clone()).await;
        assert!(succeeded, "a call to {} failed", target.url);
    }
}

/// Switches counting on or off in the callgrind running as `pid`, through vgdb, which waits
/// for it (`callgrind_control` would do it too, but exits 0 when it cannot reach the process).
fn instrumentation(pid: u32, state: &str) {
    let status = Command::new("vgdb")
        .args([&format!("--pid={pid}"), "instrumentation", state])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("vgdb (Debian's valgrind package)");
    assert!(status.success(), "vgdb could not switch counting {state}");
}

/// The `totals:` line of a callgrind profile: every instruction it counted (its `summary:` line
/// stays 0 when counting starts switched off).
fn total_instructions(profile: &Path) -> u64 {
    let text =
        std::fs::read_to_string(profile).expect("a callgrind profile, written as the server exits");
    let total = text
        .lines()
        .find_map(|line| line.strip_prefix("totals:"))
        // The first event is the instructions (more follow if other events were asked for).
        .and_then(|events| events.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("a totals line in the profile");
    assert!(
        total > 0,
        "callgrind counted nothing: was counting switched on?"
    );
    total
}
