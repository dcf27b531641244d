//! The per-VM forwarder: the host's real `docker` CLI against its socket, relayed through the
//! real loopback sshd to the real dockerd's socket; the Docker context made and removed with
//! the real CLI; reconnecting after sshd is killed and restarted; static port forwards.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::harness::*;

static NEXT_IMAGE: AtomicUsize = AtomicUsize::new(0);

/// A project on the loopback sshd, `up` without provisioning, with a Docker config of its own.
struct Forwarded {
    project: Project,
    docker_config: tempfile::TempDir,
    image: String,
}

impl Forwarded {
    fn up(sshd: &Sshd, extra: &str) -> Forwarded {
        require_docker();
        let project = Project::with_config(sshd, extra);
        let forwarded = Forwarded {
            project,
            docker_config: tempfile::tempdir().unwrap(),
            // Tests run in parallel in one process: each needs an image of its own, or one
            // test's clean-up removes another's image mid-test.
            image: format!(
                "n10n-test-{}-fwd{}:1",
                std::process::id(),
                NEXT_IMAGE.fetch_add(1, Ordering::Relaxed)
            ),
        };
        let out = forwarded.n10n(&["up", "--no-provision"]);
        assert!(out.status.success(), "{}", stderr(&out));
        forwarded
    }

    fn n10n(&self, args: &[&str]) -> Output {
        self.project
            .cmd(args)
            .env("DOCKER_CONFIG", self.docker_config.path())
            .output()
            .unwrap()
    }

    fn socket(&self) -> PathBuf {
        self.project.home.path().join("vms/test-vm/docker.sock")
    }

    /// The host's docker CLI through the forwarder's socket.
    fn docker(&self) -> Command {
        let mut cmd = Command::new("docker");
        cmd.env("DOCKER_HOST", format!("unix://{}", self.socket().display()))
            .env("DOCKER_CONFIG", self.docker_config.path());
        cmd
    }

    fn docker_ok(&self, args: &[&str]) -> String {
        let out = self
            .docker()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "docker {args:?}: {}", stderr(&out));
        stdout(&out)
    }

    /// What `status --json` says of the sessions through the kept connection.
    fn kept_sessions(&self) -> u64 {
        let status: serde_json::Value =
            serde_json::from_str(&stdout(&self.n10n(&["status", "--json"]))).unwrap();
        status["forwarder"]["kept_sessions"].as_u64().unwrap()
    }

    fn forwarder_pid(&self) -> u32 {
        let pidfile = self.project.home.path().join("vms/test-vm/forwarder.pid");
        std::fs::read_to_string(pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// `docker run` of the busybox image as `name`, removed when it ends, with no network.
    fn run_args(&self, name: &str, detach: bool, command: &[&str]) -> Vec<String> {
        let mut args = vec!["run".to_string()];
        if detach {
            args.push("-d".into());
        }
        args.extend(
            [
                "--rm",
                "--name",
                name,
                "--network",
                "none",
                &self.image,
                "/bin/busybox",
            ]
            .map(String::from),
        );
        args.extend(command.iter().map(|c| c.to_string()));
        args
    }

    /// A busybox image, FROM scratch, built through the forwarder.
    fn busybox_image(&self) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy("/bin/busybox", dir.path().join("busybox")).unwrap();
        // A label of its own gives each test's image its own id: the clean-up of another
        // test removes the containers of its image by `ancestor`, which matches by id (it
        // killed this test's container with 137 while the two ran side by side).
        std::fs::write(
            dir.path().join("Dockerfile"),
            format!(
                "FROM scratch\nLABEL n10n.test={}\nCOPY busybox /bin/busybox\n",
                self.image
            ),
        )
        .unwrap();
        self.docker_ok(&[
            "build",
            "-q",
            "-t",
            &self.image,
            dir.path().to_str().unwrap(),
        ]);
    }
}

impl Drop for Forwarded {
    fn drop(&mut self) {
        let _ = self.n10n(&["stop"]);
        // `docker run -t` ended by killing its CLI leaves the container running.
        let ancestor = format!("ancestor={}", self.image);
        if let Ok(out) = Command::new("docker")
            .args(["ps", "-aq", "--filter", &ancestor])
            .output()
        {
            for id in stdout(&out).split_whitespace() {
                let _ = Command::new("docker").args(["rm", "-f", id]).output();
            }
        }
        let _ = Command::new("docker")
            .args(["image", "rm", "-f", &self.image])
            .output();
    }
}

fn alive(pid: u32) -> bool {
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

#[test]
fn the_host_docker_cli_works_through_the_forwarder() {
    let sshd = Sshd::start();
    let f = Forwarded::up(&sshd, "");
    let socket = f.socket();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&socket), 0o600);
    assert_eq!(mode(socket.parent().unwrap()), 0o700);

    assert!(
        f.docker_ok(&["version", "--format", "{{.Server.Version}}"])
            .trim()
            .len()
            > 2
    );
    f.busybox_image();
    // stdin to the container, and its EOF (half-close through the relay).
    let out = output_with_stdin(
        {
            let mut cmd = f.docker();
            cmd.args([
                "run",
                "-i",
                "--rm",
                "--network",
                "none",
                &f.image,
                "/bin/busybox",
                "cat",
            ]);
            cmd
        },
        b"hi through the forwarder\n",
    );
    assert_eq!(
        stdout(&out),
        "hi through the forwarder\n",
        "{}",
        stderr(&out)
    );
    // exec into a running container.
    let name = format!("n10n-test-{}-exec", std::process::id());
    let args = f.run_args(&name, true, &["sleep", "60"]);
    f.docker_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        f.docker_ok(&["exec", &name, "/bin/busybox", "echo", "inside"]),
        "inside\n"
    );
    f.docker_ok(&["rm", "-f", &name]);
    // 20 clients at once.
    let children: Vec<_> = (0..20)
        .map(|_| {
            f.docker()
                .args(["ps", "-q"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }

    // The context, made with the real CLI, works; `env` says the same socket.
    let contexts = Command::new("docker")
        .args(["context", "ls", "--format", "{{.Name}} {{.DockerEndpoint}}"])
        .env("DOCKER_CONFIG", f.docker_config.path())
        .output()
        .unwrap();
    let listed = stdout(&contexts);
    assert!(
        listed.contains(&format!("n10n-test-vm unix://{}", socket.display())),
        "{listed}"
    );
    let out = Command::new("docker")
        .args(["--context", "n10n-test-vm", "ps", "-q"])
        .env("DOCKER_CONFIG", f.docker_config.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let env = stdout(&f.n10n(&["env"]));
    assert!(
        env.contains(&format!("export DOCKER_HOST=unix://{}", socket.display())),
        "{env}"
    );
    assert!(
        env.contains("export TESTCONTAINERS_DOCKER_SOCKET_OVERRIDE=/var/run/docker.sock"),
        "{env}"
    );
    let status = stdout(&f.n10n(&["status", "--json"]));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["forwarder"]["healthy"], true, "{status}");
    assert_eq!(status["docker_context"], "n10n-test-vm");

    // A second up leaves the healthy forwarder alone; --docker-context makes ours current.
    let pid = f.forwarder_pid();
    let out = f.n10n(&["up", "--no-provision", "--docker-context"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(f.forwarder_pid(), pid);
    let config = std::fs::read_to_string(f.docker_config.path().join("config.json")).unwrap();
    assert!(
        config.contains(r#""currentContext": "n10n-test-vm""#),
        "{config}"
    );

    // destroy: forwarder, socket and context go, and the current context is reset.
    let out = f.n10n(&["destroy", "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("the forwarder to end", Duration::from_secs(10), || {
        (!alive(pid)).then_some(())
    });
    assert!(!socket.exists());
    let config = std::fs::read_to_string(f.docker_config.path().join("config.json")).unwrap();
    assert!(!config.contains("n10n-test-vm"), "{config}");
}

#[test]
fn docker_run_t_gets_a_sized_terminal_through_the_forwarder() {
    let sshd = Sshd::start();
    let f = Forwarded::up(&sshd, "");
    f.busybox_image();
    let command = format!(
        "DOCKER_HOST=unix://{} DOCKER_CONFIG={} docker run -it --rm --network none {} \
         /bin/busybox sh -c 'tty; while :; do stty size 2>/dev/null; sleep 0.2; done'",
        f.socket().display(),
        f.docker_config.path().display(),
        f.image
    );
    let tmux = crate::shell::Tmux::start(format!("n10n-fwd-{}", std::process::id()), &command);
    tmux.wait_for_line("/dev/pts/0");
    // A resize of the terminal reaches the container's PTY (the CLI's resize call goes
    // through the forwarder); busybox's stty fails until the container has a size.
    // The CLI starts watching SIGWINCH just after the container starts: a resize before that
    // is missed, so each try uses a new width.
    let reached = (80..90).any(|columns| {
        tmux.resize(columns, 25);
        let size = format!("25 {columns}");
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while std::time::Instant::now() < deadline {
            if tmux.capture().lines().any(|l| l.trim_end() == size) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    });
    assert!(
        reached,
        "no resize reached the container:\n{}",
        tmux.capture()
    );
}

#[test]
fn a_100_mb_image_goes_through_both_ways() {
    let sshd = Sshd::start();
    let f = Forwarded::up(&sshd, "");
    let dir = tempfile::tempdir().unwrap();
    let noise = dir.path().join("noise");
    let out = Command::new("head")
        .args(["-c", "104857600", "/dev/urandom"])
        .output()
        .unwrap();
    std::fs::write(&noise, out.stdout).unwrap();
    let import = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C {} -cf - noise | docker import - {}",
            dir.path().display(),
            f.image
        ))
        .env("DOCKER_HOST", format!("unix://{}", f.socket().display()))
        .output()
        .unwrap();
    assert!(import.status.success(), "{}", stderr(&import));
    let id = f.docker_ok(&["image", "inspect", "-f", "{{.Id}}", &f.image]);
    let saved = dir.path().join("saved.tar");
    let save = f
        .docker()
        .args(["save", "-o", saved.to_str().unwrap(), &f.image])
        .output()
        .unwrap();
    assert!(save.status.success(), "{}", stderr(&save));
    assert!(std::fs::metadata(&saved).unwrap().len() > 100 << 20);
    f.docker_ok(&["image", "rm", &f.image]);
    f.docker_ok(&["load", "-q", "-i", saved.to_str().unwrap()]);
    assert_eq!(
        f.docker_ok(&["image", "inspect", "-f", "{{.Id}}", &f.image]),
        id
    );
}

#[test]
fn the_forwarder_reconnects_after_sshd_restarts_and_stale_sockets_are_replaced() {
    let sshd = Sshd::start();
    let port = sshd.port;
    let f = Forwarded::up(&sshd, "");
    let pid = f.forwarder_pid();
    let dir = sshd.kill();
    // Restart at once: while the port is free another test's sshd may take it.
    let status = f.project.home.path().join("vms/test-vm/forwarder.json");
    wait_for(
        "the forwarder to see the drop",
        Duration::from_secs(10),
        || {
            let text = std::fs::read_to_string(&status).ok()?;
            text.contains("\"connected\": false").then_some(())
        },
    );
    let mut sshd = Sshd::start_in(dir, port, "ed25519");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut out = f.docker().args(["ps", "-q"]).output().unwrap();
    while !out.status.success() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        out = f.docker().args(["ps", "-q"]).output().unwrap();
    }
    let log = std::fs::read_to_string(f.project.home.path().join("vms/test-vm/forwarder.log"));
    assert!(
        out.status.success(),
        "docker ps did not answer within 10 s of sshd's restart: {}\nthe forwarder's log:\n{}\n{}",
        stderr(&out),
        log.unwrap_or_default(),
        sshd.report()
    );
    assert_eq!(f.forwarder_pid(), pid, "the same forwarder reconnected");
    let status: serde_json::Value =
        serde_json::from_str(&stdout(&f.n10n(&["status", "--json"]))).unwrap();
    assert!(
        status["forwarder"]["reconnects"].as_u64().unwrap() >= 1,
        "{status}"
    );

    // A forwarder killed outright leaves its socket; the next up replaces it.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_for("the forwarder to die", Duration::from_secs(10), || {
        (!alive(pid)).then_some(())
    });
    assert!(f.socket().exists(), "SIGKILL leaves the socket file");
    let out = f.n10n(&["up", "--no-provision"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_ne!(f.forwarder_pid(), pid);
    f.docker_ok(&["ps", "-q"]);
    drop(sshd);
}

#[test]
fn static_forwards_reach_a_guest_port_from_another_host_port() {
    let guest = TcpListener::bind("127.0.0.1:0").unwrap();
    let guest_port = guest.local_addr().unwrap().port();
    let host_port = free_port();
    let sshd = Sshd::start();
    let f = Forwarded::up(
        &sshd,
        &format!("[forward]\nports = [\"{host_port}:{guest_port}\"]\nauto = false\n"),
    );
    let server = std::thread::spawn(move || {
        let (mut stream, _) = guest.accept().unwrap();
        let mut asked = [0u8; 5];
        stream.read_exact(&mut asked).unwrap();
        stream.write_all(b"answer to ").unwrap();
        stream.write_all(&asked).unwrap();
    });
    let mut client = wait_for("the static forward", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", host_port)).ok()
    });
    client.write_all(b"hello").unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "answer to hello");
    server.join().unwrap();
    let ports = stdout(&f.n10n(&["ports"]));
    assert!(
        ports.contains(&format!("127.0.0.1:{host_port}"))
            && ports.contains(&format!("127.0.0.1:{guest_port}")),
        "{ports}"
    );
    assert!(ports.contains("static"), "{ports}");
}

#[test]
fn n10n_dev_s_own_commands_go_through_the_kept_connection_and_fall_back_without_it() {
    let sshd = Sshd::start();
    let f = Forwarded::up(&sshd, "");
    let kept = f.project.home.path().join("vms/test-vm/ssh.sock");
    let mode = std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let before = f.kept_sessions();
    // A client that leaves before its handshake (a command that gave up waiting) is no session.
    drop(std::os::unix::net::UnixStream::connect(&kept).unwrap());

    let out = f.n10n(&[
        "-v",
        "run",
        "--no-sync",
        "--",
        "sh",
        "-c",
        "echo hi; exit 3",
    ]);
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(3), "hi\n")
    );
    assert!(
        stderr(&out).contains("through the kept connection"),
        "{}",
        stderr(&out)
    );
    f.project
        .write("new.txt", "synced through the kept connection");
    assert!(f.n10n(&["sync"]).status.success());
    assert!(f.project.replica().join("new.txt").exists());
    let mut shell = f.project.cmd(&["shell", "--no-sync"]);
    shell.env("DOCKER_CONFIG", f.docker_config.path());
    let shell = output_with_stdin(shell, b"echo from the shell\n");
    assert_eq!(stdout(&shell), "from the shell\n", "{}", stderr(&shell));
    assert!(f.n10n(&["up", "--no-provision"]).status.success());
    assert_eq!(
        f.kept_sessions(),
        before + 4,
        "run, sync, shell and up each made one session through the kept connection"
    );

    // A forwarder killed outright leaves its sockets behind: commands connect by themselves.
    let pid = f.forwarder_pid();
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_for("the forwarder to die", Duration::from_secs(5), || {
        (!alive(pid)).then_some(())
    });
    assert!(kept.exists());
    let out = f.n10n(&["-v", "run", "--no-sync", "--", "echo", "direct"]);
    assert_eq!(stdout(&out), "direct\n", "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no kept connection"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_frozen_machine_keeps_what_goes_through_the_forwarder() {
    let sshd = Sshd::start();
    let f = Forwarded::up(&sshd, "");
    let sessions = f.kept_sessions();
    let mut run = f
        .project
        .cmd(&["run", "--no-sync", "--", "sh", "-c", "sleep 1; echo run-ok"]);
    run.env("DOCKER_CONFIG", f.docker_config.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let run = run.spawn().unwrap();
    wait_for("the run to go through", Duration::from_secs(20), || {
        (f.kept_sessions() > sessions).then_some(())
    });
    // The laptop sleeps: the whole machine freezes until the forwarder finds it silent.
    sshd.freeze();
    let forwarder = f.project.home.path().join("vms/test-vm/forwarder.json");
    let connected = || -> Option<bool> {
        let status: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&forwarder).ok()?).ok()?;
        status["connected"].as_bool()
    };
    wait_for(
        "the forwarder to find it silent",
        Duration::from_secs(20),
        || (connected() == Some(false)).then_some(()),
    );
    sshd.thaw();
    // It wakes: the old connection answers again, and the run on it ends as it would have.
    let run = run.wait_with_output().unwrap();
    assert_eq!(
        (run.status.code(), stdout(&run).as_str()),
        (Some(0), "run-ok\n"),
        "{}",
        stderr(&run)
    );
    wait_for(
        "the forwarder to be connected",
        Duration::from_secs(10),
        || (connected() == Some(true)).then_some(()),
    );
    let out = f.n10n(&["run", "--no-sync", "--", "echo", "after"]);
    assert_eq!(stdout(&out), "after\n", "{}", stderr(&out));
}

#[test]
fn provisioning_renews_the_forwarder_without_cutting_what_goes_through_it() {
    let sshd = Sshd::start();
    let f = Forwarded::up(&sshd, "");
    f.busybox_image();
    let pid = f.forwarder_pid();
    let sessions = f.kept_sessions();
    let name = format!("n10n-test-{}-renew", std::process::id());
    let spawn = |mut cmd: Command| {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Through the kept connection, and through the engine socket: both outlive the renewal.
    let mut run = f
        .project
        .cmd(&["run", "--no-sync", "--", "sh", "-c", "sleep 6; echo run-ok"]);
    run.env("DOCKER_CONFIG", f.docker_config.path());
    let run = spawn(run);
    let mut container = f.docker();
    container.args(f.run_args(&name, false, &["sh", "-c", "sleep 6; echo container-ok"]));
    let container = spawn(container);
    wait_for("both to be under way", Duration::from_secs(20), || {
        let running = f.docker_ok(&["ps", "-q", "--filter", &format!("name={name}")]);
        (!running.trim().is_empty() && f.kept_sessions() > sessions).then_some(())
    });

    let out = f.n10n(&["provision", "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(f.forwarder_pid(), pid, "the forwarder was replaced");
    let status: serde_json::Value =
        serde_json::from_str(&stdout(&f.n10n(&["status", "--json"]))).unwrap();
    assert!(
        status["forwarder"]["renewals"].as_u64() >= Some(1),
        "{status}"
    );
    // New commands go through the new connection at once.
    f.docker_ok(&["ps", "-q"]);

    let run = run.wait_with_output().unwrap();
    assert!(
        run.status.success(),
        "run: {}: {}",
        run.status,
        stderr(&run)
    );
    assert_eq!(stdout(&run), "run-ok\n");
    let container = container.wait_with_output().unwrap();
    assert!(
        container.status.success(),
        "docker run: {}: {}{}",
        container.status,
        stdout(&container),
        stderr(&container)
    );
    assert_eq!(stdout(&container), "container-ok\n");
    // Drained, the old connection ends: the forwarder holds one connection to sshd again.
    let filter = format!("( dport = :{} )", sshd.port);
    wait_for("the old connection to end", Duration::from_secs(10), || {
        let out = Command::new("ss")
            .args(["-Htn", "state", "established", &filter])
            .output()
            .unwrap();
        (stdout(&out).lines().count() == 1).then_some(())
    });
}
