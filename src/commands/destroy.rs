//! `destroy [--force]`: delete the VM and everything n10n-dev knows about it. Asks first on a
//! terminal; elsewhere it needs `--force`.

use std::io::{BufRead, IsTerminal, Write};

use clap::Args;

use super::Context;
use crate::config::BackendKind;
use crate::error::{Error, Result};
use crate::progress::Step;

#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// Do not ask
    #[arg(short, long)]
    pub force: bool,
}

pub async fn run(ctx: &Context, args: DestroyArgs) -> Result<()> {
    let vm = &ctx.project.config.vm.name;
    let backend = ctx.backend()?;
    if !args.force {
        match confirmed(&question(backend.kind(), vm))? {
            Some(true) => {}
            Some(false) => return Err(Error::Other("aborted".into())),
            None => {
                return Err(Error::Usage(format!(
                    "not destroying {vm}: confirm on a terminal, or pass --force"
                )));
            }
        }
    }
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

/// What destroying means for this backend: a VM's disk goes; an ssh host or this machine
/// keeps everything but n10n-dev's own state.
fn question(kind: BackendKind, vm: &str) -> String {
    match kind {
        BackendKind::Ssh => {
            format!("Forget the host of {vm} (n10n-dev's state for it; the host is left as it is)?")
        }
        BackendKind::Native => format!("Delete n10n-dev's state for {vm} (nothing else)?"),
        _ => format!("Delete the VM {vm}, its disk and n10n-dev's state for it?"),
    }
}

/// Ask `question` on the terminal: the answer, or `None` when there is no terminal to ask on.
fn confirmed(question: &str) -> Result<Option<bool>> {
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return Ok(None);
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Error::io("cannot read the answer", e))?;
    Ok(Some(matches!(answer.trim(), "y" | "Y" | "yes")))
}
