//! The Docker Engine API, spoken by n10n-dev itself over a stream to the engine's socket: an
//! SSH direct-streamlocal channel to the build machine's `/var/run/docker.sock`, or the local
//! socket for the native backend. HTTP/1.1 on one kept-alive connection; only what `push`
//! needs (version, image inspect, tag, push with `X-Registry-Auth`).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request, Response, StatusCode, body::Incoming};
use hyper_util::rt::TokioIo;
use serde_json::Value;
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

    async fn over<S>(stream: S, place: String) -> Result<Engine>
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
        let mut body = response.into_body();
        if !status.is_success() {
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Err(self.refused(status, &json));
        }
        let mut pending = Vec::new();
        let mut pushed = Pushed::default();
        let mut failure = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| self.lost(&e.to_string()))?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            pending.extend_from_slice(data);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let Ok(message) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                read_push_message(&message, &mut pushed, &mut failure);
                news(&message);
            }
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

    fn lost(&self, why: &str) -> Error {
        Error::Other(format!("the connection to {} failed: {why}", self.place))
    }

    fn refused(&self, status: StatusCode, json: &Value) -> Error {
        let message = json["message"].as_str().unwrap_or("no message");
        Error::Other(format!("{} answered {status}: {message}", self.place))
    }
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
}
