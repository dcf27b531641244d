//! The project's changes that a sync would send, as they happen (`invoke --serve --watch`): the
//! platform's file events (inotify on Linux, FSEvents on macOS, through `notify`) on every
//! directory the sync rules include (so a huge ignored `target/` costs no watch), kept when
//! the rules include the path, and debounced: a burst of saves is one change.

use std::collections::{BTreeSet, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{CreateKind, RemoveKind};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::rules::Rules;
use crate::error::{Error, Result};

/// A change is over when nothing more happened for this long (an editor's save is several
/// events; a `git checkout` is many)…
const QUIET: Duration = Duration::from_millis(150);
/// …or after this long in all, so that a process writing all the time still gets builds.
const LONGEST: Duration = Duration::from_secs(2);

pub struct Watch {
    watcher: RecommendedWatcher,
    /// Each path an event names, and whether the event says it is a directory (one that was
    /// removed can no longer be asked).
    events: mpsc::UnboundedReceiver<(PathBuf, bool)>,
    root: PathBuf,
    exclude: Vec<String>,
    rules: Rules,
    /// Directories whose `.gitignore` the rules have read, and that are watched.
    known: HashSet<Vec<u8>>,
}

impl Watch {
    /// Watch the project at `root`, with `[sync] exclude`.
    pub fn new(root: &Path, exclude: &[String]) -> Result<Watch> {
        // FSEvents names paths as the file system has them (/private/var/… for /var/…).
        let root = root
            .canonicalize()
            .map_err(|e| Error::io(format!("cannot watch {}", root.display()), e))?;
        let (tell, events) = mpsc::unbounded_channel();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            let folder = match event.kind {
                EventKind::Access(_) => return,
                EventKind::Create(CreateKind::Folder) | EventKind::Remove(RemoveKind::Folder) => {
                    true
                }
                _ => false,
            };
            for path in event.paths {
                let _ = tell.send((path, folder));
            }
        })
        .map_err(|e| Error::Other(format!("cannot watch {}: {e}", root.display())))?;
        let mut watch = Watch {
            watcher,
            events,
            rules: Rules::new(&root, exclude)?,
            exclude: exclude.to_vec(),
            root,
            known: HashSet::new(),
        };
        watch.add_tree(b"")?;
        Ok(watch)
    }

    /// Wait for a change a sync would send, then for the burst it begins to end; the paths
    /// changed, relative to the project.
    pub async fn changed(&mut self) -> Vec<String> {
        let mut changed = BTreeSet::new();
        while changed.is_empty() {
            let Some((path, folder)) = self.events.recv().await else {
                return std::future::pending().await;
            };
            changed.extend(self.counted(&path, folder));
        }
        let deadline = Instant::now() + LONGEST;
        let mut quiet_until = Instant::now() + QUIET;
        loop {
            let wait = quiet_until.min(deadline);
            match tokio::time::timeout_at(wait, self.events.recv()).await {
                Ok(Some((path, folder))) => {
                    if let Some(relative) = self.counted(&path, folder) {
                        changed.insert(relative);
                        quiet_until = Instant::now() + QUIET;
                    }
                }
                _ => return changed.into_iter().collect(),
            }
        }
    }

    /// The path relative to the project, when the sync would send it (or remove it from the
    /// replica). A new directory is watched; a changed `.gitignore` is read again.
    fn counted(&mut self, path: &Path, folder: bool) -> Option<String> {
        let relative = path.strip_prefix(&self.root).ok()?;
        let bytes = relative.as_os_str().as_bytes().to_vec();
        if bytes.is_empty() {
            return None;
        }
        if relative.file_name().is_some_and(|n| n == ".gitignore") {
            self.reread_rules();
        }
        let parent = bytes
            .iter()
            .rposition(|&b| b == b'/')
            .map_or(&bytes[..0], |i| &bytes[..i]);
        if !self.known.contains(parent) {
            // Under a directory not watched: an excluded one (an event of its parent's watch).
            return None;
        }
        // Not through a symlink: a link to `/` would have the whole disk watched.
        let is_dir = folder
            || path.symlink_metadata().is_ok_and(|m| m.is_dir())
            || self.known.contains(&bytes);
        if self.rules.is_excluded(&bytes, is_dir) {
            return None;
        }
        if is_dir && !self.known.contains(&bytes) {
            let _ = self.add_tree(&bytes);
        }
        Some(relative.to_string_lossy().into_owned())
    }

    /// Watch `dir` (relative to the root) and every directory under it that the rules include.
    fn add_tree(&mut self, dir: &[u8]) -> Result<()> {
        let mut pending = vec![dir.to_vec()];
        while let Some(dir) = pending.pop() {
            self.rules.load_dir(&dir);
            let absolute = self.rules.absolute(&dir);
            if let Err(e) = self.watcher.watch(&absolute, RecursiveMode::NonRecursive) {
                return Err(Error::Other(format!(
                    "cannot watch {}: {e}{}",
                    absolute.display(),
                    match e.kind {
                        notify::ErrorKind::MaxFilesWatch => {
                            " (raise fs.inotify.max_user_watches, or exclude more in [sync] exclude)"
                        }
                        _ => "",
                    }
                )));
            }
            self.known.insert(dir.clone());
            let Ok(entries) = std::fs::read_dir(&absolute) else {
                continue;
            };
            for entry in entries.flatten() {
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let mut child = dir.clone();
                if !child.is_empty() {
                    child.push(b'/');
                }
                child.extend_from_slice(entry.file_name().as_bytes());
                if !self.rules.is_excluded(&child, true) {
                    pending.push(child);
                }
            }
        }
        Ok(())
    }

    /// A `.gitignore` changed: the rules are read afresh (directories now excluded stay
    /// watched, and their events are dropped by the rules).
    fn reread_rules(&mut self) {
        let Ok(mut rules) = Rules::new(&self.root, &self.exclude) else {
            return;
        };
        for dir in &self.known {
            rules.load_dir(dir);
        }
        self.rules = rules;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_symlink_out_of_the_project_is_a_change_but_not_followed() {
        let project = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(outside.path().join("deep")).unwrap();
        let mut watch = Watch::new(project.path(), &[]).unwrap();
        let next = async |watch: &mut Watch| {
            tokio::time::timeout(Duration::from_secs(10), watch.changed())
                .await
                .expect("a change within 10 s")
        };
        std::os::unix::fs::symlink(outside.path(), project.path().join("link")).unwrap();
        assert_eq!(next(&mut watch).await, ["link"]);
        assert!(!watch.known.contains(b"link".as_slice()));
        // A change out there is none of the project's.
        std::fs::write(outside.path().join("deep/file"), "x").unwrap();
        std::fs::write(project.path().join("marker"), "x").unwrap();
        assert_eq!(next(&mut watch).await, ["marker"]);
    }
}
