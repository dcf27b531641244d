//! Commands on this machine, for the native backend: the same contract as remote ones (exit
//! code, 128+N for signal N, stdin and streams inherited, SIGTERM/SIGHUP passed on).

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use tokio::process::Command;

use crate::error::{Error, Result};
use crate::ssh::ExitCode;

/// Run `argv` in `dir` with extra `env`; Ctrl-C reaches it directly (same process group).
pub async fn run(dir: &Path, env: &[(String, String)], argv: &[OsString]) -> Result<ExitCode> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Error::Usage("no command given".into()))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k, v)));
    tracing::debug!(
        "running {} on this machine (native backend) in {}",
        program.to_string_lossy(),
        dir.display()
    );
    wait(command, &program.to_string_lossy()).await
}

/// An interactive login shell in `dir`.
pub async fn shell(dir: &Path) -> Result<ExitCode> {
    let shell = std::env::var_os("SHELL").unwrap_or_else(|| "/bin/sh".into());
    let mut command = Command::new(&shell);
    command.arg("-l").current_dir(dir);
    wait(command, &shell.to_string_lossy()).await
}

async fn wait(mut command: Command, name: &str) -> Result<ExitCode> {
    let mut stop = crate::signals::Stop::install()?;
    // As a shell reports a command it cannot start (127 not found, 126 not executable): the
    // same codes as on a remote machine, where the login shell starts the command.
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("{name}: command not found");
            return Ok(127);
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            eprintln!("{name}: Permission denied");
            return Ok(126);
        }
        Err(e) => return Err(Error::io(format!("cannot run {name}"), e)),
    };
    let pid = child.id();
    let forward = |sig: i32| {
        if let Some(pid) = pid {
            // SAFETY: kill(2) with our own child's pid.
            unsafe { libc::kill(pid as i32, sig) };
        }
    };
    let started = std::time::Instant::now();
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.map_err(|e| Error::io(format!("waiting for {name}"), e))?,
            // The terminal sends Ctrl-C to the whole foreground group, the child included;
            // n10n-dev only has to outlive it. The others are passed on.
            sig = stop.recv() => if sig != libc::SIGINT { forward(sig) },
        }
    };
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    tracing::debug!("{name} ended with {code} after {:.0?}", started.elapsed());
    Ok(code)
}
