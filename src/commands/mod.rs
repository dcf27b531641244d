//! One file per subcommand; orchestration only.

pub mod build_image;
pub mod destroy;
pub mod doctor;
pub mod provision;
pub mod run;
pub mod shell;
pub mod ssh_config;
pub mod status;
pub mod stop;
pub mod sync;
pub mod up;

use std::path::Path;

use crate::backend::{self, Backend};
use crate::config::{BackendKind, Project};
use crate::error::Result;
use crate::host::HostFacts;
use crate::ssh::{Endpoint, Session};
use crate::state::StateDir;

/// What every command starts from: the project, the state dir and the host facts.
pub struct Context {
    pub project: Project,
    pub state: StateDir,
    pub facts: HostFacts,
    pub quiet: bool,
}

impl Context {
    pub fn new(directory: Option<&Path>, quiet: bool) -> Result<Context> {
        let start = match directory {
            Some(dir) => dir.to_path_buf(),
            None => std::env::current_dir()
                .map_err(|e| crate::error::Error::io("cannot read the current directory", e))?,
        };
        Ok(Context {
            project: Project::discover(&start)?,
            state: StateDir::locate()?,
            facts: HostFacts::detect(),
            quiet,
        })
    }

    pub fn backend(&self, flag: Option<BackendKind>) -> Result<Box<dyn Backend>> {
        backend::open(flag, &self.project, &self.facts, &self.state)
    }

    /// Where the machine was last seen, else where its tool says it is.
    pub fn endpoint(&self, backend: &dyn Backend) -> Result<Endpoint> {
        match backend.last_endpoint() {
            Some(endpoint) => Ok(endpoint),
            None => tokio::task::block_in_place(|| backend.endpoint()),
        }
    }

    /// Connect to the machine: first where it was last seen (no call to its tool), then where
    /// its tool says it is now.
    pub async fn connect(&self, backend: &dyn Backend) -> Result<Session> {
        let last = backend.last_endpoint();
        let mut failure = None;
        if let Some(endpoint) = &last {
            // Any failure, a host key mismatch included, may only mean the address is stale:
            // Lima gives a restarted VM a new port, and another VM may have the old one.
            match Session::connect(endpoint).await {
                Ok(session) => return Ok(session),
                Err(e) => failure = Some(e),
            }
        }
        let current = tokio::task::block_in_place(|| backend.endpoint())?;
        match failure {
            Some(e) if last.as_ref() == Some(&current) => Err(e),
            _ => Session::connect(&current).await,
        }
    }
}
