//! `shell [--no-sync]`: a login shell in the replica, on a PTY when stdin is a terminal.

use std::io::IsTerminal;

use clap::Args;

use super::Context;
use crate::error::Result;
use crate::ssh::{ExitCode, RemoteCommand};

#[derive(Debug, Args)]
pub struct ShellArgs {
    /// Do not sync the project first
    #[arg(long)]
    pub no_sync: bool,
}

pub async fn run(ctx: &Context, args: ShellArgs) -> Result<ExitCode> {
    let backend = ctx.backend(None)?;
    if backend.runs_locally() {
        return crate::local::shell(&ctx.project.root).await;
    }
    let session = ctx.connect_synced(backend.as_ref(), !args.no_sync).await?;
    let login_shell = RemoteCommand {
        dir: ctx.project.config.sync.dest.clone(),
        workdir: None,
        env: Vec::new(),
        command_line: String::new(),
    };
    // As ssh does: no PTY when stdin is not a terminal, so that `shell < script` reads the
    // script and ends at its end (a PTY would never pass the end of input on).
    match std::io::stdin().is_terminal() {
        true => session.shell(&login_shell).await,
        false => session.run(&login_shell).await,
    }
}
