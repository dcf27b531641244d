//! The build-image workflow, shared by `build-image` and `invoke --serve --watch`: the machine
//! up (as `up` brings it) and provisioned, the replica synced, the project's build run in it,
//! the image it made found and recorded as the last built.

use crate::error::{Error, Result};
use crate::image::{self, ImageFacts};
use crate::machine::{BringUp, Context, Machine};
use crate::provision;

/// What to build, and how.
#[derive(Debug, Default)]
pub struct ImageBuild {
    /// The tag (default: $BUILD_NUMBER, else `[image] tag`).
    pub tag: Option<String>,
    /// linux/amd64 or linux/arm64 (default: `[image] platform`).
    pub platform: Option<String>,
    pub no_sync: bool,
    /// Keep the build's output to itself, and show only its last 30 lines when it fails
    /// (a rebuild under `--watch`); else stream it to stderr.
    pub quiet: bool,
}

/// An image the build made.
pub struct Built {
    pub image: ImageFacts,
    /// `[image] name:tag` as asked for.
    pub reference: String,
    pub platform: String,
    /// The name:tag it goes by (the one asked for when it has it), if any.
    pub tag: Option<String>,
    pub machine: Machine,
    /// How long the build command itself ran.
    pub build_time: std::time::Duration,
}

impl Built {
    /// How to name the image to Docker: its tag, else its id.
    pub fn name(&self) -> &str {
        self.tag.as_deref().unwrap_or(&self.image.id)
    }
}

impl Context {
    /// Build the project's image as `build` says, and record it as the last one built.
    pub async fn build_image(&self, build: ImageBuild) -> Result<Built> {
        let config = &self.project.config.image;
        let platform = build.platform.unwrap_or_else(|| config.platform.0.clone());
        if !matches!(platform.as_str(), "linux/amd64" | "linux/arm64") {
            return Err(Error::Usage(format!(
                "--platform {platform}: Lambda runs linux/amd64 or linux/arm64"
            )));
        }
        let tag = build
            .tag
            .or_else(|| std::env::var("BUILD_NUMBER").ok().filter(|n| !n.is_empty()))
            .unwrap_or_else(|| config.tag.clone());
        if !crate::registry::is_valid_tag(&tag) {
            return Err(Error::Usage(format!(
                "tag {tag:?} (from --tag, $BUILD_NUMBER or [image] tag): a tag is 1–128 of \
                 [A-Za-z0-9_.-], not starting with . or -"
            )));
        }
        let reference = format!("{}:{tag}", config.name);
        let command = image::build_command(
            config.build.as_deref(),
            &self.project.root,
            &reference,
            &platform,
        )?;

        let how = BringUp {
            provision: false,
            sync: !build.no_sync,
        };
        let machine = self.bring_up(how).await?;
        // A Dockerfile build names its image; anything else is found by what it adds.
        let names_its_image =
            config.build.is_none() && !self.project.root.join("build.sbt").is_file();
        let (place, before) = self
            .provisioned_and_listed(machine, names_its_image)
            .await?;
        let env = vec![
            ("N10N_IMAGE".to_string(), reference.clone()),
            ("DOCKER_DEFAULT_PLATFORM".to_string(), platform.clone()),
        ];
        // The build's own output goes to stderr: stdout is the caller's, for scripts.
        let script = match build.quiet {
            true => format!(
                "log=$(mktemp) || exit 125\n(\n{command}\n) >\"$log\" 2>&1\ncode=$?\n\
                 [ \"$code\" = 0 ] || tail -n 30 \"$log\" >&2\nrm -f \"$log\"\nexit \"$code\""
            ),
            false => format!("exec 1>&2\n{command}"),
        };
        let started = std::time::Instant::now();
        let code = place.run(&script, &env).await?;
        let build_time = started.elapsed();
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
        let tag = image
            .tags
            .iter()
            .find(|t| t.as_str() == reference)
            .or(image.tags.first())
            .cloned();
        let built = Built {
            image,
            reference,
            platform,
            tag,
            machine: place,
            build_time,
        };
        let vm_dir = self.state.vm_dir(&self.project.config.vm.name)?;
        image::remember_built(&vm_dir, built.name())?;
        Ok(built)
    }

    /// The machine provisioned (a new session if the scripts ran) and, unless the build names
    /// its image, the images it held before the build. The stamp check and the listing go in
    /// parallel; on a machine that was not provisioned yet the listing is taken again
    /// afterwards (there was no Docker to ask).
    async fn provisioned_and_listed(
        &self,
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
        let plan = self.provision_plan()?;
        let (current, before) =
            tokio::join!(provision::is_current(session, &plan.stamp), list(&machine));
        let current = current?;
        let machine = self.provision_unless(current, machine, &plan).await?;
        let before = match current {
            true => before?,
            false => list(&machine).await?,
        };
        Ok((machine, before))
    }
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
