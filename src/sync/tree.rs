//! A snapshot of a tree: relative paths as raw bytes (non-UTF-8 names survive), sorted.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::sync::{Condvar, Mutex, RwLock};

use super::rules::Rules;
use crate::error::{IoContext, Result};

pub type RelPath = Vec<u8>;
pub type Tree = BTreeMap<RelPath, Entry>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File { size: u64, executable: bool },
    Dir,
    Symlink { target: Vec<u8> },
}

/// Local facts that change whenever content may have changed. Only compared with facts taken
/// on the same machine, never with remote clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub inode: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Whole seconds, as carried by tar and compared against a remote listing.
    pub mtime: i64,
    /// Present for local scans and the recorded baseline; absent in a remote listing.
    pub stamp: Option<Stamp>,
    /// Content digest, recorded only for racy files (see `is_racy`).
    pub digest: Option<u64>,
}

/// Files modified this close to (or after) a scan may change again within the filesystem's
/// timestamp granularity (up to 1 s on some filesystems) without their stamp changing.
const RACY_WINDOW_NS: i64 = 2_000_000_000;

impl Entry {
    /// Was this modified so close to `scanned_at_ns` that its stamp cannot be trusted alone?
    pub fn is_racy(&self, scanned_at_ns: i64) -> bool {
        matches!(self.kind, Kind::File { .. })
            && self
                .stamp
                .is_some_and(|s| s.mtime_ns >= scanned_at_ns - RACY_WINDOW_NS)
    }

    pub fn same_kind(&self, other: &Entry) -> bool {
        std::mem::discriminant(&self.kind) == std::mem::discriminant(&other.kind)
    }
}

/// Walk `root`, leaving out what `rules` exclude (and loading each directory's .gitignore as it
/// goes). Symlinks are recorded, never followed; FIFOs, sockets and devices are skipped.
///
/// Directories are read by a few threads at once (up to 4, as many as there are CPUs): a
/// no-op sync of a large project waits for little else.
pub fn scan(rules: &mut Rules) -> Result<Tree> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let walk = Walk {
        rules: RwLock::new(rules),
        queue: Mutex::new(Queue {
            pending: vec![(Vec::new(), None)],
            busy: 0,
            failed: None,
        }),
        changed: Condvar::new(),
    };
    let found: Vec<Found> = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..workers).map(|_| scope.spawn(|| walk.work())).collect();
        let mut all = vec![walk.work()];
        all.extend(
            helpers
                .into_iter()
                .map(|h| h.join().expect("a scan thread panicked")),
        );
        all
    });
    if let Some(error) = walk.queue.into_inner().expect("not poisoned").failed {
        return Err(error);
    }
    // Collected, then sorted once: inserting 10,000 paths into the map one by one cost a
    // fifth of a no-op sync's scan.
    let mut vanished_dirs = Vec::new();
    let mut tree: Tree = found
        .into_iter()
        .flat_map(|f| {
            vanished_dirs.extend(f.vanished_dirs);
            f.entries
        })
        .collect();
    for dir in vanished_dirs {
        tree.remove(&dir);
    }
    Ok(tree)
}

/// A directory's device and inode, as its parent's listing saw them.
type Identity = (u64, u64);

/// The directories still to read, shared by the scan's threads.
struct Queue {
    pending: Vec<(RelPath, Option<Identity>)>,
    /// Threads reading a directory now (and so perhaps about to add more).
    busy: usize,
    failed: Option<crate::error::Error>,
}

struct Walk<'a> {
    rules: RwLock<&'a mut Rules>,
    queue: Mutex<Queue>,
    changed: Condvar,
}

/// What one thread of the scan found.
#[derive(Default)]
struct Found {
    entries: Vec<(RelPath, Entry)>,
    /// Directories gone (or replaced) since their parent was listed, as a tool's temp dir may
    /// be: not part of this snapshot.
    vanished_dirs: Vec<RelPath>,
}

impl Walk<'_> {
    /// Read directories until none is left (or one failed).
    fn work(&self) -> Found {
        let mut found = Found::default();
        while let Some((dir, identity)) = self.next_dir() {
            let read = self.read_dir(&dir, identity, &mut found);
            let mut queue = self.queue.lock().expect("not poisoned");
            queue.busy -= 1;
            match read {
                Ok(subdirs) => queue.pending.extend(subdirs),
                Err(e) => {
                    queue.failed.get_or_insert(e);
                }
            }
            self.changed.notify_all();
        }
        found
    }

    /// The next directory to read; `None` once there is none and no thread can add one.
    fn next_dir(&self) -> Option<(RelPath, Option<Identity>)> {
        let mut queue = self.queue.lock().expect("not poisoned");
        loop {
            if queue.failed.is_some() {
                return None;
            }
            if let Some(dir) = queue.pending.pop() {
                queue.busy += 1;
                return Some(dir);
            }
            if queue.busy == 0 {
                return None;
            }
            queue = self.changed.wait(queue).expect("not poisoned");
        }
    }

    /// Record what `dir` holds; its subdirectories, to be read next. A directory that is no
    /// longer the one its parent listed (`identity`), a symlink put in its place above all, is
    /// not read: it left the snapshot, and nothing outside the project comes in through it.
    fn read_dir(
        &self,
        dir: &RelPath,
        identity: Option<Identity>,
        found: &mut Found,
    ) -> Result<Vec<(RelPath, Option<Identity>)>> {
        let abs = self.rules.read().expect("not poisoned").absolute(dir);
        let (open, entries) = match open_dir_as_listed(&abs, identity) {
            Ok(Some(listed)) => listed,
            Ok(None) => {
                found.vanished_dirs.push(dir.clone());
                return Ok(Vec::new());
            }
            Err(e) if vanished(&e) && !dir.is_empty() => {
                found.vanished_dirs.push(dir.clone());
                return Ok(Vec::new());
            }
            Err(e) => {
                return Err(crate::error::Error::io(
                    format!("cannot read directory {}", abs.display()),
                    e,
                ));
            }
        };
        let entries = entries
            .collect::<std::io::Result<Vec<_>>>()
            .context(|| format!("cannot read directory {}", abs.display()))?;
        // Only a directory that lists a .gitignore has one to read (most have none, and
        // looking costs a path walk each).
        if entries
            .iter()
            .any(|entry| entry.file_name() == ".gitignore")
        {
            self.rules.write().expect("not poisoned").load_dir(dir);
        }
        let rules = self.rules.read().expect("not poisoned");
        let mut subdirs = Vec::new();
        for entry in entries {
            let mut path = dir.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(entry.file_name().as_bytes());
            let Some((kind, meta)) = describe(&entry, &open, &abs)? else {
                continue;
            };
            let is_dir = kind == Kind::Dir;
            if rules.excludes_itself(&path, is_dir) {
                continue;
            }
            if is_dir {
                subdirs.push((path.clone(), Some((meta.dev(), meta.ino()))));
            }
            found.entries.push((
                path,
                Entry {
                    kind,
                    mtime: meta.mtime(),
                    stamp: Some(Stamp {
                        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
                        ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
                        inode: meta.ino(),
                    }),
                    digest: None,
                },
            ));
        }
        Ok(subdirs)
    }
}

/// What a directory entry is, with its metadata; `None` for what a sync leaves alone (special
/// files) or what vanished since it was listed.
fn describe(
    entry: &fs::DirEntry,
    open: &fs::File,
    dir: &std::path::Path,
) -> Result<Option<(Kind, fs::Metadata)>> {
    let shown = || dir.join(entry.file_name()).display().to_string();
    // DirEntry::metadata is an lstat relative to the open directory: no path walk.
    let meta = match entry.metadata() {
        Ok(meta) => meta,
        // Deleted between readdir and stat: it is simply not part of this snapshot.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(crate::error::Error::io(
                format!("cannot stat {}", shown()),
                e,
            ));
        }
    };
    let file_type = meta.file_type();
    let kind = if file_type.is_dir() {
        Kind::Dir
    } else if file_type.is_file() {
        Kind::File {
            size: meta.len(),
            executable: meta.mode() & 0o111 != 0,
        }
    } else if file_type.is_symlink() {
        let target = match read_link_at(open, &entry.file_name()) {
            Ok(target) => target,
            Err(e) if vanished(&e) => return Ok(None),
            Err(e) => {
                return Err(crate::error::Error::io(
                    format!("cannot read link {}", shown()),
                    e,
                ));
            }
        };
        Kind::Symlink { target }
    } else {
        tracing::debug!("skipping special file {}", shown());
        return Ok(None);
    };
    Ok(Some((kind, meta)))
}

/// The entries of the directory at `abs`, opened without following a symlink in its place and
/// listed through that open directory; `None` when it is not the directory `identity` names
/// (replaced since its parent was listed). Only the last component is guarded by O_NOFOLLOW;
/// the identity check covers the rest, since a directory reached through any swapped parent is
/// another directory.
fn open_dir_as_listed(
    abs: &std::path::Path,
    identity: Option<Identity>,
) -> std::io::Result<Option<(fs::File, fs::ReadDir)>> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(abs)
    {
        Ok(dir) => dir,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = dir.metadata()?;
    if identity.is_some_and(|listed| listed != (meta.dev(), meta.ino())) {
        return Ok(None);
    }
    // The open directory itself, by its descriptor: no path is walked again (where there is
    // no /dev/fd, as in a bare chroot, the checked path once more).
    let entries = match fs::read_dir(format!("/dev/fd/{}", dir.as_raw_fd())) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs::read_dir(abs)?,
        listed => listed?,
    };
    Ok(Some((dir, entries)))
}

/// The target of the symlink `name` in the open directory `dir` (readlinkat: no path walk).
fn read_link_at(dir: &fs::File, name: &std::ffi::OsStr) -> std::io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let name = std::ffi::CString::new(name.as_bytes())?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: a valid descriptor, a NUL-terminated name, and a buffer of the length given.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if n as usize == buf.len() {
        return Err(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// The error of reading something that was removed or replaced since it was listed.
fn vanished(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
    ) || error.raw_os_error() == Some(libc::EINVAL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    /// Issue 29 item 11: a directory replaced by a symlink (or reached through a parent that
    /// was) after its parent was listed is not read: nothing outside the project is recorded.
    #[test]
    fn a_directory_swapped_for_a_symlink_mid_scan_leads_nowhere() {
        let project = tempfile::tempdir().unwrap();
        let root = project.path();
        fs::create_dir_all(root.join("d/inner")).unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::create_dir_all(outside.path().join("inner")).unwrap();
        fs::write(outside.path().join("secret.txt"), "s").unwrap();
        fs::write(outside.path().join("inner/secret.txt"), "s").unwrap();
        let mut rules = Rules::new(root, &[]).unwrap();
        let walk = Walk {
            rules: RwLock::new(&mut rules),
            queue: Mutex::new(Queue {
                pending: Vec::new(),
                busy: 0,
                failed: None,
            }),
            changed: Condvar::new(),
        };
        let mut found = Found::default();
        let top = walk.read_dir(&Vec::new(), None, &mut found).unwrap();
        let below_d = walk.read_dir(&b"d".to_vec(), top[0].1, &mut found).unwrap();
        // Now both d and (through d) d/inner lead out of the project.
        fs::rename(root.join("d"), root.join("d-was")).unwrap();
        symlink(outside.path(), root.join("d")).unwrap();
        for (dir, identity) in top.into_iter().chain(below_d) {
            walk.read_dir(&dir, identity, &mut found).unwrap();
        }
        let recorded: Vec<String> = found
            .entries
            .iter()
            .map(|(p, _)| String::from_utf8_lossy(p).into_owned())
            .collect();
        assert!(
            recorded.iter().all(|p| !p.contains("secret")),
            "{recorded:?}"
        );
        assert_eq!(found.vanished_dirs, [b"d".to_vec(), b"d/inner".to_vec()]);
    }

    #[test]
    fn a_nested_gitignore_rules_its_own_subtree_whichever_thread_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in 0..40 {
            fs::create_dir_all(root.join(format!("d{d}/inner"))).unwrap();
            fs::write(root.join(format!("d{d}/inner/keep.txt")), "k").unwrap();
            fs::write(root.join(format!("d{d}/inner/drop.log")), "d").unwrap();
        }
        fs::write(root.join("d7/.gitignore"), "*.log\n").unwrap();
        let tree = scan(&mut Rules::new(root, &[]).unwrap()).unwrap();
        let logs: Vec<_> = tree
            .keys()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .filter(|p| p.ends_with(".log"))
            .collect();
        assert_eq!(logs.len(), 39, "{logs:?}");
        assert!(!logs.contains(&"d7/inner/drop.log".to_string()));
        assert_eq!(tree.len(), 40 * 4 - 1 + 1);
    }

    #[test]
    fn records_kinds_and_leaves_out_ignored_paths() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("src/empty")).unwrap();
        fs::create_dir_all(root.join("target/debug")).unwrap();
        fs::create_dir_all(root.join(".git")).unwrap();
        fs::write(root.join(".gitignore"), "*.o\n").unwrap();
        fs::write(root.join("src/a.o"), "x").unwrap();
        fs::write(root.join("target/debug/bin"), "x").unwrap();
        fs::write(root.join("run.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        symlink("../outside", root.join("src/link")).unwrap();
        let mut rules = Rules::new(root, &["target/".into()]).unwrap();
        let tree = scan(&mut rules).unwrap();
        let paths: Vec<_> = tree
            .keys()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        assert_eq!(
            paths,
            [".gitignore", "run.sh", "src", "src/empty", "src/link"]
        );
        assert_eq!(
            tree[&b"run.sh".to_vec()].kind,
            Kind::File {
                size: 10,
                executable: true
            }
        );
        assert_eq!(
            tree[&b"src/link".to_vec()].kind,
            Kind::Symlink {
                target: b"../outside".to_vec()
            }
        );
    }

    #[test]
    fn directories_and_links_that_vanish_during_a_scan_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        fs::write(root.join("kept.txt"), "k").unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // A tool's temp dir (and a link in it) made and removed over and over, not ignored.
        let churn = {
            let (root, stop) = (root.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let tmp = root.join("tmp-build");
                    for i in 0..20 {
                        let _ = fs::create_dir_all(tmp.join(format!("d{i}/e/f")));
                        let _ = symlink("kept.txt", tmp.join(format!("d{i}/link")));
                    }
                    let _ = fs::remove_dir_all(&tmp);
                }
            })
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut failures = Vec::new();
        while std::time::Instant::now() < deadline {
            if let Err(e) = scan(&mut Rules::new(&root, &[]).unwrap()) {
                failures.push(e.to_string());
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        churn.join().unwrap();
        assert!(
            failures.is_empty(),
            "{} scans failed: {:?}",
            failures.len(),
            failures.first()
        );
    }
}
