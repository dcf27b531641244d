//! `forwarder` (hidden; `up` starts it): the per-VM forwarder process, serving this project's VM.

use super::Context;
use crate::error::Result;
use crate::forwarder::{Paths, serve};
use crate::ssh::{Session, Silence};

pub async fn run(ctx: &Context) -> Result<()> {
    let vm_dir = ctx.state.vm_dir(&ctx.project.config.vm.name)?;
    serve::run(
        Paths::in_dir(&vm_dir),
        &ctx.project.config.forward,
        &Machine(ctx),
    )
    .await
}

/// The project's machine, reached directly (a backend that cannot be opened is the forwarder's
/// standing error, shown by `status`).
struct Machine<'a>(&'a Context);

impl serve::Connect for Machine<'_> {
    async fn connect(&self) -> Result<Session> {
        self.0.connect_direct(Silence::Waits).await
    }
}
