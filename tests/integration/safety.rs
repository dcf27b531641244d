//! What n10n-dev must never do to a user's files, credentials and machine (issue 16): each test
//! here failed before its fix. Dangerous destinations are tried only with `--dry-run`, against a
//! "machine" whose home is a throwaway directory holding a canary.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::net::UnixListener;
use std::process::Stdio;
use std::time::Duration;

use crate::harness::*;

/// The sshd's sessions' home (see `Sshd::start`), with a canary in it.
fn home_with_canary(sshd: &Sshd) -> std::path::PathBuf {
    let home = sshd.path().join("home");
    std::fs::write(home.join("canary"), "alive").unwrap();
    home
}

#[test]
fn a_directory_that_holds_other_files_is_refused_and_they_survive() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    project.write("src/main.rs", "fn main() {}\n");
    // `dest = "~/code"` on a build host: other checkouts live there.
    std::fs::create_dir_all(project.replica().join("other-checkout/.git")).unwrap();
    std::fs::write(project.replica().join("other-checkout/README"), "theirs").unwrap();
    std::fs::write(project.replica().join("notes.txt"), "mine").unwrap();
    for args in [
        &["sync"][..],
        &["sync", "--dry-run"],
        &["run", "--", "true"],
    ] {
        let out = project.run(args);
        assert_exit_saying(
            &out,
            2,
            "already holds 2 entries that n10n-dev did not put there",
        );
        assert!(stderr(&out).contains(&project.replica().display().to_string()));
        assert!(stderr(&out).contains("sync --adopt"), "{}", stderr(&out));
    }
    assert!(project.replica().join("other-checkout/README").exists());
    assert!(project.replica().join("notes.txt").exists());
    assert!(!project.replica().join("src").exists());
    let beside = project.replica().with_file_name(".replica.n10n-dev");
    assert!(!beside.exists(), "a refused sync left {}", beside.display());
    // --adopt --dry-run lists, changes nothing; --adopt lists and takes the directory.
    let listed = project.ok(&["sync", "--adopt", "--dry-run"]);
    assert!(listed.contains("delete notes.txt\n") && listed.contains("send src/main.rs\n"));
    assert!(project.replica().join("notes.txt").exists());
    let adopted = project.ok(&["sync", "--adopt"]);
    assert!(adopted.contains("delete notes.txt\n"), "{adopted}");
    assert!(!project.replica().join("notes.txt").exists());
    project.assert_up_to_date();
}

#[test]
fn home_and_system_destinations_are_refused_before_any_connection() {
    let sshd = Sshd::start();
    let home = home_with_canary(&sshd);
    let project = Project::new(&sshd);
    project.write("a.txt", "a");
    // Nothing listens on this port: a refusal that came after connecting would say so instead.
    let closed = free_port();
    for dest in [
        "~/.", "~/./", "~", "/root/.", "/.", "/home/x/", "/etc", "/usr", "/var", "/opt", "/srv",
    ] {
        project.write_config(closed, &sshd.user, &sshd.identity, "");
        project.set_dest(dest);
        let out = project.run(&["sync", "--dry-run"]);
        assert_exit_saying(&out, 2, "dest");
        assert!(
            !stderr(&out).contains("cannot connect"),
            "{dest}: {}",
            stderr(&out)
        );
    }
    assert!(home.join("canary").exists());
}

#[test]
fn a_dest_that_leads_to_the_home_on_the_machine_is_refused_there() {
    let sshd = Sshd::start();
    let home = home_with_canary(&sshd);
    // Spelt harmlessly, but a symlink to the machine's home: only the machine can tell. And
    // the home spelt with a dot, which the machine resolves to itself (issue 29 item 15: a
    // configuration error, exit 2, on every path; a throwaway home if it came back).
    let dests = |project: &Project| {
        let link = project.remote.path().join("looks-harmless");
        symlink(&home, &link).unwrap();
        [
            link.display().to_string(),
            format!("{}/.", home.display()),
            format!("{}/./", home.display()),
        ]
    };
    for which in 0..3 {
        let project = Project::new(&sshd);
        project.write("a.txt", "a");
        // A first sync elsewhere leaves the helper running: later probes go through it.
        project.ok(&["sync"]);
        project.set_dest(&dests(&project)[which]);
        for args in [
            &["sync", "--dry-run"][..],
            &["sync", "--adopt", "--dry-run"],
            &["sync"],
            &["run", "--", "true"],
            &["up"],
        ] {
            let out = project.run(args);
            assert_exit_saying(&out, 2, "[sync] dest");
        }
    }
    assert!(home.join("canary").exists());
}

#[test]
fn a_replica_deleted_and_made_again_is_filled_again() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    project.write("src/lib.rs", "pub fn f() {}\n");
    project.write("Cargo.toml", "[package]\n");
    project.ok(&["sync"]);
    std::fs::remove_dir_all(project.replica()).unwrap();
    std::fs::create_dir(project.replica()).unwrap();
    let out = project.run(&["sync"]);
    assert!(
        stderr(&out).starts_with("sync: sent 3 files"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        replica_snapshot(&project, &|_| false),
        snapshot(project.root(), &|_| false)
    );
}

#[test]
fn two_projects_syncing_into_one_dest_do_not_clobber_each_other() {
    let sshd = Sshd::start();
    let first = Project::new(&sshd);
    let second = Project::new(&sshd);
    // Both name the same replica (two checkouts with one folder name, or two Macs).
    second.set_dest(&first.replica().display().to_string());
    for (project, name) in [(&first, "one"), (&second, "two")] {
        run_ok(
            "sh",
            &[
                "-c",
                &format!(
                    "cd '{}' && for i in 1 2 3 4 5 6 7 8; do head -c 4000000 /dev/urandom > {name}-$i.bin; done",
                    project.root().display()
                ),
            ],
        );
    }
    first.ok(&["sync"]);
    second.ok(&["sync", "--adopt"]);
    for round in 0..3 {
        for project in [&first, &second] {
            project.write("round.txt", &round.to_string());
        }
        let children: Vec<_> = [&first, &second]
            .iter()
            .map(|p| {
                p.cmd(&["sync", "--adopt"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "round {round}: {}", stderr(&out));
        }
        // Whichever came last, the replica is exactly one of the two projects.
        let replica = replica_snapshot(&first, &|_| false);
        let one = snapshot(first.root(), &|p| p == b"n10n-dev.toml");
        let two = snapshot(second.root(), &|p| p == b"n10n-dev.toml");
        let replica_less_config: std::collections::BTreeMap<_, _> = replica
            .into_iter()
            .filter(|(p, _)| p != b"n10n-dev.toml")
            .collect();
        assert!(
            replica_less_config == one || replica_less_config == two,
            "round {round}: the replica is a mix of both projects"
        );
    }
}

#[test]
fn a_file_swapped_for_a_symlink_mid_sync_does_not_send_its_target() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("credentials");
    std::fs::write(&secret, "SECRET-aws_secret_access_key").unwrap();
    // Sent first and slowly enough to swap the later file meanwhile.
    run_ok(
        "sh",
        &[
            "-c",
            &format!(
                "head -c 200000000 /dev/urandom > '{}/a-big.bin'",
                project.root().display()
            ),
        ],
    );
    project.write("z-config.txt", "harmless");
    let child = project
        .cmd(&["sync"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    project.wait_for_staged("a-big.bin");
    // What a `git checkout` does: the file is replaced by a symlink.
    let swapped = project.root().join("z-config.txt");
    std::fs::remove_file(&swapped).unwrap();
    symlink(&secret, &swapped).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let sent = project.replica().join("z-config.txt");
    let kind = std::fs::symlink_metadata(&sent).unwrap().file_type();
    assert!(
        kind.is_symlink(),
        "the symlink's target was sent as the file's content"
    );
    assert_eq!(std::fs::read_link(&sent).unwrap(), secret);
}

#[test]
fn a_squatted_agent_directory_gets_no_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let sshd = Sshd::start_with_tmpdir(tmp.path());
    let project = Project::new(&sshd);
    project.write("secret.txt", "project secrets");
    std::fs::create_dir_all(project.replica()).unwrap();
    let root = project.replica().canonicalize().unwrap();
    let socket = agent_socket(tmp.path(), &root);
    // Another user made the directory first (here: open to everyone) and listens where the
    // agent would.
    let dir = socket.parent().unwrap();
    std::fs::create_dir(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let squatter = UnixListener::bind(&socket).unwrap();
    squatter.set_nonblocking(true).unwrap();
    std::fs::write(socket.with_extension("sock.token"), "0123456789abcdef").unwrap();
    project.ok(&["sync"]);
    project.write("secret.txt", "more secrets");
    project.ok(&["sync"]);
    let out = project.run(&["run", "--", "cat", "secret.txt"]);
    assert_eq!(stdout(&out), "more secrets");
    assert!(
        squatter.accept().is_err(),
        "the squatter's socket received a connection"
    );
}

#[test]
fn an_impostor_at_a_recorded_agent_socket_receives_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let sshd = Sshd::start_with_tmpdir(tmp.path());
    let project = Project::new(&sshd);
    project.write("a.txt", "1");
    project.ok(&["sync"]);
    // The machine rebooted (/tmp cleared) and someone else took the agent's place.
    let agent_dir = std::fs::read_dir(tmp.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let socket = std::fs::read_dir(&agent_dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "sock"))
        .unwrap();
    std::fs::remove_file(&socket).unwrap();
    let impostor = UnixListener::bind(&socket).unwrap();
    let received = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut conn, _) = impostor.accept().unwrap();
        // It answers as an agent would, without the token.
        let _ = conn.write_all(b"n10n-agent-hello 00\n");
        conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut got = Vec::new();
        let _ = conn.read_to_end(&mut got);
        got
    });
    project.write("a.txt", "2");
    project.ok(&["sync"]);
    assert_eq!(
        std::fs::read(project.replica().join("a.txt")).unwrap(),
        b"2"
    );
    let got = received.join().unwrap();
    assert!(got.is_empty(), "the impostor received {} bytes", got.len());
}

#[test]
fn a_stale_forwarder_pidfile_never_gets_another_process_killed() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    let vm_dir = project.home.path().join("vms/test-vm");
    std::fs::create_dir_all(&vm_dir).unwrap();
    std::fs::set_permissions(project.home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    // The forwarder died long ago; its pid now belongs to something else.
    let mut bystander = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    std::fs::write(vm_dir.join("forwarder.pid"), bystander.id().to_string()).unwrap();
    let _ = project.run(&["stop"]);
    let _ = project.run(&["status"]);
    let survived = bystander.try_wait().unwrap().is_none();
    let _ = bystander.kill();
    let _ = bystander.wait();
    assert!(
        survived,
        "stop killed the process that now has the stale pid"
    );
    assert!(
        !vm_dir.join("forwarder.pid").exists(),
        "the stale pidfile is still there"
    );
}

#[test]
fn a_state_directory_others_can_write_is_refused() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    project.write("a.txt", "a");
    std::fs::set_permissions(project.home.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = project.run(&["sync"]);
    assert_exit_saying(&out, 1, "can be written by other users (mode 777)");
    assert!(stderr(&out).contains(&project.home.path().display().to_string()));
    assert!(!project.replica().join("a.txt").exists());
    // One that others can only read is closed to them, and used.
    std::fs::set_permissions(project.home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    project.ok(&["sync"]);
    let mode = std::fs::metadata(project.home.path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn a_project_config_cannot_inject_lines_into_ssh_config() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    for (key, value) in [
        ("user", r#""dev\nProxyCommand sh -c 'touch /tmp/pwned'""#),
        ("host", r#""build.example.com ProxyCommand=evil""#),
        ("host", r#""-oProxyCommand=evil""#),
        ("identity", r#""~/.ssh/id\"\n  ProxyCommand evil""#),
    ] {
        let host = match key {
            "host" => value.to_string(),
            _ => "\"127.0.0.1\"".to_string(),
        };
        let mut text =
            format!("[vm]\nbackend = \"ssh\"\nname = \"test-vm\"\n[ssh]\nhost = {host}\n");
        if key != "host" {
            text.push_str(&format!("{key} = {value}\n"));
        }
        std::fs::write(project.root().join("n10n-dev.toml"), &text).unwrap();
        let out = project.run(&["ssh-config"]);
        assert_exit_saying(&out, 2, "n10n-dev.toml:");
        assert!(stdout(&out).is_empty(), "{key}: {}", stdout(&out));
    }
}

#[test]
fn run_environment_values_never_show_in_the_machine_s_process_list() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    let secret = format!("s3cr3t-{}", std::process::id());
    // What any user's `ps` sees while the command's login shell starts (its profile runs).
    let home = sshd.path().join("home");
    std::fs::write(
        home.join(".profile"),
        "ps -eww -o args > \"$HOME/ps-during-login\"\n",
    )
    .unwrap();
    let out = project
        .cmd(&[
            "run",
            "-e",
            "N10N_SECRET",
            "--",
            "sh",
            "-c",
            "ps -eww -o args; echo \"got=$N10N_SECRET\"",
        ])
        .env("N10N_SECRET", &secret)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let listing = stdout(&out);
    let shown: Vec<&str> = listing.lines().filter(|l| l.contains(&secret)).collect();
    assert_eq!(shown, [format!("got={secret}")], "the value shows in ps");
    let during_login = std::fs::read_to_string(home.join("ps-during-login")).unwrap();
    let shown: Vec<&str> = during_login
        .lines()
        .filter(|l| l.contains(&secret))
        .collect();
    assert!(
        shown.is_empty(),
        "the value shows in ps while the login shell starts: {shown:?}"
    );
    let leftovers = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("n10n-env."))
        .filter(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains(&secret)))
        .count();
    assert_eq!(leftovers, 0, "the environment file was left behind");
}

/// `doctor`'s project line: which root (and so which n10n-dev.toml) a command in `dir` takes.
fn project_root_seen_from(dir: &std::path::Path) -> (String, String) {
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .arg("doctor")
        .current_dir(dir)
        .env("N10N_DEV_HOME", home.path())
        .env("N10N_DEV_BACKEND", "native")
        .output()
        .unwrap();
    let line = stdout(&out)
        .lines()
        .find(|l| l.starts_with("project:"))
        .unwrap_or_default()
        .to_string();
    (line, stderr(&out))
}

/// Issue 29, item 2: a n10n-dev.toml above the project's own git work tree, in a directory
/// anyone may write to (as /tmp), or another user's, is not the project's (it names where
/// commands run and what the build runs). Harmless if it came back: `doctor` changes nothing.
#[test]
fn a_config_file_planted_above_the_project_is_not_read() {
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let planted = shared.path().join("n10n-dev.toml");
    std::fs::write(&planted, "[image]\nbuild = \"./steal.sh\"\n").unwrap();
    let victim = shared.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    let (line, said) = project_root_seen_from(&victim);
    assert!(line.contains(&format!("{} ", victim.display())), "{line}");
    assert!(
        said.contains(&format!("warning: {} is not read", planted.display())),
        "{said}"
    );
    assert!(said.contains("anyone may write to"), "{said}");

    let above = tempfile::tempdir().unwrap();
    std::fs::write(
        above.path().join("n10n-dev.toml"),
        "[vm]\nname = \"above\"\n",
    )
    .unwrap();
    let repo = above.path().join("repo");
    std::fs::create_dir_all(repo.join(".git")).unwrap();
    std::fs::create_dir_all(repo.join("src")).unwrap();
    let (line, _) = project_root_seen_from(&repo.join("src"));
    assert!(line.contains(&format!("{} ", repo.display())), "{line}");

    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        let theirs = tempfile::tempdir().unwrap();
        std::fs::write(theirs.path().join("n10n-dev.toml"), "").unwrap();
        run_ok(
            "chown",
            &[
                "65534",
                theirs.path().join("n10n-dev.toml").to_str().unwrap(),
            ],
        );
        let inner = theirs.path().join("inner");
        std::fs::create_dir(&inner).unwrap();
        let (line, said) = project_root_seen_from(&inner);
        assert!(line.contains(&format!("{} ", inner.display())), "{line}");
        assert!(
            said.contains("belongs to another user (uid 65534)"),
            "{said}"
        );
    }
}

/// Issue 29, item 16: names on the machine are shown with their control characters escaped, so
/// a file named to carry a terminal escape or a forged line shows as what it is.
#[test]
fn names_from_the_machine_cannot_write_to_the_terminal() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    project.write("src/main.rs", "fn main() {}\n");
    std::fs::create_dir_all(project.replica()).unwrap();
    let forged = "x\u{1b}]0;pwned\u{7}\rsync: sent 0 files\n";
    std::fs::write(project.replica().join(forged), "").unwrap();
    let shown = project.ok(&["sync", "--adopt", "--dry-run"]);
    assert!(
        shown.contains("delete x\\x1b]0;pwned\\x07\\rsync: sent 0 files\\n\n"),
        "{shown:?}"
    );
    assert!(
        !shown.contains('\u{1b}') && !shown.contains('\r'),
        "{shown:?}"
    );
}

/// Issue 29, item 6: a file named as earlier builds named their replica marker opens nothing (a
/// directory holding it and other files is someone else's), and `sync --dry-run` changes
/// nothing on the machine: no marker moved, no directory made, no helper started.
#[test]
fn a_marker_file_opens_nothing_and_a_dry_run_changes_nothing() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    project.write("src/main.rs", "fn main() {}\n");
    std::fs::create_dir_all(project.replica()).unwrap();
    std::fs::write(project.replica().join(".n10n-dev-replica"), "anything").unwrap();
    std::fs::write(project.replica().join("theirs.txt"), "keep").unwrap();
    let out = project.run(&["sync", "--dry-run"]);
    assert_exit_saying(
        &out,
        2,
        "already holds 2 entries that n10n-dev did not put there",
    );
    assert!(project.replica().join("theirs.txt").exists());

    let empty = Project::new(&sshd);
    empty.write("src/main.rs", "fn main() {}\n");
    std::fs::create_dir_all(empty.replica()).unwrap();
    // The sessions' home, and the directory the replica and its record live in.
    let machine = [sshd.path(), empty.remote.path()];
    let before = machine.map(listing);
    let listed = empty.ok(&["sync", "--dry-run"]);
    assert!(listed.contains("send src/main.rs\n"), "{listed}");
    assert_eq!(
        machine.map(listing),
        before,
        "the dry run changed the machine's files"
    );
    let served = empty.replica().display().to_string();
    let helpers = std::process::Command::new("pgrep")
        .args(["-f", &served])
        .output()
        .unwrap();
    for pid in stdout(&helpers).split_whitespace() {
        let _ = std::process::Command::new("kill").arg(pid).status();
    }
    assert!(
        helpers.stdout.is_empty(),
        "a helper serves {served}: {}",
        stdout(&helpers)
    );
}

/// Every path under `dir`, sorted.
fn listing(dir: &std::path::Path) -> Vec<String> {
    let out = run_ok("find", &[dir.to_str().unwrap()]);
    let mut paths: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    paths.sort();
    paths
}

/// Issue 29, item 5: the replica's permissions do not depend on the path that applied it. The
/// first sync (no helper yet), a later one through the helper, and a command `run` starts all
/// have the umask the user's sessions have; the replica and its record beside it are the
/// user's alone.
#[test]
fn the_replica_gets_the_user_s_umask_whichever_path_applied_it() {
    use std::os::unix::fs::MetadataExt;
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    project.write("first.txt", "1");
    project.ok(&["sync"]);
    project.write("later/second.txt", "2");
    project.ok(&["sync"]);
    let session_umask = stdout(&run_ok(
        "ssh",
        &[
            "-i",
            sshd.identity.to_str().unwrap(),
            "-p",
            &sshd.port.to_string(),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            &format!("{}@127.0.0.1", sshd.user),
            "umask",
        ],
    ))
    .trim()
    .to_string();
    let run_umask = project.ok(&["run", "--no-sync", "--", "sh", "-c", "umask"]);
    assert_eq!(run_umask.trim(), session_umask);
    let mask = u32::from_str_radix(&session_umask, 8).unwrap();
    let mode = |path: &str| {
        std::fs::metadata(project.replica().join(path))
            .unwrap()
            .mode()
            & 0o777
    };
    assert_eq!(
        mode("first.txt"),
        0o666 & !mask,
        "applied by the first sync"
    );
    assert_eq!(
        mode("later/second.txt"),
        0o666 & !mask,
        "applied through the helper"
    );
    assert_eq!(mode("later"), 0o777 & !mask, "made through the helper");
    assert_eq!(mode("."), 0o700, "the replica is the user's alone");
    let meta = project.replica().with_file_name(".replica.n10n-dev");
    assert_eq!(std::fs::metadata(meta).unwrap().mode() & 0o777, 0o700);
}

/// Issue 29, item 3: a dest lies in a directory of its own. A project's `~/.local/bin` or any
/// dest outside `~/n10n` and the user's own `[sync] roots` is refused before any connection,
/// naming the rule and the user's file; on the machine, a directory its commands are found in
/// is refused too, however the roots were set. Only dry runs: nothing is written if it came back.
#[test]
fn a_dest_must_be_a_directory_of_its_own() {
    let sshd = Sshd::start();
    let home = home_with_canary(&sshd);
    for (dest, said) in [
        ("~/.local/bin", "a dot-directory of the home (~/.local)"),
        (
            "~/.config/systemd/user",
            "a dot-directory of the home (~/.config)",
        ),
        (
            "~/code/app",
            "not inside a directory that replicas may take",
        ),
    ] {
        let project = Project::new(&sshd);
        project.write("cargo", "#!/bin/sh\necho planted\n");
        project.set_dest(dest);
        let out = project.run(&["sync", "--dry-run"]);
        assert_exit_saying(&out, 2, said);
        let user_file = project.user_config().display().to_string();
        assert!(stderr(&out).contains(&user_file), "{}", stderr(&out));
    }
    // ~/bin on the machine, which Debian's ~/.profile puts on PATH: refused there, even with
    // the home among the user's roots.
    std::fs::create_dir_all(home.join("bin")).unwrap();
    let project = Project::new(&sshd);
    project.write("cargo", "#!/bin/sh\necho planted\n");
    project.set_dest(&home.join("bin").display().to_string());
    let out = project.run(&["sync", "--dry-run"]);
    assert_exit_saying(&out, 2, "a directory its commands are found in");
    assert!(!home.join("bin/cargo").exists());
}

/// Issue 29, item 12: only the process that holds the forwarder's lock, as the lock names it,
/// is ever signalled; not a pid from the pidfile because "someone holds the lock" (another
/// n10n-dev checking for a stale pidfile held it for an instant, and the pid had been reused).
#[test]
fn stop_signals_only_the_pid_the_lock_names() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    let vm_dir = project.home.path().join("vms/test-vm");
    std::fs::create_dir_all(&vm_dir).unwrap();
    std::fs::set_permissions(project.home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut bystander = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    std::fs::write(vm_dir.join("forwarder.pid"), bystander.id().to_string()).unwrap();
    // Another process has the lock file locked at this moment, as a concurrent check would.
    let lock = std::fs::File::create(vm_dir.join("forwarder.lock")).unwrap();
    lock.lock().unwrap();
    let _ = project.run(&["stop"]);
    let _ = project.run(&["status"]);
    drop(lock);
    let survived = bystander.try_wait().unwrap().is_none();
    let _ = bystander.kill();
    let _ = bystander.wait();
    assert!(
        survived,
        "stop signalled the pidfile's pid, which the lock does not name"
    );
}
