//! The user's own settings: `<platform config dir>/n10n-dev/config.toml`, or the file that
//! `N10N_DEV_CONFIG` names. They are the decisions of trust that are the user's to make and never
//! a checkout's (a project's `n10n-dev.toml` may have been written by anyone): a project file
//! that sets one of them is refused, naming this file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::{help_for, plain_types, render_at};
use crate::error::{Error, Result};

/// The variable that names the file instead of the platform's place.
pub const ENV: &str = "N10N_DEV_CONFIG";

/// The keys of this file, as a project file would spell them (`[table] key`).
pub const KEYS: [&str; 3] = ["[sync] roots", "[forward] public", "[push] ecr_hosts"];

#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserConfig {
    /// Where the file is looked for, whether or not it exists.
    pub path: Option<PathBuf>,
    /// The file was there and read.
    pub read: bool,
    /// Directories on a machine that replicas may go in, besides `~/n10n`.
    pub sync_roots: Vec<String>,
    /// Forwarded ports listen on every interface of this machine, not on loopback only.
    pub forward_public: bool,
    /// Registries outside the ECR host pattern that may get an ECR token from `push`.
    pub ecr_hosts: Vec<String>,
}

/// `N10N_DEV_CONFIG`, else `<config dir>/n10n-dev/config.toml` (`~/.config` on Linux,
/// `~/Library/Application Support` on macOS).
pub fn path() -> Option<PathBuf> {
    if let Some(file) = std::env::var_os(ENV).filter(|v| !v.is_empty()) {
        return Some(file.into());
    }
    let dirs = directories::BaseDirs::new()?;
    Some(dirs.config_dir().join("n10n-dev").join("config.toml"))
}

/// The user's settings; all defaults when there is no file.
pub fn load() -> Result<UserConfig> {
    let Some(path) = path() else {
        return Ok(UserConfig::default());
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(UserConfig {
                path: Some(path),
                ..UserConfig::default()
            });
        }
        Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
    };
    let raw = parse(&text, &path)?;
    Ok(UserConfig {
        read: true,
        sync_roots: raw.sync.roots.unwrap_or_default(),
        forward_public: raw.forward.public.unwrap_or(false),
        ecr_hosts: raw.push.ecr_hosts.unwrap_or_default(),
        path: Some(path),
    })
}

/// The words a refusal of a user-only key in a project file ends with: where to set it instead.
pub fn where_to_set(key: &str) -> String {
    format!(
        "{key} is yours to decide, not a project's: set it in {}",
        file_named()
    )
}

/// The user's file, as a message names it.
pub fn file_named() -> String {
    path().map_or_else(
        || format!("your own config file (set {ENV})"),
        |p| p.display().to_string(),
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    sync: RawSync,
    #[serde(default)]
    forward: RawForward,
    #[serde(default)]
    push: RawPush,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSync {
    roots: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForward {
    public: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPush {
    ecr_hosts: Option<Vec<String>>,
}

fn parse(text: &str, path: &Path) -> Result<Raw> {
    toml::from_str(text).map_err(|err| {
        let message = plain_types(err.message());
        let help = match message.contains("unknown field") {
            true => format!(
                "this file holds only the user's own settings ({}); project settings go in \
                 the project's n10n-dev.toml",
                KEYS.join(", ")
            ),
            false => help_for(&message),
        };
        Error::Config(render_at(path, text, err.span(), &message, &help))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_s_keys_are_read_and_project_keys_refused_with_the_place() {
        let path = Path::new("/home/me/.config/n10n-dev/config.toml");
        let raw = parse(
            "[forward]\npublic = true\n[push]\necr_hosts = [\"ecr.internal\"]\n",
            path,
        )
        .unwrap();
        assert_eq!(raw.forward.public, Some(true));
        assert_eq!(raw.push.ecr_hosts.unwrap(), ["ecr.internal"]);
        let err = parse("[vm]\ncpus = 2\n", path).unwrap_err().to_string();
        assert!(err.contains("config.toml:1:2"), "{err}");
        assert!(err.contains("only the user's own settings"), "{err}");
        let err = parse("[forward]\npublic = \"yes\"\n", path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("config.toml:2:10"), "{err}");
    }
}
