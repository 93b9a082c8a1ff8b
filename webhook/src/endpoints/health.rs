//! `GET /healthz`: 200 while the process serves with a valid certificate, 503 once the
//! serving certificate has expired (the API server's calls then fail their TLS checks);
//! `GET /metrics`: the certificate's `notAfter`, for an alert before it comes.

use std::sync::Arc;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::tls::{ReloadingCert, unix_now};

/// The health answer, given the certificate served (if the server knows it).
pub async fn handle(cert: Option<Arc<ReloadingCert>>) -> Response {
    match cert.as_ref().and_then(|c| c.not_after()) {
        Some(not_after) if unix_now() > not_after => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the serving certificate expired at {not_after} (seconds since the epoch): renew it\n"
            ),
        )
            .into_response(),
        _ => "ok".into_response(),
    }
}

/// Prometheus text: `lanyard_webhook_certificate_not_after_seconds`.
pub async fn metrics(cert: Option<Arc<ReloadingCert>>) -> Response {
    let mut text = String::new();
    if let Some(not_after) = cert.as_ref().and_then(|c| c.not_after()) {
        text.push_str(
            "# HELP lanyard_webhook_certificate_not_after_seconds When the serving certificate expires (Unix time).\n",
        );
        text.push_str("# TYPE lanyard_webhook_certificate_not_after_seconds gauge\n");
        text.push_str(&format!(
            "lanyard_webhook_certificate_not_after_seconds {not_after}\n"
        ));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
