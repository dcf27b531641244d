//! The `native` backend: a Linux machine with a working Docker needs no VM. Commands run here,
//! in the project itself, so there is nothing to sync and no SSH endpoint.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Backend, MachineState};
use crate::config::BackendKind;
use crate::error::{Error, Result};
use crate::ssh::Endpoint;

pub struct NativeBackend;

/// Does `docker info` succeed within a few seconds?
pub fn docker_answers() -> bool {
    let Ok(mut child) = Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

impl Backend for NativeBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Native
    }

    fn state(&self) -> Result<MachineState> {
        Ok(if docker_answers() {
            MachineState::Running
        } else {
            MachineState::Other("docker does not answer".into())
        })
    }

    fn start(&self) -> Result<()> {
        if docker_answers() {
            return Ok(());
        }
        Err(Error::Other(
            "the native backend needs a running Docker engine here: `docker info` fails; \
             start it (`sudo systemctl start docker`) or choose another backend"
                .into(),
        ))
    }

    fn stop(&self) -> Result<()> {
        Err(Error::Usage("the native backend has no VM to stop".into()))
    }

    fn destroy(&self) -> Result<()> {
        Ok(())
    }

    fn endpoint(&self) -> Result<Endpoint> {
        Err(Error::Usage(
            "the native backend runs commands on this machine; there is no SSH endpoint".into(),
        ))
    }

    fn last_endpoint(&self) -> Option<Endpoint> {
        None
    }

    fn runs_locally(&self) -> bool {
        true
    }
}
