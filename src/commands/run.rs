//! `run [--no-sync] [-e KEY[=VAL]]... [-w DIR] -- CMD [ARGS...]`

use super::Context;
use crate::cli::RunArgs;
use crate::error::{Error, Result};
use crate::local;
use crate::ssh::{ExitCode, RemoteCommand, quote};

pub async fn run(ctx: &Context, args: RunArgs) -> Result<ExitCode> {
    let env = crate::cli::parse_env(&args.env, |key| std::env::var(key).ok())?;
    let backend = ctx.backend(None)?;
    if backend.runs_locally() {
        let dir = match &args.workdir {
            Some(dir) => ctx.project.root.join(dir),
            None => ctx.project.root.clone(),
        };
        if !dir.is_dir() {
            return Err(Error::Other(format!(
                "-w {}: no such directory in the project",
                args.workdir.unwrap_or_default()
            )));
        }
        return local::run(&dir, &env, &args.command).await;
    }
    let session = ctx.connect_synced(backend.as_ref(), !args.no_sync).await?;
    session
        .run(&RemoteCommand {
            dir: ctx.project.config.sync.dest.clone(),
            workdir: args.workdir,
            env,
            command_line: quote::join(&args.command),
        })
        .await
}
