//! The baseline: what the remote replica held after the last sync it confirmed, stored on the host
//! with the replica's marker id. A compact binary file (paths are raw bytes, not always UTF-8).

use std::path::Path;

use super::tree::{Entry, Kind, Stamp, Tree};
use crate::error::Result;
use crate::state;

const MAGIC: &[u8; 8] = b"N10NMAN4";

#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    /// The id written in the replica's marker file when this baseline was recorded.
    pub replica_id: String,
    /// Where the replica's agent listens on the remote; empty if unknown.
    pub agent_socket: String,
    /// Local clock when the scan behind this baseline started (for racy-file detection).
    pub scanned_at_ns: i64,
    pub tree: Tree,
}

impl Baseline {
    /// The recorded baseline, or `None` when there is none or it cannot be read (then the next
    /// sync lists the remote instead, so a damaged file costs time, not correctness).
    pub fn load(path: &Path) -> Option<Baseline> {
        let bytes = std::fs::read(path).ok()?;
        let decoded = decode(&bytes);
        if decoded.is_none() {
            tracing::warn!("ignoring unreadable sync record {}", path.display());
        }
        decoded
    }

    /// Only the agent the baseline at `path` records, read from the file's first bytes: what a
    /// command that does not sync needs, without reading a large project's whole baseline.
    pub fn recorded_agent(path: &Path) -> Option<String> {
        use std::io::Read;
        let mut head = Vec::with_capacity(1024);
        let file = std::fs::File::open(path).ok()?;
        file.take(1024).read_to_end(&mut head).ok()?;
        let mut r = Reader(&head);
        if r.take(MAGIC.len())? != MAGIC {
            return None;
        }
        r.bytes()?;
        String::from_utf8(r.bytes()?).ok()
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        state::write_atomically(path, &self.encode())
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.tree.len() * 64);
        out.extend_from_slice(MAGIC);
        put_bytes(&mut out, self.replica_id.as_bytes());
        put_bytes(&mut out, self.agent_socket.as_bytes());
        out.extend_from_slice(&self.scanned_at_ns.to_le_bytes());
        out.extend_from_slice(&(self.tree.len() as u64).to_le_bytes());
        for (path, entry) in &self.tree {
            put_bytes(&mut out, path);
            match &entry.kind {
                Kind::File { size, executable } => {
                    out.push(if *executable { b'x' } else { b'f' });
                    out.extend_from_slice(&size.to_le_bytes());
                }
                Kind::Dir => out.push(b'd'),
                Kind::Symlink { target } => {
                    out.push(b'l');
                    put_bytes(&mut out, target);
                }
            }
            out.extend_from_slice(&entry.mtime.to_le_bytes());
            let stamp = entry.stamp.unwrap_or(Stamp {
                mtime_ns: 0,
                ctime_ns: 0,
                inode: 0,
            });
            out.extend_from_slice(&stamp.mtime_ns.to_le_bytes());
            out.extend_from_slice(&stamp.ctime_ns.to_le_bytes());
            out.extend_from_slice(&stamp.inode.to_le_bytes());
            match entry.digest {
                Some(digest) => {
                    out.push(1);
                    out.extend_from_slice(&digest.to_le_bytes());
                }
                None => out.push(0),
            }
        }
        out
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    fn i64(&mut self) -> Option<i64> {
        self.u64().map(|v| v as i64)
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize;
        self.take(len).map(<[u8]>::to_vec)
    }
}

fn decode(bytes: &[u8]) -> Option<Baseline> {
    let mut r = Reader(bytes);
    if r.take(MAGIC.len())? != MAGIC {
        return None;
    }
    let replica_id = String::from_utf8(r.bytes()?).ok()?;
    let agent_socket = String::from_utf8(r.bytes()?).ok()?;
    let scanned_at_ns = r.i64()?;
    let count = r.u64()?;
    let mut tree = Tree::new();
    for _ in 0..count {
        let path = r.bytes()?;
        let kind = match r.u8()? {
            b'f' => Kind::File {
                size: r.u64()?,
                executable: false,
            },
            b'x' => Kind::File {
                size: r.u64()?,
                executable: true,
            },
            b'd' => Kind::Dir,
            b'l' => Kind::Symlink { target: r.bytes()? },
            _ => return None,
        };
        let mtime = r.i64()?;
        let stamp = Stamp {
            mtime_ns: r.i64()?,
            ctime_ns: r.i64()?,
            inode: r.u64()?,
        };
        let digest = match r.u8()? {
            0 => None,
            1 => Some(r.u64()?),
            _ => return None,
        };
        tree.insert(
            path,
            Entry {
                kind,
                mtime,
                stamp: Some(stamp),
                digest,
            },
        );
    }
    r.0.is_empty().then_some(Baseline {
        replica_id,
        agent_socket,
        scanned_at_ns,
        tree,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let stamp = Some(Stamp {
            mtime_ns: 5,
            ctime_ns: 6,
            inode: 7,
        });
        let mut tree = Tree::new();
        tree.insert(
            b"a\xffb".to_vec(),
            Entry {
                kind: Kind::File {
                    size: 3,
                    executable: true,
                },
                mtime: 1,
                stamp,
                digest: Some(9),
            },
        );
        tree.insert(
            b"d".to_vec(),
            Entry {
                kind: Kind::Dir,
                mtime: 2,
                stamp,
                digest: None,
            },
        );
        tree.insert(
            b"d/l".to_vec(),
            Entry {
                kind: Kind::Symlink {
                    target: b"../a".to_vec(),
                },
                mtime: 3,
                stamp,
                digest: None,
            },
        );
        let baseline = Baseline {
            replica_id: "abc".into(),
            agent_socket: "/tmp/n10n-dev-1000/agent-v1-1.sock".into(),
            scanned_at_ns: 42,
            tree,
        };
        let bytes = baseline.encode();
        assert_eq!(decode(&bytes), Some(baseline));
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(decode(b"garbage"), None);
    }
}
