//! The Runtime API emulator and the Invoke API against a real runtime client: a function on
//! AWS's `lambda_runtime` crate (tests/lambda-fn), statically linked. Here it runs as a plain
//! child process (no Docker); tests/integration/invoke.rs runs it in containers.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use n10n_dev::lambda::invoke_api::{self, Functions};
use n10n_dev::lambda::{
    Ending, Function, Launch, Launched, Launcher, Pool, Request, RuntimeListener, SandboxShape,
};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use crate::harness::*;

/// The test function, built once per test run (statically linked, so that it also runs alone
/// in a FROM-scratch image).
pub fn lambda_fn() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = env!("CARGO_MANIFEST_DIR");
            let host = String::from_utf8(run_ok("rustc", &["-vV"]).stdout)
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
                .unwrap();
            let target_dir = format!("{root}/target/lambda-fn");
            let out = std::process::Command::new(option_env!("CARGO").unwrap_or("cargo"))
                .args([
                    "build",
                    "--quiet",
                    "--locked",
                    "--target",
                    &host,
                    "--target-dir",
                    &target_dir,
                ])
                .arg("--manifest-path")
                .arg(format!("{root}/tests/lambda-fn/Cargo.toml"))
                .env("RUSTFLAGS", "-C target-feature=+crt-static")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "building tests/lambda-fn: {}",
                stderr(&out)
            );
            PathBuf::from(format!("{target_dir}/{host}/debug/n10n-test-lambda-fn"))
        })
        .clone()
}

/// Sandboxes as child processes of the test function.
#[derive(Default)]
struct Processes {
    pids: Mutex<Vec<(String, u32)>>,
    launches: AtomicUsize,
    extra_env: Vec<(String, String)>,
}

impl Processes {
    fn pid_of(&self, name: &str) -> Option<u32> {
        let pids = self.pids.lock().unwrap();
        pids.iter().find(|(n, _)| n == name).map(|(_, pid)| *pid)
    }
}

impl Launcher for Processes {
    async fn listen(&self) -> n10n_dev::error::Result<RuntimeListener> {
        RuntimeListener::local().await
    }

    async fn launch(&self, launch: Launch) -> n10n_dev::error::Result<Launched> {
        self.launches.fetch_add(1, Ordering::SeqCst);
        let mut child = tokio::process::Command::new(lambda_fn())
            .args(launch.handler.clone())
            .envs(launch.env.iter().cloned())
            .envs(self.extra_env.iter().cloned())
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.pids
            .lock()
            .unwrap()
            .push((launch.sandbox.clone(), child.id().unwrap()));
        let (lines, receiver) = mpsc::unbounded_channel();
        let (ended, ended_receiver) = oneshot::channel();
        let stderr = child.stderr.take().unwrap();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let _ = lines.send(line);
            }
            let status = child.wait().await.unwrap();
            let _ = ended.send(format!("exit status {}", status.code().unwrap_or(-1)));
        });
        Ok(Launched {
            name: launch.sandbox,
            lines: receiver,
            ended: ended_receiver,
        })
    }

    async fn stop(&self, name: &str) {
        if let Some(pid) = self.pid_of(name) {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }

    async fn max_memory_mb(&self, name: &str) -> Option<u64> {
        let pid = self.pid_of(name)?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))?
            .trim()
            .trim_end_matches(" kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb.div_ceil(1024))
    }
}

/// `count` invocations of `url` at once, event `{"n": i}`: each `(i, the n it echoed back)`.
pub async fn concurrent_calls(
    http: &reqwest::Client,
    url: &str,
    count: u64,
) -> Vec<(u64, Option<u64>)> {
    let calls: Vec<_> = (0..count)
        .map(|n| {
            let (http, url) = (http.clone(), url.to_string());
            tokio::spawn(async move {
                let r = http
                    .post(url)
                    .body(format!(r#"{{"n":{n}}}"#))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
                (n, body["event"]["n"].as_u64())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap());
    }
    answers
}

/// A launcher whose functions append each event they get to the returned file.
fn recording_launcher() -> (tempfile::NamedTempFile, Arc<Processes>) {
    let record = tempfile::NamedTempFile::new().unwrap();
    let launcher = Arc::new(Processes {
        extra_env: vec![(
            "N10N_TEST_RECORD".into(),
            record.path().display().to_string(),
        )],
        ..Processes::default()
    });
    (record, launcher)
}

fn function(name: &str, handler: &str, timeout_s: u64) -> Function {
    Function {
        name: name.into(),
        handler: Some(handler.into()),
        timeout: Duration::from_secs(timeout_s),
        memory_mb: 512,
        env: Function::lambda_env(name, 512, "eu-west-1"),
        region: "eu-west-1".into(),
        // Processes, not containers: the shape is the launcher's to apply.
        sandbox: SandboxShape {
            as_root: false,
            ephemeral_storage_mb: 512,
        },
    }
}

fn event(json: &str) -> Request {
    Request {
        payload: Bytes::from(json.to_string()),
        ..Request::default()
    }
}

fn body(answer: &n10n_dev::lambda::Answer) -> Value {
    serde_json::from_slice(&answer.body).unwrap_or_else(|_| panic!("not JSON: {:?}", answer.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_carry_the_event_and_the_context_and_a_warm_sandbox_is_reused() {
    let launcher = Arc::new(Processes::default());
    let pool = Pool::new(function("worker", "echo", 5), launcher.clone(), 1, None);
    let first = pool.invoke(event(r#"{"n":1}"#)).await;
    assert_eq!(first.ending, Ending::Response, "{:?}", first.body);
    let json = body(&first);
    assert_eq!(json["event"]["n"], 1);
    assert_eq!(json["request_id"], first.request_id.as_str());
    assert_eq!(
        json["function_arn"],
        "arn:aws:lambda:eu-west-1:000000000000:function:worker"
    );
    assert_eq!(
        (json["function_name"].as_str(), json["memory"].as_str()),
        (Some("worker"), Some("512"))
    );
    let remaining = json["remaining_ms"].as_u64().unwrap();
    assert!(
        remaining > 3_000 && remaining <= 5_000,
        "deadline {remaining} ms away"
    );
    assert!(first.report.init.is_some(), "a cold start reports its init");
    assert!(first.report.max_memory_mb.is_some_and(|mb| mb > 0));

    let second = pool.invoke(event(r#"{"n":2}"#)).await;
    assert_eq!(body(&second)["event"]["n"], 2);
    assert_ne!(second.request_id, first.request_id);
    assert!(second.report.init.is_none(), "a warm invoke has no init");
    assert_eq!(launcher.launches.load(Ordering::SeqCst), 1);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_errors_timeouts_init_errors_crashes_and_big_answers() {
    let launcher = Arc::new(Processes::default());
    let failing = Pool::new(function("f", "fail", 5), launcher.clone(), 1, None);
    let answer = failing.invoke(event("{}")).await;
    assert_eq!(answer.ending, Ending::FunctionError);
    assert_eq!(
        body(&answer)["errorMessage"],
        "the function failed on purpose"
    );

    let sleeping = Pool::new(function("s", "sleep", 1), launcher.clone(), 1, None);
    let answer = sleeping.invoke(event("{}")).await;
    assert_eq!(answer.ending, Ending::Timeout);
    let message = body(&answer)["errorMessage"].as_str().unwrap().to_string();
    assert!(
        message.ends_with("Task timed out after 1.00 seconds"),
        "{message}"
    );
    assert_eq!(body(&answer)["errorType"], "Sandbox.Timedout");
    // The sandbox was reset: the next invoke starts a new one.
    let before = launcher.launches.load(Ordering::SeqCst);
    let again = sleeping.invoke(event("{}")).await;
    assert_eq!(again.ending, Ending::Timeout);
    assert_eq!(launcher.launches.load(Ordering::SeqCst), before + 1);

    let broken = Pool::new(function("b", "init-panic", 5), launcher.clone(), 1, None);
    let answer = broken.invoke(event("{}")).await;
    assert_eq!(answer.ending, Ending::InitError);
    assert_eq!(body(&answer)["errorType"], "Runtime.ExitError");
    assert!(
        answer
            .last_lines
            .iter()
            .any(|l| l.contains("init failed on purpose")),
        "{:?}",
        answer.last_lines
    );

    let crashing = Pool::new(function("c", "echo", 5), launcher.clone(), 1, None);
    let answer = crashing.invoke(event(r#"{"crash":true}"#)).await;
    assert_eq!(answer.ending, Ending::Crashed);
    assert!(
        body(&answer)["errorMessage"]
            .as_str()
            .unwrap()
            .contains("Runtime exited with error: exit status 3")
    );
    let after = crashing.invoke(event(r#"{"n":5}"#)).await;
    assert_eq!(after.ending, Ending::Response, "{:?}", after.body);
    assert!(
        after.report.init.is_some(),
        "the replacement initialised anew"
    );

    let big = Pool::new(function("g", "big", 5), launcher.clone(), 1, None);
    let answer = big.invoke(event("{}")).await;
    assert_eq!(answer.ending, Ending::FunctionError);
    assert_eq!(body(&answer)["errorType"], "Function.ResponseSizeTooLarge");
    for pool in [failing, sleeping, broken, crashing, big] {
        pool.shutdown().await;
    }
}

/// A launcher that starts nothing: the test plays the runtime itself.
struct Manual {
    address: Mutex<Option<String>>,
}

impl Launcher for Manual {
    async fn listen(&self) -> n10n_dev::error::Result<RuntimeListener> {
        let listener = RuntimeListener::local().await?;
        *self.address.lock().unwrap() = Some(listener.address.clone());
        Ok(listener)
    }
    async fn launch(&self, launch: Launch) -> n10n_dev::error::Result<Launched> {
        let (_lines, receiver) = mpsc::unbounded_channel();
        let (ended, ended_receiver) = oneshot::channel();
        std::mem::forget(ended);
        Ok(Launched {
            name: launch.sandbox,
            lines: receiver,
            ended: ended_receiver,
        })
    }
    async fn stop(&self, _name: &str) {}
    async fn max_memory_mb(&self, _name: &str) -> Option<u64> {
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_api_answers_as_lambda_s_does() {
    let launcher = Arc::new(Manual {
        address: Mutex::new(None),
    });
    let pool = Pool::new(function("m", "x", 30), launcher.clone(), 1, None);
    let invocation = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.invoke(event(r#"{"k":"v"}"#)).await })
    };
    let address = wait_for("the runtime API", Duration::from_secs(10), || {
        launcher.address.lock().unwrap().clone()
    });
    let api = format!("http://{address}/2018-06-01/runtime");
    let http = reqwest::Client::new();
    let next = http
        .get(format!("{api}/invocation/next"))
        .send()
        .await
        .unwrap();
    assert_eq!(next.status(), 200);
    let header = |name: &str| {
        next.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let id = header("lambda-runtime-aws-request-id").unwrap();
    let deadline: u128 = header("lambda-runtime-deadline-ms")
        .unwrap()
        .parse()
        .unwrap();
    let now = std::time::UNIX_EPOCH.elapsed().unwrap().as_millis();
    assert!(
        deadline > now + 25_000 && deadline <= now + 30_000,
        "deadline {deadline}, now {now}"
    );
    assert_eq!(
        header("lambda-runtime-invoked-function-arn").unwrap(),
        "arn:aws:lambda:eu-west-1:000000000000:function:m"
    );
    assert!(
        header("lambda-runtime-trace-id")
            .unwrap()
            .starts_with("Root=1-")
    );
    assert_eq!(next.text().await.unwrap(), r#"{"k":"v"}"#);

    let post = |path: String, body: Vec<u8>| {
        let http = http.clone();
        async move {
            let r = http.post(path).body(body).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, text) = post(
        format!("{api}/invocation/not-an-id/response"),
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(
        (status, text.contains("InvalidRequestID")),
        (400, true),
        "{text}"
    );
    let (status, _) = post(
        format!("{api}/invocation/{id}/response"),
        vec![b'x'; 6 * 1024 * 1024 + 200],
    )
    .await;
    assert_eq!(status, 413);
    let answer = invocation.await.unwrap();
    assert_eq!(body(&answer)["errorType"], "Function.ResponseSizeTooLarge");
    let (status, text) = post(format!("{api}/invocation/{id}/response"), b"{}".to_vec()).await;
    assert_eq!(
        (status, text.contains("InvalidStateTransition")),
        (403, true),
        "{text}"
    );

    let invocation = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.invoke(event("{}")).await })
    };
    let next = http
        .get(format!("{api}/invocation/next"))
        .send()
        .await
        .unwrap();
    let id = next.headers()["lambda-runtime-aws-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    // The runtime is initialised: a late /init/error is refused and ends nothing.
    let (status, text) = post(format!("{api}/init/error"), b"{}".to_vec()).await;
    assert_eq!(
        (status, text.contains("InvalidStateTransition")),
        (403, true),
        "{text}"
    );
    let (status, text) = post(
        format!("{api}/invocation/{id}/response"),
        br#"{"ok":true}"#.to_vec(),
    )
    .await;
    assert_eq!((status, text.as_str()), (202, r#"{"status":"OK"}"#));
    let answer = invocation.await.unwrap();
    assert_eq!(
        (answer.ending, body(&answer)["ok"].as_bool()),
        (Ending::Response, Some(true))
    );

    // A client that never finishes its request headers is let go.
    let started = std::time::Instant::now();
    let mut stalled = tokio::net::TcpStream::connect(&address).await.unwrap();
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stalled
            .write_all(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\n")
            .await
            .unwrap();
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(30), stalled.read_to_end(&mut rest));
        assert!(
            closed.await.is_ok(),
            "a stalled request held its connection for 30 s"
        );
    }
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "closed before any timeout"
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invoke_api_serves_two_functions_to_100_concurrent_callers() {
    let (record, launcher) = recording_launcher();
    let echo = Pool::new(
        function("echoer", "echo", 10),
        launcher.clone(),
        4,
        Some("echoer".into()),
    );
    let fail = Pool::new(
        function("failer", "fail", 10),
        launcher.clone(),
        1,
        Some("failer".into()),
    );
    let functions = Arc::new(Functions::new(
        [
            ("echoer".to_string(), echo.clone()),
            ("failer".to_string(), fail.clone()),
        ]
        .into(),
        false,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(invoke_api::serve(listener, functions));
    let url =
        |name: &str| format!("http://127.0.0.1:{port}/2015-03-31/functions/{name}/invocations");
    let http = reqwest::Client::new();

    let mut seen = HashSet::new();
    for (asked, answered) in concurrent_calls(&http, &url("echoer"), 100).await {
        assert_eq!(Some(asked), answered);
        seen.insert(asked);
    }
    assert_eq!(seen.len(), 100);
    let sandboxes = launcher.launches.load(Ordering::SeqCst);
    assert!(
        (2..=4).contains(&sandboxes),
        "{sandboxes} sandboxes for concurrency 4"
    );

    let r = http
        .post(url("failer"))
        .header("X-Amz-Log-Type", "Tail")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-amz-function-error"], "Unhandled");
    let logs = base64::engine::general_purpose::STANDARD
        .decode(r.headers()["x-amz-log-result"].as_bytes())
        .unwrap();
    let logs = String::from_utf8(logs).unwrap();
    assert!(
        logs.contains("START RequestId: ")
            && logs.contains("lambda-fn: fail got {}")
            && logs.contains("REPORT RequestId: "),
        "{logs}"
    );

    let r = http
        .post(url("echoer"))
        .header("X-Amz-Invocation-Type", "Event")
        .body(r#"{"async":"yes"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    wait_for(
        "the async invocation to run",
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(record.path())
                .ok()
                .filter(|t| t.contains(r#"{"async":"yes"}"#))
        },
    );

    let r = http.post(url("nobody")).body("{}").send().await.unwrap();
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["x-amzn-errortype"].to_str().unwrap()
        ),
        (404, "ResourceNotFoundException")
    );
    let r = http
        .post(url("arn:aws:lambda:eu-west-1:000000000000:function:echoer"))
        .body(vec![b' '; 7 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = http
        .post(url("echoer"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    server.abort();
    echo.shutdown().await;
    fail.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_event_invocations_are_capped_with_lambda_s_429() {
    // A runtime that never asks for work: every Event invocation stays queued.
    let launcher = Arc::new(Manual {
        address: Mutex::new(None),
    });
    let pool = Pool::new(function("q", "x", 30), launcher, 1, Some("q".into()));
    let functions = Arc::new(Functions::new(
        [("q".to_string(), pool.clone())].into(),
        false,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(invoke_api::serve(listener, functions));
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/2015-03-31/functions/q/invocations");
    let post = || {
        http.post(&url)
            .header("X-Amz-Invocation-Type", "Event")
            .body("{}")
            .send()
    };
    for n in 0..1000 {
        assert_eq!(post().await.unwrap().status(), 202, "event {n}");
    }
    let refused = post().await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(
        refused.headers()["x-amzn-errortype"],
        "TooManyRequestsException"
    );
    server.abort();
    pool.shutdown().await;
}

/// Lambda takes a client context only as base64 of a JSON object, of at most 3,583 bytes; the
/// Java runtime client fails the invocation (a Gson error, charged to the function) on anything
/// else, so the emulator refuses it at the door as Lambda does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_context_must_be_base64_of_a_json_object() {
    use base64::engine::general_purpose::STANDARD;
    let (record, launcher) = recording_launcher();
    let echo = Pool::new(function("echoer", "echo", 10), launcher, 1, None);
    let functions = Arc::new(Functions::new(
        [("echoer".to_string(), echo.clone())].into(),
        false,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(invoke_api::serve(listener, functions));
    let url = format!("http://127.0.0.1:{port}/2015-03-31/functions/echoer/invocations");
    let http = reqwest::Client::new();
    let call = |context: String, event: &'static str| {
        http.post(&url)
            .header("X-Amz-Client-Context", context)
            .body(event)
            .send()
    };

    let good = STANDARD.encode(r#"{"custom":{"team":"notifications"}}"#);
    let r = call(good, r#"{"n":0}"#).await.unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(answer["client_custom"]["team"], "notifications", "{answer}");

    let padding = "x".repeat(3600);
    for (n, bad) in [
        "%%% not base64".to_string(),
        STANDARD.encode("not json"),
        STANDARD.encode("[1, 2]"),
        STANDARD.encode(format!(r#"{{"custom":{{"pad":"{padding}"}}}}"#)),
    ]
    .into_iter()
    .enumerate()
    {
        let r = call(bad.clone(), r#"{"refused":true}"#).await.unwrap();
        assert_eq!(
            (
                r.status().as_u16(),
                r.headers()
                    .get("x-amzn-errortype")
                    .map(|v| v.to_str().unwrap().to_string())
            ),
            (400, Some("InvalidRequestContentException".to_string())),
            "client context {n}"
        );
    }
    let seen = std::fs::read_to_string(record.path()).unwrap();
    assert!(
        !seen.contains("refused"),
        "a refused invocation reached the function: {seen}"
    );
    server.abort();
    echo.shutdown().await;
}
