//! The Lambda Invoke API on this machine's loopback, for serve mode:
//! `POST /2015-03-31/functions/{name}/invocations`, as boto3, the AWS CLI (`--endpoint-url`),
//! Step Functions Local and RIE-era scripts call it. Function errors, timeouts and crashes
//! answer 200 with `X-Amz-Function-Error: Unhandled`; `X-Amz-Invocation-Type: Event` answers
//! 202 and runs later; `X-Amz-Log-Type: Tail` returns the last 4 KB of logs.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, RwLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

use super::{Launcher, MAX_PAYLOAD, Pool};

/// The functions served, by name; with a single unnamed function, every name reaches it.
pub struct Functions<L: Launcher> {
    /// The pools serving each function; replaced whole when `--watch` rebuilt the image.
    by_name: RwLock<BTreeMap<String, Arc<Pool<L>>>>,
    any_name: bool,
}

impl<L: Launcher> Functions<L> {
    /// `any_name`: the one function answers whatever name a request gives.
    pub fn new(by_name: BTreeMap<String, Arc<Pool<L>>>, any_name: bool) -> Functions<L> {
        Functions {
            by_name: RwLock::new(by_name),
            any_name,
        }
    }

    fn find(&self, name: &str) -> Option<Arc<Pool<L>>> {
        let by_name = self.by_name.read().expect("not poisoned");
        match self.any_name {
            true => by_name.values().next().cloned(),
            false => by_name.get(name).cloned(),
        }
    }

    /// The pools now serving.
    pub fn pools(&self) -> Vec<Arc<Pool<L>>> {
        let by_name = self.by_name.read().expect("not poisoned");
        by_name.values().cloned().collect()
    }

    /// Serve new invocations from `by_name`; the pools it replaces, which still finish the
    /// invocations they took.
    pub fn replace(&self, by_name: BTreeMap<String, Arc<Pool<L>>>) -> Vec<Arc<Pool<L>>> {
        let mut serving = self.by_name.write().expect("not poisoned");
        std::mem::replace(&mut *serving, by_name)
            .into_values()
            .collect()
    }
}

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 256;
/// `Event` invocations waiting for a sandbox, per function; beyond it: 429, as Lambda's
/// `TooManyRequestsException`.
const MAX_QUEUED_EVENTS: usize = 1000;

/// The largest `X-Amz-Client-Context` Lambda takes, base64 included.
const MAX_CLIENT_CONTEXT: usize = 3583;

/// Serve the Invoke API on `listener` until the task is dropped.
pub async fn serve<L: Launcher>(listener: TcpListener, functions: Arc<Functions<L>>) {
    let port = listener.local_addr().map_or(0, |a| a.port());
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                crate::accept::pause_after("the Invoke API", &e).await;
                continue;
            }
        };
        let stream = crate::quick_ack::QuickAckStream::accepted(stream);
        let functions = functions.clone();
        tokio::spawn(async move {
            super::serve_http(stream, move |request| {
                handle(functions.clone(), port, request)
            })
            .await;
            drop(slot);
        });
    }
}

/// Whether a request may come from a web page rather than a program of the user's: a page
/// the user's browser shows can POST to 127.0.0.1 (its `Origin` says so), and through DNS
/// rebinding read the answer under a name of its own (its `Host` says so). Functions often
/// hold real AWS credentials; neither gets to run them.
fn refusal(headers: &HeaderMap, port: u16) -> Option<Response<Full<Bytes>>> {
    if headers.contains_key(hyper::header::ORIGIN) {
        return Some(service_error(
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            "requests from web pages (with an Origin header) are not served",
        ));
    }
    let host = headers
        .get(hyper::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let local = ["127.0.0.1", "localhost", "[::1]"]
        .iter()
        .any(|name| host == format!("{name}:{port}"));
    (!local).then(|| {
        service_error(
            StatusCode::MISDIRECTED_REQUEST,
            "AccessDeniedException",
            &format!("this server answers only to 127.0.0.1:{port} or localhost:{port}, not to Host {host:?}"),
        )
    })
}

async fn handle<L: Launcher>(
    functions: Arc<Functions<L>>,
    port: u16,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some(refused) = refusal(request.headers(), port) {
        return Ok(refused);
    }
    let path = request.uri().path().to_string();
    let name = path
        .strip_prefix("/2015-03-31/functions/")
        .and_then(|rest| rest.strip_suffix("/invocations"))
        .map(function_name);
    let (Some(name), &Method::POST) = (name, request.method()) else {
        return Ok(service_error(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            &format!(
                "{} {path} is not part of the Lambda Invoke API",
                request.method()
            ),
        ));
    };
    let Some(pool) = functions.find(&name) else {
        let pools = functions.pools();
        let known: Vec<&str> = pools.iter().map(|p| p.function().name.as_str()).collect();
        return Ok(service_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            &format!(
                "Function not found: {name} (served here: {})",
                known.join(", ")
            ),
        ));
    };
    let headers = request.headers().clone();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let Some(payload) = super::read_limited(request.into_body()).await else {
        return Ok(super::closing(service_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLargeException",
            &format!(
                "Request must be smaller than {MAX_PAYLOAD} bytes for the InvokeFunction operation"
            ),
        )));
    };
    let payload = match payload.is_empty() {
        true => Bytes::from_static(b"{}"),
        false => payload,
    };
    if serde_json::from_slice::<serde_json::Value>(&payload).is_err() {
        return Ok(service_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            "Could not parse request body into json",
        ));
    }
    let Ok(client_context) = client_context(&headers) else {
        return Ok(service_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            "Client context must be a valid Base64-encoded JSON object.",
        ));
    };
    let request = super::Request {
        payload,
        client_context,
        want_logs: header("X-Amz-Log-Type") == "Tail",
    };
    match header("X-Amz-Invocation-Type").as_str() {
        "Event" if pool.queued() >= MAX_QUEUED_EVENTS => Ok(service_error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequestsException",
            &format!("{MAX_QUEUED_EVENTS} invocations already wait for {name}"),
        )),
        "Event" => {
            let (request_id, _) = pool.submit(request);
            Ok(respond(StatusCode::ACCEPTED, &request_id, Bytes::new()))
        }
        "DryRun" => Ok(respond(StatusCode::NO_CONTENT, "", Bytes::new())),
        _ => {
            let answer = pool.invoke(request).await;
            let mut response = respond(StatusCode::OK, &answer.request_id, answer.body.clone());
            let headers = response.headers_mut();
            if answer.is_error() {
                headers.insert("X-Amz-Function-Error", "Unhandled".parse().expect("valid"));
            }
            if !answer.logs.is_empty()
                && let Ok(value) = STANDARD.encode(answer.logs.as_bytes()).parse()
            {
                headers.insert("X-Amz-Log-Result", value);
            }
            Ok(response)
        }
    }
}

/// `arn:aws:lambda:…:function:name:qualifier`, `name:qualifier` or `name` → `name`.
fn function_name(text: &str) -> String {
    let text = text.rsplit_once("function:").map_or(text, |(_, rest)| rest);
    text.split(':').next().unwrap_or(text).to_string()
}

/// The base64 `X-Amz-Client-Context` as the JSON the runtime header carries. Lambda refuses
/// anything but base64 of a JSON object of at most `MAX_CLIENT_CONTEXT` bytes; passed on, the
/// Java runtime client would fail the invocation on it.
fn client_context(headers: &HeaderMap) -> Result<Option<String>, ()> {
    let Some(encoded) = headers.get("X-Amz-Client-Context") else {
        return Ok(None);
    };
    if encoded.len() > MAX_CLIENT_CONTEXT {
        return Err(());
    }
    let decoded = STANDARD.decode(encoded.as_bytes()).map_err(|_| ())?;
    match serde_json::from_slice::<serde_json::Value>(&decoded) {
        Ok(serde_json::Value::Object(_)) => String::from_utf8(decoded).map(Some).map_err(|_| ()),
        _ => Err(()),
    }
}

fn respond(status: StatusCode, request_id: &str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert("Content-Type", "application/json".parse().expect("valid"));
    headers.insert("X-Amz-Executed-Version", "$LATEST".parse().expect("valid"));
    if !request_id.is_empty()
        && let Ok(id) = request_id.parse()
    {
        headers.insert("x-amzn-RequestId", id);
    }
    response
}

/// An error of the service itself (not of the function), as the real API shapes it.
fn service_error(status: StatusCode, kind: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "Type": "User", "message": message }).to_string();
    let mut response = respond(status, "", Bytes::from(body));
    if let Ok(kind) = kind.parse() {
        response.headers_mut().insert("x-amzn-ErrorType", kind);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_hosts_without_an_origin_are_served() {
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, value.parse().unwrap());
            }
            map
        };
        for host in ["127.0.0.1:9001", "localhost:9001", "[::1]:9001"] {
            assert!(
                refusal(&headers(&[("host", host)]), 9001).is_none(),
                "{host}"
            );
        }
        for host in [
            "evil.example:9001",
            "127.0.0.1:80",
            "127.0.0.1.nip.io:9001",
            "",
        ] {
            let refused = refusal(&headers(&[("host", host)]), 9001).expect(host);
            assert_eq!(refused.status(), StatusCode::MISDIRECTED_REQUEST);
        }
        let page = headers(&[
            ("host", "127.0.0.1:9001"),
            ("origin", "https://evil.example"),
        ]);
        assert_eq!(
            refusal(&page, 9001).unwrap().status(),
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn function_names_come_from_names_and_arns() {
        assert_eq!(function_name("harvester"), "harvester");
        assert_eq!(function_name("harvester:$LATEST"), "harvester");
        assert_eq!(
            function_name("arn:aws:lambda:eu-west-1:123456789012:function:harvester:7"),
            "harvester"
        );
    }
}
