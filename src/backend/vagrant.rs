//! The `vagrant` backend: drives `vagrant` with VirtualBox, by its documented CLI contract.
//!
//! - `vagrant status --machine-readable` prints `timestamp,target,type,data` lines; data fields
//!   have `,` escaped as `%!(VAGRANT_COMMA)` and newlines as a literal `\n`. The `state` line
//!   carries the machine state id (`not_created`, `running`, `poweroff`, `saved`, `aborted`, ...);
//!   `error-exit` lines carry the error class and message.
//! - `vagrant up` creates or resumes (and runs the Vagrantfile's provisioners on creation);
//!   `halt` stops; `destroy -f` deletes (without `-f` it needs a TTY).
//! - `vagrant ssh-config` prints an OpenSSH Host block. Every vagrant call costs 1.5–2 s of Ruby
//!   start-up, so the endpoint is cached and SSH is spoken directly afterwards.
//!
//! The Vagrantfile and provision scripts are n10n-dev's own, written to the VM's state directory,
//! which becomes VAGRANT_CWD.

use std::path::PathBuf;
use std::process::{Command, Output};

use super::{Backend, MachineState};
use crate::config::{BackendKind, Project};
use crate::error::{Error, IoContext, Result};
use crate::ssh::Endpoint;
use crate::state::{self, StateDir};

const VAGRANTFILE: &str = include_str!("../../Vagrantfile");
const SCRIPTS: [(&str, &str); 3] = [
    ("docker.sh", include_str!("../../provision/docker.sh")),
    ("jvm.sh", include_str!("../../provision/jvm.sh")),
    ("rust.sh", include_str!("../../provision/rust.sh")),
];

pub struct VagrantBackend {
    vagrant: PathBuf,
    name: String,
    vm_dir: PathBuf,
    /// VAGRANT_CWD: the Vagrantfile, provision/ and Vagrant's own `.vagrant/`.
    dir: PathBuf,
    env: Vec<(&'static str, String)>,
    known_hosts: PathBuf,
    /// `vagrant up --provider`.
    provider: String,
}

impl VagrantBackend {
    pub fn new(vagrant: PathBuf, project: &Project, state: &StateDir) -> Result<VagrantBackend> {
        let vm = &project.config.vm;
        let vm_dir = state.vm_dir(&vm.name)?;
        let toolchains: Vec<&str> = vm
            .toolchains
            .iter()
            .map(|t| match t {
                crate::config::Toolchain::Jvm => "jvm",
                crate::config::Toolchain::Rust => "rust",
            })
            .collect();
        Ok(VagrantBackend {
            vagrant,
            name: vm.name.clone(),
            dir: vm_dir.join("vagrant"),
            vm_dir: vm_dir.clone(),
            env: vec![
                ("N10N_VM_NAME", vm.name.clone()),
                ("N10N_CPUS", vm.cpus.to_string()),
                ("N10N_MEMORY_MB", (vm.memory.0 >> 20).to_string()),
                ("N10N_TOOLCHAINS", toolchains.join(",")),
                ("N10N_PROVIDER", project.config.vagrant.provider.clone()),
            ],
            known_hosts: vm_dir.join("known_hosts"),
            provider: project.config.vagrant.provider.clone(),
        })
    }

    fn vagrant(&self, args: &[&str]) -> Result<Output> {
        tracing::debug!("vagrant {}", args.join(" "));
        Command::new(&self.vagrant)
            .args(args)
            .env("VAGRANT_CWD", &self.dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .context(|| format!("cannot run {}", self.vagrant.display()))
    }

    fn write_files(&self) -> Result<()> {
        state::create_private_dir(&self.dir.join("provision"))?;
        state::write_atomically(&self.dir.join("Vagrantfile"), VAGRANTFILE.as_bytes())?;
        for (name, body) in SCRIPTS {
            state::write_atomically(&self.dir.join("provision").join(name), body.as_bytes())?;
        }
        Ok(())
    }

    fn run_checked(&self, what: &str, args: &[&str]) -> Result<()> {
        let out = self.vagrant(args)?;
        if out.status.success() {
            return Ok(());
        }
        let lines = parse_machine_readable(&String::from_utf8_lossy(&out.stdout));
        let reason = lines
            .iter()
            .find(|l| l.kind == "error-exit")
            .map(|l| l.data.join(": "))
            .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string());
        Err(Error::Other(format!(
            "`vagrant {}` failed while {what}:\n{reason}\nnext: `VAGRANT_CWD={} vagrant status` shows the VM",
            args.join(" "),
            self.dir.display()
        )))
    }
}

impl Backend for VagrantBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Vagrant
    }

    fn state(&self) -> Result<MachineState> {
        if !self.dir.join("Vagrantfile").is_file() {
            return Ok(MachineState::Absent);
        }
        let out = self.vagrant(&["status", "--machine-readable"])?;
        let lines = parse_machine_readable(&String::from_utf8_lossy(&out.stdout));
        let state = lines
            .iter()
            .find(|l| l.kind == "state")
            .and_then(|l| l.data.first().cloned())
            .ok_or_else(|| {
                Error::Other(format!(
                    "`vagrant status` gave no state: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            })?;
        Ok(match state.as_str() {
            "not_created" => MachineState::Absent,
            "running" => MachineState::Running,
            "poweroff" | "saved" | "aborted" => MachineState::Stopped,
            "stuck" | "gurumeditation" | "inaccessible" => MachineState::Broken(state),
            other => MachineState::Other(other.to_string()),
        })
    }

    fn start(&self) -> Result<()> {
        self.write_files()?;
        if self.state()? == MachineState::Running {
            return Ok(());
        }
        let provider = format!("--provider={}", self.provider);
        self.run_checked("starting the VM", &["up", &provider, "--machine-readable"])
    }

    fn stop(&self) -> Result<()> {
        if self.state()? != MachineState::Running {
            return Ok(());
        }
        self.run_checked("stopping the VM", &["halt", "--machine-readable"])
    }

    fn destroy(&self) -> Result<()> {
        if self.state()? == MachineState::Absent {
            return Ok(());
        }
        self.run_checked("deleting the VM", &["destroy", "-f", "--machine-readable"])
    }

    fn endpoint(&self) -> Result<Endpoint> {
        let out = self.vagrant(&["ssh-config"])?;
        if !out.status.success() {
            return Err(Error::Other(format!(
                "the Vagrant VM `{}` is not running; run `n10n-dev up`",
                self.name
            )));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let value = |key: &str| super::ssh_config_value(&text, key);
        let missing = || {
            Error::Other("`vagrant ssh-config` lacks HostName, Port, User or IdentityFile".into())
        };
        let endpoint = Endpoint {
            host: value("HostName").ok_or_else(missing)?,
            port: value("Port")
                .and_then(|p| p.parse().ok())
                .ok_or_else(missing)?,
            user: value("User").ok_or_else(missing)?,
            identity: PathBuf::from(value("IdentityFile").ok_or_else(missing)?),
            host_key_alias: self.name.clone(),
            known_hosts: self.known_hosts.clone(),
        };
        super::remember_endpoint(&self.vm_dir, &endpoint)?;
        Ok(endpoint)
    }

    fn last_endpoint(&self) -> Option<Endpoint> {
        super::remembered_endpoint(&self.vm_dir)
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Line {
    target: String,
    kind: String,
    data: Vec<String>,
}

/// `timestamp,target,type,data...`, unescaped.
/// Whether `vagrant plugin list` names `plugin` (its lines: `name (version, scope)`).
pub fn plugin_installed(vagrant: &std::path::Path, plugin: &str) -> Result<bool> {
    let out = Command::new(vagrant)
        .args(["plugin", "list"])
        .output()
        .context(|| format!("cannot run {}", vagrant.display()))?;
    if !out.status.success() {
        return Err(Error::Other(format!(
            "`vagrant plugin list` failed: {}",
            crate::terminal_text::lines(&out.stderr).trim()
        )));
    }
    let listed = String::from_utf8_lossy(&out.stdout);
    Ok(listed
        .lines()
        .any(|line| line.split_whitespace().next() == Some(plugin)))
}

fn parse_machine_readable(text: &str) -> Vec<Line> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(4, ',');
            let (_ts, target, kind) = (parts.next()?, parts.next()?, parts.next()?);
            let data = parts
                .next()
                .unwrap_or("")
                .split(',')
                .map(|field| {
                    field
                        .replace("%!(VAGRANT_COMMA)", ",")
                        .replace("\\n", "\n")
                        .replace("\\r", "\r")
                })
                .collect();
            Some(Line {
                target: target.to_string(),
                kind: kind.to_string(),
                data,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_readable_lines_are_unescaped() {
        let text = "1754550000,default,metadata,provider,virtualbox\n\
                    1754550000,default,state,running\n\
                    1754550000,default,state-human-long,The VM is running. To stop this VM%!(VAGRANT_COMMA) you can run `vagrant halt` to\\nshut it down\n\
                    1754550001,,error-exit,Vagrant::Errors::UIExpectsTTY,Vagrant is attempting to interface with the UI in a way that requires a TTY.\n";
        let lines = parse_machine_readable(text);
        assert_eq!(
            lines[1],
            Line {
                target: "default".into(),
                kind: "state".into(),
                data: vec!["running".into()]
            }
        );
        assert!(
            lines[2].data[0]
                .contains("To stop this VM, you can run `vagrant halt` to\nshut it down")
        );
        assert_eq!(lines[3].target, "");
        assert_eq!(lines[3].data[0], "Vagrant::Errors::UIExpectsTTY");
    }
}
