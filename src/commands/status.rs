//! `status [--json]`: backend, state, resources, SSH endpoint, host key, last sync.

use clap::Args;
use serde::Serialize;

use super::Context;
use crate::backend::MachineState;
use crate::config::BackendKind;
use crate::error::Result;
use crate::outln;

#[derive(Serialize)]
struct Status {
    name: String,
    backend: String,
    state: String,
    /// A VM's resources (not for an ssh host or this machine, whose resources are their own).
    #[serde(skip_serializing_if = "Option::is_none")]
    cpus: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disk: Option<String>,
    endpoint: Option<String>,
    host_key: Option<String>,
    /// Where the replica lives (none for the native backend, which works in the project).
    #[serde(skip_serializing_if = "Option::is_none")]
    replica: Option<String>,
    provision_stamp: Option<String>,
    /// Seconds since the Unix epoch.
    last_sync: Option<u64>,
    last_sync_entries: Option<usize>,
    /// The VM's engine, served here by the forwarder (not for the native backend).
    docker_socket: Option<String>,
    docker_context: Option<String>,
    forwarder: Option<Forwarder>,
    /// The configuration files read: the project's n10n-dev.toml, the user's own.
    config_files: Vec<String>,
}

#[derive(Serialize)]
struct Forwarder {
    pid: u32,
    /// The engine answers through the socket now.
    healthy: bool,
    connected: bool,
    reconnects: u32,
    /// Connections made anew on request (after provisioning) while the old one drained.
    renewals: u32,
    last_error: Option<String>,
    /// The kept connection's socket, which n10n-dev's own commands go through.
    kept_socket: String,
    kept_sessions: u64,
    ports: Vec<crate::forwarder::Forwarded>,
    skipped: Vec<crate::forwarder::Skipped>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

pub async fn run(ctx: &Context, args: StatusArgs) -> Result<()> {
    let config = &ctx.project.config;
    let backend = match ctx.backend() {
        Ok(backend) => backend,
        Err(e) => {
            // What is known without a backend, then why there is none.
            if !args.json {
                outln!("name:      {}", config.vm.name)?;
                outln!(
                    "backend:   {} (not usable here)",
                    config.vm.backend.as_str()
                )?;
            }
            return Err(e);
        }
    };
    let state = tokio::task::block_in_place(|| backend.state())?;
    let endpoint = backend.last_endpoint();
    let host_key = match &endpoint {
        Some(e) => e.pin().fingerprint()?,
        None => None,
    };
    let last = crate::sync::last_sync(&ctx.project, &ctx.state)?;
    let remote = !backend.runs_locally();
    let is_vm = matches!(backend.kind(), BackendKind::Lima | BackendKind::Vagrant);
    let paths = ctx.forwarder_paths()?;
    let forwarder = match (remote, crate::forwarder::running_pid(&paths)) {
        (true, Some(pid)) => {
            let reported = crate::forwarder::Status::read(&paths).unwrap_or_default();
            Some(Forwarder {
                pid,
                healthy: crate::forwarder::engine_answers(
                    &paths.socket,
                    std::time::Duration::from_secs(2),
                ),
                connected: reported.connected,
                reconnects: reported.reconnects,
                renewals: reported.renewals,
                last_error: reported.last_error,
                kept_socket: paths.kept.display().to_string(),
                kept_sessions: reported.kept_sessions,
                ports: reported.ports,
                skipped: reported.skipped,
            })
        }
        _ => None,
    };
    let context = ctx.docker_context();
    let status = Status {
        name: config.vm.name.clone(),
        backend: backend.kind().to_string(),
        state: match &state {
            // The JSON's state is one word; the reason is on the text line.
            MachineState::Unreachable(_) => "unreachable".to_string(),
            state => state.to_string(),
        },
        cpus: is_vm.then_some(config.vm.cpus),
        memory: is_vm.then(|| config.vm.memory.to_string()),
        disk: is_vm.then(|| config.vm.disk.to_string()),
        endpoint: endpoint.map(|e| e.to_string()),
        host_key,
        replica: remote.then(|| config.sync.dest.clone()),
        provision_stamp: crate::provision::remembered(&ctx.state.vm_dir(&config.vm.name)?),
        last_sync: last.map(|(when, _)| {
            when.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        }),
        last_sync_entries: last.map(|(_, entries)| entries),
        docker_socket: remote.then(|| paths.socket.display().to_string()),
        docker_context: crate::docker_context::host_of(&context).map(|_| context),
        forwarder,
        config_files: (ctx.project.files_read.iter())
            .map(|f| f.display().to_string())
            .collect(),
    };
    if args.json {
        let json = serde_json::to_string_pretty(&status).expect("plain data");
        outln!("{json}")?;
        return Ok(());
    }
    let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    outln!("name:      {}", status.name)?;
    outln!("backend:   {}", status.backend)?;
    outln!("state:     {state}")?;
    if let (Some(cpus), Some(memory), Some(disk)) = (status.cpus, &status.memory, &status.disk) {
        outln!("resources: {cpus} cpus, {memory} memory, {disk} disk")?;
    }
    if remote {
        outln!("ssh:       {}", or_none(&status.endpoint))?;
        outln!("host key:  {}", or_none(&status.host_key))?;
        outln!("replica:   {}", or_none(&status.replica))?;
    }
    outln!("provision: {}", or_none(&status.provision_stamp))?;
    match last {
        Some((when, entries)) => {
            let ago = when.elapsed().map_or(0, |d| d.as_secs());
            outln!("last sync: {ago} s ago, {entries} entries")?;
        }
        None => outln!("last sync: -")?,
    }
    if remote {
        outln!("docker:    {}", or_none(&status.docker_socket))?;
        outln!("context:   {}", or_none(&status.docker_context))?;
        match &status.forwarder {
            Some(f) => {
                let health = match (f.healthy, f.connected) {
                    (true, _) => "serving".to_string(),
                    (false, true) => "connected, but the engine does not answer".to_string(),
                    (false, false) => format!(
                        "reconnecting ({})",
                        f.last_error.as_deref().unwrap_or("no connection")
                    ),
                };
                outln!(
                    "forwarder: pid {}, {health}, {} reconnects, {} sessions through the kept \
                     connection",
                    f.pid,
                    f.reconnects,
                    f.kept_sessions
                )?;
                for port in &f.ports {
                    outln!(
                        "port:      {} -> {} ({})",
                        port.host,
                        port.guest,
                        port.source
                    )?;
                }
                for skipped in &f.skipped {
                    outln!("skipped:   {} ({})", skipped.port, skipped.why)?;
                }
            }
            None => outln!("forwarder: not running (`n10n-dev up` starts it)")?,
        }
    }
    Ok(())
}
