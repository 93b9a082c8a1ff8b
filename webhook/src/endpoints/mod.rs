//! The HTTP endpoints, one module each. [`router`] puts them together.

pub mod convert;
pub mod health;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use tracing::Instrument;

use crate::tls::ReloadingCert;

/// Every endpoint, each request in its own `request` span.
pub fn router() -> Router {
    build(None)
}

/// [`router`], with `/healthz` failing once `cert` has expired and `/metrics` giving its
/// expiry.
pub fn router_with_certificate(cert: Arc<ReloadingCert>) -> Router {
    build(Some(cert))
}

fn build(cert: Option<Arc<ReloadingCert>>) -> Router {
    let for_health = cert.clone();
    Router::new()
        .route("/convert", post(convert::handle))
        .route("/healthz", get(move || health::handle(for_health.clone())))
        .route("/metrics", get(move || health::metrics(cert.clone())))
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
