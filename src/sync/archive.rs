//! Builds the tar stream of what a plan sends, in a blocking thread, in chunks handed to the
//! SSH channel as they fill. Modes are normalised to 0644/0755 (only the exec bit travels);
//! owners are left to the remote user.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use tar::{EntryType, Header};
use tokio::sync::mpsc;

use super::remote::OPS;
use super::rules::Rules;
use super::tree::{Kind, Tree};
use crate::digest::{Digesting, Fnv};

const CHUNK: usize = 256 * 1024;

/// A `Write` that sends full chunks down a channel to the async side.
struct ChunkWriter {
    buffer: Vec<u8>,
    sender: mpsc::Sender<Vec<u8>>,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
        self.sender
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the transfer was aborted"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if !self.buffer.is_empty() {
            self.send()?;
        }
        Ok(())
    }
}

/// Write `paths` (from `tree`, under `rules`' root) and then the operations list as a tar stream.
/// Returns the digests of the racy files sent (relative to `scanned_at_ns`), of the bytes sent.
pub fn write(
    sender: mpsc::Sender<Vec<u8>>,
    tree: &Tree,
    paths: &[Vec<u8>],
    rules: &Rules,
    ops: &[u8],
    scanned_at_ns: i64,
) -> io::Result<HashMap<Vec<u8>, u64>> {
    let mut digests = HashMap::new();
    let writer = ChunkWriter {
        buffer: Vec::with_capacity(CHUNK),
        sender,
    };
    let mut builder = tar::Builder::new(writer);
    for path in paths {
        let entry = &tree[path];
        let name = Path::new(std::ffi::OsStr::from_bytes(path));
        let mut header = Header::new_gnu();
        header.set_mtime(entry.mtime.max(0) as u64);
        match &entry.kind {
            Kind::Dir => {
                header.set_entry_type(EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder.append_data(&mut header, name, io::empty())?;
            }
            Kind::Symlink { target } => {
                header.set_entry_type(EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder.append_link(
                    &mut header,
                    name,
                    Path::new(std::ffi::OsStr::from_bytes(target)),
                )?;
            }
            Kind::File { executable, .. } => {
                let abs = rules.absolute(path);
                // The size read now is what goes in the header; a file that shrinks while being
                // read fails the sync rather than sending padded content.
                let (file, size) = open_as_scanned(&abs, entry.stamp.map(|s| s.inode))?;
                header.set_entry_type(EntryType::Regular);
                header.set_mode(if *executable { 0o755 } else { 0o644 });
                header.set_size(size);
                let exact = ExactReader {
                    inner: file.take(size),
                    left: size,
                    path: &abs,
                };
                // Only a racy file's digest is recorded; hashing every byte sent costs a
                // quarter of an initial sync's time.
                if entry.is_racy(scanned_at_ns) {
                    let mut reader = Digesting {
                        inner: exact,
                        digest: Fnv::default(),
                    };
                    builder.append_data(&mut header, name, &mut reader)?;
                    digests.insert(path.clone(), reader.digest.finish());
                } else {
                    builder.append_data(&mut header, name, exact)?;
                }
            }
        }
    }
    let mut header = Header::new_gnu();
    header.set_mode(0o600);
    header.set_size(ops.len() as u64);
    builder.append_data(&mut header, OPS, ops)?;
    builder.into_inner()?.flush()?;
    Ok(digests)
}

/// A file of the project changed between the scan and the send: vanished, or replaced (by a
/// symlink, say, during a `git checkout`). The sync scans again rather than send it.
#[derive(Debug)]
pub struct ChangedDuringSync;

impl std::fmt::Display for ChangedDuringSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a file changed while it was being sent")
    }
}

impl std::error::Error for ChangedDuringSync {}

pub fn changed_during_sync(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.is::<ChangedDuringSync>())
}

/// Open the file the scan saw at `path`: never through a symlink in its place, and only when it
/// is still the same regular file (its inode). A symlink in a parent's place leads to another
/// inode, so nothing outside the project is read either. The file and its size now.
fn open_as_scanned(path: &Path, inode: Option<u64>) -> io::Result<(File, u64)> {
    use std::os::unix::fs::OpenOptionsExt;
    let changed = || io::Error::other(ChangedDuringSync);
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Err(changed());
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(changed()),
        Err(e) => return Err(annotate(e, path)),
    };
    let meta = file.metadata()?;
    if !meta.is_file() || inode.is_some_and(|inode| inode != meta.ino()) {
        return Err(changed());
    }
    Ok((file, meta.size()))
}

fn annotate(error: io::Error, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

/// Fails when the file ends before the size promised in its header.
struct ExactReader<'a, R> {
    inner: R,
    left: u64,
    path: &'a Path,
}

impl<R: Read> Read for ExactReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{} shrank while being sent; run the sync again",
                    self.path.display()
                ),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}
