//! `push [IMAGE] [--to REPO] [--tag T]... [--json]`: tag the built image in the build machine's
//! engine, push every tag with credentials resolved here, read the result back from the
//! registry, and print `REPO@sha256:…` (what `aws lambda update-function-code --image-uri` takes).

use std::time::Instant;

use clap::Args;
use serde_json::json;

use super::Context;
use crate::config::PushAuth;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::image;
use crate::machine::BuiltImage;
use crate::push::{self, Target};
use crate::registry::Reference;

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The image in the build machine's Docker (default: what build-image built last)
    #[arg(value_name = "IMAGE")]
    pub image: Option<String>,

    /// The repository to push to, host/name (default: [push] repository)
    #[arg(long, value_name = "REPO")]
    pub to: Option<String>,

    /// A tag to push (repeatable; default: $BUILD_NUMBER, else the image's own tag)
    #[arg(short = 't', long = "tag", value_name = "T")]
    pub tags: Vec<String>,

    /// Print repository, tags, digest, media type and size as JSON
    #[arg(long)]
    pub json: bool,

    /// Log in with `aws ecr get-login-password` and send that token to this registry, whatever
    /// its name (ECR behind a VPC endpoint, say): as [push] auth = "ecr", vouched for by you
    #[arg(long)]
    pub send_ecr_token: bool,
}

pub async fn run(ctx: &Context, args: PushArgs) -> Result<()> {
    let config = &ctx.project.config.push;
    let repository = repository(args.to.as_deref(), &config.repository)?;
    let vm_dir = ctx.state.vm_dir(&ctx.project.config.vm.name)?;
    let named = image::given_or_last_built(args.image, &vm_dir)?;
    let tags = tags(args.tags, &named)?;
    let auth = match args.send_ecr_token {
        true => PushAuth::Ecr,
        false => config.auth,
    };
    let vouched = args.send_ecr_token
        || (config.ecr_hosts.iter()).any(|h| h.eq_ignore_ascii_case(&repository.registry));
    let target = Target::resolve(repository, auth, &config.region, vouched)?;

    let BuiltImage {
        name: image,
        facts,
        machine,
    } = ctx.built_image(Some(named)).await?;
    let mut engine = Engine::connect(&machine).await?;
    if let Some(session) = machine.session() {
        say_where_credentials_go(
            &vm_dir,
            &target.repository.registry,
            &session.endpoint().host,
        )?;
    }
    let platform = push::platform_parameter(engine.api_version().await?, &facts);
    let name = target.repository.repository_name();
    let mut digest = String::new();
    for tag in &tags {
        let started = Instant::now();
        engine.tag(&image, &name, tag).await?;
        let pushed = target
            .push_tag(&mut engine, tag, platform.as_deref(), ctx.quiet)
            .await?;
        if !ctx.quiet {
            eprintln!(
                "{}",
                push::summary(&format!("{name}:{tag}"), &pushed, started)
            );
        }
        digest = pushed.digest;
    }
    let manifest = target.verify(&tags[0], &digest).await?;
    let pushed = format!("{name}@{digest}");
    let shown = match args.json {
        true => {
            let facts = json!({
                "repository": name,
                "tags": tags,
                "digest": digest,
                "reference": pushed,
                "media_type": manifest.media_type,
                "size": push::stored_size(&manifest),
            });
            serde_json::to_string_pretty(&facts).unwrap_or_default()
        }
        false => pushed,
    };
    crate::outln!("{shown}")
}

/// The registry credentials resolved here travel to the engine that pushes, on the build
/// machine. A VM is this machine's own; a host elsewhere (perhaps named by a project config
/// someone else wrote) is named the first time it is to receive a registry's credentials.
fn say_where_credentials_go(vm_dir: &std::path::Path, registry: &str, host: &str) -> Result<()> {
    if crate::ssh::is_loopback_host(host) {
        return Ok(());
    }
    let record = vm_dir.join("credentials-sent");
    let pair = format!("{registry} {host}");
    let known = std::fs::read_to_string(&record).unwrap_or_default();
    if known.lines().any(|line| line == pair) {
        return Ok(());
    }
    eprintln!(
        "push: your credentials for {registry} go to the Docker engine on {host} ([ssh] host), \
         which pushes with them; said once per registry and host"
    );
    crate::state::write_atomically(&record, format!("{known}{pair}\n").as_bytes())
}

/// `--to`, else `[push] repository`: `host/name`, without tag or digest.
fn repository(flag: Option<&str>, configured: &str) -> Result<Reference> {
    let (text, is_flag) = match flag {
        Some(text) => (text, true),
        None if !configured.is_empty() => (configured, false),
        None => {
            return Err(Error::Usage(
                "where to? give --to HOST/REPOSITORY, or set [push] repository in n10n-dev.toml \
                 (e.g. \"123456789012.dkr.ecr.eu-west-1.amazonaws.com/my-lambdas\")"
                    .into(),
            ));
        }
    };
    let wrong = |why: String| match is_flag {
        true => Error::Usage(format!("--to {text}: {why}")),
        false => Error::Config(format!("[push] repository in n10n-dev.toml: {why}")),
    };
    let reference = Reference::parse(text).map_err(|e| wrong(e.to_string()))?;
    if reference.tag.is_some() || reference.digest.is_some() {
        return Err(wrong(format!(
            "`{text}` names a tag or digest; give the repository alone and tags with --tag"
        )));
    }
    if !Reference::names_registry(text) {
        return Err(wrong(format!(
            "`{text}` names no registry host: write it in full, e.g. \
             123456789012.dkr.ecr.eu-west-1.amazonaws.com/{text}"
        )));
    }
    Ok(reference)
}

/// `--tag`s, else `$BUILD_NUMBER`, else the image's own tag; each a valid tag.
fn tags(flags: Vec<String>, image: &str) -> Result<Vec<String>> {
    let tags = match flags.is_empty() {
        false => flags,
        true => match std::env::var("BUILD_NUMBER").ok().filter(|n| !n.is_empty()) {
            Some(number) => vec![number],
            None => match image.rsplit_once(':') {
                Some((_, tag)) if !tag.contains('/') && !image.starts_with("sha256:") => {
                    vec![tag.to_string()]
                }
                _ => {
                    return Err(Error::Usage(format!(
                        "{image} has no tag to push: give --tag (or set $BUILD_NUMBER)"
                    )));
                }
            },
        },
    };
    if let Some(tag) = tags.iter().find(|tag| !crate::registry::is_valid_tag(tag)) {
        return Err(Error::Usage(format!(
            "--tag {tag}: a tag is 1–128 of [A-Za-z0-9_.-], not starting with . or -"
        )));
    }
    Ok(tags)
}
