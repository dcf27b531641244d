//! POSIX shell quoting for command lines sent over SSH, where the remote shell parses them again.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// One argument, quoted so any POSIX shell reads it back byte for byte.
pub fn quote(arg: &[u8]) -> String {
    let safe = !arg.is_empty()
        && arg
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(b));
    let text = String::from_utf8_lossy(arg);
    if safe {
        return text.into_owned();
    }
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// A remote path: `~/x` expands to the remote home, anything else is taken literally.
pub fn quote_path(path: &str) -> String {
    match path {
        "~" => "\"$HOME\"".into(),
        _ => match path.strip_prefix("~/") {
            Some(rest) => format!("\"$HOME\"/{}", quote(rest.as_bytes())),
            None => quote(path.as_bytes()),
        },
    }
}

/// A whole argument vector as one command line.
pub fn join(args: &[impl AsRef<OsStr>]) -> String {
    args.iter()
        .map(|a| quote(a.as_ref().as_bytes()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_what_the_shell_would_read() {
        assert_eq!(quote(b"plain-word"), "plain-word");
        assert_eq!(quote(b""), "''");
        assert_eq!(quote(b"a b"), "'a b'");
        assert_eq!(quote(b"it's"), r"'it'\''s'");
        assert_eq!(quote(b"$HOME;rm"), "'$HOME;rm'");
        assert_eq!(join(&["echo", "a b", "*"]), "echo 'a b' '*'");
    }

    #[test]
    fn paths_keep_the_remote_home() {
        assert_eq!(quote_path("~/n10n/demo"), "\"$HOME\"/n10n/demo");
        assert_eq!(quote_path("/srv/my build"), "'/srv/my build'");
        assert_eq!(quote_path("~"), "\"$HOME\"");
    }
}
