//! The `ssh` backend: an existing Linux host (a remote builder, a CI box) that is always running.

use super::{Backend, MachineState};
use crate::config::{BackendKind, Project};
use crate::error::{Error, Result};

/// How long `status` waits for the host's SSH port.
const STATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
use crate::ssh::Endpoint;
use crate::state::StateDir;

pub struct SshBackend {
    endpoint: Endpoint,
}

impl SshBackend {
    pub fn new(project: &Project, state: &StateDir) -> Result<SshBackend> {
        let ssh = &project.config.ssh;
        let host = ssh.host.clone().ok_or_else(|| {
            Error::Usage("the ssh backend needs [ssh] host in n10n-dev.toml".into())
        })?;
        let vm = &project.config.vm.name;
        Ok(SshBackend {
            endpoint: Endpoint {
                host,
                port: ssh.port,
                user: ssh.user.clone(),
                identity: ssh.identity.clone(),
                host_key_alias: vm.clone(),
                known_hosts: state.vm_dir(vm)?.join("known_hosts"),
            },
        })
    }
}

/// The host is someone else's to run: n10n-dev only reaches it.
impl Backend for SshBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Ssh
    }

    /// What one TCP connect to the SSH port says, within a second: n10n-dev does not run this
    /// host, so that is all it can check without logging in.
    fn state(&self) -> Result<MachineState> {
        use std::net::ToSocketAddrs;
        let target = format!("{}:{}", self.endpoint.host, self.endpoint.port);
        let addresses = match target.to_socket_addrs() {
            Ok(addresses) => addresses.collect::<Vec<_>>(),
            Err(e) => return Ok(MachineState::Unreachable(format!("{target}: {e}"))),
        };
        let mut last = format!("{target}: no address");
        for address in addresses {
            match std::net::TcpStream::connect_timeout(&address, STATE_TIMEOUT) {
                Ok(_) => return Ok(MachineState::Reachable),
                Err(e) => last = format!("{target}: {e}"),
            }
        }
        Ok(MachineState::Unreachable(last))
    }

    fn start(&self) -> Result<()> {
        Ok(())
    }

    /// The host is not n10n-dev's to stop (`stop` ends only the forwarder).
    fn stop(&self) -> Result<()> {
        Ok(())
    }

    fn destroy(&self) -> Result<()> {
        Ok(())
    }

    fn endpoint(&self) -> Result<Endpoint> {
        Ok(self.endpoint.clone())
    }

    fn last_endpoint(&self) -> Option<Endpoint> {
        Some(self.endpoint.clone())
    }
}
