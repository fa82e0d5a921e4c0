//! The HTTP side: health and metrics, the REST read side (described in `docs/openapi.json`),
//! the CTI websocket and the agents' and supervisors' pages.

use crate::sip_core::Engine;
use anyhow::Context;
use axum::extract::{ConnectInfo, Path, Query, State};
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
    // Read before anything binds, so a bad certificate stops the start with the file's name.
    let tls = match &engine.cfg.http.tls {
        Some(t) => Some(crate::tls::acceptor(&t.cert, &t.key, &[b"http/1.1"]).context("http.tls")?),
        None => None,
    };
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/calls", get(calls))
        .route("/api/calls/{call_id}", get(call))
        .route("/api/queues", get(queues))
        .route("/api/callbacks", get(callbacks).post(new_callback))
        .route("/api/callbacks/{id}", get(callback))
        .route("/api/voicemails", get(voicemails))
        .route("/api/tasks/late", get(late_tasks))
        .route("/api/agents", get(agents))
        .route("/api/openapi.json", get(openapi))
        .route("/cti", get(cti))
        .route("/webrtc", get(webrtc))
        .route("/call/{did}", get(call_page))
        .merge(crate::web::router())
        .with_state(AppState { store, engine });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind HTTP {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        None => {
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "http server stopped");
                }
            });
        }
        Some(acceptor) => {
            // `tap_io` only lends the TLS listener the peer-address plumbing axum gives its
            // wrappers, which `ConnectInfo<SocketAddr>` (per-address limits) reads.
            use axum::serve::ListenerExt;
            let listener = crate::tls::TlsListener::new(listener, acceptor)?.tap_io(|_| {});
            tracing::info!(listen = %addr, "HTTPS");
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "https server stopped");
                }
            });
        }
    }
    Ok(addr)
}

/// The REST side's description (OpenAPI 3.1), kept beside the code in `docs/`.
async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        include_str!("../../../docs/openapi.json"),
    )
        .into_response()
}

/// The CTI websocket: each connection gets its own task around a [`verde_cti::Session`].
async fn cti(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: axum::extract::ws::WebSocketUpgrade,
) -> Response {
    let engine = s.engine.clone();
    ws.max_message_size(64 * 1024)
        .max_frame_size(64 * 1024)
        .on_upgrade(move |socket| crate::cti::serve(socket, peer, engine))
}

/// The "call now" page, for numbers the flows answer.
async fn call_page(State(s): State<AppState>, Path(did): Path<String>) -> Response {
    if s.engine.webrtc.is_none() {
        return (StatusCode::NOT_FOUND, "browser calls are not enabled\n").into_response();
    }
    if s.engine.flows.for_number(&did).is_none() {
        return (
            StatusCode::NOT_FOUND,
            format!("{did} is not a number of this service\n"),
        )
            .into_response();
    }
    crate::web::call_page()
}

/// The "call now" page's signaling; refused when browser calls are off or the page comes
/// from a site not allowed to embed the service.
async fn webrtc(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    ws: axum::extract::ws::WebSocketUpgrade,
) -> Response {
    let Some(web) = s.engine.webrtc.as_ref() else {
        return (StatusCode::NOT_FOUND, "browser calls are not enabled").into_response();
    };
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &axum::http::HeaderValue| v.to_str().ok())
    };
    if !crate::web_call::origin_allowed(
        header(axum::http::header::ORIGIN),
        header(axum::http::header::HOST),
        &web.settings.allowed_origins,
    ) {
        tracing::warn!(%peer, origin = ?header(axum::http::header::ORIGIN), "web call socket refused: origin not allowed");
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    let engine = s.engine.clone();
    let client = SocketAddr::new(
        client_ip(peer.ip(), &headers, &engine.cfg.http.trusted_proxies),
        peer.port(),
    );
    ws.max_message_size(64 * 1024)
        .max_frame_size(64 * 1024)
        .on_upgrade(move |socket| crate::web_call::serve(socket, client, engine))
}

async fn health(State(s): State<AppState>) -> Response {
    // A failing store does not make verde unhealthy (calls go on, records are kept): it shows
    // here and in the log's ALARM lines, with a 200, so a load balancer keeps sending calls.
    let records = s.engine.records.health();
    let body = serde_json::json!({
        "status": if s.engine.is_draining() { "draining" } else { "ok" },
        "calls": s.engine.active_calls(),
        "store": if records.store_failing { "failing" } else { "ok" },
        "records_pending": records.pending,
        "records_spooled": records.spooled,
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
                "callers": q.callers.iter().map(|c| serde_json::json!({
                    "call": c.call.0,
                    "caller": c.caller,
                    "priority": c.priority,
                    "kind": match c.kind {
                        verde_acd::CallerKind::Live => "live",
                        verde_acd::CallerKind::Callback => "callback",
                    },
                    "position": c.position,
                    "waited_s": secs(c.waited + age),
                })).collect::<Vec<_>>(),
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
            let state = verde_cti::state_label(&a.state);
            let reason = match &a.state {
                verde_acd::AgentState::Paused { reason } => Some(reason.as_str()),
                _ => None,
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

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, verde_store::StoreError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(store_error(e)),
        Err(_) => Err(StatusCode::INTERNAL_SERVER_ERROR.into_response()),
    }
}

/// Pending and dialing callbacks, in line order.
async fn callbacks(State(s): State<AppState>) -> Response {
    let tasks = s.engine.tasks.clone();
    match blocking(move || tasks.pending_callbacks()).await {
        Ok(list) => Json(list).into_response(),
        Err(r) => r,
    }
}

async fn callback(State(s): State<AppState>, Path(id): Path<i64>) -> Response {
    let tasks = s.engine.tasks.clone();
    match blocking(move || tasks.callback(id)).await {
        Ok(Some(cb)) => Json(cb).into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct NewCallbackBody {
    queue: String,
    number: String,
    /// The service number the customer sees calling; one a flow answers.
    #[serde(default)]
    did: Option<String>,
}

/// Books a callback as the IVR would (for operators' tools and tests). Until the CTI brings
/// authenticated supervisors, only local clients may write.
/// The close frame for a websocket read that failed because the peer sent a frame or message
/// over our limit (1009, RFC 6455 7.4.1): the page then knows it was refused, not cut off.
pub fn too_big_close(e: &axum::Error) -> Option<axum::extract::ws::CloseFrame> {
    // tungstenite's capacity errors ("Space limit exceeded: ...") reach us only as text.
    e.to_string()
        .contains("Space limit exceeded")
        .then(|| axum::extract::ws::CloseFrame {
            code: 1009,
            reason: "message larger than 64 KiB".into(),
        })
}

/// The client's address: the TCP peer, or behind a trusted proxy the last address its
/// `X-Forwarded-For` chain adds that is not itself a trusted proxy.
pub fn client_ip(
    peer: std::net::IpAddr,
    headers: &axum::http::HeaderMap,
    trusted: &[ipnet::IpNet],
) -> std::net::IpAddr {
    let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let chain: Vec<std::net::IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    // Right to left: the nearest hops are ours; the first one that is not is the client (what
    // is further left was written by the client and proves nothing).
    chain
        .iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .copied()
        .unwrap_or(peer)
}

async fn new_callback(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    Json(body): Json<NewCallbackBody>,
) -> Response {
    // For a backend on this host, never through the public proxy: behind nginx every request
    // comes from loopback, but a proxied one says where it came from.
    if !peer.ip().is_loopback() || headers.contains_key("x-forwarded-for") {
        return (
            StatusCode::FORBIDDEN,
            "callbacks can be booked over HTTP from this host only",
        )
            .into_response();
    }
    let number: String = body
        .number
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '+')
        .collect();
    if number.len() < 3 || !s.engine.acd.has_queue(&body.queue) {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": "unknown queue or bad number"})),
        )
            .into_response();
    }
    if let Some(did) = &body.did {
        if s.engine.flows.for_number(did).is_none() {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({"error": "did is not a number of this service"})),
            )
                .into_response();
        }
    }
    let Some(qcfg) = s
        .engine
        .cfg
        .queues
        .iter()
        .find(|q| q.name == body.queue)
        .cloned()
    else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let now = crate::clock::now();
    let deadline =
        now + chrono::TimeDelta::from_std(s.engine.cfg.tasks.callback_sla).unwrap_or_default();
    let new = verde_store::NewCallback {
        queue: body.queue,
        number,
        caller_call_id: String::new(),
        did: body.did.unwrap_or_default(),
        requested_at_ms: now.timestamp_millis(),
        band: None,
        not_before_ms: now.timestamp_millis(),
        deadline_ms: deadline.timestamp_millis(),
        max_attempts: qcfg.callback.max_attempts,
        variables: Default::default(),
    };
    let tasks = s.engine.tasks.clone();
    match blocking(move || {
        let (id, created) = tasks.upsert_callback(&new)?;
        Ok((id, created, tasks.callback(id)?))
    })
    .await
    {
        Ok((id, created, cb)) => {
            tracing::info!(id, created, "callback booked over HTTP");
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (
                code,
                Json(serde_json::json!({
                    "id": id,
                    "created": created,
                    "requested_at_ms": cb.as_ref().map(|c| c.requested_at_ms),
                    "deadline_ms": cb.as_ref().map(|c| c.deadline_ms),
                })),
            )
                .into_response()
        }
        Err(r) => r,
    }
}

async fn voicemails(State(s): State<AppState>) -> Response {
    let tasks = s.engine.tasks.clone();
    match blocking(move || tasks.voicemails(&verde_store::VoicemailFilter::default())).await {
        Ok(list) => Json(list).into_response(),
        Err(r) => r,
    }
}

/// Callbacks and voicemails past their SLA deadline, earliest first.
async fn late_tasks(State(s): State<AppState>) -> Response {
    let tasks = s.engine.tasks.clone();
    let now = crate::clock::now_ms();
    match blocking(move || tasks.late_tasks(now)).await {
        Ok(list) => Json(
            list.into_iter()
                .map(|t| match t {
                    verde_store::Task::Callback(c) => {
                        serde_json::json!({"kind": "callback", "task": c})
                    }
                    verde_store::Task::Voicemail(v) => {
                        serde_json::json!({"kind": "voicemail", "task": v})
                    }
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(r) => r,
    }
}

/// Prometheus metrics (see `docs/metrics.md`): the live gauges from the ACD's last snapshot
/// and the store, then the process counters; OpenMetrics when the scraper asks for it.
async fn metrics(State(s): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    let format = crate::metrics::Format::negotiate(
        headers
            .get(axum::http::header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    );
    let snap = s.engine.acd.snapshot();
    let (taken, snap) = (&snap.0, &snap.1);
    let queues: Vec<String> = snap
        .queues
        .iter()
        .map(|q| q.name.as_str().to_string())
        .collect();
    let tasks = s.engine.tasks.clone();
    // On a store error (logged by `blocking`) the scrape still answers, without this metric.
    let callbacks_pending = blocking(move || {
        queues
            .into_iter()
            .map(|q| tasks.count_pending(&q).map(|n| (q, n)))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .ok();
    let live = crate::metrics::Live {
        calls_active: s.engine.active_calls(),
        registrations: s.engine.bindings.len(),
        callbacks_pending,
    };
    let body = crate::metrics::render(snap, taken.elapsed(), &live, format);
    (
        [(axum::http::header::CONTENT_TYPE, format.content_type())],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod client_ip_tests {
    use super::client_ip;
    use axum::http::HeaderMap;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_client_is_the_first_untrusted_hop_from_the_right() {
        let proxies = vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        let lo = "127.0.0.1".parse().unwrap();
        // Through nginx on this host: the address nginx saw.
        assert_eq!(
            client_ip(lo, &headers(&["203.0.113.9"]), &proxies),
            "203.0.113.9".parse::<std::net::IpAddr>().unwrap()
        );
        // A client that forges its own header is still judged by the hop nginx saw.
        assert_eq!(
            client_ip(lo, &headers(&["198.51.100.1, 203.0.113.9"]), &proxies),
            "203.0.113.9".parse::<std::net::IpAddr>().unwrap()
        );
        // Two proxies of ours, one header per hop.
        assert_eq!(
            client_ip(lo, &headers(&["203.0.113.9", "10.1.2.3"]), &proxies),
            "203.0.113.9".parse::<std::net::IpAddr>().unwrap()
        );
        // Not from a trusted proxy: the header is ignored.
        let peer = "192.0.2.50".parse().unwrap();
        assert_eq!(client_ip(peer, &headers(&["203.0.113.9"]), &proxies), peer);
        // No proxies configured: always the peer.
        assert_eq!(client_ip(lo, &headers(&["203.0.113.9"]), &[]), lo);
    }
}
