//! `shell` for real under tmux: prompt, terminal size, resize, exit code.

use std::process::Command;
use std::time::Duration;

use crate::harness::*;

pub struct Tmux {
    session: String,
}

impl Tmux {
    /// A detached 100×30 session running `command`.
    pub fn start(session: String, command: &str) -> Tmux {
        run_ok(
            "tmux",
            &[
                "new-session",
                "-d",
                "-s",
                &session,
                "-x",
                "100",
                "-y",
                "30",
                command,
            ],
        );
        Tmux { session }
    }

    pub fn capture(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.session])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn resize(&self, columns: u16, rows: u16) {
        let (columns, rows) = (columns.to_string(), rows.to_string());
        let args = [
            "resize-window",
            "-t",
            &self.session,
            "-x",
            &columns,
            "-y",
            &rows,
        ];
        run_ok("tmux", &args);
        wait_for("the pane to be resized", Duration::from_secs(10), || {
            let out = Command::new("tmux")
                .args(["display", "-p", "-t", &self.session, "#{pane_width}"])
                .output()
                .unwrap();
            (String::from_utf8_lossy(&out.stdout).trim() == columns).then_some(())
        });
    }

    pub fn send(&self, keys: &str) {
        run_ok("tmux", &["send-keys", "-t", &self.session, "-l", keys]);
        run_ok("tmux", &["send-keys", "-t", &self.session, "Enter"]);
    }

    pub fn wait_for_line(&self, line: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !self.capture().lines().any(|l| l.trim_end() == line) {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out after 20 s waiting for `{line}` in the pane:\n{}",
                self.capture()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.session])
            .status();
    }
}

#[test]
fn shell_has_a_sized_pty_follows_resizes_and_returns_the_exit_code() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    project.write("marker-file", "x");
    let session = format!("n10n-shell-{}", std::process::id());
    let command = format!(
        "cd '{}' && N10N_DEV_HOME='{}' N10N_DEV_CONFIG='{}' TERM=xterm-256color '{BIN}' shell; \
         echo \"EXIT=$?\"; \
         stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e -icanon | sed 's/^/MODE=/'; sleep 600",
        project.root().display(),
        project.home.path().display(),
        project.user_config().display()
    );
    let tmux = Tmux::start(session, &command);

    tmux.send("PS1='READY> '");
    tmux.wait_for_line("READY>");
    tmux.send("tput cols; pwd; ls -1; echo $TERM");
    tmux.wait_for_line("100");
    tmux.wait_for_line(&project.replica().display().to_string());
    tmux.wait_for_line("marker-file");
    tmux.wait_for_line("xterm-256color");

    tmux.resize(123, 30);
    tmux.send("tput cols");
    tmux.wait_for_line("123");

    tmux.send("exit 3");
    tmux.wait_for_line("EXIT=3");
    // Raw mode was undone on the way out: canonical input is back on.
    tmux.wait_for_line("MODE=icanon");
}

#[test]
fn native_shell_opens_in_the_project_and_returns_its_exit_code() {
    let dir = project_dir("[vm]\nbackend = \"native\"\n");
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/bin");
    let session = format!("n10n-native-shell-{}", std::process::id());
    let command = format!(
        "cd '{}' && PATH='{}':\"$PATH\" FAKE_DOCKER_UP=1 N10N_DEV_HOME='{}/.state' SHELL=/bin/sh '{BIN}' shell; \
         echo \"EXIT=$?\"; sleep 600",
        dir.path().display(),
        bin.display(),
        dir.path().display()
    );
    let tmux = Tmux::start(session, &command);
    tmux.send("PS1='NATIVE> '");
    // Typed ahead of the shell, the line shows up behind its first prompt: "# NATIVE>".
    wait_for("the prompt", Duration::from_secs(20), || {
        let screen = tmux.capture();
        screen
            .lines()
            .any(|l| l.trim_end().ends_with("NATIVE>"))
            .then_some(())
    });
    tmux.send("pwd");
    tmux.wait_for_line(&dir.path().canonicalize().unwrap().display().to_string());
    tmux.send("exit 5");
    tmux.wait_for_line("EXIT=5");
}

#[test]
fn shell_reads_a_script_from_stdin_without_a_pty_and_ends_at_its_end() {
    let sshd = Sshd::start();
    let project = Project::new(&sshd);
    let out = output_with_stdin(
        project.cmd(&["shell"]),
        b"echo \"sum=$((2 + 3)) tty=$(tty -s && echo yes || echo no)\"; pwd\nexit 6\n",
    );
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("sum=5 tty=no"), "{text}");
    let replica = project.replica().canonicalize().unwrap();
    assert!(text.contains(&replica.display().to_string()), "{text}");
}
