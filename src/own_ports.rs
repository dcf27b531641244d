//! The ports of the machine that n10n-dev's own remote forwards hold (each sandbox's Runtime
//! API, reached by its runtime there): the forwarder, which follows the ports that listen in
//! the machine, must not bring these back to this machine's loopback. One empty file per port,
//! in a directory of the VM's private state dir, for as long as the forward lives.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::state::create_private_dir;

/// A port claimed in `dir`; the claim ends when this is dropped.
#[derive(Debug)]
pub struct Claim {
    file: PathBuf,
}

pub fn claim(dir: &Path, port: u16) -> Result<Claim> {
    create_private_dir(dir)?;
    let file = dir.join(port.to_string());
    std::fs::write(&file, b"")
        .map_err(|e| crate::error::Error::io(format!("cannot write {}", file.display()), e))?;
    Ok(Claim { file })
}

impl Drop for Claim {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// The ports claimed in `dir` now.
pub fn claimed(dir: &Path) -> BTreeSet<u16> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_lasts_as_long_as_its_value() {
        let dir = tempfile::tempdir().unwrap();
        let ports = dir.path().join("own-ports");
        let first = claim(&ports, 40001).unwrap();
        let _second = claim(&ports, 40002).unwrap();
        assert_eq!(claimed(&ports), BTreeSet::from([40001, 40002]));
        drop(first);
        assert_eq!(claimed(&ports), BTreeSet::from([40002]));
    }
}
