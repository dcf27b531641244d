//! What commands print as their result. A write returns an error instead of panicking as
//! `println!` does when the reader has gone away (`n10n-dev status | head -1`); `cli::dispatch`
//! ends such a command quietly, as `cat` and `grep` end (ripgrep's way).

use std::io::Write;

use crate::error::{Error, Result};

/// Write `text` to standard output.
pub fn write(text: impl AsRef<[u8]>) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_ref())
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("cannot write to standard output", e))
}

/// `println!` that returns `Result<()>`.
#[macro_export]
macro_rules! outln {
    () => { $crate::stdout::write("\n") };
    ($($arg:tt)*) => { $crate::stdout::write(format!("{}\n", format_args!($($arg)*))) };
}

/// Whether `error` is a write to a reader that has gone away.
pub fn is_broken_pipe(error: &Error) -> bool {
    matches!(error, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
}
