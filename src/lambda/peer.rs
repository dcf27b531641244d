//! Who is at the other end of a Runtime API connection on the build machine. The API listens on
//! the machine's loopback, where every user of a shared host can connect: one who did could
//! take the function's events or post forged answers. A runtime client sends nothing that
//! could carry a secret (AWS's Node.js and Python clients take `AWS_LAMBDA_RUNTIME_API` as
//! `host:port` and nothing more), so the connection's socket is looked up on the machine
//! instead (`/proc/net/tcp`: its owner's uid), and let in only when it is the sandbox's.

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines, ReadHalf, WriteHalf};
use tokio::sync::Mutex;

use crate::ssh::Session;

/// On the machine: for each `FROM TO` line (4 hex digits each), the SSH user's uid and the uid
/// of the socket from loopback port FROM to port TO (`-` when there is none). One process for
/// as long as the sandbox lives, so that a question costs a read of /proc/net/tcp, not a new
/// session on the machine (an exec took 87 ms on a loopback host).
const ORACLE: &str = r#"exec perl -e '
$| = 1;
while (my $q = <STDIN>) {
  my ($from, $to) = split " ", $q;
  my $uid = "-";
  if (open(my $h, "<", "/proc/net/tcp")) {
    while (<$h>) {
      my @x = split;
      if (@x > 7 && $x[1] =~ /:\Q$from\E$/ && $x[2] =~ /:\Q$to\E$/) { $uid = $x[7]; last }
    }
  }
  print "$< $uid\n";
}'"#;

type Stream = russh::ChannelStream<russh::client::Msg>;
/// Questions go in on one half, answers come back a line each on the other.
type Link = (WriteHalf<Stream>, Lines<BufReader<ReadHalf<Stream>>>);

/// The machine's answers about sockets, from one process started there for a sandbox.
pub(super) struct Oracle {
    link: Mutex<Link>,
}

impl Oracle {
    /// Start the process on the machine (in a task of its own, beside the container's start).
    pub(super) fn start(session: Arc<Session>) -> tokio::task::JoinHandle<Result<Oracle, String>> {
        tokio::spawn(async move {
            let channel = session
                .open_exec(ORACLE)
                .await
                .map_err(|e| format!("cannot ask the machine who connects: {e}"))?;
            let (reader, writer) = tokio::io::split(channel.into_stream());
            Ok(Oracle {
                link: Mutex::new((writer, BufReader::new(reader).lines())),
            })
        })
    }

    /// Ok when the connection from the machine's loopback port `from` to the Runtime API's
    /// `port` is a socket of the sandbox's users; else why not.
    pub(super) async fn allowed(&self, from: u16, port: u16) -> Result<(), String> {
        let mut link = self.link.lock().await;
        let (writer, answers) = &mut *link;
        let asked = writer
            .write_all(format!("{from:04X} {port:04X}\n").as_bytes())
            .await;
        let answer = match asked {
            Ok(()) => answers.next_line().await.ok().flatten(),
            Err(_) => None,
        };
        verdict(&answer.unwrap_or_default(), from, port)
    }
}

/// The uids a sandbox's runtime runs as: Lambda's user (the default), root (`--as-root`, or a
/// container of the image's own user root), and the SSH user's own.
fn sandbox_uids(own: u32) -> [u32; 3] {
    let lambda = super::LAMBDA_USER
        .split(':')
        .next()
        .and_then(|uid| uid.parse().ok())
        .unwrap_or(u32::MAX);
    [lambda, 0, own]
}

/// The verdict on the machine's answer, `OWN_UID SOCKET_UID` (`-` for no such socket).
fn verdict(answer: &str, from: u16, port: u16) -> Result<(), String> {
    let mut words = answer.split_whitespace();
    let own: u32 = words
        .next()
        .and_then(|uid| uid.parse().ok())
        .ok_or("the machine did not answer who connected")?;
    match words.next().map(str::parse::<u32>) {
        Some(Ok(uid)) if sandbox_uids(own).contains(&uid) => Ok(()),
        Some(Ok(uid)) => Err(format!(
            "it comes from port {from}, a socket of uid {uid}: another user of the machine, not \
             the sandbox"
        )),
        _ => Err(format!(
            "no socket from port {from} to port {port} on the machine's loopback"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_sandbox_s_users_are_let_in() {
        assert_eq!(verdict("1000 993", 1, 2), Ok(()));
        assert_eq!(verdict("1000 1000", 1, 2), Ok(()));
        assert_eq!(verdict("1000 0", 1, 2), Ok(()));
        assert!(verdict("1000 1001", 1, 2).unwrap_err().contains("uid 1001"));
        assert!(verdict("1000 -", 1, 2).is_err());
        assert!(verdict("", 1, 2).is_err());
    }

    /// The script answers for a real socket of this machine, as the machine would.
    #[test]
    fn the_oracle_finds_a_socket_s_owner() {
        use std::io::{BufRead, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let from = client.local_addr().unwrap().port();
        let mut oracle = std::process::Command::new("sh")
            .args(["-c", ORACLE])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = oracle.stdin.take().unwrap();
        writeln!(stdin, "{from:04X} {port:04X}").unwrap();
        writeln!(stdin, "{:04X} {port:04X}", from.wrapping_add(1)).unwrap();
        drop(stdin);
        let answers: Vec<String> = std::io::BufReader::new(oracle.stdout.take().unwrap())
            .lines()
            .map(Result::unwrap)
            .collect();
        let _ = oracle.wait();
        // SAFETY: getuid cannot fail.
        let me = unsafe { libc::getuid() };
        assert_eq!(answers, [format!("{me} {me}"), format!("{me} -")]);
    }
}
