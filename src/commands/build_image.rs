//! `build-image [--tag T] [--platform P] [--save FILE] [--no-sync]`: from cold to a Lambda-ready
//! image in one command: bring the machine up (as `up` does), sync, build, describe the image.

use std::path::PathBuf;

use clap::Args;

use super::Context;
use crate::error::{Error, Result};
use crate::image;
use crate::image_build::{Built, ImageBuild};
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
    let built = ctx
        .build_image(ImageBuild {
            tag: args.tag,
            platform: args.platform,
            no_sync: args.no_sync,
            quiet: false,
        })
        .await?;
    print_summary(&built, &ctx.project.config.base.label)?;
    if let Some(file) = &args.save {
        // By name, so that `docker load` restores the tag too.
        image::save(&built.machine, built.name(), file).await?;
        if !ctx.quiet {
            eprintln!(
                "build-image: saved to {} (`docker load -i` reads it)",
                file.display()
            );
        }
    }
    Ok(())
}

/// Print what was built.
fn print_summary(built: &Built, label: &str) -> Result<()> {
    let (image, platform) = (&built.image, &built.platform);
    let shown = built.tag.as_deref().unwrap_or("<untagged>");
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
    if &built != platform {
        eprintln!(
            "warning: the image is {built}, but the function runs {platform}: Lambda will refuse it"
        );
    }
    Ok(())
}
