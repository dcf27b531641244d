//! The agent n10n-dev leaves on the machine (see `sync::remote`): where it listens, and the
//! token it proves itself with before n10n-dev sends it anything.
//!
//! The socket lives under /tmp, where on a shared host another user could be listening at the
//! same path (after a reboot cleared /tmp, say). The token was learnt over an exec session, which
//! only the user's own processes answer, and an agent greets each connection with it; a socket
//! that does not greet with it gets nothing.

use std::time::Duration;

use russh::client::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};

use super::{Session, describe};

/// How long a connected agent may take to greet.
const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// A greeting is `n10n-agent-hello <32 hex digits>\n`; anything longer is not one.
const HELLO_MAX: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub socket: String,
    pub token: String,
}

impl Agent {
    /// From `TOKEN SOCKET`, as the remote scripts and the sync record write it; `None` for
    /// anything else (an empty answer: no agent to trust).
    pub fn parse(text: &str) -> Option<Agent> {
        let (token, socket) = text.trim().split_once(' ')?;
        let valid = !token.is_empty() && token.bytes().all(|b| b.is_ascii_hexdigit());
        (valid && socket.starts_with('/')).then(|| Agent {
            socket: socket.to_string(),
            token: token.to_string(),
        })
    }

    /// The text `parse` reads back.
    pub fn record(&self) -> String {
        format!("{} {}", self.token, self.socket)
    }
}

impl Session {
    /// A channel to `agent` once it has greeted with its token; `None` (logged) when nothing
    /// listens there, or something that is not our agent does.
    pub(super) async fn open_agent(
        &self,
        agent: &Agent,
    ) -> Option<(ChannelReadHalf, ChannelWriteHalf<Msg>)> {
        let channel = match self
            .handle
            .channel_open_direct_streamlocal(agent.socket.as_str())
            .await
        {
            Ok(channel) => channel,
            Err(e) => {
                tracing::debug!(
                    "no agent at {} ({}); using an exec session",
                    agent.socket,
                    describe(&e)
                );
                return None;
            }
        };
        let (mut reader, writer) = channel.split();
        let expected = format!("n10n-agent-hello {}\n", agent.token);
        let greeting = tokio::time::timeout(HELLO_TIMEOUT, read_greeting(&mut reader)).await;
        if greeting.ok().flatten().as_deref() == Some(expected.as_bytes()) {
            return Some((reader, writer));
        }
        tracing::warn!(
            "the socket {} did not prove itself as n10n-dev's agent: nothing was sent to it",
            agent.socket
        );
        let _ = writer.close().await;
        self.use_agent(None);
        None
    }
}

/// The first line the agent sends, newline included; `None` when it is longer than a greeting
/// or the channel ends first.
async fn read_greeting(reader: &mut ChannelReadHalf) -> Option<Vec<u8>> {
    let mut line = Vec::new();
    while let Some(msg) = reader.wait().await {
        if let ChannelMsg::Data { data } = msg {
            line.extend_from_slice(&data);
            if line.len() > HELLO_MAX {
                return None;
            }
            if line.ends_with(b"\n") {
                return Some(line);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_are_read_back_as_recorded() {
        let agent = Agent::parse("0f1e /tmp/n10n-dev-0/agent-v5-1.sock").unwrap();
        assert_eq!(agent.socket, "/tmp/n10n-dev-0/agent-v5-1.sock");
        assert_eq!(Agent::parse(&agent.record()), Some(agent));
        for bad in ["", " ", "/tmp/x.sock", "zz /tmp/x", "0f relative"] {
            assert_eq!(Agent::parse(bad), None, "{bad:?}");
        }
    }
}
