//! The build machine as the capabilities take it (`image`, `engine`, `lambda`): the replica
//! behind an SSH session, or the project itself on this machine for the native backend.
//! `machine::Context` makes one; everything that runs there takes it, whatever the backend.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::local;
use crate::ssh::{Captured, ExitCode, RemoteCommand, Session};

/// Where the project's commands run.
#[derive(Clone)]
pub enum Machine {
    /// In the replica on the build machine behind an SSH session; with the user's login
    /// environment as the machine's agent caches it, or in a login shell each (`[run]
    /// login_shell`).
    Remote {
        session: Arc<Session>,
        dir: String,
        login_shell: bool,
    },
    /// In the project itself, on this machine (native backend).
    Local { dir: PathBuf },
}

/// A command as `run` takes it.
pub struct Command {
    /// Where to run, relative to the replica (or absolute); it must exist.
    pub workdir: Option<String>,
    pub env: Vec<(String, String)>,
    pub argv: Vec<OsString>,
}

impl Machine {
    /// The SSH session to the build machine; `None` on this machine.
    pub fn session(&self) -> Option<&Arc<Session>> {
        match self {
            Machine::Remote { session, .. } => Some(session),
            Machine::Local { .. } => None,
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self, Machine::Local { .. })
    }

    /// Run `command` with this process's stdin, stdout and stderr; its exit code.
    pub async fn execute(&self, command: Command) -> Result<ExitCode> {
        let Command { workdir, env, argv } = command;
        match self {
            Machine::Remote {
                session,
                dir,
                login_shell,
            } => {
                let remote = RemoteCommand {
                    dir: dir.clone(),
                    workdir,
                    env,
                    argv,
                };
                match login_shell {
                    true => session.run(&remote).await,
                    false => session.run_in_login_env(&remote).await,
                }
            }
            Machine::Local { dir: root } => {
                let dir = match &workdir {
                    Some(dir) => root.join(dir),
                    None => root.clone(),
                };
                if !dir.is_dir() {
                    return Err(Error::Other(format!(
                        "-w {}: no such directory in the project",
                        workdir.unwrap_or_default()
                    )));
                }
                local::run(&dir, &env, &argv).await
            }
        }
    }

    /// Run a shell command line with output streamed; its exit code.
    pub async fn run(&self, line: &str, env: &[(String, String)]) -> Result<ExitCode> {
        // The build's environment is no secret: on the command line, it costs no round trip
        // when the command starts in a login shell (see `Session::stage_env`).
        let mut argv: Vec<OsString> = vec!["env".into()];
        argv.extend(
            env.iter()
                .map(|(key, value)| format!("{key}={value}").into()),
        );
        argv.extend(["sh".into(), "-c".into(), line.into()]);
        self.execute(Command {
            workdir: None,
            env: Vec::new(),
            argv,
        })
        .await
    }

    /// Run a shell command line and collect its output.
    pub async fn capture(&self, line: &str) -> Result<Captured> {
        match self {
            Machine::Remote { session, .. } => session.capture(None, line).await,
            Machine::Local { dir } => local_sh(dir, line, Stdio::piped()).await,
        }
    }

    /// Write the output of `line` into `file`; its exit status and stderr.
    pub async fn capture_into(&self, line: &str, file: std::fs::File) -> Result<Captured> {
        match self {
            Machine::Remote { session, .. } => session.download(line, file).await,
            Machine::Local { dir } => local_sh(dir, line, Stdio::from(file)).await,
        }
    }
}

/// `sh -c line` in `dir` on this machine, its stdout to `stdout` (collected when piped).
async fn local_sh(dir: &Path, line: &str, stdout: Stdio) -> Result<Captured> {
    let out = tokio::process::Command::new("sh")
        .args(["-c", line])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .output()
        .await
        .map_err(|e| Error::io("cannot run sh", e))?;
    Ok(Captured {
        status: out.status.code().unwrap_or(128),
        stdout: out.stdout,
        stderr: out.stderr,
    })
}
