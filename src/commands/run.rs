//! `run [--no-sync] [-e KEY[=VAL]]... [-w DIR] -- CMD [ARGS...]`

use std::ffi::OsString;

use clap::Args;

use super::Context;
use crate::error::{Error, Result};
use crate::local;
use crate::machine::Machine;
use crate::ssh::{ExitCode, RemoteCommand, quote};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Do not sync the project first
    #[arg(long)]
    pub no_sync: bool,

    /// Set KEY=VAL in the command's environment; a bare KEY passes the local value
    #[arg(short = 'e', long = "env", value_name = "KEY[=VAL]")]
    pub env: Vec<String>,

    /// Run in DIR, relative to the replica (or absolute)
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,

    /// The command and its arguments (after `--`)
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

pub async fn run(ctx: &Context, args: RunArgs) -> Result<ExitCode> {
    let env = super::parse_env(&args.env, |key| std::env::var(key).ok())?;
    match ctx.connect_synced(!args.no_sync).await? {
        Machine::Local { dir: root } => {
            let dir = match &args.workdir {
                Some(dir) => root.join(dir),
                None => root,
            };
            if !dir.is_dir() {
                return Err(Error::Other(format!(
                    "-w {}: no such directory in the project",
                    args.workdir.unwrap_or_default()
                )));
            }
            local::run(&dir, &env, &args.command).await
        }
        Machine::Remote { session, dir } => {
            session
                .run(&RemoteCommand {
                    dir,
                    workdir: args.workdir,
                    env,
                    command_line: quote::join(&args.command),
                })
                .await
        }
    }
}
