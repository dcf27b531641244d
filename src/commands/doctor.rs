//! `doctor`: what this machine has, which backend n10n-dev would use, and what to install.

use super::Context;
use crate::backend;
use crate::error::Result;
use crate::host::{CpuArch, Os};

pub async fn run(ctx: &Context) -> Result<()> {
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
    println!(
        "host:      {os} {arch} ({})",
        facts.os_version.as_deref().unwrap_or("version unknown")
    );
    let install = |tool: &str| match (facts.os, tool) {
        (Os::MacOs, "limactl") => "brew install lima",
        (Os::MacOs, "vagrant") => "brew install --cask vagrant",
        (Os::MacOs, "VBoxManage") => "brew install --cask virtualbox (Intel Macs)",
        (Os::MacOs, "docker") => "brew install docker (the client; the engine runs in the VM)",
        (_, "docker") => "apt-get install docker.io",
        (_, "limactl") => "see https://lima-vm.io/docs/installation/",
        _ => "see the tool's installation guide",
    };
    let tools = &facts.tools;
    for (name, path) in [
        ("limactl", &tools.limactl),
        ("vagrant", &tools.vagrant),
        ("VBoxManage", &tools.vboxmanage),
        ("docker", &tools.docker),
    ] {
        match path {
            Some(path) => println!("{name:<10} {}", path.display()),
            None => println!("{name:<10} not found (install: {})", install(name)),
        }
    }
    println!(
        "project:   {} ({})",
        ctx.project.root.display(),
        ctx.project.name
    );
    let requested = backend::requested(None, &ctx.project)?;
    match backend::chosen(None, &ctx.project, facts) {
        Ok(kind) if kind == requested => println!("backend:   {kind}"),
        Ok(kind) => println!("backend:   {requested} → {kind}"),
        Err(e) => println!("backend:   {requested}: {e}"),
    }
    match ctx.backend(None) {
        Ok(_) => println!("verdict:   ready; `n10n-dev up` starts the build machine"),
        Err(e) => println!("verdict:   not ready: {e}"),
    }
    Ok(())
}
