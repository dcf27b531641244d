//! `invoke` through the binary: the test function (tests/lambda-fn, on AWS's `lambda_runtime`)
//! packaged FROM scratch into an image on the real Docker engine, run by the native backend and
//! by the ssh backend (containers reaching the emulator through an SSH remote forward).

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;
use crate::lambda::{concurrent_calls, lambda_fn};

/// An image of the test function: ENTRYPOINT the function, CMD `echo` (the handler).
struct FunctionImage(String);

impl FunctionImage {
    fn build(name: &str) -> FunctionImage {
        require_docker();
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(lambda_fn(), dir.path().join("fn")).unwrap();
        let reference = format!("n10n-test-{}-{name}:fn", std::process::id());
        // A label of its own gives each test's image its own id: `containers` filters by
        // ancestor, which matches by id, and the tests run side by side. Not the pid alone: pids
        // come round again (pid_max 32768), and a cached step of an earlier run's image with the
        // same label was found, then removed under this build ("unable to find image").
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        std::fs::write(
            dir.path().join("Dockerfile"),
            format!(
                // The label first: a layer another test's image shares could be removed with
                // that image while this build uses it from the cache.
                "FROM scratch\nLABEL n10n.test={reference}-{nanos}\nCOPY fn /fn\n\
                 ENTRYPOINT [\"/fn\"]\nCMD [\"echo\"]\n"
            ),
        )
        .unwrap();
        run_ok(
            "docker",
            &[
                "build",
                "-q",
                "-t",
                &reference,
                dir.path().to_str().unwrap(),
            ],
        );
        FunctionImage(reference)
    }

    /// Containers of this image, running or not: name, status and when made.
    fn containers(&self) -> String {
        let out = run_ok(
            "docker",
            &[
                "ps",
                "-a",
                "--filter",
                &format!("ancestor={}", self.0),
                "--format",
                "{{.Names}} {{.Status}} {{.CreatedAt}}",
            ],
        );
        stdout(&out).trim().to_string()
    }
}

impl Drop for FunctionImage {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["image", "rm", "-f", &self.0])
            .output();
    }
}

fn native(dir: &Path, args: &[&str]) -> Output {
    command_in(dir, args)
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .output()
        .unwrap()
}

fn json(out: &Output) -> Value {
    serde_json::from_str(&stdout(out))
        .unwrap_or_else(|_| panic!("not JSON: {}{}", stdout(out), stderr(out)))
}

#[test]
fn invoke_runs_the_image_once_and_says_how_it_ended() {
    let image = FunctionImage::build("native");
    let dir = project_dir(
        "[vm]\nbackend = \"native\"\n[lambda]\nmemory_mb = 256\nenv = { N10N_TEST_VAR = \"from-config\" }\n",
    );
    std::fs::write(dir.path().join("event.json"), r#"{"order": 42}"#).unwrap();

    let out = native(dir.path(), &["invoke", &image.0, "--event", "event.json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let answer = json(&out);
    assert_eq!(answer["event"]["order"], 42);
    assert_eq!(
        (
            answer["memory"].as_str(),
            answer["custom"].as_str(),
            answer["tz"].as_str()
        ),
        (Some("256"), Some("from-config"), Some(":UTC"))
    );
    let function_name = image.0.split(':').next().unwrap();
    assert_eq!(
        answer["function_arn"],
        format!("arn:aws:lambda:us-east-1:000000000000:function:{function_name}")
    );
    let logs = stderr(&out);
    assert!(
        logs.contains("lambda-fn: echo got {\"order\":42}"),
        "{logs}"
    );
    let report = logs
        .lines()
        .find(|l| l.starts_with("REPORT RequestId: "))
        .unwrap_or_else(|| panic!("{logs}"));
    assert!(
        report.contains("Memory Size: 256 MB")
            && report.contains("Max Memory Used: ")
            && report.contains("Init Duration: "),
        "{report}"
    );

    let out = native(
        dir.path(),
        &["invoke", &image.0, "-e", "N10N_TEST_VAR=from-flag"],
    );
    assert_eq!(json(&out)["custom"], "from-flag");

    // Issue 29 item 8: the values reach the container only, as written; a DOCKER_HOST among
    // them no longer steers the docker that starts the sandbox (it failed to connect before).
    let out = native(
        dir.path(),
        &[
            "invoke",
            &image.0,
            "-e",
            "DOCKER_HOST=unix:///nonexistent/docker.sock",
            "-e",
            "N10N_TEST_VAR= two  spaces=and \"quotes\" $HOME ",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["custom"], " two  spaces=and \"quotes\" $HOME ");
    let out = native(
        dir.path(),
        &["invoke", &image.0, "-e", "N10N_TEST_VAR=two\nlines"],
    );
    assert_exit_saying(&out, 2, "more than one line");

    // Issue 32 item 1: the sandbox as Lambda runs an image: its user, a read-only root
    // filesystem, /tmp the only writable place; --as-root keeps the image's own way, and says so.
    let out = native(dir.path(), &["invoke", &image.0, "--handler", "sandbox"]);
    let answer = json(&out);
    assert_eq!(
        (answer["uid"].as_str(), answer["gid"].as_str()),
        (Some("993"), Some("990"))
    );
    assert!(
        answer["root"]
            .as_str()
            .unwrap()
            .contains("Read-only file system"),
        "{answer}"
    );
    assert_eq!(answer["tmp"], "written");
    let out = native(
        dir.path(),
        &["invoke", &image.0, "--handler", "sandbox", "--as-root"],
    );
    let answer = json(&out);
    assert_eq!(
        (answer["uid"].as_str(), answer["root"].as_str()),
        (Some("0"), Some("written"))
    );
    assert!(
        stderr(&out).contains("(as root, on a writable root filesystem: --as-root"),
        "{}",
        stderr(&out)
    );

    let out = native(dir.path(), &["invoke", &image.0, "--handler", "fail"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out)["errorMessage"], "the function failed on purpose");

    let out = native(
        dir.path(),
        &["invoke", &image.0, "--handler", "sleep", "--timeout", "1"],
    );
    assert_exit_saying(&out, 1, "Task timed out after 1.00 seconds");

    let out = native(dir.path(), &["invoke", &image.0, "--handler", "init-panic"]);
    assert_exit_saying(&out, 1, "init failed on purpose");
    assert!(
        stderr(&out).contains("the function did not start"),
        "{}",
        stderr(&out)
    );

    std::fs::write(dir.path().join("bad.json"), "{nope").unwrap();
    for args in [
        vec!["invoke", &image.0, "--event", "bad.json"],
        vec!["invoke", &image.0, "--event", "missing.json"],
        vec!["invoke", &image.0, "--port", "9999"],
        vec!["invoke", &image.0, "--timeout", "901"],
    ] {
        let out = native(dir.path(), &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    let out = native(dir.path(), &["invoke", "n10n-absent:1"]);
    assert_exit_saying(&out, 1, "there is no image n10n-absent:1");
    assert_eq!(image.containers(), "", "containers were left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_and_serve_through_the_ssh_backend() {
    let image = FunctionImage::build("ssh");
    let sshd = Sshd::start();
    let project = Project::with_config(
        &sshd,
        "[lambda]\ntimeout_s = 10\n[lambda.functions]\nechoer = \"echo\"\nfailer = \"fail\"\n",
    );
    let out = project.cmd(&["invoke", &image.0]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["handler"], "echo");

    let port = free_port();
    let mut serve = project
        .cmd(&[
            "invoke",
            &image.0,
            "--serve",
            "--port",
            &port.to_string(),
            "--concurrency",
            "2",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the Invoke API", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let http = reqwest::Client::new();
    let url =
        |name: &str| format!("http://127.0.0.1:{port}/2015-03-31/functions/{name}/invocations");
    for (asked, answered) in concurrent_calls(&http, &url("echoer"), 20).await {
        assert_eq!(Some(asked), answered);
    }
    let r = http.post(url("failer")).body("{}").send().await.unwrap();
    assert_eq!(r.headers()["x-amz-function-error"], "Unhandled");

    unsafe { libc::kill(serve.id() as i32, libc::SIGINT) };
    let status = wait_for("serve to stop", Duration::from_secs(30), || {
        serve.try_wait().unwrap()
    });
    assert!(status.success(), "{status}");
    assert_eq!(image.containers(), "", "Ctrl-C left containers behind");
}

/// A running `invoke --serve`, stopped with Ctrl-C's signal (so that it removes its
/// containers) when dropped, whatever the test's outcome.
struct Serving(std::process::Child);

impl Serving {
    /// Ctrl-C, and how it ended.
    fn stop(&mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        wait_for("serve to stop", Duration::from_secs(30), || {
            self.0.try_wait().unwrap()
        })
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if self.0.try_wait().unwrap().is_none() {
            self.stop();
        }
    }
}

/// `invoke IMAGE --serve --port PORT` on the native backend in `dir`.
fn native_serve(dir: &Path, image: &FunctionImage, port: u16) -> Serving {
    Serving(
        command_in(
            dir,
            &["invoke", &image.0, "--serve", "--port", &port.to_string()],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    )
}

/// One raw HTTP/1.1 POST of `{}` with the given Host and extra header lines; the whole answer.
fn raw_post(port: u16, host: &str, extra: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST /2015-03-31/functions/f/invocations HTTP/1.1\r\nHost: {host}\r\n{extra}\
         Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// The status code of `raw_post`'s answer.
fn status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status: {answer}"))
}

#[test]
fn serve_refuses_web_pages_and_foreign_hosts_and_launches_nothing_for_them() {
    let image = FunctionImage::build("origin");
    let dir = project_dir("[vm]\nbackend = \"native\"\n");
    let port = free_port();
    let mut serve = native_serve(dir.path(), &image, port);
    wait_for("the Invoke API", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    // Whatever serve keeps warm by itself, before any request.
    let warm = wait_for("the warm sandbox", Duration::from_secs(30), || {
        let names = image.containers();
        (!names.is_empty()).then_some(names.lines().count())
    });
    let statuses = [
        status(&raw_post(port, &format!("evil.example:{port}"), "")),
        status(&raw_post(port, &format!("127.0.0.1.nip.io:{port}"), "")),
        status(&raw_post(
            port,
            &format!("127.0.0.1:{port}"),
            "Origin: https://evil.example\r\n",
        )),
    ];
    assert_eq!(statuses, [421, 421, 403]);
    assert_eq!(
        image.containers().lines().count(),
        warm,
        "a refused request launched a sandbox"
    );
    assert_eq!(
        status(&raw_post(port, &format!("localhost:{port}"), "")),
        200
    );
    serve.stop();
}

#[test]
fn environment_values_never_show_in_any_process_s_arguments() {
    let image = FunctionImage::build("secret");
    let dir = tempfile::tempdir().unwrap();
    let secret = format!("s3cr3t-{}", std::process::id());
    std::fs::write(
        dir.path().join("n10n-dev.toml"),
        format!("[vm]\nbackend = \"native\"\n[lambda]\nenv = {{ N10N_TEST_VAR = \"{secret}\" }}\n"),
    )
    .unwrap();
    let port = free_port();
    let mut serve = native_serve(dir.path(), &image, port);
    wait_for("the warm sandbox", Duration::from_secs(30), || {
        (!image.containers().is_empty()).then_some(())
    });
    let ps = stdout(&run_ok("ps", &["-eww", "-o", "args"]));
    let answer = raw_post(port, &format!("127.0.0.1:{port}"), "");
    serve.stop();
    assert!(
        answer.contains(&format!("\"custom\":\"{secret}\"")),
        "{answer}"
    );
    let shown: Vec<&str> = ps.lines().filter(|l| l.contains(&secret)).collect();
    assert!(shown.is_empty(), "in ps: {shown:?}");
}

/// The `custom` field the test function answers with (its N10N_TEST_VAR), by the Invoke API.
fn answered_var(port: u16) -> Option<String> {
    let answer = raw_post(port, &format!("127.0.0.1:{port}"), "");
    let body = answer.split("\r\n\r\n").nth(1)?;
    let json: Value = serde_json::from_str(body).ok()?;
    json["custom"].as_str().map(str::to_string)
}

#[test]
fn serve_watch_rebuilds_on_each_change_and_keeps_the_last_good_image() {
    require_docker();
    let sshd = Sshd::start();
    let name = format!("n10n-test-{}-watch", std::process::id());
    let project = Project::with_config(
        &sshd,
        &format!("[image]\nname = \"{name}\"\ntag = \"fn\"\n[lambda]\ntimeout_s = 10\n"),
    );
    std::fs::copy(lambda_fn(), project.root().join("fn")).unwrap();
    std::fs::write(project.root().join(".gitignore"), "scratch/\n").unwrap();
    std::fs::create_dir(project.root().join("scratch")).unwrap();
    let dockerfile = |value: &str| {
        let text = format!(
            "FROM scratch\nLABEL n10n.test={name}\nCOPY fn /fn\nENV N10N_TEST_VAR={value}\n\
             ENTRYPOINT [\"/fn\"]\nCMD [\"echo\"]\n"
        );
        std::fs::write(project.root().join("Dockerfile"), text).unwrap();
    };
    dockerfile("one");
    let log = project.home.path().join("serve.log");
    let port = free_port();
    let mut serve = Serving(
        project
            .cmd(&["invoke", "--serve", "--watch", "--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let said = || std::fs::read_to_string(&log).unwrap_or_default();
    let answers = |value: &str, within: u64| {
        let started = std::time::Instant::now();
        wait_for(
            &format!("the answer {value}"),
            Duration::from_secs(within),
            || (answered_var(port).as_deref() == Some(value)).then_some(()),
        );
        started.elapsed()
    };
    // The first build happens before serving: the project as it is, not the last build.
    let api_up = || {
        let ended = serve.0.try_wait().unwrap().is_some();
        assert!(!ended, "invoke --serve ended:\n{}", said());
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    };
    wait_for_or_show("the Invoke API", Duration::from_secs(120), api_up, said);
    answers("one", 30);

    // Ignored paths change nothing.
    std::fs::write(project.root().join("scratch/noise"), "x").unwrap();
    dockerfile("two");
    let took = answers("two", 60);
    eprintln!("edit → first new answer: {:.2} s", took.as_secs_f64());
    let log_text = said();
    assert!(
        log_text.contains("invoke: Dockerfile changed: rebuilding"),
        "{log_text}"
    );
    assert!(!log_text.contains("scratch/noise"), "{log_text}");
    assert!(log_text.contains("sandbox(es) replaced"), "{log_text}");

    // A broken build: the error's tail is shown, and the last good image goes on serving.
    std::fs::write(
        project.root().join("Dockerfile"),
        "FROM scratch\nCOPY not-there /x\n",
    )
    .unwrap();
    wait_for("the failed rebuild", Duration::from_secs(60), || {
        said().contains("still serving").then_some(())
    });
    let log_text = said();
    assert!(
        log_text.contains("not-there"),
        "no build error tail: {log_text}"
    );
    assert_eq!(answered_var(port).as_deref(), Some("two"));

    dockerfile("three");
    answers("three", 60);

    let status = serve.stop();
    assert!(status.success(), "{status}: {}", said());
    let label = format!("label=n10n.test={name}");
    let left = run_ok("docker", &["ps", "-aq", "--filter", &label]);
    assert_eq!(stdout(&left).trim(), "", "containers left behind");
    let images = run_ok("docker", &["images", "-q", "--filter", &label]);
    for id in stdout(&images).split_whitespace() {
        let _ = Command::new("docker")
            .args(["image", "rm", "-f", id])
            .output();
    }
}

/// Issue 29 item 9: on a build host, a sandbox's Runtime API listens on the machine's loopback,
/// where any user can connect. Another user (`nobody`, where the test runs as root) asking it for
/// the next event gets no answer at all, while the function's own runtime is served.
#[tokio::test(flavor = "multi_thread")]
async fn another_user_of_the_machine_cannot_take_the_sandbox_s_events() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: no other user to try as (CI runs this as root)");
        return;
    }
    let image = FunctionImage::build("peer");
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    let port = free_port();
    let mut serve = Serving(
        project
            .cmd(&["invoke", &image.0, "--serve", "--port", &port.to_string()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let runtime_api = wait_for("the warm sandbox", Duration::from_secs(30), || {
        let names = image.containers();
        let name = names.split_whitespace().next()?.to_string();
        let env = run_ok(
            "docker",
            &[
                "inspect",
                "--format",
                "{{range .Config.Env}}{{println .}}{{end}}",
                &name,
            ],
        );
        stdout(&env)
            .lines()
            .find_map(|l| l.strip_prefix("AWS_LAMBDA_RUNTIME_API="))
            .map(str::to_string)
    });
    let attempt = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c"])
        .arg(format!(
            "import socket; s = socket.create_connection(('127.0.0.1', {})); s.settimeout(5); \
             s.sendall(b'GET /2018-06-01/runtime/invocation/next HTTP/1.1\\r\\nHost: {}\\r\\n\\r\\n'); \
             print(repr(s.recv(4096)))",
            runtime_api.rsplit(':').next().unwrap(),
            runtime_api
        ))
        .output()
        .unwrap();
    // Answered with nothing: closed (b''), never an event.
    assert_eq!(stdout(&attempt).trim(), "b''", "{}", stderr(&attempt));
    // A request for another host (a web page's, by a name resolving to loopback) is refused.
    let mut stream = std::net::TcpStream::connect(&runtime_api).unwrap();
    stream
        .write_all(
            b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: evil.example\r\n\r\n",
        )
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 403");
    let answer = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{port}/2015-03-31/functions/f/invocations"
        ))
        .body("{\"from\":\"the user\"}")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(answer.contains("\"from\":\"the user\""), "{answer}");
    assert!(serve.stop().success());
}
