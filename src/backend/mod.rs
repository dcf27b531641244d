//! Backends: how to get a machine running and an SSH endpoint for it. One file per backend.
//! The calls are blocking (they wait for tools such as `limactl`); commands run them off the
//! async threads.

mod lima;
mod native;
mod ssh;
mod vagrant;

use crate::config::{BackendKind, Project};
use crate::error::{Error, Result};
use crate::host::{HostFacts, Os};
use crate::ssh::Endpoint;
use crate::state::StateDir;

pub use lima::LimaBackend;
pub use native::NativeBackend;
pub use ssh::SshBackend;
pub use vagrant::VagrantBackend;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MachineState {
    Absent,
    Stopped,
    Running,
    /// Needs a forced stop before it can start again; the tool's own words.
    Broken(String),
    /// A state the tool reports that n10n-dev has no name for.
    Other(String),
}

impl std::fmt::Display for MachineState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MachineState::Absent => f.write_str("not created"),
            MachineState::Stopped => f.write_str("stopped"),
            MachineState::Running => f.write_str("running"),
            MachineState::Broken(why) if why.is_empty() => f.write_str("broken"),
            MachineState::Broken(why) => write!(f, "broken ({why})"),
            MachineState::Other(state) => f.write_str(state),
        }
    }
}

pub trait Backend: Send + Sync {
    fn state(&self) -> Result<MachineState>;
    /// Create the machine, or resume it; nothing when it is running.
    fn start(&self) -> Result<()>;
    fn stop(&self) -> Result<()>;
    /// Delete the machine (not n10n-dev's own state about it).
    fn destroy(&self) -> Result<()>;
    /// Where to reach the running machine over SSH (asks the tool).
    fn endpoint(&self) -> Result<Endpoint>;
    /// The endpoint as last seen, without asking the tool; it may be stale.
    fn last_endpoint(&self) -> Option<Endpoint>;
    /// Commands run on this machine, in the project itself (no SSH, no sync).
    fn runs_locally(&self) -> bool {
        false
    }
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
/// when Docker answers, else lima, else vagrant. `docker_answers` is asked only on Linux with
/// docker on PATH (it runs `docker info`).
pub fn resolve(
    kind: BackendKind,
    facts: &HostFacts,
    docker_answers: impl FnOnce() -> bool,
) -> Result<BackendKind> {
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
        Os::Linux if tools.docker.is_some() && docker_answers() => Ok(BackendKind::Native),
        Os::Linux if tools.limactl.is_some() => Ok(BackendKind::Lima),
        Os::Linux if vagrant => Ok(BackendKind::Vagrant),
        _ => Err(Error::Usage(
            "no backend fits this machine: install Docker, Lima or Vagrant, or set [vm] backend = \"ssh\""
                .into(),
        )),
    }
}

/// The backend that will serve: the one requested, with `auto` resolved on this machine.
pub fn chosen(
    flag: Option<BackendKind>,
    project: &Project,
    facts: &HostFacts,
) -> Result<BackendKind> {
    resolve(requested(flag, project)?, facts, native::docker_answers)
}

/// Open the project's backend.
pub fn open(
    flag: Option<BackendKind>,
    project: &Project,
    facts: &HostFacts,
    state: &StateDir,
) -> Result<Box<dyn Backend>> {
    match chosen(flag, project, facts)? {
        BackendKind::Ssh => Ok(Box::new(SshBackend::new(project, state)?)),
        BackendKind::Native => Ok(Box::new(NativeBackend)),
        BackendKind::Lima => {
            let limactl = facts.tools.limactl.clone().ok_or_else(|| {
                Error::Usage("limactl is not on PATH: install Lima with `brew install lima`".into())
            })?;
            Ok(Box::new(LimaBackend::new(limactl, project, state)?))
        }
        BackendKind::Vagrant => {
            let vagrant = facts.tools.vagrant.clone().ok_or_else(|| {
                Error::Usage(
                    "vagrant is not on PATH: install Vagrant and VirtualBox, or Lima (`brew install lima`)"
                        .into(),
                )
            })?;
            Ok(Box::new(VagrantBackend::new(vagrant, project, state)?))
        }
        // `resolve` never answers `auto`.
        BackendKind::Auto => Err(Error::Other("backend selection answered `auto`".into())),
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
        assert_eq!(
            resolve(BackendKind::Auto, &mac, || true).unwrap(),
            BackendKind::Lima
        );
    }

    #[test]
    fn auto_falls_back_to_vagrant_only_with_virtualbox() {
        let with_vbox = facts(Os::MacOs, &["vagrant", "VBoxManage"]);
        assert_eq!(
            resolve(BackendKind::Auto, &with_vbox, || true).unwrap(),
            BackendKind::Vagrant
        );
        let err = resolve(BackendKind::Auto, &facts(Os::MacOs, &["vagrant"]), || true).unwrap_err();
        assert!(err.to_string().contains("brew install lima"), "{err}");
    }

    #[test]
    fn auto_on_linux_uses_docker_first() {
        let linux = facts(Os::Linux, &["docker", "limactl"]);
        assert_eq!(
            resolve(BackendKind::Auto, &linux, || true).unwrap(),
            BackendKind::Native
        );
        let no_docker = facts(Os::Linux, &["limactl"]);
        assert_eq!(
            resolve(BackendKind::Auto, &no_docker, || true).unwrap(),
            BackendKind::Lima
        );
        assert!(resolve(BackendKind::Auto, &facts(Os::Linux, &[]), || true).is_err());
        let silent_docker = facts(Os::Linux, &["docker", "limactl"]);
        assert_eq!(
            resolve(BackendKind::Auto, &silent_docker, || false).unwrap(),
            BackendKind::Lima,
            "docker on PATH whose daemon does not answer"
        );
    }

    #[test]
    fn explicit_choice_is_kept() {
        let bare = facts(Os::Linux, &[]);
        assert_eq!(
            resolve(BackendKind::Ssh, &bare, || true).unwrap(),
            BackendKind::Ssh
        );
    }
}
