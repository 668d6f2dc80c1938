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
//! (the embedded database's statements give up at once when they would wait, and take turns on
//! the writer connection by awaiting: see `store::sql::direct`). And a connection never moves:
//! a new one goes to the thread serving the fewest, but a client that sends everything over
//! one HTTP/2 connection is served by one core.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use thread_local::ThreadLocal;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    static SERVING: Cell<bool> = const { Cell::new(false) };
}

/// Whether the calling thread is a serving thread.
pub fn on_serving_thread() -> bool {
    SERVING.with(Cell::get)
}

/// A connection (or pool) to a service outside the process for each serving thread, opened
/// there on first use, and one for every other thread. A connection is driven by the reactor
/// of the runtime that opened it: shared by all threads, each use from another thread would
/// hand its reads and writes over by a wake-up (docs/benchmarks.md, issue 17). Background
/// work (sweeps, key reloads, the metrics listener) keeps to the one for other threads.
///
/// It must not outlive the serving threads it was used on: a later thread given a finished
/// one's id would find that thread's connection, driven by a runtime that is gone. In `serve`
/// the serving threads are stopped last, once the server stops, and none starts after them.
pub struct OnePerServingThread<T: Send> {
    elsewhere: T,
    /// `None`: every thread uses `elsewhere`.
    each: Option<(ThreadLocal<T>, Opener<T>)>,
}

type Opener<T> = Box<dyn Fn() -> T + Send + Sync>;

impl<T: Send> OnePerServingThread<T> {
    /// Every thread uses `shared`.
    pub fn shared(shared: T) -> Self {
        Self {
            elsewhere: shared,
            each: None,
        }
    }

    /// Each serving thread uses one `open` makes there on first use; other threads `elsewhere`.
    pub fn per_thread(elsewhere: T, open: impl Fn() -> T + Send + Sync + 'static) -> Self {
        Self {
            elsewhere,
            each: Some((ThreadLocal::new(), Box::new(open))),
        }
    }

    /// The calling thread's.
    pub fn get(&self) -> &T {
        match &self.each {
            Some((each, open)) if on_serving_thread() => each.get_or(open),
            _ => &self.elsewhere,
        }
    }
}

impl<T: Send + Sync> OnePerServingThread<T> {
    /// Every one opened so far, the shared one first.
    pub fn all(&self) -> impl Iterator<Item = &T> {
        std::iter::once(&self.elsewhere).chain(self.each.iter().flat_map(|(each, _)| each.iter()))
    }
}

/// The serving threads; dropping this stops them (their tasks are dropped with them), and
/// [`ServingThreads::stop`] waits until they have.
pub struct ServingThreads {
    threads: Vec<ServingThread>,
    /// Where the search for the least busy thread starts, so ties are dealt in turn.
    next: AtomicUsize,
    stops: Vec<oneshot::Sender<()>>,
    /// One for each thread, closed once its runtime and every task left on it are dropped.
    gone: Vec<oneshot::Receiver<()>>,
}

struct ServingThread {
    handle: Handle,
    /// Tasks spawned here and not finished yet.
    tasks: Arc<AtomicUsize>,
}

/// Counts a task as finished when it ends or is dropped.
struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ServingThreads {
    /// Starts `count` threads (at least one), named `cardvault-serve-N`.
    ///
    /// # Errors
    /// When a runtime or a thread cannot be created.
    pub fn start(count: usize) -> std::io::Result<Self> {
        let mut threads = Vec::new();
        let mut stops = Vec::new();
        let mut gone = Vec::new();
        for n in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                // The log lines the thread held while it worked go out as it goes idle.
                .on_thread_park(crate::logging::flush_this_thread)
                .build()?;
            threads.push(ServingThread {
                handle: runtime.handle().clone(),
                tasks: Arc::new(AtomicUsize::new(0)),
            });
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            let (alive, thread_gone) = oneshot::channel::<()>();
            gone.push(thread_gone);
            std::thread::Builder::new()
                .name(format!("cardvault-serve-{n}"))
                .spawn(move || {
                    SERVING.with(|serving| serving.set(true));
                    // Runs the thread's tasks until told to stop (or the sender is gone).
                    let _ = runtime.block_on(stopped);
                    // The tasks still here (a processor connection's driver, an audit writer)
                    // go with the runtime, before anyone waiting in `stop` hears of it.
                    drop(runtime);
                    crate::logging::flush_this_thread();
                    drop(alive);
                })?;
        }
        Ok(Self {
            threads,
            next: AtomicUsize::new(0),
            stops,
            gone,
        })
    }

    /// Stops the threads and waits, up to `within`, until each has dropped its runtime and
    /// every task on it; returns whether all did. A process that exits while a serving thread
    /// is still dropping its tasks runs its exit handlers (a PKCS#11 module's among them) under
    /// that thread's feet.
    pub async fn stop(mut self, within: Duration) -> bool {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        let gone = std::mem::take(&mut self.gone);
        tokio::time::timeout(within, async {
            for thread in gone {
                // Closed, never sent: the error is the signal.
                let _ = thread.await;
            }
        })
        .await
        .is_ok()
    }

    /// Runs `task` on the thread with the fewest unfinished tasks (ties in turn).
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let count = self.threads.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let thread = (0..count)
            .map(|i| &self.threads[(start + i) % count])
            .min_by_key(|t| t.tasks.load(Ordering::Relaxed))
            .unwrap_or(&self.threads[0]);
        thread.tasks.fetch_add(1, Ordering::Relaxed);
        let running = Running(thread.tasks.clone());
        drop(thread.handle.spawn(async move {
            let _running = running;
            task.await;
        }));
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
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::{OnePerServingThread, ServingThreads};

    #[tokio::test]
    async fn tasks_are_spread_over_every_thread_and_stay_there() {
        let threads = ServingThreads::start(3).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..6 {
            let seen = seen.clone();
            let done = done.clone();
            threads.spawn(async move {
                let before = std::thread::current().id();
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
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

    /// Counts its drop, which first waits for `gate` (or gives up waiting after a while): a
    /// stop that did not wait for the threads would return before the count moves.
    struct SlowToDrop {
        dropped: Arc<AtomicUsize>,
        gate: Arc<std::sync::Mutex<std::sync::mpsc::Receiver<()>>>,
    }

    impl Drop for SlowToDrop {
        fn drop(&mut self) {
            let gate = self.gate.lock().unwrap();
            let _ = gate.recv_timeout(Duration::from_secs(10));
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Spawns `count` tasks that never finish, each holding a [`SlowToDrop`] behind `gate`,
    /// and waits until all have started.
    async fn park_tasks(
        threads: &ServingThreads,
        count: usize,
        gate: std::sync::mpsc::Receiver<()>,
    ) -> Arc<AtomicUsize> {
        let dropped = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(std::sync::Mutex::new(gate));
        let (started, mut starts) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..count {
            let held = SlowToDrop {
                dropped: dropped.clone(),
                gate: gate.clone(),
            };
            let started = started.clone();
            threads.spawn(async move {
                let _held = held;
                started.send(()).unwrap();
                std::future::pending::<()>().await;
            });
        }
        for _ in 0..count {
            starts.recv().await.unwrap();
        }
        dropped
    }

    #[tokio::test]
    async fn stopping_returns_once_every_task_left_on_the_threads_is_dropped() {
        let threads = ServingThreads::start(2).unwrap();
        let (open, gate) = std::sync::mpsc::channel();
        let dropped = park_tasks(&threads, 4, gate).await;
        // Opened a little later, from elsewhere: the drops wait for it, and `stop` for them.
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            for _ in 0..4 {
                let _ = open.send(());
            }
        });
        assert!(threads.stop(Duration::from_secs(30)).await);
        assert_eq!(dropped.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn stopping_says_so_when_a_thread_is_still_dropping_its_tasks_at_the_deadline() {
        let threads = ServingThreads::start(1).unwrap();
        let (open, gate) = std::sync::mpsc::channel();
        let dropped = park_tasks(&threads, 1, gate).await;
        assert!(!threads.stop(Duration::from_millis(20)).await);
        assert_eq!(dropped.load(Ordering::SeqCst), 0);
        open.send(()).unwrap();
    }

    #[tokio::test]
    async fn a_new_task_goes_to_the_thread_with_the_fewest_unfinished() {
        let threads = ServingThreads::start(2).unwrap();
        let (started, mut starts) = tokio::sync::mpsc::unbounded_channel();
        let (release, released) = tokio::sync::watch::channel(false);
        let held = |started: tokio::sync::mpsc::UnboundedSender<_>| {
            let mut released = released.clone();
            async move {
                started.send(std::thread::current().id()).unwrap();
                let _ = released.wait_for(|r| *r).await;
            }
        };
        threads.spawn(held(started.clone()));
        let busy = starts.recv().await.unwrap();
        let short = started.clone();
        threads.spawn(async move {
            short.send(std::thread::current().id()).unwrap();
        });
        let idle = starts.recv().await.unwrap();
        assert_ne!(busy, idle);
        // The short task is over; dealt in turn, the third task would go where the first is.
        tokio::time::sleep(Duration::from_millis(20)).await;
        threads.spawn(held(started.clone()));
        assert_eq!(starts.recv().await.unwrap(), idle, "the least busy thread");
        release.send(true).unwrap();
    }

    #[tokio::test]
    async fn each_serving_thread_opens_its_own_and_other_threads_share_one() {
        let threads = ServingThreads::start(2).unwrap();
        let opened = Arc::new(AtomicUsize::new(0));
        let counter = opened.clone();
        // Each value names the thread that opened it (`None`: the shared one).
        let per_thread = Arc::new(OnePerServingThread::per_thread(None, move || {
            counter.fetch_add(1, Ordering::Relaxed);
            Some(std::thread::current().id())
        }));
        let (seen, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..6 {
            let (per_thread, seen) = (per_thread.clone(), seen.clone());
            threads.spawn(async move {
                let here = std::thread::current().id();
                seen.send((here, *per_thread.get())).unwrap();
            });
        }
        let mut by_thread = Vec::new();
        for _ in 0..6 {
            by_thread.push(seen_rx.recv().await.unwrap());
        }
        for (thread, opened_by) in &by_thread {
            assert_eq!(Some(*thread), *opened_by, "a serving thread uses its own");
        }
        assert_eq!(
            opened.load(Ordering::Relaxed),
            2,
            "one opened on each serving thread"
        );
        assert_eq!(
            *per_thread.get(),
            None,
            "another thread uses the shared one"
        );
        assert_eq!(per_thread.all().count(), 3);
        let shared = OnePerServingThread::shared(7);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let shared = Arc::new(shared);
        let on_thread = shared.clone();
        threads.spawn(async move {
            tx.send(*on_thread.get()).unwrap();
        });
        assert_eq!(
            rx.await.unwrap(),
            7,
            "without per_thread, serving threads share it too"
        );
    }
}
