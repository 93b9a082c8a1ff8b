//! `GET /healthz`: 200 while the process serves.

pub async fn handle() -> &'static str {
    "ok"
}
