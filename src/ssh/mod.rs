//! The SSH transport: one russh connection per n10n-dev process, public-key auth (ed25519, RSA,
//! ECDSA keys in OpenSSH format), keepalive, host key pinning, and channels for everything else.

mod agent;
mod exec;
mod job;
mod kept;
mod known_hosts;
mod pty;
pub mod quote;
pub mod relay;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::cipher;
use russh::client::{self, Handle};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use tokio::sync::{mpsc, watch};

use crate::error::{Error, Result};
pub use agent::Agent;
pub use exec::{ExitCode, RemoteCommand};
pub use job::Job;
pub use kept::KeptServer;
pub use known_hosts::{Pin, fingerprint};

/// How long to wait for the TCP connection, key exchange and authentication.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A silent peer is declared dead after `KEEPALIVE_MAX` unanswered probes this far apart:
/// about 12 s, inside the 15 s a user waits for a dropped connection to be reported.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(3);
const KEEPALIVE_MAX: usize = 3;
/// How long a keepalive may go unanswered before the peer counts as silent.
pub const SILENT_AFTER: Duration =
    Duration::from_secs(KEEPALIVE_INTERVAL.as_secs() * KEEPALIVE_MAX as u64);

/// Where and as whom to connect, and where that machine's host key is pinned.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub identity: PathBuf,
    /// The name the host key is pinned under (the VM name), independent of host and port.
    pub host_key_alias: String,
    pub known_hosts: PathBuf,
}

impl Endpoint {
    pub fn pin(&self) -> Pin {
        Pin {
            file: self.known_hosts.clone(),
            alias: self.host_key_alias.clone(),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}:{}", self.user, self.host, self.port)
    }
}

/// One authenticated connection. Every command, sync and shell opens channels on it.
pub struct Session {
    handle: Arc<Handle<Client>>,
    endpoint: Endpoint,
    /// The remote agent, once a sync has found one: helper jobs go through it.
    agent: Mutex<Option<Agent>>,
    forwards: Forwards,
    /// Closed when the connection ends (see `Client::_alive`).
    ended: watch::Receiver<()>,
}

/// Where connections to the machine's forwarded ports go: the listener of each port.
/// Each forwarded port's listener: the connections to it, with the port they come from.
type Forwards = Arc<Mutex<HashMap<u32, mpsc::UnboundedSender<(russh::Channel<client::Msg>, u16)>>>>;

/// A port on the machine's loopback whose connections arrive here (an SSH remote forward).
pub struct RemoteListener {
    pub port: u16,
    incoming: mpsc::UnboundedReceiver<(russh::Channel<client::Msg>, u16)>,
    forwards: Forwards,
    /// To cancel the forward on the machine when this is dropped: else sshd keeps listening
    /// there for as long as the connection lasts.
    handle: std::sync::Weak<Handle<Client>>,
}

impl RemoteListener {
    /// The next connection to the port, as a byte stream, and the port on the machine's
    /// loopback it comes from; `None` once the session is gone.
    pub async fn accept(&mut self) -> Option<(russh::ChannelStream<client::Msg>, u16)> {
        self.incoming
            .recv()
            .await
            .map(|(channel, from)| (channel.into_stream(), from))
    }
}

impl Drop for RemoteListener {
    fn drop(&mut self) {
        self.forwards
            .lock()
            .expect("not poisoned")
            .remove(&u32::from(self.port));
        if let (Some(handle), Ok(runtime)) =
            (self.handle.upgrade(), tokio::runtime::Handle::try_current())
        {
            let port = u32::from(self.port);
            runtime.spawn(async move {
                if let Err(e) = handle.cancel_tcpip_forward("127.0.0.1", port).await {
                    tracing::debug!("cancelling the forward of port {port}: {}", describe(&e));
                }
            });
        }
    }
}

/// An address on this machine's loopback (a VM's forwarded SSH port), by its IP or `localhost`.
pub fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What the host-key callback saw, read back after the handshake to build a precise error.
enum HostKeyOutcome {
    Trusted,
    New(PublicKey),
    Mismatch {
        pinned: PublicKey,
        presented: PublicKey,
    },
    Certificate,
    Unreadable(String),
}

/// Which host key the client accepts.
enum Trust {
    /// The machine's key, pinned on first use.
    Pinned(Pin),
    /// The kept connection's server (the forwarder) proves itself with the user's own key:
    /// only a process that can read the identity can serve it.
    Own(PublicKey),
}

struct Client {
    trust: Trust,
    outcome: Arc<Mutex<Option<HostKeyOutcome>>>,
    forwards: Forwards,
    /// Never sent on: russh drops the handler when the connection ends, and with it this
    /// sender, which is what `Session::closed` waits for.
    _alive: watch::Sender<()>,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, russh::Error> {
        let (outcome, accept) = match (key, &self.trust) {
            (PublicKeyOrCertificate::Certificate(_), _) => (HostKeyOutcome::Certificate, false),
            (PublicKeyOrCertificate::PublicKey { key, .. }, Trust::Own(own)) => {
                match key.key_data() == own.key_data() {
                    true => (HostKeyOutcome::Trusted, true),
                    false => (
                        HostKeyOutcome::Mismatch {
                            pinned: own.clone(),
                            presented: key.clone(),
                        },
                        false,
                    ),
                }
            }
            (PublicKeyOrCertificate::PublicKey { key, .. }, Trust::Pinned(pin)) => {
                match pin.check(key) {
                    Ok(known_hosts::Verdict::Trusted) => (HostKeyOutcome::Trusted, true),
                    Ok(known_hosts::Verdict::New) => (HostKeyOutcome::New(key.clone()), true),
                    Ok(known_hosts::Verdict::Mismatch { pinned }) => (
                        HostKeyOutcome::Mismatch {
                            pinned,
                            presented: key.clone(),
                        },
                        false,
                    ),
                    Err(e) => (HostKeyOutcome::Unreadable(e.to_string()), false),
                }
            }
        };
        *self.outcome.lock().expect("not poisoned") = Some(outcome);
        Ok(accept)
    }

    /// A connection to a port this session asked the machine to forward: handed to that port's
    /// listener, or refused when nobody listens any more.
    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: russh::Channel<client::Msg>,
        _connected_address: &str,
        connected_port: u32,
        _originator_address: &str,
        originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), russh::Error> {
        let listener = self
            .forwards
            .lock()
            .expect("not poisoned")
            .get(&connected_port)
            .cloned();
        if let Some(listener) = listener {
            reply.accept().await;
            let _ = listener.send((channel, u16::try_from(originator_port).unwrap_or(0)));
        }
        Ok(())
    }
}

impl Session {
    /// Connect, verify the host key against the pin, authenticate, and pin the key on first use.
    pub async fn connect(endpoint: &Endpoint) -> Result<Session> {
        Session::connect_with(endpoint, Silence::Ends).await
    }

    /// `connect`, choosing what a peer that stops answering does to the connection.
    pub async fn connect_with(endpoint: &Endpoint, silence: Silence) -> Result<Session> {
        let key = load_identity(&endpoint.identity)?;
        let stream = crate::quick_ack::QuickAckStream::connect(&endpoint.host, endpoint.port);
        let trust = Trust::Pinned(endpoint.pin());
        Session::handshake(endpoint, key, trust, stream, silence).await
    }

    /// Connect through the forwarder's kept connection to the machine (its private socket
    /// `socket`), in the manner of OpenSSH's ControlMaster: no TCP or SSH handshake with the
    /// machine, only a local one with the forwarder, which relays every channel.
    pub async fn connect_kept(endpoint: &Endpoint, socket: &std::path::Path) -> Result<Session> {
        let key = load_identity(&endpoint.identity)?;
        let own = key.public_key().clone();
        let stream = tokio::net::UnixStream::connect(socket);
        let session =
            Session::handshake(endpoint, key, Trust::Own(own), stream, Silence::Ends).await?;
        tracing::debug!("through the kept connection at {}", socket.display());
        Ok(session)
    }

    async fn handshake<S>(
        endpoint: &Endpoint,
        key: PrivateKey,
        trust: Trust,
        stream: impl Future<Output = std::io::Result<S>>,
        silence: Silence,
    ) -> Result<Session>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let started = std::time::Instant::now();
        let outcome = Arc::new(Mutex::new(None));
        let forwards = Forwards::default();
        let (alive, ended) = watch::channel(());
        let client = Client {
            trust,
            outcome: outcome.clone(),
            forwards: forwards.clone(),
            _alive: alive,
        };
        let connect_error = |reason: String| Error::Connect {
            endpoint: endpoint.to_string(),
            reason,
        };
        let attempt = async {
            let stream = stream.await.map_err(russh::Error::IO)?;
            let mut handle =
                client::connect_stream(Arc::new(client_config(silence)), stream, client).await?;
            let hash = match key.algorithm() {
                russh::keys::Algorithm::Rsa { .. } => {
                    handle.best_supported_rsa_hash().await?.flatten()
                }
                _ => None,
            };
            let auth = handle
                .authenticate_publickey(
                    &endpoint.user,
                    PrivateKeyWithHashAlg::new(Arc::new(key), hash),
                )
                .await?;
            Ok::<_, russh::Error>((handle, auth.success()))
        };
        let result = tokio::time::timeout(CONNECT_TIMEOUT, attempt)
            .await
            .map_err(|_| {
                connect_error(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()))
            })?;
        let seen = outcome.lock().expect("not poisoned").take();
        let (handle, authenticated) = match (result, &seen) {
            (Ok(done), _) => done,
            (Err(_), Some(HostKeyOutcome::Mismatch { pinned, presented })) => {
                return Err(Error::HostKeyMismatch {
                    endpoint: endpoint.to_string(),
                    pinned: fingerprint(pinned),
                    presented: fingerprint(presented),
                    pin_file: endpoint.known_hosts.clone(),
                });
            }
            (Err(_), Some(HostKeyOutcome::Certificate)) => {
                return Err(connect_error(
                    "the server offered a host certificate; only plain host keys can be pinned"
                        .into(),
                ));
            }
            (Err(_), Some(HostKeyOutcome::Unreadable(reason))) => {
                return Err(connect_error(reason.clone()));
            }
            (Err(e), _) => return Err(connect_error(describe(&e))),
        };
        if !authenticated {
            return Err(Error::AuthRejected {
                endpoint: endpoint.to_string(),
                user: endpoint.user.clone(),
                identity: endpoint.identity.clone(),
            });
        }
        // Pin only after authentication: a host that cannot authenticate us is not the one we meant.
        if let Some(HostKeyOutcome::New(key)) = &seen {
            endpoint.pin().record(key)?;
            // A VM is reached on this machine's loopback, and n10n-dev made it; a host
            // elsewhere is trusted on first use, so the user is told which key, as ssh does.
            if is_loopback_host(&endpoint.host) {
                tracing::info!(
                    "pinned host key {} for {}",
                    fingerprint(key),
                    endpoint.host_key_alias
                );
            } else {
                eprintln!("{}", first_pin_notice(endpoint, &fingerprint(key)));
            }
        }
        tracing::debug!("connected to {endpoint} in {:.0?}", started.elapsed());
        Ok(Session {
            handle: Arc::new(handle),
            endpoint: endpoint.clone(),
            agent: Mutex::new(None),
            forwards,
            ended,
        })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// A byte stream to the Unix socket `path` on the machine (OpenSSH's direct-streamlocal),
    /// e.g. the Docker engine's API.
    pub async fn connect_unix(&self, path: &str) -> Result<russh::ChannelStream<client::Msg>> {
        let channel = self
            .handle
            .channel_open_direct_streamlocal(path)
            .await
            .map_err(|e| {
                Error::Remote(format!(
                    "cannot open {path} on {}: {} (is the service running, and may `{}` use it?)",
                    self.endpoint,
                    describe(&e),
                    self.endpoint.user
                ))
            })?;
        Ok(channel.into_stream())
    }

    /// Listen on a port of the machine's loopback that the machine picks (an SSH remote
    /// forward bound to 127.0.0.1 there): what connects to it there arrives here.
    pub async fn listen_remote(&self) -> Result<RemoteListener> {
        let port = self
            .handle
            .tcpip_forward("127.0.0.1", 0)
            .await
            .map_err(|e| {
                Error::Remote(format!(
                    "{} refused to forward a port to this machine: {} (sshd's \
                     AllowTcpForwarding must allow remote forwards)",
                    self.endpoint,
                    describe(&e)
                ))
            })?;
        let (sender, incoming) = mpsc::unbounded_channel();
        self.forwards
            .lock()
            .expect("not poisoned")
            .insert(port, sender);
        Ok(RemoteListener {
            port: u16::try_from(port).unwrap_or_default(),
            incoming,
            forwards: self.forwards.clone(),
            handle: Arc::downgrade(&self.handle),
        })
    }

    /// Whether the peer answers a keepalive (waiting as long as that takes); false once the
    /// connection is gone.
    pub async fn answers(&self) -> bool {
        self.handle.send_ping().await.is_ok() && !self.is_closed()
    }

    /// End the connection, and with it every channel on it, without waiting long for a peer
    /// that may be gone.
    pub async fn disconnect(&self) {
        let bye = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en");
        let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
    }

    /// Whether the connection is gone (keepalives unanswered, the server went away).
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Resolves when the connection has ended, for whatever reason.
    pub async fn closed(&self) {
        let mut ended = self.ended.clone();
        while ended.changed().await.is_ok() {}
    }

    /// A byte stream to `host:port` as seen from the machine (OpenSSH's direct-tcpip).
    pub async fn connect_tcp(
        &self,
        host: &str,
        port: u16,
    ) -> Result<russh::ChannelStream<client::Msg>> {
        let channel = self
            .handle
            .channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0)
            .await
            .map_err(|e| {
                Error::Remote(format!(
                    "cannot reach {host}:{port} on {}: {}",
                    self.endpoint,
                    describe(&e)
                ))
            })?;
        Ok(channel.into_stream())
    }

    /// Send later helper jobs through `agent`.
    pub fn use_agent(&self, agent: Option<Agent>) {
        *self.agent.lock().expect("not poisoned") = agent;
    }

    async fn open_channel(&self) -> Result<russh::Channel<client::Msg>> {
        self.handle
            .channel_open_session()
            .await
            .map_err(|e| self.lost(describe(&e)))
    }

    fn lost(&self, reason: String) -> Error {
        Error::ConnectionLost {
            endpoint: self.endpoint.to_string(),
            reason,
        }
    }

    /// Open a channel running `command`.
    pub async fn open_exec(&self, command: &str) -> Result<russh::Channel<client::Msg>> {
        let channel = self.open_channel().await?;
        channel
            .exec(true, command)
            .await
            .map_err(|e| self.lost(describe(&e)))?;
        Ok(channel)
    }
}

#[derive(Debug, Default)]
pub struct Captured {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Captured {
    /// The output, or an error that shows what the remote said.
    pub fn success(self, what: &str) -> Result<Vec<u8>> {
        if self.status == 0 {
            return Ok(self.stdout);
        }
        let stderr = crate::terminal_text::lines(&self.stderr);
        Err(Error::Remote(format!(
            "{what} failed on the remote (exit {}): {}",
            self.status,
            stderr.trim()
        )))
    }
}

/// What a user is told when a host elsewhere is trusted on first use.
fn first_pin_notice(endpoint: &Endpoint, fingerprint: &str) -> String {
    format!(
        "n10n-dev: first connection to {}:{}: its host key {fingerprint} is now pinned for {}; \
         a different key will be refused",
        endpoint.host, endpoint.port, endpoint.host_key_alias
    )
}

/// What a peer that stops answering does to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Silence {
    /// It ends after `KEEPALIVE_MAX` unanswered keepalives: a command reports the loss.
    Ends,
    /// Nothing: the owner asks with `Session::answers` and decides. The forwarder's connection
    /// must outlive a VM frozen by the laptop's sleep, which answers again at the thaw.
    Waits,
}

fn client_config(silence: Silence) -> client::Config {
    let mut config = client::Config {
        keepalive_interval: (silence == Silence::Ends).then_some(KEEPALIVE_INTERVAL),
        keepalive_max: KEEPALIVE_MAX,
        nodelay: true,
        window_size: 16 << 20,
        // Fewer, larger packets for bulk data (docker save through the forwarder, run -- cat);
        // russh complains above 65535.
        maximum_packet_size: 65535,
        ..Default::default()
    };
    // AES-GCM runs on AES-NI / ARMv8 crypto through ring; ChaCha20 is the software fallback.
    config.preferred.cipher = std::borrow::Cow::Borrowed(&[
        cipher::AES_256_GCM,
        cipher::CHACHA20_POLY1305,
        cipher::AES_256_CTR,
        cipher::AES_128_CTR,
    ]);
    config
}

fn load_identity(path: &std::path::Path) -> Result<PrivateKey> {
    let fail = |reason: String| Error::Identity {
        path: path.to_path_buf(),
        reason,
    };
    match russh::keys::load_secret_key(path, None) {
        Ok(key) => Ok(key),
        Err(russh::keys::Error::IO(e)) if e.kind() == std::io::ErrorKind::NotFound => Err(fail(
            "no such file; set [ssh] identity in n10n-dev.toml to your private key".into(),
        )),
        Err(russh::keys::Error::KeyIsEncrypted) => Err(fail(
            "the key is passphrase-protected; use a key without a passphrase for this host".into(),
        )),
        Err(e) => Err(fail(format!("{e} (expected an OpenSSH private key)"))),
    }
}

/// A short, human description of a transport error.
fn describe(error: &russh::Error) -> String {
    match error {
        russh::Error::IO(e) => e.to_string(),
        russh::Error::KeepaliveTimeout => "the server stopped answering keepalives".into(),
        russh::Error::Disconnect => "the server closed the connection".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_pin_notice_is_one_plain_sentence() {
        let endpoint = Endpoint {
            host: "build.example".into(),
            port: 2222,
            user: "dev".into(),
            identity: "/k".into(),
            known_hosts: "/kh".into(),
            host_key_alias: "n10n-app".into(),
        };
        let notice = first_pin_notice(&endpoint, "SHA256:abc");
        assert_eq!(
            notice,
            "n10n-dev: first connection to build.example:2222: its host key SHA256:abc is now \
             pinned for n10n-app; a different key will be refused"
        );
    }
}
