//! `audio-uploaded`: NovaTune's audio processor (seed 001) as a Weir plugin.
//!
//! On an `AudioUploadedEvent` it records the upload's metadata in storage
//! (`{metadata_prefix}{UserId}/{TrackId}.json`) and publishes a `WaveformJobRequested`
//! follow-up event, keyed by track id, to the `followup_topic` (default `waveform-jobs`).
//! Writing the same metadata twice is harmless, so a repeated event is too.

use serde::{Deserialize, Serialize};
use weir_sdk::{config, log, publish::Message, reject, storage, Event, Handler};

/// `AudioUploadedEvent` (seed 001), schema version 1.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AudioUploaded {
    #[serde(alias = "schemaVersion", default = "one")]
    schema_version: i64,
    #[serde(alias = "trackId")]
    track_id: String,
    #[serde(alias = "userId")]
    user_id: String,
    #[serde(alias = "objectKey")]
    object_key: String,
    #[serde(alias = "mimeType")]
    mime_type: String,
    #[serde(alias = "fileSizeBytes")]
    file_size_bytes: i64,
    #[serde(alias = "correlationId")]
    correlation_id: String,
    #[serde(alias = "timestamp")]
    timestamp: String,
}

fn one() -> i64 {
    1
}

/// What the plugin stores per upload.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UploadRecord<'a> {
    track_id: &'a str,
    user_id: &'a str,
    object_key: &'a str,
    mime_type: &'a str,
    file_size_bytes: i64,
    uploaded_at: &'a str,
    correlation_id: &'a str,
}

/// The follow-up event.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct WaveformJobRequested<'a> {
    schema_version: i64,
    track_id: &'a str,
    user_id: &'a str,
    object_key: &'a str,
    correlation_id: &'a str,
    requested_at: &'a str,
}

struct AudioUploadedPlugin;

impl Handler for AudioUploadedPlugin {
    fn handle(event: Event) -> weir_sdk::Result {
        let up: AudioUploaded = event.json()?;
        if up.schema_version != 1 {
            return Err(reject(format!(
                "unsupported SchemaVersion {} (this plugin handles 1)",
                up.schema_version
            )));
        }
        if !up.mime_type.starts_with("audio/") {
            return Err(reject(format!(
                "MimeType {:?} is not audio/*",
                up.mime_type
            )));
        }
        if up.file_size_bytes <= 0 {
            return Err(reject(format!(
                "FileSizeBytes must be positive, got {}",
                up.file_size_bytes
            )));
        }

        let prefix = config::get_or("metadata_prefix", "uploads/")?;
        let record_key = format!("{prefix}{}/{}.json", up.user_id, up.track_id);
        let record = UploadRecord {
            track_id: &up.track_id,
            user_id: &up.user_id,
            object_key: &up.object_key,
            mime_type: &up.mime_type,
            file_size_bytes: up.file_size_bytes,
            uploaded_at: &up.timestamp,
            correlation_id: &up.correlation_id,
        };
        let body = serde_json::to_vec_pretty(&record).map_err(|e| reject(e.to_string()))?;
        storage::put(&record_key, &body)?;

        let topic = config::get_or("followup_topic", "waveform-jobs")?;
        Message::to(&topic)
            .key(&up.track_id)
            .json(&WaveformJobRequested {
                schema_version: 1,
                track_id: &up.track_id,
                user_id: &up.user_id,
                object_key: &up.object_key,
                correlation_id: &up.correlation_id,
                requested_at: &up.timestamp,
            })?
            .header("schema-version", "1")
            .header("correlation-id", &up.correlation_id)
            .send()?;

        log::info(
            "upload recorded, waveform job requested",
            &[
                ("track-id", &up.track_id),
                ("metadata", &record_key),
                ("topic", &topic),
                ("correlation-id", &up.correlation_id),
            ],
        );
        Ok(())
    }
}

weir_sdk::export!(AudioUploadedPlugin);
