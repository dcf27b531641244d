//! Host key pinning: the first connection records the key (accept-new); every later one must
//! present the same key. The pin file is an OpenSSH known_hosts file keyed by a host-key alias, so
//! plain `ssh` can use it too (`ssh-config` points `UserKnownHostsFile` and `HostKeyAlias` at it),
//! and a VM whose forwarded port changes keeps its pin.

use std::path::{Path, PathBuf};

use russh::keys::{HashAlg, PublicKey};

use crate::error::{Error, Result};
use crate::state;

#[derive(Debug, Clone)]
pub struct Pin {
    pub file: PathBuf,
    pub alias: String,
}

#[derive(Debug)]
pub enum Verdict {
    Trusted,
    /// Nothing pinned yet: the key is recorded once authentication has succeeded.
    New,
    Mismatch {
        pinned: PublicKey,
    },
}

pub fn fingerprint(key: &PublicKey) -> String {
    format!("{} {}", key.algorithm(), key.fingerprint(HashAlg::Sha256))
}

impl Pin {
    pub fn check(&self, presented: &PublicKey) -> Result<Verdict> {
        let pinned = self.pinned_keys()?;
        if pinned.is_empty() {
            return Ok(Verdict::New);
        }
        if pinned
            .iter()
            .any(|key| key.key_data() == presented.key_data())
        {
            return Ok(Verdict::Trusted);
        }
        Ok(Verdict::Mismatch {
            pinned: pinned.into_iter().next().expect("not empty"),
        })
    }

    pub fn record(&self, key: &PublicKey) -> Result<()> {
        let line = format!(
            "{} {}\n",
            self.alias,
            key.to_openssh()
                .map_err(|e| Error::Other(format!("cannot encode host key: {e}")))?
        );
        if let Some(dir) = self.file.parent() {
            state::create_private_dir(dir)?;
        }
        state::write_atomically(&self.file, line.as_bytes())
    }

    /// The pinned key's fingerprint, if one is pinned.
    pub fn fingerprint(&self) -> Result<Option<String>> {
        Ok(self.pinned_keys()?.first().map(fingerprint))
    }

    pub fn is_recorded(&self) -> Result<bool> {
        Ok(!self.pinned_keys()?.is_empty())
    }

    fn pinned_keys(&self) -> Result<Vec<PublicKey>> {
        read_pins(&self.file, &self.alias)
    }
}

fn read_pins(file: &Path, alias: &str) -> Result<Vec<PublicKey>> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("cannot read {}", file.display()), e)),
    };
    let mut keys = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.splitn(2, ' ');
        let (Some(host), Some(key)) = (fields.next(), fields.next()) else {
            return Err(corrupt(file, number));
        };
        if host.split(',').any(|h| h == alias) {
            keys.push(PublicKey::from_openssh(key).map_err(|_| corrupt(file, number))?);
        }
    }
    Ok(keys)
}

fn corrupt(file: &Path, line_index: usize) -> Error {
    Error::Other(format!(
        "{}:{}: not a known_hosts line; delete the file to pin the host key again",
        file.display(),
        line_index + 1
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::{Algorithm, PrivateKey};

    fn key() -> PublicKey {
        PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519)
            .unwrap()
            .public_key()
            .clone()
    }

    #[test]
    fn first_key_is_new_then_trusted_then_a_different_one_mismatches() {
        let dir = tempfile::tempdir().unwrap();
        let pin = Pin {
            file: dir.path().join("vm/known_hosts"),
            alias: "n10n-demo".into(),
        };
        let first = key();
        assert!(matches!(pin.check(&first).unwrap(), Verdict::New));
        pin.record(&first).unwrap();
        assert!(pin.is_recorded().unwrap());
        assert!(matches!(pin.check(&first).unwrap(), Verdict::Trusted));
        match pin.check(&key()).unwrap() {
            Verdict::Mismatch { pinned } => assert_eq!(fingerprint(&pinned), fingerprint(&first)),
            _ => panic!("a different key must not be trusted"),
        }
    }

    #[test]
    fn a_garbled_file_is_an_error_not_a_silent_re_pin() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        std::fs::write(&file, "n10n-demo ssh-ed25519 notbase64\n").unwrap();
        let pin = Pin {
            file,
            alias: "n10n-demo".into(),
        };
        assert!(pin.check(&key()).unwrap_err().to_string().contains(":1:"));
    }
}
