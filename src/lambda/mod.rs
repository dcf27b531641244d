//! The Lambda side of `invoke`: a Runtime API emulator (2018-06-01) that container images'
//! own runtime clients talk to (`runtime_api`), sandboxes that run one invocation at a time
//! (`sandbox`), pools of them per function (`pool`), the Lambda Invoke API in front
//! (`invoke_api`), and the Docker launcher that starts the containers (`docker`).

pub mod docker;
pub mod invoke_api;
mod peer;
pub mod pool;
mod runtime_api;
mod sandbox;

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};

use crate::error::Result;
use crate::ssh::RemoteListener;

pub use pool::Pool;

/// The largest payload in either direction, as Lambda's synchronous invoke and RIE allow:
/// 6 MiB and 100 bytes.
pub const MAX_PAYLOAD: usize = 6 * 1024 * 1024 + 100;
/// Lambda gives a function's initialisation 10 s before it starts again within the invoke.
const INIT_GRACE: Duration = Duration::from_secs(10);

/// One function of the image: its name, handler and limits.
#[derive(Debug, Clone)]
pub struct Function {
    pub name: String,
    /// The CMD override (ImageConfig.Command); `None`: the image's own CMD.
    pub handler: Option<String>,
    pub timeout: Duration,
    pub memory_mb: u32,
    /// The environment the function sees, Lambda's reserved variables included.
    pub env: Vec<(String, String)>,
    pub region: String,
    pub sandbox: SandboxShape,
}

/// How a function's sandbox is made: as Lambda runs a container image (a read-only root
/// filesystem, `/tmp` the only writable place, a non-root user), or as the image says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxShape {
    /// Root, and a writable root filesystem (`invoke --as-root`, for debugging).
    pub as_root: bool,
    /// The size of `/tmp`.
    pub ephemeral_storage_mb: u32,
}

/// The user and group Lambda runs a container image's function as (`sbx_user1051`, as functions
/// observe it; AWS documents "a default non-root user").
pub const LAMBDA_USER: &str = "993:990";

/// What `invoke`'s command line changes in the configured functions.
#[derive(Debug, Default)]
pub struct Overrides {
    pub handler: Option<String>,
    pub timeout_s: Option<u32>,
    /// On top of `[lambda] env`.
    pub env: Vec<(String, String)>,
    /// Every function of `[lambda.functions]` (serving), rather than the image's one.
    pub all_of_the_image: bool,
    /// Run as root on a writable root filesystem (`--as-root`).
    pub as_root: bool,
}

/// The functions of an image: every `[lambda.functions]` entry when `all_of_the_image` and the
/// table is set, else the one function (named `name`) with the handler given, `[lambda] handler`
/// or the image's CMD. Each sees Lambda's reserved variables, `[lambda] env`, then `env`.
pub fn functions(
    config: &crate::config::LambdaConfig,
    name: &str,
    overrides: Overrides,
) -> Vec<Function> {
    let timeout = Duration::from_secs(overrides.timeout_s.unwrap_or(config.timeout_s).into());
    let region = ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "us-east-1".into());
    let function = |name: &str, handler: Option<String>| {
        let mut env: std::collections::BTreeMap<String, String> =
            Function::lambda_env(name, config.memory_mb, &region)
                .into_iter()
                .collect();
        env.extend(config.env.clone());
        env.extend(overrides.env.clone());
        Function {
            name: name.to_string(),
            handler,
            timeout,
            memory_mb: config.memory_mb,
            env: env.into_iter().collect(),
            region: region.clone(),
            sandbox: SandboxShape {
                as_root: overrides.as_root,
                ephemeral_storage_mb: config.ephemeral_storage_mb,
            },
        }
    };
    if overrides.all_of_the_image && !config.functions.is_empty() {
        return config
            .functions
            .iter()
            .map(|(name, handler)| function(name, Some(handler.clone())))
            .collect();
    }
    let handler = overrides
        .handler
        .clone()
        .or_else(|| Some(config.handler.clone()).filter(|h| !h.is_empty()));
    vec![function(name, handler)]
}

impl Function {
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:lambda:{}:000000000000:function:{}",
            self.region, self.name
        )
    }

    /// Lambda's reserved variables for this function, before `[lambda] env` and `-e`.
    pub fn lambda_env(name: &str, memory_mb: u32, region: &str) -> Vec<(String, String)> {
        let stream = format!(
            "{}/[$LATEST]{}",
            crate::time::date(crate::time::now()).replace('-', "/"),
            &random_hex(16)
        );
        [
            ("AWS_LAMBDA_FUNCTION_NAME", name.to_string()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mb.to_string()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_string()),
            ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_string()),
            ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
            ("AWS_LAMBDA_LOG_STREAM_NAME", stream),
            ("AWS_REGION", region.to_string()),
            ("AWS_DEFAULT_REGION", region.to_string()),
            ("LAMBDA_TASK_ROOT", "/var/task".to_string()),
            ("LAMBDA_RUNTIME_DIR", "/var/runtime".to_string()),
            ("TZ", ":UTC".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// An invocation as a caller makes it.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub payload: Bytes,
    /// The caller's client context, JSON (the Invoke API's header carries it base64).
    pub client_context: Option<String>,
    /// Keep the invocation's log lines for the answer (`X-Amz-Log-Type: Tail`).
    pub want_logs: bool,
}

/// How an invocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Response,
    /// The function reported an error (`/error`), or its response was too large.
    FunctionError,
    Timeout,
    /// The runtime failed to initialise (`/init/error`, or it ended before asking for work).
    InitError,
    /// The runtime ended while it had the invocation.
    Crashed,
}

/// What an invocation answered, with Lambda's accounting.
#[derive(Debug, Clone)]
pub struct Answer {
    pub request_id: String,
    pub ending: Ending,
    /// The response, or the error as JSON (`errorType`, `errorMessage`).
    pub body: Bytes,
    /// The invocation's log lines, when asked for.
    pub logs: String,
    /// The sandbox's last log lines, for errors that need them.
    pub last_lines: Vec<String>,
    pub report: Report,
}

impl Answer {
    pub fn is_error(&self) -> bool {
        self.ending != Ending::Response
    }
}

/// The numbers of Lambda's REPORT line.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub request_id: String,
    pub duration: Duration,
    /// Set on a cold start: from the sandbox's launch to its runtime's first `/next`.
    pub init: Option<Duration>,
    pub memory_mb: u32,
    pub max_memory_mb: Option<u64>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        write!(
            f,
            "REPORT RequestId: {}\tDuration: {:.2} ms\tBilled Duration: {} ms\tMemory Size: {} MB",
            self.request_id,
            ms(self.duration),
            ms(self.duration).ceil().max(1.0) as u64,
            self.memory_mb
        )?;
        if let Some(used) = self.max_memory_mb {
            write!(f, "\tMax Memory Used: {used} MB")?;
        }
        if let Some(init) = self.init {
            write!(f, "\tInit Duration: {:.2} ms", ms(init))?;
        }
        Ok(())
    }
}

/// Starts and stops sandboxes' runtimes: containers on the build machine (`docker`), or, in
/// tests, plain processes.
pub trait Launcher: Send + Sync + 'static {
    /// Where a sandbox's Runtime API listens, reachable from where its runtime will run.
    fn listen(&self) -> impl Future<Output = Result<RuntimeListener>> + Send;
    /// Start a runtime with `AWS_LAMBDA_RUNTIME_API` and the function's environment set.
    fn launch(&self, launch: Launch) -> impl Future<Output = Result<Launched>> + Send;
    /// Stop the runtime `name` (and remove what it leaves behind).
    fn stop(&self, name: &str) -> impl Future<Output = ()> + Send;
    /// The most memory the runtime `name` has used, in MB, when that can be read.
    fn max_memory_mb(&self, name: &str) -> impl Future<Output = Option<u64>> + Send;
}

/// What a launcher starts: one sandbox's runtime.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Unique among the sandboxes of this run (`harvester-3`).
    pub sandbox: String,
    pub handler: Option<String>,
    pub memory_mb: u32,
    /// `AWS_LAMBDA_RUNTIME_API` and the function's environment.
    pub env: Vec<(String, String)>,
    pub shape: SandboxShape,
}

/// A started runtime: its name for `stop`, its output by lines, and its end.
pub struct Launched {
    pub name: String,
    pub lines: mpsc::UnboundedReceiver<String>,
    /// How it ended ("exit status 3"), once it has.
    pub ended: oneshot::Receiver<String>,
}

/// A byte stream a Runtime API connection arrives on.
pub trait Connection: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Connection for T {}

type Accepting<'a> = Pin<Box<dyn Future<Output = Option<Box<dyn Connection>>> + Send + 'a>>;

/// Where a sandbox's Runtime API is served.
pub struct RuntimeListener {
    /// The value of `AWS_LAMBDA_RUNTIME_API` (`127.0.0.1:port`, as the runtime sees it).
    pub address: String,
    incoming: Incoming,
    /// The machine's port, claimed as n10n-dev's own while the forward lives.
    _claim: Option<crate::own_ports::Claim>,
}

enum Incoming {
    Tcp(tokio::net::TcpListener),
    /// On the build machine, whose connections are let in only from the sandbox's users, as
    /// the machine tells (its answers start beside the container's start).
    Remote(RemoteListener, Peers),
}

impl RuntimeListener {
    /// A TCP listener on this machine's loopback, for runtimes that run here.
    pub async fn local() -> Result<RuntimeListener> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| crate::error::Error::io("cannot listen on 127.0.0.1", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| crate::error::Error::io("cannot listen on 127.0.0.1", e))?
            .port();
        Ok(RuntimeListener {
            address: format!("127.0.0.1:{port}"),
            incoming: Incoming::Tcp(listener),
            _claim: None,
        })
    }

    /// A port on the build machine's loopback, forwarded here over SSH; claimed in
    /// `own_ports` (see `own_ports`) so that the forwarder leaves it alone. Any user of the
    /// machine can connect to its loopback: a connection is let in only from a socket of the
    /// sandbox's users, as a process that `session` starts on the machine tells (see `peer`).
    pub fn remote(
        listener: RemoteListener,
        session: std::sync::Arc<crate::ssh::Session>,
        own_ports: Option<&Path>,
    ) -> Result<RuntimeListener> {
        let claim = own_ports
            .map(|dir| crate::own_ports::claim(dir, listener.port))
            .transpose()?;
        Ok(RuntimeListener {
            address: format!("127.0.0.1:{}", listener.port),
            incoming: Incoming::Remote(listener, Peers::Starting(peer::Oracle::start(session))),
            _claim: claim,
        })
    }

    fn accept(&mut self) -> Accepting<'_> {
        Box::pin(async move {
            match &mut self.incoming {
                Incoming::Tcp(listener) => loop {
                    match listener.accept().await {
                        Ok((stream, _)) => {
                            let stream = crate::quick_ack::QuickAckStream::accepted(stream);
                            return Some(Box::new(stream) as Box<dyn Connection>);
                        }
                        Err(e) => crate::accept::pause_after("the Runtime API", &e).await,
                    }
                },
                Incoming::Remote(listener, peers) => loop {
                    let (stream, from) = listener.accept().await?;
                    let asked = std::time::Instant::now();
                    let verdict = peers.allowed(from, listener.port).await;
                    tracing::debug!(
                        "who connected from {from}: answered in {:?}",
                        asked.elapsed()
                    );
                    match verdict {
                        Ok(()) => return Some(Box::new(stream) as Box<dyn Connection>),
                        Err(why) => eprintln!("invoke: a Runtime API connection refused: {why}"),
                    }
                },
            }
        })
    }
}

/// The machine's answers about who connects, once they can be had.
enum Peers {
    Starting(tokio::task::JoinHandle<std::result::Result<peer::Oracle, String>>),
    Ready(peer::Oracle),
    Failed(String),
}

impl Peers {
    async fn allowed(&mut self, from: u16, port: u16) -> std::result::Result<(), String> {
        if let Peers::Starting(start) = self {
            *self = match start.await {
                Ok(Ok(oracle)) => Peers::Ready(oracle),
                Ok(Err(why)) => Peers::Failed(why),
                Err(e) => Peers::Failed(e.to_string()),
            };
        }
        match self {
            Peers::Ready(oracle) => oracle.allowed(from, port).await,
            Peers::Failed(why) => Err(why.clone()),
            Peers::Starting(_) => Err("still asking the machine".into()),
        }
    }
}

const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serve HTTP/1.1 on one connection with `handle` until the client goes.
async fn serve_http<F, Fut>(connection: impl Connection, handle: F)
where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Send + 'static,
    Fut: Future<
            Output = std::result::Result<
                hyper::Response<http_body_util::Full<Bytes>>,
                std::convert::Infallible,
            >,
        > + Send
        + 'static,
{
    let service = hyper::service::service_fn(handle);
    // A client that opens a connection and never finishes its headers does not hold it forever.
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(hyper_util::rt::TokioIo::new(connection), service)
        .await
    {
        tracing::debug!("HTTP connection: {e}");
    }
}

/// A request body of at most `MAX_PAYLOAD` bytes; `None` when it is larger. The excess is
/// read and dropped (up to `DRAIN_LIMIT`) so that the client gets the answer rather than a
/// reset connection; the answer closes the connection all the same (see `closing`).
async fn read_limited(mut body: hyper::body::Incoming) -> Option<Bytes> {
    use http_body_util::BodyExt;
    const DRAIN_LIMIT: usize = 32 << 20;
    let mut kept = bytes::BytesMut::new();
    let mut total = 0;
    while let Some(frame) = body.frame().await {
        // A body cut off midway is no body; the client is gone anyway.
        let Ok(data) = frame.ok()?.into_data() else {
            continue;
        };
        total += data.len();
        if total <= MAX_PAYLOAD {
            kept.extend_from_slice(&data);
        } else if total > MAX_PAYLOAD + DRAIN_LIMIT {
            break;
        }
    }
    (total <= MAX_PAYLOAD).then(|| kept.freeze())
}

/// `response` with `Connection: close`, for answers given before the request body was read:
/// the client must not send its next request on this connection.
fn closing(
    mut response: hyper::Response<http_body_util::Full<Bytes>>,
) -> hyper::Response<http_body_util::Full<Bytes>> {
    response.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    response
}

/// Lowercase hex of `bytes` random bytes.
fn random_hex(bytes: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    // Ids, not secrets: std's randomly keyed SipHash over a counter, no I/O on the invoke path.
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hex = String::with_capacity(bytes * 2 + 16);
    while hex.len() < bytes * 2 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        hex.push_str(&format!("{:016x}", hasher.finish()));
    }
    hex.truncate(bytes * 2);
    hex
}

/// A request id in UUID form, as Lambda's.
fn request_id() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// An X-Ray trace header for one invocation.
fn trace_id() -> String {
    let seconds = crate::time::now();
    format!(
        "Root=1-{seconds:08x}-{};Parent={};Sampled=0",
        random_hex(12),
        random_hex(8)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_read_as_lambda_s() {
        let report = Report {
            request_id: "r".into(),
            duration: Duration::from_micros(2_631),
            init: Some(Duration::from_micros(45_200)),
            memory_mb: 1024,
            max_memory_mb: Some(12),
        };
        assert_eq!(
            report.to_string(),
            "REPORT RequestId: r\tDuration: 2.63 ms\tBilled Duration: 3 ms\tMemory Size: 1024 MB\tMax Memory Used: 12 MB\tInit Duration: 45.20 ms"
        );
        let id = request_id();
        assert_eq!((id.len(), &id[14..15], &id[19..20]), (36, "4", "a"));
        assert_ne!(id, request_id());
        assert_eq!(random_hex(12).len(), 24);
        assert!(trace_id().starts_with("Root=1-"));
    }
}
