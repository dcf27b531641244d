//! Configuration errors through the binary: exit code 2, file:line:column, a hint.

use crate::harness::*;

fn project_with(toml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("n10n-dev.toml"), toml).unwrap();
    dir
}

fn n10n(dir: &std::path::Path, home: &std::path::Path, args: &[&str]) -> std::process::Output {
    n10n_with(dir, home, args, &[])
}

/// As `n10n`, with extra environment (N10N_DEV_BACKEND is unset unless given here).
fn n10n_with(
    dir: &std::path::Path,
    home: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    std::process::Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("N10N_DEV_HOME", home)
        .env_remove("N10N_DEV_BACKEND")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn malformed_files_exit_2_with_location_and_help() {
    let home = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[vm]\nmemory = \"8 gigs\"\n",
            ":2:10: invalid size \"8 gigs\"",
        ),
        (
            "[vm]\nbackend = \"docker\"\n",
            ":2:11: unknown variant `docker`",
        ),
        (
            "[vm]\nbackend = \"ssh\"\n",
            ":2:11: backend = \"ssh\" needs the address",
        ),
        ("[vm]\ncpus = \"4\"\n", ":2:8: invalid type"),
        ("[sync]\nexcludes = []\n", ":2:1: unknown field `excludes`"),
        ("[vm\n", ":1:4:"),
    ];
    for (toml, expected) in cases {
        let dir = project_with(toml);
        let out = n10n(dir.path(), home.path(), &["sync"]);
        assert_eq!(out.status.code(), Some(2), "{toml}");
        let err = stderr(&out);
        let file = dir.path().canonicalize().unwrap().join("n10n-dev.toml");
        assert!(
            err.starts_with(&format!("error: {}", file.display())),
            "{err}"
        );
        assert!(err.contains(expected), "{toml}: {err}");
        assert!(err.contains("\nhelp: "), "{err}");
    }
}

#[test]
fn run_reports_config_errors_as_2_not_255() {
    let home = tempfile::tempdir().unwrap();
    let dir = project_with("[vm]\ncpus = 0\n");
    let out = n10n(dir.path(), home.path(), &["run", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn project_root_is_found_from_a_subdirectory_and_with_dash_c() {
    let home = tempfile::tempdir().unwrap();
    let dir = project_with("[vm]\nmemory = \"lots\"\n");
    std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
    let out = n10n(&dir.path().join("a/b"), home.path(), &["sync"]);
    assert!(
        stderr(&out).contains("invalid size \"lots\""),
        "{}",
        stderr(&out)
    );
    let elsewhere = tempfile::tempdir().unwrap();
    let out = n10n(
        elsewhere.path(),
        home.path(),
        &["-C", dir.path().join("a").to_str().unwrap(), "sync"],
    );
    assert!(
        stderr(&out).contains("invalid size \"lots\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn missing_backend_tools_say_what_to_install() {
    let home = tempfile::tempdir().unwrap();
    let dir = project_with("[vm]\nbackend = \"vagrant\"\n");
    let bare_path = [("PATH", "/usr/bin:/bin")];
    let out = n10n_with(dir.path(), home.path(), &["sync"], &bare_path);
    assert_exit_saying(
        &out,
        2,
        "vagrant is not on PATH: install Vagrant (see https://developer.hashicorp.com/vagrant/install) \
         and VirtualBox (see https://www.virtualbox.org/wiki/Downloads)",
    );
    // Lima asked for but not installed: say how to get it, on this kind of machine (Linux).
    let lima = [("PATH", "/usr/bin:/bin"), ("N10N_DEV_BACKEND", "lima")];
    let out = n10n_with(dir.path(), home.path(), &["sync"], &lima);
    assert_exit_saying(
        &out,
        2,
        "install Lima (see https://lima-vm.io/docs/installation/)",
    );
    assert!(!stderr(&out).contains("brew"), "{}", stderr(&out));
    let out = n10n_with(
        dir.path(),
        home.path(),
        &["sync"],
        &[("N10N_DEV_BACKEND", "podman")],
    );
    assert_exit_saying(&out, 2, "N10N_DEV_BACKEND: unknown backend `podman`");
}

#[test]
fn usage_errors_exit_2_and_help_lists_only_working_commands() {
    let out = std::process::Command::new(BIN)
        .args(["run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let help = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    let help = stdout(&help);
    for command in [
        "up",
        "status",
        "provision",
        "stop",
        "destroy",
        "sync",
        "run",
        "shell",
        "ssh-config",
        "completions",
        "build-image",
        "check-base",
        "push",
        "invoke",
        "env",
        "ports",
        "docker-context",
    ] {
        assert!(
            help.contains(&format!("\n  {command} ")),
            "{command} missing from help"
        );
    }
    assert!(
        !help.contains("\n  forwarder "),
        "the forwarder is internal: `up` starts it"
    );
}

#[test]
fn completions_are_generated() {
    let out = std::process::Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(stdout(&out).contains("ssh-config"));
}

#[test]
fn doctor_names_missing_tools_and_the_backend() {
    let home = tempfile::tempdir().unwrap();
    let dir = project_with("[vm]\nbackend = \"lima\"\n");
    let out = n10n_with(
        dir.path(),
        home.path(),
        &["doctor"],
        &[("PATH", "/nonexistent")],
    );
    assert_eq!(out.status.code(), Some(1), "not ready: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("limactl    not found (install: "), "{text}");
    assert!(text.contains("backend:   lima"), "{text}");
    assert!(
        text.contains("verdict:   not ready: limactl is not on PATH"),
        "{text}"
    );
}

#[test]
fn doctor_tells_a_docker_cli_without_an_engine_from_no_docker() {
    let home = tempfile::tempdir().unwrap();
    let dir = project_with("[vm]\nbackend = \"native\"\n");
    let stand_ins = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/bin");
    let path = format!("{}:/usr/bin:/bin", stand_ins.display());
    let doctor = |env: &[(&str, &str)]| {
        let mut env = env.to_vec();
        env.push(("PATH", &path));
        n10n_with(dir.path(), home.path(), &["doctor"], &env)
    };

    let out = doctor(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("no engine answers; start it: sudo systemctl start docker"),
        "{text}"
    );
    assert!(
        text.lines().any(|line| line
            == "verdict:   not ready: Docker is installed but no engine answers; start it: \
                sudo systemctl start docker"),
        "{text}"
    );
    assert!(
        text.contains("verdict:   not ready: Docker is installed but no engine answers"),
        "{text}"
    );

    let out = doctor(&[("FAKE_DOCKER_UP", "1")]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("(engine answers)"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("verdict:   ready"),
        "{}",
        stdout(&out)
    );

    let out = n10n_with(
        dir.path(),
        home.path(),
        &["doctor"],
        &[("PATH", "/nonexistent")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out)
            .contains("verdict:   not ready: no Docker here (install: apt-get install docker.io)"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn short_flags_and_shell_names_users_expect() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    for (args, flag) in [
        (&["destroy", "--help"][..], "-f, --force"),
        (&["build-image", "--help"], "-t, --tag <T>"),
        (&["push", "--help"], "-t, --tag <T>"),
    ] {
        let out = n10n(dir.path(), home.path(), args);
        assert!(stdout(&out).contains(flag), "{args:?}: {}", stdout(&out));
    }
    std::fs::write(
        dir.path().join("n10n-dev.toml"),
        "[vm]\nbackend = \"ssh\"\nname = \"shells\"\n[ssh]\nhost = \"127.0.0.1\"\n",
    )
    .unwrap();
    let sh = n10n(dir.path(), home.path(), &["env", "--shell", "sh"]);
    assert!(sh.status.success(), "{}", stderr(&sh));
    for shell in ["bash", "zsh"] {
        let out = n10n(dir.path(), home.path(), &["env", "--shell", shell]);
        assert_eq!(
            (out.status.code(), stdout(&out)),
            (sh.status.code(), stdout(&sh)),
            "{shell}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn run_options_and_dash_c_mistakes_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = n10n(dir.path(), home.path(), &["run", "--bogus"]);
    assert_exit_saying(&out, 2, "put the command after --");
    let missing = dir.path().join("missing");
    let out = n10n(
        dir.path(),
        home.path(),
        &["-C", missing.to_str().unwrap(), "run", "--", "true"],
    );
    assert_exit_saying(&out, 2, "no such directory");
    std::fs::write(dir.path().join("file"), "").unwrap();
    let file = dir.path().join("file");
    let out = n10n(
        dir.path(),
        home.path(),
        &["-C", file.to_str().unwrap(), "status"],
    );
    assert_exit_saying(&out, 2, "not a directory");
}

/// The user's own file (N10N_DEV_CONFIG) holds the decisions of trust; a project file that sets
/// one is refused, naming the user's file; doctor and status --json say which files were read.
#[test]
fn trust_settings_come_from_the_user_s_own_file_only() {
    let home = tempfile::tempdir().unwrap();
    let user_file = home.path().join("user-config.toml");
    let user = user_file.to_str().unwrap();
    let env = [("N10N_DEV_CONFIG", user), ("N10N_DEV_BACKEND", "native")];
    let dir = project_with("[forward]\npublic = true\n");
    let out = n10n_with(dir.path(), home.path(), &["status", "--json"], &env);
    assert_exit_saying(
        &out,
        2,
        "n10n-dev.toml:2:10: [forward] public cannot be set",
    );
    assert!(
        stderr(&out).contains(&format!("set it in {user}")),
        "{}",
        stderr(&out)
    );

    let dir = project_with("[vm]\nbackend = \"native\"\n");
    let project_file = dir.path().canonicalize().unwrap().join("n10n-dev.toml");
    let out = n10n_with(dir.path(), home.path(), &["doctor"], &env);
    let said = stdout(&out);
    assert!(
        said.contains(&format!("config:    {} (read)", project_file.display())),
        "{said}"
    );
    assert!(
        said.contains(&format!("config:    {user} (none:")),
        "{said}"
    );

    std::fs::write(&user_file, "[forward]\npublic = true\n").unwrap();
    let out = n10n_with(dir.path(), home.path(), &["status", "--json"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        status["config_files"],
        serde_json::json!([project_file.display().to_string(), user])
    );

    std::fs::write(&user_file, "[vm]\ncpus = 2\n").unwrap();
    let out = n10n_with(dir.path(), home.path(), &["status"], &env);
    assert_exit_saying(&out, 2, &format!("{user}:1:2: unknown field `vm`"));
}
