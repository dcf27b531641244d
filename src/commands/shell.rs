//! `shell [--no-sync]`

use super::Context;
use crate::cli::ShellArgs;
use crate::error::Result;
use crate::ssh::{ExitCode, RemoteCommand};

pub async fn run(ctx: &Context, args: ShellArgs) -> Result<ExitCode> {
    let backend = ctx.backend(None)?;
    if backend.runs_locally() {
        return crate::local::shell(&ctx.project.root).await;
    }
    let session = ctx.connect_synced(backend.as_ref(), !args.no_sync).await?;
    session
        .shell(&RemoteCommand {
            dir: ctx.project.config.sync.dest.clone(),
            env: Vec::new(),
            command_line: String::new(),
        })
        .await
}
