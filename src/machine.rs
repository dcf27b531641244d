//! Reaching the build machine, the workflows several commands share: connect (where it was last
//! seen, else where its tool says), bring it up (start, wait for SSH, sync, provision), and
//! connect with the replica brought up to date first.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::backend::{self, Backend};
pub use crate::build_machine::{Command, Machine};
use crate::config::{BackendKind, Project};
use crate::error::{Error, Result};
use crate::host::HostFacts;
use crate::image::{self, ImageFacts};
use crate::progress::Step;
use crate::ssh::{Endpoint, Session, Silence};
use crate::state::{Lock, StateDir};
use crate::{docker_context, forwarder, provision, sync};

/// How long the forwarder's kept connection gets to answer before a command connects itself.
const KEPT_DEADLINE: Duration = Duration::from_secs(2);
/// How long a new or resumed VM gets to answer SSH.
const SSH_DEADLINE: Duration = Duration::from_secs(300);
/// How long `up` gives an ssh host, which is either there or not.
const HOST_DEADLINE: Duration = Duration::from_secs(10);

/// An image `build-image` built (or the one a command was given), on the machine that has it.
pub struct BuiltImage {
    /// As given, or as `build-image` recorded it.
    pub name: String,
    pub facts: ImageFacts,
    pub machine: Machine,
}

/// What `bring_up` does besides bringing the machine up.
#[derive(Debug, Clone, Copy, Default)]
pub struct BringUp {
    /// Run the provision scripts unless the machine's stamp says they ran.
    pub provision: bool,
    /// Bring the replica up to date.
    pub sync: bool,
}

/// What every command starts from: the project, the state dir, the host facts, and the backend
/// (opened when first asked for, once).
pub struct Context {
    pub project: Project,
    pub state: StateDir,
    pub facts: HostFacts,
    pub quiet: bool,
    backend_flag: Option<BackendKind>,
    backend: OnceLock<Box<dyn Backend>>,
}

impl Context {
    pub fn new(directory: Option<&Path>, quiet: bool) -> Result<Context> {
        let start = match directory {
            Some(dir) if !dir.is_dir() => {
                return Err(Error::Usage(match dir.exists() {
                    true => format!("-C {}: not a directory", dir.display()),
                    false => format!("-C {}: no such directory", dir.display()),
                }));
            }
            Some(dir) => dir.to_path_buf(),
            None => std::env::current_dir()
                .map_err(|e| Error::io("cannot read the current directory", e))?,
        };
        Ok(Context {
            project: Project::discover(&start)?,
            state: StateDir::locate()?,
            facts: HostFacts::detect(),
            quiet,
            backend_flag: None,
            backend: OnceLock::new(),
        })
    }

    /// This backend rather than the configured one (`up --backend`).
    pub fn choosing_backend(mut self, flag: Option<BackendKind>) -> Context {
        self.backend_flag = flag;
        self
    }

    /// The project's backend: `--backend`, `N10N_DEV_BACKEND`, `[vm] backend`, or detected.
    pub fn backend(&self) -> Result<&dyn Backend> {
        if let Some(backend) = self.backend.get() {
            return Ok(backend.as_ref());
        }
        let opened = backend::open(self.backend_flag, &self.project, &self.facts, &self.state)?;
        Ok(self.backend.get_or_init(|| opened).as_ref())
    }

    /// Where the machine was last seen, else where its tool says it is.
    pub fn endpoint(&self) -> Result<Endpoint> {
        let backend = self.backend()?;
        match backend.last_endpoint() {
            Some(endpoint) => Ok(endpoint),
            None => tokio::task::block_in_place(|| backend.endpoint()),
        }
    }

    /// Connect to the machine: through the forwarder's kept connection when it offers one,
    /// else directly.
    pub async fn connect(&self) -> Result<Session> {
        match self.connect_kept().await {
            Some(session) => Ok(session),
            None => self.connect_direct(Silence::Ends).await,
        }
    }

    /// The forwarder's kept connection, when one runs and is connected to the machine: no
    /// handshake with the machine at all. Anything amiss means "not this way", never an error.
    async fn connect_kept(&self) -> Option<Session> {
        let backend = self.backend().ok()?;
        if backend.runs_locally() {
            return None;
        }
        let socket = self.forwarder_paths().ok()?.kept;
        if !socket.exists() {
            return None;
        }
        let endpoint = backend.last_endpoint()?;
        let attempt = Session::connect_kept(&endpoint, &socket);
        let made = tokio::time::timeout(KEPT_DEADLINE, attempt)
            .await
            .unwrap_or_else(|_| Err(Error::Other("no answer".into())));
        made.map_err(|e| tracing::debug!("no kept connection ({e}); connecting directly"))
            .ok()
    }

    /// Connect to the machine itself: first where it was last seen (no call to its tool), then
    /// where its tool says it is now. `silence` says what a peer that stops answering does.
    pub async fn connect_direct(&self, silence: Silence) -> Result<Session> {
        let backend = self.backend()?;
        let last = backend.last_endpoint();
        let mut failure = None;
        if let Some(endpoint) = &last {
            // Any failure, a host key mismatch included, may only mean the address is stale:
            // Lima gives a restarted VM a new port, and another VM may have the old one.
            match Session::connect_with(endpoint, silence).await {
                Ok(session) => return Ok(session),
                Err(e) => failure = Some(e),
            }
        }
        let current = tokio::task::block_in_place(|| backend.endpoint())?;
        match failure {
            Some(e) if last.as_ref() == Some(&current) => Err(e),
            _ => Session::connect_with(&current, silence).await,
        }
    }

    /// The machine to run a command on: connected, with the replica brought up to date first
    /// when `sync` is set (the local scan overlaps the SSH handshake; it says something only
    /// when it sent or deleted). For the native backend, this machine as it is.
    pub async fn connect_synced(&self, sync: bool) -> Result<Machine> {
        if self.backend()?.runs_locally() {
            return Ok(self.machine(None));
        }
        let pending = match sync {
            true => Some(sync::begin(&self.project, &self.state)?),
            false => None,
        };
        let session = self.connect().await?;
        match pending {
            Some(pending) => self.finish_sync(pending, &session).await?,
            // The agent the last sync found, if it still runs, starts commands faster.
            None => session.use_agent(sync::recorded_agent(&self.project, &self.state)),
        }
        Ok(self.machine(Some(session)))
    }

    async fn finish_sync(&self, pending: sync::Pending, session: &Session) -> Result<()> {
        let options = sync::Options {
            dry_run: false,
            adopt: false,
            progress: !self.quiet,
        };
        let summary = pending.finish(session, &options).await?;
        if summary.changed() && !self.quiet {
            eprintln!("{summary}");
        }
        Ok(())
    }

    /// The work of `up`, shared with the commands that need the machine running: it running,
    /// and synced and provisioned as `how` says. For the native backend, this machine.
    pub async fn bring_up(&self, how: BringUp) -> Result<Machine> {
        let backend = self.backend()?;
        let vm = &self.project.config.vm.name;
        // Two `up` for one project wait for each other instead of creating two VMs.
        let _lock = Lock::acquire(&self.state.vm_dir(vm)?.join("up.lock"))?;
        if backend.runs_locally() {
            tokio::task::block_in_place(|| backend.start())?;
            return Ok(self.machine(None));
        }
        let session = match self.reuse().await {
            Some(session) => session,
            None => start(backend, self.quiet).await?,
        };
        // Sync first: it finds the remote agent, through which the stamp check then goes.
        if how.sync {
            self.finish_sync(sync::begin(&self.project, &self.state)?, &session)
                .await?;
        }
        if !how.provision {
            return Ok(self.machine(Some(session)));
        }
        let plan = self.provision_plan()?;
        let current = provision::is_current(&session, &plan.stamp).await?;
        self.provision_unless(current, self.machine(Some(session)), &plan)
            .await
    }

    /// The start the commands that work on a built image share (invoke, push, check-base):
    /// the image given, else the one `build-image` built last; the machine up; what its Docker
    /// knows of the image. An image it does not have is `Error::NotBuilt`.
    pub async fn built_image(&self, given: Option<String>) -> Result<BuiltImage> {
        let vm_dir = self.state.vm_dir(&self.project.config.vm.name)?;
        let name = image::given_or_last_built(given, &vm_dir)?;
        let machine = self.bring_up(BringUp::default()).await?;
        let facts = image::inspect(&machine, &name)
            .await?
            .ok_or_else(|| Error::NotBuilt(name.clone()))?;
        Ok(BuiltImage {
            name,
            facts,
            machine,
        })
    }

    /// The build machine behind `session`, its commands run in the replica; without one, this
    /// machine, in the project itself (native backend).
    pub fn machine(&self, session: Option<Session>) -> Machine {
        match session {
            Some(session) => Machine::Remote {
                session: Arc::new(session),
                dir: self.project.config.sync.dest.clone(),
                login_shell: self.project.config.run.login_shell,
            },
            None => Machine::Local {
                dir: self.project.root.clone(),
            },
        }
    }

    /// Where this VM's forwarder keeps its socket, pidfile, log and status.
    pub fn forwarder_paths(&self) -> Result<forwarder::Paths> {
        Ok(forwarder::Paths::in_dir(
            &self.state.vm_dir(&self.project.config.vm.name)?,
        ))
    }

    /// The Docker context that points at this VM's engine socket.
    pub fn docker_context(&self) -> String {
        docker_context::name(&self.project.config.vm.name)
    }

    /// The machine's engine served here by a healthy forwarder (started, or left alone).
    pub fn serve_engine(&self) -> Result<forwarder::Serving> {
        let paths = self.forwarder_paths()?;
        tokio::task::block_in_place(|| forwarder::ensure(&paths, &self.project.root))
    }

    /// The Docker context `n10n-<name>`, pointing at the forwarder's socket.
    pub fn ensure_docker_context(&self) -> Result<()> {
        let host = format!("unix://{}", self.forwarder_paths()?.socket.display());
        let description = format!(
            "n10n-dev: the Docker engine of {}",
            self.project.config.vm.name
        );
        docker_context::ensure(&self.docker_context(), &host, &description)
    }

    /// After provisioning: a running forwarder's connection, and every channel of the kept
    /// connection, has the groups it logged in with. The forwarder logs in afresh for new
    /// channels while those under way finish on the old connection; one that does not answer
    /// is replaced.
    pub fn renew_forwarder(&self) -> Result<()> {
        let paths = self.forwarder_paths()?;
        if forwarder::running_pid(&paths).is_none() || forwarder::renew(&paths) {
            return Ok(());
        }
        forwarder::stop(&paths);
        self.serve_engine().map(|_| ())
    }

    /// The project's provision scripts, and the stamp a machine carries once they ran.
    pub fn provision_plan(&self) -> Result<provision::Plan> {
        let scripts = provision::scripts_for(&self.project)?;
        let stamp = provision::stamp(&scripts);
        Ok(provision::Plan { scripts, stamp })
    }

    /// Run the provision scripts unless `current` (the machine's stamp matched). Scripts may
    /// change the user's groups (docker.sh adds the docker group), and a connection keeps the
    /// groups it logged in with, as does every process started through it: after they ran, a
    /// new connection takes over, so the next command sees the machine as a new login would.
    pub async fn provision_unless(
        &self,
        current: bool,
        machine: Machine,
        plan: &provision::Plan,
    ) -> Result<Machine> {
        let machine = match machine.session() {
            Some(session) if !current => {
                provision::run(session, &plan.scripts, &plan.stamp, self.quiet).await?;
                let endpoint = session.endpoint().clone();
                // The old connection goes first: it may be the forwarder's, which is renewed.
                drop(machine);
                self.renew_forwarder()?;
                self.machine(Some(Session::connect(&endpoint).await?))
            }
            _ => machine,
        };
        provision::remember(
            &self.state.vm_dir(&self.project.config.vm.name)?,
            &plan.stamp,
        )?;
        Ok(machine)
    }

    /// The machine as it was left: through the kept connection, else at the endpoint seen last
    /// time, if it still answers.
    async fn reuse(&self) -> Option<Session> {
        let backend = self.backend().ok()?;
        if let Some(session) = self.connect_kept().await {
            return Some(session);
        }
        let endpoint = backend.last_endpoint()?;
        match tokio::time::timeout(Duration::from_secs(3), Session::connect(&endpoint)).await {
            Ok(Ok(session)) => Some(session),
            Ok(Err(e)) => {
                tracing::debug!("last endpoint {endpoint} does not answer: {e}");
                None
            }
            Err(_) => None,
        }
    }
}

/// Create or resume the machine and wait for its SSH. An ssh host has nothing to boot: it
/// answers now or the user has something to fix, so it is not waited for.
async fn start(backend: &dyn Backend, quiet: bool) -> Result<Session> {
    if backend.kind() == BackendKind::Ssh {
        let endpoint = tokio::task::block_in_place(|| backend.endpoint())?;
        return connect_to_host(&endpoint).await;
    }
    let step = Step::new("starting the VM", quiet);
    let started = tokio::task::block_in_place(|| backend.start().and_then(|()| backend.endpoint()));
    step.finish();
    let endpoint = started?;
    // With the step's elapsed time beside it, the limit reads as a countdown.
    let step = Step::new(
        &format!(
            "waiting for the VM's SSH (gives up after {} s)",
            SSH_DEADLINE.as_secs()
        ),
        quiet,
    );
    let session = wait_for_ssh(&endpoint, SSH_DEADLINE).await;
    step.finish();
    session
}

/// One connection to an ssh host, within `HOST_DEADLINE`; what to check when there is none.
async fn connect_to_host(endpoint: &Endpoint) -> Result<Session> {
    let address = format!("{}:{}", endpoint.host, endpoint.port);
    match tokio::time::timeout(HOST_DEADLINE, Session::connect(endpoint)).await {
        Ok(Err(Error::Connect { reason, .. })) => Err(Error::Other(format!(
            "cannot reach {address}: {reason}\nis sshd running there? Are [ssh] host and \
             port right? (`ssh -p {} {}@{}` tries the same)",
            endpoint.port, endpoint.user, endpoint.host
        ))),
        Ok(result) => result,
        Err(_) => Err(Error::Other(format!(
            "{address} did not answer within {} s\nis sshd running there? Are [ssh] host \
             and port right?",
            HOST_DEADLINE.as_secs()
        ))),
    }
}

/// Poll until SSH answers, or give up at the deadline. A changed host key or an unusable
/// identity ends the wait at once.
async fn wait_for_ssh(endpoint: &Endpoint, timeout: Duration) -> Result<Session> {
    let deadline = Instant::now() + timeout;
    loop {
        match Session::connect(endpoint).await {
            Ok(session) => return Ok(session),
            Err(e @ (Error::HostKeyMismatch { .. } | Error::Identity { .. })) => return Err(e),
            Err(e) if Instant::now() >= deadline => {
                return Err(Error::Other(format!(
                    "the VM did not answer SSH within {} s: {e}\nnext: `n10n-dev status`, and the \
                     backend's own logs",
                    timeout.as_secs()
                )));
            }
            Err(e) => tracing::debug!("waiting for SSH: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
