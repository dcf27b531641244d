//! `invoke [IMAGE] [--handler H] [--event FILE|-] [--timeout S] [-e K=V]...`: run the image's
//! function once against n10n-dev's own Runtime API emulator, in the build machine's Docker;
//! `invoke --serve`: keep sandboxes warm behind the Lambda Invoke API on 127.0.0.1;
//! `invoke --serve --watch`: rebuild on each change to the project, and serve new invocations
//! from the new image while those in flight finish on the old one.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use clap::Args;
use tokio::net::TcpListener;

use super::Context;
use crate::error::{Error, Result};
use crate::image;
use crate::image_build::ImageBuild;
use crate::lambda::docker::DockerLauncher;
use crate::lambda::invoke_api::{self, Functions};
use crate::lambda::{Answer, Ending, Function, MAX_PAYLOAD, Pool, Request};
use crate::machine::BuiltImage;
use crate::sync::watch::Watch;

/// Exit code when Ctrl-C or SIGTERM ended a single invoke.
const INTERRUPTED: i32 = 130;

#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// The image in the build machine's Docker (default: what build-image built last)
    #[arg(value_name = "IMAGE")]
    pub image: Option<String>,

    /// The handler, passed as the container's command as Lambda's ImageConfig.Command is
    /// (default: [lambda] handler, else the image's CMD)
    #[arg(long, value_name = "H")]
    pub handler: Option<String>,

    /// The event: a JSON file, or - for standard input (default: {})
    #[arg(long, value_name = "FILE|-", conflicts_with = "serve")]
    pub event: Option<PathBuf>,

    /// Seconds an invocation may run, 1–900 (default: [lambda] timeout_s)
    #[arg(long, value_name = "S", value_parser = clap::value_parser!(u32).range(1..=900))]
    pub timeout: Option<u32>,

    /// Set KEY=VAL in the function's environment; a bare KEY passes the local value
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    pub env: Vec<String>,

    /// Keep sandboxes warm behind the Lambda Invoke API on 127.0.0.1, until Ctrl-C
    #[arg(long)]
    pub serve: bool,

    /// The Invoke API's port, with --serve
    #[arg(long, value_name = "P", default_value_t = 9000, requires = "serve")]
    pub port: u16,

    /// With --serve: build the image first (as build-image does), and again whenever the
    /// project changes; new invocations go to the new image
    #[arg(long, requires = "serve", conflicts_with = "image")]
    pub watch: bool,

    /// Run the function as root on a writable root filesystem, as the image says, not as
    /// Lambda runs it (read-only, /tmp the only writable place, a non-root user): for debugging
    #[arg(long)]
    pub as_root: bool,

    /// Sandboxes kept per function, with --serve
    #[arg(long, value_name = "N", default_value_t = 1, requires = "serve",
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub concurrency: u32,
}

pub async fn run(ctx: &Context, args: InvokeArgs) -> Result<i32> {
    let config = &ctx.project.config;
    let event = match args.serve {
        true => None,
        false => Some(read_event(args.event.as_deref())?),
    };
    let vm_dir = ctx.state.vm_dir(&config.vm.name)?;
    let watch = match args.watch {
        true => Some(Watch::new(&ctx.project.root, &config.sync.exclude)?),
        false => None,
    };
    let named = match args.watch {
        // The project as it is now, not as it was at the last build.
        true => {
            let built = ctx.build_image(ImageBuild::default()).await?;
            built.name().to_string()
        }
        false => image::given_or_last_built(args.image.clone(), &vm_dir)?,
    };
    let functions = functions(ctx, &args, &named)?;

    let BuiltImage {
        name: image,
        facts,
        machine,
    } = ctx.built_image(Some(named)).await?;
    let platform =
        image::runnable_platform(&machine, &image, &facts, &config.image.platform.0).await?;
    let own_ports = (!machine.is_local())
        .then(|| ctx.forwarder_paths().map(|p| p.own_ports))
        .transpose()?;
    let launcher = Arc::new(DockerLauncher::new(
        machine,
        image.clone(),
        platform,
        own_ports.clone(),
    ));
    match event {
        Some(payload) => {
            let function = functions.into_iter().next().expect("one function");
            invoke_once(Pool::new(function, launcher, 1, None), payload).await
        }
        None => {
            let rebuilds = watch.map(|watch| Rebuilds {
                watch,
                own_ports,
                image_id: facts.id.clone(),
            });
            serve(ctx, functions, launcher, &args, &image, rebuilds).await
        }
    }
}

/// The functions to run: the image's, as `lambda::functions` makes them from the configuration,
/// with `-e` on top.
fn functions(ctx: &Context, args: &InvokeArgs, image: &str) -> Result<Vec<Function>> {
    // SAM's `-e` is the event; here it sets a variable: a file given to it was meant as --event.
    if let Some(file) = args
        .env
        .iter()
        .find(|spec| !spec.contains('=') && std::path::Path::new(spec).is_file())
    {
        return Err(Error::Usage(format!(
            "-e {file}: -e sets an environment variable (KEY=VALUE); did you mean --event {file}?"
        )));
    }
    if args.serve && args.handler.is_some() && !ctx.project.config.lambda.functions.is_empty() {
        return Err(Error::Usage(
            "--handler and [lambda.functions] both name handlers: with [lambda.functions] \
             set, each function has its own"
                .into(),
        ));
    }
    let extra = super::parse_env(&args.env, |key| std::env::var(key).ok())?;
    if let Some((key, _)) = extra.iter().find(|(_, v)| !crate::config::is_one_line(v)) {
        return Err(Error::Usage(format!(
            "-e {key}: its value has more than one line, which a container's environment file \
             cannot hold"
        )));
    }
    Ok(crate::lambda::functions(
        &ctx.project.config.lambda,
        &function_name(image),
        crate::lambda::Overrides {
            handler: args.handler.clone(),
            timeout_s: args.timeout,
            env: extra,
            all_of_the_image: args.serve,
            as_root: args.as_root,
        },
    ))
}

/// `team/worker:dev` → `worker`.
fn function_name(image: &str) -> String {
    let repository = image
        .rsplit_once(':')
        .filter(|(_, t)| !t.contains('/'))
        .map_or(image, |(r, _)| r);
    let name = repository.rsplit('/').next().unwrap_or(repository);
    match name.is_empty() || name.starts_with("sha256") {
        true => "function".into(),
        false => name.to_string(),
    }
}

/// The event to send: the file, standard input, or `{}`; JSON of at most 6 MiB.
fn read_event(source: Option<&std::path::Path>) -> Result<Bytes> {
    let (text, named) = match source {
        None => return Ok(Bytes::from_static(b"{}")),
        Some(path) if path.as_os_str() == "-" => {
            let mut text = Vec::new();
            std::io::stdin()
                .read_to_end(&mut text)
                .map_err(|e| Error::io("cannot read the event from standard input", e))?;
            (text, "standard input".to_string())
        }
        Some(path) => (
            std::fs::read(path)
                .map_err(|e| Error::Usage(format!("--event {}: {e}", path.display())))?,
            path.display().to_string(),
        ),
    };
    if text.len() > MAX_PAYLOAD {
        return Err(Error::Usage(format!(
            "the event in {named} is {} bytes; Lambda takes at most {MAX_PAYLOAD}",
            text.len()
        )));
    }
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(&text) {
        return Err(Error::Usage(format!(
            "the event in {named} is not JSON: {e} (Lambda events are JSON documents)"
        )));
    }
    Ok(Bytes::from(text))
}

async fn invoke_once(pool: Arc<Pool<DockerLauncher>>, payload: Bytes) -> Result<i32> {
    let request = Request {
        payload,
        ..Request::default()
    };
    let answer = tokio::select! {
        answer = pool.invoke(request) => answer,
        () = interrupted() => {
            pool.shutdown().await;
            return Ok(INTERRUPTED);
        }
    };
    pool.shutdown().await;
    crate::stdout::write([&answer.body[..], b"\n"].concat())?;
    report_failure(&answer, pool.function());
    Ok(if answer.is_error() { 1 } else { 0 })
}

/// Say on stderr what went wrong, beyond the error JSON on stdout.
fn report_failure(answer: &Answer, function: &Function) {
    let error: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
    let what = format!(
        "{}: {}",
        error["errorType"].as_str().unwrap_or("error"),
        error["errorMessage"].as_str().unwrap_or_default()
    );
    let last_lines = || {
        let lines = answer
            .last_lines
            .iter()
            .filter(|l| !l.starts_with("REPORT ") && !l.starts_with("END "));
        lines
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    match answer.ending {
        Ending::Response | Ending::FunctionError => {}
        Ending::Timeout => eprintln!(
            "error: Task timed out after {:.2} seconds; the container was stopped",
            function.timeout.as_secs_f64()
        ),
        Ending::InitError => eprintln!(
            "error: the function did not start ({what}); its last lines:\n{}",
            last_lines()
        ),
        Ending::Crashed => eprintln!(
            "error: the function's runtime ended before it answered ({what}); its last lines:\n{}",
            last_lines()
        ),
    }
}

async fn serve(
    ctx: &Context,
    functions: Vec<Function>,
    launcher: Arc<DockerLauncher>,
    args: &InvokeArgs,
    image: &str,
    rebuilds: Option<Rebuilds>,
) -> Result<i32> {
    let listener = TcpListener::bind(("127.0.0.1", args.port))
        .await
        .map_err(|e| {
            Error::Other(format!(
                "cannot listen on 127.0.0.1:{}: {e} (choose another port with --port)",
                args.port
            ))
        })?;
    let named = !ctx.project.config.lambda.functions.is_empty();
    let serving = Arc::new(Functions::new(
        pools(&functions, &launcher, args.concurrency),
        !named,
    ));
    let names: Vec<String> = functions
        .iter()
        .map(|f| match &f.handler {
            Some(handler) => format!("{} ({handler})", f.name),
            None => f.name.clone(),
        })
        .collect();
    eprintln!(
        "invoke: serving {} from {image} on http://127.0.0.1:{}/2015-03-31/functions/{}/invocations \
         ({} sandbox(es) each){}; Ctrl-C stops",
        names.join(", "),
        args.port,
        if named { "<name>" } else { "<any name>" },
        args.concurrency,
        if rebuilds.is_some() {
            ", rebuilt on each change"
        } else {
            ""
        }
    );
    let retired = std::sync::Mutex::new(Vec::new());
    let rebuilding = async {
        match rebuilds {
            Some(rebuilds) => {
                rebuilds
                    .run(ctx, &functions, &serving, args.concurrency, &retired)
                    .await
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = invoke_api::serve(listener, serving.clone()) => {}
        () = rebuilding => {}
        () = interrupted() => {}
    }
    let retired: Vec<_> = std::mem::take(&mut *retired.lock().expect("not poisoned"));
    for pool in serving.pools().iter().chain(&retired) {
        pool.shutdown().await;
    }
    Ok(0)
}

/// A warm pool for each function, on `launcher`'s image.
fn pools(
    functions: &[Function],
    launcher: &Arc<DockerLauncher>,
    concurrency: u32,
) -> BTreeMap<String, Arc<Pool<DockerLauncher>>> {
    let several = functions.len() > 1;
    functions
        .iter()
        .map(|function| {
            let prefix = several.then(|| function.name.clone());
            let pool = Pool::new(
                function.clone(),
                launcher.clone(),
                concurrency as usize,
                prefix,
            );
            pool.warm();
            (function.name.clone(), pool)
        })
        .collect()
}

/// `--watch`: the project's changes, and what a rebuild needs.
struct Rebuilds {
    watch: Watch,
    own_ports: Option<PathBuf>,
    /// The image served now.
    image_id: String,
}

impl Rebuilds {
    /// On each change: rebuild, and when the image changed, serve new invocations from fresh
    /// sandboxes of it; the replaced pools go to `retired` while they finish. A failed build
    /// leaves the last good image serving.
    async fn run(
        mut self,
        ctx: &Context,
        functions: &[Function],
        serving: &Functions<DockerLauncher>,
        concurrency: u32,
        retired: &std::sync::Mutex<Vec<Arc<Pool<DockerLauncher>>>>,
    ) {
        loop {
            let changed = self.watch.changed().await;
            let started = std::time::Instant::now();
            eprintln!("invoke: {} changed: rebuilding", describe(&changed));
            let build = ImageBuild {
                quiet: true,
                ..ImageBuild::default()
            };
            let built = match ctx.build_image(build).await {
                Ok(built) => built,
                Err(e) => {
                    eprintln!(
                        "invoke: {e}\ninvoke: still serving {} (the last good build)",
                        short_id(&self.image_id)
                    );
                    continue;
                }
            };
            let took = format!(
                "rebuilt in {:.1} s (the build {:.1} s)",
                started.elapsed().as_secs_f64(),
                built.build_time.as_secs_f64()
            );
            if built.image.id == self.image_id {
                eprintln!("invoke: {took}: the image is the same");
                continue;
            }
            let platform = image::runnable_platform(
                &built.machine,
                &built.image.id,
                &built.image,
                &ctx.project.config.image.platform.0,
            )
            .await;
            let platform = match platform {
                Ok(platform) => platform,
                Err(e) => {
                    eprintln!("invoke: {took}, but it cannot run here: {e}");
                    continue;
                }
            };
            let launcher = Arc::new(DockerLauncher::new(
                built.machine,
                built.image.id.clone(),
                platform,
                self.own_ports.clone(),
            ));
            let replaced = serving.replace(pools(functions, &launcher, concurrency));
            let sandboxes: usize = replaced.iter().map(|pool| pool.sandboxes()).sum();
            for pool in replaced {
                retired.lock().expect("not poisoned").push(pool.clone());
                tokio::spawn(async move { pool.retire().await });
            }
            eprintln!(
                "invoke: {took}: {}; {sandboxes} sandbox(es) replaced",
                short_id(&built.image.id)
            );
            self.image_id = built.image.id;
        }
    }
}

/// `a.txt` or `src/main.rs and 3 more`.
fn describe(changed: &[String]) -> String {
    match changed {
        [] => "nothing".into(),
        [one] => one.clone(),
        [first, rest @ ..] => format!("{first} and {} more", rest.len()),
    }
}

/// `sha256:0123456789ab`.
fn short_id(id: &str) -> &str {
    &id[..id.len().min("sha256:".len() + 12)]
}

/// Ctrl-C or SIGTERM.
async fn interrupted() {
    match crate::signals::Stop::install() {
        Ok(mut stop) => {
            stop.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_are_named_after_the_image() {
        assert_eq!(function_name("worker:dev"), "worker");
        assert_eq!(function_name("127.0.0.1:5000/team/worker:7"), "worker");
        assert_eq!(function_name("sha256:abc"), "function");
    }
}
