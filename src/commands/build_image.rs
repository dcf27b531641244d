//! `build-image [--tag T] [--platform P] [--save FILE] [--no-sync]`: from cold to a Lambda-ready
//! image in one command: bring the machine up (as `up` does), sync, build, describe the image.

use std::path::PathBuf;

use clap::Args;

use super::Context;
use crate::error::{Error, Result};
use crate::image::{self, ImageFacts};
use crate::machine::{BringUp, Machine};
use crate::provision;
use crate::size::human_bytes;

#[derive(Debug, Args)]
pub struct BuildImageArgs {
    /// Image tag (before $BUILD_NUMBER and [image] tag)
    #[arg(short, long, value_name = "T")]
    pub tag: Option<String>,

    /// linux/amd64 or linux/arm64 (default: [image] platform)
    #[arg(long, value_name = "P")]
    pub platform: Option<String>,

    /// Also write the image, as `docker save` makes it, to FILE here
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,

    /// Do not sync the project first
    #[arg(long)]
    pub no_sync: bool,
}

pub async fn run(ctx: &Context, args: BuildImageArgs) -> Result<()> {
    let config = &ctx.project.config.image;
    let platform = args.platform.unwrap_or_else(|| config.platform.0.clone());
    if !matches!(platform.as_str(), "linux/amd64" | "linux/arm64") {
        return Err(Error::Usage(format!(
            "--platform {platform}: Lambda runs linux/amd64 or linux/arm64"
        )));
    }
    let tag = args
        .tag
        .or_else(|| std::env::var("BUILD_NUMBER").ok().filter(|n| !n.is_empty()))
        .unwrap_or_else(|| config.tag.clone());
    if !crate::registry::is_valid_tag(&tag) {
        return Err(Error::Usage(format!(
            "tag {tag:?} (from --tag, $BUILD_NUMBER or [image] tag): a tag is 1–128 of \
             [A-Za-z0-9_.-], not starting with . or -"
        )));
    }
    if let Some(file) = &args.save {
        let dir = file.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir.filter(|d| !d.is_dir()) {
            return Err(Error::Usage(format!(
                "--save {}: there is no directory {} to write it in",
                file.display(),
                dir.display()
            )));
        }
    }
    let reference = format!("{}:{tag}", config.name);
    let command = image::build_command(
        config.build.as_deref(),
        &ctx.project.root,
        &reference,
        &platform,
    )?;

    let how = BringUp {
        provision: false,
        sync: !args.no_sync,
    };
    let machine = ctx.bring_up(how).await?;
    // A Dockerfile build names its image; anything else is found by what it adds.
    let names_its_image = config.build.is_none() && !ctx.project.root.join("build.sbt").is_file();
    let (place, before) = provisioned_and_listed(ctx, machine, names_its_image).await?;
    let env = vec![
        ("N10N_IMAGE".to_string(), reference.clone()),
        ("DOCKER_DEFAULT_PLATFORM".to_string(), platform.clone()),
    ];
    // The build's own output goes to stderr: stdout is the summary, for scripts.
    let code = place.run(&format!("exec 1>&2\n{command}"), &env).await?;
    if code != 0 {
        return Err(Error::Other(format!(
            "the build failed (exit {code}): {}\nits output ends above; nothing was saved",
            image::build_summary(&command, &reference, &platform)
        )));
    }
    let image = match names_its_image {
        true => image::inspect(&place, &reference).await?.ok_or_else(|| {
            Error::Other(format!(
                "the build succeeded but there is no image {reference}"
            ))
        })?,
        false => find_built(&place, &before, &reference).await?,
    };
    let label = &ctx.project.config.base.label;
    let tag = print_summary(&image, &reference, &platform, label)?;
    let vm_dir = ctx.state.vm_dir(&ctx.project.config.vm.name)?;
    image::remember_built(&vm_dir, tag.as_deref().unwrap_or(&image.id))?;
    if let Some(file) = &args.save {
        // By name, so that `docker load` restores the tag too.
        image::save(&place, tag.as_deref().unwrap_or(&image.id), file).await?;
        if !ctx.quiet {
            eprintln!(
                "build-image: saved to {} (`docker load -i` reads it)",
                file.display()
            );
        }
    }
    Ok(())
}

/// The machine provisioned (a new session if the scripts ran) and, unless the build names its
/// image, the images it held before the build. The stamp check and the listing go in parallel;
/// on a machine that was not provisioned yet the listing is taken again afterwards (there was
/// no Docker to ask).
async fn provisioned_and_listed(
    ctx: &Context,
    machine: Machine,
    names_its_image: bool,
) -> Result<(Machine, Vec<String>)> {
    let list = async |machine: &Machine| match names_its_image {
        true => Ok(Vec::new()),
        false => image::image_ids(machine).await,
    };
    let Some(session) = machine.session() else {
        let before = list(&machine).await?;
        return Ok((machine, before));
    };
    let plan = ctx.provision_plan()?;
    let (current, before) =
        tokio::join!(provision::is_current(session, &plan.stamp), list(&machine));
    let current = current?;
    let machine = ctx.provision_unless(current, machine, &plan).await?;
    let before = match current {
        true => before?,
        false => list(&machine).await?,
    };
    Ok((machine, before))
}

/// The image the build made: among those that were not there before, one named `[image] name`
/// if any (other builds may share the engine), else the newest; when nothing is new (a cached
/// rebuild), the expected name:tag.
async fn find_built(place: &Machine, before: &[String], reference: &str) -> Result<ImageFacts> {
    let repository = reference.rsplit_once(':').map_or(reference, |(r, _)| r);
    let named = |facts: &ImageFacts| {
        facts
            .tags
            .iter()
            .any(|t| t.rsplit_once(':').is_some_and(|(r, _)| r == repository))
    };
    let after = image::image_ids(place).await?;
    let mut best: Option<ImageFacts> = None;
    for id in after.iter().filter(|id| !before.contains(id)) {
        let Some(facts) = image::inspect(place, id).await? else {
            continue;
        };
        let better = match &best {
            None => true,
            Some(b) => (named(&facts), &facts.created) > (named(b), &b.created),
        };
        if better {
            best = Some(facts);
        }
    }
    if let Some(image) = best {
        return Ok(image);
    }
    image::inspect(place, reference).await?.ok_or_else(|| {
        Error::Other(format!(
            "the build made no new image and there is no {reference}: set [image] name and tag \
             to what the build produces"
        ))
    })
}

/// Print what was built; returns the name:tag it goes by, if any.
fn print_summary(
    image: &ImageFacts,
    reference: &str,
    platform: &str,
    label: &str,
) -> Result<Option<String>> {
    let tag = image
        .tags
        .iter()
        .find(|t| t.as_str() == reference)
        .or(image.tags.first())
        .cloned();
    let shown = tag.clone().unwrap_or_else(|| "<untagged>".into());
    let base = match image.labels.get(label).and_then(|v| v.as_str()) {
        Some(value) => format!("{value} ({label})"),
        None => format!("none (no {label} label)"),
    };
    let built = format!("{}/{}", image.os, image.architecture);
    crate::outln!(
        "image:    {shown}\nid:       {}\nsize:     {}\nplatform: {built}\ncreated:  {}\nbase:     {base}",
        image.id,
        human_bytes(image.size),
        image.created
    )?;
    if image.is_index {
        eprintln!(
            "warning: the image is a multi-platform index: Lambda needs a single-platform image \
             (build with --provenance=false --sbom=false and one --platform)"
        );
    }
    if built != platform {
        eprintln!(
            "warning: the image is {built}, but the function runs {platform}: Lambda will refuse it"
        );
    }
    Ok(tag)
}
