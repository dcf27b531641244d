//! What a new user meets in the first hour (issue 17): messages that say only what is true,
//! with the next step, and one meaning everywhere.

use crate::harness::*;

#[test]
fn stop_on_an_ssh_host_ends_the_forwarder_and_leaves_the_host() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    let out = project.run(&["stop"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "stop: forwarder stopped; the host is left running\n"
    );
}
