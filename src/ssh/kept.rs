//! The kept connection's server side, run by the forwarder: an SSH server on a private Unix
//! socket whose every channel is opened on the forwarder's one connection to the machine and
//! relayed message by message (requests, data, EOF, exit status and signal, close). n10n-dev's
//! own commands connect to it instead of to the machine, as OpenSSH clients share a
//! ControlMaster: the local handshake costs a few milliseconds, a new one with the machine costs
//! a round trip per step and, on a slow VM, most of a second.
//!
//! The socket's directory (0700) and mode (0600) keep other users out; the server proves
//! itself with the user's own identity, and accepts only a client that holds it too.

use std::sync::Arc;
use std::time::Duration;

use russh::keys::{PrivateKey, PublicKey};
use russh::server::{self, Auth, Msg};
use russh::{Channel, ChannelMsg, ChannelOpenFailure, Disconnect, client};
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

use super::{Session, relay::relay};
use crate::error::Result;

/// What every client of the kept connection is served with.
#[derive(Clone)]
pub struct KeptServer {
    config: Arc<server::Config>,
    identity: PublicKey,
}

impl KeptServer {
    /// A server that proves itself with the identity at `endpoint.identity`.
    pub fn new(endpoint: &super::Endpoint) -> Result<KeptServer> {
        let key = super::load_identity(&endpoint.identity)?;
        let identity = key.public_key().clone();
        Ok(KeptServer {
            config: Arc::new(server_config(key)),
            identity,
        })
    }

    /// Serve one client on `stream`, its channels opened on `machine`, until either ends.
    /// `authenticated` is called once the client has proved itself: a command that gave up
    /// waiting and left is no session.
    pub async fn serve(
        &self,
        stream: UnixStream,
        machine: Arc<Session>,
        authenticated: impl FnOnce() + Send + 'static,
    ) {
        let client = Downstream {
            machine: machine.clone(),
            identity: self.identity.clone(),
            listeners: Vec::new(),
            authenticated: Some(Box::new(authenticated)),
        };
        let running = match server::run_stream(self.config.clone(), stream, client).await {
            Ok(running) => running,
            Err(e) => {
                tracing::debug!("kept connection: {e}");
                return;
            }
        };
        let handle = running.handle();
        tokio::pin!(running);
        tokio::select! {
            _ = &mut running => return,
            () = machine.closed() => {}
        }
        // The client would otherwise wait on channels that can no longer answer.
        let _ = handle
            .disconnect(
                Disconnect::ConnectionLost,
                format!("the connection to {} closed", machine.endpoint()),
                String::new(),
            )
            .await;
        let _ = running.await;
    }
}

/// Relay until done, or until the machine's connection closes: a relay waiting for the machine
/// to take more data would otherwise wait forever, and with it the client's whole session.
async fn while_connected(machine: &Session, relaying: impl Future<Output = ()>) {
    tokio::select! {
        () = relaying => {}
        () = machine.closed() => {}
    }
}

fn server_config(key: PrivateKey) -> server::Config {
    let mut methods = russh::MethodSet::empty();
    methods.push(russh::MethodKind::PublicKey);
    server::Config {
        methods,
        keys: vec![key],
        // Refusals are for a client that is not n10n-dev; nothing to slow down.
        auth_rejection_time: Duration::ZERO,
        auth_rejection_time_initial: Some(Duration::ZERO),
        window_size: 16 << 20,
        maximum_packet_size: 65535,
        // A client's liveness is its socket's: no timeout on a command that runs for hours.
        inactivity_timeout: None,
        nodelay: true,
        ..Default::default()
    }
}

/// One client of the kept connection.
struct Downstream {
    machine: Arc<Session>,
    identity: PublicKey,
    /// The machine's ports this client asked to have forwarded, each accepting in a task.
    listeners: Vec<JoinHandle<()>>,
    authenticated: Option<Box<dyn FnOnce() + Send>>,
}

impl Drop for Downstream {
    fn drop(&mut self) {
        for listener in &self.listeners {
            listener.abort();
        }
    }
}

impl server::Handler for Downstream {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if key.public_key.key_data() != self.identity.key_data() {
            return Ok(Auth::reject());
        }
        if let Some(authenticated) = self.authenticated.take() {
            authenticated();
        }
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: server::ChannelOpenHandle,
        session: &mut server::Session,
    ) -> Result<(), Self::Error> {
        let machine = self.machine.clone();
        let handle = session.handle();
        tokio::spawn(async move {
            match machine.handle.channel_open_session().await {
                Ok(upstream) => {
                    reply.accept().await;
                    while_connected(&machine, relay_session(channel, upstream, handle)).await;
                }
                Err(e) => refuse(reply, &e).await,
            }
        });
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        channel: Channel<Msg>,
        socket_path: &str,
        reply: server::ChannelOpenHandle,
        _session: &mut server::Session,
    ) -> Result<(), Self::Error> {
        let machine = self.machine.clone();
        let path = socket_path.to_string();
        let opening = machine.clone();
        relay_bytes_once_open(machine, channel, reply, async move {
            opening.handle.channel_open_direct_streamlocal(path).await
        });
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: server::ChannelOpenHandle,
        _session: &mut server::Session,
    ) -> Result<(), Self::Error> {
        let machine = self.machine.clone();
        let (host, originator) = (host_to_connect.to_string(), originator_address.to_string());
        let opening = machine.clone();
        relay_bytes_once_open(machine, channel, reply, async move {
            opening
                .handle
                .channel_open_direct_tcpip(host, port_to_connect, originator, originator_port)
                .await
        });
        Ok(())
    }

    /// A remote forward (what `invoke` asks for): the machine picks a loopback port, and each
    /// connection to it is passed on to this client as a forwarded-tcpip channel.
    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut server::Session,
    ) -> Result<bool, Self::Error> {
        if address != "127.0.0.1" || *port != 0 {
            return Ok(false);
        }
        let Ok(mut listener) = self.machine.listen_remote().await else {
            return Ok(false);
        };
        *port = u32::from(listener.port);
        let handle = session.handle();
        let machine = self.machine.clone();
        self.listeners.push(tokio::spawn(async move {
            while let Some((upstream, from)) = listener.accept().await {
                // The port it comes from travels on: the client checks who owns it.
                let opened = handle
                    .channel_open_forwarded_tcpip(
                        "127.0.0.1",
                        u32::from(listener.port),
                        "127.0.0.1",
                        u32::from(from),
                    )
                    .await;
                let Ok(downstream) = opened else { return };
                let machine = machine.clone();
                tokio::spawn(async move {
                    while_connected(&machine, relay(downstream.into_stream(), upstream)).await;
                });
            }
        }));
        Ok(true)
    }
}

/// Accept the client's `channel` once `opening` has opened its twin on the machine, then relay
/// bytes between them; refuse it when the machine refused.
fn relay_bytes_once_open(
    machine: Arc<Session>,
    channel: Channel<Msg>,
    reply: server::ChannelOpenHandle,
    opening: impl Future<Output = Result<Channel<client::Msg>, russh::Error>> + Send + 'static,
) {
    tokio::spawn(async move {
        match opening.await {
            Ok(upstream) => {
                reply.accept().await;
                let relaying = relay(channel.into_stream(), upstream.into_stream());
                while_connected(&machine, relaying).await;
            }
            Err(e) => refuse(reply, &e).await,
        }
    });
}

async fn refuse(reply: server::ChannelOpenHandle, error: &russh::Error) {
    tracing::debug!("kept connection: the machine refused a channel: {error}");
    reply.reject(ChannelOpenFailure::ConnectFailed).await;
}

/// Relay a session channel both ways until both ends have closed. Requests go to the machine
/// in the order the client sent them; the machine's answers, output, exit status or signal
/// come back in the order it sent them.
async fn relay_session(
    downstream: Channel<Msg>,
    upstream: Channel<client::Msg>,
    handle: server::Handle,
) {
    let id = downstream.id();
    let (mut from_client, to_client) = downstream.split();
    let (mut from_machine, to_machine) = upstream.split();
    let requests = async move {
        while let Some(message) = from_client.wait().await {
            let sent = match message {
                ChannelMsg::Data { data } => to_machine.data_bytes(data).await,
                ChannelMsg::ExtendedData { data, ext } => {
                    to_machine.extended_data_bytes(ext, data).await
                }
                ChannelMsg::Eof => to_machine.eof().await,
                ChannelMsg::Close => break,
                ChannelMsg::Exec { command, .. } => to_machine.exec(true, command).await,
                ChannelMsg::RequestShell { .. } => to_machine.request_shell(true).await,
                ChannelMsg::RequestSubsystem { name, .. } => {
                    to_machine.request_subsystem(true, name).await
                }
                ChannelMsg::RequestPty {
                    term,
                    col_width,
                    row_height,
                    pix_width,
                    pix_height,
                    terminal_modes,
                    ..
                } => {
                    to_machine
                        .request_pty(
                            true,
                            &term,
                            col_width,
                            row_height,
                            pix_width,
                            pix_height,
                            &terminal_modes,
                        )
                        .await
                }
                ChannelMsg::WindowChange {
                    col_width,
                    row_height,
                    pix_width,
                    pix_height,
                } => {
                    to_machine
                        .window_change(col_width, row_height, pix_width, pix_height)
                        .await
                }
                ChannelMsg::SetEnv {
                    variable_name,
                    variable_value,
                    ..
                } => {
                    to_machine
                        .set_env(true, variable_name, variable_value)
                        .await
                }
                ChannelMsg::Signal { signal } => to_machine.signal(signal).await,
                _ => Ok(()),
            };
            if sent.is_err() {
                break;
            }
        }
        let _ = to_machine.close().await;
    };
    let answers = async move {
        while let Some(message) = from_machine.wait().await {
            let sent = match message {
                ChannelMsg::Data { data } => to_client.data_bytes(data).await.is_ok(),
                ChannelMsg::ExtendedData { data, ext } => {
                    to_client.extended_data_bytes(ext, data).await.is_ok()
                }
                ChannelMsg::Eof => to_client.eof().await.is_ok(),
                ChannelMsg::ExitStatus { exit_status } => {
                    to_client.exit_status(exit_status).await.is_ok()
                }
                ChannelMsg::ExitSignal {
                    signal_name,
                    core_dumped,
                    error_message,
                    lang_tag,
                } => handle
                    .exit_signal_request(id, signal_name, core_dumped, error_message, lang_tag)
                    .await
                    .is_ok(),
                ChannelMsg::Success => handle.channel_success(id).await.is_ok(),
                ChannelMsg::Failure => handle.channel_failure(id).await.is_ok(),
                ChannelMsg::Close => break,
                _ => true,
            };
            if !sent {
                break;
            }
        }
        let _ = to_client.close().await;
    };
    tokio::join!(requests, answers);
}
