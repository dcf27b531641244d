//! `man DIR`: the manual pages, `n10n-dev.1` and `n10n-dev-<command>.1`, from the same clap
//! definitions as `--help`, with the ENVIRONMENT, EXIT STATUS and FILES sections the README
//! documents.

use std::path::{Path, PathBuf};

use clap::Args;
use clap_mangen::Man;

use crate::error::{Error, Result};

#[derive(Debug, Args)]
pub struct ManArgs {
    /// The directory to write the pages into (it must exist)
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

pub fn run(cli: clap::Command, args: ManArgs) -> Result<()> {
    if !args.dir.is_dir() {
        return Err(Error::Usage(format!(
            "man {}: no such directory (make it first, e.g. `mkdir -p {}`)",
            args.dir.display(),
            args.dir.display()
        )));
    }
    let mut cli = cli.disable_help_subcommand(true);
    cli.build();
    // Built, each command knows its page's name (display name n10n-dev-<command>) and its
    // synopsis (bin name `n10n-dev <command>`).
    let mut written = vec![write_page(&args.dir, &cli, true)?];
    for command in cli.get_subcommands().filter(|c| !c.is_hide_set()) {
        written.push(write_page(&args.dir, command, false)?);
    }
    eprintln!(
        "man: wrote {} pages into {}",
        written.len(),
        args.dir.display()
    );
    Ok(())
}

/// One page: `n10n-dev.1` (the main page), or `n10n-dev-<command>.1`.
fn write_page(dir: &Path, command: &clap::Command, main_page: bool) -> Result<PathBuf> {
    let name = command.get_display_name().unwrap_or(command.get_name());
    let page = render(command, name, main_page)
        .map_err(|e| Error::io(format!("cannot render the page of {name}"), e))?;
    let path = dir.join(format!("{name}.1"));
    crate::state::write_atomically_with_mode(&path, &page, 0o644)?;
    Ok(path)
}

fn render(command: &clap::Command, name: &str, main_page: bool) -> std::io::Result<Vec<u8>> {
    let man = Man::new(command.clone())
        .title(name.to_uppercase())
        .source(format!("n10n-dev {}", env!("CARGO_PKG_VERSION")))
        .manual("n10n-dev manual");
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    if command.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut page)?;
    }
    if main_page {
        man.render_subcommands_section(&mut page)?;
    }
    page.extend(section("ENVIRONMENT", &environment()).as_bytes());
    page.extend(section("EXIT STATUS", &exit_status(command.get_name(), main_page)).as_bytes());
    if main_page {
        page.extend(section("FILES", FILES).as_bytes());
    }
    page.extend(section("VERSION", crate::cli::VERSION).as_bytes());
    Ok(ascii(&String::from_utf8_lossy(&page)).into_bytes())
}

/// troff reads its input as Latin-1: every other character as its `\[uXXXX]` escape.
fn ascii(text: &str) -> String {
    text.chars()
        .map(|c| match c.is_ascii() {
            true => c.to_string(),
            false => format!("\\[u{:04X}]", c as u32),
        })
        .collect()
}

/// A section of roff: `body`'s paragraphs (blank-line separated), with `term: text` lines as
/// tagged paragraphs.
fn section(title: &str, body: &str) -> String {
    let mut roff = format!(".SH \"{title}\"\n");
    for paragraph in body.split("\n\n") {
        match paragraph.split_once(" :: ") {
            Some((term, text)) => roff.push_str(&format!(
                ".TP\n\\fB{}\\fR\n{}\n",
                escape(term),
                escape(text)
            )),
            None => roff.push_str(&format!(".PP\n{}\n", escape(paragraph))),
        }
    }
    roff
}

/// Text as roff reads it: backslashes and hyphens escaped, no line starting with a control
/// character.
fn escape(text: &str) -> String {
    text.replace('\\', "\\e")
        .replace('-', "\\-")
        .lines()
        .map(|line| match line.starts_with(['.', '\'']) {
            true => format!("\\&{line}"),
            false => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn environment() -> String {
    crate::cli::ENVIRONMENT
        .iter()
        .map(|(name, what)| format!("{name} :: {what}"))
        .collect::<Vec<_>>()
        .join("\n\n")
}

fn exit_status(command: &str, main_page: bool) -> String {
    const GENERAL: &str = "0 :: success\n\n1 :: failure\n\n2 :: a usage or configuration error";
    if main_page {
        return format!(
            "Every command but run, shell, check-base and invoke:\n\n{GENERAL}\n\n\
             run and shell return the remote command's own code, 128+N when it died of signal \
             N, and 255 when n10n-dev itself failed, as ssh does. check-base and invoke have \
             codes of their own: see their pages."
        );
    }
    let own = match command {
        "run" | "shell" => {
            "N :: the remote command's own exit code\n\n128+N :: the remote command died of \
             signal N\n\n2 :: a usage or configuration error\n\n255 :: n10n-dev itself failed \
             (connection refused or lost, host key mismatch, ...), as with ssh"
        }
        "check-base" => {
            "0 :: the base is the newest and younger than the maximum age (with --update: a pin \
             moved)\n\n1 :: stale: a newer base is published, or it is too old (with --update: \
             nothing could be updated)\n\n2 :: a usage or configuration error\n\n3 :: could not \
             find out (registry unreachable, no label)"
        }
        "invoke" => {
            "0 :: the function answered\n\n1 :: a function error, a timeout, an init error or a \
             crash\n\n2 :: a usage or configuration error\n\n130 :: interrupted (Ctrl-C)"
        }
        _ => GENERAL,
    };
    own.to_string()
}

const FILES: &str = "n10n-dev.toml :: the project's configuration, in the project root: the \
    nearest directory upwards that holds it, else the git work tree's root, else the current \
    directory\n\n\
    ~/.local/share/n10n-dev :: n10n-dev's state on Linux (on macOS: ~/Library/Application \
    Support/dev.n10n.n10n-dev; $N10N_DEV_HOME when set): keys, pinned host keys, sync records, \
    locks, and per VM in vms/NAME/ the forwarder's docker.sock (the VM's Docker engine) and \
    ssh.sock (its kept connection)";
