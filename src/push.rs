//! Pushing an image from the build machine's engine with credentials resolved here: they reach
//! the engine only in the `X-Registry-Auth` header of the Engine API's push (nothing on the
//! machine's disk, in process arguments or in logs), and the result is read back from the
//! registry to make sure Lambda can run it.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
use serde_json::Value;

use crate::config::PushAuth;
use crate::engine::{Engine, Pushed};
use crate::error::{Error, Result};
use crate::image::ImageFacts;
use crate::progress::LayerBars;
use crate::registry::{Client, Credentials, Manifest, Reference, credentials, ecr};

/// Tries of a push the registry failed with 429 or 5xx (the engine retries each layer itself).
const ATTEMPTS: u32 = 3;

/// Where the image goes and how to get in.
pub struct Target {
    /// `host/repository`, without tag.
    pub repository: Reference,
    pub credentials: Option<Credentials>,
    /// The ECR region when the registry is ECR (for the advice in errors).
    pub ecr_region: Option<String>,
}

impl Target {
    /// Resolve the credentials for `repository` on this machine, as `[push] auth` says. An ECR
    /// token goes only to a host named like ECR, or to one the user vouched for (`vouched`: on
    /// the command line, or in the user's own config): a project's config alone cannot send it
    /// elsewhere.
    pub fn resolve(
        repository: Reference,
        auth: PushAuth,
        region: &str,
        vouched: bool,
    ) -> Result<Target> {
        let host = repository.registry.clone();
        let ecr_region = match (auth, ecr::region_of(&host)) {
            (PushAuth::Docker, _) => None,
            (_, Some(found)) => Some(found),
            (PushAuth::Ecr, None) if !vouched => {
                return Err(Error::Config(format!(
                    "[push] auth = \"ecr\", but {host} is not an ECR registry's name \
                     (<12 digits>.dkr.ecr.<region>.amazonaws.com): no ECR token goes to it.\n\
                     If it is ECR under another name (a VPC endpoint), say so with \
                     `n10n-dev push --send-ecr-token`, or list it in [push] ecr_hosts of your \
                     own config file"
                )));
            }
            (_, None) if vouched => Some(non_empty(region).ok_or_else(|| {
                Error::Config(format!(
                    "{host} is to get an ECR token, but its name does not say its region: set \
                     [push] region"
                ))
            })?),
            (_, None) => None,
        };
        let from_docker = match auth {
            PushAuth::Ecr => None,
            _ => credentials::resolve(&host)?,
        };
        let credentials = match (from_docker, &ecr_region) {
            (Some(found), _) => Some(found),
            (None, Some(region)) => Some(ecr::login(region)?),
            (None, None) => None,
        };
        Ok(Target {
            repository,
            credentials,
            ecr_region,
        })
    }

    /// The `X-Registry-Auth` value: the credentials as JSON, base64url (the engine silently
    /// ignores a header it cannot decode, standard base64 with `+` or `/` included).
    pub fn registry_auth(&self) -> String {
        let json = match &self.credentials {
            Some(c) => serde_json::json!({
                "username": c.username,
                "password": c.password,
                "serveraddress": self.repository.registry,
            }),
            None => serde_json::json!({ "serveraddress": self.repository.registry }),
        };
        URL_SAFE.encode(json.to_string())
    }

    /// Push `tag` (already tagged in the engine), retrying what the registry may recover from.
    pub async fn push_tag(
        &self,
        engine: &mut Engine,
        tag: &str,
        platform: Option<&str>,
        quiet: bool,
    ) -> Result<Pushed> {
        let name = self.repository.repository_name();
        let auth = self.registry_auth();
        let mut attempt = 1;
        loop {
            let mut bars = LayerBars::new(quiet);
            let outcome = engine
                .push(&name, tag, &auth, platform, |message| {
                    show(&mut bars, message)
                })
                .await;
            bars.finish();
            let failure = match outcome? {
                Ok(pushed) => return Ok(pushed),
                Err(failure) => failure,
            };
            if is_retryable(&failure) && attempt < ATTEMPTS {
                let wait = Duration::from_secs(2 << attempt);
                eprintln!(
                    "push: {} answered {failure:?}; trying again in {} s",
                    self.repository.registry,
                    wait.as_secs()
                );
                tokio::time::sleep(wait).await;
                attempt += 1;
                continue;
            }
            return Err(self.explain(&failure, tag));
        }
    }

    /// Read `tag` back from the registry: it must be the single-platform image just pushed.
    pub async fn verify(&self, tag: &str, digest: &str) -> Result<Manifest> {
        let client = Client::new(self.repository.api_host(), self.credentials.clone())?;
        let manifest = client.manifest(&self.repository.repository, tag).await?;
        if manifest.is_index() {
            return Err(Error::Other(format!(
                "{}:{tag} is an image index ({}), which Lambda refuses: rebuild one platform \
                 without attestations (`--platform linux/amd64 --provenance=false --sbom=false`; \
                 build-image does this for a Dockerfile) and push again",
                self.repository.repository_name(),
                manifest.media_type
            )));
        }
        if manifest.digest != digest {
            return Err(Error::Other(format!(
                "{}:{tag} is {} in the registry, not the {digest} the engine pushed: did \
                 another push race this one?",
                self.repository.repository_name(),
                manifest.digest
            )));
        }
        Ok(manifest)
    }

    /// The engine's error, with the next step to take.
    fn explain(&self, failure: &str, tag: &str) -> Error {
        let registry = &self.repository.registry;
        let repository = self.repository.repository_name();
        let text = failure.to_ascii_lowercase();
        let has = |needles: &[&str]| needles.iter().any(|n| text.contains(n));
        let next = if has(&[
            "unauthorized",
            "authentication required",
            "no basic auth",
            "denied",
            "forbidden",
        ]) {
            match (&self.ecr_region, &self.credentials) {
                (Some(region), _) => format!(
                    "ECR tokens last 12 hours and work only for their own account and region \
                     ({region}): refresh your AWS session (`aws sso login`) and push again"
                ),
                (None, None) => format!(
                    "no credentials for {registry} are set up on this machine: `docker login \
                     {registry}`, or a credential helper in the Docker config"
                ),
                (None, Some(_)) => format!(
                    "check the credentials for {registry} on this machine (`docker login \
                     {registry}`) and that they may push to {repository}"
                ),
            }
        } else if has(&[
            "name unknown",
            "name_unknown",
            "does not exist",
            "repository not found",
        ]) {
            match &self.ecr_region {
                Some(region) => format!(
                    "ECR repositories must exist before a push: {}",
                    ecr::create_repository_line(&self.repository.repository, region)
                ),
                None => format!("create the repository {repository} on {registry} first"),
            }
        } else if has(&["tag invalid", "immutable", "cannot be overwritten"]) {
            format!(
                "the tag {tag} is taken and the repository's tags are immutable: push another \
                 tag (--tag, or $BUILD_NUMBER)"
            )
        } else if has(&[
            "dial tcp",
            "connection refused",
            "no such host",
            "i/o timeout",
            "lookup ",
        ]) {
            format!(
                "the build machine cannot reach {registry} (the engine there pushes): check \
                 the name and the machine's network"
            )
        } else {
            "run push again: layers already sent are not sent twice".to_string()
        };
        Error::Other(format!(
            "pushing {repository}:{tag} failed: {failure}\nnext: {next}"
        ))
    }
}

/// The platform parameter of the push (API ≥ 1.46), `{"os":"linux","architecture":"amd64"}`.
pub fn platform_parameter(api: (u32, u32), image: &ImageFacts) -> Option<String> {
    (api >= (1, 46)).then(|| {
        let mut platform = serde_json::json!({
            "os": or_default(&image.os, "linux"),
            "architecture": or_default(&image.architecture, "amd64"),
        });
        if let Some(variant) = &image.variant {
            platform["variant"] = variant.as_str().into();
        }
        platform.to_string()
    })
}

fn or_default<'a>(text: &'a str, default: &'a str) -> &'a str {
    if text.is_empty() { default } else { text }
}

/// Bytes in the registry: config and layers, as the manifest lists them.
pub fn stored_size(manifest: &Manifest) -> u64 {
    let layers = manifest.body["layers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    manifest.body["config"]["size"].as_u64().unwrap_or(0)
        + layers
            .iter()
            .filter_map(|l| l["size"].as_u64())
            .sum::<u64>()
}

/// One line for a log: what a push of one tag did.
pub fn summary(reference: &str, pushed: &Pushed, took: Instant) -> String {
    format!(
        "push: {reference}: {} layer(s) sent, {} already there, {:.1} s",
        pushed.sent,
        pushed.present,
        took.elapsed().as_secs_f64()
    )
}

fn show(bars: &mut LayerBars, message: &Value) {
    let (Some(id), Some(status)) = (message["id"].as_str(), message["status"].as_str()) else {
        return;
    };
    let detail = &message["progressDetail"];
    bars.update(
        id,
        status,
        detail["current"].as_u64(),
        detail["total"].as_u64(),
    );
}

/// Failures a later try may not meet: rate limits and the registry's own errors.
fn is_retryable(failure: &str) -> bool {
    let text = failure.to_ascii_lowercase();
    [
        "toomanyrequests",
        "too many requests",
        "429",
        "500 internal",
        "502",
        "503",
        "504",
        "bad gateway",
        "service unavailable",
    ]
    .iter()
    .any(|n| text.contains(n))
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(registry: &str, ecr_region: Option<&str>) -> Target {
        Target {
            repository: Reference::parse(&format!("{registry}/team/worker")).unwrap(),
            credentials: Some(Credentials {
                username: "u".into(),
                password: "p+/?>~".into(),
            }),
            ecr_region: ecr_region.map(str::to_string),
        }
    }

    #[test]
    fn the_auth_header_is_base64url_json() {
        let header = target("127.0.0.1:5000", None).registry_auth();
        assert!(!header.contains('+') && !header.contains('/'));
        let json: Value = serde_json::from_slice(&URL_SAFE.decode(&header).unwrap()).unwrap();
        assert_eq!(json["password"], "p+/?>~");
        assert_eq!(json["serveraddress"], "127.0.0.1:5000");
    }

    #[test]
    fn errors_say_what_to_do_next() {
        let ecr = target(
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            Some("eu-west-1"),
        );
        let e = ecr.explain(
            "name unknown: The repository with name 'team/worker' does not exist",
            "7",
        );
        assert!(
            e.to_string().contains(
                "aws ecr create-repository --repository-name team/worker --region eu-west-1"
            ),
            "{e}"
        );
        let e = ecr.explain(
            "denied: Your authorization token has expired. Reauthenticate and try again.",
            "7",
        );
        assert!(e.to_string().contains("aws sso login"), "{e}");
        let plain = target("127.0.0.1:5000", None);
        let e = plain.explain("tag invalid: The image tag '7' already exists and cannot be overwritten because the repository is immutable.", "7");
        assert!(e.to_string().contains("immutable: push another tag"), "{e}");
        let e = plain.explain("Get \"http://127.0.0.1:5000/v2/\": dial tcp 127.0.0.1:5000: connect: connection refused", "7");
        assert!(e.to_string().contains("cannot reach 127.0.0.1:5000"), "{e}");
        assert!(is_retryable("toomanyrequests: Rate exceeded") && !is_retryable("unauthorized"));
    }

    #[test]
    fn the_platform_is_passed_only_where_the_api_takes_it() {
        let image = crate::image::parse_inspect(
            &serde_json::json!({"Os": "linux", "Architecture": "arm64", "Variant": "v8"}),
        );
        assert_eq!(platform_parameter((1, 41), &image), None);
        assert_eq!(
            platform_parameter((1, 46), &image).as_deref(),
            Some(r#"{"architecture":"arm64","os":"linux","variant":"v8"}"#)
        );
    }
}
