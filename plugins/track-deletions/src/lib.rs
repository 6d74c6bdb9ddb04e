//! `track-deletions`: NovaTune's lifecycle worker (seeds 000 and 001) as a Weir plugin.
//!
//! On a `TrackDeletedEvent` it removes the track's presigned-URL cache entries and
//! schedules the deletion of the audio object (and its waveform) at the event's
//! `ScheduledDeletionAt`. Every step is idempotent: a repeated event leaves the same state.
//!
//! - schema version 2 (seed 000): all fields; deletions at `ScheduledDeletionAt`.
//! - schema version 1 (seed 001): only `TrackId`, `UserId`, `Timestamp`; the object key
//!   comes from the `object_key_template` config value and the deletion is due after
//!   `grace_period_hours` (default 24).
//! - anything else, or malformed JSON: rejected with the reason. Cache or storage
//!   backend unavailable: retried.

use serde::Deserialize;
use std::time::Duration;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use weir_sdk::{cache, config, log, reject, storage, Event, Handler};

/// Only the version, read first so each version can be decoded on its own terms.
#[derive(Deserialize)]
struct TrackDeletedEvent {
    #[serde(
        rename = "SchemaVersion",
        alias = "schemaVersion",
        default = "default_version"
    )]
    schema_version: i64,
}

fn default_version() -> i64 {
    2 // the C# record's default (seed 000)
}

/// `TrackDeletedEvent`, schema version 2 (seed 000).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(dead_code)] // every field is decoded so a malformed event is rejected
struct TrackDeletedV2 {
    #[serde(alias = "trackId")]
    track_id: String,
    #[serde(alias = "userId")]
    user_id: String,
    #[serde(alias = "objectKey")]
    object_key: String,
    #[serde(alias = "waveformObjectKey", default)]
    waveform_object_key: Option<String>,
    #[serde(alias = "fileSizeBytes")]
    file_size_bytes: i64,
    #[serde(alias = "deletedAt")]
    deleted_at: String,
    #[serde(alias = "scheduledDeletionAt")]
    scheduled_deletion_at: String,
    #[serde(alias = "correlationId")]
    correlation_id: String,
    #[serde(alias = "timestamp")]
    timestamp: String,
}

/// `TrackDeletedEvent`, schema version 1 (seed 001).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(dead_code)]
struct TrackDeletedV1 {
    #[serde(alias = "trackId")]
    track_id: String,
    #[serde(alias = "userId")]
    user_id: String,
    #[serde(alias = "timestamp")]
    timestamp: String,
}

struct TrackDeletions;

impl Handler for TrackDeletions {
    fn handle(event: Event) -> weir_sdk::Result {
        match event.json::<TrackDeletedEvent>()?.schema_version {
            2 => handle_v2(event.json()?),
            1 => handle_v1(event.json()?),
            other => Err(reject(format!(
                "unsupported SchemaVersion {other} (this plugin handles 1 and 2)"
            ))),
        }
    }
}

fn handle_v2(ev: TrackDeletedV2) -> weir_sdk::Result {
    let due = unix_ms("ScheduledDeletionAt", &ev.scheduled_deletion_at)?;
    unix_ms("DeletedAt", &ev.deleted_at)?;
    let removed = invalidate(&ev.user_id, &ev.track_id, ev.waveform_object_key.is_some())?;
    storage::schedule_deletion_at(&ev.object_key, due)?;
    if let Some(waveform) = &ev.waveform_object_key {
        storage::schedule_deletion_at(waveform, due)?;
    }
    log::info(
        "track deleted: cache invalidated, deletion scheduled",
        &[
            ("track-id", &ev.track_id),
            ("user-id", &ev.user_id),
            ("cache-entries-removed", &removed),
            ("scheduled-deletion-at", &ev.scheduled_deletion_at),
            ("correlation-id", &ev.correlation_id),
        ],
    );
    Ok(())
}

fn handle_v1(ev: TrackDeletedV1) -> weir_sdk::Result {
    let template = config::get_or("object_key_template", "audio/{userId}/{trackId}")?;
    let grace_hours: u64 = config::get_parsed("grace_period_hours")?.unwrap_or(24);
    let object_key = template
        .replace("{userId}", &ev.user_id)
        .replace("{trackId}", &ev.track_id);
    let removed = invalidate(&ev.user_id, &ev.track_id, false)?;
    storage::schedule_deletion_after(&object_key, Duration::from_secs(grace_hours * 3600))?;
    log::info(
        "track deleted (schema v1): cache invalidated, deletion scheduled",
        &[
            ("track-id", &ev.track_id),
            ("object-key", &object_key),
            ("cache-entries-removed", &removed),
            ("grace-period-hours", &grace_hours),
        ],
    );
    Ok(())
}

/// Remove the presigned-URL cache entries of the track (and of its waveform).
fn invalidate(user_id: &str, track_id: &str, waveform: bool) -> weir_sdk::Result<u32> {
    if user_id.is_empty() || track_id.is_empty() {
        return Err(reject("UserId and TrackId must not be empty"));
    }
    let key = format!("presigned:{user_id}:{track_id}");
    let mut removed = cache::delete(&key)? as u32;
    if waveform {
        removed += cache::delete(&format!("{key}:waveform"))? as u32;
    }
    Ok(removed)
}

fn unix_ms(field: &str, value: &str) -> weir_sdk::Result<i64> {
    let at = OffsetDateTime::parse(value, &Rfc3339).map_err(|e| {
        reject(format!(
            "{field} {value:?} is not an RFC 3339 timestamp: {e}"
        ))
    })?;
    Ok((at.unix_timestamp_nanos() / 1_000_000) as i64)
}

weir_sdk::export!(TrackDeletions);
