//! `run [--no-sync] [-e KEY[=VAL]]... [-w DIR] -- CMD [ARGS...]`

use std::ffi::OsString;

use clap::Args;

use super::Context;
use crate::error::Result;
use crate::machine::Command;
use crate::ssh::ExitCode;

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
    let machine = ctx.connect_synced(!args.no_sync).await?;
    machine
        .execute(Command {
            workdir: args.workdir,
            env,
            argv: args.command,
        })
        .await
}
