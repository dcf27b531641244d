//! Backends: how to get a machine running and an SSH endpoint for it. One file per backend.

mod ssh;

use crate::config::{BackendKind, Project};
use crate::error::{Error, Result};
use crate::host::{HostFacts, Os};
use crate::ssh::Endpoint;
use crate::state::StateDir;

pub use ssh::SshBackend;

pub trait Backend {
    /// Where to reach the machine over SSH.
    fn endpoint(&self) -> Result<Endpoint>;
}

/// The backend asked for: `--backend`, else `N10N_DEV_BACKEND`, else the config file.
pub fn requested(flag: Option<BackendKind>, project: &Project) -> Result<BackendKind> {
    if let Some(kind) = flag {
        return Ok(kind);
    }
    match std::env::var("N10N_DEV_BACKEND") {
        Ok(value) if !value.is_empty() => value
            .parse()
            .map_err(|msg| Error::Usage(format!("N10N_DEV_BACKEND: {msg}"))),
        _ => Ok(project.config.vm.backend),
    }
}

/// Resolve `auto` from host facts: macOS → lima, else vagrant with VirtualBox; Linux → native
/// when Docker is there, else lima, else vagrant.
pub fn resolve(kind: BackendKind, facts: &HostFacts) -> Result<BackendKind> {
    if kind != BackendKind::Auto {
        return Ok(kind);
    }
    let tools = &facts.tools;
    let vagrant = tools.vagrant.is_some() && tools.vboxmanage.is_some();
    match facts.os {
        Os::MacOs if tools.limactl.is_some() => Ok(BackendKind::Lima),
        Os::MacOs if vagrant => Ok(BackendKind::Vagrant),
        Os::MacOs => Err(Error::Usage(
            "no VM tool found: install Lima with `brew install lima` (or Vagrant and VirtualBox), \
             or set [vm] backend = \"ssh\" to use an existing Linux host"
                .into(),
        )),
        Os::Linux if tools.docker.is_some() => Ok(BackendKind::Native),
        Os::Linux if tools.limactl.is_some() => Ok(BackendKind::Lima),
        Os::Linux if vagrant => Ok(BackendKind::Vagrant),
        _ => Err(Error::Usage(
            "no backend fits this machine: install Docker, Lima or Vagrant, or set [vm] backend = \"ssh\""
                .into(),
        )),
    }
}

/// Open the project's backend.
pub fn open(
    flag: Option<BackendKind>,
    project: &Project,
    facts: &HostFacts,
    state: &StateDir,
) -> Result<Box<dyn Backend>> {
    match resolve(requested(flag, project)?, facts)? {
        BackendKind::Ssh => Ok(Box::new(SshBackend::new(project, state)?)),
        other => Err(Error::Usage(format!(
            "the `{other}` backend is not available in this version of n10n-dev; \
             set [vm] backend = \"ssh\" with an [ssh] host, or N10N_DEV_BACKEND=ssh"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{CpuArch, Tools};
    use std::path::PathBuf;

    fn facts(os: Os, tools: &[&str]) -> HostFacts {
        let has = |name: &str| {
            tools
                .contains(&name)
                .then(|| PathBuf::from("/usr/bin").join(name))
        };
        HostFacts {
            os,
            arch: CpuArch::Aarch64,
            os_version: None,
            tools: Tools {
                limactl: has("limactl"),
                vagrant: has("vagrant"),
                vboxmanage: has("VBoxManage"),
                docker: has("docker"),
            },
        }
    }

    #[test]
    fn auto_prefers_lima_on_macos() {
        let mac = facts(Os::MacOs, &["limactl", "vagrant", "VBoxManage", "docker"]);
        assert_eq!(resolve(BackendKind::Auto, &mac).unwrap(), BackendKind::Lima);
    }

    #[test]
    fn auto_falls_back_to_vagrant_only_with_virtualbox() {
        let with_vbox = facts(Os::MacOs, &["vagrant", "VBoxManage"]);
        assert_eq!(
            resolve(BackendKind::Auto, &with_vbox).unwrap(),
            BackendKind::Vagrant
        );
        let err = resolve(BackendKind::Auto, &facts(Os::MacOs, &["vagrant"])).unwrap_err();
        assert!(err.to_string().contains("brew install lima"), "{err}");
    }

    #[test]
    fn auto_on_linux_uses_docker_first() {
        let linux = facts(Os::Linux, &["docker", "limactl"]);
        assert_eq!(
            resolve(BackendKind::Auto, &linux).unwrap(),
            BackendKind::Native
        );
        let no_docker = facts(Os::Linux, &["limactl"]);
        assert_eq!(
            resolve(BackendKind::Auto, &no_docker).unwrap(),
            BackendKind::Lima
        );
        assert!(resolve(BackendKind::Auto, &facts(Os::Linux, &[])).is_err());
    }

    #[test]
    fn explicit_choice_is_kept() {
        let bare = facts(Os::Linux, &[]);
        assert_eq!(resolve(BackendKind::Ssh, &bare).unwrap(), BackendKind::Ssh);
    }
}
