//! The Runtime API (2018-06-01) of one sandbox, as its runtime client sees it at
//! `AWS_LAMBDA_RUNTIME_API`: `/next` blocks until there is work, with the real headers;
//! `/response`, `/error` and `/init/error` answer `202 {"status":"OK"}`. Unknown request ids
//! get 400, posts in the wrong state 403, payloads over 6 MiB 413, as RIE answers them.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use super::sandbox::{Refusal, Sandbox, error_body};
use super::{Ending, Launcher, MAX_PAYLOAD, RuntimeListener};

const PREFIX: &str = "/2018-06-01/runtime/";

/// Serve the sandbox's Runtime API on every connection that arrives, until aborted.
pub(crate) async fn serve<L: Launcher>(mut listener: RuntimeListener, sandbox: Arc<Sandbox<L>>) {
    let host: Arc<str> = listener.address.clone().into();
    while let Some(connection) = listener.accept().await {
        let (sandbox, host) = (sandbox.clone(), host.clone());
        tokio::spawn(super::serve_http(connection, move |request| {
            handle(sandbox.clone(), host.clone(), request)
        }));
    }
}

async fn handle<L: Launcher>(
    sandbox: Arc<Sandbox<L>>,
    host: Arc<str>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    // Runtime clients address the API as AWS_LAMBDA_RUNTIME_API names it; a request for another
    // host (a web page's, through a name that resolves to loopback) is not theirs.
    let addressed = request.headers().get(hyper::header::HOST);
    if addressed.is_none_or(|h| h.as_bytes() != host.as_bytes()) {
        return Ok(reply(
            StatusCode::FORBIDDEN,
            error_body(
                "Forbidden",
                "this Runtime API answers its sandbox's runtime only",
            ),
        ));
    }
    let path = request.uri().path().to_string();
    let Some(route) = path.strip_prefix(PREFIX) else {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            error_body("NotFound", "no such path"),
        ));
    };
    let method = request.method().clone();
    let error_type = request
        .headers()
        .get("Lambda-Runtime-Function-Error-Type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("Unhandled")
        .to_string();
    let response = match (method, route.split('/').collect::<Vec<_>>().as_slice()) {
        (Method::GET, ["invocation", "next"]) => next(&sandbox).await,
        (Method::POST, ["invocation", id, kind @ ("response" | "error")]) => {
            let id = id.to_string();
            let is_error = *kind == "error";
            match read_body(request).await {
                Err(too_large) => {
                    // The caller gets Lambda's error for an oversized response.
                    let body = error_body(
                        "Function.ResponseSizeTooLarge",
                        &format!(
                            "Response payload size exceeded maximum allowed payload size ({MAX_PAYLOAD} bytes)."
                        ),
                    );
                    let _ = sandbox.complete(&id, Ending::FunctionError, body).await;
                    too_large
                }
                Ok(body) => {
                    let (ending, body) = match is_error {
                        true => (Ending::FunctionError, as_error_json(body, &error_type)),
                        false => (Ending::Response, body),
                    };
                    match sandbox.complete(&id, ending, body).await {
                        Ok(()) => accepted(),
                        Err(Refusal::UnknownRequest) => reply(
                            StatusCode::BAD_REQUEST,
                            error_body("InvalidRequestID", "Invalid request ID"),
                        ),
                        Err(Refusal::WrongState) => reply(
                            StatusCode::FORBIDDEN,
                            error_body("InvalidStateTransition", "State transition is not allowed"),
                        ),
                    }
                }
            }
        }
        (Method::POST, ["init", "error"]) => match read_body(request).await {
            Err(too_large) => too_large,
            Ok(body) => match sandbox.init_failed(as_error_json(body, &error_type)).await {
                true => accepted(),
                false => reply(
                    StatusCode::FORBIDDEN,
                    error_body(
                        "InvalidStateTransition",
                        "the runtime is initialised: /init/error is over",
                    ),
                ),
            },
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            error_body("NotFound", "no such path"),
        ),
    };
    Ok(response)
}

async fn next<L: Launcher>(sandbox: &Arc<Sandbox<L>>) -> Response<Full<Bytes>> {
    let Some(work) = sandbox.next().await else {
        return reply(
            StatusCode::GONE,
            error_body("SandboxEnded", "this sandbox has ended"),
        );
    };
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", "application/json")
        .header("Lambda-Runtime-Aws-Request-Id", &work.request_id)
        .header("Lambda-Runtime-Deadline-Ms", work.deadline_ms.to_string())
        .header(
            "Lambda-Runtime-Invoked-Function-Arn",
            sandbox.function.arn(),
        )
        .header("Lambda-Runtime-Trace-Id", &work.trace_id);
    if let Some(context) = &work.client_context {
        response = response.header("Lambda-Runtime-Client-Context", context);
    }
    response
        .body(Full::new(work.payload))
        .unwrap_or_else(|_| reply(StatusCode::INTERNAL_SERVER_ERROR, Bytes::new()))
}

/// The body, or the 413 answer when it is over the limit.
async fn read_body(request: Request<Incoming>) -> Result<Bytes, Response<Full<Bytes>>> {
    super::read_limited(request.into_body())
        .await
        .ok_or_else(|| {
            super::closing(reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                error_body(
                    "RequestEntityTooLarge",
                    &format!("Exceeded maximum allowed payload size ({MAX_PAYLOAD} bytes)."),
                ),
            ))
        })
}

/// A runtime's error post as `{"errorType","errorMessage",…}`, whatever it sent.
fn as_error_json(body: Bytes, error_type: &str) -> Bytes {
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(json) if json.is_object() => body,
        _ => error_body(error_type, String::from_utf8_lossy(&body).trim()),
    }
}

fn accepted() -> Response<Full<Bytes>> {
    reply(
        StatusCode::ACCEPTED,
        Bytes::from_static(b"{\"status\":\"OK\"}"),
    )
}

fn reply(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "Content-Type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}
