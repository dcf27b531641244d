//! The machine's TCP ports on this machine: static forwards from `[forward] ports`, and, with
//! `[forward] auto`, every port the machine listens on, found by reading its
//! `/proc/net/tcp{,6}` every 2 s (one remote loop over the forwarder's connection). Each is bound on this machine's
//! loopback (127.0.0.1 and ::1; every interface only with `[forward] public = true`) and
//! relayed through direct-tcpip channels. Ports below 1024, port 22 and ports taken here are
//! skipped and reported. UDP is not forwarded.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::serve::Link;
use super::{Forwarded, Skipped};
use crate::config::ForwardConfig;
use crate::ssh::relay::relay;

const POLL_EVERY: Duration = Duration::from_secs(2);
/// The machine's listening sockets every 2 s, each snapshot ended by `SNAPSHOT_END`.
const SNAPSHOTS: &str =
    "while :; do cat /proc/net/tcp /proc/net/tcp6 2>/dev/null; echo n10n-end; sleep 2; done";
const SNAPSHOT_END: &str = "n10n-end";
const LISTEN_STATE: &str = "0A";

/// A listening socket in the machine: the address it is bound to, and its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Listening {
    ip: IpAddr,
    port: u16,
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
        served: BTreeMap::new(),
        not_served: BTreeMap::new(),
    };
    loop {
        // One remote loop prints a snapshot every 2 s for as long as the connection lasts: a
        // new exec session per poll would start the user's shell in the machine every time.
        let Some(session) = link.session().await else {
            continue;
        };
        let Ok(channel) = session.open_exec(SNAPSHOTS).await else {
            tokio::time::sleep(POLL_EVERY).await;
            continue;
        };
        let mut lines = BufReader::new(channel.into_stream()).lines();
        let mut snapshot = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if line != SNAPSHOT_END {
                snapshot.push_str(&line);
                snapshot.push('\n');
                continue;
            }
            auto.follow(link, parse_proc_net_tcp(&snapshot)).await;
            snapshot.clear();
        }
    }
}

/// The ports found in the machine, and what became of each.
struct Auto {
    statics: Vec<Served>,
    skipped: Vec<Skipped>,
    static_ports: BTreeSet<u16>,
    public: bool,
    served: BTreeMap<u16, Served>,
    not_served: BTreeMap<u16, String>,
}

impl Auto {
    /// Serve the ports newly listening in the machine, stop serving those gone, and publish.
    async fn follow(&mut self, link: &Arc<Link>, listening: Vec<Listening>) {
        let own = crate::own_ports::claimed(&link.paths.own_ports);
        let ports: BTreeMap<u16, Listening> = listening
            .into_iter()
            .filter(|l| !own.contains(&l.port))
            .map(|l| (l.port, l))
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
        let mut skipped = self.skipped.clone();
        skipped.extend(self.not_served.iter().map(|(port, why)| Skipped {
            port: *port,
            why: why.clone(),
        }));
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

/// The listening sockets in `/proc/net/tcp` and `/proc/net/tcp6` text.
fn parse_proc_net_tcp(text: &str) -> Vec<Listening> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 4 || fields[3] != LISTEN_STATE {
            continue;
        }
        let Some((ip, port)) = fields[1].split_once(':') else {
            continue;
        };
        let (Some(ip), Ok(port)) = (parse_ip(ip), u16::from_str_radix(port, 16)) else {
            continue;
        };
        found.insert(Listening { ip, port });
    }
    found.into_iter().collect()
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

    #[test]
    fn proc_net_tcp_listening_sockets_are_read() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n\
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1\n\
   2: 0F02000A:0016 0202000A:C8A4 01 00000000:00000000 00:00000000 00000000     0        0 3 1\n\
   0: 00000000000000000000000000000000:2382 00000000000000000000000000000000:0000 0A 0 0 0 0 0\n\
   1: 00000000000000000000000001000000:1F91 00000000000000000000000000000000:0000 0A 0 0 0 0 0\n";
        let found = parse_proc_net_tcp(text);
        let shown: Vec<String> = found
            .iter()
            .map(|l| format!("{}:{}", l.ip, l.port))
            .collect();
        assert_eq!(
            shown,
            vec!["0.0.0.0:22", "127.0.0.1:8080", ":::9090", "::1:8081"]
        );
        assert_eq!(guest_address(found[0].ip), "127.0.0.1");
        assert_eq!(guest_address(found[2].ip), "127.0.0.1");
        assert_eq!(guest_address("10.0.2.15".parse().unwrap()), "10.0.2.15");
        assert_eq!(not_forwarded(22), Some("SSH"));
        assert!(not_forwarded(80).is_some() && not_forwarded(8080).is_none());
    }
}
