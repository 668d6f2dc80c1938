//! Where the host's CPU goes during a measurement, from /proc: the server measured (the vault
//! or nginx), PostgreSQL, Redis, this process (the load generator and the processor stub) and
//! everything else. At
//! saturation the cores are shared by all of them, so a target's throughput is bounded by what
//! every one of them spends per call, not only the vault.

use std::fmt::Write as _;

/// CPU seconds used so far, by group.
#[derive(Clone, Copy, Default)]
pub struct Snapshot {
    groups: [f64; GROUPS.len()],
    /// Every core's busy time (/proc/stat), whatever used it.
    host: f64,
}

/// The groups, in the order the table shows them; the first is the server measured (the vault,
/// or nginx on its row).
pub const GROUPS: [&str; 4] = ["server", "PostgreSQL", "Redis", "generator + stub"];

impl Snapshot {
    /// Now, with `server` the measured server's process ids (none for the direct calls).
    pub fn take(server: &[u32]) -> Self {
        let mut snapshot = Self {
            host: host_busy_seconds(),
            ..Self::default()
        };
        let own = std::process::id();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return snapshot;
        };
        for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
            let group = if server.contains(&pid) {
                0
            } else if pid == own {
                3
            } else {
                match std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .unwrap_or_default()
                    .trim()
                {
                    "postgres" => 1,
                    "redis-server" => 2,
                    _ => continue,
                }
            };
            snapshot.groups[group] += crate::procs::cpu_of(pid);
        }
        snapshot
    }
}

/// What each group spent per call between two snapshots (ms), and the host's whole.
#[derive(Clone, Copy)]
pub struct PerCall {
    pub groups: [f64; GROUPS.len()],
    pub host: f64,
    /// Cores busy on average over the interval.
    pub cores_busy: f64,
}

impl PerCall {
    pub fn between(before: &Snapshot, after: &Snapshot, calls: u64, seconds: f64) -> Self {
        let per_call = |used: f64| used / calls.max(1) as f64 * 1000.0;
        let mut groups = [0.0; GROUPS.len()];
        for (i, group) in groups.iter_mut().enumerate() {
            *group = per_call((after.groups[i] - before.groups[i]).max(0.0));
        }
        let host = (after.host - before.host).max(0.0);
        Self {
            groups,
            host: per_call(host),
            cores_busy: host / seconds.max(f64::EPSILON),
        }
    }

    /// "a / b / … " cells: each group, then other (host minus the groups), then the host.
    pub fn cells(&self, out: &mut String) {
        for group in self.groups {
            let _ = write!(out, " {} |", ms(group));
        }
        let other = (self.host - self.groups.iter().sum::<f64>()).max(0.0);
        let _ = write!(
            out,
            " {} | {} ({:.2} cores) |",
            ms(other),
            ms(self.host),
            self.cores_busy
        );
    }
}

fn ms(value: f64) -> String {
    if value < 0.0005 {
        "–".to_owned()
    } else {
        format!("{value:.3}")
    }
}

/// Busy seconds of every core so far: all of /proc/stat's first line but idle and iowait.
fn host_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().next() else {
        return 0.0;
    };
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let ticks: Vec<f64> = cpu
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy: f64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    busy / 100.0
}
