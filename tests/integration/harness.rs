//! Test harness: a real OpenSSH sshd on 127.0.0.1 with its own host key and authorized_keys,
//! projects in temp dirs, and the built binary run with `N10N_DEV_HOME` in a temp dir.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_n10n-dev");

/// Poll `check` until it returns `Some`, or panic with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, check: impl FnMut() -> Option<T>) -> T {
    wait_for_or_show(what, timeout, check, String::new)
}

/// `wait_for`, whose failure also shows what `show` returns then (a server's log, say).
pub fn wait_for_or_show<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
    show: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}\n{}",
            show()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn run_ok(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn current_user() -> String {
    String::from_utf8(run_ok("id", &["-un"]).stdout)
        .unwrap()
        .trim()
        .to_string()
}

/// A key pair made by ssh-keygen.
pub fn keygen(dir: &Path, name: &str, kind: &str) -> PathBuf {
    let path = dir.join(name);
    let mut args = vec![
        "-q",
        "-t",
        kind,
        "-N",
        "",
        "-C",
        name,
        "-f",
        path.to_str().unwrap(),
    ];
    if kind == "rsa" {
        args.extend(["-b", "2048"]);
    }
    run_ok("ssh-keygen", &args);
    path
}

pub struct Sshd {
    dir: Option<TempDir>,
    pub port: u16,
    pub user: String,
    /// The client key authorised on this server.
    pub identity: PathBuf,
    child: Child,
}

impl Sshd {
    pub fn start() -> Sshd {
        Sshd::start_in(tempfile::tempdir().unwrap(), free_port(), "ed25519")
    }

    /// A server whose sessions get `TMPDIR=tmpdir` (where the sync agent's directory goes).
    pub fn start_with_tmpdir(tmpdir: &Path) -> Sshd {
        Sshd::start_configured(
            tempfile::tempdir().unwrap(),
            free_port(),
            "ed25519",
            &format!(" TMPDIR={}", tmpdir.display()),
        )
    }

    /// A server in `dir` (reusing its host key if there is one) on `port`.
    pub fn start_in(dir: TempDir, port: u16, client_key_kind: &str) -> Sshd {
        Sshd::start_configured(dir, port, client_key_kind, "")
    }

    fn start_configured(dir: TempDir, port: u16, client_key_kind: &str, more_env: &str) -> Sshd {
        let root = dir.path();
        if !root.join("host_key").exists() {
            keygen(root, "host_key", "ed25519");
        }
        let identity = root.join(format!("id_{client_key_kind}"));
        if !identity.exists() {
            keygen(root, &format!("id_{client_key_kind}"), client_key_kind);
        }
        let public = std::fs::read_to_string(identity.with_extension("pub")).unwrap();
        std::fs::write(root.join("authorized_keys"), public).unwrap();
        let user = current_user();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {root}/host_key\nAuthorizedKeysFile {root}/authorized_keys\n\
             PidFile {root}/sshd.pid\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             UsePAM no\nPermitRootLogin prohibit-password\nLogLevel ERROR\nMaxSessions 50\nMaxStartups 50\n\
             SetEnv HOME={root}/home{more_env}\n",
            root = root.display()
        );
        std::fs::write(root.join("sshd_config"), config).unwrap();
        // Sessions get a home of their own, so what the tool leaves in `~` stays in the test.
        std::fs::create_dir_all(root.join("home")).unwrap();
        if user == "root" {
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(root.join("sshd_config"))
            .stderr(std::fs::File::create(root.join("sshd.log")).unwrap())
            .spawn()
            .expect("start /usr/sbin/sshd (apt-get install openssh-server)");
        let mut sshd = Sshd {
            dir: Some(dir),
            port,
            user,
            identity,
            child,
        };
        wait_for(
            "sshd to accept connections",
            Duration::from_secs(20),
            || {
                if let Ok(Some(status)) = sshd.child.try_wait() {
                    panic!(
                        "sshd exited with {status}: {}",
                        std::fs::read_to_string(sshd.path().join("sshd.log")).unwrap_or_default()
                    );
                }
                TcpStream::connect(("127.0.0.1", sshd.port)).ok()
            },
        );
        sshd
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("running").path()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server said, and whether it still runs: for a test's failure message.
    pub fn report(&mut self) -> String {
        let log = std::fs::read_to_string(self.path().join("sshd.log")).unwrap_or_default();
        format!("sshd {:?}, its log:\n{log}", self.child.try_wait())
    }

    /// Every process this server started (its per-connection sshd processes and their sessions).
    pub fn descendants(&self) -> Vec<u32> {
        let mut found = Vec::new();
        let mut frontier = vec![self.pid()];
        while let Some(pid) = frontier.pop() {
            let out = Command::new("pgrep")
                .args(["-P", &pid.to_string()])
                .output()
                .unwrap();
            for child in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let child: u32 = child.parse().unwrap();
                found.push(child);
                frontier.push(child);
            }
        }
        found
    }

    /// Send `signal` to this server's per-connection sshd processes (not the session commands).
    pub fn signal_connections(&self, signal_name: &str) {
        for pid in self.descendants() {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim().starts_with("sshd") {
                signal(pid, signal_name);
            }
        }
    }

    /// Freeze the whole server as a laptop's sleep freezes a VM: its listener (the kernel still
    /// accepts a new connection, which then waits) and every connection.
    pub fn freeze(&self) {
        signal(self.child.id(), "STOP");
        self.signal_connections("STOP");
    }

    pub fn thaw(&self) {
        self.signal_connections("CONT");
        signal(self.child.id(), "CONT");
    }

    /// Stop the server and every connection, keeping its directory (and host key).
    pub fn kill(mut self) -> TempDir {
        self.signal_connections("KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.dir.take().expect("running")
    }
}

/// `kill -SIGNAL PID`.
fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status();
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.thaw();
        self.signal_connections("KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A project directory configured for the ssh backend against `sshd`, with its own state dir
/// and its own replica directory.
pub struct Project {
    pub dir: TempDir,
    pub home: TempDir,
    pub remote: TempDir,
    /// In kept mode, the forwarder the test started (ended by its pid on drop).
    forwarder: Option<std::process::Child>,
}

impl Project {
    pub fn new(sshd: &Sshd) -> Project {
        Project::with_config(sshd, "")
    }

    /// `extra` is appended to the generated n10n-dev.toml.
    pub fn with_config(sshd: &Sshd, extra: &str) -> Project {
        let mut project = Project {
            dir: tempfile::tempdir().unwrap(),
            home: tempfile::tempdir().unwrap(),
            remote: tempfile::tempdir().unwrap(),
            forwarder: None,
        };
        project.write_config(sshd.port, &sshd.user, &sshd.identity, extra);
        // The user's own config: replicas may go in the test's "remote" directory.
        std::fs::write(
            project.user_config(),
            format!(
                "[sync]\nroots = [\"{}\"]\n",
                project.remote.path().display()
            ),
        )
        .unwrap();
        if kept_mode() {
            project.start_forwarder();
        }
        project
    }

    /// The forwarder `up` would start, started directly (no sync, no provisioning), so that
    /// every later command goes through its kept connection.
    fn start_forwarder(&mut self) {
        let child = self
            .cmd(&["forwarder"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.forwarder = Some(child);
        let status = self.home.path().join("vms/test-vm/forwarder.json");
        wait_for("the forwarder to connect", Duration::from_secs(20), || {
            let text = std::fs::read_to_string(&status).ok()?;
            text.contains("\"connected\": true").then_some(())
        });
    }

    pub fn write_config(&self, port: u16, user: &str, identity: &Path, extra: &str) {
        // The loopback sshd's "machine" is this host: a forwarder following its ports would
        // bind ports other tests' servers just freed (an sshd being restarted found its port
        // taken). Dynamic ports are tested on the real VM.
        let no_auto_ports = match extra.contains("[forward]") {
            true => "",
            false => "\n[forward]\nauto = false\n",
        };
        let config = format!(
            "[vm]\nbackend = \"ssh\"\nname = \"test-vm\"\n\n[ssh]\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"{user}\"\n\
             identity = \"{}\"\n\n[sync]\ndest = \"{}\"\n{extra}{no_auto_ports}",
            identity.display(),
            self.replica().display()
        );
        std::fs::write(self.dir.path().join("n10n-dev.toml"), config).unwrap();
    }

    /// Point the written config's `[sync] dest` at `dest` instead of this project's replica;
    /// the user's own config lets replicas go in the directory an absolute `dest` is in, so
    /// that what is tried is the check on the machine.
    pub fn set_dest(&self, dest: &str) {
        let path = self.root().join("n10n-dev.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let ours = format!("dest = \"{}\"\n", self.replica().display());
        assert!(text.contains(&ours), "no dest line to replace in {text}");
        std::fs::write(&path, text.replace(&ours, &format!("dest = \"{dest}\"\n"))).unwrap();
        if let Some(parent) = Path::new(dest).parent().filter(|_| dest.starts_with('/')) {
            std::fs::write(
                self.user_config(),
                format!(
                    "[sync]\nroots = [\"{}\", \"{}\"]\n",
                    self.remote.path().display(),
                    parent.display()
                ),
            )
            .unwrap();
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The user's own config file the commands read (`N10N_DEV_CONFIG`).
    pub fn user_config(&self) -> PathBuf {
        self.home.path().join("user-config.toml")
    }

    /// Where the replica lands (sshd runs on this machine, so the test can look at it directly).
    pub fn replica(&self) -> PathBuf {
        self.remote.path().join("replica")
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(self.root())
            .env("N10N_DEV_HOME", self.home.path())
            .env("N10N_DEV_CONFIG", self.user_config())
            // `up` makes a Docker context: in the test's own Docker config, not the user's.
            .env("DOCKER_CONFIG", self.home.path().join("docker-config"))
            .env_remove("N10N_DEV_BACKEND")
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Run and expect success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "n10n-dev {args:?} failed with {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn write(&self, path: &str, contents: &str) {
        let path = self.root().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
}

/// `N10N_TEST_KEPT=1`: every project gets a forwarder first, so the commands under test go
/// through its kept connection (`.ci/run` runs the run, shell, sync and image tests this way
/// too).
pub fn kept_mode() -> bool {
    std::env::var_os("N10N_TEST_KEPT").is_some_and(|v| v == "1")
}

impl Drop for Project {
    fn drop(&mut self) {
        if let Some(mut forwarder) = self.forwarder.take() {
            let _ = forwarder.kill();
            let _ = forwarder.wait();
        }
    }
}

/// For a test of the direct connection itself (refusal, host keys): a kept connection made
/// before the change would carry the command, as OpenSSH's ControlMaster would.
pub fn direct_only() -> bool {
    if kept_mode() {
        eprintln!("a test of the direct connection: nothing to check in kept mode");
    }
    kept_mode()
}

/// `out` ended with exit code `code` and said `needle` on stderr.
pub fn assert_exit_saying(out: &Output, code: i32, needle: &str) {
    let said = stderr(out);
    assert_eq!(out.status.code(), Some(code), "{said}");
    assert!(
        said.contains(needle),
        "expected {needle:?} on stderr: {said}"
    );
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Processes whose command line contains `needle`.
pub fn processes_matching(needle: &str) -> Vec<u32> {
    let out = Command::new("pgrep").args(["-f", needle]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File { content: Vec<u8>, executable: bool },
    Dir,
    Link(Vec<u8>),
}

/// Everything under `root` (paths as bytes), without following links, except what `skip` says.
pub fn snapshot(
    root: &Path,
    skip: &dyn Fn(&[u8]) -> bool,
) -> std::collections::BTreeMap<Vec<u8>, Node> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let mut found = std::collections::BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let rel = entry
                .path()
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            if skip(&rel) {
                continue;
            }
            let meta = std::fs::symlink_metadata(entry.path()).unwrap();
            let node = if meta.file_type().is_symlink() {
                Node::Link(
                    std::fs::read_link(entry.path())
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                )
            } else if meta.is_dir() {
                pending.push(entry.path());
                Node::Dir
            } else {
                Node::File {
                    content: std::fs::read(entry.path()).unwrap(),
                    executable: meta.permissions().mode() & 0o100 != 0,
                }
            };
            found.insert(rel, node);
        }
    }
    found
}

/// The replica as it is: n10n-dev keeps its own files beside it, so nothing is left out.
pub fn replica_snapshot(
    project: &Project,
    skip: &dyn Fn(&[u8]) -> bool,
) -> std::collections::BTreeMap<Vec<u8>, Node> {
    snapshot(&project.replica(), skip)
}

/// n10n-dev run in the project at `dir`, its state in `dir/.state`, stdin empty: for projects
/// without an sshd (native, or a backend that is never reached).
pub fn command_in(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .current_dir(dir)
        .env("N10N_DEV_HOME", dir.join(".state"))
        .env_remove("N10N_DEV_BACKEND")
        .stdin(Stdio::null());
    command
}

/// Where the sync agent of the replica at `root` listens, under `tmp` (the sessions' TMPDIR):
/// named by the replica and the user's groups, as `sync::remote` names it.
pub fn agent_socket(tmp: &Path, root: &Path) -> PathBuf {
    let groups = run_ok(
        "sh",
        &[
            "-c",
            &format!(
                "printf '%s %s' '{}' \"$(id -G \"$(id -un)\")\" | cksum | cut -d ' ' -f 1",
                root.display()
            ),
        ],
    );
    let uid = String::from_utf8(run_ok("id", &["-u"]).stdout).unwrap();
    tmp.join(format!("n10n-dev-{}", uid.trim())).join(format!(
        "agent-v6-{}.sock",
        String::from_utf8(groups.stdout).unwrap().trim()
    ))
}

impl Project {
    /// Wait until a sync under way has staged more than 1 MB of `name` beside the replica: in
    /// `.replica.n10n-dev/staging.*`, or (a first sync into an empty replica) in
    /// `.replica.n10n-dev.new.*`.
    pub fn wait_for_staged(&self, name: &str) {
        let meta = self.replica().with_file_name(".replica.n10n-dev");
        let staging_dirs = |dir: &Path, prefix: &str| -> Vec<PathBuf> {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .map(|e| e.path())
                .collect()
        };
        wait_for(
            &format!("part of {name} to be staged"),
            Duration::from_secs(60),
            || {
                let mut staged = staging_dirs(&meta, "staging.");
                staged.extend(staging_dirs(
                    self.replica().parent()?,
                    ".replica.n10n-dev.new.",
                ));
                staged
                    .iter()
                    .any(|dir| std::fs::metadata(dir.join(name)).is_ok_and(|m| m.len() > 1_000_000))
                    .then_some(())
            },
        );
    }
}

/// `n10n-dev run --no-sync -- sleep SECONDS` (SECONDS unique per test, so the remote process
/// can be found), seen running on the "remote"; that sleep is killed when this is dropped.
pub struct RemoteSleep {
    pub child: Child,
    pub pattern: String,
}

impl Project {
    pub fn spawn_remote_sleep(&self, seconds: u32) -> RemoteSleep {
        let child = self
            .cmd(&["run", "--no-sync", "--", "sleep", &seconds.to_string()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pattern = format!("^sleep {seconds}$");
        wait_for("the remote sleep to start", Duration::from_secs(20), || {
            (!processes_matching(&pattern).is_empty()).then_some(())
        });
        RemoteSleep { child, pattern }
    }

    /// Sync, and expect it to find nothing to do.
    pub fn assert_up_to_date(&self) {
        let out = self.run(&["sync"]);
        assert!(
            stderr(&out).starts_with("sync: up to date"),
            "{}",
            stderr(&out)
        );
    }
}

impl Drop for RemoteSleep {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = Command::new("pkill").args(["-f", &self.pattern]).status();
    }
}

/// Run `cmd` with `input` on its stdin (then EOF), collecting stdout and stderr.
pub fn output_with_stdin(mut cmd: Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

pub fn require_docker() {
    let answers = Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        answers.is_ok_and(|s| s.success()),
        "these tests need a Docker engine: .ci/run starts `dockerd --bridge=none --iptables=false`"
    );
}

/// A project directory of its own whose n10n-dev.toml is `config`.
pub fn project_dir(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("n10n-dev.toml"), config).unwrap();
    dir
}
