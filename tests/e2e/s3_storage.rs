//! The storage capability on a real S3-protocol server (moto): the same
//! semantics as a local directory, the seed plugins on a bucket, and an outage
//! turned into `unavailable`, then a circuit breaker that opens and closes again.

use crate::support::{event, example_manifest, s3, wasm, TestHost};
use object_store::{path::Path as StorePath, ObjectStore, ObjectStoreExt, PutPayload};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_host::bindings::weir::plugin::storage::Host as StorageHost;
use weir_host::bindings::CapabilityError;
use weir_host::capabilities::breaker::BreakerState;
use weir_host::capabilities::{Backends, EventEffects, Grants, Guards, HostBudget, MemoryCache};
use weir_host::config::BreakerConfig;
use weir_host::runtime::Outcome;

fn grants() -> Grants {
    Grants {
        plugin: "p".into(),
        cache_namespace: None,
        storage_prefixes: Some(vec!["data/".into(), "uploads/".into()]),
        publish_topics: None,
        config: Default::default(),
    }
}

fn backends(store: Arc<dyn ObjectStore>, guards: Guards) -> Backends {
    Backends::new(Arc::new(MemoryCache::new(1024 * 1024)), store, guards)
}

/// Every storage call of the capability, on one backend; the same assertions
/// for every backend.
async fn storage_semantics(backends: &Backends, label: &str) {
    let grants = grants();
    let mut effects = EventEffects::default();
    let mut budget = HostBudget::new(64 << 20);
    let mut ctx =
        weir_host::capabilities::Ctx::new(&grants, backends, &mut effects, &mut budget, false);
    let started = weir_host::capabilities::storage::now_ms();

    ctx.put("data/a.txt".into(), b"hello".to_vec())
        .await
        .unwrap();
    ctx.put("data/sub/b.bin".into(), vec![7u8; 1000])
        .await
        .unwrap();
    ctx.put("data/ab.txt".into(), b"x".to_vec()).await.unwrap();
    ctx.put("uploads/u.json".into(), b"{}".to_vec())
        .await
        .unwrap();
    assert_eq!(
        ctx.get("data/a.txt".into()).await.unwrap(),
        Some(b"hello".to_vec()),
        "{label}"
    );
    assert_eq!(ctx.get("data/none".into()).await.unwrap(), None, "{label}");

    let listed = ctx.list("data/a".into()).await.unwrap();
    let keys: Vec<&str> = listed.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["data/a.txt", "data/ab.txt"], "{label}");
    assert_eq!(listed[0].size, 5, "{label}");
    let age = listed[0].last_modified_ms - started;
    assert!(
        (-60_000..60_000).contains(&age),
        "{label}: last modified {age} ms off"
    );
    let listed = ctx.list("data/".into()).await.unwrap();
    assert_eq!(listed.len(), 3, "{label}: {listed:?}");
    let sub = ctx.list("data/sub/".into()).await.unwrap();
    assert_eq!(
        (sub[0].key.as_str(), sub[0].size),
        ("data/sub/b.bin", 1000),
        "{label}"
    );

    // Grants and keys are checked before the backend is asked.
    for (key, denied) in [
        ("secret/x", true),
        ("_weir/scheduled-deletions/x", true),
        ("../data/a.txt", false),
        ("/data/a.txt", false),
    ] {
        match (ctx.put(key.into(), b"no".to_vec()).await, denied) {
            (Err(CapabilityError::Denied(_)), true) | (Err(CapabilityError::Invalid(_)), false) => {
            }
            (other, _) => panic!("{label}: put {key}: {other:?}"),
        }
    }
    assert!(matches!(
        ctx.list("secret/".into()).await,
        Err(CapabilityError::Denied(_))
    ));

    ctx.delete("data/a.txt".into()).await.unwrap();
    ctx.delete("data/a.txt".into()).await.unwrap(); // gone already: fine
    assert_eq!(ctx.get("data/a.txt".into()).await.unwrap(), None, "{label}");
    assert_eq!(ctx.list("data/a".into()).await.unwrap().len(), 1, "{label}");
}

#[tokio::test]
#[ignore = "needs the moto S3 server (`just s3`); `just test` installs it and runs the ignored tests"]
async fn the_storage_capability_behaves_the_same_on_s3_as_on_a_directory() {
    let Some(s3) = s3() else { return };
    let dir = tempfile::tempdir().unwrap();
    let local = weir_host::capabilities::storage::local_store(dir.path()).unwrap();
    storage_semantics(&backends(local, Guards::default()), "local").await;
    let bucket = s3.store(Duration::from_secs(5));
    storage_semantics(&backends(bucket.clone(), Guards::default()), "s3").await;
    // What the plugin wrote is in the bucket, under the plugin's keys.
    let object = bucket
        .get(&StorePath::from("uploads/u.json"))
        .await
        .unwrap();
    assert_eq!(object.bytes().await.unwrap().as_ref(), b"{}");
}

#[tokio::test]
#[ignore = "needs the moto S3 server (`just s3`); `just test` installs it and runs the ignored tests"]
async fn the_seed_plugins_store_and_delete_on_s3() {
    let Some(s3) = s3() else { return };
    let bucket = s3.store(Duration::from_secs(5));
    let mut host = TestHost::new();
    host.backends = Backends::new(host.cache.clone(), bucket.clone(), Guards::default());

    // The same assertions as on a directory; the metadata lands in the bucket.
    crate::seed_plugins::audio_uploaded_does_its_job(&host).await;
    assert!(bucket
        .head(&StorePath::from("uploads/user-42/T100.json"))
        .await
        .is_ok());

    // track-deletions schedules the deletion of objects in the bucket; when due,
    // the sweep deletes them there.
    for key in ["audio/user-42/T1.mp3", "waveforms/user-42/T1.json"] {
        bucket
            .put(&StorePath::from(key), PutPayload::from(vec![1u8; 64]))
            .await
            .unwrap();
    }
    let mut deletions = host
        .load(
            &wasm("track-deletions"),
            &example_manifest("track-deletions"),
        )
        .await;
    let due_now = r#"{"SchemaVersion": 2, "TrackId": "T1", "UserId": "user-42",
      "ObjectKey": "audio/user-42/T1.mp3", "WaveformObjectKey": "waveforms/user-42/T1.json",
      "FileSizeBytes": 5242880, "DeletedAt": "2020-01-01T00:00:00Z",
      "ScheduledDeletionAt": "2020-01-01T00:00:00Z", "CorrelationId": "c-1",
      "Timestamp": "2020-01-01T00:00:00Z"}"#;
    let report = deletions
        .handle(&event(
            "track-deletions",
            0,
            Some("user-42"),
            due_now.as_bytes(),
        ))
        .await;
    assert_eq!(report.outcome, Outcome::Handled, "{:?}", report.outcome);
    let swept = host
        .backends
        .deletions
        .store()
        .expect("a store-kept schedule")
        .sweep(weir_host::capabilities::storage::now_ms())
        .await
        .unwrap();
    assert_eq!(swept.deleted.len(), 2, "{swept:?}");
    for key in ["audio/user-42/T1.mp3", "waveforms/user-42/T1.json"] {
        assert!(
            bucket.head(&StorePath::from(key)).await.is_err(),
            "{key} still in the bucket"
        );
    }
}

#[tokio::test]
#[ignore = "needs the moto S3 server (`just s3`); `just test` installs it and runs the ignored tests"]
async fn an_s3_outage_is_unavailable_then_the_breaker_opens_and_a_probe_closes_it() {
    let Some(mut s3) = s3() else { return };
    let breaker = BreakerConfig {
        failures: 3,
        open_for: Duration::from_millis(1500),
        probes: 1,
    };
    let timeout = Duration::from_secs(2);
    let backends = backends(s3.store(timeout), Guards::new(&breaker, timeout));
    let grants = grants();
    let mut effects = EventEffects::default();
    let mut budget = HostBudget::new(64 << 20);
    let mut ctx =
        weir_host::capabilities::Ctx::new(&grants, &backends, &mut effects, &mut budget, false);
    ctx.put("data/x".into(), b"1".to_vec()).await.unwrap();

    s3.server.stop();
    for i in 0..3 {
        match ctx.get("data/x".into()).await {
            Err(CapabilityError::Unavailable(why)) => {
                assert!(why.starts_with("storage backend:"), "{why}");
                assert!(!why.contains("circuit breaker"), "call {i}: {why}");
            }
            other => panic!("call {i} during the outage: {other:?}"),
        }
    }
    assert_eq!(backends.guards.storage.state(), BreakerState::Open);
    // Open: the next call is refused without reaching the backend, saying why
    // (counted as rejected, not as another failure).
    match ctx.put("data/y".into(), b"2".to_vec()).await {
        Err(CapabilityError::Unavailable(why)) => {
            assert!(
                why.contains("circuit breaker is open after 3 failures"),
                "{why}"
            )
        }
        other => panic!("with the breaker open: {other:?}"),
    }
    let status = backends.guards.storage.status();
    assert_eq!((status.opened_total, status.rejected_total), (1, 1));
    // The cache has its own breaker, untouched.
    assert_eq!(backends.guards.cache.state(), BreakerState::Closed);

    // The server comes back (empty); after open_for a probe goes through and
    // closes the breaker.
    s3.server.restart().unwrap();
    s3.server.create_bucket(&s3.bucket).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while backends.guards.storage.state() != BreakerState::HalfOpen {
        assert!(
            Instant::now() < deadline,
            "the breaker never turned half-open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ctx.put("data/z".into(), b"3".to_vec()).await.unwrap();
    assert_eq!(backends.guards.storage.state(), BreakerState::Closed);
    assert_eq!(ctx.get("data/z".into()).await.unwrap(), Some(b"3".to_vec()));
}
