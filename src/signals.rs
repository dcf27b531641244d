//! The signals that stop what n10n-dev is doing, set up in one place: Ctrl-C (SIGINT), SIGTERM
//! and SIGHUP, received as their numbers so that a caller can pass them on.

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::error::{Error, Result};

fn install(kind: SignalKind) -> Result<Signal> {
    signal(kind).map_err(|e| Error::io("cannot install a signal handler", e))
}

/// The stop signals, caught from the moment this is made until it is dropped.
pub struct Stop {
    interrupt: Option<Signal>,
    terminate: Signal,
    hangup: Signal,
}

impl Stop {
    /// Ctrl-C, SIGTERM and SIGHUP.
    pub fn install() -> Result<Stop> {
        Ok(Stop {
            interrupt: Some(install(SignalKind::interrupt())?),
            terminate: install(SignalKind::terminate())?,
            hangup: install(SignalKind::hangup())?,
        })
    }

    /// SIGTERM and SIGHUP only: under a PTY, Ctrl-C is a byte for the remote side.
    pub fn without_interrupt() -> Result<Stop> {
        Ok(Stop {
            interrupt: None,
            terminate: install(SignalKind::terminate())?,
            hangup: install(SignalKind::hangup())?,
        })
    }

    /// The next stop signal's number.
    pub async fn recv(&mut self) -> i32 {
        let interrupt = async {
            match &mut self.interrupt {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = interrupt => libc::SIGINT,
            _ = self.terminate.recv() => libc::SIGTERM,
            _ = self.hangup.recv() => libc::SIGHUP,
        }
    }
}

/// The terminal's size changed (SIGWINCH).
pub fn window_change() -> Result<Signal> {
    install(SignalKind::window_change())
}
