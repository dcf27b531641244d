//! Property test: random trees and random edit sequences (add, modify, chmod, delete, rename,
//! file↔dir↔symlink swaps); after every sync the replica equals the local tree minus ignored
//! paths, byte for byte and exec bit for exec bit.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use proptest::prelude::*;

use crate::harness::*;

/// Names drawn from a small pool so edits collide with existing paths often.
const NAMES: &[&str] = &["a", "b", "c d", "é", "x.log", "ign", "k\nl", ".hidden"];

#[derive(Debug, Clone)]
enum Edit {
    Write {
        path: Vec<usize>,
        content: Vec<u8>,
    },
    Chmod {
        path: Vec<usize>,
        executable: bool,
    },
    Delete {
        path: Vec<usize>,
    },
    Rename {
        from: Vec<usize>,
        to: Vec<usize>,
    },
    MakeDir {
        path: Vec<usize>,
    },
    Link {
        path: Vec<usize>,
        target: Vec<usize>,
    },
}

fn path_strategy() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..NAMES.len(), 1..4)
}

fn edit_strategy() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (path_strategy(), prop::collection::vec(any::<u8>(), 0..300)).prop_map(|(path, content)| Edit::Write { path, content }),
        1 => (path_strategy(), any::<bool>()).prop_map(|(path, executable)| Edit::Chmod { path, executable }),
        2 => path_strategy().prop_map(|path| Edit::Delete { path }),
        2 => (path_strategy(), path_strategy()).prop_map(|(from, to)| Edit::Rename { from, to }),
        2 => path_strategy().prop_map(|path| Edit::MakeDir { path }),
        1 => (path_strategy(), path_strategy()).prop_map(|(path, target)| Edit::Link { path, target }),
    ]
}

fn resolve(root: &Path, path: &[usize]) -> std::path::PathBuf {
    path.iter()
        .fold(root.to_path_buf(), |p, &i| p.join(NAMES[i]))
}

fn remove(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path).unwrap(),
        Ok(_) => std::fs::remove_file(path).unwrap(),
        Err(_) => {}
    }
}

/// Make room for `path`: every ancestor must be a real directory.
fn prepare_parent(root: &Path, path: &Path) {
    let mut current = root.to_path_buf();
    for part in path
        .parent()
        .unwrap()
        .strip_prefix(root)
        .unwrap()
        .components()
    {
        current.push(part);
        if !std::fs::symlink_metadata(&current).is_ok_and(|m| m.is_dir()) {
            remove(&current);
            std::fs::create_dir(&current).unwrap();
        }
    }
}

fn apply(root: &Path, edit: &Edit) {
    match edit {
        Edit::Write { path, content } => {
            let path = resolve(root, path);
            prepare_parent(root, &path);
            if std::fs::symlink_metadata(&path).is_ok_and(|m| !m.is_file()) {
                remove(&path);
            }
            std::fs::write(&path, content).unwrap();
        }
        Edit::Chmod { path, executable } => {
            let path = resolve(root, path);
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
                let mode = if *executable { 0o755 } else { 0o644 };
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            }
        }
        Edit::Delete { path } => remove(&resolve(root, path)),
        Edit::Rename { from, to } => {
            let (from, to) = (resolve(root, from), resolve(root, to));
            if std::fs::symlink_metadata(&from).is_err()
                || to.starts_with(&from)
                || from.starts_with(&to)
            {
                return;
            }
            prepare_parent(root, &to);
            remove(&to);
            std::fs::rename(&from, &to).unwrap();
        }
        Edit::MakeDir { path } => {
            let path = resolve(root, path);
            prepare_parent(root, &path);
            if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                remove(&path);
                std::fs::create_dir(&path).unwrap();
            }
        }
        Edit::Link { path, target } => {
            let path = resolve(root, path);
            prepare_parent(root, &path);
            remove(&path);
            let target: Vec<&str> = target.iter().map(|&i| NAMES[i]).collect();
            symlink(target.join("/"), &path).unwrap();
        }
    }
}

/// `*.log` anywhere and `ign/` directories anywhere are ignored (root .gitignore).
fn ignored(path: &[u8]) -> bool {
    path == b".gitignore"
        || path
            .split(|&b| b == b'/')
            .any(|part| part == b"ign" || part.ends_with(b".log"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn replica_converges_after_every_sync(steps in prop::collection::vec(prop::collection::vec(edit_strategy(), 1..8), 1..5)) {
        let sshd = Sshd::start();
        let project = Project::new(&sshd);
        project.write(".gitignore", "*.log\nign/\n");
        for edits in &steps {
            for edit in edits {
                apply(project.root(), edit);
            }
            let out = project.run(&["-q", "sync"]);
            prop_assert!(out.status.success(), "sync failed: {}", stderr(&out));
            let local = snapshot(project.root(), &ignored);
            let remote = replica_snapshot(&project, &ignored);
            prop_assert_eq!(remote, local);
        }
    }
}
