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

#[test]
fn destroy_answered_no_on_a_terminal_is_aborted_with_a_question_that_fits() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    let command = format!(
        "cd '{}' && N10N_DEV_HOME='{}' '{BIN}' destroy; echo \"EXIT=$?\"; sleep 600",
        project.root().display(),
        project.home.path().display()
    );
    let tmux = crate::shell::Tmux::start(format!("n10n-destroy-{}", std::process::id()), &command);
    wait_for("the question", std::time::Duration::from_secs(20), || {
        tmux.capture().contains("[y/N]").then_some(())
    });
    let asked = tmux.capture();
    assert!(
        asked.contains("Forget the host of test-vm") && !asked.contains("disk"),
        "{asked}"
    );
    tmux.send("n");
    tmux.wait_for_line("error: aborted");
    tmux.wait_for_line("EXIT=1");
}
