//! Command-line parsing (clap) and the one place where results become exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgAction, CommandFactory, Parser, Subcommand};

use crate::commands::{self, Context};
use crate::error::Error;

const GLOBAL: &str = "Global options";

/// The environment variables n10n-dev reads, for `--help` and the manual page.
pub const ENVIRONMENT: [(&str, &str); 5] = [
    (
        "N10N_DEV_BACKEND",
        "the backend (auto, lima, vagrant, native, ssh), over [vm] backend",
    ),
    (
        "N10N_DEV_HOME",
        "where n10n-dev keeps its state (default: the platform's data directory)",
    ),
    (
        "BUILD_NUMBER",
        "the tag build-image and push use when none is given",
    ),
    ("NO_COLOR", "no colour in log lines"),
    (
        "DOCKER_CONFIG",
        "the Docker config whose credentials push and check-base use",
    ),
];

/// `--help`'s closing lines: the environment.
fn environment_help() -> String {
    let lines: Vec<String> = ENVIRONMENT
        .iter()
        .map(|(name, what)| format!("  {name:<17} {what}"))
        .collect();
    format!("Environment:\n{}", lines.join("\n"))
}

/// The version and the commit the binary was built from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("N10N_COMMIT"), ")");

/// A Linux build machine for your Mac, in one command.
///
/// n10n-dev keeps a one-way replica of the project on the build machine's own disk and runs
/// commands there over one SSH connection, as if they were local.
#[derive(Debug, Parser)]
#[command(name = "n10n-dev", version = VERSION, max_term_width = 100, after_help = environment_help())]
pub struct Cli {
    /// More logging: -v for debug, -vv for trace
    #[arg(short, long, action = ArgAction::Count, global = true, help_heading = GLOBAL)]
    pub verbose: u8,

    /// Only errors on stderr; no progress or summaries
    #[arg(short, long, global = true, conflicts_with = "verbose", help_heading = GLOBAL)]
    pub quiet: bool,

    /// Run as if started in DIR
    #[arg(short = 'C', value_name = "DIR", global = true, help_heading = GLOBAL)]
    pub directory: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or resume the build VM, provision it, pin its host key and sync the project
    Up(commands::up::UpArgs),
    /// Show the backend, the VM's state, resources, SSH endpoint and host key
    Status(commands::status::StatusArgs),
    /// Run the provision scripts again (only when they changed, unless --force)
    Provision(commands::provision::ProvisionArgs),
    /// Stop the VM (its disk and the replica are kept)
    Stop,
    /// Delete the VM and n10n-dev's state for it
    Destroy(commands::destroy::DestroyArgs),
    /// Show this machine's tools, the backend n10n-dev would use, and what to install
    Doctor,
    /// Build the container image in the VM from cold: up, sync, build, describe
    BuildImage(commands::build_image::BuildImageArgs),
    /// Is the image's base still the newest, and young enough? Exit 0 current, 1 stale, 3 unknown
    CheckBase(commands::check_base::CheckBaseArgs),
    /// Run the image's function against n10n-dev's Runtime API emulator (or serve it warm)
    Invoke(commands::invoke::InvokeArgs),
    /// Push the built image with credentials from this machine; prints REPO@sha256:…
    Push(commands::push::PushArgs),
    /// Copy the project onto the build machine: a one-way replica that honours .gitignore
    Sync(commands::sync::SyncArgs),
    /// Sync, then run a command in the replica: exit code, stdin, Ctrl-C behave as if local
    Run(commands::run::RunArgs),
    /// Sync, then open an interactive login shell in the replica
    Shell(commands::shell::ShellArgs),
    /// Print an OpenSSH Host block (pinned host key) for ssh, scp and IDEs
    SshConfig,
    /// Print DOCKER_HOST and the testcontainers overrides for the VM's engine, for eval
    Env(commands::env::EnvArgs),
    /// List the ports the forwarder forwards from the VM, and those it skipped and why
    Ports,
    /// Make the VM's Docker context current, or remove it
    DockerContext(commands::docker_context::DockerContextArgs),
    /// The per-VM forwarder process (started by `up`)
    #[command(hide = true)]
    Forwarder,
    /// Write the manual pages (n10n-dev.1 and one per command) into DIR
    Man(commands::man::ManArgs),
    /// Print shell completions for bash, zsh, fish, elvish or powershell
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => explain(error).exit(),
    };
    init_tracing(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(dispatch(cli));
    // A read of stdin may still be pending on a blocking thread; do not wait for it.
    runtime.shutdown_background();
    ExitCode::from(code)
}

/// clap's error, with the next step where it is not obvious: an option `run` or `shell` does not
/// know was most likely meant for the remote command.
fn explain(mut error: clap::Error) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let mut words = std::env::args().skip(1);
    let mut subcommand = None;
    while let Some(word) = words.next() {
        match word.as_str() {
            "-C" => {
                words.next();
            }
            flag if flag.starts_with('-') => {}
            name => {
                subcommand = Some(name.to_string());
                break;
            }
        }
    }
    let is_run = subcommand.as_deref() == Some("run");
    if error.kind() == ErrorKind::UnknownArgument && is_run {
        error.insert(
            ContextKind::Suggested,
            ContextValue::StyledStrs(vec![
                "put the command after --: n10n-dev run [OPTIONS] -- CMD [ARGS...]".into(),
            ]),
        );
    }
    error
}

fn init_tracing(cli: &Cli) {
    let directive = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "n10n_dev=debug,warn",
        (false, _) => "n10n_dev=trace,russh=debug,info",
    };
    // Colour only for a person at a terminal: a log file or CI's output gets plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(directive))
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_target(false);
    // With -v, time since start: where the time goes is usually the question.
    if cli.verbose > 0 {
        subscriber
            .with_timer(tracing_subscriber::fmt::time::uptime())
            .init();
    } else {
        subscriber.without_time().init();
    }
}

impl Command {
    /// The exit code of a failure (usage and configuration errors exit 2 whatever the command).
    fn failure_code(&self) -> u8 {
        match self {
            // 1..=254 belong to the remote command, as with ssh.
            Command::Run(_) | Command::Shell(_) => 255,
            // 1 means stale: failing to find out must not look like an answer.
            Command::CheckBase(_) => 3,
            _ => 1,
        }
    }

    /// Whether standard output carries a remote command's output rather than n10n-dev's own.
    fn relays_remote_output(&self) -> bool {
        matches!(self, Command::Run(_) | Command::Shell(_))
    }
}

async fn dispatch(cli: Cli) -> u8 {
    let failure_code = cli.command.failure_code();
    let ends_quietly_on_broken_pipe = !cli.command.relays_remote_output();
    match run_command(cli).await {
        Ok(code) => code.clamp(0, 255) as u8,
        // The reader went away (`| head`): nothing more to say, as with `cat`.
        Err(error) if ends_quietly_on_broken_pipe && crate::stdout::is_broken_pipe(&error) => 0,
        Err(error) => {
            eprintln!("error: {error}");
            match error.is_usage() {
                true => 2,
                false => failure_code,
            }
        }
    }
}

async fn run_command(cli: Cli) -> Result<i32, Error> {
    let context = || Context::new(cli.directory.as_deref(), cli.quiet);
    match cli.command {
        Command::Up(args) => {
            let ctx = context()?.choosing_backend(args.backend);
            commands::up::run(&ctx, args).await.map(|()| 0)
        }
        Command::Status(args) => commands::status::run(&context()?, args).await.map(|()| 0),
        Command::Provision(args) => commands::provision::run(&context()?, args)
            .await
            .map(|()| 0),
        Command::Stop => commands::stop::run(&context()?).await.map(|()| 0),
        Command::Doctor => commands::doctor::run(&context()?).await,
        Command::BuildImage(args) => commands::build_image::run(&context()?, args)
            .await
            .map(|()| 0),
        Command::Destroy(args) => commands::destroy::run(&context()?, args).await.map(|()| 0),
        Command::CheckBase(args) => commands::check_base::run(&context()?, args).await,
        Command::Invoke(args) => commands::invoke::run(&context()?, args).await,
        Command::Push(args) => commands::push::run(&context()?, args).await.map(|()| 0),
        Command::Sync(args) => commands::sync::run(&context()?, args).await.map(|()| 0),
        Command::Run(args) => commands::run::run(&context()?, args).await,
        Command::Shell(args) => commands::shell::run(&context()?, args).await,
        Command::SshConfig => commands::ssh_config::run(&context()?).await.map(|()| 0),
        Command::Env(args) => commands::env::run(&context()?, args).await.map(|()| 0),
        Command::Ports => commands::ports::run(&context()?).await.map(|()| 0),
        Command::DockerContext(args) => commands::docker_context::run(&context()?, args)
            .await
            .map(|()| 0),
        Command::Forwarder => commands::forwarder::run(&context()?).await.map(|()| 0),
        Command::Man(args) => commands::man::run(Cli::command(), args).map(|()| 0),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "n10n-dev", &mut script);
            crate::stdout::write(script).map(|()| 0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_everything_after_the_separator() {
        let cli = Cli::try_parse_from(["n10n-dev", "run", "-e", "A=1", "--", "ls", "-la", "--x"])
            .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.env, vec!["A=1"]);
        assert_eq!(args.command, vec!["ls", "-la", "--x"]);
    }
}
