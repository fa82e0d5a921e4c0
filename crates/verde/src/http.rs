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
        .route("/api/queues", get(queues))
        .route("/api/agents", get(agents))
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

fn secs(d: std::time::Duration) -> f64 {
    (d.as_millis() as f64) / 1000.0
}

/// Live queue state from the ACD's last published snapshot (never from the dispatcher itself).
async fn queues(State(s): State<AppState>) -> Response {
    let snap = s.engine.acd.snapshot();
    let (taken, snap) = (&snap.0, &snap.1);
    let age = taken.elapsed();
    let list: Vec<_> = snap
        .queues
        .iter()
        .map(|q| {
            serde_json::json!({
                "name": q.name.as_str(),
                "waiting": q.waiting,
                "offering": q.offering,
                "longest_wait_s": q.longest_wait.map(|d| secs(d + age)),
                "estimated_wait_s": q.estimated_wait.map(secs),
                "handle_time_s": secs(q.handle_time),
                "agents_logged_in": q.agents_logged_in,
                "agents_ready": q.agents_ready,
                "callers": q.callers.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(list).into_response()
}

async fn agents(State(s): State<AppState>) -> Response {
    let snap = s.engine.acd.snapshot();
    let (taken, snap) = (&snap.0, &snap.1);
    let age = taken.elapsed();
    let list: Vec<_> = snap
        .agents
        .iter()
        .map(|a| {
            let (state, reason) = match &a.state {
                verde_acd::AgentState::Paused { reason } => {
                    ("paused".to_string(), Some(reason.clone()))
                }
                other => (format!("{other:?}").to_lowercase(), None),
            };
            serde_json::json!({
                "id": a.id.as_str(),
                "name": a.name,
                "state": state,
                "pause_reason": reason,
                "in_state_s": secs(a.in_state + age),
                "current_call": a.current_call.map(|c| c.0),
                "calls_handled": a.calls_handled,
                "missed": a.missed,
                "queues": a.queues.iter().map(|q| q.as_str()).collect::<Vec<_>>(),
                "registered": s.engine.bindings.contains_key(a.id.as_str()),
            })
        })
        .collect();
    Json(list).into_response()
}
