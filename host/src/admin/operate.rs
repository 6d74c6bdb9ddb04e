//! An operator's changes to a running plugin, for every host of its group:
//! its offsets (shown, reset to `earliest`/`latest`, rewound to a time or to
//! explicit offsets) and its number of workers. Each is resolved here, then
//! carried out by the hosts through the control topic ([`super::control`]).
//!
//! | route | does |
//! | --- | --- |
//! | `GET /plugins/{name}/offsets` | committed offset, earliest, latest and lag per partition of its group |
//! | `POST /plugins/{name}/offsets/reset?to=earliest\|latest` | move every partition there |
//! | `POST /plugins/{name}/offsets/rewind?time=RFC3339` | move every partition to its first record at or after the time |
//! | `POST /plugins/{name}/offsets/rewind?offsets=topic/0=42,...` | move the named partitions |
//! | `POST /plugins/{name}/workers?count=N` | run N workers (1 to 64) on every host |
//! | `GET /plugins/{name}/dead-letters?limit=N` | its newest dead letters (50, at most 500), newest first |
//! | `POST /plugins/{name}/dead-letters/replay?ids=a,b\|since=RFC3339\|all=true` | send them back to their topics, as `weir dlq replay` does |
//!
//! `&dry_run=true` answers what would move (or be replayed) and changes nothing.

use super::control::{self, Op};
use super::offsets::{self, OffsetsError, Target};
use super::AppState;
use crate::pipeline::fetch::Moved;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::time::Duration;

#[derive(Debug, serde::Deserialize)]
pub(super) struct ResetQuery {
    to: String,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct RewindQuery {
    time: Option<String>,
    offsets: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct WorkersQuery {
    count: usize,
}

/// Operator requests carried out at once: each holds a thread while the hosts
/// drain, so a flood of them is refused instead of queued.
static AT_ONCE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

fn busy() -> Response {
    error(
        StatusCode::TOO_MANY_REQUESTS,
        "4 operator requests are being carried out on this host already: ask again once one has answered".into(),
    )
}

/// A request that took longer than the hosts are given (the broker is slow
/// or unreachable).
fn too_slow(s: &AppState, what: &str) -> Response {
    error(
        StatusCode::GATEWAY_TIMEOUT,
        format!(
            "{what} took longer than {} s (shutdown.drain_timeout + admin.control_timeout): is the broker reachable?",
            patience(s).as_secs()
        ),
    )
}

fn error(code: StatusCode, message: String) -> Response {
    (code, Json(json!({ "error": message }))).into_response()
}

/// Why a request is refused: its status and what to say.
type Refusal = (StatusCode, String);

/// The plugin's group and full topic names, if it runs here.
fn running(s: &AppState, name: &str) -> Result<(String, Vec<String>), Refusal> {
    let Some(v) = s.view.plugin(name) else {
        return Err((
            StatusCode::NOT_FOUND,
            format!("no plugin named {name:?} (GET /plugins lists them)"),
        ));
    };
    match v.group {
        Some(group) if !v.topics.is_empty() => Ok((group, v.topics)),
        _ => Err((
            StatusCode::CONFLICT,
            format!(
                "plugin {name:?} does not run on this host (state {}): ask a host where it runs",
                v.status.state
            ),
        )),
    }
}

/// The control topic requests go through, or why there is none.
fn control_topic(s: &AppState) -> Result<String, Refusal> {
    s.view.control_topic().map_err(|why| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            control::ControlError::Unavailable(why).to_string(),
        )
    })
}

fn offsets_error(e: OffsetsError) -> Response {
    let code = match e {
        OffsetsError::Invalid(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::BAD_GATEWAY,
    };
    error(code, e.to_string())
}

pub(super) async fn show(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    let (group, topics) = match running(&s, &name) {
        Ok(r) => r,
        Err((code, why)) => return error(code, why),
    };
    let config = s.view.config().clone();
    let shown = {
        let (group, topics) = (group.clone(), topics.clone());
        tokio::task::spawn_blocking(move || offsets::show(&config, &group, &topics)).await
    };
    match shown {
        Ok(Ok(partitions)) => {
            Json(json!({ "plugin": name, "group": group, "partitions": partitions }))
                .into_response()
        }
        Ok(Err(e)) => offsets_error(e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

pub(super) async fn reset(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<ResetQuery>,
) -> Response {
    match Target::reset(&q.to) {
        Ok(target) => move_offsets(&s, &name, target, q.dry_run).await,
        Err(e) => offsets_error(e),
    }
}

pub(super) async fn rewind(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<RewindQuery>,
) -> Response {
    let target = match (&q.time, &q.offsets) {
        (Some(t), None) => Target::time(t),
        (None, Some(o)) => {
            let topics = match running(&s, &name) {
                Ok((_, topics)) => topics,
                Err((code, why)) => return error(code, why),
            };
            let namer = s.view.config().namer().ok();
            Target::offsets(o, |t| {
                let full = namer.as_ref().map(|n| n.full_name(t));
                topics
                    .iter()
                    .find(|x| *x == t || Some(x.as_str()) == full.as_deref())
                    .cloned()
            })
        }
        _ => Err(OffsetsError::Invalid(
            "rewind needs one of time=RFC3339 (e.g. 2026-12-03T10:00:00Z) or offsets=topic/partition=offset,...".into(),
        )),
    };
    match target {
        Ok(target) => move_offsets(&s, &name, target, q.dry_run).await,
        Err(e) => offsets_error(e),
    }
}

/// How long a request waits for the hosts: their drain, then the rest.
fn patience(s: &AppState) -> Duration {
    let config = s.view.config();
    config.shutdown.drain_timeout + config.admin.control_timeout
}

async fn move_offsets(s: &AppState, name: &str, target: Target, dry_run: bool) -> Response {
    let (group, topics) = match running(s, name) {
        Ok(r) => r,
        Err((code, why)) => return error(code, why),
    };
    let config = s.view.config().clone();
    let planned = {
        let (config, group, target) = (config.clone(), group.clone(), target.clone());
        tokio::task::spawn_blocking(move || offsets::plan(&config, &group, &topics, &target)).await
    };
    let plan = match planned {
        Ok(Ok(plan)) => plan,
        Ok(Err(e)) => return offsets_error(e),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let mut body = json!({
        "plugin": name,
        "group": group,
        "target": target.describe(),
        "dry_run": dry_run,
        "partitions": plan,
    });
    if dry_run {
        return Json(body).into_response();
    }
    let topic = match control_topic(s) {
        Ok(t) => t,
        Err((code, why)) => return error(code, why),
    };
    let Ok(_turn) = AT_ONCE.try_acquire() else {
        return busy();
    };
    let targets: Vec<Moved> = plan
        .iter()
        .filter(|m| m.now.committed != Some(m.to))
        .map(|m| Moved {
            topic: m.now.topic.clone(),
            partition: m.now.partition,
            to: m.to,
        })
        .collect();
    tracing::info!(plugin = %name, group = %group, target = %target.describe(), partitions = targets.len(), "offsets move asked through the admin API");
    if targets.is_empty() {
        body["hosts"] = json!([]);
        return Json(body).into_response();
    }
    let wait = patience(s);
    let gathered = {
        let (config, name, group, targets) = (
            config.clone(),
            name.to_string(),
            group.clone(),
            targets.clone(),
        );
        tokio::task::spawn_blocking(move || {
            control::request(&config, &topic, &name, &group, Op::Seek { targets }, wait)
        })
        .await
    };
    let gathered = match gathered {
        Ok(Ok(g)) => g,
        Ok(Err(e)) => return error(StatusCode::BAD_GATEWAY, e.to_string()),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    body["hosts"] = json!(gathered.answers);
    let mut code = StatusCode::OK;
    if !gathered.missing.is_empty() {
        // Held by no host: the group is empty (no host runs the plugin), or
        // its holder did not answer. Only the first is committed from here:
        // the broker refuses a commit from outside a group with members.
        let rest: Vec<(String, i32, i64)> = gathered
            .missing
            .iter()
            .filter_map(|tp| {
                targets
                    .iter()
                    .find(|m| m.topic == tp.0 && m.partition == tp.1)
                    .map(|m| (m.topic.clone(), m.partition, m.to))
            })
            .collect();
        let committed = {
            let (config, group, rest) = (config.clone(), group.clone(), rest.clone());
            tokio::task::spawn_blocking(move || offsets::commit_outside(&config, &group, &rest))
                .await
        };
        let failed = match committed {
            Ok(Ok(())) => None,
            Ok(Err(why)) => Some(why),
            Err(e) => Some(e.to_string()),
        };
        match failed {
            None => body["committed_outside_the_group"] = json!(gathered.missing),
            Some(why) => {
                code = StatusCode::GATEWAY_TIMEOUT;
                body["missing"] = json!(gathered.missing);
                body["error"] = json!(format!(
                    "no host moved {} partition(s) within {} s, and committing them from outside the group failed ({why}): is a host of group {group} stuck, or running an older Weir? Nothing else was undone; ask again once it answers",
                    gathered.missing.len(),
                    wait.as_secs()
                ));
            }
        }
    }
    tracing::info!(plugin = %name, group = %group, answers = gathered.answers.len(), missing = gathered.missing.len(), "offsets moved");
    (code, Json(body)).into_response()
}

pub(super) async fn workers(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<WorkersQuery>,
) -> Response {
    if !(1..=64).contains(&q.count) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("count = {} is out of range: use 1 to 64", q.count),
        );
    }
    let (group, _) = match running(&s, &name) {
        Ok(r) => r,
        Err((code, why)) => return error(code, why),
    };
    let topic = match control_topic(&s) {
        Ok(t) => t,
        Err((code, why)) => return error(code, why),
    };
    let Ok(_turn) = AT_ONCE.try_acquire() else {
        return busy();
    };
    tracing::info!(plugin = %name, count = q.count, "change of workers asked through the admin API");
    let config = s.view.config().clone();
    let wait = patience(&s);
    let gathered = {
        let (name, group) = (name.clone(), group.clone());
        tokio::task::spawn_blocking(move || {
            control::request(
                &config,
                &topic,
                &name,
                &group,
                Op::Workers { count: q.count },
                wait,
            )
        })
        .await
    };
    match gathered {
        Ok(Ok(g)) => Json(json!({
            "plugin": name,
            "group": group,
            "workers": q.count,
            "hosts": g.answers,
        }))
        .into_response(),
        Ok(Err(e)) => error(StatusCode::BAD_GATEWAY, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct LettersQuery {
    limit: Option<usize>,
}

pub(super) async fn dead_letters(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<LettersQuery>,
) -> Response {
    if s.view.plugin(&name).is_none() {
        return super::unknown(&name);
    }
    let config = s.view.config().clone();
    let browsed = tokio::time::timeout(
        patience(&s),
        crate::dlq::browse(&config, &name, q.limit.unwrap_or(50)),
    )
    .await;
    match browsed {
        Ok(Ok(letters)) => Json(json!({ "plugin": name, "letters": letters })).into_response(),
        Ok(Err(e)) => error(StatusCode::BAD_GATEWAY, e.to_string()),
        Err(_) => too_slow(&s, "reading the dead letters"),
    }
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct ReplayQuery {
    ids: Option<String>,
    since: Option<String>,
    #[serde(default)]
    all: bool,
    #[serde(default)]
    again: bool,
    #[serde(default)]
    dry_run: bool,
}

pub(super) async fn replay(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<ReplayQuery>,
) -> Response {
    if s.view.plugin(&name).is_none() {
        return super::unknown(&name);
    }
    let mut filter = crate::dlq::ReplayFilter {
        plugin: Some(name.clone()),
        dry_run: q.dry_run,
        again: q.again,
        ..Default::default()
    };
    match (&q.ids, &q.since, q.all) {
        (Some(ids), None, false) => {
            filter.letters = ids
                .split(',')
                .map(str::trim)
                .filter(|i| !i.is_empty())
                .map(str::to_string)
                .take(1000)
                .collect();
            if filter.letters.is_empty() {
                return error(StatusCode::BAD_REQUEST, "ids names no letter".into());
            }
        }
        (None, Some(since), false) => match humantime::parse_rfc3339_weak(since.trim()) {
            Ok(t) => filter.since = Some(t),
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "since {:?} is not RFC 3339 (like 2026-12-03T10:00:00Z): {e}",
                        since.chars().take(100).collect::<String>()
                    ),
                )
            }
        },
        (None, None, true) => {}
        _ => return error(
            StatusCode::BAD_REQUEST,
            "replay needs exactly one of ids=topic/partition@offset,..., since=RFC3339 or all=true"
                .into(),
        ),
    }
    let Ok(_turn) = AT_ONCE.try_acquire() else {
        return busy();
    };
    tracing::info!(plugin = %name, letters = filter.letters.len(), since = ?filter.since, dry_run = filter.dry_run, "dead letters replayed through the admin API");
    let config = s.view.config().clone();
    match tokio::time::timeout(patience(&s), crate::dlq::replay(&config, &filter)).await {
        Ok(Ok(report)) => {
            Json(json!({ "plugin": name, "dry_run": q.dry_run, "report": report })).into_response()
        }
        Ok(Err(e)) => error(StatusCode::BAD_GATEWAY, e.to_string()),
        Err(_) => too_slow(
            &s,
            "the replay (what it sent is marked: ask again and it goes on with the rest)",
        ),
    }
}
