//! `ssh-config`: plain OpenSSH accepts the block, with strict checking against the pinned key.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::harness::*;

fn openssh(config: &Path, command: &[&str]) -> Output {
    Command::new("ssh")
        .args([
            "-F",
            config.to_str().unwrap(),
            "-o",
            "BatchMode=yes",
            "test-vm",
        ])
        .args(command)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn openssh_accepts_the_block_and_the_pinned_key() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    let block = project.ok(&["ssh-config"]);
    assert!(block.starts_with("Host test-vm\n"), "{block}");
    let config = project.home.path().join("ssh_config");
    std::fs::write(&config, &block).unwrap();
    let out = openssh(&config, &["echo", "via-openssh"]);
    assert_eq!(stdout(&out), "via-openssh\n", "{}", stderr(&out));

    // A server with another host key on the same port is refused by OpenSSH too.
    let port = sshd.port;
    let dir = sshd.kill();
    std::fs::remove_file(dir.path().join("host_key")).unwrap();
    let _impostor = Sshd::start_in(dir, port, "ed25519");
    let out = openssh(&config, &["true"]);
    assert_exit_saying(&out, 255, "HOST IDENTIFICATION HAS CHANGED");
}
