//! `provision [--force]`: run the provision scripts again, only those that changed unless forced.

use clap::Args;

use super::Context;
use crate::error::{Error, Result};
use crate::provision;

#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// Run every script even if the machine's stamp says they already ran
    #[arg(long)]
    pub force: bool,
}

pub async fn run(ctx: &Context, args: ProvisionArgs) -> Result<()> {
    let backend = ctx.backend()?;
    if backend.runs_locally() {
        return Err(Error::Usage(
            "the native backend uses this machine as it is; install Docker and toolchains yourself \
             (`n10n-dev doctor` shows what is there)"
                .into(),
        ));
    }
    let session = ctx.connect().await?;
    let provision::Plan { scripts, stamp } = ctx.provision_plan()?;
    if !args.force && provision::is_current(&session, &stamp).await? {
        if !ctx.quiet {
            eprintln!("provision: up to date ({stamp})");
        }
        return Ok(());
    }
    provision::run(&session, &scripts, &stamp, ctx.quiet).await?;
    drop(session);
    ctx.renew_forwarder()?;
    provision::remember(&ctx.state.vm_dir(&ctx.project.config.vm.name)?, &stamp)?;
    if !ctx.quiet {
        eprintln!("provision: done ({stamp})");
    }
    Ok(())
}
