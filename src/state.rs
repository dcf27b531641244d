//! Per-user state: pinned host keys, sync manifests, locks. Lives under the platform data dir, or
//! under `$N10N_DEV_HOME` when set (tests always set it). Directories are 0700, files 0600.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn locate() -> Result<Self> {
        if let Some(home) = std::env::var_os("N10N_DEV_HOME").filter(|v| !v.is_empty()) {
            return Ok(StateDir { root: home.into() });
        }
        let dirs = directories::ProjectDirs::from("dev", "n10n", "n10n-dev").ok_or_else(|| {
            Error::Other(
                "cannot find a home directory for n10n-dev's state; set N10N_DEV_HOME".into(),
            )
        })?;
        Ok(StateDir {
            root: dirs.data_dir().to_path_buf(),
        })
    }

    /// The private directory that holds everything n10n-dev knows about one VM (by its name).
    pub fn vm_dir(&self, vm_name: &str) -> Result<PathBuf> {
        let dir = self.root.join("vms").join(vm_name);
        create_private_dir(&dir)?;
        Ok(dir)
    }
}

pub fn create_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .context(|| format!("cannot create {}", dir.display()))
}

/// Replace `path` with `contents` so that readers see the old file or the new one, never a mix.
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.context(|| format!("cannot write {}", path.display()))
}

/// An exclusive advisory lock held for as long as the value lives.
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Take the lock at `path`, waiting for another n10n-dev process that holds it.
    pub fn acquire(path: &Path) -> Result<Lock> {
        let file = open_lock_file(path)?;
        if file.try_lock().is_err() {
            tracing::info!("waiting for another n10n-dev to release {}", path.display());
            file.lock()
                .context(|| format!("cannot lock {}", path.display()))?;
        }
        Ok(Lock { _file: file })
    }

    /// Take the lock at `path` if nobody holds it; `None` when another process does.
    pub fn try_acquire(path: &Path) -> Result<Option<Lock>> {
        let file = open_lock_file(path)?;
        Ok(file.try_lock().is_ok().then_some(Lock { _file: file }))
    }
}

fn open_lock_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .context(|| format!("cannot open lock file {}", path.display()))
}
