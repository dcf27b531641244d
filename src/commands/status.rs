//! `status [--json]`: backend, state, resources, SSH endpoint, host key, last sync.

use serde::Serialize;

use super::Context;
use crate::cli::StatusArgs;
use crate::error::Result;

#[derive(Serialize)]
struct Status {
    name: String,
    backend: String,
    state: String,
    cpus: u32,
    memory: String,
    disk: String,
    endpoint: Option<String>,
    host_key: Option<String>,
    replica: String,
    provision_stamp: Option<String>,
    /// Seconds since the Unix epoch.
    last_sync: Option<u64>,
    last_sync_entries: Option<usize>,
}

pub async fn run(ctx: &Context, args: StatusArgs) -> Result<()> {
    let config = &ctx.project.config;
    let backend = ctx.backend(None)?;
    let state = tokio::task::block_in_place(|| backend.state())?;
    let endpoint = backend.last_endpoint();
    let host_key = match &endpoint {
        Some(e) => e.pin().fingerprint()?,
        None => None,
    };
    let last = crate::sync::last_sync(&ctx.project, &ctx.state)?;
    let status = Status {
        name: config.vm.name.clone(),
        backend: backend.kind().to_string(),
        state: state.to_string(),
        cpus: config.vm.cpus,
        memory: config.vm.memory.to_string(),
        disk: config.vm.disk.to_string(),
        endpoint: endpoint.map(|e| e.to_string()),
        host_key,
        replica: config.sync.dest.clone(),
        provision_stamp: crate::provision::remembered(&ctx.state.vm_dir(&config.vm.name)?),
        last_sync: last.map(|(when, _)| {
            when.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        }),
        last_sync_entries: last.map(|(_, entries)| entries),
    };
    if args.json {
        let json = serde_json::to_string_pretty(&status).expect("plain data");
        println!("{json}");
        return Ok(());
    }
    let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    println!("name:      {}", status.name);
    println!("backend:   {}", status.backend);
    println!("state:     {}", status.state);
    println!(
        "resources: {} cpus, {} memory, {} disk",
        status.cpus, status.memory, status.disk
    );
    println!("ssh:       {}", or_none(&status.endpoint));
    println!("host key:  {}", or_none(&status.host_key));
    println!("replica:   {}", status.replica);
    println!("provision: {}", or_none(&status.provision_stamp));
    match last {
        Some((when, entries)) => {
            let ago = when.elapsed().map_or(0, |d| d.as_secs());
            println!("last sync: {ago} s ago, {entries} entries");
        }
        None => println!("last sync: -"),
    }
    Ok(())
}
