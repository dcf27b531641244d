//! `destroy [--force]`: delete the VM and everything n10n-dev knows about it. Asks first on a
//! terminal; elsewhere it needs `--force`.

use std::io::{BufRead, IsTerminal, Write};

use super::Context;
use crate::cli::DestroyArgs;
use crate::error::{Error, Result};
use crate::progress::Step;

pub async fn run(ctx: &Context, args: DestroyArgs) -> Result<()> {
    let vm = &ctx.project.config.vm.name;
    if !args.force && !confirmed(vm)? {
        return Err(Error::Usage(format!(
            "not destroying {vm}: confirm on a terminal, or pass --force"
        )));
    }
    let backend = ctx.backend(None)?;
    crate::forwarder::stop(&ctx.forwarder_paths()?);
    crate::docker_context::remove(&ctx.docker_context())?;
    let step = Step::new("deleting the VM", ctx.quiet);
    let deleted = tokio::task::block_in_place(|| backend.destroy());
    step.finish();
    deleted?;
    let dir = ctx.state.vm_dir(vm)?;
    std::fs::remove_dir_all(&dir)
        .map_err(|e| Error::io(format!("cannot delete {}", dir.display()), e))?;
    if !ctx.quiet {
        eprintln!("destroy: {vm} and its state are gone");
    }
    Ok(())
}

/// Ask on the terminal; no terminal means no.
fn confirmed(vm: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return Ok(false);
    }
    eprint!("Delete the VM {vm}, its disk and n10n-dev's state for it? [y/N] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Error::io("cannot read the answer", e))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
