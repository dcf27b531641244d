//! Progress display: bars only on a terminal, and only once a step has taken about a second.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

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

/// One bar per image layer (a push), with the engine's status for it, on a terminal only.
pub struct LayerBars {
    multi: MultiProgress,
    bars: HashMap<String, ProgressBar>,
    style: ProgressStyle,
}

impl LayerBars {
    pub fn new(quiet: bool) -> LayerBars {
        let target = match !quiet && std::io::stderr().is_terminal() {
            true => ProgressDrawTarget::stderr(),
            false => ProgressDrawTarget::hidden(),
        };
        LayerBars {
            multi: MultiProgress::with_draw_target(target),
            bars: HashMap::new(),
            style: ProgressStyle::with_template(
                "{prefix} {msg:22} {wide_bar} {bytes}/{total_bytes}",
            )
            .expect("valid template"),
        }
    }

    /// The engine's news of layer `id`: a status ("Pushing", "Pushed", "Layer already exists")
    /// and, while it moves, bytes done of the total.
    pub fn update(&mut self, id: &str, status: &str, done: Option<u64>, total: Option<u64>) {
        let bar = self.bars.entry(id.to_string()).or_insert_with(|| {
            let bar = self.multi.add(ProgressBar::new(0));
            bar.set_style(self.style.clone());
            bar.set_prefix(id.chars().take(12).collect::<String>());
            bar
        });
        bar.set_message(status.to_string());
        if let (Some(done), Some(total)) = (done, total) {
            bar.set_length(total);
            bar.set_position(done);
        } else if status != "Pushing" {
            bar.set_position(bar.length().unwrap_or(0));
        }
    }

    pub fn finish(self) {
        for bar in self.bars.values() {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

/// A named step: a spinner with the elapsed time and the latest line of output, on a terminal.
/// Elsewhere (a CI log) a step still running after `SHOW_AFTER` is announced on a line of its
/// own, and its end with the time it took, so that a long wait is never silent.
pub struct Step {
    bar: ProgressBar,
    plain: Option<PlainStep>,
}

/// The off-terminal announcement: a thread that waits for the step to end or `SHOW_AFTER`.
struct PlainStep {
    done: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Step {
    pub fn new(name: &str, quiet: bool) -> Step {
        let terminal = std::io::stderr().is_terminal();
        let visible = !quiet && terminal;
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
        let plain = (!quiet && !terminal).then(|| PlainStep::start(name.to_string()));
        Step { bar, plain }
    }

    pub fn message(&self, line: &str) {
        self.bar.set_message(line.to_string());
    }

    pub fn finish(self) {
        self.bar.finish_and_clear();
        if let Some(plain) = self.plain {
            let _ = plain.done.send(());
            let _ = plain.thread.join();
        }
    }
}

impl PlainStep {
    fn start(name: String) -> PlainStep {
        let (done, finished) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            if finished.recv_timeout(SHOW_AFTER).is_ok() {
                return;
            }
            eprintln!("{name} ...");
            let _ = finished.recv();
            eprintln!(
                "{name}: ended after {:.1} s",
                started.elapsed().as_secs_f64()
            );
        });
        PlainStep { done, thread }
    }
}
