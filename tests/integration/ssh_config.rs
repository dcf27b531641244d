//! `ssh-config`: plain OpenSSH accepts the block, with strict checking against the pinned key.

use crate::harness::*;

#[test]
fn openssh_accepts_the_block_and_the_pinned_key() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    let block = project.ok(&["ssh-config"]);
    assert!(block.starts_with("Host test-vm\n"), "{block}");
    let config = project.home.path().join("ssh_config");
    std::fs::write(&config, &block).unwrap();
    let out = std::process::Command::new("ssh")
        .args([
            "-F",
            config.to_str().unwrap(),
            "-o",
            "BatchMode=yes",
            "test-vm",
            "echo",
            "via-openssh",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "via-openssh\n", "{}", stderr(&out));

    // A server with another host key on the same port is refused by OpenSSH too.
    let port = sshd.port;
    let dir = sshd.kill();
    std::fs::remove_file(dir.path().join("host_key")).unwrap();
    let _impostor = Sshd::start_in(dir, port, "ed25519");
    let out = std::process::Command::new("ssh")
        .args([
            "-F",
            config.to_str().unwrap(),
            "-o",
            "BatchMode=yes",
            "test-vm",
            "true",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("HOST IDENTIFICATION HAS CHANGED"),
        "{}",
        stderr(&out)
    );
}
