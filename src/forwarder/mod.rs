//! The per-VM forwarder: a detached process (like Lima's hostagent) that holds one SSH
//! connection to the machine, serves the machine's Docker engine on a Unix socket here
//! (`<state>/vms/<name>/docker.sock`), follows the machine's listening and Docker-published TCP
//! ports onto this machine's loopback, and reconnects by itself when the connection drops. `up` starts it,
//! `stop` and `destroy` end it; its pidfile, log and status live beside the socket.

mod ports;
mod published;
pub mod serve;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// macOS's `sun_path` holds 104 bytes, the terminating NUL included.
const MAX_SOCKET_PATH: usize = 103;
/// How long `up` waits for a new forwarder to serve the engine.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// Where one VM's forwarder keeps its things.
#[derive(Debug, Clone)]
pub struct Paths {
    pub socket: PathBuf,
    /// The kept connection's socket, for n10n-dev's own commands.
    pub kept: PathBuf,
    pub pidfile: PathBuf,
    pub log: PathBuf,
    pub status: PathBuf,
    pub lock: PathBuf,
    /// The machine's ports n10n-dev's own remote forwards hold (see `own_ports`): not followed.
    pub own_ports: PathBuf,
}

impl Paths {
    pub fn in_dir(vm_dir: &Path) -> Paths {
        Paths {
            socket: vm_dir.join("docker.sock"),
            kept: vm_dir.join("ssh.sock"),
            pidfile: vm_dir.join("forwarder.pid"),
            log: vm_dir.join("forwarder.log"),
            status: vm_dir.join("forwarder.json"),
            lock: vm_dir.join("forwarder.lock"),
            own_ports: vm_dir.join("own-ports"),
        }
    }

    /// The socket path fits a Unix socket address on every host n10n-dev runs on.
    pub fn check_length(&self) -> Result<()> {
        let length = self.socket.as_os_str().len();
        if length > MAX_SOCKET_PATH {
            return Err(Error::Config(format!(
                "the engine socket would be {} ({length} bytes), longer than the {MAX_SOCKET_PATH} \
                 bytes a Unix socket path may have on macOS: set N10N_DEV_HOME to a shorter \
                 directory (e.g. N10N_DEV_HOME=~/.n10n), or give the VM a shorter [vm] name",
                self.socket.display()
            )));
        }
        Ok(())
    }
}

/// What the forwarder reports about itself (`forwarder.json`), for `status` and `ports`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    pub connected: bool,
    pub endpoint: String,
    /// Unix seconds of the last change of `connected`.
    pub since: i64,
    pub last_error: Option<String>,
    pub reconnects: u32,
    /// How many times a new connection took over on request while the old one drained.
    #[serde(default)]
    pub renewals: u32,
    /// How many sessions of n10n-dev's own commands went through the kept connection.
    #[serde(default)]
    pub kept_sessions: u64,
    pub ports: Vec<Forwarded>,
    pub skipped: Vec<Skipped>,
}

/// A port served here and relayed to the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forwarded {
    /// `127.0.0.1:8080`, `[::1]:8080`, `0.0.0.0:8080`.
    pub host: String,
    /// `127.0.0.1:80` as the machine sees it.
    pub guest: String,
    /// "auto" (a listening socket in the machine), "docker" (a port the machine's Docker
    /// publishes) or "static" (`[forward] ports`).
    pub source: String,
}

/// A port of the machine that is not forwarded, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub port: u16,
    pub why: String,
}

impl Status {
    pub fn read(paths: &Paths) -> Option<Status> {
        let text = std::fs::read_to_string(&paths.status).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// The forwarder's process, when one runs: the pid that holds the forwarder's lock, as the lock
/// itself names it (never the pidfile's word, nor "someone holds it": a pid in a file may
/// belong to any process by now). A pidfile left by one that is gone is removed.
pub fn running_pid(paths: &Paths) -> Option<u32> {
    let holder = crate::state::PidLock::holder(&paths.lock);
    if holder.is_none() && paths.pidfile.exists() {
        tracing::debug!("stale forwarder pidfile (its lock is free): removed");
        let _ = std::fs::remove_file(&paths.pidfile);
    }
    holder
}

/// Whether the engine answers through the socket (`GET /_ping` → `OK`), within `timeout`.
pub fn engine_answers(socket: &Path, timeout: Duration) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let request = b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n";
    if stream.write_all(request).is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = stream.take(4096).read_to_end(&mut answer);
    answer.starts_with(b"HTTP/1.1 200") && answer.ends_with(b"OK")
}

/// How `ensure` left things.
#[derive(Debug, PartialEq, Eq)]
pub enum Serving {
    /// The engine answers through the socket.
    Engine,
    /// The forwarder is connected, but the machine's engine does not answer (no Docker yet,
    /// or not allowed to the SSH user).
    NoEngine,
}

/// Make sure a healthy forwarder serves the engine: leave one that answers alone; else start
/// one (ending one that runs but does not answer) and wait until the engine answers through it,
/// or until it is connected and the engine does not.
pub fn ensure(paths: &Paths, project_root: &Path) -> Result<Serving> {
    paths.check_length()?;
    // Two commands that find no healthy forwarder at once must not both start (or renew)
    // one: the second waits, then finds the first one's.
    let _one_at_a_time = crate::state::Lock::acquire(&paths.lock.with_file_name("ensure.lock"))?;
    if engine_answers(&paths.socket, Duration::from_secs(2)) {
        return Ok(Serving::Engine);
    }
    if running_pid(paths).is_some() {
        // Alive but not serving: connected before provisioning gave the docker group, or
        // stuck. Asked to connect afresh, it keeps what goes through it; one that does not
        // answer is replaced.
        if renew(paths) && engine_answers(&paths.socket, Duration::from_secs(5)) {
            return Ok(Serving::Engine);
        }
        stop(paths);
    }
    spawn(paths, project_root)?;
    let deadline = Instant::now() + START_DEADLINE;
    while Instant::now() < deadline {
        if engine_answers(&paths.socket, Duration::from_secs(2)) {
            return Ok(Serving::Engine);
        }
        if running_pid(paths).is_some() && Status::read(paths).is_some_and(|s| s.connected) {
            return Ok(
                match engine_answers(&paths.socket, Duration::from_secs(5)) {
                    true => Serving::Engine,
                    false => Serving::NoEngine,
                },
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let said = Status::read(paths)
        .and_then(|s| s.last_error)
        .unwrap_or_else(|| "no word from it".into());
    Err(Error::Other(format!(
        "the forwarder did not connect to the VM within {} s ({said}); its log: {}",
        START_DEADLINE.as_secs(),
        paths.log.display()
    )))
}

/// Start the forwarder for the project at `project_root`, detached: its own session and
/// process group, output to its log.
fn spawn(paths: &Paths, project_root: &Path) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| Error::io("cannot find n10n-dev itself", e))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&paths.log)
        .map_err(|e| Error::io(format!("cannot open {}", paths.log.display()), e))?;
    let err = log
        .try_clone()
        .map_err(|e| Error::io(format!("cannot open {}", paths.log.display()), e))?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("-C")
        .arg(project_root)
        .arg("forwarder")
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(err);
    // SAFETY: setsid is async-signal-safe; it only detaches the child from our terminal and
    // session, so that Ctrl-C or closing the terminal does not end the forwarder.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    command
        .spawn()
        .map_err(|e| Error::io("cannot start the forwarder", e))?;
    Ok(())
}

/// Ask the running forwarder to make a new connection for new channels (one that logs in
/// afresh, with the user's new groups) while the old one carries what it carries until its
/// last channel closes. Whether it did, within `START_DEADLINE`; `false` when none runs or
/// it did not answer (a forwarder of an older n10n-dev ends on the signal).
pub fn renew(paths: &Paths) -> bool {
    let Some(pid) = running_pid(paths) else {
        return false;
    };
    let before = Status::read(paths).map_or(0, |s| s.renewals);
    // SAFETY: plain kill(2) of the pid the forwarder wrote, which holds its lock.
    if unsafe { libc::kill(pid as libc::pid_t, libc::SIGUSR1) } != 0 {
        return false;
    }
    let deadline = Instant::now() + START_DEADLINE;
    while Instant::now() < deadline {
        if running_pid(paths) != Some(pid) {
            return false;
        }
        if Status::read(paths).is_some_and(|s| s.renewals > before && s.connected) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// End the forwarder, if one runs, and remove its socket.
pub fn stop(paths: &Paths) {
    if let Some(pid) = running_pid(paths) {
        // SAFETY: plain kill(2) of the pid that holds the forwarder's lock.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while running_pid(paths) == Some(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if running_pid(paths) == Some(pid) {
            // SAFETY: as above; the same pid still holds the lock: it did not stop in time.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
    remove_socket(&paths.socket);
    remove_socket(&paths.kept);
    let _ = std::fs::remove_file(&paths.pidfile);
    let _ = std::fs::remove_file(&paths.status);
}

/// Remove `path` if it is a socket (never anything else).
fn remove_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_path_too_long_for_macos_names_n10n_dev_home() {
        let long = PathBuf::from(format!("/{}", "x".repeat(100)));
        let e = Paths::in_dir(&long).check_length().unwrap_err();
        assert!(
            e.is_usage() && e.to_string().contains("N10N_DEV_HOME"),
            "{e}"
        );
        assert!(
            Paths::in_dir(Path::new("/home/u/.n10n/vms/x"))
                .check_length()
                .is_ok()
        );
    }
}
