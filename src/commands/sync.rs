//! `sync [--dry-run] [--adopt]`

use clap::Args;

use super::Context;
use crate::error::Result;
use crate::sync::{self, Options};

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// List what would be sent and deleted, change nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Make the dest the replica even though it holds files n10n-dev did not put there:
    /// lists what is not part of the project, then deletes it
    #[arg(long)]
    pub adopt: bool,
}

pub async fn run(ctx: &Context, args: SyncArgs) -> Result<()> {
    let backend = ctx.backend()?;
    if backend.runs_locally() {
        if !ctx.quiet {
            eprintln!("sync: nothing to do: the native backend builds in the project itself");
        }
        return Ok(());
    }
    let pending = sync::begin(&ctx.project, &ctx.state)?;
    let session = ctx.connect().await?;
    let options = Options {
        dry_run: args.dry_run,
        adopt: args.adopt,
        progress: !ctx.quiet,
    };
    let summary = pending.finish(&session, &options).await?;
    if !ctx.quiet {
        eprintln!("{summary}");
    }
    Ok(())
}
