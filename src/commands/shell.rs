//! `shell [--no-sync]`: a login shell in the replica, on a PTY when stdin is a terminal.

use std::io::IsTerminal;

use clap::Args;

use super::Context;
use crate::error::Result;
use crate::machine::Machine;
use crate::ssh::{ExitCode, RemoteCommand};

#[derive(Debug, Args)]
pub struct ShellArgs {
    /// Do not sync the project first
    #[arg(long)]
    pub no_sync: bool,
}

pub async fn run(ctx: &Context, args: ShellArgs) -> Result<ExitCode> {
    let (session, dir) = match ctx.connect_synced(!args.no_sync).await? {
        Machine::Local { dir } => return crate::local::shell(&dir).await,
        Machine::Remote { session, dir, .. } => (session, dir),
    };
    let login_shell = RemoteCommand {
        dir,
        workdir: None,
        env: Vec::new(),
        argv: Vec::new(),
    };
    // As ssh does: no PTY when stdin is not a terminal, so that `shell < script` reads the
    // script and ends at its end (a PTY would never pass the end of input on).
    match std::io::stdin().is_terminal() {
        true => session.shell(&login_shell).await,
        false => session.run(&login_shell).await,
    }
}
