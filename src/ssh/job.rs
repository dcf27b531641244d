//! Helper jobs: a command whose stdin n10n-dev writes and whose output it collects whole.
//!
//! A job runs either as an exec session, or through an agent that n10n-dev left on the remote,
//! reached over a `direct-streamlocal` channel of the same connection. The agent protocol: we
//! send `<length>\n<command>` then the stdin bytes and EOF; it answers
//! `n10n-agent <status> <stdout length> <stderr length>\n`, stdout, stderr.

use russh::client::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::task::JoinHandle;

use super::{Agent, Captured, Session, describe, exec::signal_number};
use crate::error::{Error, Result};

pub struct Job {
    pub writer: ChannelWriteHalf<Msg>,
    /// Ends when the channel closes: the output, or `None` when it was cut off.
    pub output: JoinHandle<Option<Captured>>,
    endpoint: String,
}

impl Session {
    /// Start `command`, through `agent` (else the one this session knows) when it answers and
    /// proves itself, else as an exec session.
    pub async fn start_job(&self, agent: Option<&Agent>, command: &str) -> Result<Job> {
        let known = self.agent.lock().expect("not poisoned").clone();
        if let Some(agent) = agent.or(known.as_ref())
            && let Some((reader, writer)) = self.open_agent(agent).await
        {
            tracing::debug!("running a helper through the agent at {}", agent.socket);
            let header = format!("{}\n{command}", command.len());
            writer
                .data(header.as_bytes())
                .await
                .map_err(|e| self.lost(describe(&e)))?;
            return Ok(self.job(writer, tokio::spawn(collect_agent(reader))));
        }
        let channel = self.open_exec(command).await?;
        let (reader, writer) = channel.split();
        Ok(self.job(writer, tokio::spawn(collect_exec(reader))))
    }

    fn job(&self, writer: ChannelWriteHalf<Msg>, output: JoinHandle<Option<Captured>>) -> Job {
        Job {
            writer,
            output,
            endpoint: self.endpoint.to_string(),
        }
    }

    /// Run a helper command with empty stdin and collect its output.
    pub async fn capture(&self, agent: Option<&Agent>, command: &str) -> Result<Captured> {
        self.start_job(agent, command).await?.finish().await
    }
}

impl Session {
    /// Run `command`, writing its stdout into `file` as it arrives; stderr and status collected.
    pub async fn download(&self, command: &str, mut file: std::fs::File) -> Result<Captured> {
        use std::io::Write;
        let channel = self.open_exec(command).await?;
        let _ = channel.eof().await;
        let (mut reader, _writer) = channel.split();
        let mut captured = Captured::default();
        let mut status = None;
        while let Some(msg) = reader.wait().await {
            match msg {
                ChannelMsg::Data { data } => file
                    .write_all(&data)
                    .map_err(|e| Error::io("cannot write the download", e))?,
                ChannelMsg::ExtendedData { data, .. } => captured.stderr.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status as i32),
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    status = Some(128 + signal_number(&signal_name))
                }
                _ => {}
            }
        }
        file.sync_all()
            .map_err(|e| Error::io("cannot write the download", e))?;
        captured.status = status.ok_or_else(|| cut_off(&self.endpoint.to_string()))?;
        Ok(captured)
    }
}

impl Job {
    /// Send EOF and wait for the output.
    pub async fn finish(self) -> Result<Captured> {
        let _ = self.writer.eof().await;
        let output = self.output.await.ok().flatten();
        let _ = self.writer.close().await;
        output.ok_or_else(|| cut_off(&self.endpoint))
    }
}

pub fn cut_off(endpoint: &str) -> Error {
    Error::ConnectionLost {
        endpoint: endpoint.to_string(),
        reason: "the remote command ended without an exit status".into(),
    }
}

async fn collect_exec(mut reader: ChannelReadHalf) -> Option<Captured> {
    let mut captured = Captured::default();
    let mut status = None;
    while let Some(msg) = reader.wait().await {
        match msg {
            ChannelMsg::Data { data } => captured.stdout.extend_from_slice(&data),
            ChannelMsg::ExtendedData { data, .. } => captured.stderr.extend_from_slice(&data),
            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status as i32),
            ChannelMsg::ExitSignal { signal_name, .. } => {
                status = Some(128 + signal_number(&signal_name))
            }
            _ => {}
        }
    }
    captured.status = status?;
    Some(captured)
}

/// The reply ends the job as soon as it is complete: waiting for the channel's EOF and close
/// as well would cost up to a delayed-ACK round (40 ms) behind sshd's Nagle-batched writes.
/// A helper's whole reply (a listing of a large replica included) stays under this.
const MAX_REPLY: usize = 1 << 30;
/// `n10n-agent <status> <stdout length> <stderr length>` is never longer.
const MAX_HEADER: usize = 64;

async fn collect_agent(mut reader: ChannelReadHalf) -> Option<Captured> {
    let mut reply = Vec::new();
    while let Some(msg) = reader.wait().await {
        if let ChannelMsg::Data { data } = msg {
            reply.extend_from_slice(&data);
            match parse_agent_reply(&reply) {
                Reply::Complete(captured) => return Some(captured),
                Reply::Partial => {}
                Reply::Malformed => {
                    tracing::warn!("the agent's reply is malformed: treating the job as cut off");
                    return None;
                }
            }
        }
    }
    None
}

enum Reply {
    Complete(Captured),
    Partial,
    /// Not what an agent sends, or larger than any reply may be.
    Malformed,
}

fn parse_agent_reply(reply: &[u8]) -> Reply {
    let Some(end) = reply.iter().position(|&b| b == b'\n') else {
        return match reply.len() > MAX_HEADER {
            true => Reply::Malformed,
            false => Reply::Partial,
        };
    };
    let header = || {
        let header = std::str::from_utf8(&reply[..end]).ok()?;
        let mut fields = header.strip_prefix("n10n-agent ")?.split(' ');
        let status: i32 = fields.next()?.parse().ok()?;
        let out_len: usize = fields.next()?.parse().ok()?;
        let err_len: usize = fields.next()?.parse().ok()?;
        let total = out_len.checked_add(err_len).filter(|&t| t <= MAX_REPLY)?;
        fields.next().is_none().then_some((status, out_len, total))
    };
    let Some((status, out_len, total)) = header() else {
        return Reply::Malformed;
    };
    let body = &reply[end + 1..];
    match body.len().cmp(&total) {
        std::cmp::Ordering::Less => Reply::Partial,
        std::cmp::Ordering::Greater => Reply::Malformed,
        std::cmp::Ordering::Equal => Reply::Complete(Captured {
            status,
            stdout: body[..out_len].to_vec(),
            stderr: body[out_len..].to_vec(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_replies_are_framed() {
        let Reply::Complete(captured) = parse_agent_reply(b"n10n-agent 3 2 4\nokoops") else {
            panic!("complete")
        };
        assert_eq!(
            (captured.status, &captured.stdout[..], &captured.stderr[..]),
            (3, &b"ok"[..], &b"oops"[..])
        );
        assert!(matches!(
            parse_agent_reply(b"n10n-agent 0 5 0\nabc"),
            Reply::Partial
        ));
        assert!(matches!(parse_agent_reply(b"n10n-agent 0"), Reply::Partial));
        for hostile in [
            &b"hello\n"[..],
            b"n10n-agent 0 18446744073709551615 1\n",
            b"n10n-agent 0 2000000000 0\n",
            b"n10n-agent 0 1 0\nab",
            &[b'7'; 100][..],
        ] {
            assert!(
                matches!(parse_agent_reply(hostile), Reply::Malformed),
                "{}",
                String::from_utf8_lossy(hostile)
            );
        }
    }
}
