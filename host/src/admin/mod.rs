//! The admin HTTP API (`[admin] listen`, default `127.0.0.1:9464`): health
//! checks, Prometheus metrics, plugin status, and pause/resume per plugin.
//!
//! | route | answers |
//! | --- | --- |
//! | `GET /` | the dashboard: a page listing the plugins, refreshed by polling `/plugins`, with pause/resume buttons |
//! | `GET /health/live` | 200 while the process serves requests (liveness) |
//! | `GET /health/ready` | 200 once the broker was reached and the plugins loaded; 503 while starting or stopping (readiness) |
//! | `GET /health` | `Healthy`/`Degraded`/`Unhealthy` with a check each for kafka, cache, plugins, consumption, the backends' circuit breakers and the owned schedule partitions (seed 004's shape); 503 when unhealthy |
//! | `GET /metrics` | Prometheus / OpenMetrics text |
//! | `GET /plugins`, `GET /plugins/{name}` | status, counters, in-flight events, partitions and lag |
//! | `POST /plugins/{name}/pause`, `.../resume` | stop / restart fetching for that plugin (in-flight events finish; the consumer stays in its group) |
//! | `GET /plugins/{name}/offsets`, `POST .../offsets/reset`, `.../offsets/rewind`, `.../workers` | its group's offsets, moved on every host; its workers changed on every host: see [`operate`] |
//! | `GET /plugins/{name}/dead-letters`, `POST .../dead-letters/replay` | its newest dead letters; replay some (see [`operate`]) |
//! | `GET /plugins/{name}/history` | the last hour at 5 s: handled, retried, dead-lettered per second, lag per partition (see [`history`]) |
//!
//! With an admin token set, routes outside `[admin] open` need it: see [`auth`].
//! No request waits on the supervisor: see [`view`].

pub mod auth;
pub mod client;
pub mod control;
pub mod history;
pub mod metrics;
pub mod offsets;
mod operate;
pub mod view;

use crate::capabilities::breaker::BreakerState;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use view::{HostView, Phase};

/// How long a health check waits for the broker or the cache.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct AppState {
    view: Arc<HostView>,
    registry: Arc<Registry>,
    auth: Arc<auth::Auth>,
    /// The last broker and cache checks of `/health`, and when they were made.
    probes: Arc<tokio::sync::Mutex<Option<(std::time::Instant, Value, Value)>>>,
    history: Arc<history::History>,
}

/// How long `/health` answers from its last broker and cache checks: each
/// costs a metadata request and a `PING`, and a client polling `/health` in a
/// loop must not turn into load on both. Callers meanwhile wait for the one
/// check in flight instead of starting their own.
const PROBE_FRESH: Duration = Duration::from_secs(2);

/// A running admin server.
pub struct AdminServer {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    sampler: tokio::task::JoinHandle<()>,
}

/// The admin API could not listen.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot listen on admin.listen = {listen:?}: {source}; set another address in [admin] listen (WEIR_ADMIN__LISTEN), or enabled = false")]
    Bind {
        listen: String,
        source: std::io::Error,
    },
}

impl AdminServer {
    /// Bind `listen` and serve `view`. A bind failure is an error that says which
    /// key to change.
    pub async fn start(
        listen: &str,
        auth: auth::Auth,
        view: Arc<HostView>,
    ) -> Result<AdminServer, AdminError> {
        let bind_error = |source| AdminError::Bind {
            listen: listen.to_string(),
            source,
        };
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        let mut registry = metrics::registry(view.clone());
        // Every route group from the start at 0, so the series exist before a refusal.
        for route in auth::ROUTE_GROUPS {
            let _ = auth
                .refused
                .get_or_create(&vec![("route".to_string(), route.to_string())]);
        }
        registry.register(
            "weir_admin_unauthorized_requests",
            "Admin API requests refused for a missing or wrong bearer token, by route group",
            auth.refused.clone(),
        );
        let protected = auth.has_token();
        let auth = Arc::new(auth);
        let admin = &view.config().admin;
        let history = Arc::new(history::History::new(
            admin.history_interval,
            admin.history_length,
        ));
        let sampler = history::spawn(history.clone(), view.clone());
        let state = AppState {
            registry: Arc::new(registry),
            view,
            auth: auth.clone(),
            probes: Arc::default(),
            history,
        };
        let app = router(state).layer(axum::middleware::from_fn_with_state(auth, auth::layer));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "admin API stopped");
            }
        });
        tracing::info!(
            address = %format!("http://{addr}"),
            token = if protected { "required" } else { "none" },
            "admin API listening (/health, /metrics, /plugins)"
        );
        Ok(AdminServer {
            addr,
            stop,
            task,
            sampler,
        })
    }

    /// The address it listens on (the real port when `listen` asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn stop(self) {
        self.sampler.abort();
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/health/live", get(|| async { "ok\n" }))
        .route("/health/ready", get(ready))
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/plugins", get(plugins))
        .route("/plugins/{name}", get(plugin))
        .route("/plugins/{name}/pause", post(pause))
        .route("/plugins/{name}/resume", post(resume))
        .route("/plugins/{name}/offsets", get(operate::show))
        .route("/plugins/{name}/offsets/reset", post(operate::reset))
        .route("/plugins/{name}/offsets/rewind", post(operate::rewind))
        .route("/plugins/{name}/workers", post(operate::workers))
        .route("/plugins/{name}/dead-letters", get(operate::dead_letters))
        .route("/plugins/{name}/history", get(plugin_history))
        .route("/plugins/{name}/dead-letters/replay", post(operate::replay))
        .with_state(state)
}

/// The dashboard: every plugin with its state, version, lag, in-flight events,
/// rates, last error and a pause/resume button; rendered here, then kept fresh by
/// a little JavaScript polling `/plugins` (no build step, nothing fetched from
/// elsewhere). Its rows are rendered only for who may read `/plugins`.
async fn dashboard(State(s): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let (rows, message) = if s.auth.allows("/plugins", authorization) {
        let rows: String = s
            .view
            .plugins()
            .values()
            .map(|v| dashboard_row(&v.report()))
            .collect();
        (rows, String::new())
    } else {
        (
            String::new(),
            "This host needs its admin token to show plugins: enter it above.".to_string(),
        )
    };
    let page = include_str!("dashboard.html")
        .replace("{{rows}}", &rows)
        .replace("{{message}}", &escape(&message));
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
}

fn dashboard_row(r: &view::PluginReport) -> String {
    let s = &r.status;
    let error = r
        .last_error
        .as_ref()
        .map(|e| format!("{} {}: {}", e.at, e.event, e.error))
        .or_else(|| s.reason.clone())
        .unwrap_or_default();
    let action = if r.paused { "Resume" } else { "Pause" };
    format!(
        "<tr data-plugin=\"{name}\"><td class=\"name\">{name}</td><td class=\"state state-{state}\">{state}</td>\
         <td>{hash}</td><td class=\"num lag\">{lag}</td><td class=\"num in-flight\">{in_flight}</td>\
         <td class=\"num handled\">–</td><td class=\"num\">–</td><td class=\"num\">–</td>\
         <td class=\"num workers\">{workers}</td><td class=\"delivery\">{delivery}</td><td class=\"error\">{error}</td><td><button type=\"button\">{action}</button></td></tr>",
        delivery = escape(s.delivery.as_deref().unwrap_or("–")),
        name = escape(&s.name),
        state = escape(&s.state),
        hash = escape(s.sha256.as_deref().map_or("–", |h| &h[..12.min(h.len())])),
        lag = r.lag,
        in_flight = r.in_flight,
        workers = r.workers,
        error = escape(&error),
    )
}

/// Text safe inside HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn ready(State(s): State<AppState>) -> Response {
    let phase = s.view.phase();
    let code = if phase == Phase::Running {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(json!({ "status": phase.as_str() }))).into_response()
}

fn check(healthy: bool, degraded: bool, description: String, data: Value) -> Value {
    let status = if !healthy {
        "Unhealthy"
    } else if degraded {
        "Degraded"
    } else {
        "Healthy"
    };
    json!({ "status": status, "description": description, "data": data })
}

/// Ask the broker and the cache whether they answer (for `/health`).
async fn probe(view: &HostView) -> (Value, Value) {
    let kafka = match view.check_broker(CHECK_TIMEOUT).await {
        Ok(brokers) => check(
            true,
            false,
            format!("{brokers} broker(s) answered"),
            json!({}),
        ),
        Err(e) => check(
            false,
            false,
            format!("the broker did not answer: {e}"),
            json!({}),
        ),
    };
    let cache = view.cache();
    let cache = match tokio::time::timeout(CHECK_TIMEOUT, cache.ping()).await {
        Ok(Ok(())) => check(
            true,
            false,
            format!("{} answered", cache.describe()),
            json!({}),
        ),
        Ok(Err(e)) => check(
            true,
            true,
            format!("cache calls fail (events are retried): {e}"),
            json!({}),
        ),
        Err(_) => check(
            true,
            true,
            format!("{} did not answer in time", cache.describe()),
            json!({}),
        ),
    };
    (kafka, cache)
}

async fn health(State(s): State<AppState>) -> Response {
    let (kafka, cache) = {
        let mut last = s.probes.lock().await;
        match &*last {
            Some((at, kafka, cache)) if at.elapsed() < PROBE_FRESH => {
                (kafka.clone(), cache.clone())
            }
            _ => {
                let (kafka, cache) = probe(&s.view).await;
                *last = Some((std::time::Instant::now(), kafka.clone(), cache.clone()));
                (kafka, cache)
            }
        }
    };
    let plugins = s.view.plugins();
    let states: serde_json::Map<String, Value> = plugins
        .iter()
        .map(|(name, v)| (name.clone(), Value::from(v.report().status.state)))
        .collect();
    let troubled: Vec<&String> = states
        .iter()
        .filter(|(_, st)| *st == "rejected" || *st == "rolled-back")
        .map(|(n, _)| n)
        .collect();
    let failed: Vec<&String> = states
        .iter()
        .filter(|(_, st)| *st == "failed")
        .map(|(n, _)| n)
        .collect();
    let plugins = check(
        failed.is_empty(),
        !troubled.is_empty(),
        if !failed.is_empty() {
            format!("failed, not consuming until started again: {failed:?} (see GET /plugins)")
        } else if troubled.is_empty() {
            format!("{} plugin(s)", states.len())
        } else {
            format!("rejected or rolled back: {troubled:?} (see GET /plugins)")
        },
        Value::Object(states),
    );
    let stalls: serde_json::Map<String, Value> = s
        .view
        .plugins()
        .iter()
        .filter_map(|(name, v)| {
            let problems = v.source.as_ref()?.problems();
            (!problems.is_empty()).then(|| (name.clone(), Value::from(problems)))
        })
        .collect();
    let consumption = check(
        true,
        !stalls.is_empty(),
        if stalls.is_empty() {
            "every assigned partition makes progress".to_string()
        } else {
            format!(
                "partitions with lag and no progress (kafka.consumer.stall_timeout): {}",
                stalls.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        },
        Value::Object(stalls),
    );
    let breakers: Vec<_> = s.view.guards().breakers().map(|b| b.status()).to_vec();
    let tripped: Vec<String> = breakers
        .iter()
        .filter(|b| b.state != BreakerState::Closed)
        .map(|b| format!("{} ({})", b.backend, b.state.as_str()))
        .collect();
    let breakers = check(
        true,
        !tripped.is_empty(),
        if tripped.is_empty() {
            "every backend's circuit breaker is closed".to_string()
        } else {
            format!(
                "circuit breaker not closed: {}; their calls fail as unavailable and events are retried",
                tripped.join(", ")
            )
        },
        json!(breakers),
    );
    let owned = s.view.deletions().owned();
    let schedule = check(
        true,
        false,
        format!(
            "owns {} schedule partition(s) ({} read up to their end), {} deletion(s) pending",
            owned.len(),
            owned.iter().filter(|p| p.ready).count(),
            owned.iter().map(|p| p.pending).sum::<usize>()
        ),
        json!(owned),
    );
    let starting = s.view.phase() != Phase::Running;
    let checks = json!({
        "kafka": kafka,
        "cache": cache,
        "plugins": plugins,
        "consumption": consumption,
        "breakers": breakers,
        "schedule": schedule,
    });
    let worst = ["Unhealthy", "Degraded"]
        .into_iter()
        .find(|w| {
            checks
                .as_object()
                .unwrap()
                .values()
                .any(|c| c["status"] == *w)
        })
        .unwrap_or(if starting { "Degraded" } else { "Healthy" });
    let code = if worst == "Unhealthy" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = json!({ "status": worst, "phase": s.view.phase().as_str(), "checks": checks });
    (code, Json(body)).into_response()
}

async fn metrics_text(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics::render(&s.registry),
    )
        .into_response()
}

async fn plugins(State(s): State<AppState>) -> Response {
    let list: Vec<_> = s.view.plugins().values().map(|v| v.report()).collect();
    Json(list).into_response()
}

fn unknown(name: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": format!("no plugin named {name:?} (GET /plugins lists them)") })),
    )
        .into_response()
}

async fn plugin(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    match s.view.plugin(&name) {
        Some(v) => Json(v.report()).into_response(),
        None => unknown(&name),
    }
}

async fn plugin_history(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    if s.view.plugin(&name).is_none() {
        return unknown(&name);
    }
    let points = s.history.points(&name).unwrap_or_default();
    Json(json!({
        "plugin": name,
        "interval_ms": s.history.interval().as_millis() as u64,
        "points": points,
    }))
    .into_response()
}

async fn set_paused(s: &AppState, name: &str, paused: bool) -> Response {
    let Some(v) = s.view.plugin(name) else {
        return unknown(name);
    };
    let was = v.paused.swap(paused, Ordering::SeqCst);
    if was != paused {
        tracing::info!(plugin = %name, "{} through the admin API", if paused { "pause" } else { "resume" });
    }
    Json(v.report()).into_response()
}

async fn pause(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    set_paused(&s, &name, true).await
}

async fn resume(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    set_paused(&s, &name, false).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::MemoryCache;

    #[tokio::test]
    async fn a_port_in_use_is_an_error_naming_the_key() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let listen = taken.local_addr().unwrap().to_string();
        let config = crate::config::Config::from_figment(
            figment::Figment::new().merge(figment::providers::Serialized::default(
                "kafka.bootstrap_servers",
                "127.0.0.1:9",
            )),
            std::path::Path::new("weir.toml"),
        )
        .unwrap();
        let backends = crate::capabilities::Backends::new(
            Arc::new(MemoryCache::new(1024 * 1024)),
            Arc::new(object_store::memory::InMemory::new()),
            Default::default(),
        );
        let view = Arc::new(HostView::new(&config, &backends));
        let e = AdminServer::start(&listen, auth::Auth::open(), view)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("admin.listen"), "{e}");
        assert!(e.contains("WEIR_ADMIN__LISTEN"), "{e}");
    }
}
