//! The Lambda Invoke API on this machine's loopback, for serve mode:
//! `POST /2015-03-31/functions/{name}/invocations`, as boto3, the AWS CLI (`--endpoint-url`),
//! Step Functions Local and RIE-era scripts call it. Function errors, timeouts and crashes
//! answer 200 with `X-Amz-Function-Error: Unhandled`; `X-Amz-Invocation-Type: Event` answers
//! 202 and runs later; `X-Amz-Log-Type: Tail` returns the last 4 KB of logs.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

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
    pub by_name: BTreeMap<String, Arc<Pool<L>>>,
    pub any_name: bool,
}

impl<L: Launcher> Functions<L> {
    fn find(&self, name: &str) -> Option<&Arc<Pool<L>>> {
        match self.any_name {
            true => self.by_name.values().next(),
            false => self.by_name.get(name),
        }
    }
}

/// Serve the Invoke API on `listener` until the task is dropped.
pub async fn serve<L: Launcher>(listener: TcpListener, functions: Arc<Functions<L>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let stream = crate::ssh::QuickAckStream::accepted(stream);
        let functions = functions.clone();
        tokio::spawn(super::serve_http(stream, move |request| {
            handle(functions.clone(), request)
        }));
    }
}

async fn handle<L: Launcher>(
    functions: Arc<Functions<L>>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
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
        let known: Vec<&str> = functions.by_name.keys().map(String::as_str).collect();
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
    let request = super::Request {
        payload,
        client_context: client_context(&headers),
        want_logs: header("X-Amz-Log-Type") == "Tail",
    };
    match header("X-Amz-Invocation-Type").as_str() {
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

/// The base64 `X-Amz-Client-Context` as the JSON the runtime header carries.
fn client_context(headers: &HeaderMap) -> Option<String> {
    let encoded = headers.get("X-Amz-Client-Context")?.to_str().ok()?;
    let decoded = STANDARD.decode(encoded).ok()?;
    String::from_utf8(decoded).ok()
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
    fn function_names_come_from_names_and_arns() {
        assert_eq!(function_name("harvester"), "harvester");
        assert_eq!(function_name("harvester:$LATEST"), "harvester");
        assert_eq!(
            function_name("arn:aws:lambda:eu-west-1:123456789012:function:harvester:7"),
            "harvester"
        );
    }
}
