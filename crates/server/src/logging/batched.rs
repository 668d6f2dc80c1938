//! Standard error, with a serving thread's info lines written in batches.
//!
//! A line is one `write` of its own to standard error, through the process-wide lock Rust's
//! `Stderr` takes; at saturation that was a system call for each proxy call's access line
//! (docs/benchmarks.md, issue 17's thirty-second step). On a serving thread, lines below a
//! warning wait in the thread's buffer instead, and go out together when it holds
//! [`FLUSH_AT`] bytes, when the thread goes idle (its runtime's park: at most one event loop's
//! turn after the line) and when the thread ends. A warning or an error is written at once,
//! after what the thread holds, so a thread's lines keep their order and the lines that
//! matter most are never held. Other threads (start-up, background work, the CLI) write each
//! line at once, as before.
//!
//! What a batch costs: an info line may reach the log up to one busy stretch of its thread
//! late, and the lines a thread holds are lost if the process is killed outright.

use std::cell::RefCell;
use std::io::{self, Write};

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

use crate::serving_threads::on_serving_thread;

/// A thread's held lines are written once they reach this many bytes (a few dozen lines).
pub const FLUSH_AT: usize = 8 * 1024;

thread_local! {
    static HELD: RefCell<Held> = const { RefCell::new(Held(Vec::new())) };
}

/// A thread's lines not written yet; written when the thread ends.
struct Held(Vec<u8>);

impl Held {
    fn write_out(&mut self) {
        if !self.0.is_empty() {
            // A line that cannot be written has nowhere else to go.
            let _ = write_to_stderr(&self.0);
            self.0.clear();
        }
    }
}

#[cfg(not(test))]
fn write_to_stderr(bytes: &[u8]) -> io::Result<()> {
    io::stderr().lock().write_all(bytes)
}

/// The unit tests' standard error: what was written, in order.
#[cfg(test)]
static WRITTEN: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

#[cfg(test)]
fn write_to_stderr(bytes: &[u8]) -> io::Result<()> {
    WRITTEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .extend_from_slice(bytes);
    Ok(())
}

impl Drop for Held {
    fn drop(&mut self) {
        self.write_out();
    }
}

/// Writes what this thread holds. Serving threads call it when they go idle and as they end.
pub fn flush_this_thread() {
    // `try_with`: during the thread's own teardown the buffer may be gone already (and was
    // written as it went).
    let _ = HELD.try_with(|held| {
        if let Ok(mut held) = held.try_borrow_mut() {
            held.write_out();
        }
    });
}

/// Standard error as [`tracing_subscriber`]'s writer, batching as the module says.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchedStderr;

impl<'a> MakeWriter<'a> for BatchedStderr {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter { may_wait: false }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LineWriter {
        // In `tracing`, the less severe a level, the greater it is.
        LineWriter {
            may_wait: *meta.level() >= Level::INFO && on_serving_thread(),
        }
    }
}

/// One line's writer (the formatter writes a whole line with one `write_all`).
pub struct LineWriter {
    may_wait: bool,
}

impl Write for LineWriter {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let held = HELD.try_with(|held| {
            let Ok(mut held) = held.try_borrow_mut() else {
                return false;
            };
            if self.may_wait {
                held.0.extend_from_slice(line);
                if held.0.len() >= FLUSH_AT {
                    held.write_out();
                }
            } else {
                // What the thread holds goes first: its lines stay in order.
                held.0.extend_from_slice(line);
                held.write_out();
            }
            true
        });
        match held {
            Ok(true) => Ok(line.len()),
            // The thread is ending (or a write is already under way on it): at once.
            _ => write_to_stderr(line).map(|()| line.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::{Duration, Instant};

    use tracing_subscriber::layer::SubscriberExt;

    use super::{BatchedStderr, FLUSH_AT, WRITTEN};
    use crate::serving_threads::ServingThreads;

    fn written() -> String {
        String::from_utf8_lossy(&WRITTEN.lock().unwrap()).into_owned()
    }

    /// Runs `lines` on a serving thread under a subscriber writing to [`BatchedStderr`].
    async fn on_a_serving_thread(threads: &ServingThreads, lines: impl FnOnce() + Send + 'static) {
        let (done, finished) = tokio::sync::oneshot::channel();
        threads.spawn(async move {
            let subscriber =
                tracing_subscriber::registry().with(crate::logging::text_lines(BatchedStderr));
            let _guard = tracing::subscriber::set_default(subscriber);
            lines();
            let _ = done.send(());
        });
        finished.await.unwrap();
    }

    fn eventually(what: &str) {
        let until = Instant::now() + Duration::from_secs(5);
        while !written().contains(what) {
            assert!(Instant::now() < until, "{what} never written");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    // One test: the lines of every case go to the same captured standard error.
    #[tokio::test]
    async fn a_serving_threads_info_lines_wait_for_a_warning_a_full_buffer_or_the_thread_going_idle()
     {
        let threads = ServingThreads::start(1).unwrap();

        // Held while the thread works; written, in order, with the first warning after them.
        on_a_serving_thread(&threads, || {
            tracing::info!("case-one-first");
            tracing::info!("case-one-second");
            assert!(!written().contains("case-one-first"));
            tracing::warn!("case-one-warning");
            let all = written();
            let first = all.find("case-one-first").unwrap();
            let second = all.find("case-one-second").unwrap();
            let warning = all.find("case-one-warning").unwrap();
            assert!(first < second && second < warning, "{all}");
        })
        .await;

        // Written once the thread goes idle, without anything else happening on it.
        on_a_serving_thread(&threads, || {
            tracing::info!("case-two-idle");
            assert!(!written().contains("case-two-idle"));
        })
        .await;
        eventually("case-two-idle");

        // Written while the thread is still busy once the held lines fill the buffer.
        on_a_serving_thread(&threads, || {
            let line = "x".repeat(200);
            let mut lines = 0;
            while !written().contains("case-three-0 ") {
                tracing::info!("case-three-{lines} {line}");
                lines += 1;
                assert!(
                    lines * 200 <= FLUSH_AT + 400,
                    "nothing written after {lines} lines"
                );
            }
        })
        .await;

        // Off a serving thread, a line is written at once.
        let subscriber =
            tracing_subscriber::registry().with(crate::logging::text_lines(BatchedStderr));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("case-four-elsewhere");
            assert!(written().contains("case-four-elsewhere"));
        });

        // Held lines are written as the thread ends.
        on_a_serving_thread(&threads, || tracing::info!("case-five-stop")).await;
        assert!(threads.stop(Duration::from_secs(5)).await);
        eventually("case-five-stop");
    }
}
