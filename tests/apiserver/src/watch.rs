//! `watch=true` streams: newline-delimited JSON `ADDED`/`MODIFIED`/`DELETED`/`BOOKMARK`/`ERROR`
//! events over a chunked HTTP/1.1 response, as the real API server sends them.
//!
//! A watch starts from `resourceVersion` (the events after it, from the store's history), or,
//! with no version or `0`, with synthetic `ADDED` events for the current objects. A version older
//! than the kept history gets a single `ERROR` event with a 410 `Expired` Status, and so does the
//! next watch after [`crate::Running::inject_gone`]. With `allowWatchBookmarks=true` a `BOOKMARK`
//! carrying the current version is sent every bookmark interval. `sendInitialEvents=true` is
//! supported: the current objects as `ADDED`, then a `BOOKMARK` annotated
//! `k8s.io/initial-events-end: "true"`. A watch ends after `timeoutSeconds`, on
//! [`crate::Running::drop_watches`], or when the client goes away. Label selector transitions
//! are reported as `ADDED`/`DELETED`, as on a real server. Objects are converted to the watched
//! version (by the CRD's conversion webhook when one is in effect, see `conversion`); an event
//! that cannot be converted becomes an `ERROR` event (500 `InternalError`) that ends the watch.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::Shared;
use crate::api_error::ApiError;
use crate::conversion::Converter;
use crate::resources::ResourceType;
use crate::selectors::Selector;
use crate::store::{Change, ChangeType, Signal};

/// What a watch request asked for.
pub struct WatchRequest {
    pub r: &'static ResourceType,
    pub namespace: Option<String>,
    pub selector: Selector,
    /// `None`: start with the current objects; `Some(n)`: the events after version `n`.
    pub from: Option<u64>,
    /// `sendInitialEvents=true` (implies starting with the current objects).
    pub initial_events: bool,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
}

/// Answers a watch request with an event stream.
pub fn serve(shared: Arc<Shared>, req: WatchRequest) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let snapshot = req.from.is_none() || req.initial_events;
    match shared.store.watch(req.r.storage_key(), req.from, snapshot) {
        Ok(start) => {
            tokio::spawn(run(shared.clone(), req, start, tx));
        }
        Err(err) => {
            // Like a real server: a 200 answer whose only event is the error.
            let _ = tx.try_send(Ok(line("ERROR", err.status())));
        }
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response()
}

fn line(kind: &str, object: Value) -> Bytes {
    let mut s = json!({"type": kind, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

async fn run(
    shared: Arc<Shared>,
    req: WatchRequest,
    start: crate::store::WatchStart,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
) {
    let mut rx = start.rx;
    let send = |b: Bytes| {
        let tx = tx.clone();
        async move { tx.send(Ok(b)).await.is_ok() }
    };
    for signal in start.backlog {
        match event(&shared, &req, &signal).await {
            Step::Send(b) => {
                if !send(b).await {
                    return;
                }
            }
            Step::Skip => continue,
            Step::End(b) => {
                send(b).await;
                return;
            }
        }
    }
    if req.initial_events && !send(bookmark(req.r, start.rv, true)).await {
        return;
    }
    let deadline = tokio::time::sleep(req.timeout.unwrap_or(Duration::from_secs(3600)));
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(shared.bookmark_interval);
    ticker.tick().await;
    loop {
        tokio::select! {
            signal = rx.recv() => {
                let Some(signal) = signal else { return };
                match event(&shared, &req, &signal).await {
                    Step::Send(b) => {
                        if !send(b).await {
                            return;
                        }
                    }
                    Step::Skip => {}
                    Step::End(b) => {
                        send(b).await;
                        return;
                    }
                }
            }
            _ = ticker.tick(), if req.bookmarks => {
                let (signals, rv) = shared.store.catch_up(&mut rx);
                for signal in &signals {
                    match event(&shared, &req, signal).await {
                        Step::Send(b) => {
                            if !send(b).await {
                                return;
                            }
                        }
                        Step::Skip => {}
                        Step::End(b) => {
                            send(b).await;
                            return;
                        }
                    }
                }
                if !send(bookmark(req.r, rv, false)).await {
                    return;
                }
            }
            _ = &mut deadline => return,
            _ = tx.closed() => return,
        }
    }
}

fn bookmark(r: &ResourceType, rv: u64, initial_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        json!({"kind": r.kind, "apiVersion": r.api_version(), "metadata": metadata}),
    )
}

/// What a signal becomes for one watch.
enum Step {
    /// Send this event line.
    Send(Bytes),
    /// Not visible to this watch.
    Skip,
    /// Send this `ERROR` event line, then end the watch.
    End(Bytes),
}

/// The event line a signal becomes for this watch, with the object at the watched version.
async fn event(shared: &Shared, req: &WatchRequest, signal: &Signal) -> Step {
    match signal {
        Signal::Error(err) => Step::End(line("ERROR", err.status())),
        Signal::Change(change) => {
            let Some(kind) = visible_as(req, change) else {
                return Step::Skip;
            };
            let converted = Converter::new(shared, req.r)
                .convert_one(change.object.clone(), req.r.version)
                .await;
            match converted {
                Ok(object) => Step::Send(line(kind, object)),
                Err(err) => Step::End(line("ERROR", err.status())),
            }
        }
    }
}

fn visible_as(req: &WatchRequest, c: &Change) -> Option<&'static str> {
    if req.namespace.as_ref().is_some_and(|ns| *ns != c.namespace) {
        return None;
    }
    let now = req.selector.matches(&c.object);
    let before = c.old.as_ref().is_some_and(|o| req.selector.matches(o));
    match (c.kind, before, now) {
        (ChangeType::Added, _, true) => Some("ADDED"),
        (ChangeType::Modified, true, true) => Some("MODIFIED"),
        (ChangeType::Modified, false, true) => Some("ADDED"),
        (ChangeType::Modified, true, false) => Some("DELETED"),
        (ChangeType::Deleted, _, true) => Some("DELETED"),
        _ => None,
    }
}

/// Parses `resourceVersion` for a watch: empty or `0` means "current state first".
pub fn parse_from(rv: Option<&str>) -> Result<Option<u64>, ApiError> {
    match rv {
        None | Some("") | Some("0") => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid resource version {v:?}"))),
    }
}
