//! The async runtimes the process runs on: a multi-threaded runtime for start-up, the accept
//! loop, background jobs and CLI commands, and threads of their own that serve the calls, a
//! single-threaded runtime each (see [`crate::serving_threads`]). Both take their
//! thread count from `CARDVAULT_WORKER_THREADS`, default one per core, the one setting read
//! before anything else, since the runtime exists before the settings are loaded.
//!
//! Fewer threads than cores can be the better choice where the vault shares its cores (a small
//! VM with its database, a sidecar): every hand-off between two threads wakes a parked one.
//! With fewer threads, though, one slow moment on a thread (a statement waiting on the disk)
//! holds more of the calls.

/// The environment variable that sets the number of worker threads.
pub const WORKER_THREADS_ENV: &str = "CARDVAULT_WORKER_THREADS";

/// Upper bound on workers: far above any useful count, and a typo's guard.
const MAX_WORKER_THREADS: usize = 1024;

/// A multi-threaded runtime with every driver on, its worker count from `CARDVAULT_WORKER_THREADS`.
///
/// # Errors
/// A message naming the setting when its value is not a whole number from 1 to 1024, or the
/// runtime's own error.
pub fn build() -> Result<tokio::runtime::Runtime, String> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(workers) = worker_threads(std::env::var(WORKER_THREADS_ENV).ok().as_deref())? {
        builder.worker_threads(workers);
    }
    builder
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// Threads serving connections: `CARDVAULT_WORKER_THREADS` (checked when the runtime was
/// built), else one per core.
pub fn serving_threads() -> usize {
    worker_threads(std::env::var(WORKER_THREADS_ENV).ok().as_deref())
        .ok()
        .flatten()
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
}

/// The setting's value: `None` when unset (one worker per core).
fn worker_threads(value: Option<&str>) -> Result<Option<usize>, String> {
    let Some(value) = value else {
        return Ok(None);
    };
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_WORKER_THREADS).contains(&n) => Ok(Some(n)),
        _ => Err(format!(
            "{WORKER_THREADS_ENV} must be a whole number from 1 to {MAX_WORKER_THREADS} (unset: one per core)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::worker_threads;

    #[test]
    fn the_worker_count_is_a_whole_number_from_one_to_1024() {
        assert_eq!(worker_threads(None), Ok(None));
        assert_eq!(worker_threads(Some("1")), Ok(Some(1)));
        assert_eq!(worker_threads(Some(" 8 ")), Ok(Some(8)));
        assert_eq!(worker_threads(Some("1024")), Ok(Some(1024)));
        for bad in ["0", "-1", "two", "", "1.5", "1025"] {
            let refused = worker_threads(Some(bad)).unwrap_err();
            assert!(
                refused.contains("CARDVAULT_WORKER_THREADS"),
                "{bad}: {refused}"
            );
        }
    }
}
