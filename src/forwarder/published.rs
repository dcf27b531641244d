//! The ports the machine's Docker publishes (`docker run -p`), followed through the engine's
//! own events: subscribed first, then the running containers listed; at a container's start
//! its ports are asked for, at its death they go, so that a published port is bound here as
//! `docker run` returns and released as the container ends. A new connection subscribes again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::ports::{Listening, Seen};
use super::serve::Link;
use crate::engine::{DOCKER_SOCKET, Engine};
use crate::error::{Error, Result};
use crate::ssh::Session;

/// How long to wait before subscribing again when the engine does not answer (no Docker yet,
/// or the connection is being made again).
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Tell `tell` of the published ports whenever a container starts or dies, for as long as the
/// follower listens.
pub(super) async fn watch(link: &Arc<Link>, tell: mpsc::Sender<Seen>) {
    let mut said = String::new();
    loop {
        let Some(session) = link.session().await else {
            continue;
        };
        // A connection that another took over drains: the subscription must not keep it.
        let followed = tokio::select! {
            followed = follow_events(&session, &tell) => followed,
            () = link.replaced(&session) => continue,
        };
        match followed {
            Ok(()) if tell.is_closed() => return,
            Ok(()) => {}
            Err(e) => {
                // Once per cause: a machine without Docker yet fails the same way every time.
                let now = e.to_string();
                if now != said {
                    eprintln!("forwarder: not following Docker's published ports: {now}");
                    said = now;
                }
            }
        }
        tokio::time::sleep(RETRY_AFTER).await;
    }
}

/// Follow the engine's events until they end (the connection closed) or fail.
async fn follow_events(session: &Session, tell: &mpsc::Sender<Seen>) -> Result<()> {
    let place = format!("the Docker engine on {}", session.endpoint());
    let mut events =
        Engine::over(session.connect_unix(DOCKER_SOCKET).await?, place.clone()).await?;
    // Subscribed before the first list, so that no start between the two is missed.
    let mut news = events.container_events().await?;
    let mut engine = Engine::over(session.connect_unix(DOCKER_SOCKET).await?, place).await?;
    // Each running container's published ports: a container's own event changes its own
    // entry (a list taken just after a "die" may still show the container as running).
    let mut by_container: BTreeMap<String, Vec<Listening>> = BTreeMap::new();
    for (id, ip, port) in engine.published_ports(None).await? {
        by_container
            .entry(id)
            .or_default()
            .push(Listening { ip, port });
    }
    loop {
        let published: Vec<Listening> = by_container.values().flatten().copied().collect();
        if tell.send(Seen::Published(published)).await.is_err() {
            return Ok(());
        }
        let event = match news.next().await {
            Some(Ok(event)) => event,
            Some(Err(e)) => return Err(Error::Other(e)),
            None => return Ok(()),
        };
        let Some(id) = event["Actor"]["ID"].as_str().or(event["id"].as_str()) else {
            continue;
        };
        match event["Action"].as_str().or(event["status"].as_str()) {
            Some("start") => {
                let ports = engine.published_ports(Some(id)).await?;
                let ports = ports
                    .into_iter()
                    .map(|(_, ip, port)| Listening { ip, port });
                by_container.insert(id.to_string(), ports.collect());
            }
            _ => {
                by_container.remove(id);
            }
        }
    }
}
