//! `sync [--dry-run]`, and the sync that runs before `run` and `shell`.

use super::Context;
use crate::cli::SyncArgs;
use crate::error::Result;
use crate::ssh::Session;
use crate::sync::{self, Options};

pub async fn run(ctx: &Context, args: SyncArgs) -> Result<()> {
    let session = ctx.connect().await?;
    let options = Options {
        dry_run: args.dry_run,
        progress: !ctx.quiet,
    };
    let summary = sync::sync(&session, &ctx.project, &ctx.state, &options).await?;
    if !ctx.quiet {
        eprintln!("{summary}");
    }
    Ok(())
}

/// Bring the replica up to date before a command; says something only when it sent or deleted.
pub async fn sync_quietly(ctx: &Context, session: &Session) -> Result<()> {
    let options = Options {
        dry_run: false,
        progress: !ctx.quiet,
    };
    let summary = sync::sync(session, &ctx.project, &ctx.state, &options).await?;
    if summary.changed() && !ctx.quiet {
        eprintln!("{summary}");
    }
    Ok(())
}
