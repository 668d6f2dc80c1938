//! Progress of a long CLI job (key rotation, import, export): a bar on the terminal (stderr),
//! or JSON lines on stdout for automation, at most one a second (and always the last).

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

/// JSON progress lines at most this often (and always the last one).
const JSON_PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// The last state not yet printed as a JSON line: done, total, the job's own counts.
type Pending = (u64, u64, Vec<(&'static str, u64)>);

/// How far a job is: `done` of `total`, plus counts of its own (`rejected`, say).
pub(super) struct Meter {
    json: bool,
    template: String,
    bar: Option<ProgressBar>,
    started: Option<Instant>,
    last_line: Option<Instant>,
    pending: Option<Pending>,
}

impl Meter {
    /// `verb` and `unit` label the bar: `resealing … records`.
    pub(super) fn new(json: bool, verb: &str, unit: &str) -> Self {
        Self {
            json,
            template: format!(
                "{verb} {{bar:40}} {{pos}}/{{len}} {unit}  {{per_sec}}  ETA {{eta}}{{msg}}"
            ),
            bar: None,
            started: None,
            last_line: None,
            pending: None,
        }
    }

    /// Shows `done` of `total`, with the job's own counts (in the JSON line, and after the
    /// bar as `N name`).
    pub(super) fn set(&mut self, done: u64, total: u64, extra: &[(&'static str, u64)]) {
        let started = *self.started.get_or_insert_with(Instant::now);
        if self.json {
            self.pending = Some((done, total, extra.to_vec()));
            let due = self
                .last_line
                .is_none_or(|at| at.elapsed() >= JSON_PROGRESS_EVERY);
            if due || done == total {
                self.json_progress(started);
            }
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(&self.template)
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        bar.set_length(total);
        bar.set_position(done);
        if !extra.is_empty() {
            let text: String = extra
                .iter()
                .map(|(name, n)| format!("  {n} {name}"))
                .collect();
            bar.set_message(text);
        }
    }

    fn json_progress(&mut self, started: Instant) {
        let Some((done, total, extra)) = self.pending.take() else {
            return;
        };
        let seconds = started.elapsed().as_secs_f64();
        let rate = if seconds > 0.0 {
            done as f64 / seconds
        } else {
            0.0
        };
        let eta = if rate > 0.0 {
            Some((total.saturating_sub(done) as f64 / rate).ceil() as u64)
        } else {
            None
        };
        let mut line = json!({"event": "progress", "done": done, "total": total,
               "rate_per_second": rate.round(), "eta_seconds": eta});
        for (name, n) in extra {
            line[name] = json!(n);
        }
        println!("{line}");
        self.last_line = Some(Instant::now());
    }

    /// The last JSON line (if one is pending), or the bar left at its end.
    pub(super) fn finish(&mut self) {
        if let Some(started) = self.started {
            self.json_progress(started);
        }
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }
}
