//! The Docker Engine API, spoken by n10n-dev itself over a stream to the engine's socket: an
//! SSH direct-streamlocal channel to the build machine's `/var/run/docker.sock`, or the local
//! socket for the native backend. HTTP/1.1 on one kept-alive connection; only what n10n-dev
//! needs: version, image inspect, tag and push with `X-Registry-Auth` (`push`), and the running
//! containers' published ports and their start/die events (the forwarder).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request, Response, StatusCode, body::Incoming};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::build_machine::Machine;
use crate::error::{Error, Result};

pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";

pub struct Engine {
    sender: SendRequest<Full<Bytes>>,
    /// Where the engine is, for messages.
    place: String,
}

/// What a finished push reported.
#[derive(Debug, Default)]
pub struct Pushed {
    pub digest: String,
    pub size: u64,
    /// Layers sent, and layers the registry already had (or mounted).
    pub sent: usize,
    pub present: usize,
}

impl Engine {
    /// The engine of the build machine.
    pub async fn connect(machine: &Machine) -> Result<Engine> {
        match machine.session() {
            Some(session) => {
                let stream = session.connect_unix(DOCKER_SOCKET).await?;
                Engine::over(
                    stream,
                    format!("the Docker engine on {}", session.endpoint()),
                )
                .await
            }
            None => {
                let path = local_socket();
                let stream = tokio::net::UnixStream::connect(&path).await.map_err(|e| {
                    Error::io(format!("cannot reach the Docker engine at {path}"), e)
                })?;
                Engine::over(stream, format!("the Docker engine at {path}")).await
            }
        }
    }

    /// The engine at the other end of `stream`, described as `place` in messages.
    pub async fn over<S>(stream: S, place: String) -> Result<Engine>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Error::Other(format!("cannot speak HTTP to {place}: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("engine connection ended: {e}");
            }
        });
        Ok(Engine { sender, place })
    }

    async fn request(
        &mut self,
        method: Method,
        path: &str,
        auth: Option<&str>,
    ) -> Result<Response<Incoming>> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("Host", "docker")
            .header("Content-Type", "application/json");
        if let Some(auth) = auth {
            request = request.header("X-Registry-Auth", auth);
        }
        // A body, even an empty object: old daemons read one before looking at the header.
        let request = request
            .body(Full::new(Bytes::from_static(b"{}")))
            .map_err(|e| Error::Other(format!("bad engine request {path}: {e}")))?;
        self.sender
            .ready()
            .await
            .map_err(|e| self.lost(&e.to_string()))?;
        self.sender
            .send_request(request)
            .await
            .map_err(|e| self.lost(&e.to_string()))
    }

    async fn json(&mut self, method: Method, path: &str) -> Result<(StatusCode, Value)> {
        let response = self.request(method, path, None).await?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.lost(&e.to_string()))?
            .to_bytes();
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    /// The engine's API version, `(1, 41)`.
    pub async fn api_version(&mut self) -> Result<(u32, u32)> {
        let (_, version) = self.json(Method::GET, "/version").await?;
        let text = version["ApiVersion"].as_str().unwrap_or("1.12");
        let (major, minor) = text.split_once('.').unwrap_or(("1", "12"));
        Ok((major.parse().unwrap_or(1), minor.parse().unwrap_or(12)))
    }

    /// `docker image inspect`, or `None` when there is no such image.
    pub async fn image(&mut self, name: &str) -> Result<Option<Value>> {
        let (status, json) = self
            .json(Method::GET, &format!("/images/{}/json", encode_path(name)))
            .await?;
        match status {
            StatusCode::OK => Ok(Some(json)),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(self.refused(s, &json)),
        }
    }

    /// `docker image ls -q --no-trunc`: the IDs of the engine's images.
    pub async fn image_ids(&mut self) -> Result<Vec<String>> {
        let (status, json) = self.json(Method::GET, "/images/json").await?;
        if !status.is_success() {
            return Err(self.refused(status, &json));
        }
        Ok(json
            .as_array()
            .map(|images| {
                images
                    .iter()
                    .filter_map(|image| image["Id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `docker tag IMAGE REPO:TAG`.
    pub async fn tag(&mut self, image: &str, repository: &str, tag: &str) -> Result<()> {
        let path = format!(
            "/images/{}/tag?repo={}&tag={}",
            encode_path(image),
            encode(repository),
            encode(tag)
        );
        let (status, json) = self.json(Method::POST, &path).await?;
        match status.is_success() {
            true => Ok(()),
            false => Err(self.refused(status, &json)),
        }
    }

    /// Push `repository:tag` with `auth` (the base64url `X-Registry-Auth`), telling `news` of
    /// each progress message. The API answers 200 whatever happens: the outcome is in the stream
    /// (an `error` line fails it, the `aux` line carries the digest).
    pub async fn push(
        &mut self,
        repository: &str,
        tag: &str,
        auth: &str,
        platform: Option<&str>,
        mut news: impl FnMut(&Value),
    ) -> Result<std::result::Result<Pushed, String>> {
        let mut path = format!(
            "/images/{}/push?tag={}",
            encode_path(repository),
            encode(tag)
        );
        if let Some(platform) = platform {
            path.push_str(&format!("&platform={}", encode(platform)));
        }
        let response = self.request(Method::POST, &path, Some(auth)).await?;
        let status = response.status();
        let body = response.into_body();
        if !status.is_success() {
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Err(self.refused(status, &json));
        }
        let mut pushed = Pushed::default();
        let mut failure = None;
        let mut messages = JsonLines::new(body);
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| self.lost(&e))?;
            read_push_message(&message, &mut pushed, &mut failure);
            news(&message);
        }
        if let Some(error) = failure {
            return Ok(Err(error));
        }
        if pushed.digest.is_empty() {
            return Ok(Err(
                "the engine's push ended without reporting a digest".into()
            ));
        }
        Ok(Ok(pushed))
    }

    /// The TCP ports running containers publish on the machine (`docker ps`'s PORTS), of all
    /// of them or of the one container `id`: the container, the address, the port.
    pub async fn published_ports(&mut self, id: Option<&str>) -> Result<Vec<Published>> {
        let path = match id {
            Some(id) => format!(
                "/containers/json?filters={}",
                encode(&serde_json::json!({ "id": [id] }).to_string())
            ),
            None => "/containers/json".to_string(),
        };
        let (status, json) = self.json(Method::GET, &path).await?;
        match status.is_success() {
            true => Ok(published_ports(&json)),
            false => Err(self.refused(status, &json)),
        }
    }

    /// Containers' start and die events from now on, as the engine sends them.
    pub async fn container_events(&mut self) -> Result<JsonLines> {
        // filters={"type":["container"],"event":["start","die"]}
        let path = format!(
            "/events?filters={}",
            encode(r#"{"type":["container"],"event":["start","die"]}"#)
        );
        let response = self.request(Method::GET, &path, None).await?;
        let status = response.status();
        if !status.is_success() {
            return Err(self.refused(status, &Value::Null));
        }
        Ok(JsonLines::new(response.into_body()))
    }

    fn lost(&self, why: &str) -> Error {
        Error::Other(format!("the connection to {} failed: {why}", self.place))
    }

    fn refused(&self, status: StatusCode, json: &Value) -> Error {
        let message = json["message"].as_str().unwrap_or("no message");
        Error::Other(format!("{} answered {status}: {message}", self.place))
    }
}

/// The messages of a streamed answer (push progress, events): one JSON document a line.
pub struct JsonLines {
    body: Incoming,
    pending: Vec<u8>,
}

impl JsonLines {
    fn new(body: Incoming) -> JsonLines {
        JsonLines {
            body,
            pending: Vec::new(),
        }
    }

    /// The next message; `None` when the answer ends, `Err` when the connection fails.
    pub async fn next(&mut self) -> Option<std::result::Result<Value, String>> {
        loop {
            while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                if let Ok(message) = serde_json::from_slice(&line) {
                    return Some(Ok(message));
                }
            }
            match self.body.frame().await? {
                Ok(frame) => {
                    if let Some(data) = frame.data_ref() {
                        self.pending.extend_from_slice(data);
                    }
                }
                Err(e) => return Some(Err(e.to_string())),
            }
        }
    }
}

/// A TCP port a running container publishes: the container's id, where the port is bound in
/// the machine (`0.0.0.0`, `::`, or an address of its own), and the port.
pub type Published = (String, IpAddr, u16);

/// The published TCP ports in a `GET /containers/json` answer.
fn published_ports(containers: &Value) -> Vec<Published> {
    let mut found = Vec::new();
    for container in containers.as_array().into_iter().flatten() {
        let id = container["Id"].as_str().unwrap_or_default();
        for port in container["Ports"].as_array().into_iter().flatten() {
            let public = port["PublicPort"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok());
            let (Some(public), Some("tcp")) = (public, port["Type"].as_str()) else {
                continue;
            };
            let ip = port["IP"]
                .as_str()
                .and_then(|ip| ip.parse().ok())
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            found.push((id.to_string(), ip, public));
        }
    }
    found.sort();
    found.dedup();
    found
}

fn read_push_message(message: &Value, pushed: &mut Pushed, failure: &mut Option<String>) {
    if let Some(error) = message["error"].as_str() {
        failure.get_or_insert_with(|| error.to_string());
    }
    if let Some(digest) = message["aux"]["Digest"].as_str() {
        pushed.digest = digest.to_string();
        pushed.size = message["aux"]["Size"].as_u64().unwrap_or(0);
    }
    match message["status"].as_str() {
        Some("Pushed") => pushed.sent += 1,
        Some("Layer already exists") => pushed.present += 1,
        Some(s) if s.starts_with("Mounted from") => pushed.present += 1,
        _ => {}
    }
}

/// The engine socket this machine's `docker` uses: `DOCKER_HOST=unix://…`, else the default.
fn local_socket() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|host| host.strip_prefix("unix://").map(str::to_string))
        .unwrap_or_else(|| DOCKER_SOCKET.to_string())
}

/// Percent-encode a query value: everything but RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    percent_encode(text, b"-._~")
}

/// Percent-encode an image name in a path, where the engine expects `/`, `:` and `@` as such.
fn encode_path(text: &str) -> String {
    percent_encode(text, b"-._~/:@")
}

fn percent_encode(text: &str, keep: &[u8]) -> String {
    text.bytes()
        .map(|b| match b.is_ascii_alphanumeric() || keep.contains(&b) {
            true => (b as char).to_string(),
            false => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_push_stream_is_read_for_its_outcome() {
        let mut pushed = Pushed::default();
        let mut failure = None;
        for line in [
            r#"{"status":"The push refers to repository [r/x]"}"#,
            r#"{"status":"Pushed","progressDetail":{},"id":"a"}"#,
            r#"{"status":"Layer already exists","progressDetail":{},"id":"b"}"#,
            r#"{"status":"Mounted from n10n/test","progressDetail":{},"id":"c"}"#,
            r#"{"progressDetail":{},"aux":{"Tag":"42","Digest":"sha256:f6","Size":523}}"#,
        ] {
            read_push_message(
                &serde_json::from_str(line).unwrap(),
                &mut pushed,
                &mut failure,
            );
        }
        assert_eq!((pushed.digest.as_str(), pushed.size), ("sha256:f6", 523));
        assert_eq!(
            (pushed.sent, pushed.present, failure.as_deref()),
            (1, 2, None)
        );
        let error = r#"{"errorDetail":{"message":"no basic auth credentials"},"error":"no basic auth credentials"}"#;
        read_push_message(
            &serde_json::from_str(error).unwrap(),
            &mut pushed,
            &mut failure,
        );
        assert_eq!(failure.as_deref(), Some("no basic auth credentials"));
        assert_eq!(encode("127.0.0.1:5000/a b"), "127.0.0.1%3A5000%2Fa%20b");
        assert_eq!(encode_path("127.0.0.1:5000/a b"), "127.0.0.1:5000/a%20b");
    }

    #[test]
    fn published_tcp_ports_are_read_from_the_container_list() {
        let list = serde_json::json!([
            {"Id": "a", "Ports": [
                {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
                {"IP": "::", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
                {"PrivatePort": 443, "Type": "tcp"},
                {"IP": "0.0.0.0", "PrivatePort": 53, "PublicPort": 5353, "Type": "udp"}
            ]},
            {"Id": "b", "Ports": [
                {"IP": "127.0.0.1", "PrivatePort": 5432, "PublicPort": 15432, "Type": "tcp"}
            ]},
            {"Id": "c", "Ports": null}
        ]);
        let shown: Vec<String> = published_ports(&list)
            .iter()
            .map(|(id, ip, port)| format!("{id} {ip} {port}"))
            .collect();
        assert_eq!(shown, ["a 0.0.0.0 8080", "a :: 8080", "b 127.0.0.1 15432"]);
    }
}
