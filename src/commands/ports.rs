//! `ports`: what the VM's forwarder forwards to this machine, and what it skipped and why.

use super::Context;
use crate::error::{Error, Result};
use crate::forwarder::{self, Status};
use crate::outln;

pub async fn run(ctx: &Context) -> Result<()> {
    if ctx.backend()?.runs_locally() {
        eprintln!(
            "ports: nothing to forward: the native backend's ports are already this machine's"
        );
        return Ok(());
    }
    let paths = ctx.forwarder_paths()?;
    let status = match forwarder::running_pid(&paths).and(Status::read(&paths)) {
        Some(status) => status,
        None => {
            return Err(Error::Other(format!(
                "no forwarder runs for {}: `n10n-dev up` starts it",
                ctx.project.config.vm.name
            )));
        }
    };
    if status.ports.is_empty() {
        outln!("no ports forwarded")?;
    }
    for port in &status.ports {
        outln!("{:<24} -> {:<24} {}", port.host, port.guest, port.source)?;
    }
    for skipped in &status.skipped {
        outln!("skipped {:<16} {}", skipped.port, skipped.why)?;
    }
    eprintln!("ports: TCP only; UDP is not forwarded");
    Ok(())
}
