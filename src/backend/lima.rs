//! The `lima` backend: drives `limactl` (Lima ≥ 2.0) by its documented CLI contract.
//!
//! - `limactl list NAME --json` prints one JSON object per line; a missing NAME exits 1.
//! - `limactl start --name=NAME TEMPLATE` creates, and fails if NAME exists; `start NAME`
//!   resumes and is a no-op when already running. A non-zero exit with the instance Running
//!   means "degraded" (a readiness probe failed): a warning, not a failure.
//! - `limactl stop NAME` fails unless Running; `stop -f` recovers a Broken instance.
//! - `limactl delete -f NAME` stops and deletes, and succeeds when NAME does not exist.
//! - `DIR/ssh.config` names the user and the identity file; the SSH port is `sshLocalPort`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;

use super::{Backend, MachineState};
use crate::config::{Arch, BackendKind, Project};
use crate::error::{Error, IoContext, Result, last_lines};
use crate::ssh::Endpoint;
use crate::state::{self, StateDir};

/// The template n10n-dev starts instances from, with the provision script it names.
const TEMPLATE: &str = include_str!("../../lima.yaml");
const DOCKER_SH: &str = include_str!("../../provision/docker.sh");
const MINIMUM_VERSION: (u32, u32) = (2, 0);

pub struct LimaBackend {
    limactl: PathBuf,
    name: String,
    /// `--set` expression with the configured resources.
    resources: String,
    arch: Option<&'static str>,
    state_dir: PathBuf,
    known_hosts: PathBuf,
}

/// The fields of `limactl list --json` that n10n-dev reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Instance {
    status: String,
    #[serde(default)]
    dir: PathBuf,
    #[serde(default)]
    ssh_local_port: u16,
    #[serde(default)]
    ssh_address: Option<String>,
    #[serde(default)]
    errors: Vec<String>,
}

impl LimaBackend {
    pub fn new(limactl: PathBuf, project: &Project, state: &StateDir) -> Result<LimaBackend> {
        let vm = &project.config.vm;
        let gib = |bytes: u64| bytes as f64 / (1u64 << 30) as f64;
        Ok(LimaBackend {
            limactl,
            name: vm.name.clone(),
            resources: format!(
                ".cpus = {} | .memory = \"{}GiB\" | .disk = \"{}GiB\"",
                vm.cpus,
                gib(vm.memory.0),
                gib(vm.disk.0).ceil()
            ),
            arch: match vm.arch {
                Arch::Host => None,
                Arch::X86_64 => Some("x86_64"),
                Arch::Aarch64 => Some("aarch64"),
            },
            state_dir: state.vm_dir(&vm.name)?,
            known_hosts: state.vm_dir(&vm.name)?.join("known_hosts"),
        })
    }

    /// Start the stopped instance. Lima gives cloud-init a new instance-id at every start, and
    /// cloud-init then makes the VM's SSH host keys anew: the pinned key is forgotten, and the
    /// one the VM presents next is pinned (Lima itself checks none).
    fn resume(&self) -> Result<()> {
        self.run_checked("starting the VM", &["--tty=false", "start", &self.name])?;
        match std::fs::remove_file(&self.known_hosts) {
            Ok(()) => tracing::info!("the VM's SSH host key is learnt anew (Lima made new keys)"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::io(
                    format!("cannot remove {}", self.known_hosts.display()),
                    e,
                ));
            }
        }
        Ok(())
    }

    fn limactl(&self, args: &[&str]) -> Result<Output> {
        tracing::debug!("limactl {}", args.join(" "));
        Command::new(&self.limactl)
            .args(args)
            .output()
            .context(|| format!("cannot run {}", self.limactl.display()))
    }

    fn instance(&self) -> Result<Option<Instance>> {
        let out = self.limactl(&["list", &self.name, "--json"])?;
        if !out.status.success() {
            return Ok(None);
        }
        parse_list(&out.stdout, &self.name).map(Some)
    }

    /// Write the template and its provision script where Lima resolves `file:` from.
    fn write_template(&self) -> Result<PathBuf> {
        let dir = self.state_dir.join("lima-template");
        state::create_private_dir(&dir.join("provision"))?;
        state::write_atomically(&dir.join("provision/docker.sh"), DOCKER_SH.as_bytes())?;
        let template = dir.join("lima.yaml");
        state::write_atomically(&template, TEMPLATE.as_bytes())?;
        Ok(template)
    }

    fn run_checked(&self, what: &str, args: &[&str]) -> Result<()> {
        let out = self.limactl(args)?;
        if out.status.success() {
            return Ok(());
        }
        // A readiness probe that failed leaves a running, "degraded" instance.
        if args.contains(&"start") && matches!(self.state()?, MachineState::Running) {
            tracing::warn!(
                "limactl reports the VM as degraded: {}",
                last_lines(&out.stderr, 5)
            );
            return Ok(());
        }
        Err(Error::Other(format!(
            "`limactl {}` failed while {what} (exit {}):\n{}\nnext: `limactl list {}` shows the VM's state; \
             its logs are in the instance directory",
            args.join(" "),
            out.status.code().unwrap_or(-1),
            last_lines(&out.stderr, 15),
            self.name
        )))
    }
}

impl Backend for LimaBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Lima
    }

    fn state(&self) -> Result<MachineState> {
        Ok(match self.instance()? {
            None => MachineState::Absent,
            Some(i) => match i.status.as_str() {
                "Running" => MachineState::Running,
                "Stopped" => MachineState::Stopped,
                "Broken" => MachineState::Broken(i.errors.join("; ")),
                other => MachineState::Other(other.to_string()),
            },
        })
    }

    fn start(&self) -> Result<()> {
        check_version(&self.limactl)?;
        match self.state()? {
            MachineState::Running => Ok(()),
            MachineState::Absent => {
                let template = self.write_template()?;
                let name = format!("--name={}", self.name);
                let mut args = vec!["--tty=false", "start", &name, "--set", &self.resources];
                if let Some(arch) = self.arch {
                    args.extend(["--arch", arch]);
                }
                let template = template.to_string_lossy().into_owned();
                args.push(&template);
                self.run_checked("creating the VM", &args)
            }
            MachineState::Broken(_) => {
                self.run_checked("recovering a broken VM", &["stop", "-f", &self.name])?;
                self.resume()
            }
            // (Reachable and Unreachable are an ssh host's; limactl never reports them.)
            MachineState::Stopped
            | MachineState::Other(_)
            | MachineState::Reachable
            | MachineState::Unreachable(_) => self.resume(),
        }
    }

    fn stop(&self) -> Result<()> {
        match self.state()? {
            MachineState::Running => self.run_checked("stopping the VM", &["stop", &self.name]),
            MachineState::Broken(_) => {
                self.run_checked("stopping the VM", &["stop", "-f", &self.name])
            }
            _ => Ok(()),
        }
    }

    fn destroy(&self) -> Result<()> {
        self.run_checked("deleting the VM", &["delete", "-f", &self.name])
    }

    fn endpoint(&self) -> Result<Endpoint> {
        let instance = self
            .instance()?
            .filter(|i| i.status == "Running" && i.ssh_local_port != 0)
            .ok_or_else(|| {
                Error::Other(format!(
                    "the Lima VM `{}` is not running; run `n10n-dev up`",
                    self.name
                ))
            })?;
        let config_path = instance.dir.join("ssh.config");
        let config = std::fs::read_to_string(&config_path)
            .context(|| format!("cannot read {}", config_path.display()))?;
        let (user, identity) = parse_ssh_config(&config).ok_or_else(|| {
            Error::Other(format!(
                "{}: no User or IdentityFile",
                config_path.display()
            ))
        })?;
        let endpoint = Endpoint {
            host: instance.ssh_address.unwrap_or_else(|| "127.0.0.1".into()),
            port: instance.ssh_local_port,
            user,
            identity,
            host_key_alias: self.name.clone(),
            known_hosts: self.known_hosts.clone(),
        };
        super::remember_endpoint(&self.state_dir, &endpoint)?;
        Ok(endpoint)
    }

    fn last_endpoint(&self) -> Option<Endpoint> {
        super::remembered_endpoint(&self.state_dir)
    }
}

/// Lima 2.0 or newer?
pub fn is_recent(limactl: &Path) -> bool {
    check_version(limactl).is_ok()
}

fn check_version(limactl: &Path) -> Result<()> {
    let out = Command::new(limactl)
        .arg("--version")
        .output()
        .context(|| format!("cannot run {}", limactl.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match parse_version(&text) {
        Some(version) if version >= MINIMUM_VERSION => Ok(()),
        found => Err(Error::Usage(format!(
            "n10n-dev needs Lima 2.0 or newer; {} reports {}: upgrade with `brew upgrade lima`",
            limactl.display(),
            found.map_or_else(|| format!("{:?}", text.trim()), |(a, b)| format!("{a}.{b}"))
        ))),
    }
}

/// `limactl version 2.2.0` → (2, 2); dev builds (`2.0.0-alpha.2-133-g1c53f93f`) too.
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let version = text.split_whitespace().last()?;
    let mut parts = version.trim_start_matches('v').split(['.', '-']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn parse_list(stdout: &[u8], name: &str) -> Result<Instance> {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .ok_or_else(|| Error::Other(format!("`limactl list {name} --json` printed nothing")))?;
    serde_json::from_str(line)
        .map_err(|e| Error::Other(format!("cannot read `limactl list {name} --json`: {e}")))
}

/// `User` and `IdentityFile` from a Lima ssh.config.
fn parse_ssh_config(text: &str) -> Option<(String, PathBuf)> {
    let user = super::ssh_config_value(text, "User")?;
    Some((
        user,
        PathBuf::from(super::ssh_config_value(text, "IdentityFile")?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As printed by limactl 2.2 (fields n10n-dev ignores trimmed, `config` among them).
    const LIST_LINE: &str = r#"{"name":"n10n-demo","hostname":"lima-n10n-demo","status":"Running","dir":"/Users/me/.lima/n10n-demo","vmType":"vz","arch":"aarch64","cpus":4,"memory":8589934592,"disk":64424509440,"sshLocalPort":60022,"sshAddress":"127.0.0.1","sshConfigFile":"/Users/me/.lima/n10n-demo/ssh.config","hostAgentPID":4242,"driverPID":4243,"config":{"cpus":4}}"#;

    #[test]
    fn list_json_line_is_read() {
        let instance = parse_list(format!("{LIST_LINE}\n").as_bytes(), "n10n-demo").unwrap();
        assert_eq!(instance.status, "Running");
        assert_eq!(instance.ssh_local_port, 60022);
        assert_eq!(instance.dir, PathBuf::from("/Users/me/.lima/n10n-demo"));
        let broken = r#"{"name":"x","status":"Broken","errors":["hostagent is not running"]}"#;
        let instance = parse_list(broken.as_bytes(), "x").unwrap();
        assert_eq!(instance.errors, vec!["hostagent is not running"]);
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("limactl version 2.2.0\n"), Some((2, 2)));
        assert_eq!(
            parse_version("limactl version 2.0.0-alpha.2-133-g1c53f93f"),
            Some((2, 0))
        );
        assert_eq!(parse_version("limactl version 1.2.1"), Some((1, 2)));
        assert!(parse_version("limactl version HEAD-abc").is_none());
        assert!(parse_version("limactl version 1.2.1") < Some(MINIMUM_VERSION));
    }

    #[test]
    fn ssh_config_user_and_identity() {
        let config = "# This SSH config file can be passed to 'ssh -F'.\nHost lima-n10n-demo\n  IdentityFile \"/Users/me/.lima/_config/user\"\n  \
                      StrictHostKeyChecking no\n  User me\n  Hostname 127.0.0.1\n  Port 60022\n";
        assert_eq!(
            parse_ssh_config(config),
            Some(("me".into(), PathBuf::from("/Users/me/.lima/_config/user")))
        );
    }
}
