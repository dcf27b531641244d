//! The remote half of a sync, as small scripts for tools every Debian/Ubuntu machine has (`sh`,
//! GNU `tar`, and `perl-base`, which is Essential): a probe that costs one round trip when
//! nothing changed, a lister for when the replica is unknown, the apply step that renames
//! staged entries into place only after the whole archive has arrived, and an agent.
//!
//! n10n-dev's own files sit beside the replica, never in it: for `~/n10n/app`, the directory
//! `~/n10n/.app.n10n-dev/` holds the replica's id (`replica-id`) and, during a sync, the staging
//! area (`staging/`; for a first sync into an empty replica, `.app.n10n-dev.new.*` beside it, which
//! then becomes the replica). Being on the same filesystem keeps the renames into place atomic.
//!
//! The agent exists because on a small VM sshd spends ~0.1–0.2 s setting up every exec session.
//! It listens on a private Unix socket (`$TMPDIR/n10n-dev-<uid>/`, `/tmp` by default, mode 0700, outside the replica so
//! that a `docker build` of the replica never meets a socket); a sync reaches it through a
//! `direct-streamlocal` channel of the connection it already has (no process is forked by sshd),
//! hands it the same probe or apply script, and gets back status, stdout and stderr. When the
//! agent is not there (first sync, VM rebooted, idle timeout) the scripts run as plain exec
//! sessions, which also start it again.

use super::tree::{Entry, Kind, Tree};
use crate::error::{Error, Result};
use crate::ssh::{Agent, quote};

/// The operations list, the last member of the archive (a reserved root name, never user data).
pub const OPS: &str = ".n10n-dev-ops";
/// The agent's socket name starts with this; the version keeps agents of different n10n-dev
/// releases apart.
const AGENT_SOCKET_PREFIX: &str = "agent-v6-";
/// An idle agent exits after this many seconds.
const AGENT_IDLE_SECS: u32 = 1800;

/// The agent: args socket path, replica root, idle seconds. Exits 1 when the socket's directory
/// is not a real directory of this user's with no group or other access (it lives under /tmp,
/// where another user could have made it first): then there is no agent. Exits 0 at once when
/// an agent already answers on the socket. Otherwise binds the socket, writes a random token to
/// `<socket>.token` (mode 0600), detaches, and serves each connection in a child: greet with
/// `n10n-agent-hello <token>\n` (so that n10n-dev, which learnt the token over an exec session,
/// knows it reached this agent and nothing else before it sends a byte), read
/// `<length>\n<command>`, run `sh -c command` with the rest of the stream as stdin, reply
/// `n10n-agent <status> <stdout bytes> <stderr bytes>\n` and the output. A request
/// `r<length>\n<fields>` runs a command of `run`'s instead, with the user's login environment
/// (captured once, cached beside the socket until a profile file changes), streaming its
/// output as frames (see `Session::run_in_login_env`). It exits when idle, or within 30 s of
/// its socket being removed or replaced or of the replica being deleted, and takes its files
/// with it unless another agent has replaced them.
const AGENT: &str = include_str!("scripts/agent.pl");

/// Walks the replica without following links and prints, per entry, NUL-terminated fields:
/// type (f, x for executable, d, l), size, mtime, path, link target. Skips `.git`. Uses only
/// perl-base (File::Find is not in it).
const LISTER: &str = include_str!("scripts/lister.pl");

/// Applies the operations list: deletes, then renames from staging. Refuses to write through a
/// symlink or outside the replica. Args: staging dir, ops file, `fresh` (the staging directory may
/// take an empty replica's place: then it prints `replaced`), the replica directory.
const APPLY: &str = include_str!("scripts/apply.pl");

/// Shell functions.
/// - `meta_of ROOT` sets `meta`, the directory beside the replica that holds n10n-dev's own files.
/// - `refuse_unsafe ROOT CODE` prints `unsafe ROOT` and exits with CODE when ROOT is `/`, a system directory,
///   the user's home as this machine resolves it, or one of the home's parents: a replica there
///   would have its neighbours deleted.
/// - `take_identity` sets `here`, the working directory's `device:inode:birth time`.
/// - `identify` sets `here` (the replica directory's `device:inode:birth time`: a directory made
///   again right after it was deleted often gets the same inode back) and `ours`: whether the
///   marker beside it was written for this very directory (a marker of an earlier release, which
///   carries no identity, counts as ours once). A directory deleted and made again, or a disk
///   rebuilt, is a new directory: it is not ours, and `id` is empty.
/// - `start_agent ROOT` makes sure an agent serves the replica at ROOT and sets `agent` to
///   `TOKEN SOCKET`, or to nothing when there is none to trust.
///
/// A process keeps the groups it started with, and so does everything it starts: an agent
/// started before provisioning added the user to the docker group could never reach Docker.
/// So the socket's name carries the user's groups as a new login gets them (from the group
/// database): once they change, the name changes and a new agent, started through a new
/// connection, takes over. Run inside an outdated agent, `start_agent` removes that agent's
/// socket, which makes it exit; a new one cannot be started from there (it would inherit the
/// old groups), so the next exec session starts it.
const FUNCTIONS: &str = include_str!("scripts/functions.sh");
/// The body of `probe_command`.
const PROBE: &str = include_str!("scripts/probe.sh");
/// The body of `apply_command`.
const APPLY_STEP: &str = include_str!("scripts/apply.sh");

/// `body` after the shell functions, with `words` (shell words, quoted already) and what the
/// functions need assigned first.
fn script(words: &[(&str, String)], body: &str) -> String {
    let common = [
        ("agent_prefix", quote::quote(AGENT_SOCKET_PREFIX.as_bytes())),
        ("agent_idle", AGENT_IDLE_SECS.to_string()),
        ("agent_script", quote::quote(AGENT.as_bytes())),
    ];
    let mut text = String::new();
    for (name, word) in common.iter().chain(words) {
        text.push_str(&format!("{name}={word}\n"));
    }
    text + FUNCTIONS + body
}

/// One round trip. The answer's first line: `same AGENT` when the replica carries
/// `expected_id`; `list AGENT` and a listing when it is ours (or empty, or missing) but not as
/// recorded; `foreign N` and a listing when the directory holds N entries that n10n-dev did not
/// put there; `unsafe PATH` when the dest resolves to a directory no replica may take. AGENT is
/// `TOKEN SOCKET`, or empty when no agent can be trusted (and always for a `dry_run`, which
/// starts none: it changes nothing on the machine).
pub fn probe_command(dest: &str, expected_id: &str, dry_run: bool) -> String {
    script(
        &[
            ("d", quote::quote_path(dest)),
            ("expected_id", quote::quote(expected_id.as_bytes())),
            ("dry_run", if dry_run { "yes" } else { "''" }.to_string()),
            ("lister_script", quote::quote(LISTER.as_bytes())),
        ],
        PROBE,
    )
}

/// Reads the archive from stdin into a staging directory of its own, then applies the
/// operations it carries, and answers `applied AGENT`. One sync at a time per replica: it waits
/// up to 2 minutes for another one's lock (closed before the agent starts, which would else
/// inherit it and hold it for as long as it lives). Into a directory that holds entries n10n-dev did not
/// put there it writes nothing unless `adopt`.
pub fn apply_command(dest: &str, new_marker: &str, adopt: bool) -> String {
    script(
        &[
            ("d", quote::quote_path(dest)),
            ("adopt", if adopt { "yes" } else { "''" }.to_string()),
            ("marker", quote::quote(new_marker.as_bytes())),
            ("ops", quote::quote(OPS.as_bytes())),
            ("apply_script", quote::quote(APPLY.as_bytes())),
        ],
        APPLY_STEP,
    )
}

/// The agent from the apply script's answer; `None` when it did not answer `applied`.
pub fn parse_applied(output: &[u8]) -> Option<Option<Agent>> {
    let line = std::str::from_utf8(output).ok()?.lines().last()?;
    line.strip_prefix("applied ").map(Agent::parse)
}

/// The directory the apply step refused to sync into (`unsafe PATH`, as the probe says it), if
/// it refused.
pub fn parse_refused(output: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(output).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("unsafe "))
        .map(str::to_string)
}

pub enum ProbeResult {
    Same,
    Listed(Tree),
    /// The dest holds this many entries that n10n-dev did not put there; the listing of them.
    Foreign(usize, Tree),
    /// The dest resolves to this directory, where no replica may go.
    Unsafe(String),
}

/// The answer, and the agent when there is one to trust.
pub fn parse_probe(output: &[u8]) -> Result<(ProbeResult, Option<Agent>)> {
    let bad = |why: &str| Error::Remote(format!("unexpected answer from the replica probe: {why}"));
    let end = output
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| bad("no header"))?;
    let header = std::str::from_utf8(&output[..end]).map_err(|_| bad("header"))?;
    let (word, rest) = header.split_once(' ').ok_or_else(|| bad("header"))?;
    let listing = &output[end + 1..];
    let (foreign, agent) = match word {
        "same" => return Ok((ProbeResult::Same, Agent::parse(rest))),
        "unsafe" => return Ok((ProbeResult::Unsafe(rest.to_string()), None)),
        "list" => (None, Agent::parse(rest)),
        "foreign" => (Some(rest.trim().parse().map_err(|_| bad("count"))?), None),
        _ => return Err(bad("header")),
    };
    let mut fields = listing.split(|&b| b == 0);
    let mut tree = Tree::new();
    while let Some(kind) = fields.next().filter(|f| !f.is_empty()) {
        let mut next = || fields.next().ok_or_else(|| bad("truncated record"));
        let size = parse_number(next()?).ok_or_else(|| bad("size"))?;
        let mtime = parse_number(next()?).ok_or_else(|| bad("mtime"))?;
        let path = next()?.to_vec();
        let target = next()?.to_vec();
        let kind = match kind {
            b"f" | b"x" => Kind::File {
                size: size as u64,
                executable: kind == b"x",
            },
            b"d" => Kind::Dir,
            b"l" => Kind::Symlink { target },
            _ => return Err(bad("entry type")),
        };
        tree.insert(
            path,
            Entry {
                kind,
                mtime,
                stamp: None,
                digest: None,
            },
        );
    }
    let result = match foreign {
        Some(count) => ProbeResult::Foreign(count, tree),
        None => ProbeResult::Listed(tree),
    };
    Ok((result, agent))
}

fn parse_number(field: &[u8]) -> Option<i64> {
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// The operations list carried in the archive: `D path` deletes, then `M path` moves.
pub fn encode_ops(deletes: &[Vec<u8>], moves: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (op, paths) in [(b'D', deletes), (b'M', moves)] {
        for path in paths {
            out.push(op);
            out.push(0);
            out.extend_from_slice(path);
            out.push(0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scripts run here with the real sh, tar and perl, without SSH.
    fn sh(script: &str, home: &std::path::Path, stdin: &[u8]) -> std::process::Output {
        use std::io::Write;
        let mut child = std::process::Command::new("sh")
            .args(["-c", script])
            .env("HOME", home)
            .env("N10N_AGENT_SOCKET", "/nonexistent/agent.sock")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A script that refuses exits without reading its input: the pipe may be closed already.
        match child.stdin.take().unwrap().write_all(stdin) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            written => written.unwrap(),
        }
        child.wait_with_output().unwrap()
    }

    /// An archive as a sync sends it: one file at `path`, then the operations list moving it.
    fn archive_moving(path: &str, data: &[u8]) -> Vec<u8> {
        let mut archive = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        archive.append_data(&mut header, path, data).unwrap();
        let ops = encode_ops(&[], &[path.as_bytes().to_vec()]);
        let mut header = tar::Header::new_gnu();
        header.set_size(ops.len() as u64);
        header.set_mode(0o644);
        archive.append_data(&mut header, OPS, &ops[..]).unwrap();
        archive.into_inner().unwrap()
    }

    /// Apply an archive that moves `path` into place, as a sync with a new id would; it must
    /// succeed.
    fn apply_ok(dest: &str, id: &str, home: &std::path::Path, path: &str, data: &[u8]) {
        let out = sh(
            &apply_command(dest, id, false),
            home,
            &archive_moving(path, data),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn probe(dest: &str, id: &str, home: &std::path::Path) -> ProbeResult {
        let out = sh(&probe_command(dest, id, false), home, b"");
        parse_probe(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
            .0
    }

    #[test]
    fn probe_lists_an_unknown_replica_and_recognises_its_marker() {
        let home = tempfile::tempdir().unwrap();
        let out = sh(&probe_command("~/r", "id1", false), home.path(), b"");
        assert_eq!(out.stdout, b"list \n");
        let replica = home.path().join("r");
        std::fs::create_dir_all(replica.join("d/.git")).unwrap();
        std::fs::write(replica.join("d/f\nname"), "abc").unwrap();
        std::os::unix::fs::symlink("f", replica.join("l")).unwrap();
        // A file named as earlier builds named their marker makes nothing ours: the directory
        // is someone else's, listed, and left as it is.
        std::fs::write(replica.join(".n10n-dev-replica"), "id2").unwrap();
        let ProbeResult::Foreign(3, tree) = probe("~/r", "id2", home.path()) else {
            panic!("not foreign")
        };
        let paths: Vec<_> = tree.keys().cloned().collect();
        assert_eq!(
            paths,
            [
                b".n10n-dev-replica".to_vec(),
                b"d".to_vec(),
                b"d/f\nname".to_vec(),
                b"l".to_vec()
            ]
        );
        assert_eq!(
            tree[&b"l".to_vec()].kind,
            Kind::Symlink {
                target: b"f".to_vec()
            }
        );
        assert!(!home.path().join(".r.n10n-dev").exists());
        std::fs::remove_dir_all(&replica).unwrap();
        // An apply records the directory's identity with the id: from then on the probe answers
        // `same` for it.
        apply_ok("~/r", "id3", home.path(), "a", b"1");
        assert!(matches!(
            probe("~/r", "id3", home.path()),
            ProbeResult::Same
        ));
        assert!(matches!(
            probe("~/r", "id2", home.path()),
            ProbeResult::Listed(_)
        ));
    }

    #[test]
    fn a_directory_made_again_is_a_new_replica() {
        let home = tempfile::tempdir().unwrap();
        let replica = home.path().join("r");
        apply_ok("~/r", "id1", home.path(), "a", b"1");
        assert!(matches!(
            probe("~/r", "id1", home.path()),
            ProbeResult::Same
        ));
        std::fs::remove_dir_all(&replica).unwrap();
        std::fs::create_dir(&replica).unwrap();
        let ProbeResult::Listed(tree) = probe("~/r", "id1", home.path()) else {
            panic!("an empty directory made again is listed, not taken for the replica")
        };
        assert!(tree.is_empty());
        // Made again and filled by someone else: not ours.
        std::fs::write(replica.join("theirs"), "x").unwrap();
        assert!(matches!(
            probe("~/r", "id1", home.path()),
            ProbeResult::Foreign(1, _)
        ));
    }

    #[test]
    fn a_first_sync_into_an_empty_replica_replaces_it_in_one_rename() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let home = tempfile::tempdir().unwrap();
        let replica = home.path().join("r");
        std::fs::create_dir(&replica).unwrap();
        std::fs::set_permissions(&replica, std::fs::Permissions::from_mode(0o750)).unwrap();
        let before = std::fs::metadata(&replica).unwrap().ino();
        apply_ok("~/r", "id1", home.path(), "a", b"1");
        let after = std::fs::metadata(&replica).unwrap();
        assert_ne!(
            after.ino(),
            before,
            "the staged directory took the replica's place"
        );
        assert_eq!(
            after.mode() & 0o7777,
            0o700,
            "the user's alone, as the replica is made"
        );
        assert_eq!(std::fs::read(replica.join("a")).unwrap(), b"1");
        let names: Vec<_> = std::fs::read_dir(home.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| n == "r" || n == ".r.n10n-dev"),
            "nothing staged is left beside it: {names:?}"
        );
        assert!(matches!(
            probe("~/r", "id1", home.path()),
            ProbeResult::Same
        ));
        // A replica with entries keeps its directory: the entries move into it.
        let kept = after.ino();
        apply_ok("~/r", "id2", home.path(), "b", b"2");
        assert_eq!(std::fs::metadata(&replica).unwrap().ino(), kept);
        assert!(replica.join("a").exists() && replica.join("b").exists());
    }

    #[test]
    fn foreign_directories_are_left_alone_unless_adopted() {
        let home = tempfile::tempdir().unwrap();
        let replica = home.path().join("code");
        std::fs::create_dir_all(replica.join("other-checkout/.git")).unwrap();
        std::fs::write(replica.join("notes.txt"), "mine").unwrap();
        let ProbeResult::Foreign(2, listed) = probe("~/code", "none", home.path()) else {
            panic!("not foreign")
        };
        assert!(listed.contains_key(b"notes.txt".as_slice()));
        let refused = sh(
            &apply_command("~/code", "id1", false),
            home.path(),
            &archive_moving("a", b"1"),
        );
        assert_eq!(refused.status.code(), Some(76));
        assert!(replica.join("notes.txt").exists() && !replica.join("a").exists());
        let adopted = sh(
            &apply_command("~/code", "id1", true),
            home.path(),
            &archive_moving("a", b"1"),
        );
        assert!(
            adopted.status.success(),
            "{}",
            String::from_utf8_lossy(&adopted.stderr)
        );
        assert!(replica.join("a").exists());
    }

    #[test]
    fn the_home_and_its_parents_are_refused_where_they_resolve() {
        let home = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(home.path(), home.path().join("home-link")).unwrap();
        std::fs::write(home.path().join("canary"), "alive").unwrap();
        for dest in ["~/home-link", "~/.", "/"] {
            match probe(dest, "none", home.path()) {
                ProbeResult::Unsafe(_) => {}
                _ => panic!("{dest} was not refused"),
            }
            let out = sh(
                &apply_command(dest, "id", true),
                home.path(),
                &archive_moving("a", b"1"),
            );
            assert_eq!(out.status.code(), Some(3), "{dest}");
            // Said as the probe says it, so that the error is the same (a config error).
            let refused = parse_refused(&out.stdout).unwrap_or_else(|| panic!("{dest}"));
            assert!(refused.starts_with('/'), "{dest}: {refused}");
        }
        assert!(home.path().join("canary").exists());
        assert!(!home.path().join("a").exists());
    }

    #[test]
    fn apply_keeps_its_own_files_beside_the_replica() {
        let home = tempfile::tempdir().unwrap();
        let replica = home.path().join("r");
        // The id as an earlier release recorded it, without the directory's identity.
        std::fs::create_dir_all(home.path().join(".r.n10n-dev")).unwrap();
        std::fs::write(home.path().join(".r.n10n-dev/replica-id"), "id8").unwrap();
        let out = sh(
            &apply_command("~/r", "id9", false),
            home.path(),
            &archive_moving("a.txt", b"hi"),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let names: Vec<_> = std::fs::read_dir(&replica)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            ["a.txt"],
            "the replica holds the project and nothing else"
        );
        let meta = home.path().join(".r.n10n-dev");
        let marker = String::from_utf8(std::fs::read(meta.join("replica-id")).unwrap()).unwrap();
        assert!(marker.starts_with("id9 "), "{marker}");
        let staged: Vec<_> = std::fs::read_dir(&meta)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("staging"))
            .collect();
        assert!(staged.is_empty(), "{staged:?}");
    }

    #[test]
    fn apply_refuses_to_write_through_a_symlink() {
        let home = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let replica = home.path().join("r");
        std::fs::create_dir_all(&replica).unwrap();
        std::os::unix::fs::symlink(outside.path(), replica.join("esc")).unwrap();
        let out = sh(
            &apply_command("~/r", "", true),
            home.path(),
            &archive_moving("esc/pwned", b"x"),
        );
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("refusing to write through symlink esc")
        );
        assert!(!outside.path().join("pwned").exists());
    }
}
