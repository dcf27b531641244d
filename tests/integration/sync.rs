//! `sync`: what is sent, what is left alone, dry runs, and failure in the middle of a transfer.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::harness::*;

fn ignored(path: &[u8]) -> bool {
    path == b".git"
        || path.starts_with(b".git/")
        || path.starts_with(b"target")
        || path.ends_with(b".log")
        || path.starts_with(b"sub/gen")
}

#[test]
fn replica_matches_the_tree_minus_ignored_paths() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    let root = project.root();
    project.write(".gitignore", "*.log\n");
    project.write("sub/.gitignore", "gen/\n");
    project.write("sub/gen/out.txt", "generated");
    project.write("build.log", "noise");
    project.write("target/debug/app", "binary");
    project.write(".git/HEAD", "ref: refs/heads/main\n");
    project.write("src/main.rs", "fn main() {}\n");
    project.write("with space/and 'quote'.txt", "q");
    project.write("unicode/naïve-日本.txt", "u");
    project.write("new\nline", "n");
    std::fs::write(root.join(OsStr::from_bytes(b"latin1-\xe9.txt")), "l").unwrap();
    std::fs::create_dir_all(root.join("empty/nested")).unwrap();
    project.write("bin/tool", "#!/bin/sh\necho tool\n");
    std::fs::set_permissions(
        root.join("bin/tool"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    symlink("../src/main.rs", root.join("bin/main-link")).unwrap();
    symlink("/etc/passwd", root.join("abs-link")).unwrap();
    symlink("missing-target", root.join("dangling")).unwrap();

    let out = project.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("sync: sent 9 files"),
        "{}",
        stderr(&out)
    );
    let local = snapshot(root, &ignored);
    assert_eq!(replica_snapshot(&project, &|_| false), local);
    assert!(local.contains_key(b"empty/nested".as_slice()));
    assert_eq!(
        local[b"abs-link".as_slice()],
        Node::Link(b"/etc/passwd".to_vec())
    );

    project.assert_up_to_date();
}

#[test]
fn deletes_and_renames_follow_and_build_outputs_stay() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    project.write(".gitignore", "target/\n");
    project.write("a/one.txt", "1");
    project.write("a/two.txt", "2");
    project.write("b.txt", "b");
    project.ok(&["sync"]);
    // The build writes into an ignored path on the remote, and into a path we do not know.
    std::fs::create_dir_all(project.replica().join("target/release")).unwrap();
    std::fs::write(
        project.replica().join("target/release/app"),
        "built remotely",
    )
    .unwrap();

    std::fs::rename(project.root().join("a"), project.root().join("renamed")).unwrap();
    std::fs::remove_file(project.root().join("b.txt")).unwrap();
    std::fs::create_dir(project.root().join("b.txt")).unwrap();
    project.write("b.txt/inside", "now a directory");
    let dry = project.ok(&["sync", "--dry-run"]);
    assert!(
        dry.contains("delete a\n") && dry.contains("send renamed/one.txt\n"),
        "{dry}"
    );
    assert!(
        project.replica().join("a/one.txt").exists(),
        "a dry run changed the replica"
    );

    project.ok(&["sync"]);
    let skip_target = |p: &[u8]| p.starts_with(b"target");
    assert_eq!(
        replica_snapshot(&project, &skip_target),
        snapshot(project.root(), &skip_target)
    );
    assert_eq!(
        std::fs::read(project.replica().join("target/release/app")).unwrap(),
        b"built remotely"
    );
}

#[test]
fn configured_excludes_apply_and_an_unknown_replica_is_reconciled() {
    let sshd = Sshd::start();
    let project = Project::with_config(&sshd, "exclude = [\"*.tmp\", \"cache/\"]\n");
    project.write("keep.txt", "k");
    project.write("x.tmp", "t");
    project.write("cache/big", "c");
    // A replica we never recorded: stale files from elsewhere, and an ignored build output.
    std::fs::create_dir_all(project.replica().join("cache")).unwrap();
    std::fs::write(project.replica().join("stale.txt"), "old").unwrap();
    std::fs::write(project.replica().join("cache/remote-only"), "keep me").unwrap();
    std::fs::write(project.replica().join("keep.txt"), "different").unwrap();
    // Not a replica of ours: refused, with the way out, and nothing deleted.
    let refused = project.run(&["sync"]);
    assert_exit_saying(
        &refused,
        2,
        "already holds 3 entries that n10n-dev did not put there",
    );
    assert!(stderr(&refused).contains("sync --adopt"));
    assert!(project.replica().join("stale.txt").exists());
    // Adopted: what goes is said first.
    let adopted = project.ok(&["sync", "--adopt"]);
    assert_eq!(adopted, "delete stale.txt\n");
    assert!(!project.replica().join("stale.txt").exists());
    assert!(!project.replica().join("x.tmp").exists());
    assert_eq!(
        std::fs::read(project.replica().join("keep.txt")).unwrap(),
        b"k"
    );
    assert_eq!(
        std::fs::read(project.replica().join("cache/remote-only")).unwrap(),
        b"keep me"
    );

    // Losing the local record costs a listing, not correctness.
    std::fs::remove_dir_all(project.home.path().join("vms")).unwrap();
    project.ok(&["sync"]);
    project.assert_up_to_date();
}

#[test]
fn a_cut_connection_leaves_no_partial_file_and_the_next_sync_converges() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    project.write("small.txt", "v1");
    project.ok(&["sync"]);
    // 300 MB of incompressible data takes long enough over loopback to be cut in the middle.
    let big = project.root().join("big.bin");
    run_ok(
        "sh",
        &[
            "-c",
            &format!("head -c 300000000 /dev/urandom > '{}'", big.display()),
        ],
    );
    project.write("small.txt", "v2");
    let child = project
        .cmd(&["sync"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // n10n-dev's staging area (one per sync) sits beside the replica, not in it.
    project.wait_for_staged("big.bin");
    let port = sshd.port;
    let dir = sshd.kill();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("run it again") || stderr(&out).contains("lost"),
        "{}",
        stderr(&out)
    );
    assert!(
        !project.replica().join("big.bin").exists(),
        "a partial big.bin was put in place"
    );
    assert_eq!(
        std::fs::read(project.replica().join("small.txt")).unwrap(),
        b"v1"
    );

    let _sshd = Sshd::start_in(dir, port, "ed25519");
    project.ok(&["sync"]);
    assert_eq!(
        replica_snapshot(&project, &|_| false),
        snapshot(project.root(), &|_| false)
    );
}

#[test]
fn later_syncs_go_through_a_private_agent_and_survive_its_loss() {
    use std::os::unix::fs::FileTypeExt;
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    project.write("a.txt", "1");
    let out = project.run(&["-v", "sync"]);
    assert!(
        !stderr(&out).contains("through the agent"),
        "{}",
        stderr(&out)
    );
    let root = project.replica().canonicalize().unwrap();
    // Named by the replica and the user's groups (a change of groups means a new agent).
    let socket = agent_socket(Path::new("/tmp"), &root);
    let meta = wait_for("the agent's socket", Duration::from_secs(10), || {
        std::fs::symlink_metadata(&socket).ok()
    });
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o077,
        0,
        "the socket must be private"
    );

    project.write("a.txt", "2");
    let out = project.run(&["-v", "sync"]);
    assert!(
        stderr(&out).contains("through the agent"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(project.replica().join("a.txt")).unwrap(),
        b"2"
    );

    // Without its socket the agent is gone; the next sync falls back to exec and restarts it.
    std::fs::remove_file(&socket).unwrap();
    project.write("a.txt", "3");
    let out = project.run(&["-v", "sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(project.replica().join("a.txt")).unwrap(),
        b"3"
    );
    wait_for("a new agent", Duration::from_secs(10), || {
        std::fs::symlink_metadata(&socket).ok()
    });
}

/// The sync record of the project (one per project and dest).
fn sync_record(project: &Project) -> std::path::PathBuf {
    let vm = project.home.path().join("vms/test-vm");
    let records: Vec<_> = std::fs::read_dir(&vm)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "manifest"))
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    records.into_iter().next().unwrap()
}

#[test]
fn files_new_at_the_last_sync_are_hashed_again_only_until_they_settle() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    for i in 0..50 {
        project.write(&format!("new/{i}.txt"), &format!("file {i}\n"));
    }
    project.ok(&["-q", "sync"]);
    let synced = std::time::Instant::now();
    let first = std::fs::read(sync_record(&project)).unwrap();
    // Files written within 2 s of a scan are "racy": their stamp alone proves nothing, so a
    // sync hashes them. Once 2 s have passed they have settled.
    std::thread::sleep(Duration::from_millis(2100).saturating_sub(synced.elapsed()));
    project.ok(&["-q", "sync"]);
    let second = std::fs::read(sync_record(&project)).unwrap();
    assert_ne!(
        first, second,
        "the no-op sync left the record that makes every sync hash the files"
    );
    project.ok(&["-q", "sync"]);
    let third = std::fs::read(sync_record(&project)).unwrap();
    assert_eq!(
        second, third,
        "a sync with nothing racy wrote the record again"
    );
}
