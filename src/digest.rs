//! Content digests. SHA-256 names content as registries and Docker do (`sha256:<hex>`).
//! FNV-1a (64 bit), byte-wise, so any chunking of the same bytes gives the same value, and stable
//! across runs and versions: sync uses it to tell a racy file "touched within the timestamp
//! granularity" from "changed" (a collision could only make a racy file look unchanged, odds
//! about 2^-64), and to name its records; provisioning uses it for the stamp.

use std::io::{self, Read};
use std::path::Path;

/// `sha256:<hex>`, as registries and Docker name content.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

const OFFSET: u64 = 0xcbf29ce484222325;
const PRIME: u64 = 0x100000001b3;

#[derive(Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(OFFSET)
    }
}

impl Fnv {
    pub fn update(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ byte as u64).wrapping_mul(PRIME);
        }
    }

    pub fn finish(self) -> u64 {
        self.0
    }
}

/// A reader that digests what passes through it.
pub struct Digesting<R> {
    pub inner: R,
    pub digest: Fnv,
}

impl<R: Read> Read for Digesting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digest.update(&buf[..n]);
        Ok(n)
    }
}

pub fn of_file(path: &Path) -> Option<u64> {
    let mut reader = Digesting {
        inner: std::fs::File::open(path).ok()?,
        digest: Fnv::default(),
    };
    io::copy(&mut reader, &mut io::sink()).ok()?;
    Some(reader.digest.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunking_does_not_matter() {
        let mut whole = Fnv::default();
        whole.update(b"hello world");
        let mut parts = Fnv::default();
        parts.update(b"hello");
        parts.update(b" world");
        assert_eq!(whole.finish(), parts.finish());
        let mut other = Fnv::default();
        other.update(b"hello worle");
        assert_ne!(whole.finish(), other.finish());
    }
}
