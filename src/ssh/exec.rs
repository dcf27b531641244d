//! Remote commands that behave as if local: stdout and stderr stream separately as produced, stdin
//! is forwarded (with EOF), the exit code comes back (128+N for signal N), and a Ctrl-C or SIGTERM
//! to n10n-dev stops the whole remote process group.
//!
//! OpenSSH's "signal" channel request reaches only the session's top process, so instead the remote
//! wrapper announces its PID (which is also its process-group id: sshd runs each session in its own
//! session) as the first line of stderr, and signals are delivered with `kill -SIG -- -PGID` over a
//! second channel of the same connection.

use std::ffi::OsString;
use std::io::Write;
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::Duration;

use std::collections::VecDeque;

use russh::client::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Sig};
use tokio::io::AsyncReadExt;

use super::{Session, quote};
use crate::error::{Error, Result};

const PID_MARKER: &[u8] = b"n10n-pid:";
/// After forwarding a signal, how long the remote command gets to exit before it is killed.
const GRACE: Duration = Duration::from_secs(10);
/// How much of local stdin one read may take (two SSH packets' worth).
const STDIN_READ: usize = 64 * 1024;

/// The process exit code n10n-dev should end with.
pub type ExitCode = i32;

/// A command line to run on the remote, in a directory, with extra environment.
#[derive(Debug, Clone)]
pub struct RemoteCommand {
    /// The replica (`~/…` is the remote home); created when missing.
    pub dir: String,
    /// Where to run instead, relative to `dir` (or absolute, or `~/…`); it must exist: a
    /// missing one ends the command with 255 and is never created in the replica.
    pub workdir: Option<String>,
    pub env: Vec<(String, String)>,
    /// The command and its arguments; empty for a login shell.
    pub argv: Vec<OsString>,
}

impl RemoteCommand {
    /// What the agent's run mode reads (see `scripts/agent.pl`): NUL-separated fields, the
    /// replica, the workdir (empty: none), the number of variables, `KEY=VALUE`s, the argv.
    /// The values travel in the stream, never on a command line.
    fn agent_request(&self) -> Result<Vec<u8>> {
        let mut fields: Vec<&[u8]> = vec![
            self.dir.as_bytes(),
            self.workdir.as_deref().unwrap_or("").as_bytes(),
        ];
        let count = self.env.len().to_string();
        fields.push(count.as_bytes());
        let pairs: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        fields.extend(pairs.iter().map(|pair| pair.as_bytes()));
        fields.extend(self.argv.iter().map(|arg| arg.as_bytes()));
        if fields.iter().any(|field| field.contains(&0)) {
            return Err(Error::Usage(
                "a NUL byte in the directory, the environment or the command cannot be passed on"
                    .into(),
            ));
        }
        Ok(fields.join(&0u8))
    }

    /// The line handed to the remote login shell. It prints its PID, then becomes a login shell
    /// (so PATH has what ~/.profile adds, such as rustup's), changes directory and execs the command.
    /// The environment's values are not in it (a command line shows in every user's `ps`): they
    /// wait in `env_file` (see `Session::stage_env`), which the line reads and removes.
    pub(super) fn script(&self, env_file: Option<&str>) -> String {
        let dir = quote::quote_path(&self.dir);
        let mut inner = String::new();
        if let Some(file) = env_file {
            let file = quote::quote(file.as_bytes());
            inner.push_str(&format!(". {file} && rm -f -- {file} && "));
        }
        inner.push_str(&format!("mkdir -p -- {dir} && cd -- {dir}"));
        if let Some(workdir) = &self.workdir {
            let path = match workdir.starts_with('/') || workdir.starts_with('~') {
                true => quote::quote_path(workdir),
                false => quote::quote(workdir.as_bytes()),
            };
            let said = quote::quote(workdir.as_bytes());
            inner.push_str(&format!(
                " && {{ cd -- {path} 2>/dev/null || {{ printf 'n10n-dev: -w %s: no such directory in the replica\\n' {said} >&2; exit 255; }}; }}"
            ));
        }
        if self.argv.is_empty() {
            inner.push_str(" && exec \"${SHELL:-/bin/sh}\" -l");
        } else {
            inner.push_str(&format!(" && exec {}", quote::join(&self.argv)));
        }
        format!(
            "printf '{}%s\\n' \"$$\" >&2; exec \"${{SHELL:-/bin/sh}}\" -lc {}",
            String::from_utf8_lossy(PID_MARKER),
            quote::quote(inner.as_bytes())
        )
    }
}

/// Standard output or error of this process, written with plain `write(2)` calls: no line
/// buffering and no hop through a blocking thread, so 32 KiB packets pass straight through.
pub(super) fn raw_fd(fd: i32) -> ManuallyDrop<std::fs::File> {
    // SAFETY: fds 1 and 2 stay open for the life of the process; ManuallyDrop never closes them.
    ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Strips the PID announcement from the front of the remote stderr.
#[derive(Default)]
struct PidLine {
    buffer: Vec<u8>,
    done: bool,
    pid: Option<u32>,
}

impl PidLine {
    /// For a stream that carries no PID line (the agent sends the PID apart).
    fn absent() -> PidLine {
        PidLine {
            done: true,
            ..PidLine::default()
        }
    }

    /// Feed stderr bytes; returns the bytes to show the user.
    fn feed(&mut self, data: &[u8]) -> Vec<u8> {
        if self.done {
            return data.to_vec();
        }
        self.buffer.extend_from_slice(data);
        let Some(end) = self.buffer.iter().position(|&b| b == b'\n') else {
            if self.buffer.len() > 64 {
                self.done = true;
                return std::mem::take(&mut self.buffer);
            }
            return Vec::new();
        };
        self.done = true;
        let line = &self.buffer[..end];
        match line.strip_prefix(PID_MARKER) {
            Some(pid) => {
                self.pid = std::str::from_utf8(pid).ok().and_then(|p| p.parse().ok());
                self.buffer[end + 1..].to_vec()
            }
            None => std::mem::take(&mut self.buffer),
        }
    }
}

pub fn signal_number(sig: &Sig) -> i32 {
    match sig {
        Sig::HUP => libc::SIGHUP,
        Sig::INT => libc::SIGINT,
        Sig::QUIT => libc::SIGQUIT,
        Sig::ILL => libc::SIGILL,
        Sig::ABRT => libc::SIGABRT,
        Sig::FPE => libc::SIGFPE,
        Sig::KILL => libc::SIGKILL,
        Sig::SEGV => libc::SIGSEGV,
        Sig::PIPE => libc::SIGPIPE,
        Sig::ALRM => libc::SIGALRM,
        Sig::TERM => libc::SIGTERM,
        Sig::USR1 => libc::SIGUSR1,
        Sig::Custom(name) => match name.as_str() {
            "USR2" => libc::SIGUSR2,
            "BUS" => libc::SIGBUS,
            "XCPU" => libc::SIGXCPU,
            "XFSZ" => libc::SIGXFSZ,
            _ => 0,
        },
    }
}

impl Session {
    /// Run `command` in the user's login shell, with local stdin, stdout and stderr attached;
    /// returns its exit code.
    pub async fn run(&self, command: &RemoteCommand) -> Result<ExitCode> {
        // From here, stop signals are forwarded to the remote process group.
        let signals = crate::signals::Stop::install()?;
        let env_file = self.stage_env(&command.env).await?;
        let channel = self.open_exec(&command.script(env_file.as_deref())).await?;
        let (reader, writer) = channel.split();
        self.attach(
            Events::new(reader, false),
            writer,
            PidLine::default(),
            signals,
        )
        .await
    }

    /// As `run`, but started by the agent when this session knows one: with the user's login
    /// environment as the agent caches it, so no sshd session and no shell start up (see
    /// `scripts/agent.pl`). Without an agent, `run`.
    pub async fn run_in_login_env(&self, command: &RemoteCommand) -> Result<ExitCode> {
        let request = command.agent_request()?;
        let signals = crate::signals::Stop::install()?;
        let known = self.agent.lock().expect("not poisoned").clone();
        let Some((reader, writer)) = (match known {
            Some(agent) => self.open_agent(&agent).await,
            None => None,
        }) else {
            drop(signals);
            return self.run(command).await;
        };
        tracing::debug!("running through the agent");
        let mut header = format!("r{}\n", request.len()).into_bytes();
        header.extend_from_slice(&request);
        writer
            .data(&header[..])
            .await
            .map_err(|e| self.lost(super::describe(&e)))?;
        self.attach(
            Events::new(reader, true),
            writer,
            PidLine::absent(),
            signals,
        )
        .await
    }

    /// Relay a started command's output, stdin and stop signals until it exits.
    async fn attach(
        &self,
        mut events: Events,
        writer: ChannelWriteHalf<Msg>,
        mut pid_line: PidLine,
        mut signals: crate::signals::Stop,
    ) -> Result<ExitCode> {
        let writer = Arc::new(writer);
        let stdin_task = tokio::spawn(forward_stdin(writer.clone()));

        let mut stdout = raw_fd(1);
        let mut stderr = raw_fd(2);
        let mut status = None;
        let mut pending_signal: Option<i32> = None;
        let mut stopping: Option<(i32, tokio::time::Instant)> = None;
        loop {
            // A signal that came before the PID did goes as soon as the PID is known.
            if let (Some(sig), Some(pid)) = (pending_signal, pid_line.pid) {
                pending_signal = None;
                self.signal_group(Some(pid), sig).await;
            }
            let deadline = stopping.map(|(_, at)| at);
            tokio::select! {
                event = events.next() => match event {
                    Some(Output::Stdout(data)) => {
                        if let Err(e) = stdout.write_all(&data) {
                            if e.kind() == std::io::ErrorKind::BrokenPipe {
                                // Like a local command whose reader went away: stop it, exit as SIGPIPE would.
                                self.signal_group(pid_line.pid, libc::SIGTERM).await;
                                stdin_task.abort();
                                return Ok(128 + libc::SIGPIPE);
                            }
                            return Err(Error::io("cannot write to standard output", e));
                        }
                    }
                    Some(Output::Stderr(data)) => {
                        let shown = pid_line.feed(&data);
                        let _ = stderr.write_all(&shown);
                    }
                    Some(Output::Pid(pid)) => pid_line.pid = Some(pid),
                    Some(Output::Exit(code)) => {
                        status = Some(code);
                        if events.framed {
                            break;
                        }
                    }
                    None => break,
                },
                sig = signals.recv() => {
                    tracing::debug!("forwarding signal {sig} to the remote command");
                    if pid_line.pid.is_some() {
                        self.signal_group(pid_line.pid, sig).await;
                    } else {
                        pending_signal = Some(sig);
                    }
                    if stopping.is_none() {
                        stopping = Some((sig, tokio::time::Instant::now() + GRACE));
                    }
                }
                _ = sleep_until(deadline) => {
                    let (sig, _) = stopping.take().expect("deadline implies stopping");
                    tracing::warn!("the remote command ignored the signal for {} s: killing it", GRACE.as_secs());
                    self.signal_group(pid_line.pid, libc::SIGKILL).await;
                    stdin_task.abort();
                    return Ok(128 + sig);
                }
            }
        }
        stdin_task.abort();
        let _ = stderr.write_all(&pid_line.feed(&[]));
        status
            .ok_or_else(|| self.lost("no exit status arrived before the connection closed".into()))
    }

    /// Put `env` on the machine, as `export` lines in a file only the user can read, for a
    /// command's line to source; `None` when there is nothing to put.
    pub(super) async fn stage_env(&self, env: &[(String, String)]) -> Result<Option<String>> {
        if env.is_empty() {
            return Ok(None);
        }
        let exports: String = env
            .iter()
            .map(|(key, value)| {
                format!(
                    "export {}\n",
                    quote::quote(format!("{key}={value}").as_bytes())
                )
            })
            .collect();
        let job = self
            .start_job(
                None,
                "umask 077 && f=$(mktemp \"${TMPDIR:-/tmp}/n10n-env.XXXXXX\") && cat > \"$f\" && printf %s \"$f\"",
            )
            .await?;
        job.writer
            .data(exports.as_bytes())
            .await
            .map_err(|e| self.lost(super::describe(&e)))?;
        let staged = job
            .finish()
            .await?
            .success("putting the environment in place")?;
        Ok(Some(String::from_utf8_lossy(&staged).into_owned()))
    }

    /// Send `sig` to the remote process group led by `pid`, over a channel of its own.
    async fn signal_group(&self, pid: Option<u32>, sig: i32) {
        let Some(pid) = pid else { return };
        // No `--`: dash, the /bin/sh the agent runs, rejects it; `-PID` after the signal is a pid.
        let line = format!("kill -{sig} -{pid} 2>/dev/null");
        let agent = self.agent.lock().expect("not poisoned").clone();
        let sent = self.capture(agent.as_ref(), &line);
        match tokio::time::timeout(Duration::from_secs(5), sent).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("could not signal the remote command: {e}"),
            Err(_) => tracing::warn!("could not signal the remote command: no answer"),
        }
    }
}

/// What a running command produces.
enum Output {
    /// The command's PID, which also names its process group (agent streams only).
    Pid(u32),
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(ExitCode),
}

/// The agent reads at most 64 KiB at a time, so no frame of its is longer.
const MAX_FRAME: usize = 64 * 1024;

/// A command's output from its channel: an exec session's own messages, or the agent's frames
/// (`p` + 4-byte big-endian PID, `o`/`e` + 4-byte length + bytes, then `x` + 4-byte exit
/// status).
struct Events {
    reader: ChannelReadHalf,
    framed: bool,
    /// A malformed frame arrived: nothing more is read.
    broken: bool,
    buffer: Vec<u8>,
    ready: VecDeque<Output>,
}

impl Events {
    fn new(reader: ChannelReadHalf, framed: bool) -> Events {
        Events {
            reader,
            framed,
            broken: false,
            buffer: Vec::new(),
            ready: VecDeque::new(),
        }
    }

    /// The next output; `None` once the channel has closed.
    async fn next(&mut self) -> Option<Output> {
        loop {
            if let Some(output) = self.ready.pop_front() {
                return Some(output);
            }
            if self.broken {
                return None;
            }
            match (self.framed, self.reader.wait().await?) {
                (true, ChannelMsg::Data { data }) => {
                    self.buffer.extend_from_slice(&data);
                    self.split_frames();
                }
                (false, ChannelMsg::Data { data }) => return Some(Output::Stdout(data.to_vec())),
                (false, ChannelMsg::ExtendedData { data, .. }) => {
                    return Some(Output::Stderr(data.to_vec()));
                }
                (false, ChannelMsg::ExitStatus { exit_status }) => {
                    return Some(Output::Exit(exit_status as i32));
                }
                (false, ChannelMsg::ExitSignal { signal_name, .. }) => {
                    return Some(Output::Exit(128 + signal_number(&signal_name)));
                }
                _ => {}
            }
        }
    }

    /// Complete frames out of the buffer. A frame the agent could not have sent (an unknown tag,
    /// a length over its 64 KiB reads) ends the stream as a lost connection would.
    fn split_frames(&mut self) {
        while self.buffer.len() >= 5 {
            let value = u32::from_be_bytes(self.buffer[1..5].try_into().expect("4 bytes"));
            let tag = self.buffer[0];
            if let Some(output) = match tag {
                b'x' => Some(Output::Exit(value as i32)),
                b'p' => Some(Output::Pid(value)),
                _ => None,
            } {
                self.ready.push_back(output);
                self.buffer.drain(..5);
                continue;
            }
            if !matches!(tag, b'o' | b'e') || value as usize > MAX_FRAME {
                tracing::warn!("the agent sent a malformed frame: ending the command's stream");
                self.broken = true;
                self.buffer.clear();
                return;
            }
            let end = 5 + value as usize;
            if self.buffer.len() < end {
                return;
            }
            let data = self.buffer[5..end].to_vec();
            self.buffer.drain(..end);
            self.ready.push_back(if tag == b'e' {
                Output::Stderr(data)
            } else {
                Output::Stdout(data)
            });
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Copy local stdin into the channel, then send EOF.
///
/// Each read goes out as owned bytes, split at the server's packet size (32 KiB for OpenSSH).
/// `ChannelWriteHalf::data` copies through an 8 KiB buffer instead: four times the packets, and
/// sshd grows the buffer it keeps toward the command's stdin by one packet at a time, copying
/// the whole buffer (up to its 2 MiB window) at each step. That made an initial sync of 114 MiB
/// spend more time in sshd than OpenSSH's client did for the same bytes.
pub(super) async fn forward_stdin(writer: Arc<ChannelWriteHalf<Msg>>) {
    forward_input(tokio::io::stdin(), &writer).await;
}

async fn forward_input(
    mut input: impl tokio::io::AsyncRead + Unpin,
    writer: &ChannelWriteHalf<Msg>,
) {
    loop {
        let mut buffer = bytes::BytesMut::with_capacity(STDIN_READ);
        match input.read_buf(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if writer.data_bytes(buffer.freeze()).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = writer.eof().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::{Algorithm, PrivateKey};
    use russh::server;
    use std::sync::Mutex;

    /// An SSH server in the test's process that takes any client and keeps the size of every
    /// data packet it receives. Its packets are at most 32 KiB, as OpenSSH's sshd's are.
    #[derive(Clone, Default)]
    struct PacketSizes {
        sizes: Arc<Mutex<Vec<usize>>>,
        eof: Arc<tokio::sync::Notify>,
    }

    impl server::Handler for PacketSizes {
        type Error = russh::Error;
        async fn auth_none(&mut self, _user: &str) -> Result<server::Auth, Self::Error> {
            Ok(server::Auth::Accept)
        }
        async fn channel_open_session(
            &mut self,
            _channel: russh::Channel<server::Msg>,
            reply: server::ChannelOpenHandle,
            _session: &mut server::Session,
        ) -> Result<(), Self::Error> {
            reply.accept().await;
            Ok(())
        }
        async fn data(
            &mut self,
            _channel: russh::ChannelId,
            data: &[u8],
            _session: &mut server::Session,
        ) -> Result<(), Self::Error> {
            self.sizes.lock().unwrap().push(data.len());
            Ok(())
        }
        async fn channel_eof(
            &mut self,
            _channel: russh::ChannelId,
            _session: &mut server::Session,
        ) -> Result<(), Self::Error> {
            self.eof.notify_one();
            Ok(())
        }
    }

    struct AnyHostKey;

    impl russh::client::Handler for AnyHostKey {
        type Error = russh::Error;
        async fn check_server_key(
            &mut self,
            _key: &russh::keys::PublicKeyOrCertificate,
        ) -> Result<bool, Self::Error> {
            Ok(true)
        }
    }

    #[tokio::test]
    async fn bulk_input_leaves_in_packets_as_large_as_the_server_takes() {
        let (client_end, server_end) = tokio::io::duplex(1 << 20);
        let key =
            PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519).unwrap();
        let mut methods = russh::MethodSet::empty();
        methods.push(russh::MethodKind::None);
        let config = server::Config {
            methods,
            keys: vec![key],
            maximum_packet_size: 32 * 1024,
            ..Default::default()
        };
        let recorder = PacketSizes::default();
        let serving = server::run_stream(Arc::new(config), server_end, recorder.clone());
        let serving = tokio::spawn(async move { serving.await?.await });
        let config = Arc::new(russh::client::Config::default());
        let mut client = russh::client::connect_stream(config, client_end, AnyHostKey)
            .await
            .unwrap();
        assert!(client.authenticate_none("dev").await.unwrap().success());
        let (_reader, writer) = client.channel_open_session().await.unwrap().split();

        let input = vec![7u8; 1 << 20];
        forward_input(&input[..], &writer).await;
        tokio::time::timeout(Duration::from_secs(10), recorder.eof.notified())
            .await
            .expect("the server saw the input's end");

        let sizes = recorder.sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), input.len());
        assert_eq!(
            sizes.len(),
            input.len() / (32 * 1024),
            "1 MiB in packets of 32 KiB; got sizes {:?}",
            &sizes[..sizes.len().min(8)]
        );
        serving.abort();
    }

    #[test]
    fn pid_line_is_stripped_even_when_split() {
        let mut line = PidLine::default();
        assert!(line.feed(b"n10n-pi").is_empty());
        assert_eq!(line.feed(b"d:4242\nwarning: x\n"), b"warning: x\n");
        assert_eq!(line.pid, Some(4242));
        assert_eq!(line.feed(b"more"), b"more");
    }

    #[test]
    fn foreign_first_line_is_passed_through() {
        let mut line = PidLine::default();
        assert_eq!(line.feed(b"motd says hi\n"), b"motd says hi\n");
        assert_eq!(line.pid, None);
    }

    #[test]
    fn script_runs_in_the_directory_with_the_environment() {
        let home = tempfile::tempdir().unwrap();
        let command = RemoteCommand {
            dir: "~/n10n/my proj".into(),
            workdir: None,
            env: vec![("GREETING".into(), "it's $HOME; `x`".into())],
            argv: ["sh", "-c", "printf '%s|%s' \"$GREETING\" \"$PWD\""]
                .map(OsString::from)
                .to_vec(),
        };
        let env_file = home.path().join("env");
        std::fs::write(&env_file, "export 'GREETING=it'\\''s $HOME; `x`'\n").unwrap();
        let script = command.script(Some(env_file.to_str().unwrap()));
        assert!(
            !script.contains("`x`"),
            "the value is in the command line: {script}"
        );
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .env("HOME", home.path())
            .env("SHELL", "/bin/sh")
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let dir = home.path().join("n10n/my proj");
        assert_eq!(stdout, format!("it's $HOME; `x`|{}", dir.display()));
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("n10n-pid:"));
        assert!(!env_file.exists(), "the environment file is left behind");
    }
}
