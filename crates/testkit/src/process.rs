//! Child processes under test (the vault, nginx, a private Redis): killed and reaped when dropped,
//! so a failed test or an interrupted benchmark leaves nothing running.

use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// A running child process. Invariant: once dropped, the process has been killed and reaped.
pub struct Process {
    child: Child,
}

impl Process {
    /// Spawns `command`; panics with `what` if it cannot be started.
    pub fn spawn(command: &mut Command, what: &str) -> Self {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Self::from_child(child)
    }

    /// Takes charge of an already spawned child.
    pub fn from_child(child: Child) -> Self {
        Self { child }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The child itself, e.g. to take its piped output.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// How the process ended, if it has (`None` while it runs).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited successfully.
    pub fn terminate(mut self) -> bool {
        // `kill(1)` rather than a signal call: the crates here forbid `unsafe`.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }

    /// Sends SIGTERM unless the process has already exited, and waits up to `grace` for it to
    /// exit; returns whether it did. A process already reaped is not signalled: its id may
    /// belong to another process by now.
    pub fn stop_within(&mut self, grace: Duration) -> bool {
        if self.exit_status().is_some() {
            return true;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(std::process::Stdio::null())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exit_status().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.exit_status().is_some()
    }

    /// Kills the process (SIGKILL: nothing may depend on a clean exit) and reaps it.
    pub fn kill(self) {
        drop(self);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls until something accepts TCP connections on `127.0.0.1:port`, up to `limit`; returns
/// whether it did. For servers that say nothing when they are ready.
pub fn wait_for_port(port: u16, limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        if let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            // With no listener, a connect from an ephemeral port equal to `port` meets itself
            // (TCP simultaneous open) and "succeeds"; that is not a server.
            let connected_to_itself = stream.local_addr().ok() == stream.peer_addr().ok();
            if !connected_to_itself {
                return true;
            }
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_runs_until_terminated_and_a_signal_is_not_success() {
        let mut sleeper = Process::spawn(Command::new("sleep").arg("30"), "sleep");
        assert!(sleeper.exit_status().is_none());
        assert!(!sleeper.terminate());
    }

    #[test]
    fn a_dropped_process_is_killed() {
        let sleeper = Process::spawn(Command::new("sleep").arg("30"), "sleep");
        let proc_dir = format!("/proc/{}", sleeper.id());
        assert!(std::path::Path::new(&proc_dir).exists());
        drop(sleeper);
        // Reaped, not a zombie: the pid is gone.
        assert!(!std::path::Path::new(&proc_dir).exists());
    }

    #[test]
    fn waiting_for_a_port_sees_a_listener_and_gives_up_on_none() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(wait_for_port(port, Duration::from_secs(1)));
        drop(listener);
        // A port bound but not listening: connections to it are refused, and no listener of a
        // test running alongside can take it meanwhile, as it could take a port just freed.
        let held = tokio::net::TcpSocket::new_v4().unwrap();
        held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = held.local_addr().unwrap().port();
        assert!(!wait_for_port(port, Duration::from_millis(100)));
    }
}
