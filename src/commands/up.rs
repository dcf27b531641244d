//! `up [--backend B] [--no-provision]`: the machine running, provisioned, its host key pinned,
//! and the project synced. Fast when all of that is already true: one SSH connection to the
//! endpoint seen last time and one stamp check, with no call to limactl or vagrant.

use std::time::{Duration, Instant};

use super::Context;
use crate::backend::Backend;
use crate::cli::UpArgs;
use crate::error::{Error, Result};
use crate::progress::Step;
use crate::ssh::{Endpoint, Session};
use crate::state::Lock;
use crate::{provision, sync};

/// How long a new or resumed VM gets to answer SSH.
const SSH_DEADLINE: Duration = Duration::from_secs(300);

pub async fn run(ctx: &Context, args: UpArgs) -> Result<()> {
    let started = Instant::now();
    let backend = ctx.backend(args.backend)?;
    let session = bring_up(ctx, backend.as_ref(), !args.no_provision, true).await?;
    if !ctx.quiet {
        match session {
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

/// The work of `up`, shared with `build-image`: the machine running, provisioned and synced
/// as asked. `None` for the native backend, where commands run on this machine.
pub async fn bring_up(
    ctx: &Context,
    backend: &dyn Backend,
    provision: bool,
    sync: bool,
) -> Result<Option<Session>> {
    let vm = &ctx.project.config.vm.name;
    // Two `up` for one project wait for each other instead of creating two VMs.
    let _lock = Lock::acquire(&ctx.state.vm_dir(vm)?.join("up.lock"))?;
    if backend.runs_locally() {
        tokio::task::block_in_place(|| backend.start())?;
        return Ok(None);
    }
    let session = match reuse(backend).await {
        Some(session) => session,
        None => start(ctx, backend).await?,
    };
    // Sync first: it finds the remote agent, through which the stamp check then goes.
    if sync {
        let pending = sync::begin(&ctx.project, &ctx.state)?;
        let options = sync::Options {
            dry_run: false,
            progress: !ctx.quiet,
        };
        let summary = pending.finish(&session, &options).await?;
        if summary.changed() && !ctx.quiet {
            eprintln!("{summary}");
        }
    }
    if provision {
        provision_if_needed(ctx, &session).await?;
    }
    Ok(Some(session))
}

/// Run the provision scripts unless the machine's stamp says they already ran.
pub async fn provision_if_needed(ctx: &Context, session: &Session) -> Result<()> {
    let scripts = provision::scripts_for(&ctx.project)?;
    let stamp = provision::stamp(&scripts);
    if !provision::is_current(session, &stamp).await? {
        provision::run(session, &scripts, &stamp, ctx.quiet).await?;
    }
    provision::remember(&ctx.state.vm_dir(&ctx.project.config.vm.name)?, &stamp)
}

/// The machine as it was left: connect to the endpoint seen last time, if it still answers.
async fn reuse(backend: &dyn Backend) -> Option<Session> {
    let endpoint = backend.last_endpoint()?;
    match tokio::time::timeout(Duration::from_secs(3), Session::connect(&endpoint)).await {
        Ok(Ok(session)) => Some(session),
        Ok(Err(e)) => {
            tracing::debug!("last endpoint {endpoint} does not answer: {e}");
            None
        }
        Err(_) => None,
    }
}

/// Create or resume the machine and wait for its SSH.
async fn start(ctx: &Context, backend: &dyn Backend) -> Result<Session> {
    let step = Step::new("starting the VM", ctx.quiet);
    let started = tokio::task::block_in_place(|| backend.start().and_then(|()| backend.endpoint()));
    step.finish();
    let endpoint = started?;
    let step = Step::new("waiting for SSH", ctx.quiet);
    let session = wait_for_ssh(&endpoint, SSH_DEADLINE).await;
    step.finish();
    session
}

/// Poll until SSH answers, or give up at the deadline. A changed host key or an unusable
/// identity ends the wait at once.
async fn wait_for_ssh(endpoint: &Endpoint, timeout: Duration) -> Result<Session> {
    let deadline = Instant::now() + timeout;
    loop {
        match Session::connect(endpoint).await {
            Ok(session) => return Ok(session),
            Err(e @ (Error::HostKeyMismatch { .. } | Error::Identity { .. })) => return Err(e),
            Err(e) if Instant::now() >= deadline => {
                return Err(Error::Other(format!(
                    "the VM did not answer SSH within {} s: {e}\nnext: `n10n-dev status`, and the \
                     backend's own logs",
                    timeout.as_secs()
                )));
            }
            Err(e) => tracing::debug!("waiting for SSH: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
