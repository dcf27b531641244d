//! The build machine as the capabilities take it (`image`, `engine`, `lambda`): the replica
//! behind an SSH session, or the project itself on this machine for the native backend.
//! `machine::Context` makes one; everything that runs there takes it, whatever the backend.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::local;
use crate::ssh::{Captured, ExitCode, RemoteCommand, Session, quote};

/// Where the project's commands run.
#[derive(Clone)]
pub enum Machine {
    /// In the replica on the build machine behind an SSH session.
    Remote { session: Arc<Session>, dir: String },
    /// In the project itself, on this machine (native backend).
    Local { dir: PathBuf },
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

    /// Run a shell command line with output streamed; its exit code.
    pub async fn run(&self, line: &str, env: &[(String, String)]) -> Result<ExitCode> {
        match self {
            Machine::Remote { session, dir } => {
                // The build's environment is no secret: on the command line, it costs no
                // round trip (see `Session::stage_env`).
                let mut argv: Vec<String> = vec!["env".into()];
                argv.extend(env.iter().map(|(key, value)| format!("{key}={value}")));
                argv.extend(["sh".into(), "-c".into(), line.to_string()]);
                session
                    .run_via_agent(&RemoteCommand {
                        dir: dir.clone(),
                        workdir: None,
                        env: Vec::new(),
                        command_line: quote::join(&argv),
                    })
                    .await
            }
            Machine::Local { dir } => {
                local::run(dir, env, &["sh".into(), "-c".into(), line.into()]).await
            }
        }
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
