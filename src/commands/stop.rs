//! `stop`: stop the VM (its disk and the replica on it are kept) and its forwarder. An ssh host
//! is not n10n-dev's to stop: only the forwarder ends.

use super::Context;
use crate::config::BackendKind;
use crate::error::Result;
use crate::progress::Step;

pub async fn run(ctx: &Context) -> Result<()> {
    let backend = ctx.backend()?;
    // The forwarder first: it would only try to reconnect to a machine that is going away.
    crate::forwarder::stop(&ctx.forwarder_paths()?);
    if backend.kind() == BackendKind::Ssh {
        if !ctx.quiet {
            eprintln!("stop: forwarder stopped; the host is left running");
        }
        return Ok(());
    }
    let step = Step::new("stopping the VM", ctx.quiet);
    let stopped = tokio::task::block_in_place(|| backend.stop());
    step.finish();
    stopped?;
    if !ctx.quiet {
        eprintln!("stop: {} is stopped", ctx.project.config.vm.name);
    }
    Ok(())
}
