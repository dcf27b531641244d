//! Registry credentials resolved on this machine, the way the Docker CLI resolves them:
//! `credHelpers` for the host, else `credsStore`, else `auths` in the Docker config
//! (`$DOCKER_CONFIG/config.json`, default `~/.docker/config.json`). They stay in memory.

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use crate::error::{Error, Result};

/// Where Docker keeps Docker Hub's credentials.
const HUB_KEY: &str = "https://index.docker.io/v1/";

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Credentials {{ username: {:?}, password: <redacted> }}",
            self.username
        )
    }
}

/// The Docker config file this machine's `docker` reads.
pub fn docker_config_path() -> Option<PathBuf> {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir).join("config.json")),
        _ => directories::BaseDirs::new().map(|d| d.home_dir().join(".docker/config.json")),
    }
}

/// Credentials for `registry` (`host[:port]`, `docker.io` for Docker Hub), if any are set up.
pub fn resolve(registry: &str) -> Result<Option<Credentials>> {
    let Some(path) = docker_config_path() else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
    };
    let config: Value = serde_json::from_str(&text).map_err(|e| {
        Error::Config(format!(
            "{} is not valid JSON ({e}); docker cannot read it either",
            path.display()
        ))
    })?;
    from_config(&config, registry)
}

fn from_config(config: &Value, registry: &str) -> Result<Option<Credentials>> {
    let helper = config["credHelpers"]
        .as_object()
        .and_then(|helpers| helpers.iter().find(|(key, _)| same_registry(key, registry)))
        .map(|(_, name)| name)
        .or(config.get("credsStore"))
        .and_then(Value::as_str)
        .filter(|name| !name.is_empty());
    if let Some(helper) = helper {
        return from_helper(helper, registry);
    }
    let entry = config["auths"]
        .as_object()
        .and_then(|auths| auths.iter().find(|(key, _)| same_registry(key, registry)))
        .map(|(_, entry)| entry);
    entry.map(|e| from_auths_entry(e, registry)).transpose()
}

/// `auths` keys are written many ways: `host`, `https://host`, `https://index.docker.io/v1/`.
fn same_registry(key: &str, registry: &str) -> bool {
    let host = key
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    let hub = |h: &str| matches!(h, "docker.io" | "index.docker.io" | "registry-1.docker.io");
    host == registry || (hub(host) && hub(registry))
}

fn from_auths_entry(entry: &Value, registry: &str) -> Result<Credentials> {
    let bad = |why: &str| {
        Error::Config(format!(
            "the Docker config's auths entry for {registry} {why}; run `docker login {registry}` again"
        ))
    };
    if let Some(auth) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
        let decoded = STANDARD
            .decode(auth.trim())
            .map_err(|_| bad("has an `auth` that is not base64"))?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad("is not UTF-8"))?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| bad("has an `auth` without user:password"))?;
        return Ok(Credentials {
            username: username.to_string(),
            password: password.to_string(),
        });
    }
    match (entry["username"].as_str(), entry["password"].as_str()) {
        (Some(username), Some(password)) => Ok(Credentials {
            username: username.to_string(),
            password: password.to_string(),
        }),
        _ => Err(bad("holds neither `auth` nor username and password")),
    }
}

/// The standard helper protocol: `docker-credential-<name> get`, the server URL on stdin,
/// `{"Username","Secret"}` on stdout; "credentials not found" means there are none.
fn from_helper(name: &str, registry: &str) -> Result<Option<Credentials>> {
    let program = format!("docker-credential-{name}");
    let server = match same_registry(HUB_KEY, registry) {
        true => HUB_KEY,
        false => registry,
    };
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::Config(format!(
                "the Docker config names the credential helper `{name}`, but {program} cannot \
                 be run ({e}): install it or remove it from the Docker config"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading stdin is reported by its exit status below.
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io(format!("cannot run {program}"), e))?;
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        if said.contains("credentials not found") {
            return Ok(None);
        }
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(Error::Other(format!(
            "{program} get {server} failed ({}): {}",
            out.status,
            [said.as_str(), err.trim()].join(" ").trim()
        )));
    }
    let answer: Value = serde_json::from_str(&said)
        .map_err(|_| Error::Other(format!("{program} get {server} did not answer JSON")))?;
    match (answer["Username"].as_str(), answer["Secret"].as_str()) {
        (Some(username), Some(secret)) if !secret.is_empty() => Ok(Some(Credentials {
            username: username.to_string(),
            password: secret.to_string(),
        })),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auths_are_found_under_any_spelling_of_the_host() {
        let config: Value = serde_json::from_str(
            r#"{"auths":{"https://127.0.0.1:5000/v1/":{"auth":"dTpwOnc="},
                "https://index.docker.io/v1/":{"username":"hub","password":"s"}}}"#,
        )
        .unwrap();
        let found = from_config(&config, "127.0.0.1:5000").unwrap().unwrap();
        assert_eq!(
            (found.username.as_str(), found.password.as_str()),
            ("u", "p:w")
        );
        assert_eq!(
            from_config(&config, "docker.io").unwrap().unwrap().username,
            "hub"
        );
        assert_eq!(from_config(&config, "other.io").unwrap(), None);
        assert!(!format!("{found:?}").contains("p:w"));
    }

    #[test]
    fn a_broken_auths_entry_says_to_log_in_again() {
        let config: Value = serde_json::from_str(r#"{"auths":{"r.io":{"auth":"%%"}}}"#).unwrap();
        let e = from_config(&config, "r.io").unwrap_err();
        assert!(e.to_string().contains("docker login r.io"), "{e}");
    }

    #[test]
    fn a_missing_helper_is_named() {
        let config: Value =
            serde_json::from_str(r#"{"credHelpers":{"r.io":"n10n-absent"}}"#).unwrap();
        let e = from_config(&config, "r.io").unwrap_err();
        assert!(
            e.to_string().contains("docker-credential-n10n-absent"),
            "{e}"
        );
    }
}
