//! Progress display: bars only on a terminal, and only once a step has taken about a second.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const SHOW_AFTER: Duration = Duration::from_secs(1);

/// Bytes of a transfer, with rate; hidden until the transfer has run for `SHOW_AFTER`.
pub struct TransferBar {
    bar: ProgressBar,
    started: Instant,
    enabled: bool,
}

impl TransferBar {
    pub fn new(bytes: u64, files: usize, enabled: bool) -> TransferBar {
        let bar = ProgressBar::with_draw_target(Some(bytes), ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .expect("valid template"),
        );
        bar.set_message(format!("sync: {files} files"));
        TransferBar {
            bar,
            started: Instant::now(),
            enabled: enabled && std::io::stderr().is_terminal(),
        }
    }

    pub fn advance(&self, bytes: u64) {
        if self.enabled && self.bar.is_hidden() && self.started.elapsed() >= SHOW_AFTER {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        self.bar.inc(bytes);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// A named step: a spinner with the elapsed time and the latest line of output, on a terminal.
pub struct Step {
    bar: ProgressBar,
}

impl Step {
    pub fn new(name: &str, quiet: bool) -> Step {
        let visible = !quiet && std::io::stderr().is_terminal();
        let bar = ProgressBar::with_draw_target(
            None,
            if visible {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} [{elapsed}] {wide_msg}")
                .expect("valid template"),
        );
        bar.set_prefix(name.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        Step { bar }
    }

    pub fn message(&self, line: &str) {
        self.bar.set_message(line.to_string());
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
