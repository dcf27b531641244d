//! Behaviour chosen by the handler argument (the container's CMD, as Lambda's ImageConfig.Command
//! sets it): `echo` answers with the event and the context it saw; `fail` returns an error;
//! `sleep` sleeps past any deadline; `init-panic` panics before serving; `echo` also exits the
//! process when the event says `"crash": true`; `big` answers 7 MiB. With N10N_TEST_RECORD set,
//! each event is appended to that file (for invocations nobody waits for).

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let handler = std::env::args().nth(1).unwrap_or_else(|| "echo".into());
    eprintln!("lambda-fn: starting handler {handler}");
    if handler == "init-panic" {
        panic!("lambda-fn: init failed on purpose");
    }
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let handler = handler.clone();
        async move { handle(&handler, event).await }
    }))
    .await
}

async fn handle(handler: &str, event: LambdaEvent<Value>) -> Result<Value, Error> {
    let (payload, context) = event.into_parts();
    eprintln!("lambda-fn: {handler} got {payload}");
    if let Ok(record) = std::env::var("N10N_TEST_RECORD") {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(record)?;
        writeln!(file, "{payload}")?;
    }
    match handler {
        "fail" => Err("the function failed on purpose".into()),
        "sleep" => {
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
            Ok(Value::Null)
        }
        "big" => Ok(json!({ "data": "x".repeat(7 << 20) })),
        // Who the function runs as, and where it may write.
        "sandbox" => {
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            let id = |field: &str| {
                status.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.split_whitespace().next()).unwrap_or_default().to_string()
            };
            let write = |path: &str| match std::fs::write(path, "x") {
                Ok(()) => "written".to_string(),
                Err(e) => e.to_string(),
            };
            Ok(json!({
                "uid": id("Uid:"),
                "gid": id("Gid:"),
                "root": write("/written-by-the-function"),
                "tmp": write("/tmp/written-by-the-function"),
            }))
        }
        _ if payload["crash"] == true => std::process::exit(3),
        _ => {
            let remaining = context.deadline().duration_since(std::time::SystemTime::now()).map(|d| d.as_millis()).unwrap_or(0);
            Ok(json!({
                "event": payload,
                "request_id": context.request_id,
                "function_arn": context.invoked_function_arn,
                "remaining_ms": remaining,
                "function_name": std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_default(),
                "memory": std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").unwrap_or_default(),
                "handler": handler,
                "custom": std::env::var("N10N_TEST_VAR").unwrap_or_default(),
                "tz": std::env::var("TZ").unwrap_or_default(),
                "client_custom": context.client_context.map(|c| c.custom),
            }))
        }
    }
}
