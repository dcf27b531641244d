//! `run [--no-sync] [-e KEY[=VAL]]... [-w DIR] -- CMD [ARGS...]`

use super::Context;
use crate::cli::RunArgs;
use crate::error::{Error, Result};
use crate::local;
use crate::ssh::{ExitCode, RemoteCommand, quote};

pub async fn run(ctx: &Context, args: RunArgs) -> Result<ExitCode> {
    let env = parse_env(&args.env, |key| std::env::var(key).ok())?;
    let backend = ctx.backend(None)?;
    if backend.runs_locally() {
        let dir = match &args.workdir {
            Some(dir) => ctx.project.root.join(dir),
            None => ctx.project.root.clone(),
        };
        return local::run(&dir, &env, &args.command).await;
    }
    let session = ctx.connect_synced(backend.as_ref(), !args.no_sync).await?;
    let dest = &ctx.project.config.sync.dest;
    let dir = match args.workdir {
        Some(dir) if dir.starts_with('/') || dir.starts_with('~') => dir,
        Some(dir) => format!("{}/{dir}", dest.trim_end_matches('/')),
        None => dest.clone(),
    };
    session
        .run(&RemoteCommand {
            dir,
            env,
            command_line: quote::join(&args.command),
        })
        .await
}

/// `-e KEY=VAL` sets a value; `-e KEY` passes the local one.
fn parse_env(
    specs: &[String],
    local: impl Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>> {
    specs
        .iter()
        .map(|spec| {
            let (key, value) = match spec.split_once('=') {
                Some((key, value)) => (key, Some(value.to_string())),
                None => (spec.as_str(), None),
            };
            let valid = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(Error::Usage(format!(
                    "-e {spec}: `{key}` is not a valid environment variable name (letters, digits, _)"
                )));
            }
            let value = value.or_else(|| local(key)).ok_or_else(|| {
                Error::Usage(format!("-e {key}: {key} is not set here; write -e {key}=VALUE"))
            })?;
            Ok((key.to_string(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_specs() {
        let local = |key: &str| (key == "HOME").then(|| "/home/me".to_string());
        let parsed = parse_env(&["A=1=2".into(), "HOME".into(), "E=".into()], local).unwrap();
        assert_eq!(
            parsed,
            vec![
                ("A".into(), "1=2".into()),
                ("HOME".into(), "/home/me".into()),
                ("E".into(), "".into())
            ]
        );
        assert!(
            parse_env(&["UNSET_HERE".into()], local)
                .unwrap_err()
                .is_usage()
        );
        assert!(parse_env(&["1A=x".into()], local).unwrap_err().is_usage());
        assert!(parse_env(&["=x".into()], local).unwrap_err().is_usage());
    }
}
