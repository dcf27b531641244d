//! `up [--backend B] [--no-provision]`: the machine running, provisioned, its host key pinned,
//! and the project synced. Fast when all of that is already true: one SSH connection to the
//! endpoint seen last time and one stamp check, with no call to limactl or vagrant.

use std::time::Instant;

use super::Context;
use crate::cli::UpArgs;
use crate::error::Result;

pub async fn run(ctx: &Context, args: UpArgs) -> Result<()> {
    let started = Instant::now();
    let backend = ctx.backend(args.backend)?;
    let session = ctx
        .bring_up(backend.as_ref(), !args.no_provision, true)
        .await?;
    if !ctx.quiet {
        match session {
            Some(session) => eprintln!(
                "up: {} is ready at {} ({:.1} s)",
                ctx.project.config.vm.name,
                session.endpoint(),
                started.elapsed().as_secs_f64()
            ),
            None => eprintln!(
                "up: no VM needed: Docker answers here, and commands run in the project itself"
            ),
        }
    }
    Ok(())
}
