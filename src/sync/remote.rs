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
//! It listens on a private Unix socket (`/tmp/n10n-dev-<uid>/`, mode 0700, outside the replica so
//! that a `docker build` of the replica never meets a socket); a sync reaches it through a
//! `direct-streamlocal` channel of the connection it already has (no process is forked by sshd),
//! hands it the same probe or apply script, and gets back status, stdout and stderr. When the
//! agent is not there (first sync, VM rebooted, idle timeout) the scripts run as plain exec
//! sessions, which also start it again.

use super::tree::{Entry, Kind, Tree};
use crate::error::{Error, Result};
use crate::ssh::quote;

/// The operations list, the last member of the archive (a reserved root name, never user data).
pub const OPS: &str = ".n10n-dev-ops";
/// Where earlier releases kept the replica's id and staging area: inside the replica, where a
/// `COPY . .` carried them into images. A probe moves the id out; an apply removes the staging.
const LEGACY_MARKER: &str = ".n10n-dev-replica";
const LEGACY_STAGING: &str = ".n10n-dev-staging";
/// The agent's socket name starts with this; the version keeps agents of different n10n-dev
/// releases apart.
const AGENT_SOCKET_PREFIX: &str = "agent-v3-";
/// An idle agent exits after this many seconds.
const AGENT_IDLE_SECS: u32 = 1800;

/// The agent: args socket path, replica root, idle seconds. Exits 0 at once when an agent already
/// answers on the socket. Otherwise checks that the socket's directory is a real directory of
/// this user's with mode 0700 (it lives under /tmp), binds the socket, detaches, and serves
/// each connection in a child: read `<length>\n<command>`, run `sh -c command` with the rest of
/// the stream as stdin, reply `n10n-agent <status> <stdout bytes> <stderr bytes>\n` and the
/// output. It exits when idle, or within 30 s of its socket being removed or replaced or of the
/// replica being deleted.
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
my $umask = umask 077;
bind($server, pack_sockaddr_un($path)) or exit 1;
umask $umask;
listen($server, 16) or exit 1;
my $inode = (stat $path)[1];
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
/// file that holds the id.
const APPLY: &str = r#"
use strict;
use File::Path qw(remove_tree);
my ($staging, $ops, $marker, $marker_file) = @ARGV;
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
  print $out $marker;
  close($out) or die "cannot write marker: $!\n";
  rename("$marker_file.new", $marker_file) or die "cannot write marker: $!\n";
}
"#;

/// Shell functions. `start_agent ROOT` sets `sock` to where the agent for the replica at ROOT
/// listens and makes sure one serves it. `meta` is the directory beside the replica that holds
/// n10n-dev's own files.
///
/// A process keeps the groups it started with, and so does everything it starts: an agent
/// started before provisioning added the user to the docker group could never reach Docker.
/// So the socket's name carries the user's groups as a new login gets them (from the group
/// database): once they change, the name changes and a new agent, started through a new
/// connection, takes over. Run inside an outdated agent, `start_agent` removes that agent's
/// socket, which makes it exit; a new one cannot be started from there (it would inherit the
/// old groups), so the next exec session starts it.
fn agent_functions() -> String {
    format!(
        "meta_of() {{ meta=\"${{1%/*}}/.${{1##*/}}.n10n-dev\"; }}; \
         start_agent() {{ sock=\"/tmp/n10n-dev-$(id -u)/{AGENT_SOCKET_PREFIX}$(printf '%s %s' \"$1\" \
         \"$(id -G \"${{USER:-$(id -un)}}\")\" | cksum | cut -d ' ' -f 1).sock\"; \
         if [ -z \"$N10N_AGENT_SOCKET\" ]; then perl -e {agent} \"$sock\" \"$1\" {AGENT_IDLE_SECS} \
         </dev/null >/dev/null 2>&1 || true; \
         elif [ \"$sock\" != \"$N10N_AGENT_SOCKET\" ]; then rm -f -- \"$N10N_AGENT_SOCKET\"; fi; }}",
        agent = quote::quote(AGENT.as_bytes()),
    )
}

/// One round trip: `same SOCKET` when the replica carries `expected_id`, else `list SOCKET` and
/// a listing of it. SOCKET is where the replica's agent listens, empty when there is no replica.
/// A replica of an earlier release has its id moved out first.
pub fn probe_command(dest: &str, expected_id: &str) -> String {
    let dir = quote::quote_path(dest);
    format!(
        "{functions}; d={dir}; root=; if [ -d \"$d\" ]; then cd -- \"$d\" && root=$(pwd -P); fi; \
         if [ -z \"$root\" ]; then echo 'list '; exit 0; fi; meta_of \"$root\"; \
         if [ -f {LEGACY_MARKER} ]; then mkdir -p -- \"$meta\" && mv -f -- {LEGACY_MARKER} \"$meta/replica-id\"; fi; \
         start_agent \"$root\"; \
         if [ \"$(cat \"$meta/replica-id\" 2>/dev/null)\" = {id} ]; then echo \"same $sock\"; exit 0; fi; \
         echo \"list $sock\"; perl -e {lister}",
        functions = agent_functions(),
        id = quote::quote(expected_id.as_bytes()),
        lister = quote::quote(LISTER.as_bytes()),
    )
}

/// Reads the archive from stdin into staging, then applies the operations it carries, and
/// answers `applied SOCKET`.
pub fn apply_command(dest: &str, new_marker: &str) -> String {
    let dir = quote::quote_path(dest);
    format!(
        "set -e; {functions}; d={dir}; mkdir -p -- \"$d\"; cd -- \"$d\"; root=$(pwd -P); meta_of \"$root\"; \
         rm -rf -- {LEGACY_STAGING}; s=\"$meta/staging\"; mkdir -p -- \"$meta\"; rm -rf -- \"$s\"; mkdir -- \"$s\"; \
         tar -x -f - -C \"$s\" --no-same-owner; \
         perl -e {apply} \"$s\" \"$s/{OPS}\" {marker} \"$meta/replica-id\"; rm -rf -- \"$s\"; \
         start_agent \"$root\"; echo \"applied $sock\"",
        functions = agent_functions(),
        apply = quote::quote(APPLY.as_bytes()),
        marker = quote::quote(new_marker.as_bytes()),
    )
}

/// The agent's socket from the apply script's answer.
pub fn parse_applied(output: &[u8]) -> Option<String> {
    let line = std::str::from_utf8(output).ok()?.lines().last()?;
    line.strip_prefix("applied ").map(str::to_string)
}

pub enum ProbeResult {
    Same,
    Listed(Tree),
}

/// The answer, and the agent's socket when there is a replica.
pub fn parse_probe(output: &[u8]) -> Result<(ProbeResult, Option<String>)> {
    let bad = |why: &str| Error::Remote(format!("unexpected answer from the replica probe: {why}"));
    let end = output
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| bad("no header"))?;
    let header = std::str::from_utf8(&output[..end]).map_err(|_| bad("header"))?;
    let (word, socket) = header.split_once(' ').ok_or_else(|| bad("header"))?;
    let socket = (!socket.is_empty()).then(|| socket.to_string());
    let listing = &output[end + 1..];
    match word {
        "same" => return Ok((ProbeResult::Same, socket)),
        "list" => {}
        _ => return Err(bad("header")),
    }
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
    Ok((ProbeResult::Listed(tree), socket))
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
        child.stdin.take().unwrap().write_all(stdin).unwrap();
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

    #[test]
    fn probe_lists_an_unknown_replica_and_recognises_its_marker() {
        let home = tempfile::tempdir().unwrap();
        let out = sh(&probe_command("~/r", "id1"), home.path(), b"");
        assert_eq!(out.stdout, b"list \n");
        let replica = home.path().join("r");
        std::fs::create_dir_all(replica.join("d/.git")).unwrap();
        std::fs::write(replica.join("d/f\nname"), "abc").unwrap();
        std::os::unix::fs::symlink("f", replica.join("l")).unwrap();
        // An earlier release's marker, inside the replica: the probe moves it out.
        std::fs::write(replica.join(LEGACY_MARKER), "id2").unwrap();
        let out = sh(&probe_command("~/r", "id1"), home.path(), b"");
        let (ProbeResult::Listed(tree), Some(root)) = parse_probe(&out.stdout).unwrap() else {
            panic!("same?")
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
        let out = sh(&probe_command("~/r", "id2"), home.path(), b"");
        assert!(matches!(
            parse_probe(&out.stdout).unwrap(),
            (ProbeResult::Same, Some(_))
        ));
        assert!(
            root.starts_with("/tmp/n10n-dev-") && root.ends_with(".sock"),
            "{root}"
        );
    }

    #[test]
    fn apply_keeps_its_own_files_beside_the_replica() {
        let home = tempfile::tempdir().unwrap();
        let replica = home.path().join("r");
        std::fs::create_dir_all(replica.join(LEGACY_STAGING)).unwrap();
        let out = sh(
            &apply_command("~/r", "id9"),
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
        assert_eq!(std::fs::read(meta.join("replica-id")).unwrap(), b"id9");
        assert!(!meta.join("staging").exists());
    }

    #[test]
    fn apply_refuses_to_write_through_a_symlink() {
        let home = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let replica = home.path().join("r");
        std::fs::create_dir_all(&replica).unwrap();
        std::os::unix::fs::symlink(outside.path(), replica.join("esc")).unwrap();
        let out = sh(
            &apply_command("~/r", ""),
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
