//! Sandboxes as containers in the build machine's Docker (or this machine's, for the native
//! backend): `docker run --rm --network host` of the image with the handler as its command and
//! `AWS_LAMBDA_RUNTIME_API` pointing at the sandbox's Runtime API, which listens here and is
//! reached from the machine through an SSH remote forward bound to its loopback.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use russh::ChannelMsg;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{mpsc, oneshot, watch};

use super::{Launch, Launched, Launcher, RuntimeListener};
use crate::build_machine::Machine;
use crate::error::{Error, Result};
use crate::ssh::quote;

pub struct DockerLauncher {
    /// The build machine; `None` runs containers in this machine's Docker.
    machine: Machine,
    image: String,
    /// `--platform` of `docker run` (the function's architecture).
    platform: String,
    /// Container names start with it: `n10n-invoke-<pid>-`.
    prefix: String,
    /// Each launch's `docker run`, by container name: true once it has exited.
    gone: Mutex<HashMap<String, watch::Receiver<bool>>>,
    /// Where the machine's ports held by the sandboxes' forwards are claimed (see `own_ports`).
    own_ports: Option<PathBuf>,
}

/// How long `stop` keeps removing a container whose `docker run` has not exited.
const STOP_DEADLINE: Duration = Duration::from_secs(20);

/// The end of a launch: the pool hears how it ended, `stop` that its `docker run` exited.
struct Finish {
    ended: oneshot::Sender<String>,
    gone: watch::Sender<bool>,
}

impl Finish {
    fn send(self, how: String) {
        self.gone.send_replace(true);
        let _ = self.ended.send(how);
    }
}

impl DockerLauncher {
    pub fn new(
        machine: Machine,
        image: String,
        platform: String,
        own_ports: Option<PathBuf>,
    ) -> DockerLauncher {
        DockerLauncher {
            machine,
            image,
            platform,
            prefix: format!("n10n-invoke-{}-", std::process::id()),
            gone: Mutex::default(),
            own_ports,
        }
    }

    /// The `docker run` command line of a sandbox; its output all on stdout.
    fn run_line(&self, name: &str, launch: &Launch) -> String {
        let memory = format!("{}m", launch.memory_mb);
        let mut args: Vec<String> = [
            "docker",
            "run",
            "--rm",
            "--name",
            name,
            "--network",
            "host",
            "--memory",
            &memory,
            "--memory-swap",
            &memory,
            "--platform",
            &self.platform,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // The values reach the container only: `docker run` reads them as an env file from its
        // stdin (see `env_file`). In arguments they would show in every user's `ps`; set in the
        // shell that starts `docker`, a PATH or DOCKER_HOST among them would choose the docker
        // that runs and the daemon it talks to.
        args.extend(["--env-file".into(), "/dev/stdin".into()]);
        // As Lambda runs an image: nothing writable but /tmp (exec allowed, as there), and
        // Lambda's user, whatever the image's USER.
        if !launch.shape.as_root {
            args.extend([
                "--read-only".into(),
                "--tmpfs".into(),
                format!(
                    "/tmp:rw,exec,nosuid,nodev,size={}m,mode=1777",
                    launch.shape.ephemeral_storage_mb
                ),
                "--user".into(),
                super::LAMBDA_USER.into(),
            ]);
        }
        args.push(self.image.clone());
        args.extend(launch.handler.clone());
        format!("exec {} 2>&1", quote::join(&args))
    }

    /// Run a short shell command where the containers run; its stdout when it succeeded.
    async fn shell(&self, line: &str) -> Option<String> {
        let out = self.machine.capture(line).await.ok()?;
        (out.status == 0).then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The sandbox's environment as `docker run --env-file` reads it: `KEY=VALUE` a line, the value
/// taken as written (names are checked, and values hold no newline: see `lambda::check_env`).
fn env_file(env: &[(String, String)]) -> String {
    env.iter()
        .map(|(key, value)| format!("{key}={value}\n"))
        .collect()
}

impl Launcher for DockerLauncher {
    async fn listen(&self) -> Result<RuntimeListener> {
        match self.machine.session() {
            Some(session) => RuntimeListener::remote(
                session.listen_remote().await?,
                session.clone(),
                self.own_ports.as_deref(),
            ),
            None => RuntimeListener::local().await,
        }
    }

    async fn launch(&self, launch: Launch) -> Result<Launched> {
        let name = format!("{}{}", self.prefix, launch.sandbox);
        let line = self.run_line(&name, &launch);
        let (lines, receiver) = mpsc::unbounded_channel();
        let (ended, ended_receiver) = oneshot::channel();
        let (gone, gone_receiver) = watch::channel(false);
        let finish = Finish { ended, gone };
        {
            let mut launches = self.gone.lock().expect("not poisoned");
            launches.retain(|_, gone| !*gone.borrow());
            launches.insert(name.clone(), gone_receiver);
        }
        let env_file = env_file(&launch.env);
        match self.machine.session() {
            Some(session) => {
                let channel = session.open_exec(&line).await?;
                channel
                    .data(env_file.as_bytes())
                    .await
                    .map_err(|e| Error::Remote(format!("cannot start {name}: {e}")))?;
                let _ = channel.eof().await;
                tokio::spawn(follow_channel(channel, lines, finish));
            }
            None => {
                let mut child = tokio::process::Command::new("sh")
                    .args(["-c", &line])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|e| Error::io("cannot run docker", e))?;
                if let Some(mut stdin) = child.stdin.take() {
                    use tokio::io::AsyncWriteExt;
                    stdin
                        .write_all(env_file.as_bytes())
                        .await
                        .map_err(|e| Error::io("cannot start docker run", e))?;
                }
                let stdout = child.stdout.take();
                let stderr = child.stderr.take();
                tokio::spawn(async move {
                    let outputs = (
                        follow_lines(stdout, lines.clone()),
                        follow_lines(stderr, lines),
                    );
                    let (status, _, _) = tokio::join!(child.wait(), outputs.0, outputs.1);
                    let how = match status.map(|s| s.code()) {
                        Ok(Some(code)) => format!("exit status {code}"),
                        Ok(None) => "killed by a signal".to_string(),
                        Err(e) => e.to_string(),
                    };
                    finish.send(how);
                });
            }
        }
        Ok(Launched {
            name,
            lines: receiver,
            ended: ended_receiver,
        })
    }

    /// Remove the container, and again until its `docker run` has exited: an `rm` that comes
    /// while `docker run` is still creating the container finds nothing, and the container
    /// would outlive n10n-dev.
    async fn stop(&self, name: &str) {
        let line = format!(
            "docker rm -f {} >/dev/null 2>&1",
            quote::quote(name.as_bytes())
        );
        let gone = self.gone.lock().expect("not poisoned").remove(name);
        let Some(mut gone) = gone else {
            self.shell(&line).await;
            return;
        };
        let deadline = Instant::now() + STOP_DEADLINE;
        loop {
            self.shell(&line).await;
            let exited = tokio::time::timeout(Duration::from_secs(1), gone.wait_for(|g| *g));
            if exited.await.is_ok() || Instant::now() >= deadline {
                return;
            }
        }
    }

    async fn max_memory_mb(&self, name: &str) -> Option<u64> {
        // cgroup v1, then v2 under systemd, then v2 with Docker's cgroupfs driver.
        let line = format!(
            "id=$(docker inspect -f '{{{{.Id}}}}' {}) && \
             cat /sys/fs/cgroup/memory/docker/$id/memory.max_usage_in_bytes 2>/dev/null \
             || cat /sys/fs/cgroup/system.slice/docker-$id.scope/memory.peak 2>/dev/null \
             || cat /sys/fs/cgroup/docker/$id/memory.peak",
            quote::quote(name.as_bytes())
        );
        let bytes: u64 = self.shell(&line).await?.trim().parse().ok()?;
        Some(bytes.div_ceil(1 << 20))
    }
}

/// Pass an exec channel's output on by lines; report its exit.
async fn follow_channel(
    mut channel: russh::Channel<russh::client::Msg>,
    lines: mpsc::UnboundedSender<String>,
    finish: Finish,
) {
    let mut pending = Vec::new();
    let mut how = "the connection closed".to_string();
    while let Some(message) = channel.wait().await {
        match message {
            ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => {
                pending.extend_from_slice(&data);
                while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    let _ = lines.send(String::from_utf8_lossy(&line).trim_end().to_string());
                }
            }
            ChannelMsg::ExitStatus { exit_status } => how = format!("exit status {exit_status}"),
            ChannelMsg::ExitSignal { signal_name, .. } => {
                how = format!("signal {signal_name:?}");
            }
            _ => {}
        }
    }
    if !pending.is_empty() {
        let _ = lines.send(String::from_utf8_lossy(&pending).trim_end().to_string());
    }
    finish.send(how);
}

async fn follow_lines(
    output: Option<impl AsyncRead + Unpin>,
    lines: mpsc::UnboundedSender<String>,
) {
    let Some(output) = output else { return };
    let mut reader = BufReader::new(output).lines();
    while let Ok(Some(line)) = reader.next_line().await {
        let _ = lines.send(line);
    }
}
