//! The seed plugins, compiled to components, doing their jobs through the host.

use crate::support::{event, example_manifest, wasm, TestHost};
use object_store::{path::Path as StorePath, ObjectStoreExt, PutPayload};
use weir_host::capabilities::CacheBackend;
use weir_host::runtime::Outcome;

const DELETED_V2: &str = r#"{"SchemaVersion": 2, "TrackId": "T1", "UserId": "user-42",
  "ObjectKey": "audio/user-42/T1.mp3", "WaveformObjectKey": "waveforms/user-42/T1.json",
  "FileSizeBytes": 5242880, "DeletedAt": "2026-11-20T10:00:00+00:00",
  "ScheduledDeletionAt": "2026-12-20T10:00:00+00:00", "CorrelationId": "c-1",
  "Timestamp": "2026-11-20T10:00:00.1234567+00:00"}"#;

/// 2026-12-20T10:00:00Z in milliseconds.
const DUE_MS: i64 = 1_797_760_800_000;

async fn seed_cache(host: &TestHost) {
    for key in [
        "novatune:presigned:user-42:T1",
        "novatune:presigned:user-42:T1:waveform",
        "novatune:presigned:user-42:T2",
        "novatune:presigned:user-7:T1",
        "other-namespace:presigned:user-42:T1",
    ] {
        host.cache
            .set(key, b"https://signed".to_vec(), None)
            .await
            .unwrap();
    }
}

/// (plugin, key, due) of every pending deletion.
async fn schedule(host: &TestHost) -> Vec<(String, String, i64)> {
    host.backends
        .deletions
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.plugin, d.key, d.due_ms))
        .collect()
}

#[tokio::test]
async fn track_deletions_removes_exactly_its_cache_keys_and_schedules_exactly_its_deletions() {
    let host = TestHost::new();
    seed_cache(&host).await;
    let mut plugin = host
        .load(
            &wasm("track-deletions"),
            &example_manifest("track-deletions"),
        )
        .await;

    let report = plugin
        .handle(&event(
            "track-deletions",
            0,
            Some("user-42"),
            DELETED_V2.as_bytes(),
        ))
        .await;
    assert_eq!(report.outcome, Outcome::Handled);
    assert!(report.published.is_empty());

    assert_eq!(
        host.cache.keys(),
        vec![
            "novatune:presigned:user-42:T2",
            "novatune:presigned:user-7:T1",
            "other-namespace:presigned:user-42:T1",
        ]
    );
    let expected = vec![
        (
            "track-deletions".to_string(),
            "audio/user-42/T1.mp3".to_string(),
            DUE_MS,
        ),
        (
            "track-deletions".to_string(),
            "waveforms/user-42/T1.json".to_string(),
            DUE_MS,
        ),
    ];
    assert_eq!(schedule(&host).await, expected);

    // The same event again (a redelivery) leaves the same state.
    let again = plugin
        .handle(&event(
            "track-deletions",
            0,
            Some("user-42"),
            DELETED_V2.as_bytes(),
        ))
        .await;
    assert_eq!(again.outcome, Outcome::Handled);
    assert_eq!(host.cache.keys().len(), 3);
    assert_eq!(schedule(&host).await, expected);
}

#[tokio::test]
async fn track_deletions_rejects_malformed_and_unsupported_events_with_the_reason() {
    let host = TestHost::new();
    seed_cache(&host).await;
    let mut plugin = host
        .load(
            &wasm("track-deletions"),
            &example_manifest("track-deletions"),
        )
        .await;

    let cases: [(&str, &str); 4] = [
        (r#"{"SchemaVersion": 2, "TrackId": "#, "not a valid"),
        (
            r#"{"SchemaVersion": 3, "TrackId": "t", "UserId": "u"}"#,
            "unsupported SchemaVersion 3",
        ),
        (
            r#"{"SchemaVersion": 2, "TrackId": "T1", "UserId": "user-42"}"#,
            "missing field `ObjectKey`",
        ),
        (
            &DELETED_V2.replace("2026-12-20T10:00:00+00:00", "next tuesday"),
            "ScheduledDeletionAt \"next tuesday\" is not an RFC 3339 timestamp",
        ),
    ];
    for (i, (payload, reason)) in cases.iter().enumerate() {
        let report = plugin
            .handle(&event(
                "track-deletions",
                i as i64,
                None,
                payload.as_bytes(),
            ))
            .await;
        match &report.outcome {
            Outcome::Reject(r) => assert!(r.contains(reason), "{r:?} should mention {reason:?}"),
            other => panic!("case {i}: expected a rejection, got {other:?}"),
        }
    }
    // Nothing was touched.
    assert_eq!(host.cache.keys().len(), 5);
    assert!(schedule(&host).await.is_empty());

    // An object key outside the granted prefixes is refused by the host, and the
    // plugin turns the refusal into a rejection.
    let outside = DELETED_V2.replace("audio/user-42/T1.mp3", "../secrets/T1.mp3");
    let report = plugin
        .handle(&event("track-deletions", 9, None, outside.as_bytes()))
        .await;
    match &report.outcome {
        Outcome::Reject(r) => assert!(r.contains("path traversal is refused"), "{r}"),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn track_deletions_schema_v1_uses_the_configured_key_and_grace_period() {
    let host = TestHost::new();
    let mut plugin = host
        .load(
            &wasm("track-deletions"),
            &example_manifest("track-deletions"),
        )
        .await;
    let before = weir_host::capabilities::storage::now_ms();
    let report = plugin
        .handle(&event(
            "track-deletions",
            0,
            None,
            br#"{"SchemaVersion": 1, "TrackId": "t9", "UserId": "u9", "Timestamp": "2026-11-22T12:00:00Z"}"#,
        ))
        .await;
    let after = weir_host::capabilities::storage::now_ms();
    assert_eq!(report.outcome, Outcome::Handled);
    let pending = schedule(&host).await;
    assert_eq!(pending.len(), 1);
    let (_, key, due) = &pending[0];
    assert_eq!(key, "audio/u9/t9");
    let day = 24 * 3600 * 1000;
    assert!((before + day..=after + day).contains(due), "due {due}");
}

#[tokio::test]
async fn scheduled_deletions_survive_a_restart_and_are_carried_out_when_due() {
    let storage_dir = tempfile::tempdir().unwrap();
    let dir_path = storage_dir.path().to_path_buf();
    let host = TestHost::with_storage(storage_dir);
    let object = StorePath::from("audio/user-42/T1.mp3");
    host.backends
        .storage
        .put(&object, PutPayload::from(vec![1u8; 16]))
        .await
        .unwrap();
    let mut plugin = host
        .load(
            &wasm("track-deletions"),
            &example_manifest("track-deletions"),
        )
        .await;
    let past = DELETED_V2.replace("2026-12-20T10:00:00+00:00", "2020-01-01T00:00:00Z");
    let report = plugin
        .handle(&event("track-deletions", 0, None, past.as_bytes()))
        .await;
    assert_eq!(report.outcome, Outcome::Handled);
    drop(plugin);

    // A new host over the same storage (the old one is gone) finds the schedule and
    // carries it out.
    let restarted = weir_host::capabilities::Backends::local(&dir_path).unwrap();
    // It loads the plugin again: its deletions are carried out within its grants.
    let manifest =
        weir_host::manifest::Manifest::load(&example_manifest("track-deletions")).unwrap();
    restarted.deletions.allow(
        "track-deletions",
        weir_host::capabilities::Grants::from_manifest(&manifest).storage_prefixes,
    );
    let swept = restarted
        .deletions
        .store()
        .expect("a store-kept schedule")
        .sweep(weir_host::capabilities::storage::now_ms())
        .await
        .unwrap();
    let deleted: Vec<&str> = swept.deleted.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(
        deleted,
        vec!["audio/user-42/T1.mp3", "waveforms/user-42/T1.json"]
    );
    assert!(swept.failed.is_empty());
    assert!(
        restarted.storage.head(&object).await.is_err(),
        "object still there"
    );
    assert!(restarted.deletions.list().await.unwrap().is_empty());
    drop(host);
}

#[tokio::test]
async fn audio_uploaded_records_metadata_and_publishes_a_waveform_job() {
    audio_uploaded_does_its_job(&TestHost::new()).await;
}

/// audio-uploaded on `host`, whatever its storage backend: the upload's metadata
/// stored, a waveform job published, a video rejected.
pub async fn audio_uploaded_does_its_job(host: &TestHost) {
    let mut plugin = host
        .load(&wasm("audio-uploaded"), &example_manifest("audio-uploaded"))
        .await;
    let payload = br#"{"SchemaVersion": 1, "TrackId": "T100", "UserId": "user-42",
        "ObjectKey": "audio/user-42/T100.mp3", "MimeType": "audio/mpeg", "FileSizeBytes": 4194304,
        "CorrelationId": "c-100", "Timestamp": "2026-11-23T09:15:00Z"}"#;
    let report = plugin
        .handle(&event("audio-events", 0, Some("T100"), payload))
        .await;
    assert_eq!(report.outcome, Outcome::Handled);

    let stored = host
        .backends
        .storage
        .get(&StorePath::from("uploads/user-42/T100.json"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let record: serde_json::Value = serde_json::from_slice(&stored).unwrap();
    assert_eq!(record["mimeType"], "audio/mpeg");
    assert_eq!(record["fileSizeBytes"], 4194304);

    assert_eq!(report.published.len(), 1);
    let msg = &report.published[0];
    assert_eq!(msg.topic, "waveform-jobs");
    assert_eq!(msg.key.as_deref(), Some(&b"T100"[..]));
    let body: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(body["TrackId"], "T100");
    assert_eq!(body["CorrelationId"], "c-100");
    assert!(msg
        .headers
        .contains(&("correlation-id".to_string(), b"c-100".to_vec())));

    let video = std::str::from_utf8(payload)
        .unwrap()
        .replace("audio/mpeg", "video/mp4");
    let rejected = plugin
        .handle(&event("audio-events", 1, None, video.as_bytes()))
        .await;
    assert!(
        matches!(&rejected.outcome, Outcome::Reject(r) if r.contains("is not audio/*")),
        "{:?}",
        rejected.outcome
    );
    assert!(rejected.published.is_empty());
}

#[tokio::test]
async fn envelope_router_wraps_and_routes_by_event_type_keyed_by_user() {
    let host = TestHost::new();
    let mut plugin = host
        .load(
            &wasm("envelope-router"),
            &example_manifest("envelope-router"),
        )
        .await;
    let user = "550e8400-e29b-41d4-a716-446655440000";
    let created = format!(
        r#"{{"eventType": "created", "customItemId": "i1", "name": "Sample", "userId": "{user}",
            "correlationId": "abc123", "timestamp": "2025-11-30T10:30:00Z"}}"#
    );
    let mut ev = event("item-events", 5, Some(user), created.as_bytes());
    ev.headers.push((
        "traceparent".into(),
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_vec(),
    ));
    let report = plugin.handle(&ev).await;
    assert_eq!(report.outcome, Outcome::Handled);
    assert_eq!(report.published.len(), 1);
    let msg = &report.published[0];
    assert_eq!(msg.topic, "customservice.item.created");
    assert_eq!(msg.key.as_deref(), Some(user.as_bytes()));
    let env: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
    for field in [
        "eventId",
        "eventType",
        "eventVersion",
        "sourceService",
        "correlationId",
        "timestamp",
    ] {
        assert!(env.get(field).is_some(), "envelope lacks {field}: {env}");
    }
    assert_eq!(env["eventType"], "created");
    assert_eq!(env["sourceService"], "customservice");
    assert_eq!(env["correlationId"], "abc123");
    assert_eq!(env["customItemId"], "i1");
    let header = |name: &str| {
        msg.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(header("ce_specversion").as_deref(), Some("1.0"));
    assert_eq!(header("ce_type").as_deref(), Some("customservice.created"));
    assert_eq!(header("ce_id"), env["eventId"].as_str().map(str::to_string));
    assert!(header("traceparent").is_some());

    // The same record again gets the same event id (consumers can deduplicate).
    let again = plugin.handle(&ev).await;
    let env2: serde_json::Value = serde_json::from_slice(&again.published[0].payload).unwrap();
    assert_eq!(env["eventId"], env2["eventId"]);

    // The type may come from a CloudEvents header instead.
    let mut deleted = event(
        "item-events",
        6,
        Some(user),
        format!(r#"{{"userId": "{user}"}}"#).as_bytes(),
    );
    for (k, v) in [
        ("ce_id", "x"),
        ("ce_source", "/s"),
        ("ce_type", "deleted"),
        ("ce_specversion", "1.0"),
    ] {
        deleted.headers.push((k.into(), v.as_bytes().to_vec()));
    }
    let report = plugin.handle(&deleted).await;
    assert_eq!(report.outcome, Outcome::Handled);
    assert_eq!(report.published[0].topic, "customservice.item.deleted");

    let unknown = plugin
        .handle(&event(
            "item-events",
            7,
            None,
            format!(r#"{{"eventType": "archived", "userId": "{user}"}}"#).as_bytes(),
        ))
        .await;
    assert!(
        matches!(&unknown.outcome, Outcome::Reject(r) if r.contains("no route for event type \"archived\"")),
        "{:?}",
        unknown.outcome
    );
}
