//! Provisioning over SSH: the idempotent scripts in `provision/`, run with root rights on the
//! machine, their output shown as it comes, and a stamp (script contents + toolchain list) left
//! on the machine so `up` re-runs them only when something changed.

use std::path::Path;
use std::time::Instant;

use russh::ChannelMsg;

use crate::build_machine::Machine;
use crate::config::{Project, Toolchain};
use crate::error::{Error, Result, last_lines};
use crate::progress::Step;
use crate::ssh::Session;

const STAMP_FILE: &str = "~/.n10n-dev/provision-stamp";

/// One provision script: its name and contents.
pub struct Script {
    pub name: &'static str,
    pub body: String,
}

const EMBEDDED: [(&str, &str); 3] = [
    ("docker", include_str!("../provision/docker.sh")),
    ("jvm", include_str!("../provision/jvm.sh")),
    ("rust", include_str!("../provision/rust.sh")),
];

/// The scripts a machine needs and the stamp it carries once they ran.
pub struct Plan {
    pub scripts: Vec<Script>,
    pub stamp: String,
}

/// Docker always; then the toolchains configured, or detected from the project's build files.
/// `N10N_DEV_PROVISION_DIR` replaces the built-in scripts with `<dir>/<name>.sh`.
pub fn scripts_for(project: &Project) -> Result<Vec<Script>> {
    let mut toolchains = project.config.vm.toolchains.clone();
    if toolchains.is_empty() {
        if project.root.join("build.sbt").is_file() {
            toolchains.push(Toolchain::Jvm);
        }
        if project.root.join("Cargo.toml").is_file() {
            toolchains.push(Toolchain::Rust);
        }
    }
    let mut names = vec!["docker"];
    names.extend(toolchains.iter().map(|t| match t {
        Toolchain::Jvm => "jvm",
        Toolchain::Rust => "rust",
    }));
    let override_dir = std::env::var_os("N10N_DEV_PROVISION_DIR");
    names
        .into_iter()
        .map(|name| {
            let body = match &override_dir {
                Some(dir) => {
                    let path = Path::new(dir).join(format!("{name}.sh"));
                    std::fs::read_to_string(&path)
                        .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?
                }
                None => EMBEDDED
                    .iter()
                    .find(|(n, _)| *n == name)
                    .expect("embedded")
                    .1
                    .to_string(),
            };
            Ok(Script { name, body })
        })
        .collect()
}

/// What the machine must carry to count as provisioned with `scripts`.
pub fn stamp(scripts: &[Script]) -> String {
    let mut hash = crate::digest::Fnv::default();
    for script in scripts {
        hash.update(script.name.as_bytes());
        hash.update(b"\0");
        hash.update(script.body.as_bytes());
        hash.update(b"\0");
    }
    let names: Vec<&str> = scripts.iter().map(|s| s.name).collect();
    format!("{:016x} {}", hash.finish(), names.join(","))
}

/// The Debian release of the VMs that `lima.yaml` and the `Vagrantfile` make.
const VM_DEBIAN_RELEASE: u32 = 13;

/// The machine's OS (its `PRETTY_NAME`) when it is a Debian older than the VMs n10n-dev makes
/// now; `None` for anything else.
pub async fn older_debian(machine: &Machine) -> Result<Option<String>> {
    let out = machine
        .capture(". /etc/os-release && printf '%s\\n' \"$ID\" \"$VERSION_ID\" \"$PRETTY_NAME\"")
        .await?;
    Ok(older_debian_in(&String::from_utf8_lossy(&out.stdout)))
}

/// `older_debian` from its three lines: ID, VERSION_ID, PRETTY_NAME.
fn older_debian_in(facts: &str) -> Option<String> {
    let mut lines = facts.lines();
    let (id, version, name) = (lines.next()?, lines.next()?, lines.next()?);
    let release: u32 = version.parse().ok()?;
    (id == "debian" && release < VM_DEBIAN_RELEASE).then(|| name.to_string())
}

/// Keep a copy of the machine's stamp under n10n-dev's state, for `status`.
pub fn remember(vm_dir: &Path, stamp: &str) -> Result<()> {
    crate::state::write_atomically(&vm_dir.join("provision-stamp"), stamp.as_bytes())
}

pub fn remembered(vm_dir: &Path) -> Option<String> {
    std::fs::read_to_string(vm_dir.join("provision-stamp")).ok()
}

pub async fn is_current(session: &Session, stamp: &str) -> Result<bool> {
    let out = session
        .capture(None, &format!("cat {STAMP_FILE} 2>/dev/null || true"))
        .await?;
    Ok(String::from_utf8_lossy(&out.stdout).trim() == stamp)
}

/// Run every script in order, then leave the stamp. Stops at the first failure, showing the
/// end of the script's output.
pub async fn run(session: &Session, scripts: &[Script], stamp: &str, quiet: bool) -> Result<()> {
    for script in scripts {
        run_one(session, script, quiet).await?;
    }
    let line = format!(
        "mkdir -p ~/.n10n-dev && printf '%s\\n' {} > {STAMP_FILE}",
        crate::ssh::quote::quote(stamp.as_bytes())
    );
    session
        .capture(None, &line)
        .await?
        .success("recording the provision stamp")?;
    Ok(())
}

async fn run_one(session: &Session, script: &Script, quiet: bool) -> Result<()> {
    let started = Instant::now();
    let step = Step::new(&format!("provision: {}.sh", script.name), quiet);
    // Root rights: directly as root, else through passwordless sudo (Lima and Vagrant users
    // have it). N10N_USER tells the script whom to set things up for.
    let command = "if [ \"$(id -u)\" = 0 ]; then N10N_USER=$(id -un) sh -s; \
                   else sudo -n env N10N_USER=\"$(id -un)\" sh -s; fi";
    let mut channel = session.open_exec(command).await?;
    channel
        .data(script.body.as_bytes())
        .await
        .map_err(|e| Error::Other(format!("cannot send {}.sh: {e}", script.name)))?;
    let _ = channel.eof().await;
    let mut output = Vec::new();
    let mut status = None;
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => {
                output.extend_from_slice(&data);
                if let Some(line) = String::from_utf8_lossy(&output).lines().last() {
                    step.message(line);
                }
            }
            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            _ => {}
        }
    }
    step.finish();
    match status {
        Some(0) => {
            tracing::info!(
                "provisioned {}.sh in {:.1?}",
                script.name,
                started.elapsed()
            );
            let said = String::from_utf8_lossy(&output);
            tracing::debug!("{}.sh said:\n{}", script.name, said.trim_end());
            Ok(())
        }
        code => Err(Error::Remote(format!(
            "provisioning failed in {}.sh (exit {}):\n{}\nnext: fix the cause above, then run \
             `n10n-dev provision` (scripts are safe to re-run)",
            script.name,
            code.map_or("none: connection lost".into(), |c| c.to_string()),
            last_lines(&output, 15)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_debian_older_than_the_vms_made_now_is_older() {
        let older = older_debian_in("debian\n12\nDebian GNU/Linux 12 (bookworm)\n");
        assert_eq!(older.as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
        for current in [
            "debian\n13\nDebian GNU/Linux 13 (trixie)\n",
            "ubuntu\n22.04\nUbuntu 22.04.5 LTS\n",
            "debian\n\nDebian GNU/Linux forky/sid\n",
            "",
        ] {
            assert_eq!(older_debian_in(current), None, "{current:?}");
        }
    }
}
