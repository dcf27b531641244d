//! `run [--no-sync] [-e KEY[=VAL]]... [-w DIR] -- CMD [ARGS...]`

use super::Context;
use crate::cli::RunArgs;
use crate::error::Result;
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
        return local::run(&dir, &env, &args.command).await;
    }
    let session = ctx.connect_synced(backend.as_ref(), !args.no_sync).await?;
    let dest = &ctx.project.config.sync.dest;
    let dir = match args.workdir {
        Some(dir) if dir.starts_with('/') || dir.starts_with('~') => dir,
        Some(dir) => format!("{}/{dir}", dest.trim_end_matches('/')),
        None => dest.clone(),
    };
    session
        .run(&RemoteCommand {
            dir,
            env,
            command_line: quote::join(&args.command),
        })
        .await
}
