//! The Docker context `n10n-<vm>` that points the host's `docker` (and docker-java, sbt, IDEs
//! that follow contexts) at the forwarder's engine socket. Made with the docker CLI when it is
//! installed (else, or when it fails, by writing the context's meta.json as Rancher Desktop
//! does); the current context changes only when asked, and is reset on removal only when it
//! was ours.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::digest::sha256_digest;
use crate::error::{Error, Result};

/// `n10n-<vm>`; a VM already named `n10n-…` (as a project's is by default) keeps its name,
/// so that project `app` gets the context `n10n-app`, not `n10n-n10n-app`.
pub fn name(vm: &str) -> String {
    match vm.starts_with("n10n-") {
        true => vm.to_string(),
        false => format!("n10n-{vm}"),
    }
}

/// The Docker CLI's configuration directory: `$DOCKER_CONFIG`, else `~/.docker`.
fn config_dir() -> Result<PathBuf> {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir)),
        _ => directories::BaseDirs::new()
            .map(|d| d.home_dir().join(".docker"))
            .ok_or_else(|| Error::Other("cannot find the home directory".into())),
    }
}

/// Where the CLI keeps a context: `contexts/meta/<sha256 of its name>/meta.json`.
fn meta_path(name: &str) -> Result<PathBuf> {
    let digest = sha256_digest(name.as_bytes());
    let hex = digest.trim_start_matches("sha256:");
    Ok(config_dir()?
        .join("contexts/meta")
        .join(hex)
        .join("meta.json"))
}

/// The engine endpoint a context points to, if it exists.
pub fn host_of(name: &str) -> Option<String> {
    let text = std::fs::read_to_string(meta_path(name).ok()?).ok()?;
    let meta: Value = serde_json::from_str(&text).ok()?;
    meta["Endpoints"]["docker"]["Host"]
        .as_str()
        .map(str::to_string)
}

/// The context the CLI uses when `DOCKER_CONTEXT` and `DOCKER_HOST` are unset.
pub fn current() -> Option<String> {
    let text = std::fs::read_to_string(config_dir().ok()?.join("config.json")).ok()?;
    let config: Value = serde_json::from_str(&text).ok()?;
    config["currentContext"].as_str().map(str::to_string)
}

fn has_cli() -> bool {
    which::which("docker").is_ok()
}

fn cli(args: &[&str]) -> Result<()> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io("cannot run docker", e))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(Error::Other(format!(
            "`docker {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}

/// Make `name` point at `host` (`unix:///…/docker.sock`), creating it if needed. A context
/// that already points there is left alone, without running anything.
pub fn ensure(name: &str, host: &str, description: &str) -> Result<()> {
    let existing = host_of(name);
    if existing.as_deref() == Some(host) {
        return Ok(());
    }
    if has_cli() {
        let verb = if existing.is_some() {
            "update"
        } else {
            "create"
        };
        let endpoint = format!("host={host}");
        let made = cli(&[
            "context",
            verb,
            name,
            "--description",
            description,
            "--docker",
            &endpoint,
        ]);
        match made {
            Ok(()) => return Ok(()),
            // A CLI that cannot (too old, a wrapper): the file is what the CLI would write.
            Err(e) => tracing::debug!("{e}; writing the context's meta.json instead"),
        }
    }
    let meta = json!({
        "Name": name,
        "Metadata": { "Description": description },
        "Endpoints": { "docker": { "Host": host, "SkipTLSVerify": false } },
    });
    let path = meta_path(name)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    }
    crate::state::write_atomically(&path, meta.to_string().as_bytes())
}

/// Make `name` the current context.
pub fn make_current(name: &str) -> Result<()> {
    if host_of(name).is_none() {
        return Err(Error::Other(format!(
            "there is no Docker context {name} yet: `n10n-dev up` creates it"
        )));
    }
    match has_cli() && cli(&["context", "use", name]).is_ok() {
        true => Ok(()),
        false => set_current(Some(name)),
    }
}

/// Remove `name`; the current context goes back to `default` only if it was `name`.
/// Remove the context `name`; `false` when there was none to remove.
pub fn remove(name: &str) -> Result<bool> {
    if current().as_deref() == Some(name)
        && !(has_cli() && cli(&["context", "use", "default"]).is_ok())
    {
        set_current(None)?;
    }
    if host_of(name).is_none() {
        return Ok(false);
    }
    if has_cli() && cli(&["context", "rm", "-f", name]).is_ok() {
        return Ok(true);
    }
    let path = meta_path(name)?;
    let dir = path.parent().unwrap_or(&path);
    std::fs::remove_dir_all(dir)
        .map_err(|e| Error::io(format!("cannot remove {}", dir.display()), e))?;
    Ok(true)
}

/// Write `currentContext` into config.json (removed for `None`), keeping everything else.
fn set_current(name: Option<&str>) -> Result<()> {
    let path = config_dir()?.join("config.json");
    let mut config: Value = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| json!({}));
    let Some(object) = config.as_object_mut() else {
        return Err(Error::Config(format!(
            "{} is not a JSON object",
            path.display()
        )));
    };
    match name {
        Some(name) => object.insert("currentContext".into(), name.into()),
        None => object.remove("currentContext"),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    }
    let text = serde_json::to_vec_pretty(&config).unwrap_or_default();
    crate::state::write_atomically(&path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_project_s_context_is_n10n_and_its_name_once() {
        assert_eq!(name("n10n-app"), "n10n-app");
        assert_eq!(name("e2e"), "n10n-e2e");
    }
}
