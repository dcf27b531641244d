//! Image references as Docker reads them: `[host[:port]/]repository[:tag][@sha256:digest]`.

use std::fmt;

use crate::error::{Error, Result};

/// Docker Hub's names: what users write, and where its registry API really is.
const HUB: &str = "docker.io";
const HUB_API: &str = "registry-1.docker.io";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`, as written (Docker Hub as `docker.io`).
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<64 hex>`.
    pub digest: Option<String>,
}

impl Reference {
    pub fn parse(text: &str) -> Result<Reference> {
        let bad = |why: &str| Error::Usage(format!("`{text}` is not an image reference: {why}"));
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => {
                if !is_sha256_digest(digest) {
                    return Err(bad("the part after @ must be sha256:<64 hex digits>"));
                }
                (rest, Some(digest.to_string()))
            }
            None => (text, None),
        };
        // A tag is after the last colon, unless that colon belongs to host:port.
        let (name, tag) = match rest.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => (name, Some(tag.to_string())),
            _ => (rest, None),
        };
        if tag.as_deref().is_some_and(|t| !is_valid_tag(t)) {
            return Err(bad(
                "a tag is 1–128 of [A-Za-z0-9_.-], not starting with . or -",
            ));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest)) if names_a_host(first) => (first.to_string(), rest.to_string()),
            Some(_) => (HUB.to_string(), name.to_string()),
            None => (HUB.to_string(), format!("library/{name}")),
        };
        if repository.is_empty() || !repository.split('/').all(is_valid_path_component) {
            return Err(bad(
                "the repository must be lowercase letters, digits and separators (. _ - /)",
            ));
        }
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// True when `text` names its registry (`host.tld/…`, `host:port/…`, `localhost/…`): such
    /// a reference is read from that registry rather than from a Docker engine.
    pub fn names_registry(text: &str) -> bool {
        text.split_once('/')
            .is_some_and(|(first, _)| names_a_host(first))
    }

    /// The repository without tag or digest, as users write it (`public.ecr.aws/lambda/java`).
    pub fn repository_name(&self) -> String {
        match self.registry.as_str() {
            HUB => self
                .repository
                .strip_prefix("library/")
                .unwrap_or(&self.repository)
                .to_string(),
            host => format!("{host}/{}", self.repository),
        }
    }

    /// What to ask the registry for: the digest when there is one, else the tag, else `latest`.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The same repository at another tag, without a digest.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }

    /// The host its registry API answers on.
    pub fn api_host(&self) -> &str {
        match self.registry.as_str() {
            HUB => HUB_API,
            host => host,
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repository_name())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

fn names_a_host(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

pub fn is_sha256_digest(text: &str) -> bool {
    text.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// 1–128 of `[A-Za-z0-9_.-]`, not starting with `.` or `-`.
pub fn is_valid_tag(tag: &str) -> bool {
    (1..=128).contains(&tag.len())
        && !tag.starts_with(['.', '-'])
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn is_valid_path_component(part: &str) -> bool {
    !part.is_empty()
        && part
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && part.starts_with(|c: char| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_are_read_as_docker_reads_them() {
        let r = Reference::parse(&format!("public.ecr.aws/lambda/java:21@{DIGEST}")).unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("public.ecr.aws", "lambda/java", Some("21"))
        );
        assert_eq!(r.manifest_reference(), DIGEST);
        assert_eq!(
            r.to_string(),
            format!("public.ecr.aws/lambda/java:21@{DIGEST}")
        );

        let local = Reference::parse("127.0.0.1:5000/base").unwrap();
        assert_eq!(
            (
                local.registry.as_str(),
                local.repository.as_str(),
                local.tag.as_deref()
            ),
            ("127.0.0.1:5000", "base", None)
        );
        assert_eq!(local.manifest_reference(), "latest");

        let hub = Reference::parse("busybox:1.36").unwrap();
        assert_eq!(
            (hub.api_host(), hub.repository.as_str()),
            ("registry-1.docker.io", "library/busybox")
        );
        assert_eq!(hub.to_string(), "busybox:1.36");
        assert!(
            Reference::names_registry("localhost/x") && !Reference::names_registry("worker:dev")
        );
    }

    #[test]
    fn bad_references_are_usage_errors_that_say_why() {
        for (text, why) in [
            ("java@sha256:123", "64 hex"),
            ("Java:21", "lowercase"),
            ("java:-x", "a tag is"),
            ("host.io/", "repository"),
        ] {
            let e = Reference::parse(text).unwrap_err();
            assert!(e.is_usage() && e.to_string().contains(why), "{text}: {e}");
        }
    }
}
