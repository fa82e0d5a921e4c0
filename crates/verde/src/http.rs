//! The HTTP side: health, and the read side of call records. The CTI websocket and the web
//! pages join it with their issues.

use crate::sip_core::Engine;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use verde_store::Store;

#[derive(Clone)]
struct AppState {
    store: Arc<dyn Store>,
    engine: Arc<Engine>,
}

pub async fn start(
    listen: SocketAddr,
    store: Arc<dyn Store>,
    engine: Arc<Engine>,
) -> anyhow::Result<SocketAddr> {
    let app = Router::new()
        .route("/health", get(health))
        .route("/api/calls", get(calls))
        .route("/api/calls/{call_id}", get(call))
        .with_state(AppState { store, engine });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind HTTP {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "http server stopped");
        }
    });
    Ok(addr)
}

async fn health(State(s): State<AppState>) -> Response {
    let body = serde_json::json!({
        "status": if s.engine.is_draining() { "draining" } else { "ok" },
        "calls": s.engine.active_calls(),
    });
    let code = if s.engine.is_draining() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(body)).into_response()
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<usize>,
}

fn store_error(e: verde_store::StoreError) -> Response {
    tracing::error!(error = %e, "store read failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(serde_json::json!({ "error": e.to_string() })),
    )
        .into_response()
}

async fn calls(State(s): State<AppState>, Query(q): Query<ListQuery>) -> Response {
    let limit = q.limit.unwrap_or(50).min(1000);
    let store = s.store.clone();
    match tokio::task::spawn_blocking(move || store.recent_calls(limit)).await {
        Ok(Ok(list)) => Json(list).into_response(),
        Ok(Err(e)) => store_error(e),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn call(State(s): State<AppState>, Path(call_id): Path<String>) -> Response {
    let store = s.store.clone();
    match tokio::task::spawn_blocking(move || store.call(&call_id)).await {
        Ok(Ok(Some(rec))) => Json(rec).into_response(),
        Ok(Ok(None)) => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": "no record for that call (yet)" })),
        )
            .into_response(),
        Ok(Err(e)) => store_error(e),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
