//! `up [--backend B] [--no-provision]`: the machine running, provisioned, its host key pinned,
//! and the project synced. Fast when all of that is already true: one SSH connection to the
//! endpoint seen last time and one stamp check, with no call to limactl or vagrant.

use std::time::Instant;

use clap::Args;

use super::Context;
use crate::build_machine::Machine;
use crate::config::BackendKind;
use crate::error::Result;
use crate::machine::BringUp;
use crate::provision;

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Use this backend instead of the configured one: auto, lima, vagrant, native, ssh
    #[arg(long, value_name = "B")]
    pub backend: Option<BackendKind>,

    /// Do not run the provision scripts
    #[arg(long)]
    pub no_provision: bool,

    /// Also make the VM's Docker context (n10n-<name>) the current one
    #[arg(long)]
    pub docker_context: bool,
}

pub async fn run(ctx: &Context, args: UpArgs) -> Result<()> {
    let started = Instant::now();
    let backend = ctx.backend()?;
    if !backend.runs_locally() {
        ctx.forwarder_paths()?.check_length()?;
    }
    let how = BringUp {
        provision: !args.no_provision,
        sync: true,
    };
    let machine = ctx.bring_up(how).await?;
    if matches!(backend.kind(), BackendKind::Lima | BackendKind::Vagrant) {
        say_once_if_older_os(ctx, &machine).await?;
    }
    if !machine.is_local() {
        if ctx.serve_engine()? == crate::forwarder::Serving::NoEngine {
            eprintln!(
                "warning: the VM's Docker engine does not answer at {} for its SSH user: \
                 the forwarder waits for it (provisioning installs Docker and the docker group)",
                crate::engine::DOCKER_SOCKET
            );
        }
        match ctx.ensure_docker_context() {
            Ok(()) if args.docker_context => {
                crate::docker_context::make_current(&ctx.docker_context())?
            }
            Ok(()) => {}
            // The VM is up and its engine served: a context is a convenience, `env` the fallback.
            Err(e) if !args.docker_context => eprintln!(
                "warning: no Docker context {}: {e}\n`eval \"$(n10n-dev env)\"` points Docker \
                 clients at the VM instead",
                ctx.docker_context()
            ),
            Err(e) => return Err(e),
        }
    }
    if !ctx.quiet {
        match machine.session() {
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

/// A VM made by an earlier release may run an older Debian than `lima.yaml` and the
/// `Vagrantfile` give a new one: say so, once per VM, and how to get the new one. Nothing is
/// changed: re-creating it is the user's call (its disk goes with it).
async fn say_once_if_older_os(ctx: &Context, machine: &Machine) -> Result<()> {
    let checked = ctx
        .state
        .vm_dir(&ctx.project.config.vm.name)?
        .join("os-checked");
    if checked.exists() {
        return Ok(());
    }
    match provision::older_debian(machine).await {
        Ok(Some(os)) => eprintln!(
            "note: {} runs {os}, older than the Debian 13 that new VMs get (Docker 26 with buildx, \
             JDK 21); it keeps working as it is. To re-create it (its disk is lost, the project is \
             synced again): `n10n-dev destroy` then `n10n-dev up`",
            ctx.project.config.vm.name
        ),
        Ok(None) => {}
        Err(e) => {
            tracing::debug!("cannot read the VM's /etc/os-release: {e}");
            return Ok(());
        }
    }
    crate::state::write_atomically(&checked, b"")
}
