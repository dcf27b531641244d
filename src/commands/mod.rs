//! One file per subcommand; orchestration only.

pub mod build_image;
pub mod check_base;
pub mod destroy;
pub mod docker_context;
pub mod doctor;
pub mod env;
pub mod forwarder;
pub mod invoke;
pub mod man;
pub mod ports;
pub mod provision;
pub mod push;
pub mod run;
pub mod shell;
pub mod ssh_config;
pub mod status;
pub mod stop;
pub mod sync;
pub mod up;

pub use crate::machine::Context;

/// `-e KEY=VAL` sets a value; `-e KEY` passes the local one.
pub fn parse_env(
    specs: &[String],
    local: impl Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, crate::error::Error> {
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
                return Err(crate::error::Error::Usage(format!(
                    "-e {spec}: `{key}` is not a valid environment variable name (letters, digits, _)"
                )));
            }
            let value = value.or_else(|| local(key)).ok_or_else(|| {
                crate::error::Error::Usage(format!("-e {key}: {key} is not set here; write -e {key}=VALUE"))
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
