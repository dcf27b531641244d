//! `ssh-config`: an OpenSSH Host block that uses the pinned host key, for ssh, scp and IDEs.

use super::Context;
use crate::error::Result;
use crate::ssh::{Endpoint, Session};

pub async fn run(ctx: &Context) -> Result<()> {
    let endpoint = ctx.endpoint()?;
    if !endpoint.pin().is_recorded()? {
        // Nothing pinned yet: connect once so the block can demand the key (StrictHostKeyChecking yes).
        Session::connect(&endpoint).await?;
    }
    crate::stdout::write(host_block(&endpoint))
}

fn host_block(endpoint: &Endpoint) -> String {
    let quoted = |path: &std::path::Path| format!("\"{}\"", path.display());
    format!(
        "Host {alias}\n  HostName {host}\n  Port {port}\n  User {user}\n  IdentityFile {identity}\n  \
         IdentitiesOnly yes\n  HostKeyAlias {alias}\n  UserKnownHostsFile {known_hosts}\n  \
         StrictHostKeyChecking yes\n",
        alias = endpoint.host_key_alias,
        host = endpoint.host,
        port = endpoint.port,
        user = endpoint.user,
        identity = quoted(&endpoint.identity),
        known_hosts = quoted(&endpoint.known_hosts),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_names_the_pinned_key_file() {
        let block = host_block(&Endpoint {
            host: "127.0.0.1".into(),
            port: 2222,
            user: "dev".into(),
            identity: "/keys/id ed25519".into(),
            host_key_alias: "n10n-demo".into(),
            known_hosts: "/state/vms/n10n-demo/known_hosts".into(),
        });
        assert!(block.starts_with("Host n10n-demo\n"));
        assert!(block.contains("  IdentityFile \"/keys/id ed25519\"\n"));
        assert!(block.contains("  StrictHostKeyChecking yes\n"));
        assert!(block.contains("  UserKnownHostsFile \"/state/vms/n10n-demo/known_hosts\"\n"));
    }
}
