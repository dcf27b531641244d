//! Digest pins in the project's build files (`FROM repo:tag@sha256:…` in a Dockerfile, a
//! `"repo@sha256:…"` string in build.sbt), found and rewritten to a new digest in place, as
//! Renovate's digest pinning does: only the 64 hex digits change, nothing else in the file.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::registry::Reference;

/// Build files bigger than this are not build files.
const MAX_FILE: u64 = 1 << 20;
const DIGEST_MARK: &str = "@sha256:";

/// One `<reference>@sha256:<digest>` in a file.
#[derive(Debug, Clone)]
pub struct Pin {
    pub file: PathBuf,
    /// Byte offset of the 64 hex digits.
    pub offset: usize,
    pub reference: Reference,
}

/// The files a pin may live in: Dockerfiles and Containerfiles, sbt build definitions.
fn is_build_file(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let in_project_dir = path
        .parent()
        .and_then(|p| p.file_name())
        .is_some_and(|p| p == "project");
    name.starts_with("Dockerfile")
        || name.starts_with("Containerfile")
        || name.ends_with(".Dockerfile")
        || name.ends_with(".sbt")
        || (in_project_dir && name.ends_with(".scala"))
}

/// Every pin under `root` (honouring .gitignore), in path order.
pub fn find(root: &Path) -> Result<Vec<Pin>> {
    let mut files: Vec<PathBuf> = ignore::WalkBuilder::new(root)
        .max_depth(Some(6))
        .build()
        .filter_map(|entry| entry.ok())
        .filter(|e| e.file_type().is_some_and(|t| t.is_file()))
        .filter(|e| e.metadata().is_ok_and(|m| m.len() <= MAX_FILE))
        .map(|e| e.into_path())
        .filter(|p| is_build_file(p))
        .collect();
    files.sort();
    let mut pins = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        pins.extend(pins_in(&text).into_iter().map(|(offset, reference)| Pin {
            file: file.clone(),
            offset,
            reference,
        }));
    }
    Ok(pins)
}

/// `(offset of the hex digits, reference)` of each pin in `text`.
fn pins_in(text: &str) -> Vec<(usize, Reference)> {
    let reference_char = |c: u8| c.is_ascii_alphanumeric() || b"._-/:".contains(&c);
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    for (at, _) in text.match_indices(DIGEST_MARK) {
        let hex_start = at + DIGEST_MARK.len();
        let Some(hex) = text.get(hex_start..hex_start + 64) else {
            continue;
        };
        let ends_there = bytes
            .get(hex_start + 64)
            .is_none_or(|c| !c.is_ascii_hexdigit());
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) || !ends_there {
            continue;
        }
        let start = bytes[..at]
            .iter()
            .rposition(|&c| !reference_char(c))
            .map_or(0, |p| p + 1);
        if let Ok(reference) = Reference::parse(&text[start..hex_start + 64]) {
            found.push((hex_start, reference));
        }
    }
    found
}

/// A file with some of its pins moved to new digests.
pub struct Rewrite {
    pub file: PathBuf,
    pub old: String,
    pub new: String,
}

/// The new text of each file where a pin moves: `(pin, new digest)` pairs, any order.
pub fn rewrite(changes: &[(Pin, String)]) -> Result<Vec<Rewrite>> {
    let mut files: Vec<&PathBuf> = changes.iter().map(|(p, _)| &p.file).collect();
    files.sort();
    files.dedup();
    let mut rewrites = Vec::new();
    for file in files {
        let old = std::fs::read_to_string(file)
            .map_err(|e| Error::io(format!("cannot read {}", file.display()), e))?;
        let mut new = old.clone();
        for (pin, digest) in changes.iter().filter(|(p, _)| &p.file == file) {
            let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
            new.replace_range(pin.offset..pin.offset + 64, hex);
        }
        if new != old {
            rewrites.push(Rewrite {
                file: file.clone(),
                old,
                new,
            });
        }
    }
    Ok(rewrites)
}

impl Rewrite {
    /// Replace the file, keeping its permissions; readers see the old text or the new one.
    pub fn apply(&self) -> Result<()> {
        let mode = std::fs::metadata(&self.file)
            .map_err(|e| Error::io(format!("cannot write {}", self.file.display()), e))?
            .permissions()
            .mode();
        crate::state::write_atomically_with_mode(&self.file, self.new.as_bytes(), mode & 0o7777)
    }

    /// A unified diff of the changed lines (the lines around them are not needed to read it).
    pub fn diff(&self, shown_as: &str) -> String {
        let mut out = format!("--- a/{shown_as}\n+++ b/{shown_as}\n");
        for (number, (old, new)) in self.old.lines().zip(self.new.lines()).enumerate() {
            if old != new {
                out.push_str(&format!(
                    "@@ -{n} +{n} @@\n-{old}\n+{new}\n",
                    n = number + 1
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> String {
        c.to_string().repeat(64)
    }

    #[test]
    fn pins_are_found_in_dockerfiles_and_sbt_strings() {
        let text = format!(
            "# base\nFROM public.ecr.aws/lambda/java:21@sha256:{a} AS build\n\
             lazy val latestVersionOfLambdaSDK = \"public.ecr.aws/lambda/java@sha256:{b}\"\n\
             not a pin: x@sha256:{short}\n",
            a = digest('a'),
            b = digest('b'),
            short = "abc"
        );
        let pins = pins_in(&text);
        assert_eq!(pins.len(), 2);
        assert_eq!(
            pins[0].1.to_string(),
            format!("public.ecr.aws/lambda/java:21@sha256:{}", digest('a'))
        );
        assert_eq!(pins[1].1.tag, None);
        assert_eq!(&text[pins[1].0..pins[1].0 + 64], digest('b'));
    }

    /// Issue 29 item 13: in a shared directory, a link planted under the temporary name
    /// (any name a rewrite has used: it is predictable from the pid) is never written through.
    #[test]
    fn a_link_planted_under_the_temporary_name_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let file = dir.path().join("Dockerfile");
        std::fs::write(&file, "old").unwrap();
        for name in [
            format!(".Dockerfile.n10n-dev-{}", std::process::id()),
            crate::state::temporary_beside(&file)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        ] {
            std::os::unix::fs::symlink(&victim, dir.path().join(name)).unwrap();
        }
        let rewrite = Rewrite {
            file: file.clone(),
            old: "old".into(),
            new: "new".into(),
        };
        rewrite.apply().unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(!file.symlink_metadata().unwrap().is_symlink());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "new");
    }

    #[test]
    fn a_rewrite_changes_only_the_digest_and_keeps_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("Dockerfile");
        let text = format!(
            "FROM r.io/base:1@sha256:{}   # pinned\nRUN true\n",
            digest('a')
        );
        std::fs::write(&file, &text).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        std::fs::write(
            dir.path().join("README.md"),
            format!("x@sha256:{}", digest('a')),
        )
        .unwrap();
        let pins = find(dir.path()).unwrap();
        assert_eq!(pins.len(), 1, "README.md is not a build file");
        let new = format!("sha256:{}", digest('c'));
        let rewrites = rewrite(&[(pins[0].clone(), new)]).unwrap();
        rewrites[0].apply().unwrap();
        let after = std::fs::read_to_string(&file).unwrap();
        assert_eq!(after, text.replace(&digest('a'), &digest('c')));
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let diff = rewrites[0].diff("Dockerfile");
        assert!(
            diff.contains("@@ -1 +1 @@\n-FROM r.io/base:1@sha256:aaaa"),
            "{diff}"
        );
        assert!(!diff.contains("RUN true"));
    }
}
