//! One error type for the whole tool; `is_usage` and `cli::Command::failure_code` make exit
//! codes of it in one place.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad command-line input. Exit code 2.
    #[error("{0}")]
    Usage(String),

    /// A malformed or inconsistent `n10n-dev.toml`, already rendered with file, line and column.
    #[error("{0}")]
    Config(String),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot connect to {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },

    #[error(
        "the host key of {endpoint} has changed\n  pinned:    {pinned}\n  presented: {presented}\n\
         nothing was run. If the machine was rebuilt on purpose, forget the old key with:\n  rm '{}'",
        pin_file.display()
    )]
    HostKeyMismatch {
        endpoint: String,
        pinned: String,
        presented: String,
        pin_file: PathBuf,
    },

    #[error("authentication to {endpoint} as `{user}` failed with key {}: is its public key in the remote ~/.ssh/authorized_keys?", identity.display())]
    AuthRejected {
        endpoint: String,
        user: String,
        identity: PathBuf,
    },

    #[error("cannot use identity {}: {reason}", path.display())]
    Identity { path: PathBuf, reason: String },

    #[error("connection to {endpoint} lost: {reason}")]
    ConnectionLost { endpoint: String, reason: String },

    #[error("{0}")]
    Remote(String),

    /// The build machine's Docker has no such image.
    #[error(
        "there is no image {0} in the build machine's Docker: build it first (`n10n-dev build-image`)"
    )]
    NotBuilt(String),

    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// A usage or configuration error: exit 2 for every command. Other failures exit with the
    /// command's own code (`cli::Command::failure_code`).
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::Usage(_) | Error::Config(_))
    }
}

/// Attach a human-readable context to I/O results.
pub trait IoContext<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::io(context(), source))
    }
}

/// The last `n` lines of a tool's output, for error messages.
pub fn last_lines(output: &[u8], n: usize) -> String {
    let text = crate::terminal_text::lines(output);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
