//! The HTTP endpoints, one module each. [`router`] puts them together.

pub mod convert;
pub mod health;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use tracing::Instrument;

/// Every endpoint, each request in its own `request` span.
pub fn router() -> Router {
    Router::new()
        .route("/convert", post(convert::handle))
        .route("/healthz", get(health::handle))
        .layer(middleware::from_fn(trace))
}

async fn trace(request: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        status = tracing::field::Empty,
    );
    async move {
        let response = next.run(request).await;
        tracing::Span::current().record("status", response.status().as_u16());
        tracing::debug!("served");
        response
    }
    .instrument(span)
    .await
}
