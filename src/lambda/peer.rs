//! Who is at the other end of a Runtime API connection on the build machine. The API listens on
//! the machine's loopback, where every user of a shared host can connect: one who did could
//! take the function's events or post forged answers. A runtime client sends nothing that
//! could carry a secret (AWS's Node.js and Python clients take `AWS_LAMBDA_RUNTIME_API` as
//! `host:port` and nothing more), so the connection's socket is looked up on the machine
//! instead (`/proc/net/tcp`: its owner's uid), and let in only when it is the sandbox's.

use crate::ssh::Session;

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

/// Ok when the connection from the machine's loopback port `from` to the Runtime API's `port`
/// is a socket of the sandbox's users; else why not.
pub(super) async fn allowed(session: &Session, from: u16, port: u16) -> Result<(), String> {
    let out = session
        .capture(None, "id -u; cat /proc/net/tcp")
        .await
        .map_err(|e| format!("cannot ask the machine who connected: {e}"))?;
    verdict(&String::from_utf8_lossy(&out.stdout), from, port)
}

/// The verdict on `id -u` and `/proc/net/tcp` as the machine printed them.
fn verdict(text: &str, from: u16, port: u16) -> Result<(), String> {
    let mut lines = text.lines();
    let own: u32 = lines
        .next()
        .and_then(|line| line.trim().parse().ok())
        .ok_or("the machine did not say who its SSH user is")?;
    let (local, remote) = (format!(":{from:04X}"), format!(":{port:04X}"));
    let owner = lines.find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.len() > 7 && fields[1].ends_with(&local) && fields[2].ends_with(&remote))
            .then(|| fields[7].parse::<u32>().ok())
            .flatten()
    });
    match owner {
        Some(uid) if sandbox_uids(own).contains(&uid) => Ok(()),
        Some(uid) => Err(format!(
            "it comes from port {from}, a socket of uid {uid}: another user of the machine, not \
             the sandbox"
        )),
        None => Err(format!(
            "no socket from port {from} to port {port} on the machine's loopback"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "1000
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:A1B2 0100007F:2328 01 00000000:00000000 00:00000000 00000000   993        0 11 1
   1: 0100007F:A1B3 0100007F:2328 01 00000000:00000000 00:00000000 00000000  1001        0 12 1
   2: 0100007F:A1B4 0100007F:2328 01 00000000:00000000 00:00000000 00000000  1000        0 13 1
";

    #[test]
    fn only_the_sandbox_s_users_are_let_in() {
        assert_eq!(verdict(TABLE, 0xA1B2, 9000), Ok(()));
        assert_eq!(verdict(TABLE, 0xA1B4, 9000), Ok(()));
        let other = verdict(TABLE, 0xA1B3, 9000).unwrap_err();
        assert!(other.contains("uid 1001"), "{other}");
        assert!(verdict(TABLE, 0xA1B5, 9000).is_err());
        assert!(verdict(TABLE, 0xA1B2, 9001).is_err());
    }
}
