//! One sandbox: a runtime that takes one invocation at a time from its function's queue, as a
//! Lambda execution environment does. It times invocations out, notices its runtime ending (and
//! fails what it held), keeps the invocation's log lines, and accounts for Lambda's REPORT.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;

use super::{Answer, Ending, Function, Launcher, Report, Request};

/// Log lines kept for error messages.
const LAST_LINES: usize = 20;
/// What `X-Amz-Log-Type: Tail` returns: the last 4 KB.
const TAIL_BYTES: usize = 4096;

/// An invocation waiting for a sandbox.
pub(crate) struct Pending {
    pub request_id: String,
    pub request: Request,
    pub done: oneshot::Sender<Answer>,
}

/// A function's invocations waiting for a sandbox; each sandbox's `/next` takes the oldest.
#[derive(Default)]
pub(crate) struct Queue {
    items: Mutex<VecDeque<Pending>>,
    arrived: Notify,
    /// Sandboxes blocked in `/next`.
    pub waiting: AtomicUsize,
}

impl Queue {
    pub fn push(&self, pending: Pending) {
        self.items.lock().expect("not poisoned").push_back(pending);
        self.arrived.notify_one();
    }

    fn push_front(&self, pending: Pending) {
        self.items.lock().expect("not poisoned").push_front(pending);
        self.arrived.notify_one();
    }

    pub fn pop(&self) -> Option<Pending> {
        self.items.lock().expect("not poisoned").pop_front()
    }

    pub fn len(&self) -> usize {
        self.items.lock().expect("not poisoned").len()
    }

    /// Wake every waiter, e.g. so that a sandbox that ended stops waiting.
    pub fn wake_all(&self) {
        self.arrived.notify_waiters();
    }

    /// The next invocation; `None` as soon as `gone()` says the waiter has no use for one.
    async fn next(&self, gone: impl Fn() -> bool) -> Option<Pending> {
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if gone() {
                return None;
            }
            if let Some(pending) = self.pop() {
                return Some(pending);
            }
            arrived.await;
        }
    }
}

/// Counts a sandbox as waiting in `/next` for as long as it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What `/next` hands the runtime.
pub(crate) struct Work {
    pub request_id: String,
    pub payload: Bytes,
    pub deadline_ms: u128,
    pub client_context: Option<String>,
    pub trace_id: String,
}

/// Why the Runtime API refuses a response or error post.
pub(crate) enum Refusal {
    /// Never handed out here.
    UnknownRequest,
    /// Already answered, or timed out.
    WrongState,
}

pub(crate) struct Sandbox<L: Launcher> {
    pub id: String,
    pub function: Arc<Function>,
    queue: Arc<Queue>,
    launcher: Arc<L>,
    launched_at: Instant,
    /// Prefix for log lines on stderr (serve mode, several functions); `None` prints them as is.
    log_prefix: Option<String>,
    state: Mutex<State>,
    /// The Runtime API's accept loop, ended with the sandbox.
    pub server: Mutex<Option<JoinHandle<()>>>,
    /// True once the launch has started the runtime (it has a name to stop) or failed.
    settled: watch::Sender<bool>,
}

/// How long `stop` waits for a launch that is still starting.
const SETTLE_DEADLINE: Duration = Duration::from_secs(20);
const ISSUED_REMEMBERED: usize = 64;
/// With `X-Amz-Log-Type: Tail`, an answer waits until the runtime has printed nothing for this
/// long since it came (its lines arrive through the engine's log stream, after the answer at
/// times), and no longer than `OUTPUT_WAIT`.
const OUTPUT_QUIET: Duration = Duration::from_millis(100);
const OUTPUT_WAIT: Duration = Duration::from_millis(500);

#[derive(Default)]
struct State {
    /// The launched runtime's name, for `stop`.
    name: Option<String>,
    /// When the runtime first asked for work: the end of its initialisation.
    ready: Option<Instant>,
    /// The next answer is the first of this sandbox (a cold start): it reports the init time.
    cold: bool,
    current: Option<Current>,
    /// The latest request ids handed out (a warm sandbox serves any number: the oldest are
    /// forgotten), so that a late post for one is told "wrong state", not "unknown".
    issued: VecDeque<String>,
    ended: bool,
    init_error: Option<Bytes>,
    init_timed_out: bool,
    last_lines: VecDeque<String>,
    max_memory_mb: Option<u64>,
    /// When the runtime last printed a line.
    last_output: Option<Instant>,
}

struct Current {
    request_id: String,
    started: Instant,
    done: oneshot::Sender<Answer>,
    want_logs: bool,
    /// Its answer arrived; the output that preceded it is still being collected.
    answered: bool,
    logs: String,
    timer: JoinHandle<()>,
}

impl<L: Launcher> Sandbox<L> {
    pub fn new(
        id: String,
        function: Arc<Function>,
        queue: Arc<Queue>,
        launcher: Arc<L>,
        log_prefix: Option<String>,
    ) -> Sandbox<L> {
        Sandbox {
            id,
            function,
            queue,
            launcher,
            launched_at: Instant::now(),
            log_prefix,
            state: Mutex::default(),
            server: Mutex::default(),
            settled: watch::Sender::new(false),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("not poisoned")
    }

    pub fn launched(&self, name: String) {
        self.state().name = Some(name);
        self.settled.send_replace(true);
    }

    pub fn has_ended(&self) -> bool {
        self.state().ended
    }

    pub fn is_initialising(&self) -> bool {
        let state = self.state();
        state.ready.is_none() && !state.ended
    }

    /// `/next`: wait for an invocation and make it this sandbox's current one.
    pub async fn next(self: &Arc<Self>) -> Option<Work> {
        {
            let mut state = self.state();
            if state.ready.is_none() {
                state.ready = Some(Instant::now());
                state.cold = true;
            }
        }
        self.queue.waiting.fetch_add(1, Ordering::SeqCst);
        let waiting = Waiting(&self.queue.waiting);
        let pending = self.queue.next(|| self.has_ended()).await?;
        drop(waiting);
        if self.has_ended() {
            self.queue.push_front(pending);
            return None;
        }
        Some(self.begin(pending))
    }

    fn begin(self: &Arc<Self>, pending: Pending) -> Work {
        let Pending {
            request_id,
            request,
            done,
        } = pending;
        let timeout = self.function.timeout;
        let deadline = SystemTime::now() + timeout;
        let timer = {
            let (sandbox, id) = (self.clone(), request_id.clone());
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                sandbox.time_out(&id).await;
            })
        };
        let start_line = match self.function.sandbox.as_root {
            true => format!(
                "START RequestId: {request_id} Version: $LATEST (as root, on a writable root \
                 filesystem: --as-root; Lambda runs neither)"
            ),
            false => format!("START RequestId: {request_id} Version: $LATEST"),
        };
        {
            let mut state = self.state();
            if state.issued.len() == ISSUED_REMEMBERED {
                state.issued.pop_front();
            }
            state.issued.push_back(request_id.clone());
            state.current = Some(Current {
                request_id: request_id.clone(),
                started: Instant::now(),
                done,
                want_logs: request.want_logs,
                answered: false,
                logs: String::new(),
                timer,
            });
        }
        self.log(&start_line);
        Work {
            deadline_ms: deadline
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis()),
            payload: request.payload,
            client_context: request.client_context,
            trace_id: super::trace_id(),
            request_id,
        }
    }

    /// `/response` or `/error` of `request_id`.
    pub async fn complete(
        self: &Arc<Self>,
        request_id: &str,
        ending: Ending,
        body: Bytes,
    ) -> Result<(), Refusal> {
        let want_logs = {
            let mut state = self.state();
            let issued = state.issued.iter().any(|id| id == request_id);
            match &mut state.current {
                Some(c) if c.request_id == request_id && !c.answered => {
                    c.answered = true;
                    c.want_logs
                }
                _ if issued => return Err(Refusal::WrongState),
                _ => return Err(Refusal::UnknownRequest),
            }
        };
        if want_logs {
            // The runtime's last lines travel through the engine's log stream and may come
            // after its answer: the tail the caller asked for should hold them.
            self.await_quiet_output().await;
        }
        let current = {
            let mut state = self.state();
            match &state.current {
                Some(c) if c.request_id == request_id => state.current.take(),
                // Its deadline passed while the output settled: the timeout answered.
                _ => None,
            }
        };
        if let Some(current) = current {
            current.timer.abort();
            self.finish(current, ending, body).await;
        }
        Ok(())
    }

    /// The invocation ran out of time: answer for it, and end the sandbox (Lambda resets it).
    async fn time_out(self: &Arc<Self>, request_id: &str) {
        let current = {
            let mut state = self.state();
            match &state.current {
                Some(c) if c.request_id == request_id => state.current.take(),
                _ => None,
            }
        };
        let Some(current) = current else { return };
        let seconds = self.function.timeout.as_secs_f64();
        self.log(&format!(
            "{request_id} Task timed out after {seconds:.2} seconds"
        ));
        let body = error_body(
            "Sandbox.Timedout",
            &format!("RequestId: {request_id} Error: Task timed out after {seconds:.2} seconds"),
        );
        self.finish(current, Ending::Timeout, body).await;
        self.stop().await;
    }

    /// `/init/error`: remember the error for the invocation that waited for this sandbox, and
    /// end the runtime, as Lambda does. Once the runtime has asked for work its init is over,
    /// and a late `/init/error` is refused (`false`): it must not end a sandbox that serves.
    pub async fn init_failed(&self, body: Bytes) -> bool {
        {
            let mut state = self.state();
            if state.ready.is_some() {
                return false;
            }
            state.init_error = Some(body);
        }
        self.stop().await;
        true
    }

    /// The init took longer than Lambda allows (10 s, then the function's timeout).
    pub async fn init_too_slow(&self) {
        {
            let mut state = self.state();
            if state.ready.is_some() || state.ended {
                return;
            }
            state.init_timed_out = true;
        }
        self.stop().await;
    }

    /// Stop the runtime; one still being launched is waited for first, or it would outlive
    /// the stop (and, at Ctrl-C, n10n-dev).
    pub async fn stop(&self) {
        let mut settled = self.settled.subscribe();
        let _ = tokio::time::timeout(SETTLE_DEADLINE, settled.wait_for(|s| *s)).await;
        let name = self.state().name.clone();
        if let Some(name) = name {
            self.launcher.stop(&name).await;
        }
    }

    /// The runtime ended (`how`: "exit status 3"). Fails what it held; returns the answer owed
    /// to a queued invocation when it ended before it ever asked for work.
    pub async fn ended(self: &Arc<Self>, how: &str) -> Option<(Ending, Bytes)> {
        self.settled.send_replace(true);
        let (current, owed) = {
            let mut state = self.state();
            state.ended = true;
            let owed = match (&state.init_error, state.ready, state.init_timed_out) {
                (Some(body), _, _) => Some((Ending::InitError, body.clone())),
                (None, None, true) => Some((
                    Ending::InitError,
                    error_body(
                        "Runtime.InitTimeout",
                        &format!(
                            "Error: the runtime did not ask for work within {} s",
                            (super::INIT_GRACE + self.function.timeout).as_secs()
                        ),
                    ),
                )),
                (None, None, false) => Some((
                    Ending::InitError,
                    error_body(
                        "Runtime.ExitError",
                        &format!("Error: Runtime exited with error: {how}"),
                    ),
                )),
                (None, Some(_), _) => None,
            };
            (state.current.take(), owed)
        };
        self.queue.wake_all();
        if let Some(server) = self.server.lock().expect("not poisoned").take() {
            server.abort();
        }
        if let Some(current) = current {
            current.timer.abort();
            let body = error_body(
                "Runtime.ExitError",
                &format!(
                    "RequestId: {} Error: Runtime exited with error: {how}",
                    current.request_id
                ),
            );
            self.finish(current, Ending::Crashed, body).await;
            return None;
        }
        owed
    }

    /// A line of the runtime's output: on stderr, and in the current invocation's logs.
    pub fn log(&self, line: &str) {
        match &self.log_prefix {
            Some(prefix) => eprintln!("{prefix} | {line}"),
            None => eprintln!("{line}"),
        }
        let mut state = self.state();
        state.last_output = Some(Instant::now());
        if state.last_lines.len() == LAST_LINES {
            state.last_lines.pop_front();
        }
        state.last_lines.push_back(line.to_string());
        if let Some(current) = state.current.as_mut().filter(|c| c.want_logs) {
            current.logs.push_str(line);
            current.logs.push('\n');
            if current.logs.len() > 2 * TAIL_BYTES {
                let cut = floor_char_boundary(&current.logs, current.logs.len() - TAIL_BYTES);
                current.logs.drain(..cut);
            }
        }
    }

    /// Wait until the runtime has printed nothing for `OUTPUT_QUIET` since its answer came, at
    /// most `OUTPUT_WAIT`.
    async fn await_quiet_output(&self) {
        let answered = Instant::now();
        while answered.elapsed() < OUTPUT_WAIT {
            let last = self
                .state()
                .last_output
                .map_or(answered, |at| at.max(answered));
            if last.elapsed() >= OUTPUT_QUIET {
                return;
            }
            tokio::time::sleep(OUTPUT_QUIET / 5).await;
        }
    }

    pub fn last_lines(&self) -> Vec<String> {
        self.state().last_lines.iter().cloned().collect()
    }

    /// Answer for `current`: the END and REPORT lines logged, the accounting attached.
    async fn finish(self: &Arc<Self>, mut current: Current, ending: Ending, body: Bytes) {
        let duration = current.started.elapsed();
        let (init, known_memory, name) = {
            let mut state = self.state();
            let init = match std::mem::take(&mut state.cold) {
                true => state.ready.map(|ready| ready - self.launched_at),
                false => None,
            };
            (init, state.max_memory_mb, state.name.clone())
        };
        // The first answer waits for the figure; later ones use the last one read (the peak
        // only grows) and read it again afterwards, off the invocation's path.
        let max_memory_mb = match (known_memory, &name) {
            (None, Some(name)) => self.launcher.max_memory_mb(name).await,
            (known, _) => known,
        };
        self.state().max_memory_mb = max_memory_mb;
        let report = Report {
            request_id: current.request_id.clone(),
            duration,
            init,
            memory_mb: self.function.memory_mb,
            max_memory_mb,
        };
        for line in [
            format!("END RequestId: {}", current.request_id),
            report.to_string(),
        ] {
            self.log(&line);
            if current.want_logs {
                current.logs.push_str(&line);
                current.logs.push('\n');
            }
        }
        let answer = Answer {
            request_id: current.request_id,
            ending,
            body,
            logs: tail_of(&current.logs),
            last_lines: self.last_lines(),
            report,
        };
        let _ = current.done.send(answer);
        if let (Some(_), Some(name)) = (known_memory, name) {
            let sandbox = self.clone();
            tokio::spawn(async move {
                if let Some(mb) = sandbox.launcher.max_memory_mb(&name).await {
                    sandbox.state().max_memory_mb = Some(mb);
                }
            });
        }
    }
}

/// `{"errorType": …, "errorMessage": …}`.
pub(crate) fn error_body(error_type: &str, message: &str) -> Bytes {
    Bytes::from(serde_json::json!({ "errorType": error_type, "errorMessage": message }).to_string())
}

fn tail_of(logs: &str) -> String {
    let cut = floor_char_boundary(logs, logs.len().saturating_sub(TAIL_BYTES));
    logs[cut..].to_string()
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    while index > 0 && !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

/// How long an init may take before the sandbox is given up: Lambda's 10 s, then the timeout.
pub(crate) fn init_limit(function: &Function) -> Duration {
    super::INIT_GRACE + function.timeout
}
