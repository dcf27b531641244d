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
