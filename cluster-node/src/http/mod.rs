//! The node's HTTP server (`--http HOST:PORT`): the JSON API, the event stream, Prometheus
//! metrics and the live dashboard, as DESIGN.md lists them.
//!
//! It runs in the node's process beside its actors and asks them by message, like any
//! client would; any node answers for the whole cluster (job questions are forwarded to
//! the job's owner, the jobs list and the event stream gather every node's event hub).
//! Nothing a client sends can stop the node: every handler answers errors as JSON
//! `{"error": "..."}` with a 4xx/5xx status.

mod api;
mod history;

use std::net::SocketAddr;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use troupe_actors::NodeContext;

/// The dashboard: one self-contained page (no build step, nothing fetched from the internet).
const DASHBOARD: &str = include_str!("dashboard.html");

/// An error answer: a status and a message that says what to do.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": self.1 }));
        if self.0 == StatusCode::SERVICE_UNAVAILABLE {
            // Overloaded, draining, or a manager that did not answer: each passes soon,
            // so say when to come back (whole seconds are all `Retry-After` can say).
            return (self.0, [(axum::http::header::RETRY_AFTER, "1")], body).into_response();
        }
        (self.0, body).into_response()
    }
}

/// The routes, over the node's shared context.
pub fn router(ctx: NodeContext) -> Router {
    let history = history::History::follow(&ctx);
    Router::new()
        .route("/", get(|| async { Html(DASHBOARD) }))
        .route("/api/nodes", get(api::nodes))
        .route("/api/actors", get(api::actors))
        .route("/api/jobs", get(api::jobs).post(api::submit))
        .route("/api/jobs/batch", post(api::submit_batch))
        .route("/api/jobs/{id}", get(api::job))
        .route("/api/jobs/{id}/cancel", post(api::cancel))
        .route("/api/jobs/{id}/steps/{step}/resume", post(api::resume))
        .route("/api/events", get(api::events))
        .route(
            "/api/stats",
            get(move || {
                let h = history.clone();
                async move { Json(h.json()) }
            }),
        )
        .route("/metrics", get(api::metrics))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .method_not_allowed_fallback(|| async {
            ApiError(
                StatusCode::METHOD_NOT_ALLOWED,
                "this route does not take that method: GET reads, POST submits, cancels and resumes (see the README's HTTP API)".into(),
            )
        })
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "no such route; see GET /api/nodes, /api/jobs, /api/events, /metrics".into(),
            )
        })
        .layer(axum::middleware::map_response(count_response))
        // Bodies are read up to twice the job limit, so that a job somewhat over it gets
        // the JSON 413 that says the limit; beyond that axum refuses on its own.
        .layer(axum::extract::DefaultBodyLimit::max(
            2 * troupe_runtime::job::spec::MAX_JOB_BYTES as usize,
        ))
        .with_state(ctx)
}

async fn count_response(r: Response) -> Response {
    let class = match r.status().as_u16() {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::counter!(troupe_runtime::observe::metric::HTTP_REQUESTS, "status" => class)
        .increment(1);
    r
}

/// Why the HTTP server could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve HTTP on {addr}: {source}. Pick another --http address")]
pub struct HttpError {
    addr: String,
    source: std::io::Error,
}

/// Binds `addr` and serves the routes until the returned task is aborted.
pub async fn serve(
    addr: SocketAddr,
    ctx: NodeContext,
) -> Result<tokio::task::JoinHandle<()>, HttpError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError {
            addr: addr.to_string(),
            source,
        })?;
    let app = router(ctx);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    }))
}
