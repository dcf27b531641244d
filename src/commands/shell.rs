//! `shell [--no-sync]`

use super::Context;
use crate::cli::ShellArgs;
use crate::error::Result;
use crate::ssh::{ExitCode, RemoteCommand};

pub async fn run(ctx: &Context, args: ShellArgs) -> Result<ExitCode> {
    let session = ctx.connect().await?;
    if !args.no_sync {
        super::sync::sync_quietly(ctx, &session).await?;
    }
    session
        .shell(&RemoteCommand {
            dir: ctx.project.config.sync.dest.clone(),
            env: Vec::new(),
            command_line: String::new(),
        })
        .await
}
