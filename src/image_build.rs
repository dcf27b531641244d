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
            .provisioned_and_listed(machine, names_its_image, &reference)
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
            false => {
                let found = find_built(&place, &before, &reference, config.name_given).await?;
                if let Some(note) = found.note.filter(|_| !self.quiet) {
                    eprintln!("build-image: {note}");
                }
                found.image
            }
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
    /// its image, what the engine held before the build. The stamp check and the listing go in
    /// parallel; on a machine that was not provisioned yet the listing is taken again
    /// afterwards (there was no Docker to ask).
    async fn provisioned_and_listed(
        &self,
        machine: Machine,
        names_its_image: bool,
        reference: &str,
    ) -> Result<(Machine, Before)> {
        let list = async |machine: &Machine| match names_its_image {
            true => Ok(Before::default()),
            false => Before::take(machine, reference).await,
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

/// What the engine held before a build that does not name its image.
#[derive(Default)]
struct Before {
    ids: Vec<String>,
    /// The expected name:tag, if it existed.
    expected: Option<ImageFacts>,
}

impl Before {
    async fn take(machine: &Machine, reference: &str) -> Result<Before> {
        let (ids, expected) = tokio::join!(
            image::image_ids(machine),
            image::inspect(machine, reference)
        );
        Ok(Before {
            ids: ids?,
            expected: expected?,
        })
    }
}

/// The image a build made, and why it was taken when that is not plain to see.
struct Found {
    image: ImageFacts,
    note: Option<String>,
}

/// The image the build made, from what the engine holds now against what it held before (other
/// builds may share the engine: see `choose`).
async fn find_built(
    machine: &Machine,
    before: &Before,
    reference: &str,
    name_given: bool,
) -> Result<Found> {
    let (after, expected) = tokio::join!(
        image::image_ids(machine),
        image::inspect(machine, reference)
    );
    let mut new = Vec::new();
    for id in after?.iter().filter(|id| !before.ids.contains(id)) {
        new.extend(image::inspect(machine, id).await?);
    }
    choose(
        before.expected.as_ref(),
        expected?,
        new,
        reference,
        name_given,
    )
    .ok_or_else(|| {
        Error::Other(format!(
            "the build made no new image and there is no {reference}: set [image] name and tag \
             to what the build produces"
        ))
    })
}

/// In order: the expected name:tag if the build tagged it (its id or its last tag time moved: a
/// fully cached rebuild tags the same id again); the newest new image named like the project;
/// the expected name:tag as it was; and only where the project names no image, the newest new
/// image of any name, with a note saying so. Another build on the same engine adds new images
/// too, so an image that is merely new never wins over the project's own name.
fn choose(
    expected_before: Option<&ImageFacts>,
    expected: Option<ImageFacts>,
    new: Vec<ImageFacts>,
    reference: &str,
    name_given: bool,
) -> Option<Found> {
    let found = |image| Found { image, note: None };
    let tagged_by_build = |now: &ImageFacts| {
        expected_before
            .is_none_or(|was| (&was.id, &was.last_tag_time) != (&now.id, &now.last_tag_time))
    };
    let expected = match expected {
        Some(image) if tagged_by_build(&image) => return Some(found(image)),
        other => other,
    };
    let repository = reference.rsplit_once(':').map_or(reference, |(r, _)| r);
    let named = |facts: &ImageFacts| {
        facts
            .tags
            .iter()
            .any(|t| t.rsplit_once(':').is_some_and(|(r, _)| r == repository))
    };
    let newest =
        |images: Vec<ImageFacts>| images.into_iter().max_by(|a, b| a.created.cmp(&b.created));
    let (named_new, other_new): (Vec<_>, Vec<_>) = new.into_iter().partition(|f| named(f));
    if let Some(image) = newest(named_new).or(expected) {
        return Some(found(image));
    }
    if name_given {
        return None;
    }
    newest(other_new).map(|image| {
        let name = image.tags.first().unwrap_or(&image.id);
        let note = format!(
            "the build made no image named {repository}; took {name}, the newest image made \
             since it started (set [image] name to the name the build gives its image, so that \
             another build on the same engine cannot be taken for it)"
        );
        Found {
            image,
            note: Some(note),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, tag: Option<&str>, created: &str, tagged: &str) -> ImageFacts {
        let json = serde_json::json!({
            "Id": id,
            "RepoTags": tag.into_iter().collect::<Vec<_>>(),
            "Created": created,
            "Metadata": {"LastTagTime": tagged},
        });
        image::parse_inspect(&json)
    }

    fn chosen(found: Option<Found>) -> (String, bool) {
        let found = found.expect("an image");
        (found.image.id, found.note.is_some())
    }

    #[test]
    fn a_cached_rebuild_keeps_the_project_image_over_another_build_new_meanwhile() {
        let before = image("sha256:mine", Some("worker:dev"), "t1", "t1");
        let retagged = image("sha256:mine", Some("worker:dev"), "t1", "t5");
        let other = image("sha256:other", Some("other:1"), "t4", "t4");
        let found = choose(
            Some(&before),
            Some(retagged),
            vec![other],
            "worker:dev",
            true,
        );
        assert_eq!(chosen(found), ("sha256:mine".into(), false));
    }

    #[test]
    fn an_untouched_expected_image_still_beats_a_new_image_of_another_name() {
        let before = image("sha256:mine", Some("worker:dev"), "t1", "t1");
        let same = image("sha256:mine", Some("worker:dev"), "t1", "t1");
        let other = image("sha256:other", Some("other:1"), "t4", "t4");
        for name_given in [true, false] {
            let found = choose(
                Some(&before),
                Some(same.clone()),
                vec![other.clone()],
                "worker:dev",
                name_given,
            );
            assert_eq!(chosen(found), ("sha256:mine".into(), false));
        }
    }

    #[test]
    fn a_new_image_named_like_the_project_beats_a_stale_expected_tag() {
        let before = image("sha256:old", Some("worker:dev"), "t1", "t1");
        let stale = image("sha256:old", Some("worker:dev"), "t1", "t1");
        let made = image("sha256:made", Some("worker:0.1.0"), "t3", "t3");
        let other = image("sha256:other", Some("other:1"), "t4", "t4");
        let found = choose(
            Some(&before),
            Some(stale),
            vec![other, made],
            "worker:dev",
            true,
        );
        assert_eq!(chosen(found), ("sha256:made".into(), false));
    }

    #[test]
    fn an_image_of_another_name_only_when_the_project_names_none_and_with_a_note() {
        let made = || image("sha256:made", Some("something:1"), "t3", "t3");
        let found = choose(None, None, vec![made()], "dir-name:dev", false);
        assert_eq!(chosen(found), ("sha256:made".into(), true));
        assert!(choose(None, None, vec![made()], "worker:dev", true).is_none());
    }
}
