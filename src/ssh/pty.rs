//! Interactive shells: a PTY sized to the local terminal, local raw mode restored on every exit
//! path (the guard's Drop), window resizes forwarded, TERM passed, the shell's exit code returned.

use std::io::Write;
use std::sync::Arc;

use russh::ChannelMsg;

use super::Session;
use super::exec::{ExitCode, RemoteCommand, forward_stdin, raw_fd, signal_number};
use crate::error::{Error, Result};

/// The local terminal in raw mode for as long as this value lives.
struct RawMode {
    saved: libc::termios,
}

impl RawMode {
    /// Put stdin's terminal in raw mode; `None` when stdin is not a terminal.
    fn enter() -> Option<RawMode> {
        // SAFETY: tcgetattr/tcsetattr only read and write the termios struct we pass.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::isatty(0) != 1 || libc::tcgetattr(0, &mut saved) != 0 {
                return None;
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(0, libc::TCSADRAIN, &raw) != 0 {
                return None;
            }
            Some(RawMode { saved })
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the attributes read in `enter`.
        unsafe {
            libc::tcsetattr(0, libc::TCSADRAIN, &self.saved);
        }
    }
}

/// Columns and rows of the local terminal (stdin, else stdout), or 80×24.
fn window_size() -> (u32, u32) {
    for fd in [0, 1] {
        // SAFETY: TIOCGWINSZ writes a winsize struct we own.
        unsafe {
            let mut size: libc::winsize = std::mem::zeroed();
            if libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) == 0 && size.ws_col > 0 {
                return (size.ws_col as u32, size.ws_row as u32);
            }
        }
    }
    (80, 24)
}

impl Session {
    /// An interactive login shell in `command.dir` (or `command.command_line` under a PTY).
    pub async fn shell(&self, command: &RemoteCommand) -> Result<ExitCode> {
        let mut resized = crate::signals::window_change()?;
        let mut stop = crate::signals::Stop::without_interrupt()?;

        let channel = self.open_channel().await?;
        let term = std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into());
        let (cols, rows) = window_size();
        let lost = |e: russh::Error| self.lost(super::describe(&e));
        channel
            .request_pty(true, &term, cols, rows, 0, 0, &[])
            .await
            .map_err(lost)?;
        let env_file = self.stage_env(&command.env).await?;
        channel
            .exec(true, command.script(env_file.as_deref()))
            .await
            .map_err(lost)?;

        let _raw = RawMode::enter();
        let (mut reader, writer) = channel.split();
        let writer = Arc::new(writer);
        let stdin_task = tokio::spawn(forward_stdin(writer.clone()));
        let mut stdout = raw_fd(1);
        let mut status = None;
        let mut pid_seen = false;
        let result = loop {
            tokio::select! {
                msg = reader.wait() => match msg {
                    Some(ChannelMsg::Data { data }) => {
                        // Under a PTY stderr is merged into stdout, so the PID line arrives here.
                        let data = if pid_seen { &data[..] } else {
                            pid_seen = true;
                            strip_pid_line(&data)
                        };
                        if let Err(e) = stdout.write_all(data) {
                            break Err(Error::io("cannot write to the terminal", e));
                        }
                    }
                    Some(ChannelMsg::ExitStatus { exit_status }) => status = Some(exit_status as i32),
                    Some(ChannelMsg::ExitSignal { signal_name, .. }) => status = Some(128 + signal_number(&signal_name)),
                    Some(_) => {}
                    None => break status.ok_or_else(|| self.lost("the shell ended without an exit status".into())),
                },
                _ = resized.recv() => {
                    let (cols, rows) = window_size();
                    let _ = writer.window_change(cols, rows, 0, 0).await;
                }
                // Closing the channel hangs up the remote PTY, which ends the shell and its jobs.
                sig = stop.recv() => { let _ = writer.close().await; break Ok(128 + sig) }
            }
        };
        stdin_task.abort();
        result
    }
}

fn strip_pid_line(data: &[u8]) -> &[u8] {
    match data.iter().position(|&b| b == b'\n') {
        Some(end) if data.starts_with(b"n10n-pid:") => &data[end + 1..],
        _ => data,
    }
}
