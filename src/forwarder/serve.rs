//! The forwarder process itself (`n10n-dev forwarder`, started by `up`): one SSH connection
//! kept up (reconnecting with backoff when it drops), the engine socket served over it, the
//! kept connection offered to n10n-dev's own commands, the machine's ports followed, and its
//! state written to `forwarder.json` for `status` and `ports`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::{Notify, watch};

use super::{Paths, Status, ports};
use crate::config::ForwardConfig;
use crate::engine::DOCKER_SOCKET;
use crate::error::{Error, Result};
use crate::ssh::relay::relay;
use crate::ssh::{KEEPALIVE_INTERVAL, KeptServer, SILENT_AFTER, Session};

const BACKOFF_FIRST: Duration = Duration::from_millis(500);
/// Not shorter: while a VM is frozen (the laptop's sleep), each attempt that times out leaves a
/// connection in QEMU's backlog, and at the thaw the VM's sshd serves every one of them before
/// the attempt that is still waiting (with one a second, the thaws here took 1.9–2.4 s; with
/// this, 1.2–2.1 s were measured before). A client that needs the connection cuts the wait
/// short (`wanted`).
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A handshake that hangs (a peer that accepts but never answers) must not hold up the next
/// attempt for the 15 s a command would wait.
const ATTEMPT_DEADLINE: Duration = Duration::from_secs(5);
/// How often the pidfile is read to see whether this forwarder was orphaned.
const ORPHAN_CHECK_EVERY: Duration = Duration::from_secs(2);
/// How long a client waits for a connection that is being made again.
const WAIT_FOR_LINK: Duration = Duration::from_secs(10);

/// The connection the forwarder keeps, shared by everything it serves.
pub(crate) struct Link {
    session: watch::Sender<Option<Arc<Session>>>,
    /// Told when a channel could not be opened: the connection may be dead.
    broken: Notify,
    /// Told when a client waits for a connection that is down: try again now, not after the
    /// backoff (the first `docker ps` after the laptop wakes should not wait up to 5 s more).
    wanted: Notify,
    /// Told when a new connection should take over (after provisioning: new groups).
    renew: Notify,
    status: Mutex<Status>,
    pub(crate) paths: Paths,
}

impl Link {
    /// The current connection, waiting a while for one being made again.
    pub async fn session(&self) -> Option<Arc<Session>> {
        if self.current().is_none() {
            self.wanted.notify_one();
        }
        let mut receiver = self.session.subscribe();
        let wait = receiver.wait_for(|s| s.as_ref().is_some_and(|s| !s.is_closed()));
        match tokio::time::timeout(WAIT_FOR_LINK, wait).await {
            Ok(Ok(session)) => session.clone(),
            _ => None,
        }
    }

    /// The current connection if it is up now; no waiting (a client falls back to its own).
    pub fn current(&self) -> Option<Arc<Session>> {
        self.session
            .borrow()
            .clone()
            .filter(|session| !session.is_closed())
    }

    pub fn report_broken(&self) {
        self.broken.notify_one();
    }

    /// Return once `session` is no longer the one new channels go to (it closed, or a new
    /// connection took over): a long-lived channel on it moves to the current one.
    pub async fn replaced(&self, session: &Arc<Session>) {
        let mut receiver = self.session.subscribe();
        let _ = receiver
            .wait_for(|current| !current.as_ref().is_some_and(|c| Arc::ptr_eq(c, session)))
            .await;
    }

    /// Change the status, and write `forwarder.json` when that changed anything (the ports
    /// are published at every container event, mostly unchanged).
    pub fn update(&self, change: impl FnOnce(&mut Status)) {
        let mut status = self.status.lock().expect("not poisoned");
        let before = status.clone();
        change(&mut status);
        if *status == before && self.paths.status.exists() {
            return;
        }
        let text = serde_json::to_vec_pretty(&*status).unwrap_or_default();
        if let Err(e) = crate::state::write_atomically(&self.paths.status, &text) {
            eprintln!("forwarder: {e}");
        }
    }
}

/// The forwarder's lock, unless another forwarder holds it (readers only ask who holds it, and
/// take nothing).
fn take_lock(path: &std::path::Path) -> Result<Option<crate::state::PidLock>> {
    crate::state::PidLock::try_acquire(path)
}

/// How the forwarder reaches the machine: a new, direct SSH connection each time it is asked.
pub trait Connect {
    fn connect(&self) -> impl std::future::Future<Output = Result<Session>> + Send;
}

/// Serve the VM whose forwarder files are `paths` until a stop signal, or until the VM's state
/// directory goes away.
pub async fn run(paths: Paths, forward: &ForwardConfig, machine: &impl Connect) -> Result<()> {
    paths.check_length()?;
    let Some(_lock) = take_lock(&paths.lock)? else {
        eprintln!(
            "forwarder: another forwarder serves {}",
            paths.socket.display()
        );
        return Ok(());
    };
    let pid = std::process::id();
    crate::state::write_atomically(&paths.pidfile, pid.to_string().as_bytes())?;
    let listener = bind(&paths.socket)?;
    let kept = bind(&paths.kept)?;
    let link = Arc::new(Link {
        session: watch::Sender::new(None),
        broken: Notify::new(),
        wanted: Notify::new(),
        renew: Notify::new(),
        status: Mutex::new(Status {
            pid,
            ..Status::default()
        }),
        paths: paths.clone(),
    });
    link.update(|_| {});
    eprintln!("forwarder {pid}: serving {}", paths.socket.display());
    let mut stop = crate::signals::Stop::install()?;
    tokio::select! {
        () = keep_connected(machine, &link) => {}
        () = serve_engine(&listener, &link) => {}
        () = serve_kept(&kept, &link) => {}
        () = ports::follow(&link, forward) => {}
        () = orphaned(&paths, pid) => {}
        () = renew_on_request(&link) => {}
        _ = stop.recv() => {}
    }
    eprintln!("forwarder {pid}: stopping");
    let still_ours =
        std::fs::read_to_string(&paths.pidfile).is_ok_and(|named| named.trim() == pid.to_string());
    if still_ours {
        super::remove_socket(&paths.socket);
        super::remove_socket(&paths.kept);
        let _ = std::fs::remove_file(&paths.status);
        let _ = std::fs::remove_file(&paths.pidfile);
    }
    Ok(())
}

/// SIGUSR1 (sent by `forwarder::renew`): make a new connection for new channels.
async fn renew_on_request(link: &Link) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut requests) = signal(SignalKind::user_defined1()) else {
        return std::future::pending().await;
    };
    while requests.recv().await.is_some() {
        link.renew.notify_one();
    }
    std::future::pending().await
}

/// Return when the pidfile no longer names this process: the VM's state was deleted (destroy,
/// or a test's temporary state dir) or another forwarder took over.
async fn orphaned(paths: &Paths, pid: u32) {
    loop {
        tokio::time::sleep(ORPHAN_CHECK_EVERY).await;
        let named = std::fs::read_to_string(&paths.pidfile).ok();
        if named.as_deref().map(str::trim) != Some(pid.to_string().as_str()) {
            return;
        }
    }
}

/// A socket of the forwarder's: a live one means another forwarder serves it (the lock says
/// otherwise, so it is a leftover that still answers: leave it); a dead one is replaced.
fn bind(socket: &Path) -> Result<UnixListener> {
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Err(Error::Other(format!(
                "{} answers, but no forwarder holds its lock: remove it if nothing should serve it",
                socket.display()
            )));
        }
        super::remove_socket(socket);
    }
    if let Some(dir) = socket.parent() {
        crate::state::create_private_dir(dir)?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    let listener = UnixListener::bind(socket)
        .map_err(|e| Error::io(format!("cannot listen on {}", socket.display()), e))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(format!("cannot restrict {}", socket.display()), e))?;
    Ok(listener)
}

/// How a connection stopped serving new channels.
enum Ended {
    /// It closed, or a channel would not open on it.
    Closed,
    /// A new connection should take over (after provisioning: new groups); this one drains.
    Renewed,
    /// It stopped answering keepalives: a VM frozen by the laptop's sleep, or a machine gone.
    Silent,
}

/// Connect, and connect again whenever the connection dies, with backoff. A connection that
/// falls silent is kept while a new one is sought: when the machine was only frozen (a laptop's
/// sleep), the old one answers first at the thaw, with no handshake to wait for and every
/// command through it still running; when the new one comes first, the old one is ended.
async fn keep_connected(machine: &impl Connect, link: &Link) {
    // Renewals asked for and begun; published once the new connection is up.
    let mut renewals = 0;
    let mut session = connect_with_backoff(machine, link).await;
    loop {
        let endpoint = session.endpoint().to_string();
        link.session.send_replace(Some(session.clone()));
        link.update(|s| {
            s.renewals = renewals;
            s.connected = true;
            s.endpoint = endpoint.clone();
            s.since = crate::time::now();
            s.last_error = None;
        });
        eprintln!("forwarder: connected to {endpoint}");
        let lost = match watch(&session, link).await {
            Ended::Renewed => {
                // The channels under way hold the old connection, which ends with the last of
                // them; the next one made serves everything new.
                eprintln!("forwarder: a new connection takes over; the old one drains");
                renewals += 1;
                session = connect_with_backoff(machine, link).await;
                continue;
            }
            Ended::Closed => "closed",
            Ended::Silent => "stopped answering",
        };
        link.session.send_replace(None);
        link.update(|s| {
            s.connected = false;
            s.since = crate::time::now();
            s.reconnects += 1;
            s.last_error = Some(format!("the connection to {endpoint} {lost}"));
        });
        eprintln!("forwarder: the connection to {endpoint} {lost}; connecting again");
        let old = session.clone();
        session = tokio::select! {
            true = old.answers() => {
                eprintln!("forwarder: the connection to {endpoint} answers again");
                old
            }
            new = connect_with_backoff(machine, link) => {
                old.disconnect().await;
                new
            }
        };
    }
}

/// A new connection, trying again with backoff (cut short when a client waits for one) until
/// one is made.
async fn connect_with_backoff(machine: &impl Connect, link: &Link) -> Arc<Session> {
    let mut backoff = BACKOFF_FIRST;
    loop {
        let attempt = tokio::time::timeout(ATTEMPT_DEADLINE, machine.connect()).await;
        let said = match attempt {
            Ok(Ok(session)) => return Arc::new(session),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no SSH handshake within {} s", ATTEMPT_DEADLINE.as_secs()),
        };
        let repeated = link
            .status
            .lock()
            .expect("not poisoned")
            .last_error
            .as_ref()
            == Some(&said);
        if !repeated {
            eprintln!("forwarder: {said}");
        }
        link.update(|s| s.last_error = Some(said));
        let wanted = async {
            tokio::time::sleep(BACKOFF_FIRST).await;
            link.wanted.notified().await;
        };
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = wanted => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Serve on `session` until it closes, falls silent, or a renewal is asked for. It is asked
/// every `KEEPALIVE_INTERVAL` whether it answers, and counts as silent after `SILENT_AFTER`
/// without an answer: as soon as a command's own connection would give up.
async fn watch(session: &Session, link: &Link) -> Ended {
    loop {
        tokio::select! {
            () = session.closed() => return Ended::Closed,
            () = link.renew.notified() => return Ended::Renewed,
            () = link.broken.notified() => {
                // One failed channel may be the service's fault, not the connection's.
                match tokio::time::timeout(SILENT_AFTER, session.capture(None, "true")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => return Ended::Closed,
                    Err(_) => return Ended::Silent,
                }
            }
            () = tokio::time::sleep(KEEPALIVE_INTERVAL) => {
                match tokio::time::timeout(SILENT_AFTER, session.answers()).await {
                    Ok(true) => {}
                    Ok(false) => return Ended::Closed,
                    Err(_) => return Ended::Silent,
                }
            }
        }
    }
}

/// Each connection to the engine socket, relayed to the machine's engine socket.
async fn serve_engine(listener: &UnixListener, link: &Arc<Link>) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(e) => {
                crate::accept::pause_after("the engine socket", &e).await;
                continue;
            }
        };
        let link = link.clone();
        tokio::spawn(async move {
            for _ in 0..2 {
                let Some(session) = link.session().await else {
                    return;
                };
                match session.connect_unix(DOCKER_SOCKET).await {
                    Ok(engine) => return relay(client, engine).await,
                    Err(e) => {
                        eprintln!("forwarder: {e}");
                        link.report_broken();
                    }
                }
            }
        });
    }
}

/// Each connection to the kept socket served as an SSH session whose channels are opened on the
/// forwarder's connection. While that connection is being made again (or a silent one may
/// answer again: the laptop woke), a client waits for it as the engine socket's do, up to
/// `WAIT_FOR_LINK`; then it is turned away and connects by itself.
async fn serve_kept(listener: &UnixListener, link: &Arc<Link>) {
    let server: Arc<Mutex<Option<KeptServer>>> = Arc::default();
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(e) => {
                crate::accept::pause_after("the kept connection", &e).await;
                continue;
            }
        };
        let (link, server) = (link.clone(), server.clone());
        tokio::spawn(async move {
            let Some(session) = link.session().await else {
                return;
            };
            let made = {
                let mut slot = server.lock().expect("not poisoned");
                match &*slot {
                    Some(made) => Ok(made.clone()),
                    None => {
                        KeptServer::new(session.endpoint()).map(|made| slot.insert(made).clone())
                    }
                }
            };
            let server = match made {
                Ok(server) => server,
                Err(e) => {
                    eprintln!("forwarder: cannot offer the kept connection: {e}");
                    return;
                }
            };
            let counted = link.clone();
            let authenticated = move || counted.update(|s| s.kept_sessions += 1);
            server.serve(client, session, authenticated).await
        });
    }
}
