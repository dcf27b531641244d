//! What a new user meets in the first hour (issue 17): messages that say only what is true,
//! with the next step, and one meaning everywhere.

use crate::harness::*;

#[test]
fn stop_on_an_ssh_host_ends_the_forwarder_and_leaves_the_host() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    let out = project.run(&["stop"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "stop: forwarder stopped; the host is left running\n"
    );
}

#[test]
fn destroy_answered_no_on_a_terminal_is_aborted_with_a_question_that_fits() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    let command = format!(
        "cd '{}' && N10N_DEV_HOME='{}' N10N_DEV_CONFIG='{}' '{BIN}' destroy; echo \"EXIT=$?\"; sleep 600",
        project.root().display(),
        project.home.path().display(),
        project.user_config().display()
    );
    let tmux = crate::shell::Tmux::start(format!("n10n-destroy-{}", std::process::id()), &command);
    wait_for("the question", std::time::Duration::from_secs(20), || {
        tmux.capture().contains("[y/N]").then_some(())
    });
    let asked = tmux.capture();
    assert!(
        asked.contains("Forget the host of test-vm") && !asked.contains("disk"),
        "{asked}"
    );
    tmux.send("n");
    tmux.wait_for_line("error: aborted");
    tmux.wait_for_line("EXIT=1");
}

#[test]
fn a_missing_workdir_and_a_missing_command_mean_the_same_on_every_backend() {
    require_docker();
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    project.write("a.txt", "a");
    let native = tempfile::tempdir().unwrap();
    std::fs::write(
        native.path().join("n10n-dev.toml"),
        "[vm]\nbackend = \"native\"\n",
    )
    .unwrap();
    let native_run = |args: &[&str]| command_in(native.path(), args).output().unwrap();
    type Run<'a> = &'a dyn Fn(&[&str]) -> std::process::Output;
    let runs: [(&str, Run); 2] = [("ssh", &|args| project.run(args)), ("native", &native_run)];
    for (backend, run) in runs {
        let out = run(&["run", "-w", "nowhere", "--", "true"]);
        assert_eq!(out.status.code(), Some(255), "{backend}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("-w nowhere: no such directory"),
            "{backend}: {}",
            stderr(&out)
        );
        let out = run(&["-v", "run", "--", "true"]);
        assert!(
            stderr(&out).contains("DEBUG"),
            "{backend} logs nothing at -v: {}",
            stderr(&out)
        );
        let out = run(&["run", "--", "n10n-no-such-command"]);
        assert_eq!(out.status.code(), Some(127), "{backend}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("n10n-no-such-command"),
            "{backend}: {}",
            stderr(&out)
        );
    }
    assert!(project.replica().join("a.txt").exists());
    assert!(
        !project.replica().join("nowhere").exists(),
        "-w created its directory"
    );
    assert!(!native.path().join("nowhere").exists());
}

/// The commands `--help` lists.
fn commands_in_help() -> std::collections::BTreeSet<String> {
    let help = run_ok(BIN, &["--help"]);
    stdout(&help)
        .split("Commands:")
        .nth(1)
        .expect("a Commands section")
        .split("Options:")
        .next()
        .unwrap()
        .lines()
        // A command's line; its description's wrapped lines are indented further.
        .filter(|line| line.starts_with("  ") && !line.starts_with("   "))
        .filter_map(|line| line.split_whitespace().next().map(str::to_string))
        .filter(|name| name != "help")
        .collect()
}

#[test]
fn every_command_in_help_is_in_the_readme_table_and_the_other_way_round() {
    let in_help = commands_in_help();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table = readme
        .split("## Commands")
        .nth(1)
        .expect("a Commands section in the README");
    let in_readme: std::collections::BTreeSet<String> = table
        .lines()
        .take_while(|line| {
            line.starts_with('|') || line.trim().is_empty() || line.starts_with("| ")
        })
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|cell| cell.split([' ', '`']).next().map(str::to_string))
        .collect();
    assert_eq!(in_help, in_readme);
}

#[test]
fn help_shows_global_options_and_the_environment_and_logs_are_plain_in_a_pipe() {
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["build-image", "--help"],
    ] {
        let help = stdout(&run_ok(BIN, args));
        assert!(
            help.contains("Global options:\n  -v, --verbose"),
            "{args:?}: {help}"
        );
    }
    let help = stdout(&run_ok(BIN, &["--help"]));
    for name in [
        "N10N_DEV_BACKEND",
        "N10N_DEV_HOME",
        "BUILD_NUMBER",
        "NO_COLOR",
        "DOCKER_CONFIG",
    ] {
        assert!(help.contains(&format!("\n  {name} ")), "{name}: {help}");
    }
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    project.write("a.txt", "a");
    let out = project.run(&["-v", "sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("DEBUG"), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains('\u{1b}'),
        "colour escapes in a pipe: {:?}",
        stderr(&out)
    );
}

#[test]
fn ports_on_the_native_backend_says_they_are_already_local() {
    require_docker();
    let dir = project_dir("[vm]\nbackend = \"native\"\n");
    let out = command_in(dir.path(), &["ports"]).output().unwrap();
    assert_exit_saying(&out, 0, "already this machine's");
}

#[test]
fn status_and_up_say_whether_an_ssh_host_answers() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    let out = project.run(&["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["state"], "reachable");
    for vm_only in ["cpus", "memory", "disk"] {
        assert!(
            json.get(vm_only).is_none(),
            "{vm_only} shown for an ssh host: {json}"
        );
    }
    assert!(json["replica"].is_string());

    // Nothing listens there.
    let closed = free_port();
    project.write_config(closed, &sshd.user, &sshd.identity, "");
    let out = project.run(&["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("state:     unreachable (127.0.0.1:"),
        "{text}"
    );
    assert!(!text.contains("resources:"), "{text}");
    let started = std::time::Instant::now();
    let out = project.run(&["up"]);
    assert_exit_saying(&out, 1, &format!("cannot reach 127.0.0.1:{closed}"));
    assert!(
        stderr(&out).contains("is sshd running there?"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("VM"), "{}", stderr(&out));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn check_base_with_a_malformed_image_name_is_a_usage_error_on_every_backend() {
    for backend in ["lima", "vagrant", "native", "ssh"] {
        let dir = project_dir(&format!(
            "[vm]\nbackend = \"{backend}\"\n[ssh]\nhost = \"127.0.0.1\"\nport = 9\n"
        ));
        let out = command_in(dir.path(), &["check-base", "Not An:Image"])
            // No backend tool to find: the name is judged before any is looked for.
            .env("PATH", "/nonexistent")
            .output()
            .unwrap();
        assert_exit_saying(&out, 2, "is not an image reference");
    }
}

#[test]
fn build_image_checks_its_tag_and_save_directory_before_building() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    project.write("Dockerfile", "FROM scratch\n");
    let out = project.run(&["build-image", "-t", "bad tag"]);
    assert_exit_saying(&out, 2, "a tag is 1–128 of [A-Za-z0-9_.-]");
    let out = project
        .cmd(&["build-image"])
        .env("BUILD_NUMBER", "12/3")
        .output()
        .unwrap();
    assert_exit_saying(&out, 2, "$BUILD_NUMBER");
    let out = project.run(&["build-image", "--save", "/nonexistent-dir/image.tar"]);
    assert_exit_saying(&out, 2, "no directory /nonexistent-dir");
    // Refused before anything ran: no sync happened.
    assert!(!project.replica().join("Dockerfile").exists());
}

#[test]
fn docker_context_rm_with_nothing_to_remove_says_so() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    let out = project.run(&["docker-context", "rm"]);
    assert_exit_saying(&out, 0, "n10n-test-vm does not exist: nothing to remove");
}

#[test]
fn a_docker_cli_without_an_engine_is_told_to_start_it_not_to_install_docker() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("n10n-dev.toml"), "").unwrap();
    for command in ["status", "env", "stop", "ssh-config", "destroy"] {
        let out = command_in(dir.path(), &[command])
            // The real docker CLI, pointed at an engine that is not there; no VM tools.
            .env("PATH", "/usr/bin:/bin")
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .output()
            .unwrap();
        assert_exit_saying(
            &out,
            2,
            "the Docker CLI is here but no engine answers: start it",
        );
        assert!(
            !stderr(&out).contains("install Docker"),
            "{command}: {}",
            stderr(&out)
        );
        if command == "status" {
            assert!(
                stdout(&out).contains("backend:   auto (not usable here)"),
                "{}",
                stdout(&out)
            );
        }
    }
}

#[test]
fn doctor_checks_an_ssh_host_s_key_and_port() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    let out = project.run(&["doctor"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("ssh host:  127.0.0.1:"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains(" reachable\n"), "{}", stdout(&out));

    let closed = free_port();
    project.write_config(closed, &sshd.user, &sshd.identity, "");
    let out = project.run(&["doctor"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(
            "verdict:   not ready: the host does not answer on its SSH port: is sshd running there?"
        ),
        "{}",
        stdout(&out)
    );

    let missing = project.home.path().join("no-such-key");
    project.write_config(sshd.port, &sshd.user, &missing, "");
    let out = project.run(&["doctor"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains("verdict:   not ready: cannot read the key"),
        "{text}"
    );
    assert!(text.contains("ssh-keygen -t ed25519"), "{text}");
    // The reason is said once, by the verdict.
    assert_eq!(text.matches("cannot read the key").count(), 1, "{text}");
}

#[test]
fn invoke_e_with_a_file_asks_whether_event_was_meant() {
    let dir = project_dir("[vm]\nbackend = \"native\"\n");
    std::fs::write(dir.path().join("event.json"), "{}").unwrap();
    let out = command_in(dir.path(), &["invoke", "some-image:1", "-e", "event.json"])
        .output()
        .unwrap();
    assert_exit_saying(&out, 2, "did you mean --event event.json?");
}

#[test]
fn one_file_is_one_file() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    // The project holds its n10n-dev.toml and nothing else.
    let out = project.run(&["sync"]);
    assert!(
        stderr(&out).starts_with("sync: sent 1 file ("),
        "{}",
        stderr(&out)
    );
}

/// `n10n-dev status | head -1` and the like: a reader that goes away ends the command quietly
/// (exit 0, no panic), as it ends `cat` or `grep`.
#[test]
fn a_closed_standard_output_ends_commands_quietly() {
    use std::os::fd::{FromRawFd, OwnedFd};
    let dir = project_dir("[vm]\nbackend = \"native\"\n");
    for args in [
        vec!["doctor"],
        vec!["status"],
        vec!["status", "--json"],
        vec!["env"],
        vec!["env", "--shell", "json"],
        vec!["ports"],
        vec!["completions", "bash"],
    ] {
        // A pipe whose reading end is closed before the command starts: every write fails.
        let mut fds = [0; 2];
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let (reader, writer) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        drop(reader);
        let out = command_in(dir.path(), &args)
            .stdout(std::process::Stdio::from(writer))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(
            !stderr(&out).contains("panicked"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

/// `man DIR` writes the main page and one per command in `--help`, each with the sections the
/// README documents, and groff renders every one without a warning.
#[test]
fn man_writes_a_page_per_command_that_groff_renders_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let out = command_in(dir.path(), &["man", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mut pages = vec!["n10n-dev.1".to_string()];
    pages.extend(commands_in_help().iter().map(|c| format!("n10n-dev-{c}.1")));
    let mut written: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".1"))
        .collect();
    written.sort();
    pages.sort();
    assert_eq!(written, pages);
    for page in &pages {
        let path = dir.path().join(page);
        let text = std::fs::read_to_string(&path).unwrap();
        for heading in [
            ".SH \"ENVIRONMENT\"",
            ".SH \"EXIT STATUS\"",
            "N10N_DEV_HOME",
        ] {
            assert!(text.contains(heading), "{page} lacks {heading}");
        }
        let groff = std::process::Command::new("groff")
            .args(["-man", "-ww", "-Tutf8", "-z"])
            .arg(&path)
            .output()
            .expect("groff (groff-base; .ci/run installs it)");
        assert!(
            groff.status.success() && groff.stderr.is_empty(),
            "{page}: {}",
            String::from_utf8_lossy(&groff.stderr)
        );
    }
    let main = std::fs::read_to_string(dir.path().join("n10n-dev.1")).unwrap();
    assert!(main.contains(".SH \"FILES\""), "the main page lacks FILES");
    let check_base = std::fs::read_to_string(dir.path().join("n10n-dev-check-base.1")).unwrap();
    assert!(check_base.contains("could not find out"), "{check_base}");

    let out = command_in(dir.path(), &["man", "no-such-dir"])
        .output()
        .unwrap();
    assert_exit_saying(&out, 2, "no such directory");
}

/// `--version` names the commit the binary was built from.
#[test]
fn version_names_the_commit() {
    let head = run_ok(
        "git",
        &[
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short=12",
            "HEAD",
        ],
    );
    let version = run_ok(BIN, &["--version"]);
    assert_eq!(
        stdout(&version).trim(),
        format!(
            "n10n-dev {} ({})",
            env!("CARGO_PKG_VERSION"),
            stdout(&head).trim()
        )
    );
}
