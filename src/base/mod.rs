//! Base-image staleness: where the image's base (recorded in a label as `<repo>@sha256:…`)
//! stands against what its tracked tag points to now, with dates from the image configs and
//! from the dated tags AWS publishes (`21.2024.11.22.15`); and the project's pins rewritten to
//! the newest digest (`pins`).

pub mod pins;

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::registry::{Client, Reference};
use crate::time;

/// How many dated tags are asked for their digest, newest first, before giving up on naming one.
const DATED_TAGS_ASKED: usize = 60;
const PARALLEL_HEADS: usize = 8;

/// One image as far as the registry tells: its digest, when it was built, its dated tag.
#[derive(Debug, Serialize)]
pub struct Point {
    pub reference: String,
    pub digest: String,
    /// RFC 3339, from the config blob (optional in the OCI spec).
    pub created: Option<String>,
    pub age_days: Option<i64>,
    pub dated_tag: Option<String>,
    /// Why `created` is missing, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Assessment {
    pub image: String,
    pub label: String,
    pub tracking: String,
    pub base: Point,
    pub current: Point,
    pub newer_published: bool,
    pub max_age_days: u32,
    pub too_old: bool,
    pub stale: bool,
}

/// The base recorded in a label: `<repo>@sha256:<digest>`, a tag allowed between.
pub fn base_from_label(value: &str, label: &str, image: &str) -> Result<Reference> {
    let reference = Reference::parse(value.trim()).map_err(|_| {
        Error::Other(format!(
            "the label {label} of {image} is {value:?}, not <repository>@sha256:<digest>"
        ))
    })?;
    match reference.digest {
        Some(_) => Ok(reference),
        None => Err(Error::Other(format!(
            "the label {label} of {image} is {value:?}: it names no digest, so which base was \
             used is unknown (record the RepoDigest, <repository>@sha256:<digest>)"
        ))),
    }
}

/// What `check-base` asks: is `base` (with its digest) what `tracking` names now?
pub struct Question {
    /// The image the base was read from, for the report.
    pub image: String,
    pub label: String,
    pub base: Reference,
    pub tracking: Reference,
    /// The platform whose image gives the dates (`linux/amd64`).
    pub platform: String,
    pub max_age_days: u32,
}

/// Answer `question` from the registry of the tracked tag.
pub async fn assess(client: Arc<Client>, question: Question) -> Result<Assessment> {
    let Question {
        base,
        tracking,
        platform,
        ..
    } = &question;
    let repository = &tracking.repository;
    let tag = tracking.manifest_reference();
    let current_digest = client
        .manifest_digest(repository, tag)
        .await?
        .ok_or_else(|| Error::Other(format!("{tracking} does not exist in its registry")))?;
    let base_digest = base.digest.clone().unwrap_or_default();
    let (base_created, current) = tokio::join!(
        created(&client, &base.repository, &base_digest, platform),
        current_image(&client, repository, &current_digest, platform),
    );
    let (current_created, current_platforms) = current?;
    let base_created = base_created.map_err(|e| e.to_string());
    let same = base_digest == current_digest || current_platforms.contains(&base_digest);
    // A base built after what the tag names now (a tag moved back, another tag) is not stale.
    let newer_published = !same
        && match (&base_created, &current_created) {
            (Ok(Some(b)), Some(c)) => time::parse_rfc3339(b) < time::parse_rfc3339(c),
            _ => true,
        };
    let wanted = [base_digest.clone(), current_digest.clone()];
    let [base_tag, current_tag] = dated_tags_of(client, repository, tag, wanted.clone()).await;
    let now = time::now();
    let age = |created: &Option<String>| {
        created
            .as_deref()
            .and_then(time::parse_rfc3339)
            .map(|t| time::age_days(t, now))
    };
    let (base_created, note) = match base_created {
        Ok(created) => (created, None),
        Err(why) => (None, Some(format!("its date is unknown: {why}"))),
    };
    let base_age = age(&base_created);
    let too_old = base_age.is_some_and(|days| days > i64::from(question.max_age_days));
    Ok(Assessment {
        base: Point {
            reference: format!("{}@{base_digest}", base.repository_name()),
            age_days: base_age,
            created: base_created,
            dated_tag: base_tag,
            digest: base_digest,
            note,
        },
        current: Point {
            reference: tracking.to_string(),
            age_days: age(&current_created),
            created: current_created,
            dated_tag: current_tag,
            digest: current_digest,
            note: None,
        },
        tracking: tracking.to_string(),
        newer_published,
        too_old,
        stale: newer_published || too_old,
        max_age_days: question.max_age_days,
        image: question.image,
        label: question.label,
    })
}

/// The `created` time of the image `digest` names (an index resolved to `platform`).
async fn created(
    client: &Client,
    repository: &str,
    digest: &str,
    platform: &str,
) -> Result<Option<String>> {
    let manifest = client.manifest(repository, digest).await?;
    let image = client
        .image_manifest(repository, manifest, platform)
        .await?;
    let config = client.config(repository, &image).await?;
    Ok(config["created"].as_str().map(str::to_string))
}

/// What the tracked tag points to now: its `created` time, and the digests of the images its
/// index lists (a label may record one of those rather than the index).
async fn current_image(
    client: &Client,
    repository: &str,
    digest: &str,
    platform: &str,
) -> Result<(Option<String>, Vec<String>)> {
    let manifest = client.manifest(repository, digest).await?;
    let platforms: Vec<String> = manifest.platforms().into_iter().map(|(_, d)| d).collect();
    let image = client
        .image_manifest(repository, manifest, platform)
        .await?;
    let config = client.config(repository, &image).await?;
    Ok((config["created"].as_str().map(str::to_string), platforms))
}

/// For each of `digests`, the newest dated tag (`<version>.YYYY.MM.DD.HH[-arch]`) of the same
/// line as `tag` that points to it. Best effort: a registry that will not list tags names none.
async fn dated_tags_of(
    client: Arc<Client>,
    repository: &str,
    tag: &str,
    digests: [String; 2],
) -> [Option<String>; 2] {
    let mut found = [None, None];
    let tags = match client.tags(repository).await {
        Ok(tags) => tags,
        Err(e) => {
            tracing::debug!("no tag list: {e}");
            return found;
        }
    };
    let mut dated: Vec<(DatedTag, String)> = tags
        .into_iter()
        .filter_map(|t| DatedTag::parse(&t).map(|d| (d, t)))
        .filter(|(d, _)| d.follows(tag))
        .collect();
    dated.sort_by(|a, b| b.0.cmp(&a.0));
    for batch in dated
        .into_iter()
        .take(DATED_TAGS_ASKED)
        .collect::<Vec<_>>()
        .chunks(PARALLEL_HEADS)
    {
        let mut heads = tokio::task::JoinSet::new();
        for (order, (_, name)) in batch.iter().enumerate() {
            let (client, repository, name) = (client.clone(), repository.to_string(), name.clone());
            heads.spawn(async move {
                let digest = client.manifest_digest(&repository, &name).await;
                (order, name, digest.ok().flatten())
            });
        }
        let mut answers = heads.join_all().await;
        answers.sort_by_key(|(order, _, _)| *order);
        for (_, name, digest) in answers {
            for (slot, wanted) in found.iter_mut().zip(&digests) {
                if slot.is_none() && digest.as_ref() == Some(wanted) {
                    *slot = Some(name.clone());
                }
            }
        }
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    found
}

/// A tag AWS publishes with its date: `21.2024.11.22.15`, `3.12.2024.01.05.15-x86_64`.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct DatedTag {
    /// (year, month, day, hour), compared first.
    when: (u32, u32, u32, u32),
    version: String,
    /// Of one date, the plain tag (an index) sorts above its arch variants: asked first.
    plain: bool,
}

impl DatedTag {
    fn parse(tag: &str) -> Option<DatedTag> {
        let (name, plain) = match tag.rsplit_once('-') {
            Some((name, "x86_64" | "arm64")) => (name, false),
            Some(_) => return None,
            None => (tag, true),
        };
        let parts: Vec<&str> = name.split('.').collect();
        if parts.len() < 5
            || !parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        {
            return None;
        }
        let (version, date) = parts.split_at(parts.len() - 4);
        let number = |i: usize| date[i].parse::<u32>().ok();
        if date[0].len() != 4 || !date[1..].iter().all(|p| p.len() == 2) {
            return None;
        }
        Some(DatedTag {
            when: (number(0)?, number(1)?, number(2)?, number(3)?),
            version: version.join("."),
            plain,
        })
    }

    /// Whether this tag belongs to the line `tag` tracks: `21` → `21.…`; `latest` and other
    /// names → any.
    fn follows(&self, tag: &str) -> bool {
        let is_version = tag
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        !is_version || self.version == tag
    }
}

/// The label's value, from an image config (`config.Labels`) or `docker image inspect`.
pub fn label_value(labels: Option<&serde_json::Map<String, Value>>, label: &str) -> Option<String> {
    labels?.get(label)?.as_str().map(str::to_string)
}

/// `[base] image` when set (its tag, `latest` if none), else the label's repository at `latest`.
pub fn tracked_tag(configured: &str, base: &Reference) -> Result<Reference> {
    if configured.is_empty() {
        return Ok(base.with_tag("latest"));
    }
    let tracked = Reference::parse(configured)
        .map_err(|e| Error::Config(format!("[base] image in n10n-dev.toml: {e}")))?;
    match (&tracked.tag, &tracked.digest) {
        (_, Some(_)) => Err(Error::Config(format!(
            "[base] image in n10n-dev.toml is {configured:?}: give the tag to follow, not a digest"
        ))),
        (Some(_), None) => Ok(tracked),
        (None, None) => Ok(tracked.with_tag("latest")),
    }
}

/// The pins whose tag names another digest now, each with that digest, and the tags asked
/// (`repo:tag`). A pin follows its own tag, else `base`'s when it is of that repository, else
/// `latest`; each tag is asked once.
pub async fn moved_pins(
    found: Vec<pins::Pin>,
    base: Option<&Reference>,
) -> Result<(Vec<(pins::Pin, String)>, Vec<String>)> {
    let mut newest: std::collections::BTreeMap<String, String> = Default::default();
    let mut clients: std::collections::HashMap<String, Client> = Default::default();
    let mut changes = Vec::new();
    for pin in found {
        let tracked = match (&pin.reference.tag, base) {
            (Some(tag), _) => pin.reference.with_tag(tag),
            (None, Some(b)) if same_repository(b, &pin.reference) => b.clone(),
            (None, _) => pin.reference.with_tag("latest"),
        };
        let key = tracked.to_string();
        if !newest.contains_key(&key) {
            if !clients.contains_key(&tracked.registry) {
                clients.insert(
                    tracked.registry.clone(),
                    crate::registry::client_for(&tracked)?,
                );
            }
            let client = &clients[&tracked.registry];
            let digest = client
                .manifest_digest(&tracked.repository, tracked.manifest_reference())
                .await?
                .ok_or_else(|| Error::Other(format!("{tracked} does not exist in its registry")))?;
            newest.insert(key.clone(), digest);
        }
        let digest = &newest[&key];
        if pin.reference.digest.as_ref() != Some(digest) {
            changes.push((pin, digest.clone()));
        }
    }
    Ok((changes, newest.into_keys().collect()))
}

/// Whether two references name the same repository of the same registry.
pub fn same_repository(a: &Reference, b: &Reference) -> bool {
    a.registry == b.registry && a.repository == b.repository
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dated_tags_are_recognised_and_ordered() {
        let a = DatedTag::parse("21.2024.11.22.15").unwrap();
        let b = DatedTag::parse("21.2025.05.04.06-x86_64").unwrap();
        let c = DatedTag::parse("3.12.2024.01.05.15").unwrap();
        assert!(b > a && a > c);
        assert_eq!((a.version.as_str(), c.version.as_str()), ("21", "3.12"));
        assert!(a.follows("21") && !a.follows("17") && a.follows("latest") && c.follows("3.12"));
        for not_dated in [
            "latest",
            "21",
            "21.2024.11.22",
            "21.2024.11.22.15-ppc",
            "x.2024.11.22.15",
        ] {
            assert_eq!(DatedTag::parse(not_dated), None, "{not_dated}");
        }
    }

    #[test]
    fn the_label_must_name_a_digest() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let base =
            base_from_label(&format!("public.ecr.aws/lambda/java@{digest}"), "l", "i").unwrap();
        assert_eq!(base.digest.as_deref(), Some(digest.as_str()));
        let e = base_from_label(
            "public.ecr.aws/lambda/java:latest",
            "sdkBaseVersion",
            "w:dev",
        )
        .unwrap_err();
        assert!(e.to_string().contains("names no digest"), "{e}");
    }
}
