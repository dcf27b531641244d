//! Per-user state: pinned host keys, sync manifests, locks. Lives under the platform data dir, or
//! under `$N10N_DEV_HOME` when set (tests always set it). Directories are 0700, files 0600.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
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
        check_private(&self.root)?;
        check_private(&dir)?;
        Ok(dir)
    }
}

/// Refuse a state directory that someone else owns or could write to: it holds pinned host
/// keys, the engine's socket and the kept connection's socket, which must be the user's alone.
/// One of the user's own that others can only read (made with a plain `mkdir`) is closed to
/// them instead: nobody else can have put anything in it.
fn check_private(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = fs::metadata(dir).context(|| format!("cannot read {}", dir.display()))?;
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    let mode = meta.mode() & 0o7777;
    let problem = if !meta.is_dir() {
        "is not a directory".to_string()
    } else if meta.uid() != uid {
        format!("belongs to uid {}, not to you (uid {uid})", meta.uid())
    } else if mode & 0o022 != 0 {
        format!("can be written by other users (mode {mode:o})")
    } else {
        if mode & 0o077 != 0 {
            tracing::debug!("closing {} to other users (mode {mode:o})", dir.display());
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .context(|| format!("cannot chmod 700 {}", dir.display()))?;
        }
        return Ok(());
    };
    Err(Error::Other(format!(
        "n10n-dev's state directory {} {problem}; it holds host keys and sockets that must be \
         yours alone: point N10N_DEV_HOME at a directory of your own, or fix it (`chmod 700`, \
         `chown`) if it is yours",
        dir.display()
    )))
}

pub fn create_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .context(|| format!("cannot create {}", dir.display()))
}

/// Replace `path` with `contents` so that readers see the old file or the new one, never a mix;
/// private to the user (0600).
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    write_atomically_with_mode(path, contents, 0o600)
}

/// As `write_atomically`, with the new file's `mode`.
pub fn write_atomically_with_mode(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let result = (|| {
        let (tmp, mut file) = new_file_beside(path, mode)?;
        let written = file
            .write_all(contents)
            .and_then(|()| file.sync_all())
            .and_then(|()| fs::rename(&tmp, path));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    })();
    result.context(|| format!("cannot write {}", path.display()))
}

/// A new file beside `path` under a temporary name (`<path>.tmp<pid>`), to be renamed over
/// `path` once complete, and its name. It is made anew (O_EXCL, which also refuses a symlink):
/// a link planted under that name in a shared directory is removed, never followed.
pub fn new_file_beside(path: &Path, mode: u32) -> std::io::Result<(PathBuf, File)> {
    let tmp = temporary_beside(path);
    let _ = fs::remove_file(&tmp);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    Ok((tmp, file))
}

/// The temporary name `new_file_beside` uses for `path`.
pub fn temporary_beside(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
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

/// A lock whose holder any other process can name: a POSIX record lock (`fcntl`), for which
/// `F_GETLK` reports the pid that holds it. Held for as long as the value lives. The holding
/// process must not open and close the file otherwise: POSIX drops a process's record locks at
/// the first close of any descriptor of the file.
pub struct PidLock {
    _file: File,
}

impl PidLock {
    /// Take the lock at `path` if nobody holds it; `None` when another process does.
    pub fn try_acquire(path: &Path) -> Result<Option<PidLock>> {
        let file = open_lock_file(path)?;
        let mut lock = whole_file(libc::F_WRLCK);
        // SAFETY: fcntl(2) with a valid descriptor and a flock struct that lives across the call.
        let taken = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &mut lock) } == 0;
        Ok(taken.then_some(PidLock { _file: file }))
    }

    /// The pid of the process that holds the lock at `path` at this moment, if one does.
    pub fn holder(path: &Path) -> Option<u32> {
        let file = OpenOptions::new().read(true).write(true).open(path).ok()?;
        let mut lock = whole_file(libc::F_WRLCK);
        // SAFETY: as above; F_GETLK only reports, it takes nothing.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut lock) } != 0 {
            return None;
        }
        (lock.l_type != libc::F_UNLCK as libc::c_short && lock.l_pid > 0)
            .then_some(lock.l_pid as u32)
    }
}

/// A record lock of `kind` over the whole file.
fn whole_file(kind: libc::c_int) -> libc::flock {
    // SAFETY: flock is plain data; all zero is a valid value (start 0, length 0: to the end).
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock
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
