//! `docker-context use|rm`: make the VM's Docker context (`n10n-<name>`, made by `up`) the
//! current one, or remove it (the current context goes back to `default` if it was this one).

use clap::{Args, Subcommand};

use super::Context;
use crate::docker_context;
use crate::error::Result;

#[derive(Debug, Args)]
pub struct DockerContextArgs {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Make n10n-<name> the current Docker context
    Use,
    /// Remove the n10n-<name> Docker context
    Rm,
}

pub async fn run(ctx: &Context, args: DockerContextArgs) -> Result<()> {
    let name = ctx.docker_context();
    let done = match args.action {
        Action::Use => {
            docker_context::make_current(&name)?;
            "is the current Docker context"
        }
        Action::Rm => match docker_context::remove(&name)? {
            true => "is removed",
            false => "does not exist: nothing to remove",
        },
    };
    if !ctx.quiet {
        eprintln!("docker-context: {name} {done}");
    }
    Ok(())
}
