//! `check-base [IMAGE|REF] [--max-age DAYS] [--json] [--update]`: is the image's base (the
//! digest in its `[base] label`) still what the tracked tag names, and young enough? With
//! `--update`, move the project's digest pins to the newest digest instead.

use std::sync::Arc;

use clap::Args;

use super::Context;
use crate::base::{self, Assessment, Question, pins};
use crate::error::{Error, Result};

use crate::machine::BuiltImage;
use crate::registry::{self, Reference};
use crate::time;

/// Exit codes of `check-base` (see the CLI contract).
const CURRENT: i32 = 0;
const STALE: i32 = 1;
const NOTHING_TO_UPDATE: i32 = 1;

#[derive(Debug, Args)]
pub struct CheckBaseArgs {
    /// A local image in the build machine's Docker (default: what build-image built last), or
    /// a registry reference (host/repository:tag) read from the registry, no Docker needed
    #[arg(value_name = "IMAGE|REF", conflicts_with = "update")]
    pub image: Option<String>,

    /// Stale when the base is older than DAYS (default: [base] max_age_days)
    #[arg(long, value_name = "DAYS")]
    pub max_age: Option<u32>,

    /// Print the facts as one JSON object
    #[arg(long, conflicts_with = "update")]
    pub json: bool,

    /// Rewrite the project's digest pins (FROM repo:tag@sha256:…, "repo@sha256:…" in *.sbt)
    /// to the newest digest of their tag, and print the change as a diff
    #[arg(long)]
    pub update: bool,
}

pub async fn run(ctx: &Context, args: CheckBaseArgs) -> Result<i32> {
    if args.update {
        return update_pins(ctx).await;
    }
    let config = &ctx.project.config;
    let (image, labels, platform) = match args.image {
        Some(reference) if Reference::names_registry(&reference) => {
            from_registry(&reference, &config.image.platform.0).await?
        }
        given => from_build_machine(ctx, given).await?,
    };
    let label = &config.base.label;
    let value = base::label_value(labels.as_ref(), label).ok_or_else(|| {
        Error::Other(format!(
            "{image} has no label {label}, so its base is unknown: have the build record it \
             (LABEL {label}=<repository>@sha256:<digest> of the FROM image), or set [base] label"
        ))
    })?;
    let base = base::base_from_label(&value, label, &image)?;
    let tracking = base::tracked_tag(&config.base.image, &base)?;
    let client = Arc::new(registry::client_for(&tracking)?);
    let assessment = base::assess(
        client,
        Question {
            image,
            label: label.clone(),
            base,
            tracking,
            platform,
            max_age_days: args.max_age.unwrap_or(config.base.max_age_days),
        },
    )
    .await?;
    let shown = match args.json {
        true => serde_json::to_string_pretty(&assessment).unwrap_or_default() + "\n",
        false => report(&assessment),
    };
    crate::stdout::write(shown)?;
    Ok(if assessment.stale { STALE } else { CURRENT })
}

/// The image's name, its labels and its platform, read from the registry.
async fn from_registry(
    text: &str,
    platform: &str,
) -> Result<(
    String,
    Option<serde_json::Map<String, serde_json::Value>>,
    String,
)> {
    let reference = Reference::parse(text)?;
    let client = registry::client_for(&reference)?;
    let repository = &reference.repository;
    let manifest = client
        .manifest(repository, reference.manifest_reference())
        .await?;
    let image = client
        .image_manifest(repository, manifest, platform)
        .await?;
    let config = client.config(repository, &image).await?;
    let platform = format!(
        "{}/{}",
        config["os"].as_str().unwrap_or("linux"),
        config["architecture"].as_str().unwrap_or("amd64")
    );
    let labels = config["config"]["Labels"].as_object().cloned();
    Ok((reference.to_string(), labels, platform))
}

/// The image's name, its labels and its platform, read from the build machine's Docker.
async fn from_build_machine(
    ctx: &Context,
    given: Option<String>,
) -> Result<(
    String,
    Option<serde_json::Map<String, serde_json::Value>>,
    String,
)> {
    // A name that cannot be an image is the user's mistake: said before any machine is reached.
    if let Some(text) = &given
        && !is_image_id(text)
    {
        Reference::parse(text)?;
    }
    let BuiltImage { name, facts, .. } = match ctx.built_image(given).await {
        Err(Error::NotBuilt(name)) => {
            return Err(Error::Other(format!(
                "there is no image {name} in the build machine's Docker: build it \
                 (`n10n-dev build-image`), or name a registry reference (host/repository:tag)"
            )));
        }
        found => found?,
    };
    let platform = format!("{}/{}", facts.os, facts.architecture);
    Ok((name, Some(facts.labels), platform))
}

/// An image id as Docker prints it (`sha256:…` or its hex digits), not a name.
fn is_image_id(text: &str) -> bool {
    let hex = text.strip_prefix("sha256:").unwrap_or(text);
    hex.len() >= 12 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

fn report(a: &Assessment) -> String {
    let point = |p: &base::Point| {
        let mut facts = Vec::new();
        if let Some(created) = p.created.as_deref().and_then(time::parse_rfc3339) {
            facts.push(format!("created {}", time::date(created)));
        }
        if let Some(days) = p.age_days {
            facts.push(format!("{days} days ago"));
        }
        if let Some(tag) = &p.dated_tag {
            facts.push(format!("tag {tag}"));
        }
        if let Some(note) = &p.note {
            facts.push(note.clone());
        }
        match facts.is_empty() {
            true => "date unknown (the image config has no `created`)".to_string(),
            false => facts.join(", "),
        }
    };
    let verdict = match (a.newer_published, a.too_old) {
        (false, false) => format!(
            "current: the newest base, younger than {} days",
            a.max_age_days
        ),
        (true, false) => format!("stale: {} points to a newer base", a.tracking),
        (false, true) => format!(
            "stale: the base is the newest, but older than {} days",
            a.max_age_days
        ),
        (true, true) => format!(
            "stale: {} points to a newer base, and this one is older than {} days",
            a.tracking, a.max_age_days
        ),
    };
    let mut out = format!(
        "image:    {} (label {})\nbase:     {}\n          {}\ntracking: {}\nnewest:   {}\n          {}\nverdict:  {verdict}\n",
        a.image,
        a.label,
        a.base.reference,
        point(&a.base),
        a.tracking,
        a.current.digest,
        point(&a.current),
    );
    if a.newer_published {
        out.push_str(
            "next:     move the pinned base (`n10n-dev check-base --update`), then `n10n-dev build-image`\n",
        );
    }
    out
}

/// `--update`: every digest pin in the project's build files moved to what its tag (its own,
/// else `[base] image`'s, else `latest`) names now.
async fn update_pins(ctx: &Context) -> Result<i32> {
    let configured = &ctx.project.config.base.image;
    let base = match configured.is_empty() {
        true => None,
        false => Some(base::tracked_tag(
            configured,
            &Reference::parse(configured)?,
        )?),
    };
    let found = pins::find(&ctx.project.root)?;
    let found: Vec<_> = found
        .into_iter()
        .filter(|pin| {
            base.as_ref()
                .is_none_or(|b| base::same_repository(b, &pin.reference))
        })
        .collect();
    if found.is_empty() {
        eprintln!(
            "check-base: no digest pin{} in the project's build files (Dockerfile*, *.sbt, \
             project/*.scala): pin the base as `FROM <repository>:<tag>@sha256:<digest>` (or a \
             \"<repository>@sha256:<digest>\" string in build.sbt) for --update to move it",
            base.as_ref()
                .map(|b| format!(" of {}", b.repository_name()))
                .unwrap_or_default()
        );
        return Ok(NOTHING_TO_UPDATE);
    }
    let (changes, newest) = base::moved_pins(found, base.as_ref()).await?;
    if changes.is_empty() {
        eprintln!(
            "check-base: every pin is already at the newest digest of its tag ({})",
            newest.join(", ")
        );
        return Ok(NOTHING_TO_UPDATE);
    }
    let rewrites = pins::rewrite(&changes)?;
    for rewrite in &rewrites {
        rewrite.apply()?;
        let shown = rewrite
            .file
            .strip_prefix(&ctx.project.root)
            .unwrap_or(&rewrite.file)
            .display()
            .to_string();
        crate::stdout::write(rewrite.diff(&shown))?;
    }
    if !ctx.quiet {
        eprintln!(
            "check-base: moved {} pin(s) in {} file(s); `n10n-dev build-image` builds on the new base",
            changes.len(),
            rewrites.len()
        );
    }
    Ok(0)
}
