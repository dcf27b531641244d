//! The sandboxes of one function: started on demand up to a concurrency, each taking one
//! invocation at a time from the function's queue; one that ends is dropped, and the next
//! invocation that finds none free starts a new one (a fresh initialisation, as Lambda does).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::sandbox::{Pending, Queue, Sandbox, error_body, init_limit};
use super::{Answer, Ending, Function, Launch, Launcher, Report, Request, runtime_api};

/// How often `retire` looks whether the invocations in flight are done, and how long past the
/// function's timeout it waits for them.
const RETIRE_POLL: std::time::Duration = std::time::Duration::from_millis(50);
const RETIRE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

pub struct Pool<L: Launcher> {
    function: Arc<Function>,
    launcher: Arc<L>,
    queue: Arc<Queue>,
    sandboxes: Mutex<Vec<Arc<Sandbox<L>>>>,
    concurrency: usize,
    serial: AtomicUsize,
    log_prefix: Option<String>,
    closing: AtomicBool,
}

impl<L: Launcher> Pool<L> {
    /// `log_prefix`: put before each log line on stderr (serving several functions).
    pub fn new(
        function: Function,
        launcher: Arc<L>,
        concurrency: usize,
        log_prefix: Option<String>,
    ) -> Arc<Pool<L>> {
        Arc::new(Pool {
            function: Arc::new(function),
            launcher,
            queue: Arc::default(),
            sandboxes: Mutex::default(),
            concurrency: concurrency.max(1),
            serial: AtomicUsize::new(0),
            log_prefix,
            closing: AtomicBool::new(false),
        })
    }

    pub fn function(&self) -> &Function {
        &self.function
    }

    /// Start one sandbox ahead of the first invocation.
    pub fn warm(self: &Arc<Self>) {
        self.spawn_sandbox();
    }

    /// Invoke and wait for the answer.
    pub async fn invoke(self: &Arc<Self>, request: Request) -> Answer {
        let (request_id, answer) = self.submit(request);
        answer.await.unwrap_or_else(|_| Answer {
            body: error_body("ServiceException", "the sandbox went away"),
            ending: Ending::Crashed,
            logs: String::new(),
            last_lines: Vec::new(),
            report: Report {
                request_id: request_id.clone(),
                memory_mb: self.function.memory_mb,
                ..Report::default()
            },
            request_id,
        })
    }

    /// Queue an invocation; its id, and where its answer will arrive.
    /// Invocations waiting for a sandbox.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    pub fn submit(self: &Arc<Self>, request: Request) -> (String, oneshot::Receiver<Answer>) {
        let request_id = super::request_id();
        let (done, answer) = oneshot::channel();
        self.queue.push(Pending {
            request_id: request_id.clone(),
            request,
            done,
        });
        self.scale();
        (request_id, answer)
    }

    /// Start a sandbox when invocations wait that no free or starting sandbox will take.
    fn scale(self: &Arc<Self>) {
        let (live, starting) = {
            let sandboxes = self.sandboxes.lock().expect("not poisoned");
            let starting = sandboxes.iter().filter(|s| s.is_initialising()).count();
            (sandboxes.len(), starting)
        };
        let free = self.queue.waiting.load(Ordering::SeqCst);
        if self.queue.len() > free + starting && live < self.concurrency {
            self.spawn_sandbox();
        }
    }

    fn spawn_sandbox(self: &Arc<Self>) {
        let number = self.serial.fetch_add(1, Ordering::SeqCst) + 1;
        let sandbox = Arc::new(Sandbox::new(
            format!("{}-{number}", self.function.name),
            self.function.clone(),
            self.queue.clone(),
            self.launcher.clone(),
            self.log_prefix.clone(),
        ));
        {
            // Under the lock `shutdown` takes: a sandbox is either seen by it or never made.
            let mut sandboxes = self.sandboxes.lock().expect("not poisoned");
            if self.closing.load(Ordering::SeqCst) {
                return;
            }
            sandboxes.push(sandbox.clone());
        }
        let pool = self.clone();
        tokio::spawn(async move {
            let how = match pool.launch(&sandbox).await {
                Ok(how) => how,
                Err(e) => e.to_string(),
            };
            pool.sandbox_ended(&sandbox, &how).await;
        });
    }

    /// Serve the sandbox's Runtime API, start its runtime, pass its output on; how it ended.
    async fn launch(&self, sandbox: &Arc<Sandbox<L>>) -> crate::error::Result<String> {
        let listener = self.launcher.listen().await?;
        let mut env = vec![(
            "AWS_LAMBDA_RUNTIME_API".to_string(),
            listener.address.clone(),
        )];
        env.extend(self.function.env.iter().cloned());
        *sandbox.server.lock().expect("not poisoned") =
            Some(tokio::spawn(runtime_api::serve(listener, sandbox.clone())));
        let launched = self
            .launcher
            .launch(Launch {
                sandbox: sandbox.id.clone(),
                handler: self.function.handler.clone(),
                memory_mb: self.function.memory_mb,
                env,
                shape: self.function.sandbox,
            })
            .await?;
        sandbox.launched(launched.name.clone());
        let watchdog = {
            let (sandbox, limit) = (sandbox.clone(), init_limit(&self.function));
            tokio::spawn(async move {
                tokio::time::sleep(limit).await;
                sandbox.init_too_slow().await;
            })
        };
        let mut lines = launched.lines;
        let output = {
            let sandbox = sandbox.clone();
            tokio::spawn(async move {
                while let Some(line) = lines.recv().await {
                    sandbox.log(&line);
                }
            })
        };
        let how = launched
            .ended
            .await
            .unwrap_or_else(|_| "it was lost".into());
        // Its last words belong before the verdict.
        let _ = output.await;
        watchdog.abort();
        Ok(how)
    }

    async fn sandbox_ended(self: &Arc<Self>, sandbox: &Arc<Sandbox<L>>, how: &str) {
        let owed = sandbox.ended(how).await;
        self.sandboxes
            .lock()
            .expect("not poisoned")
            .retain(|s| !Arc::ptr_eq(s, sandbox));
        // A sandbox that never took work fails the invocation that was waiting for it; the
        // next one starts afresh.
        if let Some((ending, body)) = owed
            && let Some(pending) = self.queue.pop()
        {
            let _ = pending.done.send(Answer {
                report: Report {
                    request_id: pending.request_id.clone(),
                    memory_mb: self.function.memory_mb,
                    ..Report::default()
                },
                request_id: pending.request_id,
                ending,
                body,
                logs: String::new(),
                last_lines: sandbox.last_lines(),
            });
        }
        if self.queue.len() > 0 {
            self.scale();
        }
    }

    /// Let the invocations this pool took finish, then stop every sandbox: a rebuilt image's
    /// pool took over. Waits no longer than the function's timeout.
    pub async fn retire(&self) {
        let deadline = tokio::time::Instant::now() + self.function.timeout + RETIRE_GRACE;
        while !self.is_idle() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(RETIRE_POLL).await;
        }
        self.shutdown().await;
    }

    /// Nothing queued, and every sandbox that serves waits for work.
    fn is_idle(&self) -> bool {
        let serving = {
            let sandboxes = self.sandboxes.lock().expect("not poisoned");
            let serving = sandboxes
                .iter()
                .filter(|s| !s.has_ended() && !s.is_initialising());
            serving.count()
        };
        self.queue.len() == 0 && self.queue.waiting.load(Ordering::SeqCst) >= serving
    }

    /// How many sandboxes are up or starting.
    pub fn sandboxes(&self) -> usize {
        let sandboxes = self.sandboxes.lock().expect("not poisoned");
        sandboxes.iter().filter(|s| !s.has_ended()).count()
    }

    /// Stop every sandbox; invocations still queued are answered with an error.
    pub async fn shutdown(&self) {
        let sandboxes: Vec<_> = {
            let sandboxes = self.sandboxes.lock().expect("not poisoned");
            self.closing.store(true, Ordering::SeqCst);
            sandboxes.clone()
        };
        for sandbox in sandboxes {
            sandbox.stop().await;
        }
        while let Some(pending) = self.queue.pop() {
            drop(pending.done);
        }
    }
}
