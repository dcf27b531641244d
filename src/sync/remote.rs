//! The remote half of a sync, as small scripts for tools every Debian/Ubuntu machine has (`sh`,
//! GNU `tar`, and `perl-base`, which is Essential): a probe that costs one round trip when
//! nothing changed, a lister for when the replica is unknown, the apply step that renames
//! staged entries into place only after the whole archive has arrived, and an agent.
//!
//! n10n-dev's own files sit beside the replica, never in it: for `~/n10n/app`, the directory
//! `~/n10n/.app.n10n-dev/` holds the replica's id (`replica-id`) and, during a sync, the staging
//! area (`staging/`). Being on the same filesystem keeps the renames into place atomic.
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
/// Where earlier releases kept the replica's id and staging area: inside the replica, where a
/// `COPY . .` carried them into images. A probe moves the id out; an apply removes the staging.
const LEGACY_MARKER: &str = ".n10n-dev-replica";
const LEGACY_STAGING: &str = ".n10n-dev-staging";
/// The agent's socket name starts with this; the version keeps agents of different n10n-dev
/// releases apart.
const AGENT_SOCKET_PREFIX: &str = "agent-v4-";
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
/// `n10n-agent <status> <stdout bytes> <stderr bytes>\n` and the output. It exits when idle, or
/// within 30 s of its socket being removed or replaced or of the replica being deleted.
const AGENT: &str = r#"
use strict;
use Socket;
use POSIX ();
my ($path, $root, $idle) = @ARGV;
(my $dir = $path) =~ s{/[^/]*$}{};
mkdir $dir, 0700;
my @d = lstat $dir;
exit 1 unless @d && -d _ && $d[4] == $< && ($d[2] & 077) == 0;
socket(my $check, PF_UNIX, SOCK_STREAM, 0) or exit 1;
exit 0 if connect($check, pack_sockaddr_un($path));
close $check;
unlink $path;
socket(my $server, PF_UNIX, SOCK_STREAM, 0) or exit 1;
umask 077;
bind($server, pack_sockaddr_un($path)) or exit 1;
listen($server, 16) or exit 1;
my $inode = (stat $path)[1];
open(my $random, '<', '/dev/urandom') or exit 1;
sysread($random, my $raw, 16) == 16 or exit 1;
my $token = unpack('H*', $raw);
open(my $tf, '>', "$path.token.new") or exit 1;
print $tf $token;
close($tf) or exit 1;
rename("$path.token.new", "$path.token") or exit 1;
defined(my $pid = fork) or exit 1;
exit 0 if $pid;
POSIX::setsid();
chdir '/';
open STDIN, '<', '/dev/null'; open STDOUT, '>', '/dev/null'; open STDERR, '>', '/dev/null';
$ENV{N10N_AGENT_SOCKET} = $path;
$SIG{CHLD} = 'IGNORE';
my $last_used = time;
while (1) {
  my $rin = ''; vec($rin, fileno($server), 1) = 1;
  my $ready = select(my $rout = $rin, undef, undef, 30);
  my @st = stat $path;
  exit 0 unless @st && $st[1] == $inode && -d $root;
  if ($ready <= 0) { exit 0 if time - $last_used >= $idle; next; }
  accept(my $conn, $server) or next;
  $last_used = time;
  my $child = fork;
  if (defined $child && $child == 0) { close $server; serve($conn); POSIX::_exit(0); }
  close $conn;
}
sub serve {
  my $conn = shift;
  $SIG{CHLD} = 'DEFAULT';
  write_all($conn, "n10n-agent-hello $token\n") or return;
  my ($mode, $length) = ('', '');
  while (1) {
    sysread($conn, my $c, 1) == 1 or return;
    if ($mode eq '' && $length eq '' && $c eq 's') { $mode = 's'; next; }
    last if $c eq "\n";
    $length .= $c;
    return if length($length) > 12 || $c !~ /[0-9]/;
  }
  my $command = '';
  while (length($command) < $length) {
    sysread($conn, my $buf, $length - length($command)) or return;
    $command .= $buf;
  }
  return stream($conn, $command) if $mode eq 's';
  open(my $out, '+>', undef) or return;
  open(my $err, '+>', undef) or return;
  my $pid = fork;
  return unless defined $pid;
  if ($pid == 0) {
    setpgrp(0, 0);
    open(STDIN, '<&', $conn); open(STDOUT, '>&', $out); open(STDERR, '>&', $err);
    exec('/bin/sh', '-c', $command);
    POSIX::_exit(127);
  }
  waitpid($pid, 0);
  my $status = ($? & 127) ? 128 + ($? & 127) : $? >> 8;
  my ($o, $e) = ('', '');
  seek($out, 0, 0); { local $/; $o = <$out> // ''; }
  seek($err, 0, 0); { local $/; $e = <$err> // ''; }
  write_all($conn, "n10n-agent $status " . length($o) . ' ' . length($e) . "\n" . $o . $e);
}
sub write_all {
  my ($conn, $data) = @_;
  while (length $data) {
    my $n = syswrite($conn, $data) or return 0;
    substr($data, 0, $n) = '';
  }
  return 1;
}
# Streaming mode: stdout and stderr as they come, as frames `o`/`e` + 4-byte length + bytes,
# then `x` + 4-byte exit status. The command leads its own process group, so that n10n-dev can
# signal the whole of it.
sub stream {
  my ($conn, $command) = @_;
  pipe(my $or, my $ow) or return;
  pipe(my $er, my $ew) or return;
  my $pid = fork;
  return unless defined $pid;
  if ($pid == 0) {
    setpgrp(0, 0);
    close $or; close $er;
    open(STDIN, '<&', $conn); open(STDOUT, '>&', $ow); open(STDERR, '>&', $ew);
    exec('/bin/sh', '-c', $command);
    POSIX::_exit(127);
  }
  close $ow; close $ew;
  my %open = (o => $or, e => $er);
  while (%open) {
    my $rin = '';
    vec($rin, fileno($_), 1) = 1 for values %open;
    next if select(my $rout = $rin, undef, undef, undef) <= 0;
    for my $tag (keys %open) {
      my $fh = $open{$tag};
      next unless vec($rout, fileno($fh), 1);
      my $n = sysread($fh, my $buf, 65536);
      if (!$n) { delete $open{$tag}; next; }
      write_all($conn, $tag . pack('N', $n) . $buf) or do { kill('TERM', -$pid); return };
    }
  }
  waitpid($pid, 0);
  my $status = ($? & 127) ? 128 + ($? & 127) : $? >> 8;
  write_all($conn, 'x' . pack('N', $status));
}
"#;

/// Walks the replica without following links and prints, per entry, NUL-terminated fields:
/// type (f, x for executable, d, l), size, mtime, path, link target. Skips `.git`. Uses only
/// perl-base (File::Find is not in it).
const LISTER: &str = r#"
use strict;
my @dirs = ('');
while (@dirs) {
  my $dir = shift @dirs;
  opendir(my $dh, $dir eq '' ? '.' : $dir) or die "cannot read $dir: $!\n";
  for my $name (readdir $dh) {
    next if $name eq '.' || $name eq '..' || $name eq '.git';
    my $path = $dir eq '' ? $name : "$dir/$name";
    my @st = lstat($path) or next;
    my ($type, $target) = ('', '');
    if (-l _) { $type = 'l'; $target = readlink($path); }
    elsif (-d _) { $type = 'd'; push @dirs, $path; }
    elsif (-f _) { $type = ($st[2] & 0111) ? 'x' : 'f'; }
    else { next; }
    print join("\0", $type, $st[7], $st[9], $path, $target), "\0";
  }
  closedir $dh;
}
"#;

/// Applies the operations list: deletes, then renames from staging. Refuses to write through a
/// symlink or outside the replica. Args: staging dir, ops file, new replica id (or empty), the
/// file that holds the id, and the replica directory's identity (see `identify`), recorded with it.
const APPLY: &str = r#"
use strict;
use File::Path qw(remove_tree);
my ($staging, $ops, $marker, $marker_file, $here) = @ARGV;
open(my $fh, '<', $ops) or die "cannot read $ops: $!\n";
my @fields = do { local $/ = "\0"; map { chomp; $_ } <$fh> };
my %checked;
sub parents_are_dirs {
  my @parts = split m{/}, shift; pop @parts;
  my $acc = '';
  for my $part (@parts) {
    $acc = $acc eq '' ? $part : "$acc/$part";
    next if $checked{$acc};
    die "refusing to write through symlink $acc\n" if -l $acc;
    die "$acc is not a directory\n" unless -d $acc;
    $checked{$acc} = 1;
  }
}
sub remove {
  my $path = shift;
  if (-d $path && !-l $path) {
    remove_tree($path, { error => \my $errors });
    die "cannot delete $path\n" if @$errors;
  } elsif (-e $path || -l $path) {
    unlink($path) or die "cannot delete $path: $!\n";
  }
}
while (@fields) {
  my ($op, $path) = splice(@fields, 0, 2);
  die "bad path $path\n" if $path =~ m{(^|/)\.\.(/|$)} || $path =~ m{^/};
  if ($op eq 'D') { parents_are_dirs($path); remove($path); %checked = (); }
  elsif ($op eq 'M') {
    parents_are_dirs($path);
    next if rename("$staging/$path", $path);
    remove($path);
    rename("$staging/$path", $path) or die "cannot move $path into place: $!\n";
  }
  else { die "unknown operation $op\n"; }
}
if ($marker ne '') {
  open(my $out, '>', "$marker_file.new") or die "cannot write marker: $!\n";
  print $out "$marker $here";
  close($out) or die "cannot write marker: $!\n";
  rename("$marker_file.new", $marker_file) or die "cannot write marker: $!\n";
}
"#;

/// Shell functions.
/// - `meta_of ROOT` sets `meta`, the directory beside the replica that holds n10n-dev's own files.
/// - `refuse_unsafe ROOT CODE` prints `unsafe ROOT` and exits with CODE when ROOT is `/`, a system directory,
///   the user's home as this machine resolves it, or one of the home's parents: a replica there
///   would have its neighbours deleted.
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
fn shell_functions() -> String {
    format!(
        "meta_of() {{ meta=\"${{1%/*}}/.${{1##*/}}.n10n-dev\"; }}; \
         unsafe() {{ echo \"unsafe $1\"; echo \"refusing to sync into $1\" >&2; exit $2; }}; \
         refuse_unsafe() {{ home=$(cd ~ 2>/dev/null && pwd -P) || home=; \
         case \"$1\" in /|/bin|/boot|/dev|/etc|/home|/lib|/lib64|/media|/mnt|/opt|/proc|/root|/run|/sbin|/srv|/sys|/tmp|/usr|/var|/Users) \
         unsafe \"$1\" \"$2\";; esac; \
         case \"$home/\" in \"$1\"/*) unsafe \"$1\" \"$2\";; esac; }}; \
         identify() {{ here=$(stat -c %d:%i:%w . | tr ' ' _); id=$(cat \"$meta/replica-id\" 2>/dev/null) || id=; \
         case \"$id\" in *' '*) where=${{id#* }}; id=${{id%% *}};; *) where=;; esac; \
         ours=; [ -n \"$id\" ] && {{ [ -z \"$where\" ] || [ \"$where\" = \"$here\" ]; }} && ours=1; \
         [ -n \"$ours\" ] || id=; }}; \
         start_agent() {{ agent=; sock=\"${{TMPDIR:-/tmp}}/n10n-dev-$(id -u)/{AGENT_SOCKET_PREFIX}$(printf '%s %s' \"$1\" \
         \"$(id -G \"${{USER:-$(id -un)}}\")\" | cksum | cut -d ' ' -f 1).sock\"; \
         if [ -z \"$N10N_AGENT_SOCKET\" ]; then perl -e {agent} \"$sock\" \"$1\" {AGENT_IDLE_SECS} \
         </dev/null >/dev/null 2>&1 || return 0; \
         elif [ \"$sock\" != \"$N10N_AGENT_SOCKET\" ]; then rm -f -- \"$N10N_AGENT_SOCKET\"; return 0; fi; \
         token=$(cat \"$sock.token\" 2>/dev/null) && [ -n \"$token\" ] && agent=\"$token $sock\"; return 0; }}",
        agent = quote::quote(AGENT.as_bytes()),
    )
}

/// One round trip. The answer's first line: `same AGENT` when the replica carries
/// `expected_id`; `list AGENT` and a listing when it is ours (or empty, or missing) but not as
/// recorded; `foreign N` and a listing when the directory holds N entries that n10n-dev did not
/// put there; `unsafe PATH` when the dest resolves to a directory no replica may take. AGENT is
/// `TOKEN SOCKET`, or empty when no agent can be trusted. A replica of an earlier release has its
/// id moved out first.
pub fn probe_command(dest: &str, expected_id: &str) -> String {
    let dir = quote::quote_path(dest);
    format!(
        "{functions}; d={dir}; root=; if [ -d \"$d\" ]; then cd -- \"$d\" && root=$(pwd -P); fi; \
         if [ -z \"$root\" ]; then echo 'list '; exit 0; fi; refuse_unsafe \"$root\" 0; meta_of \"$root\"; \
         if [ -f {LEGACY_MARKER} ]; then mkdir -p -- \"$meta\" && mv -f -- {LEGACY_MARKER} \"$meta/replica-id\"; fi; \
         identify; if [ -z \"$ours\" ] && [ -n \"$(ls -A)\" ]; then echo \"foreign $(ls -A | wc -l)\"; \
         perl -e {lister}; exit 0; fi; \
         start_agent \"$root\"; \
         if [ -n \"$id\" ] && [ \"$id $where\" = {id}\" $here\" ]; then echo \"same $agent\"; exit 0; fi; \
         echo \"list $agent\"; perl -e {lister}",
        functions = shell_functions(),
        id = quote::quote(expected_id.as_bytes()),
        lister = quote::quote(LISTER.as_bytes()),
    )
}

/// Reads the archive from stdin into a staging directory of its own, then applies the
/// operations it carries, and answers `applied AGENT`. One sync at a time per replica: it waits
/// up to 2 minutes for another one's lock (closed before the agent starts, which would else
/// inherit it and hold it for as long as it lives). Into a directory that holds entries n10n-dev did not
/// put there it writes nothing unless `adopt`.
pub fn apply_command(dest: &str, new_marker: &str, adopt: bool) -> String {
    let dir = quote::quote_path(dest);
    format!(
        "set -e; {functions}; d={dir}; mkdir -p -- \"$d\"; cd -- \"$d\"; root=$(pwd -P); \
         refuse_unsafe \"$root\" 3; meta_of \"$root\"; mkdir -p -- \"$meta\"; \
         exec 9>>\"$meta/lock\"; flock -w 120 9 || {{ echo \"another sync into $root held its lock for 2 minutes; try again\" >&2; exit 75; }}; \
         identify; if [ -z \"$ours\" ] && [ -z {adopt} ] && [ -n \"$(ls -A)\" ]; then \
         echo \"$root holds files that n10n-dev did not put there; nothing was changed\" >&2; exit 76; fi; \
         rm -rf -- {LEGACY_STAGING} \"$meta/staging\" \"$meta\"/staging.*; s=$(mktemp -d \"$meta/staging.XXXXXX\"); \
         tar -x -f - -C \"$s\" --no-same-owner; \
         perl -e {apply} \"$s\" \"$s/{OPS}\" {marker} \"$meta/replica-id\" \"$here\"; rm -rf -- \"$s\"; exec 9>&-; \
         start_agent \"$root\"; echo \"applied $agent\"",
        functions = shell_functions(),
        apply = quote::quote(APPLY.as_bytes()),
        marker = quote::quote(new_marker.as_bytes()),
        adopt = if adopt { "yes" } else { "''" },
    )
}

/// The agent from the apply script's answer; `None` when it did not answer `applied`.
pub fn parse_applied(output: &[u8]) -> Option<Option<Agent>> {
    let line = std::str::from_utf8(output).ok()?.lines().last()?;
    line.strip_prefix("applied ").map(Agent::parse)
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

    fn probe(dest: &str, id: &str, home: &std::path::Path) -> ProbeResult {
        let out = sh(&probe_command(dest, id), home, b"");
        parse_probe(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
            .0
    }

    #[test]
    fn probe_lists_an_unknown_replica_and_recognises_its_marker() {
        let home = tempfile::tempdir().unwrap();
        let out = sh(&probe_command("~/r", "id1"), home.path(), b"");
        assert_eq!(out.stdout, b"list \n");
        let replica = home.path().join("r");
        std::fs::create_dir_all(replica.join("d/.git")).unwrap();
        std::fs::write(replica.join("d/f\nname"), "abc").unwrap();
        std::os::unix::fs::symlink("f", replica.join("l")).unwrap();
        // An earlier release's marker, inside the replica: the probe moves it out, and the
        // replica is listed (the marker carries no directory identity yet).
        std::fs::write(replica.join(LEGACY_MARKER), "id2").unwrap();
        let ProbeResult::Listed(tree) = probe("~/r", "id2", home.path()) else {
            panic!("not listed")
        };
        let paths: Vec<_> = tree.keys().cloned().collect();
        assert_eq!(paths, [b"d".to_vec(), b"d/f\nname".to_vec(), b"l".to_vec()]);
        assert_eq!(
            tree[&b"l".to_vec()].kind,
            Kind::Symlink {
                target: b"f".to_vec()
            }
        );
        assert!(!replica.join(LEGACY_MARKER).exists());
        let moved = std::fs::read(home.path().join(".r.n10n-dev/replica-id")).unwrap();
        assert_eq!(moved, b"id2");
        // An apply records the directory's identity with the id: from then on the probe answers
        // `same` for it.
        let applied = sh(
            &apply_command("~/r", "id3", false),
            home.path(),
            &archive_moving("a", b"1"),
        );
        assert!(
            applied.status.success(),
            "{}",
            String::from_utf8_lossy(&applied.stderr)
        );
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
        let applied = sh(
            &apply_command("~/r", "id1", false),
            home.path(),
            &archive_moving("a", b"1"),
        );
        assert!(applied.status.success());
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
        }
        assert!(home.path().join("canary").exists());
        assert!(!home.path().join("a").exists());
    }

    #[test]
    fn apply_keeps_its_own_files_beside_the_replica() {
        let home = tempfile::tempdir().unwrap();
        let replica = home.path().join("r");
        std::fs::create_dir_all(replica.join(LEGACY_STAGING)).unwrap();
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
