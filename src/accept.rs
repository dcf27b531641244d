//! What every accept loop does when `accept` fails: out of file descriptors (macOS gives a
//! process 256 by default) or memory, retrying at once would spin at 100 % CPU without ever
//! letting a connection close. A short pause lets the others finish.

use std::time::Duration;

const PAUSE: Duration = Duration::from_millis(100);

/// Log the failure and pause before the next `accept`.
pub async fn pause_after(what: &str, error: &std::io::Error) {
    tracing::debug!("{what}: accept failed ({error}); pausing {PAUSE:?}");
    tokio::time::sleep(PAUSE).await;
}
