//! The native backend (a Linux machine whose Docker answers): commands run here, in the project.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::harness::*;

fn project(toml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("n10n-dev.toml"), toml).unwrap();
    std::fs::create_dir_all(dir.path().join("sub")).unwrap();
    dir
}

fn n10n(dir: &Path, docker_up: bool, args: &[&str]) -> Command {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/bin");
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(dir)
        .env("N10N_DEV_HOME", dir.join(".state"))
        .env_remove("N10N_DEV_BACKEND")
        // Only the docker stand-in: no limactl or vagrant to fall back to.
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .stdin(Stdio::null());
    if docker_up {
        cmd.env("FAKE_DOCKER_UP", "1");
    }
    cmd
}

fn output(dir: &Path, docker_up: bool, args: &[&str]) -> Output {
    n10n(dir, docker_up, args).output().unwrap()
}

#[test]
fn run_happens_in_the_project_with_exit_code_env_and_workdir() {
    let dir = project("[vm]\nbackend = \"native\"\n");
    let out = output(
        dir.path(),
        true,
        &[
            "run",
            "-e",
            "GREETING=hi",
            "-w",
            "sub",
            "--",
            "sh",
            "-c",
            "echo \"$GREETING $PWD\"; exit 4",
        ],
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let expected = format!(
        "hi {}\n",
        dir.path().canonicalize().unwrap().join("sub").display()
    );
    assert_eq!(stdout(&out), expected);
    let out = output(dir.path(), true, &["up"]);
    assert!(stderr(&out).contains("no VM needed"), "{}", stderr(&out));
    let out = output(dir.path(), true, &["sync"]);
    assert!(stderr(&out).contains("nothing to do"), "{}", stderr(&out));
}

#[test]
fn auto_picks_native_on_linux_when_docker_answers_and_not_otherwise() {
    let dir = project("");
    let out = output(dir.path(), true, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["backend"], "native", "{}", stderr(&out));
    assert_eq!(status["state"], "running");
    // Docker does not answer: the next choice is Lima (the limactl stand-in is on PATH).
    let out = n10n(dir.path(), false, &["status", "--json"])
        .env("FAKE_LIMA_HOME", dir.path())
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["backend"], "lima", "{}", stderr(&out));
    assert_eq!(status["state"], "not created");
}

#[test]
fn native_up_without_a_docker_engine_says_how_to_start_it() {
    let dir = project("[vm]\nbackend = \"native\"\n");
    let out = output(dir.path(), false, &["up"]);
    assert_exit_saying(&out, 1, "systemctl start docker");
}

#[test]
fn sigterm_reaches_the_local_command() {
    let dir = project("[vm]\nbackend = \"native\"\n");
    let child = n10n(dir.path(), true, &["run", "--", "sleep", "306"])
        .spawn()
        .unwrap();
    wait_for("the sleep to start", Duration::from_secs(20), || {
        (!processes_matching("^sleep 306$").is_empty()).then_some(())
    });
    run_ok("kill", &["-TERM", &child.id().to_string()]);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143));
    assert!(processes_matching("^sleep 306$").is_empty());
}
