//! `provision [--force]`: run the provision scripts again, only those that changed unless forced.

use super::Context;
use crate::cli::ProvisionArgs;
use crate::error::Result;
use crate::provision;

pub async fn run(ctx: &Context, args: ProvisionArgs) -> Result<()> {
    let session = ctx.connect().await?;
    let scripts = provision::scripts_for(&ctx.project)?;
    let stamp = provision::stamp(&scripts);
    if !args.force && provision::is_current(&session, &stamp).await? {
        if !ctx.quiet {
            eprintln!("provision: up to date ({stamp})");
        }
        return Ok(());
    }
    provision::run(&session, &scripts, &stamp, ctx.quiet).await?;
    if !ctx.quiet {
        eprintln!("provision: done ({stamp})");
    }
    Ok(())
}
