//! What to change on the remote so it equals the local tree: one pass over both snapshots.

use std::collections::HashSet;

use super::rules::Rules;
use super::tree::{Entry, Kind, RelPath, Tree};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Remote paths to remove (whole trees), applied first.
    pub deletes: Vec<RelPath>,
    /// Local entries to stream, parents before children.
    pub archive: Vec<RelPath>,
    /// Staged entries to rename into place once everything has arrived; a new directory moves
    /// with its whole subtree.
    pub moves: Vec<RelPath>,
    /// Regular files sent, and their bytes.
    pub files: usize,
    pub bytes: u64,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.deletes.is_empty() && self.moves.is_empty()
    }
}

/// How the remote side is known: from our record of the last confirmed sync, or from a listing.
pub enum RemoteView<'a> {
    Recorded { tree: &'a Tree, scanned_at_ns: i64 },
    Listed(&'a Tree),
}

impl RemoteView<'_> {
    fn tree(&self) -> &Tree {
        match self {
            RemoteView::Recorded { tree, .. } | RemoteView::Listed(tree) => tree,
        }
    }

    /// Does the remote still hold what `local` is? `digest` reads a local file's digest, and is
    /// asked only for racy files, whose stamp alone proves nothing.
    fn unchanged(
        &self,
        path: &[u8],
        local: &Entry,
        remote: &Entry,
        digest: &dyn Fn(&[u8]) -> Option<u64>,
    ) -> bool {
        match (&local.kind, &remote.kind) {
            (Kind::Dir, Kind::Dir) => true,
            (Kind::Symlink { target: a }, Kind::Symlink { target: b }) => a == b,
            (Kind::File { .. }, Kind::File { .. }) if local.kind != remote.kind => false,
            (Kind::File { .. }, Kind::File { .. }) => match self {
                RemoteView::Recorded { scanned_at_ns, .. } => {
                    local.stamp == remote.stamp
                        && (!local.is_racy(*scanned_at_ns)
                            || remote.digest.is_some_and(|d| digest(path) == Some(d)))
                }
                RemoteView::Listed(_) => local.mtime == remote.mtime,
            },
            _ => false,
        }
    }
}

pub fn plan(
    local: &Tree,
    remote: &RemoteView<'_>,
    rules: &Rules,
    digest: &dyn Fn(&[u8]) -> Option<u64>,
) -> Plan {
    let mut plan = Plan::default();
    let mut new_dirs: HashSet<&[u8]> = HashSet::new();
    let mut deleted: HashSet<&[u8]> = HashSet::new();
    for (path, entry) in local {
        let top_level = match remote.tree().get(path) {
            _ if parent(path).is_some_and(|p| new_dirs.contains(p)) => false,
            None => true,
            Some(old) if !entry.same_kind(old) => {
                plan.deletes.push(path.clone());
                deleted.insert(path);
                true
            }
            Some(old) if remote.unchanged(path, entry, old, digest) => continue,
            Some(_) => true,
        };
        plan.archive.push(path.clone());
        if top_level {
            plan.moves.push(path.clone());
        }
        match entry.kind {
            Kind::Dir => {
                new_dirs.insert(path);
            }
            Kind::File { size, .. } => {
                plan.files += 1;
                plan.bytes += size;
            }
            Kind::Symlink { .. } => {}
        }
    }
    for (path, old) in remote.tree() {
        if local.contains_key(path) || ancestors(path).any(|a| deleted.contains(a)) {
            continue;
        }
        if rules.is_excluded(path, old.kind == Kind::Dir) {
            continue;
        }
        plan.deletes.push(path.clone());
        deleted.insert(path);
    }
    plan
}

fn parent(path: &[u8]) -> Option<&[u8]> {
    path.iter().rposition(|&b| b == b'/').map(|i| &path[..i])
}

fn ancestors(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::successors(parent(path), |p| parent(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::tree::Stamp;

    fn file(size: u64, mtime_ns: i64) -> Entry {
        Entry {
            kind: Kind::File {
                size,
                executable: false,
            },
            mtime: mtime_ns / 1_000_000_000,
            stamp: Some(Stamp {
                mtime_ns,
                ctime_ns: mtime_ns,
                inode: 1,
            }),
            digest: None,
        }
    }
    fn dir() -> Entry {
        Entry {
            kind: Kind::Dir,
            mtime: 0,
            stamp: None,
            digest: None,
        }
    }
    fn tree(entries: &[(&str, Entry)]) -> Tree {
        entries
            .iter()
            .map(|(p, e)| (p.as_bytes().to_vec(), e.clone()))
            .collect()
    }
    fn names(paths: &[RelPath]) -> Vec<String> {
        paths
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    }

    #[test]
    fn new_directory_moves_as_one_and_deletes_respect_ignores() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join(".gitignore"), "target/\n").unwrap();
        let mut rules = Rules::new(root.path(), &[]).unwrap();
        rules.load_dir(b"");
        let old = 10_000_000_000;
        let local = tree(&[
            ("a", file(1, old)),
            ("new", dir()),
            ("new/x", file(5, old)),
            ("same", file(2, old)),
        ]);
        let remote = tree(&[
            ("a", file(1, old - 1)),
            ("gone", dir()),
            ("gone/y", file(1, old)),
            ("same", file(2, old)),
            ("target", dir()),
            ("target/out", file(9, old)),
        ]);
        let plan = plan(
            &local,
            &RemoteView::Recorded {
                tree: &remote,
                scanned_at_ns: old * 10,
            },
            &rules,
            &|_| None,
        );
        assert_eq!(names(&plan.moves), ["a", "new"]);
        assert_eq!(names(&plan.archive), ["a", "new", "new/x"]);
        assert_eq!(names(&plan.deletes), ["gone"]);
        assert_eq!((plan.files, plan.bytes), (2, 6));
    }

    #[test]
    fn racy_files_are_resent_unless_their_digest_matches_and_type_changes_delete_first() {
        let root = tempfile::tempdir().unwrap();
        let rules = Rules::new(root.path(), &[]).unwrap();
        let t = 50_000_000_000;
        let digested = Entry {
            digest: Some(7),
            ..file(1, t)
        };
        let local = tree(&[
            ("racy", file(1, t)),
            ("racy-same", file(1, t)),
            ("swap", dir()),
        ]);
        let remote = tree(&[
            ("racy", digested.clone()),
            ("racy-same", digested),
            ("swap", file(3, 1)),
        ]);
        let plan = plan(
            &local,
            &RemoteView::Recorded {
                tree: &remote,
                scanned_at_ns: t + 1,
            },
            &rules,
            &|path| (path == b"racy-same").then_some(7),
        );
        assert_eq!(names(&plan.moves), ["racy", "swap"]);
        assert_eq!(names(&plan.deletes), ["swap"]);
    }
}
