//! Container images: choosing the build command, finding what it built, describing it and
//! saving it. Commands run on the build machine, or here for the native backend.

use std::path::Path;

use serde_json::Value;

use crate::build_machine::Machine;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::ssh::quote;

/// The image's platform, once it is known that the build machine can run it (natively, or through
/// an emulator registered with binfmt_misc); a warning when it is not the configured one.
pub async fn runnable_platform(
    place: &Machine,
    image: &str,
    facts: &ImageFacts,
    wanted: &str,
) -> Result<String> {
    let platform = format!("{}/{}", facts.os, facts.architecture);
    if platform != wanted {
        eprintln!(
            "warning: {image} is {platform}, but the function is configured for {wanted} \
             ([image] platform): Lambda would refuse it"
        );
    }
    let probe = place
        .capture("docker info -f '{{.Architecture}}'; ls /proc/sys/fs/binfmt_misc 2>/dev/null")
        .await?;
    let said = String::from_utf8_lossy(&probe.stdout);
    let mut lines = said.lines();
    let machine = match lines.next().unwrap_or_default().trim() {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
    .to_string();
    let emulators: Vec<&str> = lines.collect();
    let emulated = match facts.architecture.as_str() {
        "amd64" => emulators
            .iter()
            .any(|e| *e == "qemu-x86_64" || e.contains("rosetta")),
        "arm64" => emulators.contains(&"qemu-aarch64"),
        _ => false,
    };
    if machine != facts.architecture && !emulated {
        return Err(Error::Other(format!(
            "{image} is {platform}, and the build machine is linux/{machine} with no emulator \
             for it: build the image for linux/{machine} (`n10n-dev build-image --platform \
             linux/{machine}`), or register one in the machine (Lima: Rosetta, \
             `vmType: vz` + `rosetta.binfmt: true`; elsewhere: qemu-user-static with binfmt)"
        )));
    }
    Ok(platform)
}

/// The build command: `[image] build`, else detected from the project's files.
/// What a build failure names as the command that ran, for the script that picks among them.
pub fn build_summary(script: &str, reference: &str, platform: &str) -> String {
    match script.starts_with("if docker buildx version") {
        true => format!(
            "docker buildx build --platform {platform} -t {reference} . (or docker build, where \
             the build machine has no buildx)"
        ),
        false => script.to_string(),
    }
}

pub fn build_command(
    configured: Option<&str>,
    root: &Path,
    reference: &str,
    platform: &str,
) -> Result<String> {
    if let Some(command) = configured {
        return Ok(command.to_string());
    }
    if root.join("build.sbt").is_file() {
        return Ok("sbt docker:publishLocal".into());
    }
    if root.join("Dockerfile").is_file() {
        // Lambda rejects image indexes, so no provenance or SBOM attestations. Without buildx
        // (Debian 12's docker.io) the daemon's BuildKit still builds, through the BuildKit
        // client built into Docker CLIs before 23.0; later CLIs need buildx for it, and only
        // the legacy builder is left (with a note saying what to install).
        let (reference, platform) = (
            quote::quote(reference.as_bytes()),
            quote::quote(platform.as_bytes()),
        );
        return Ok(format!(
            "if docker buildx version >/dev/null 2>&1; then \
             docker buildx build --platform {platform} --provenance=false --sbom=false --load -t {reference} .; \
             else case \"$(docker version --format '{{{{.Client.Version}}}}' 2>/dev/null)\" in \
             1[0-9].*|2[0-2].*) echo 'n10n-dev: no buildx on the build machine; using docker build with BuildKit' >&2; \
             DOCKER_BUILDKIT=1 docker build --platform {platform} -t {reference} .;; \
             *) echo 'n10n-dev: no buildx on the build machine, and this Docker CLI needs it for BuildKit: \
             using the legacy builder (install docker-buildx for BuildKit)' >&2; \
             DOCKER_BUILDKIT=0 docker build --platform {platform} -t {reference} .;; esac; fi"
        ));
    }
    Err(Error::Usage(
        "nothing to build: no [image] build command in n10n-dev.toml, and the project root has \
         neither a Dockerfile (docker build) nor a build.sbt (sbt docker:publishLocal)"
            .into(),
    ))
}

/// Image ids present on the engine.
/// The IDs of the build machine's images. On a remote machine through the Engine API over the
/// session (no process is started there); here through the docker CLI, which honours the
/// user's Docker context.
pub async fn image_ids(place: &Machine) -> Result<Vec<String>> {
    if place.session().is_some() {
        return Engine::connect(place).await?.image_ids().await;
    }
    let out = place
        .capture("docker image ls -q --no-trunc")
        .await?
        .success("listing images")?;
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .map(str::to_string)
        .collect())
}

/// Where `build-image` records the image it produced, in the VM's state dir.
const LAST_BUILT: &str = "last-image";

/// Remember `image` (name:tag, or ID when untagged) as the one the project's commands default to.
pub fn remember_built(vm_dir: &Path, image: &str) -> Result<()> {
    crate::state::write_atomically(&vm_dir.join(LAST_BUILT), image.as_bytes())
}

/// A command's image is not in the build machine's Docker.
/// The image a command was given, else the one `build-image` produced last.
pub fn given_or_last_built(given: Option<String>, vm_dir: &Path) -> Result<String> {
    if let Some(image) = given {
        return Ok(image);
    }
    std::fs::read_to_string(vm_dir.join(LAST_BUILT))
        .ok()
        .map(|text| text.trim().to_string())
        .filter(|image| !image.is_empty())
        .ok_or_else(|| {
            Error::Usage(
                "no image given, and `n10n-dev build-image` has not built one for this project \
                 yet: build it first, or name the image"
                    .into(),
            )
        })
}

/// What `docker image inspect` says of one image.
#[derive(Debug, Clone)]
pub struct ImageFacts {
    pub id: String,
    pub tags: Vec<String>,
    pub size: u64,
    pub os: String,
    pub architecture: String,
    /// `v8` for arm64 images that say so.
    pub variant: Option<String>,
    pub created: String,
    /// When the engine last put a tag on it (`Metadata.LastTagTime`; a cached rebuild that
    /// tags it again moves it). Empty where the engine does not say.
    pub last_tag_time: String,
    pub labels: serde_json::Map<String, Value>,
    /// The engine stores it as an image index (manifest list): Lambda would refuse it. Only
    /// engines with the containerd image store report this (`Descriptor.mediaType`).
    pub is_index: bool,
}

/// What the build machine's Docker knows of `image`; `None` when it has no such image. Remote:
/// the Engine API; here: the docker CLI (see `image_ids`).
pub async fn inspect(place: &Machine, image: &str) -> Result<Option<ImageFacts>> {
    if place.session().is_some() {
        let json = Engine::connect(place).await?.image(image).await?;
        return Ok(json.map(|json| parse_inspect(&json)));
    }
    let line = format!("docker image inspect {}", quote::quote(image.as_bytes()));
    let out = place.capture(&line).await?;
    if out.status != 0 {
        return Ok(None);
    }
    let json: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::Other(format!("cannot read `docker image inspect`: {e}")))?;
    Ok(Some(parse_inspect(&json[0])))
}

/// The facts of `docker image inspect`'s (or the Engine API's) JSON for one image.
pub fn parse_inspect(image: &Value) -> ImageFacts {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    ImageFacts {
        id: text(&image["Id"]),
        tags: image["RepoTags"]
            .as_array()
            .map(|tags| tags.iter().map(text).collect())
            .unwrap_or_default(),
        size: image["Size"].as_u64().unwrap_or(0),
        os: text(&image["Os"]),
        architecture: text(&image["Architecture"]),
        variant: image["Variant"].as_str().map(str::to_string),
        created: text(&image["Created"]),
        last_tag_time: text(&image["Metadata"]["LastTagTime"]),
        labels: image["Config"]["Labels"]
            .as_object()
            .cloned()
            .unwrap_or_default(),
        is_index: image["Descriptor"]["mediaType"]
            .as_str()
            .is_some_and(|t| t.contains("image.index") || t.contains("manifest.list")),
    }
}

/// Stream `docker save` of `image` into `file`, whole or not at all: it is written under a
/// temporary name beside `file` and renamed when complete.
pub async fn save(place: &Machine, image: &str, file: &Path) -> Result<()> {
    let (partial, out) = crate::state::new_file_beside(file, 0o644).map_err(|e| {
        let partial = crate::state::temporary_beside(file);
        Error::io(format!("cannot create {}", partial.display()), e)
    })?;
    let line = format!("docker save {}", quote::quote(image.as_bytes()));
    let result = place
        .capture_into(&line, out)
        .await
        .and_then(|c| c.success("docker save").map(drop));
    match result.and_then(|()| {
        std::fs::rename(&partial, file)
            .map_err(|e| Error::io(format!("cannot write {}", file.display()), e))
    }) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_command_is_configured_or_detected() {
        let dir = tempfile::tempdir().unwrap();
        let none = build_command(None, dir.path(), "x:dev", "linux/amd64").unwrap_err();
        assert!(
            none.is_usage()
                && none.to_string().contains("Dockerfile")
                && none.to_string().contains("build.sbt")
        );
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        let docker = build_command(None, dir.path(), "x:dev", "linux/amd64").unwrap();
        assert!(docker.contains("docker buildx build --platform linux/amd64 --provenance=false --sbom=false --load -t x:dev ."));
        assert!(
            docker.contains("DOCKER_BUILDKIT=1 docker build --platform linux/amd64 -t x:dev .")
        );
        std::fs::write(dir.path().join("build.sbt"), "").unwrap();
        assert_eq!(
            build_command(None, dir.path(), "x:dev", "linux/amd64").unwrap(),
            "sbt docker:publishLocal"
        );
        assert_eq!(
            build_command(Some("make image"), dir.path(), "x:dev", "linux/amd64").unwrap(),
            "make image"
        );
    }

    #[test]
    fn inspect_output_is_read() {
        let json: Value = serde_json::from_str(
            r#"[{"Id":"sha256:84","RepoTags":["worker:dev"],"Size":1982256,"Os":"linux","Architecture":"amd64","Created":"2026-11-28T21:58:37Z","Config":{"Labels":{"sdkBaseVersion":"public.ecr.aws/lambda/java@sha256:abc"}}}]"#,
        )
        .unwrap();
        let facts = parse_inspect(&json[0]);
        assert_eq!(
            (facts.id.as_str(), facts.size, facts.architecture.as_str()),
            ("sha256:84", 1982256, "amd64")
        );
        assert_eq!(facts.tags, vec!["worker:dev"]);
        assert!(!facts.is_index);
        let index: Value = serde_json::from_str(
            r#"{"Id":"sha256:1","Descriptor":{"mediaType":"application/vnd.oci.image.index.v1+json"}}"#,
        )
        .unwrap();
        assert!(parse_inspect(&index).is_index);
        assert_eq!(
            facts.labels["sdkBaseVersion"],
            "public.ecr.aws/lambda/java@sha256:abc"
        );
    }
}
