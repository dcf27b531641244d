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
    match args.action {
        Action::Use => docker_context::make_current(&name)?,
        Action::Rm => docker_context::remove(&name)?,
    }
    if !ctx.quiet {
        let done = match args.action {
            Action::Use => "is the current Docker context",
            Action::Rm => "is removed",
        };
        eprintln!("docker-context: {name} {done}");
    }
    Ok(())
}
