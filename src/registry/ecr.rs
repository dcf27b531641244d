//! Amazon ECR: recognising its registries, and a token from the AWS CLI on this machine
//! (`aws ecr get-login-password`), which reuses the team's SSO or MFA set-up. The token is
//! read from the CLI's stdout into memory; it never appears in arguments or on disk.

use std::process::{Command, Stdio};

use super::Credentials;
use crate::error::{Error, Result};

/// The region in an ECR registry host name: `<12 digits>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]`.
pub fn region_of(host: &str) -> Option<String> {
    let parts: Vec<&str> = host.split('.').collect();
    let is_ecr = parts.len() >= 6
        && parts[0].len() == 12
        && parts[0].bytes().all(|b| b.is_ascii_digit())
        && parts[1] == "dkr"
        && (parts[2] == "ecr" || parts[2] == "ecr-fips")
        && parts[4] == "amazonaws"
        && parts[5] == "com";
    is_ecr.then(|| parts[3].to_string())
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
    }
}
