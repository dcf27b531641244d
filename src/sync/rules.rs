//! Which paths the replica leaves out: `.gitignore` files (nested ones too, as git reads them),
//! `.git/info/exclude`, the user's global excludes, `[sync] exclude`, and `.git` itself.
//!
//! The same rules decide both what the local walk sends and which remote paths are someone
//! else's (build output under an ignored path) and must be left alone.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::error::{Error, Result};

pub struct Rules {
    root: PathBuf,
    /// `[sync] exclude`: always wins.
    configured: Gitignore,
    /// `.gitignore` per directory, keyed by its path relative to the root ("" for the root).
    per_dir: HashMap<Vec<u8>, Gitignore>,
    /// `.gitignore` files of directories above the root, up to the git work-tree root, nearest first.
    above: Vec<Gitignore>,
    info_exclude: Gitignore,
    global: Gitignore,
}

impl Rules {
    pub fn new(root: &Path, exclude: &[String]) -> Result<Rules> {
        let mut builder = GitignoreBuilder::new(root);
        for pattern in exclude {
            builder.add_line(None, pattern).map_err(|e| {
                Error::Config(format!(
                    "[sync] exclude: invalid pattern \"{pattern}\": {e}"
                ))
            })?;
        }
        let configured = builder
            .build()
            .map_err(|e| Error::Config(format!("[sync] exclude: {e}")))?;
        let git_root = root.ancestors().find(|dir| dir.join(".git").exists());
        let above = match git_root {
            Some(git_root) if git_root != root => root
                .ancestors()
                .skip(1)
                .take_while(|dir| dir.starts_with(git_root))
                .filter_map(|dir| load_gitignore(dir, &dir.join(".gitignore")))
                .collect(),
            _ => Vec::new(),
        };
        let info_exclude = git_root
            .and_then(|dir| load_gitignore(dir, &dir.join(".git/info/exclude")))
            .unwrap_or_else(Gitignore::empty);
        Ok(Rules {
            root: root.to_path_buf(),
            configured,
            per_dir: HashMap::new(),
            above,
            info_exclude,
            global: Gitignore::global().0,
        })
    }

    /// Read `dir/.gitignore` (dir relative to the root) if there is one; called by the walk.
    pub fn load_dir(&mut self, dir: &[u8]) {
        let abs = self.absolute(dir);
        if let Some(gitignore) = load_gitignore(&abs, &abs.join(".gitignore")) {
            self.per_dir.insert(dir.to_vec(), gitignore);
        }
    }

    /// Is this path, or any directory above it, left out of the replica?
    pub fn is_excluded(&self, path: &[u8], is_dir: bool) -> bool {
        let mut end = 0;
        while let Some(slash) = path[end..].iter().position(|&b| b == b'/') {
            end += slash;
            if self.excludes_itself(&path[..end], true) {
                return true;
            }
            end += 1;
        }
        self.excludes_itself(path, is_dir)
    }

    /// The decision for one path, assuming its parents are included.
    pub fn excludes_itself(&self, path: &[u8], is_dir: bool) -> bool {
        let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
        // The archive's operations list travels under this root name.
        if name == b".git" || path == super::remote::OPS.as_bytes() {
            return true;
        }
        let abs = self.absolute(path);
        if !self.configured.is_empty() && self.configured.matched(&abs, is_dir).is_ignore() {
            return true;
        }
        // Nearest .gitignore first; a later match in a deeper file overrides a shallower one.
        let mut dir: &[u8] = path;
        loop {
            dir = match dir.iter().rposition(|&b| b == b'/') {
                Some(i) => &dir[..i],
                None if dir.is_empty() => break,
                None => b"",
            };
            if let Some(gitignore) = self.per_dir.get(dir) {
                match gitignore.matched(&abs, is_dir) {
                    Match::Ignore(_) => return true,
                    Match::Whitelist(_) => return false,
                    Match::None => {}
                }
            }
            if dir.is_empty() {
                break;
            }
        }
        let outer = self.above.iter().chain([&self.info_exclude, &self.global]);
        for gitignore in outer.filter(|g| !g.is_empty()) {
            match gitignore.matched(&abs, is_dir) {
                Match::Ignore(_) => return true,
                Match::Whitelist(_) => return false,
                Match::None => {}
            }
        }
        false
    }

    pub fn absolute(&self, path: &[u8]) -> PathBuf {
        if path.is_empty() {
            self.root.clone()
        } else {
            self.root.join(OsStr::from_bytes(path))
        }
    }
}

fn load_gitignore(dir: &Path, file: &Path) -> Option<Gitignore> {
    if !file.is_file() {
        return None;
    }
    let mut builder = GitignoreBuilder::new(dir);
    if let Some(e) = builder.add(file) {
        tracing::warn!("{}: {e}", file.display());
    }
    builder.build().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_gitignores_and_excludes_combine() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::write(root.join(".gitignore"), "*.log\nbuild/\n").unwrap();
        std::fs::write(root.join("sub/.gitignore"), "!keep.log\n*.tmp\n").unwrap();
        let mut rules = Rules::new(root, &["node_modules/".into()]).unwrap();
        rules.load_dir(b"");
        rules.load_dir(b"sub");
        assert!(rules.is_excluded(b"a.log", false));
        assert!(!rules.is_excluded(b"sub/keep.log", false));
        assert!(rules.is_excluded(b"sub/other.log", false));
        assert!(rules.is_excluded(b"sub/x.tmp", false));
        assert!(!rules.is_excluded(b"x.tmp", false));
        assert!(rules.is_excluded(b"build/out/bin", false));
        assert!(rules.is_excluded(b"sub/node_modules/x/y.js", false));
        assert!(rules.is_excluded(b".git", true));
        assert!(rules.is_excluded(b"sub/.git/config", false));
        assert!(rules.is_excluded(b".n10n-dev-ops", false));
        assert!(!rules.is_excluded(b".n10n-dev-replica", false));
        assert!(!rules.is_excluded(b"sub/.n10n-dev-ops", false));
        assert!(!rules.is_excluded(b"src/main.rs", false));
    }
}
