//! The Redis cache backend against a real redis-server: the backend alone, the
//! seed plugin through it, and the Kafka pipeline riding out a Redis outage.

use crate::kafka_support::*;
use crate::support::{event, example_manifest, redis, redis_on, wasm, TestHost};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_devkit::free_port;
use weir_host::capabilities::{CacheBackend, CacheError, RedisCache};
use weir_host::runtime::Outcome;

fn raw(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .unwrap()
        .get_connection()
        .expect("connect to the test redis")
}

fn keys(url: &str) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut raw(url)).unwrap();
    keys.sort();
    keys
}

/// Call `get` until Redis answers (it reconnects by itself), or fail after PATIENCE.
async fn until_answered(cache: &RedisCache) {
    let deadline = Instant::now() + PATIENCE;
    while let Err(e) = cache.get("probe").await {
        assert!(Instant::now() < deadline, "redis never answered again: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
#[ignore = "needs redis-server (`just redis`); `just test` installs it and runs the ignored tests"]
async fn the_redis_backend_stores_expires_and_deletes_by_prefix() {
    let Some(r) = redis() else { return };
    let url = r.server.url();
    let cache = RedisCache::connect(&url, Duration::from_secs(2)).unwrap();
    let mut raw = raw(&url);

    let binary = vec![0u8, 159, 146, 150, 255];
    cache.set("ns:bin", binary.clone(), None).await.unwrap();
    assert_eq!(cache.get("ns:bin").await.unwrap(), Some(binary));
    assert_eq!(cache.get("ns:missing").await.unwrap(), None);

    cache
        .set("ns:ttl", b"v".to_vec(), Some(Duration::from_secs(60)))
        .await
        .unwrap();
    let pttl: i64 = redis::cmd("PTTL").arg("ns:ttl").query(&mut raw).unwrap();
    assert!((1..=60_000).contains(&pttl), "PTTL {pttl}");
    cache.set("ns:ttl", b"w".to_vec(), None).await.unwrap();
    let pttl: i64 = redis::cmd("PTTL").arg("ns:ttl").query(&mut raw).unwrap();
    assert_eq!(pttl, -1, "a set without TTL replaces the expiry too");

    assert!(cache.delete("ns:ttl").await.unwrap());
    assert!(!cache.delete("ns:ttl").await.unwrap());

    // More keys than one SCAN batch, and neighbours that must survive.
    let mut pipe = redis::pipe();
    for i in 0..1200 {
        pipe.cmd("SET").arg(format!("ns:many:{i}")).arg(i).ignore();
    }
    pipe.cmd("SET").arg("ns:manyx").arg(1).ignore();
    pipe.cmd("SET").arg("other:many:1").arg(1).ignore();
    // Glob characters in a prefix are literal.
    pipe.cmd("SET").arg("ns:a*1").arg(1).ignore();
    pipe.cmd("SET").arg("ns:ab1").arg(1).ignore();
    pipe.query::<()>(&mut raw).unwrap();
    assert_eq!(cache.delete_prefix("ns:many:").await.unwrap(), 1200);
    assert_eq!(cache.delete_prefix("ns:a*").await.unwrap(), 1);
    assert_eq!(
        keys(&url),
        vec!["ns:ab1", "ns:bin", "ns:manyx", "other:many:1"]
    );

    // A key of another type (as .NET's IDistributedCache writes: a hash) cannot be
    // read as a string: an invalid call, not an outage. Deleting it works.
    redis::cmd("HSET")
        .arg("ns:hash")
        .arg("data")
        .arg("x")
        .query::<()>(&mut raw)
        .unwrap();
    match cache.get("ns:hash").await {
        Err(CacheError::Invalid(m)) => assert!(m.contains("not a string"), "{m}"),
        other => panic!("expected an invalid call, got {other:?}"),
    }
    assert!(cache.delete("ns:hash").await.unwrap());
}

#[tokio::test]
#[ignore = "needs redis-server (`just redis`); `just test` installs it and runs the ignored tests"]
async fn calls_are_unavailable_while_redis_is_down_and_work_again_when_it_is_back() {
    // Nothing listens on this port yet: the host can start without Redis.
    let port = free_port();
    let cache = RedisCache::connect(
        &format!("redis://127.0.0.1:{port}/0"),
        Duration::from_millis(500),
    )
    .unwrap();
    match cache.get("k").await {
        Err(CacheError::Unavailable(m)) => {
            assert!(m.contains(&format!("127.0.0.1:{port}")), "{m}")
        }
        other => panic!("expected unavailable, got {other:?}"),
    }

    let Some(mut r) = redis_on(Some(port)) else {
        return;
    };
    until_answered(&cache).await;
    cache.set("k", b"1".to_vec(), None).await.unwrap();

    // The server goes away under an established connection, then comes back empty.
    r.server.stop();
    assert!(matches!(
        cache.get("k").await,
        Err(CacheError::Unavailable(_))
    ));
    r.server.restart().unwrap();
    until_answered(&cache).await;
    assert_eq!(cache.get("k").await.unwrap(), None);
}

const DELETED: &str = r#"{"SchemaVersion": 2, "TrackId": "T1", "UserId": "user-42",
  "ObjectKey": "audio/user-42/T1.mp3", "WaveformObjectKey": "waveforms/user-42/T1.json",
  "FileSizeBytes": 5242880, "DeletedAt": "2026-11-20T10:00:00+00:00",
  "ScheduledDeletionAt": "2026-12-20T10:00:00+00:00", "CorrelationId": "c-1",
  "Timestamp": "2026-11-20T10:00:00.1234567+00:00"}"#;

#[tokio::test]
#[ignore = "needs redis-server (`just redis`); `just test` installs it and runs the ignored tests"]
async fn track_deletions_invalidates_entries_another_service_wrote_to_redis() {
    let Some(mut r) = redis() else { return };
    let url = r.server.url();
    let mut raw = raw(&url);
    // The API service's presigned URLs: a plain string, and a hash as .NET's
    // IDistributedCache (Microsoft.Extensions.Caching.StackExchangeRedis) stores them.
    redis::cmd("SET")
        .arg("novatune:presigned:user-42:T1")
        .arg("https://signed")
        .query::<()>(&mut raw)
        .unwrap();
    redis::cmd("HSET")
        .arg("novatune:presigned:user-42:T1:waveform")
        .arg("absexp")
        .arg("-1")
        .arg("data")
        .arg("https://signed")
        .query::<()>(&mut raw)
        .unwrap();
    for other in [
        "novatune:presigned:user-42:T2",
        "other:presigned:user-42:T1",
    ] {
        redis::cmd("SET")
            .arg(other)
            .arg("x")
            .query::<()>(&mut raw)
            .unwrap();
    }

    let cache = Arc::new(RedisCache::connect(&url, Duration::from_millis(500)).unwrap());
    let host = TestHost::with_cache_backend(cache);
    let mut plugin = host
        .load(
            &wasm("track-deletions"),
            &example_manifest("track-deletions"),
        )
        .await;
    let deleted = event("track-deletions", 0, Some("user-42"), DELETED.as_bytes());
    let report = plugin.handle(&deleted).await;
    assert_eq!(report.outcome, Outcome::Handled, "{:?}", report.calls);
    assert_eq!(
        keys(&url),
        vec![
            "novatune:presigned:user-42:T2",
            "other:presigned:user-42:T1"
        ]
    );
    // The same event again: same state.
    assert_eq!(plugin.handle(&deleted).await.outcome, Outcome::Handled);
    assert_eq!(keys(&url).len(), 2);

    // Redis down: the plugin's cache call fails as unavailable, and it asks for a retry.
    r.server.stop();
    match plugin.handle(&deleted).await.outcome {
        Outcome::Retry(reason) => assert!(reason.contains("127.0.0.1"), "{reason}"),
        other => panic!("expected a retry, got {other:?}"),
    }
}

/// A TrackDeletedEvent for track `T{i}`, keyed by its user.
fn track_deleted(i: usize) -> (String, serde_json::Value) {
    let user = format!("user-{}", i % 4);
    let body = serde_json::json!({
        "SchemaVersion": 2, "TrackId": format!("T{i}"), "UserId": user,
        "ObjectKey": format!("audio/{user}/T{i}.mp3"), "FileSizeBytes": 1000,
        "DeletedAt": "2026-11-20T10:00:00Z", "ScheduledDeletionAt": "2026-12-20T10:00:00Z",
        "CorrelationId": format!("c-{i}"), "Timestamp": "2026-11-20T10:00:00Z", "seq": i,
    });
    (user, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`), redis-server (`just redis`); `just test` installs it and runs the ignored tests"]
async fn the_pipeline_rides_out_a_redis_outage_without_losing_or_dead_lettering_events() {
    let Some(b) = broker() else { return };
    if crate::support::redis_server().is_none() {
        return;
    }
    let prefix = "rc";
    b.create_topics(&["rc-track-deletions", "rc-track-deletions.dlq"], 3)
        .await;
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/0");

    // track-deletions as in examples/, retrying for as long as the test needs.
    let files = HostFiles::new(&b.bootstrap(), prefix);
    let manifest = std::fs::read_to_string(example_manifest("track-deletions"))
        .unwrap()
        .replace("attempts = 5", "attempts = 1000")
        .replace("initial_backoff = \"500ms\"", "initial_backoff = \"50ms\"")
        .replace("max_backoff = \"30s\"", "max_backoff = \"200ms\"");
    files.install("track-deletions", &wasm("track-deletions"), &manifest);
    files.write_config(
        &b.bootstrap(),
        prefix,
        &format!("[cache]\nbackend = \"redis\"\nurl = \"{url}\"\ntimeout = \"300ms\"\n"),
    );
    // The deletions scheduled so far, as a restarted host reads them back from
    // the schedule topic.
    let config = files.load();
    let scheduled = || {
        let config = config.clone();
        async move {
            let topic = config.schedule_topic().unwrap();
            match weir_host::schedule_topic::pending_in_topic(&config, &topic).await {
                Ok(pending) => pending.len(),
                Err(_) => 0, // the topic is created when the plugin starts
            }
        }
    };
    let producer = b.producer();
    let produce_range = |range: std::ops::Range<usize>| {
        let producer = producer.clone();
        async move {
            for i in range {
                let (user, body) = track_deleted(i);
                produce(&producer, "rc-track-deletions", &user, body).await;
            }
        }
    };
    let wait_scheduled = |n: usize| async move {
        let deadline = Instant::now() + PATIENCE;
        while scheduled().await < n {
            assert!(Instant::now() < deadline, "never {n} deletions scheduled");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };

    // 1. Redis is not there when the host starts: events are retried, not lost.
    produce_range(0..10).await;
    let host = InProcessHost::start(files.load());
    let before = files
        .wait_status("track-deletions", "retrying", |s| {
            s.stats.as_ref().is_some_and(|st| st.retries >= 3)
        })
        .await;
    assert_eq!(before.stats.unwrap().handled, 0);
    let mut r = redis_on(Some(port)).expect("redis-server was found above");
    wait_scheduled(10).await;

    // 2. Redis goes away under an established connection, and comes back.
    r.server.stop();
    let retries = files
        .wait_status("track-deletions", "reported", |s| s.stats.is_some())
        .await
        .stats
        .unwrap()
        .retries;
    produce_range(10..20).await;
    files
        .wait_status("track-deletions", "retrying again", |s| {
            s.stats.as_ref().is_some_and(|st| st.retries >= retries + 3)
        })
        .await;
    r.server.restart().unwrap();
    wait_scheduled(20).await;

    // 3. Redis up: the entries of later deletions are invalidated, others untouched.
    let mut raw = raw(&url);
    for i in 20..30 {
        let (user, _) = track_deleted(i);
        redis::cmd("SET")
            .arg(format!("novatune:presigned:{user}:T{i}"))
            .arg("https://signed")
            .query::<()>(&mut raw)
            .unwrap();
    }
    redis::cmd("SET")
        .arg("novatune:presigned:user-1:T99")
        .arg("keep")
        .query::<()>(&mut raw)
        .unwrap();
    produce_range(20..30).await;
    wait_scheduled(30).await;
    let report = host.stop().await;

    assert_eq!(keys(&url), vec!["novatune:presigned:user-1:T99"]);
    let stats = report.plugins["track-deletions"];
    println!(
        "redis outage: 30 events, {} handled, {} retries while Redis was down, {} dead-lettered",
        stats.handled, stats.retries, stats.dead_lettered
    );
    assert_eq!(stats.dead_lettered, 0);
    assert!(stats.handled >= 30, "{stats:?}");
    assert_eq!(b.count("rc-track-deletions.dlq"), 0);
}
