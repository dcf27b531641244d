//! One file per subcommand; orchestration only.

pub mod run;
pub mod shell;
pub mod ssh_config;
pub mod sync;

use std::path::Path;

use crate::backend;
use crate::config::Project;
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

    pub fn endpoint(&self) -> Result<Endpoint> {
        backend::open(None, &self.project, &self.facts, &self.state)?.endpoint()
    }

    pub async fn connect(&self) -> Result<Session> {
        Session::connect(&self.endpoint()?).await
    }
}
