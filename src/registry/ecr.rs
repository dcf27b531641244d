//! Amazon ECR: recognising its registries, and a token from the AWS CLI on this machine
//! (`aws ecr get-login-password`), which reuses the team's SSO or MFA set-up. The token is
//! read from the CLI's stdout into memory; it never appears in arguments or on disk.

use std::process::{Command, Stdio};

use super::Credentials;
use crate::error::{Error, Result};

/// The region in an ECR registry host name, `<12 digits>.dkr.ecr[-fips].<region>.amazonaws.com`
/// or `….amazonaws.com.cn`, matched whole: a host that merely starts like one
/// (`….amazonaws.com.evil.example`) is not ECR, and never gets an ECR token.
pub fn region_of(host: &str) -> Option<String> {
    let host = host.to_ascii_lowercase();
    let rest = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    let (account, rest) = rest.split_once('.')?;
    let rest = rest.strip_prefix("dkr.")?;
    let region = rest
        .strip_prefix("ecr.")
        .or_else(|| rest.strip_prefix("ecr-fips."))?;
    let is_account = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
    let is_region = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    (is_account && is_region).then(|| region.to_string())
}

/// The command that creates the ECR repository `repository` (its name, without the host).
pub fn create_repository_line(repository: &str, region: &str) -> String {
    format!("aws ecr create-repository --repository-name {repository} --region {region}")
}

/// `AWS` and a 12-hour token for the registries of `region`.
pub fn login(region: &str) -> Result<Credentials> {
    let out = Command::new("aws")
        .args(["ecr", "get-login-password", "--region", region])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            Error::Other(format!(
                "cannot run the AWS CLI (`aws ecr get-login-password --region {region}`): {e}\n\
                 install it, or set up a Docker credential helper for the registry \
                 (amazon-ecr-credential-helper) and set [push] auth = \"docker\""
            ))
        })?;
    let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !out.status.success() {
        return Err(Error::Other(format!(
            "`aws ecr get-login-password --region {region}` failed: {said}\n\
             next: refresh your AWS session (`aws sso login`, or your usual credentials) and push again"
        )));
    }
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if token.is_empty() {
        return Err(Error::Other(format!(
            "`aws ecr get-login-password --region {region}` printed no token"
        )));
    }
    Ok(Credentials {
        username: "AWS".into(),
        password: token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecr_hosts_say_their_region() {
        assert_eq!(
            region_of("123456789012.dkr.ecr.eu-west-1.amazonaws.com").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            region_of("123456789012.dkr.ecr-fips.us-east-1.amazonaws.com").as_deref(),
            Some("us-east-1")
        );
        assert_eq!(region_of("public.ecr.aws"), None);
        assert_eq!(region_of("127.0.0.1:5000"), None);
        assert_eq!(region_of("12345.dkr.ecr.eu-west-1.amazonaws.com"), None);
        assert_eq!(
            region_of("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn").as_deref(),
            Some("cn-north-1")
        );
    }

    #[test]
    fn a_host_that_only_starts_or_ends_like_ecr_is_not_ecr() {
        for host in [
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com.evil.example",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com.cn.evil.example",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com:443",
            "evil.example.123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            "123456789012.dkr.ecr.eu-west-1.evil.amazonaws.com",
            "123456789012.dkr.ecr..amazonaws.com",
            "123456789012.dkr.ecr.amazonaws.com",
            "123456789012.dkr.s3.eu-west-1.amazonaws.com",
            "12345678901a.dkr.ecr.eu-west-1.amazonaws.com",
        ] {
            assert_eq!(region_of(host), None, "{host}");
        }
    }
}
