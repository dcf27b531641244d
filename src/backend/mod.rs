//! Backends: how to get a machine running and an SSH endpoint for it. One file per backend.
//! The calls are blocking (they wait for tools such as `limactl`); commands run them off the
//! async threads.

mod lima;
pub mod native;
mod ssh;
mod vagrant;

use crate::config::{BackendKind, Project};
use crate::error::{Error, Result};
use crate::host::{HostFacts, Os, install_hint};
use crate::ssh::Endpoint;
use crate::state::StateDir;

pub use lima::LimaBackend;
pub use native::NativeBackend;
pub use ssh::SshBackend;
pub use vagrant::{VagrantBackend, plugin_installed as vagrant_plugin_installed};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MachineState {
    Absent,
    Stopped,
    Running,
    /// Needs a forced stop before it can start again; the tool's own words.
    Broken(String),
    /// A state the tool reports that n10n-dev has no name for.
    Other(String),
    /// An ssh host that accepted a TCP connection to its SSH port just now.
    Reachable,
    /// An ssh host that did not, and why.
    Unreachable(String),
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
            MachineState::Reachable => f.write_str("reachable"),
            MachineState::Unreachable(why) => write!(f, "unreachable ({why})"),
        }
    }
}

pub trait Backend: Send + Sync {
    fn kind(&self) -> BackendKind;
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

/// Remember where a VM's SSH answered (`vm_dir/endpoint.json`), so later commands need no call
/// to its tool.
fn remember_endpoint(vm_dir: &std::path::Path, endpoint: &Endpoint) -> Result<()> {
    let json = serde_json::to_vec(endpoint).expect("plain data");
    crate::state::write_atomically(&vm_dir.join("endpoint.json"), &json)
}

fn remembered_endpoint(vm_dir: &std::path::Path) -> Option<Endpoint> {
    serde_json::from_slice(&std::fs::read(vm_dir.join("endpoint.json")).ok()?).ok()
}

/// A value from an OpenSSH config block: `Key value`, the value maybe double-quoted.
fn ssh_config_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.trim().split_once(char::is_whitespace)?;
        k.eq_ignore_ascii_case(key)
            .then(|| v.trim().trim_matches('"').to_string())
    })
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

/// Questions `auto` puts to this machine only when the answer matters (each runs a tool).
pub struct Probes<'a> {
    /// Does `docker info` succeed?
    pub docker_answers: &'a dyn Fn() -> bool,
    /// Is this limactl Lima 2.0 or newer?
    pub lima_is_recent: &'a dyn Fn(&std::path::Path) -> bool,
}

/// Resolve `auto` from host facts: macOS → lima if limactl ≥ 2.0 is there, else vagrant with
/// VirtualBox; Linux → native when Docker answers, else lima, else vagrant.
pub fn resolve(kind: BackendKind, facts: &HostFacts, probes: &Probes<'_>) -> Result<BackendKind> {
    if kind != BackendKind::Auto {
        return Ok(kind);
    }
    let tools = &facts.tools;
    let vagrant = tools.vagrant.is_some() && tools.vboxmanage.is_some();
    let lima = || tools.limactl.as_deref().is_some_and(probes.lima_is_recent);
    match facts.os {
        Os::MacOs if lima() => Ok(BackendKind::Lima),
        Os::MacOs if vagrant => Ok(BackendKind::Vagrant),
        Os::MacOs => Err(Error::Usage(
            "no VM tool found: install Lima 2.0 or newer with `brew install lima` (or `brew upgrade \
             lima`), or Vagrant and VirtualBox; or set [vm] backend = \"ssh\" to use an existing \
             Linux host"
                .into(),
        )),
        Os::Linux if tools.docker.is_some() && (probes.docker_answers)() => Ok(BackendKind::Native),
        Os::Linux if lima() => Ok(BackendKind::Lima),
        Os::Linux if vagrant => Ok(BackendKind::Vagrant),
        Os::Linux if tools.docker.is_some() => Err(Error::Usage(
            "the Docker CLI is here but no engine answers: start it (sudo systemctl start docker), \
             or install Lima or Vagrant, or set [vm] backend = \"ssh\""
                .into(),
        )),
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
    let probes = Probes {
        docker_answers: &native::docker_answers,
        lima_is_recent: &lima::is_recent,
    };
    resolve(requested(flag, project)?, facts, &probes)
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
                Error::Usage(format!(
                    "limactl is not on PATH: install Lima ({})",
                    install_hint(facts.os, "limactl")
                ))
            })?;
            Ok(Box::new(LimaBackend::new(limactl, project, state)?))
        }
        BackendKind::Vagrant => {
            let vagrant = facts.tools.vagrant.clone().ok_or_else(|| {
                Error::Usage(format!(
                    "vagrant is not on PATH: install Vagrant ({}) and VirtualBox ({}), or Lima ({})",
                    install_hint(facts.os, "vagrant"),
                    install_hint(facts.os, "VBoxManage"),
                    install_hint(facts.os, "limactl")
                ))
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

    const YES: Probes<'static> = Probes {
        docker_answers: &|| true,
        lima_is_recent: &|_| true,
    };
    const DOCKER_SILENT: Probes<'static> = Probes {
        docker_answers: &|| false,
        lima_is_recent: &|_| true,
    };

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
            resolve(BackendKind::Auto, &mac, &YES).unwrap(),
            BackendKind::Lima
        );
    }

    #[test]
    fn auto_skips_an_old_lima() {
        let old_lima = Probes {
            docker_answers: &|| true,
            lima_is_recent: &|_| false,
        };
        let mac = facts(Os::MacOs, &["limactl", "vagrant", "VBoxManage"]);
        assert_eq!(
            resolve(BackendKind::Auto, &mac, &old_lima).unwrap(),
            BackendKind::Vagrant
        );
        let err = resolve(
            BackendKind::Auto,
            &facts(Os::MacOs, &["limactl"]),
            &old_lima,
        )
        .unwrap_err();
        assert!(err.to_string().contains("brew upgrade lima"), "{err}");
    }

    #[test]
    fn auto_falls_back_to_vagrant_only_with_virtualbox() {
        let with_vbox = facts(Os::MacOs, &["vagrant", "VBoxManage"]);
        assert_eq!(
            resolve(BackendKind::Auto, &with_vbox, &YES).unwrap(),
            BackendKind::Vagrant
        );
        let err = resolve(BackendKind::Auto, &facts(Os::MacOs, &["vagrant"]), &YES).unwrap_err();
        assert!(err.to_string().contains("brew install lima"), "{err}");
    }

    #[test]
    fn auto_on_linux_uses_docker_first() {
        let linux = facts(Os::Linux, &["docker", "limactl"]);
        assert_eq!(
            resolve(BackendKind::Auto, &linux, &YES).unwrap(),
            BackendKind::Native
        );
        let no_docker = facts(Os::Linux, &["limactl"]);
        assert_eq!(
            resolve(BackendKind::Auto, &no_docker, &YES).unwrap(),
            BackendKind::Lima
        );
        assert!(resolve(BackendKind::Auto, &facts(Os::Linux, &[]), &YES).is_err());
        let silent_docker = facts(Os::Linux, &["docker", "limactl"]);
        assert_eq!(
            resolve(BackendKind::Auto, &silent_docker, &DOCKER_SILENT).unwrap(),
            BackendKind::Lima,
            "docker on PATH whose daemon does not answer"
        );
    }

    #[test]
    fn explicit_choice_is_kept() {
        let bare = facts(Os::Linux, &[]);
        assert_eq!(
            resolve(BackendKind::Ssh, &bare, &YES).unwrap(),
            BackendKind::Ssh
        );
    }
}
