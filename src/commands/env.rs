//! `env [--shell sh|fish|json]`: the environment that points Docker clients at the VM's engine
//! through the forwarder's socket, for `eval "$(n10n-dev env)"`. Tools that ignore Docker
//! contexts (the Go client, testcontainers) need it; testcontainers also needs to be told
//! where the socket is inside the VM and where mapped ports are reached.

use crate::outln;
use clap::{Args, ValueEnum};

use super::Context;
use crate::error::Result;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    /// POSIX sh, and the shells that read its `export` lines
    #[value(alias = "bash", alias = "zsh")]
    Sh,
    Fish,
    Json,
}

#[derive(Debug, Args)]
pub struct EnvArgs {
    /// The syntax to print
    #[arg(long, value_enum, default_value = "sh")]
    pub shell: Shell,
}

pub async fn run(ctx: &Context, args: EnvArgs) -> Result<()> {
    let backend = ctx.backend()?;
    if backend.runs_locally() {
        eprintln!(
            "env: the native backend uses this machine's own Docker engine: nothing to change"
        );
        if matches!(args.shell, Shell::Json) {
            outln!("{{}}")?;
        }
        return Ok(());
    }
    let socket = ctx.forwarder_paths()?.socket;
    let vars = [
        ("DOCKER_HOST", format!("unix://{}", socket.display())),
        (
            "TESTCONTAINERS_DOCKER_SOCKET_OVERRIDE",
            crate::engine::DOCKER_SOCKET.to_string(),
        ),
        ("TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1".to_string()),
    ];
    match args.shell {
        Shell::Sh => {
            for (key, value) in &vars {
                outln!(
                    "export {key}={}",
                    crate::ssh::quote::quote(value.as_bytes())
                )?;
            }
        }
        Shell::Fish => {
            for (key, value) in &vars {
                outln!(
                    "set -gx {key} {};",
                    crate::ssh::quote::quote(value.as_bytes())
                )?;
            }
        }
        Shell::Json => {
            let map: serde_json::Map<String, serde_json::Value> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone().into()))
                .collect();
            outln!("{}", serde_json::to_string_pretty(&map).unwrap_or_default())?;
        }
    }
    if !crate::forwarder::engine_answers(&socket, std::time::Duration::from_secs(2)) {
        eprintln!(
            "env: nothing serves {} now: run `n10n-dev up`",
            socket.display()
        );
    }
    Ok(())
}
