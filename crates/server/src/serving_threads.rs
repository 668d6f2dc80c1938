//! Threads that serve client connections, each running a single-threaded runtime of its own.
//!
//! A connection is given to one of them when it is accepted and stays there: its requests, the
//! handler's work and the tasks it spawns (an upstream connection's driver included, since the
//! processor clients are per thread: see [`crate::upstream`]) all run on that thread. On tokio's
//! multi-threaded runtime a call crossed threads several times (the connection's task, the
//! upstream connection's task, the audit writer), and every crossing woke a parked worker; at
//! moderate load those wake-ups were the larger part of a call's CPU (docs/benchmarks.md,
//! issue 17). This is the layout nginx has: one event loop per core, no hand-offs.
//!
//! The price: a slow moment on one thread (a statement waiting on the disk) holds the
//! connections that thread serves, not the others; so nothing that may wait long runs inline
//! (the embedded database's statements give up at once when they would wait: see
//! `store::sql::direct`).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The serving threads; dropping this stops them (their tasks are dropped with them).
pub struct ServingThreads {
    handles: Vec<Handle>,
    next: AtomicUsize,
    stops: Vec<oneshot::Sender<()>>,
}

impl ServingThreads {
    /// Starts `count` threads (at least one), named `cardvault-serve-N`.
    ///
    /// # Errors
    /// When a runtime or a thread cannot be created.
    pub fn start(count: usize) -> std::io::Result<Self> {
        let mut handles = Vec::new();
        let mut stops = Vec::new();
        for n in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("cardvault-serve-{n}"))
                .spawn(move || {
                    // Runs the thread's tasks until told to stop (or the sender is gone).
                    let _ = runtime.block_on(stopped);
                })?;
        }
        Ok(Self {
            handles,
            next: AtomicUsize::new(0),
            stops,
        })
    }

    /// Runs `task` on the next thread in turn.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        drop(self.handles[n].spawn(task));
    }
}

impl Drop for ServingThreads {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    use super::ServingThreads;

    #[tokio::test]
    async fn tasks_are_dealt_to_every_thread_in_turn_and_stay_there() {
        let threads = ServingThreads::start(3).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..6 {
            let seen = seen.clone();
            let done = done.clone();
            threads.spawn(async move {
                let before = std::thread::current().id();
                tokio::task::yield_now().await;
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                // A task resumes where it started: no other thread ever polls it.
                assert_eq!(before, std::thread::current().id());
                seen.lock().unwrap().push(before);
                done.send(()).unwrap();
            });
        }
        for _ in 0..6 {
            finished.recv().await.unwrap();
        }
        let seen = seen.lock().unwrap();
        let distinct: HashSet<_> = seen.iter().collect();
        assert_eq!(distinct.len(), 3, "every thread served: {seen:?}");
        assert!(!distinct.contains(&std::thread::current().id()));
    }
}
