//! The machine's TCP ports on this machine: static forwards from `[forward] ports`, and, with
//! `[forward] auto`, every port the machine listens on and every port its Docker publishes.
//! Listening sockets come from one remote loop over the forwarder's connection that reads
//! `/proc/net/tcp{,6}` every 0.2 s and sends only changes; published ports come from the
//! engine's own events (`published`), as a container starts or dies. Only the SSH user's own
//! listeners and root's (a container on the host's network is root's) are forwarded: on a
//! shared host, another user's port is theirs to serve, not the Mac's tools' to reach. Each port is bound on
//! this machine's loopback (127.0.0.1 and ::1; every interface only with `[forward] public =
//! true`) and relayed through direct-tcpip channels. Ports below 1024, port 22 and ports taken
//! here are skipped and reported. UDP is not forwarded.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::serve::Link;
use super::{Forwarded, Skipped};
use crate::config::ForwardConfig;
use crate::ssh::relay::relay;

/// How long to wait before watching again when the machine would not start the watch.
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// The machine's listening sockets, each snapshot ended by `SNAPSHOT_END` and the SSH user's
/// uid: with perl (always on Debian), read every 0.2 s and sent only when they changed (the
/// first always); without, every socket every 2 s. One line a socket, with the address, the
/// state and the owner's uid in the kernel's columns 2, 4 and 8.
const SNAPSHOTS: &str = r#"if command -v perl >/dev/null 2>&1; then exec perl -e '
$| = 1; my $last = "-";
while (1) {
  my @up;
  for my $f ("/proc/net/tcp", "/proc/net/tcp6") {
    open(my $h, "<", $f) or next;
    while (<$h>) { my @x = split; push @up, "- $x[1] - $x[3] - - - $x[7]
" if @x > 7 && $x[3] eq "0A" }
  }
  my $now = join "", sort @up;
  if ($now ne $last) { print $now, "n10n-end $<
"; $last = $now }
  select undef, undef, undef, 0.2;
}'; fi
while :; do cat /proc/net/tcp /proc/net/tcp6 2>/dev/null; echo "n10n-end $(id -u)"; sleep 2; done"#;
const SNAPSHOT_END: &str = "n10n-end";
const LISTEN_STATE: &str = "0A";

/// A listening socket in the machine: the address it is bound to, and its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Listening {
    pub ip: IpAddr,
    pub port: u16,
}

/// What a watch saw: the machine's listening sockets (those it may forward, and other users'
/// ports with their uid), or all ports Docker publishes.
pub(super) enum Seen {
    Listening(Sockets),
    Published(Vec<Listening>),
}

/// One snapshot of the machine's listening sockets.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Sockets {
    /// The SSH user's and root's.
    pub forwardable: Vec<Listening>,
    /// Other users' ports, and whose.
    pub others: BTreeMap<u16, u32>,
}

/// One forward being served: its listeners' accept loops.
struct Served {
    tasks: Vec<JoinHandle<()>>,
    entries: Vec<Forwarded>,
}

impl Drop for Served {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

pub(crate) async fn follow(link: &Arc<Link>, config: &ForwardConfig) {
    let mut statics = Vec::new();
    let mut skipped = Vec::new();
    for forward in &config.ports {
        let hosts = match forward.host_ip {
            Some(ip) => vec![ip],
            None => host_addresses(config.public),
        };
        match serve(
            link,
            &hosts,
            forward.host_port,
            "127.0.0.1",
            forward.guest_port,
            "static",
        )
        .await
        {
            Some(served) => statics.push(served),
            None => skipped.push(Skipped {
                port: forward.guest_port,
                why: format!("host port {} is taken here", forward.host_port),
            }),
        }
    }
    publish(link, &statics, &BTreeMap::new(), &skipped);
    if !config.auto {
        return std::future::pending().await;
    }
    let mut auto = Auto {
        statics,
        skipped,
        static_ports: config.ports.iter().map(|f| f.host_port).collect(),
        public: config.public,
        listening: Sockets::default(),
        published: BTreeSet::new(),
        served: BTreeMap::new(),
        not_served: BTreeMap::new(),
    };
    let (tell, mut seen) = mpsc::channel(8);
    let follow = async {
        while let Some(news) = seen.recv().await {
            match news {
                Seen::Listening(sockets) => auto.listening = sockets,
                Seen::Published(published) => auto.published = published.into_iter().collect(),
            }
            auto.follow(link).await;
        }
    };
    tokio::select! {
        () = follow => {}
        () = watch_listening(link, tell.clone()) => {}
        () = super::published::watch(link, tell) => {}
    }
}

/// Tell `tell` of the machine's listening sockets whenever they change, for as long as the
/// follower listens.
async fn watch_listening(link: &Arc<Link>, tell: mpsc::Sender<Seen>) {
    loop {
        // One remote loop for as long as the connection lasts: a new exec session per poll
        // would start the user's shell in the machine every time.
        let Some(session) = link.session().await else {
            continue;
        };
        let Ok(channel) = session.open_exec(SNAPSHOTS).await else {
            tokio::time::sleep(RETRY_AFTER).await;
            continue;
        };
        let follow = async {
            let mut lines = BufReader::new(channel.into_stream()).lines();
            let mut snapshot = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                let Some(own_uid) = snapshot_end(&line) else {
                    snapshot.push_str(&line);
                    snapshot.push('\n');
                    continue;
                };
                let sockets = parse_proc_net_tcp(&snapshot, own_uid);
                if tell.send(Seen::Listening(sockets)).await.is_err() {
                    return true;
                }
                snapshot.clear();
            }
            false
        };
        // A connection that another took over drains: this loop must not keep it.
        tokio::select! {
            done = follow => if done { return },
            () = link.replaced(&session) => {}
        }
    }
}

/// The ports found in the machine, and what became of each.
struct Auto {
    statics: Vec<Served>,
    skipped: Vec<Skipped>,
    static_ports: BTreeSet<u16>,
    public: bool,
    listening: Sockets,
    published: BTreeSet<Listening>,
    served: BTreeMap<u16, Served>,
    not_served: BTreeMap<u16, String>,
}

impl Auto {
    /// Serve the ports newly listening or published in the machine, stop serving those gone,
    /// and publish.
    async fn follow(&mut self, link: &Arc<Link>) {
        let own = crate::own_ports::claimed(&link.paths.own_ports);
        let ports: BTreeMap<u16, Listening> = self
            .listening
            .forwardable
            .iter()
            .chain(&self.published)
            .filter(|l| !own.contains(&l.port))
            .map(|l| (l.port, *l))
            .collect();
        self.served.retain(|port, _| ports.contains_key(port));
        self.not_served.retain(|port, _| ports.contains_key(port));
        for (port, listening) in &ports {
            if self.served.contains_key(port)
                || self.not_served.contains_key(port)
                || self.static_ports.contains(port)
            {
                continue;
            }
            if let Some(why) = not_forwarded(*port) {
                self.not_served.insert(*port, why.to_string());
                continue;
            }
            let guest = guest_address(listening.ip);
            let hosts = host_addresses(self.public);
            match serve(link, &hosts, *port, &guest, *port, "auto").await {
                Some(served) => {
                    self.served.insert(*port, served);
                }
                None => {
                    self.not_served
                        .insert(*port, "the same port is taken here".into());
                }
            }
        }
        let published: BTreeSet<u16> = self.published.iter().map(|l| l.port).collect();
        for (port, served) in &mut self.served {
            let source = match published.contains(port) {
                true => "docker",
                false => "auto",
            };
            for entry in &mut served.entries {
                entry.source = source.to_string();
            }
        }
        let mut skipped = self.skipped.clone();
        skipped.extend(self.not_served.iter().map(|(port, why)| Skipped {
            port: *port,
            why: why.clone(),
        }));
        skipped.extend(
            (self.listening.others.iter())
                .filter(|(port, _)| !ports.contains_key(port) && !own.contains(port))
                .map(|(port, uid)| Skipped {
                    port: *port,
                    why: format!(
                        "another user's (uid {uid}): only your own listeners, root's and \
                         Docker's published ports are forwarded"
                    ),
                }),
        );
        publish(link, &self.statics, &self.served, &skipped);
    }
}

/// Why a port of the machine is not forwarded, if it is not.
fn not_forwarded(port: u16) -> Option<&'static str> {
    match port {
        22 => Some("SSH"),
        p if p < 1024 => Some("below 1024 (privileged here)"),
        _ => None,
    }
}

fn publish(link: &Link, statics: &[Served], auto: &BTreeMap<u16, Served>, skipped: &[Skipped]) {
    let ports: Vec<Forwarded> = statics
        .iter()
        .chain(auto.values())
        .flat_map(|s| s.entries.iter().cloned())
        .collect();
    link.update(|status| {
        status.ports = ports;
        status.skipped = skipped.to_vec();
    });
}

/// Where forwarded ports are bound here: loopback (both families), or every interface.
fn host_addresses(public: bool) -> Vec<IpAddr> {
    match public {
        true => vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)],
        false => vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ],
    }
}

/// The address to reach a socket bound to `ip` in the machine: the wildcard addresses by
/// loopback, anything else as it is.
fn guest_address(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() || v4.is_loopback() => "127.0.0.1".into(),
        IpAddr::V6(v6) if v6.is_unspecified() => "127.0.0.1".into(),
        other => other.to_string(),
    }
}

/// Listen on `port` at each of `hosts` and relay every connection to `guest:guest_port` in the
/// machine. `None` when no host address could be bound (the port is taken here).
async fn serve(
    link: &Arc<Link>,
    hosts: &[IpAddr],
    port: u16,
    guest: &str,
    guest_port: u16,
    source: &str,
) -> Option<Served> {
    let mut tasks = Vec::new();
    let mut entries = Vec::new();
    for host in hosts {
        let address = SocketAddr::new(*host, port);
        let Ok(listener) = TcpListener::bind(address).await else {
            continue;
        };
        entries.push(Forwarded {
            host: address.to_string(),
            guest: format!("{guest}:{guest_port}"),
            source: source.to_string(),
        });
        let (link, guest) = (link.clone(), guest.to_string());
        tasks.push(tokio::spawn(async move {
            loop {
                let client = match listener.accept().await {
                    Ok((client, _)) => client,
                    Err(e) => {
                        crate::accept::pause_after("a forwarded port", &e).await;
                        continue;
                    }
                };
                let _ = client.set_nodelay(true);
                let (link, guest) = (link.clone(), guest.clone());
                tokio::spawn(async move {
                    let Some(session) = link.session().await else {
                        return;
                    };
                    match session.connect_tcp(&guest, guest_port).await {
                        Ok(channel) => relay(client, channel).await,
                        Err(e) => eprintln!("forwarder: {e}"),
                    }
                });
            }
        }));
    }
    (!tasks.is_empty()).then_some(Served { tasks, entries })
}

/// The uid a snapshot's end line carries, if `line` is one.
fn snapshot_end(line: &str) -> Option<u32> {
    line.strip_prefix(SNAPSHOT_END)?.trim().parse().ok()
}

/// The listening sockets in `/proc/net/tcp` and `/proc/net/tcp6` text: those of `own_uid` and
/// root's, and the others' ports with their owners.
fn parse_proc_net_tcp(text: &str, own_uid: u32) -> Sockets {
    let mut forwardable = BTreeSet::new();
    let mut others = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 || fields[3] != LISTEN_STATE {
            continue;
        }
        let Some((ip, port)) = fields[1].split_once(':') else {
            continue;
        };
        let (Some(ip), Ok(port), Ok(uid)) = (
            parse_ip(ip),
            u16::from_str_radix(port, 16),
            fields[7].parse::<u32>(),
        ) else {
            continue;
        };
        match uid == own_uid || uid == 0 {
            true => {
                forwardable.insert(Listening { ip, port });
            }
            false => {
                others.insert(port, uid);
            }
        }
    }
    Sockets {
        forwardable: forwardable.into_iter().collect(),
        others,
    }
}

/// The kernel's hex address: 8 digits (IPv4) or 32 (IPv6), each 32-bit word printed as a
/// number in the machine's byte order (little-endian on x86_64 and arm64).
fn parse_ip(hex: &str) -> Option<IpAddr> {
    let words: Option<Vec<u32>> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok())
        .collect();
    let bytes: Vec<u8> = words?.iter().flat_map(|w| w.to_le_bytes()).collect();
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        32 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(bytes).ok()?,
        ))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::sync::mpsc::{Receiver, RecvTimeoutError};

    /// The next snapshot the watch prints, if one comes within `within`.
    fn next_snapshot(lines: &Receiver<String>, within: Duration) -> Option<Vec<Listening>> {
        // SAFETY: getuid cannot fail.
        let me = unsafe { libc::getuid() };
        let deadline = std::time::Instant::now() + within;
        let mut snapshot = String::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if snapshot_end(&line) == Some(me) => {
                    return Some(parse_proc_net_tcp(&snapshot, me).forwardable);
                }
                Ok(line) => snapshot.push_str(&(line + "\n")),
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => panic!("the watch ended"),
            }
        }
    }

    #[test]
    fn the_listening_watch_reports_a_new_and_a_closed_listener_within_0_6_s() {
        let mut watch = std::process::Command::new("sh")
            .args(["-c", SNAPSHOTS])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (tell, lines) = std::sync::mpsc::channel();
        let stdout = watch.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                if tell.send(line.unwrap()).is_err() {
                    return;
                }
            }
        });
        let has = |found: &[Listening], port: u16| found.iter().any(|l| l.port == port);
        let first = next_snapshot(&lines, Duration::from_secs(5)).expect("a first snapshot");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(!has(&first, port));
        // Other tests open and close listeners too: wait for the snapshot that has this one.
        let seen = std::iter::from_fn(|| next_snapshot(&lines, Duration::from_millis(600)))
            .find(|found| has(found, port));
        assert!(seen.is_some(), "port {port} was not reported within 0.6 s");
        drop(listener);
        let gone = std::iter::from_fn(|| next_snapshot(&lines, Duration::from_millis(600)))
            .find(|found| !has(found, port));
        assert!(
            gone.is_some(),
            "port {port} was still listed 0.6 s after it closed"
        );
        let _ = watch.kill();
        let _ = watch.wait();
    }

    /// Issue 29 item 4: a port another user listens on is reported with its owner, not as one
    /// to forward (as root, the test listens as `nobody` too).
    #[test]
    fn another_user_s_listener_is_not_forwardable() {
        // SAFETY: getuid cannot fail.
        let me = unsafe { libc::getuid() };
        let mut other = (me == 0).then(|| {
            std::process::Command::new("setpriv")
                .args([
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    "/usr/bin/python3",
                    "-c",
                ])
                .arg(
                    "import socket,sys,time; s=socket.socket(); s.bind(('127.0.0.1',0)); \
                     s.listen(); print(s.getsockname()[1], flush=True); time.sleep(30)",
                )
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("setpriv (util-linux) and python3")
        });
        let others_port: Option<u16> = other.as_mut().map(|child| {
            let mut line = String::new();
            std::io::BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            line.trim().parse().unwrap()
        });
        let mine = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let my_port = mine.local_addr().unwrap().port();
        let out = std::process::Command::new("sh")
            .args(["-c", &SNAPSHOTS.replace("while (1)", "for my $once (1)")])
            .output()
            .unwrap();
        if let Some(child) = other.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let end = text.lines().find_map(snapshot_end).expect("a snapshot end");
        assert_eq!(end, me);
        let sockets = parse_proc_net_tcp(&text, me);
        assert!(sockets.forwardable.iter().any(|l| l.port == my_port));
        if let Some(port) = others_port {
            assert_eq!(sockets.others.get(&port), Some(&65534), "{sockets:?}");
            assert!(!sockets.forwardable.iter().any(|l| l.port == port));
        }
    }

    #[test]
    fn proc_net_tcp_listening_sockets_are_read() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n\
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1\n\
   2: 0F02000A:0016 0202000A:C8A4 01 00000000:00000000 00:00000000 00000000     0        0 3 1\n\
   0: 00000000000000000000000000000000:2382 00000000000000000000000000000000:0000 0A 0 0 0 0 0\n\
   1: 00000000000000000000000001000000:1F91 00000000000000000000000000000000:0000 0A 0 0 0 0 0\n\
   3: 0100007F:2328 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4 1\n\
   4: 0100007F:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 5 1\n";
        let sockets = parse_proc_net_tcp(text, 1000);
        // Root's and the user's own; another user's port (5432) with its owner.
        assert_eq!(sockets.others, BTreeMap::from([(5432, 1001)]));
        let found = sockets.forwardable;
        let shown: Vec<String> = found
            .iter()
            .map(|l| format!("{}:{}", l.ip, l.port))
            .collect();
        assert_eq!(
            shown,
            vec![
                "0.0.0.0:22",
                "127.0.0.1:8080",
                "127.0.0.1:9000",
                ":::9090",
                "::1:8081"
            ]
        );
        assert_eq!(guest_address(found[0].ip), "127.0.0.1");
        assert_eq!(guest_address(found[3].ip), "127.0.0.1");
        assert_eq!(guest_address("10.0.2.15".parse().unwrap()), "10.0.2.15");
        assert_eq!(not_forwarded(22), Some("SSH"));
        assert!(not_forwarded(80).is_some() && not_forwarded(8080).is_none());
    }
}
