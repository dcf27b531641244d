//! `sync [--dry-run]`, and the sync that runs before `run` and `shell`.

use super::Context;
use crate::backend::Backend;
use crate::cli::SyncArgs;
use crate::error::Result;
use crate::ssh::Session;
use crate::sync::{self, Options};

pub async fn run(ctx: &Context, args: SyncArgs) -> Result<()> {
    let backend = ctx.backend(None)?;
    if backend.runs_locally() {
        if !ctx.quiet {
            eprintln!("sync: nothing to do: the native backend builds in the project itself");
        }
        return Ok(());
    }
    let pending = sync::begin(&ctx.project, &ctx.state)?;
    let session = ctx.connect(backend.as_ref()).await?;
    let options = Options {
        dry_run: args.dry_run,
        progress: !ctx.quiet,
    };
    let summary = pending.finish(&session, &options).await?;
    if !ctx.quiet {
        eprintln!("{summary}");
    }
    Ok(())
}

/// Connect, bringing the replica up to date first when `sync` is set (the local scan overlaps
/// the SSH handshake). Says something only when it sent or deleted.
pub async fn connect_synced(ctx: &Context, backend: &dyn Backend, sync: bool) -> Result<Session> {
    let pending = match sync {
        true => Some(sync::begin(&ctx.project, &ctx.state)?),
        false => None,
    };
    let session = ctx.connect(backend).await?;
    if let Some(pending) = pending {
        let options = Options {
            dry_run: false,
            progress: !ctx.quiet,
        };
        let summary = pending.finish(&session, &options).await?;
        if summary.changed() && !ctx.quiet {
            eprintln!("{summary}");
        }
    }
    Ok(session)
}
