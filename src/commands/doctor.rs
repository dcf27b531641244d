//! `doctor`: what this machine has, which backend n10n-dev would use, and what to install.
//! Exits 1 when the verdict is "not ready".

use super::Context;
use crate::backend::{self, MachineState, native};
use crate::config::BackendKind;
use crate::error::Result;
use crate::host::{CpuArch, Os};
use crate::outln;
use crate::user_config;

pub async fn run(ctx: &Context) -> Result<i32> {
    let facts = &ctx.facts;
    let os = match facts.os {
        Os::MacOs => "macOS",
        Os::Linux => "Linux",
        Os::Other => std::env::consts::OS,
    };
    let arch = match facts.arch {
        CpuArch::X86_64 => "x86_64",
        CpuArch::Aarch64 => "arm64",
        CpuArch::Other => std::env::consts::ARCH,
    };
    outln!(
        "host:      {os} {arch} ({})",
        facts.os_version.as_deref().unwrap_or("version unknown")
    )?;
    let install = |tool: &str| crate::host::install_hint(facts.os, tool);
    let tools = &facts.tools;
    for (name, path) in [
        ("limactl", &tools.limactl),
        ("vagrant", &tools.vagrant),
        ("VBoxManage", &tools.vboxmanage),
    ] {
        match path {
            Some(path) => outln!("{name:<10} {}", path.display())?,
            None => outln!("{name:<10} not found (install: {})", install(name))?,
        }
    }
    let engine = tools.docker.as_ref().map(|_| native::docker_answers());
    match (&tools.docker, engine) {
        (None, _) => outln!(
            "{:<10} not found (install: {})",
            "docker",
            install("docker")
        )?,
        (Some(path), Some(true)) => outln!("{:<10} {} (engine answers)", "docker", path.display())?,
        (Some(path), _) if facts.os == Os::MacOs => outln!(
            "{:<10} {} (the client; the engine runs in the VM)",
            "docker",
            path.display()
        )?,
        (Some(path), _) => outln!(
            "{:<10} {} (the CLI only: no engine answers; start it: sudo systemctl start docker)",
            "docker",
            path.display()
        )?,
    }
    outln!(
        "project:   {} ({})",
        ctx.project.root.display(),
        ctx.project.name
    )?;
    for file in &ctx.project.files_read {
        outln!("config:    {} (read)", file.display())?;
    }
    if let Some(user) = user_config::path().filter(|p| !ctx.project.files_read.contains(p)) {
        outln!(
            "config:    {} (none: the user's own settings are the defaults)",
            user.display()
        )?;
    }
    let requested = backend::requested(None, &ctx.project)?;
    let chosen = backend::chosen(None, &ctx.project, facts);
    match &chosen {
        Ok(kind) if *kind == requested => outln!("backend:   {kind}")?,
        Ok(kind) => outln!("backend:   {requested} → {kind}")?,
        // Why not is the verdict's to say.
        Err(_) => outln!("backend:   {requested} (not usable here)")?,
    }
    let verdict = match (chosen, ctx.backend()) {
        (_, Err(e)) => Err(e.to_string()),
        (Ok(BackendKind::Native), Ok(_)) if engine != Some(true) => Err(match engine {
            None => format!("no Docker here (install: {})", install("docker")),
            Some(_) => {
                "Docker is installed but no engine answers; start it: sudo systemctl start docker"
                    .to_string()
            }
        }),
        (Ok(BackendKind::Ssh), Ok(backend)) => ssh_host_ready(ctx, backend)?,
        (Ok(BackendKind::Vagrant), Ok(_)) => vagrant_provider_ready(ctx)?,
        (_, Ok(_)) => Ok(()),
    };
    match verdict {
        Ok(()) => {
            outln!("verdict:   ready; `n10n-dev up` starts the build machine")?;
            Ok(0)
        }
        Err(why) => {
            outln!("verdict:   not ready: {why}")?;
            Ok(1)
        }
    }
}

/// Vagrant is ready when its provider is: the plugin the provider needs is installed (the
/// provider's own software is the plugin's to check when `up` runs).
fn vagrant_provider_ready(ctx: &Context) -> Result<std::result::Result<(), String>> {
    let config = &ctx.project.config.vagrant;
    let provider = &config.provider;
    let Some(plugin) = config.plugin() else {
        outln!("provider:  {provider}")?;
        return Ok(Ok(()));
    };
    let vagrant = ctx.facts.tools.vagrant.as_deref();
    match vagrant.map(|v| backend::vagrant_plugin_installed(v, plugin)) {
        Some(Ok(true)) => {
            outln!("provider:  {provider} (plugin {plugin} installed)")?;
            Ok(Ok(()))
        }
        Some(Ok(false)) => {
            outln!("provider:  {provider} (plugin {plugin} not installed)")?;
            Ok(Err(format!(
                "the Vagrant provider {provider} needs the plugin {plugin}: vagrant plugin \
                 install {plugin}"
            )))
        }
        Some(Err(e)) => Ok(Err(e.to_string())),
        None => Ok(Err("vagrant is not on PATH".into())),
    }
}

/// An ssh host is ready when the key n10n-dev logs in with can be read and the host answers on
/// its SSH port; the line for each says what was found.
fn ssh_host_ready(
    ctx: &Context,
    backend: &dyn backend::Backend,
) -> Result<std::result::Result<(), String>> {
    let ssh = &ctx.project.config.ssh;
    let identity = ssh.identity.display();
    let key = std::fs::File::open(&ssh.identity);
    match &key {
        Ok(_) => outln!("identity:  {identity}")?,
        Err(e) => outln!("identity:  {identity}: {e}")?,
    }
    let state = match backend.state() {
        Ok(state) => state,
        Err(e) => return Ok(Err(e.to_string())),
    };
    outln!(
        "ssh host:  {}:{} {state}",
        ssh.host.as_deref().unwrap_or("-"),
        ssh.port
    )?;
    if let Err(e) = key {
        return Ok(Err(format!(
            "cannot read the key {identity} ({e}): set [ssh] identity to your private key, or \
             make one with `ssh-keygen -t ed25519` and add its .pub to the host's \
             ~/.ssh/authorized_keys"
        )));
    }
    Ok(match state {
        MachineState::Reachable => Ok(()),
        _ => Err(
            "the host does not answer on its SSH port: is sshd running there? Are [ssh] \
                  host and port right?"
                .to_string(),
        ),
    })
}
