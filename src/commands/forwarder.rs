//! `forwarder` (hidden; `up` starts it): the per-VM forwarder process, serving this project's VM.

use super::Context;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::forwarder::{Paths, serve};
use crate::ssh::Session;

pub async fn run(ctx: &Context) -> Result<()> {
    let vm_dir = ctx.state.vm_dir(&ctx.project.config.vm.name)?;
    // A backend that cannot be opened is the forwarder's standing error, shown by `status`.
    let machine = Machine {
        ctx,
        backend: ctx.backend(None).map_err(|e| e.to_string()),
    };
    serve::run(
        Paths::in_dir(&vm_dir),
        &ctx.project.config.forward,
        &machine,
    )
    .await
}

struct Machine<'a> {
    ctx: &'a Context,
    backend: std::result::Result<Box<dyn Backend>, String>,
}

impl serve::Connect for Machine<'_> {
    async fn connect(&self) -> Result<Session> {
        match &self.backend {
            Ok(backend) => self.ctx.connect_direct(backend.as_ref()).await,
            Err(why) => Err(Error::Other(why.clone())),
        }
    }
}
