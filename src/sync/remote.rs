//! The remote half of a sync, as small scripts for tools every Debian/Ubuntu machine has (`sh`,
//! GNU `tar`, and `perl-base`, which is Essential): a probe that costs one round trip when
//! nothing changed, a lister for when the replica is unknown, and the apply step that renames
//! staged entries into place only after the whole archive has arrived.

use super::tree::{Entry, Kind, Tree};
use crate::error::{Error, Result};
use crate::ssh::quote;

pub const MARKER: &str = ".n10n-dev-replica";
pub const STAGING: &str = ".n10n-dev-staging";
/// The operations list, the last member of the archive (a reserved root name, never user data).
pub const OPS: &str = ".n10n-dev-ops";

/// Walks the replica without following links and prints, per entry, NUL-terminated fields:
/// type (f, x for executable, d, l), size, mtime, path, link target. Skips `.git` and the
/// reserved root names. Uses only perl-base (File::Find is not in it).
const LISTER: &str = r#"
use strict;
my @dirs = ('');
while (@dirs) {
  my $dir = shift @dirs;
  opendir(my $dh, $dir eq '' ? '.' : $dir) or die "cannot read $dir: $!\n";
  for my $name (readdir $dh) {
    next if $name eq '.' || $name eq '..' || $name eq '.git';
    next if $dir eq '' && index($name, '.n10n-dev-') == 0;
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
/// symlink or outside the replica. Args: staging dir, ops file, new marker id (or empty).
const APPLY: &str = r#"
use strict;
use File::Path qw(remove_tree);
my ($staging, $ops, $marker) = @ARGV;
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
  open(my $out, '>', "$staging/marker") or die "cannot write marker: $!\n";
  print $out $marker;
  close($out) or die "cannot write marker: $!\n";
  rename("$staging/marker", ".n10n-dev-replica") or die "cannot write marker: $!\n";
}
"#;

/// One round trip: "same" when the replica carries `expected_id`, else a listing of it.
pub fn probe_command(dest: &str, expected_id: &str) -> String {
    let dir = quote::quote_path(dest);
    format!(
        "d={dir}; if [ \"$(cat -- \"$d\"/{MARKER} 2>/dev/null)\" = {id} ]; then echo same; exit 0; fi; \
         echo list; [ -d \"$d\" ] || exit 0; cd -- \"$d\" && exec perl -e {lister}",
        id = quote::quote(expected_id.as_bytes()),
        lister = quote::quote(LISTER.as_bytes()),
    )
}

/// Reads the archive from stdin into staging, then applies the operations it carries.
pub fn apply_command(dest: &str, new_marker: &str) -> String {
    let dir = quote::quote_path(dest);
    format!(
        "set -e; d={dir}; mkdir -p -- \"$d\"; cd -- \"$d\"; rm -rf -- {STAGING}; mkdir -- {STAGING}; \
         tar -x -f - -C {STAGING} --no-same-owner; \
         perl -e {apply} {STAGING} {STAGING}/{OPS} {marker}; rm -rf -- {STAGING}; echo applied",
        apply = quote::quote(APPLY.as_bytes()),
        marker = quote::quote(new_marker.as_bytes()),
    )
}

pub enum ProbeResult {
    Same,
    Listed(Tree),
}

pub fn parse_probe(output: &[u8]) -> Result<ProbeResult> {
    let bad = |why: &str| Error::Remote(format!("unexpected answer from the replica probe: {why}"));
    if output == b"same\n" {
        return Ok(ProbeResult::Same);
    }
    let listing = output
        .strip_prefix(b"list\n")
        .ok_or_else(|| bad("no header"))?;
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
    Ok(ProbeResult::Listed(tree))
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
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }

    #[test]
    fn probe_lists_an_unknown_replica_and_recognises_its_marker() {
        let home = tempfile::tempdir().unwrap();
        let out = sh(&probe_command("~/r", "id1"), home.path(), b"");
        assert_eq!(out.stdout, b"list\n");
        let replica = home.path().join("r");
        std::fs::create_dir_all(replica.join("d/.git")).unwrap();
        std::fs::write(replica.join("d/f\nname"), "abc").unwrap();
        std::os::unix::fs::symlink("f", replica.join("l")).unwrap();
        std::fs::write(replica.join(MARKER), "id2").unwrap();
        let out = sh(&probe_command("~/r", "id1"), home.path(), b"");
        let ProbeResult::Listed(tree) = parse_probe(&out.stdout).unwrap() else {
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
        let out = sh(&probe_command("~/r", "id2"), home.path(), b"");
        assert!(matches!(
            parse_probe(&out.stdout).unwrap(),
            ProbeResult::Same
        ));
    }

    #[test]
    fn apply_refuses_to_write_through_a_symlink() {
        let home = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let replica = home.path().join("r");
        std::fs::create_dir_all(&replica).unwrap();
        std::os::unix::fs::symlink(outside.path(), replica.join("esc")).unwrap();
        let mut archive = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_mode(0o644);
        archive
            .append_data(&mut header, "esc/pwned", &b"x"[..])
            .unwrap();
        let ops = encode_ops(&[], &[b"esc/pwned".to_vec()]);
        let mut header = tar::Header::new_gnu();
        header.set_size(ops.len() as u64);
        header.set_mode(0o644);
        archive.append_data(&mut header, OPS, &ops[..]).unwrap();
        let out = sh(
            &apply_command("~/r", ""),
            home.path(),
            &archive.into_inner().unwrap(),
        );
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("refusing to write through symlink esc")
        );
        assert!(!outside.path().join("pwned").exists());
    }
}
