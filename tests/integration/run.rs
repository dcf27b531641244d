//! `run`: exit codes, separate streams, stdin, quoting, environment, signals, failures.

use std::process::Stdio;
use std::time::Duration;

use crate::harness::*;

#[test]
fn exit_code_and_separate_streams_pass_through() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    let out = project.run(&[
        "run",
        "--no-sync",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(stderr(&out), "err\n");
}

#[test]
fn death_by_signal_is_128_plus_n() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    let out = project.run(&["run", "--no-sync", "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
}

#[test]
fn arguments_arrive_unchanged() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    let args = [
        "a b",
        "it's",
        "\"q\"",
        "$HOME",
        "x;y",
        "*",
        "",
        "back\\slash",
        "new\nline",
        "-e",
    ];
    let mut cmd = vec!["run", "--no-sync", "--", "printf", "[%s]\\n"];
    cmd.extend(args);
    let out = project.run(&cmd);
    let expected: String = args.iter().map(|a| format!("[{a}]\n")).collect();
    assert_eq!(stdout(&out), expected);
}

#[test]
fn stdin_is_forwarded_with_eof() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    let out = output_with_stdin(
        project.cmd(&[
            "run",
            "--no-sync",
            "--",
            "sh",
            "-c",
            "tr a-z A-Z; echo done",
        ]),
        b"hello\nworld\n",
    );
    assert_eq!(stdout(&out), "HELLO\nWORLD\ndone\n");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn ten_megabytes_of_output_arrive_intact() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    let out = project.run(&["run", "--no-sync", "--", "seq", "1", "1400000"]);
    assert_eq!(out.status.code(), Some(0));
    let local = run_ok("seq", &["1", "1400000"]).stdout;
    assert!(local.len() > 10_000_000);
    assert!(
        out.stdout == local,
        "output differs: {} bytes vs {}",
        out.stdout.len(),
        local.len()
    );
}

#[test]
fn environment_and_working_directory() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    std::fs::create_dir_all(project.replica().join("sub dir")).unwrap();
    let out = project
        .cmd(&[
            "run",
            "--no-sync",
            "-e",
            "GREETING=hi there",
            "-e",
            "FROM_HERE",
            "-w",
            "sub dir",
            "--",
        ])
        .args(["sh", "-c", "echo \"$GREETING|$FROM_HERE|$PWD\""])
        .env("FROM_HERE", "local value")
        .output()
        .unwrap();
    let expected = format!(
        "hi there|local value|{}\n",
        project.replica().join("sub dir").display()
    );
    assert_eq!(stdout(&out), expected, "{}", stderr(&out));
}

#[test]
fn missing_replica_directory_is_created() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    assert!(!project.replica().exists());
    let out = project.run(&["run", "--no-sync", "--", "pwd"]);
    assert_eq!(stdout(&out), format!("{}\n", project.replica().display()));
}

#[test]
fn bad_env_name_is_a_usage_error() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    let out = project.run(&["run", "-e", "1BAD=x", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not a valid environment variable name"));
}

/// Start `run` of a shell that starts a child, wait until both exist on the "remote", deliver
/// `signal` to n10n-dev, and check that it exits with 128+N and leaves no process behind; with
/// `through_agent`, after a sync that leaves the agent that starts the command.
fn stop_with(signal: &str, expected_code: i32, tag: &str, through_agent: bool) {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    if through_agent {
        project.ok(&["-q", "sync"]);
    }
    let child = project
        .cmd(&[
            "run",
            "--no-sync",
            "--",
            "sh",
            "-c",
            &format!("sleep {tag}; echo not-reached"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sleeper = format!("^sleep {tag}$");
    let shell = format!("^sh -c sleep {tag}");
    wait_for("the remote sleep to start", Duration::from_secs(20), || {
        (!processes_matching(&sleeper).is_empty() && !processes_matching(&shell).is_empty())
            .then_some(())
    });
    run_ok("kill", &[&format!("-{signal}"), &child.id().to_string()]);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(expected_code), "{}", stderr(&out));
    assert!(!stdout(&out).contains("not-reached"));
    wait_for(
        "the remote processes to be gone",
        Duration::from_secs(10),
        || {
            (processes_matching(&sleeper).is_empty() && processes_matching(&shell).is_empty())
                .then_some(())
        },
    );
}

#[test]
fn ctrl_c_stops_the_remote_process_group() {
    stop_with("INT", 130, "301", false);
}

#[test]
fn sigterm_stops_the_remote_process_group() {
    stop_with("TERM", 143, "302", false);
}

#[test]
fn ctrl_c_stops_a_command_the_agent_started() {
    stop_with("INT", 130, "304", true);
}

/// A `.profile` that counts its runs in `$HOME/profile-runs` and exports FROM_PROFILE=`value`.
fn write_counting_profile(home: &std::path::Path, value: &str) {
    let profile = format!("echo run >> \"$HOME/profile-runs\"\nexport FROM_PROFILE={value}\n");
    std::fs::write(home.join(".profile"), profile).unwrap();
}

fn profile_runs(home: &std::path::Path) -> usize {
    std::fs::read_to_string(home.join("profile-runs")).map_or(0, |text| text.lines().count())
}

#[test]
fn commands_get_the_login_environment_captured_once_until_a_profile_changes() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    let home = sshd.path().join("home");
    write_counting_profile(&home, "one");
    let show = ["sh", "-c", "echo \"$FROM_PROFILE\""];
    let run = |sync: bool| {
        let mut args = vec!["run"];
        args.extend((!sync).then_some("--no-sync"));
        args.push("--");
        args.extend(show);
        let out = project.run(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    // The sync starts the agent, which captures the login environment for the first command.
    assert_eq!(run(true), "one\n");
    assert_eq!(run(false), "one\n");
    assert_eq!(run(false), "one\n");
    assert_eq!(
        profile_runs(&home),
        1,
        "three commands ran the profile again"
    );
    // Changed within the same second, to the same size: a changed profile all the same.
    write_counting_profile(&home, "two");
    assert_eq!(run(false), "two\n");
    assert_eq!(run(false), "two\n");
    assert_eq!(profile_runs(&home), 2);
    // `[run] login_shell = true`: today's way, a login shell for every command.
    let config = project.root().join("n10n-dev.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[run]\nlogin_shell = true\n");
    std::fs::write(&config, text).unwrap();
    assert_eq!(run(false), "two\n");
    assert_eq!(run(false), "two\n");
    assert_eq!(profile_runs(&home), 4);
}

#[test]
fn a_command_the_agent_starts_keeps_every_contract_of_run() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    let home = sshd.path().join("home");
    write_counting_profile(&home, "x");
    std::fs::create_dir_all(project.root().join("sub dir")).unwrap();
    project.ok(&["-q", "sync"]);
    let run = |args: &[&str]| {
        let mut all = vec!["run", "--no-sync"];
        all.extend(args);
        project.run(&all)
    };
    let out = run(&["--", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(
        (out.status.code(), stdout(&out), stderr(&out)),
        (Some(7), "out\n".into(), "err\n".into())
    );
    let out = run(&["--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    let args = ["a b", "it's", "$HOME", "*", "", "new\nline", "-e"];
    let mut printf = vec!["--", "printf", "[%s]\\n"];
    printf.extend(args);
    let expected: String = args.iter().map(|a| format!("[{a}]\n")).collect();
    assert_eq!(stdout(&run(&printf)), expected);
    let out = output_with_stdin(
        project.cmd(&[
            "run",
            "--no-sync",
            "--",
            "sh",
            "-c",
            "tr a-z A-Z; echo done",
        ]),
        b"hello\n",
    );
    assert_eq!(stdout(&out), "HELLO\ndone\n");
    let out = project
        .cmd(&[
            "run",
            "--no-sync",
            "-e",
            "GREETING=hi there",
            "-e",
            "FROM_HERE",
        ])
        .args(["-w", "sub dir", "--", "sh", "-c"])
        .arg("echo \"$GREETING|$FROM_HERE|$FROM_PROFILE|$PWD\"; pwd -P")
        .env("FROM_HERE", "local value")
        .output()
        .unwrap();
    let dir = project.replica().join("sub dir");
    assert_eq!(
        stdout(&out),
        format!("hi there|local value|x|{0}\n{0}\n", dir.display()),
        "{}",
        stderr(&out)
    );
    assert_exit_saying(
        &run(&["-w", "nowhere", "--", "true"]),
        255,
        "-w nowhere: no such directory in the replica",
    );
    assert_exit_saying(
        &run(&["--", "n10n-no-such-command"]),
        127,
        "n10n-no-such-command",
    );
    assert_eq!(profile_runs(&home), 1, "a command started in a login shell");
}

#[test]
fn a_silent_server_is_detected_by_keepalive() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    let mut sleep = project.spawn_remote_sleep(303);
    // Freeze the server side: the TCP connection stays open but nothing answers.
    sshd.signal_connections("STOP");
    let status = wait_for(
        "n10n-dev to notice the dead connection",
        Duration::from_secs(15),
        || sleep.child.try_wait().unwrap(),
    );
    assert_eq!(status.code(), Some(255));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut sleep.child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("connection to") && err.contains("lost"),
        "{err}"
    );
    sshd.signal_connections("CONT");
}

#[test]
fn a_killed_server_ends_the_command_with_255() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    let mut sleep = project.spawn_remote_sleep(304);
    let _dir = sshd.kill();
    let status = wait_for("n10n-dev to exit", Duration::from_secs(15), || {
        sleep.child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(255));
}

#[test]
fn refused_connection_is_255_with_a_reason() {
    if direct_only() {
        return;
    }
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    project.write_config(free_port(), &sshd.user, &sshd.identity, "");
    let out = project.run(&["run", "--no-sync", "--", "true"]);
    assert_exit_saying(&out, 255, "cannot connect to");
}

#[test]
fn unknown_key_is_rejected_with_advice() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    let other = keygen(project.home.path(), "other", "ed25519");
    project.write_config(sshd.port, &sshd.user, &other, "");
    let out = project.run(&["run", "--no-sync", "--", "true"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(stderr(&out).contains("authorized_keys"), "{}", stderr(&out));
}

#[test]
fn rsa_keys_authenticate() {
    let sshd = Sshd::start_in(tempfile::tempdir().unwrap(), free_port(), "rsa");
    let project = Project::new(&sshd);
    let out = project.run(&["run", "--no-sync", "--", "echo", "rsa ok"]);
    assert_eq!(stdout(&out), "rsa ok\n", "{}", stderr(&out));
}

#[test]
fn changed_host_key_is_refused_and_nothing_runs() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    project.ok(&["run", "--no-sync", "--", "true"]);
    let pinned =
        std::fs::read_to_string(project.home.path().join("vms/test-vm/known_hosts")).unwrap();
    assert!(pinned.starts_with("test-vm ssh-ed25519 "), "{pinned}");

    // Same port and client key, new host key: what a man in the middle would present.
    let dir = sshd.kill();
    std::fs::remove_file(dir.path().join("host_key")).unwrap();
    let port = project_port(&project);
    let impostor = Sshd::start_in(dir, port, "ed25519");
    let marker = project.remote.path().join("ran");
    let out = project.run(&["run", "--no-sync", "--", "touch", marker.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(255));
    let err = stderr(&out);
    assert!(err.contains("host key of"), "{err}");
    assert_eq!(
        err.matches("SHA256:").count(),
        2,
        "both fingerprints: {err}"
    );
    assert!(err.contains("rm '"), "how to reset: {err}");
    assert!(!marker.exists(), "the command ran despite the key mismatch");
    drop(impostor);
}

fn project_port(project: &Project) -> u16 {
    let config = std::fs::read_to_string(project.root().join("n10n-dev.toml")).unwrap();
    config
        .lines()
        .find_map(|l| l.strip_prefix("port = "))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn run_syncs_first_unless_told_not_to() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    project.write("hello.txt", "from the mac\n");
    let out = project.run(&["run", "--", "cat", "hello.txt"]);
    assert_eq!(stdout(&out), "from the mac\n", "{}", stderr(&out));
    assert!(stderr(&out).starts_with("sync: sent "), "{}", stderr(&out));
    project.write("hello.txt", "changed\n");
    let out = project.run(&["run", "--no-sync", "--", "cat", "hello.txt"]);
    assert_eq!(stdout(&out), "from the mac\n");
    let out = project.run(&["-q", "run", "--", "cat", "hello.txt"]);
    assert_eq!(stdout(&out), "changed\n");
    assert_eq!(stderr(&out), "");
}

#[test]
fn a_closed_stdout_ends_the_command_like_sigpipe() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    let mut child = project
        .cmd(&["run", "--no-sync", "--", "yes", "n10n-broken-pipe"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 17];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    assert_eq!(&first, b"n10n-broken-pipe\n");
    drop(child.stdout.take());
    let status = wait_for("n10n-dev to stop", Duration::from_secs(20), || {
        child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(141));
    wait_for(
        "the remote `yes` to be stopped",
        Duration::from_secs(10),
        || {
            processes_matching("^yes n10n-broken-pipe$")
                .is_empty()
                .then_some(())
        },
    );
}
