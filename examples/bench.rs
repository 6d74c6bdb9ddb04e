//! `just bench`: how fast Weir is, measured.
//!
//! 1. The runtime alone (no broker): `track-deletions` handling distinct events
//!    through its capabilities, one instance, events/s and latency percentiles.
//! 2. End to end through a real broker (nisshi on a free port): N events already
//!    on a 3-partition topic, the `echo` plugin (1, 4, 16 workers) republishing each;
//!    the time from the host's start until every output is acknowledged on the
//!    output topic: consume + wasm + publish (acks=all) + offset commits.
//!
//! Numbers depend on the machine; docs/benchmarks.md records the ones measured.

use std::path::Path;
use std::time::{Duration, Instant};
use weir_host::capabilities::Backends;
use weir_host::devbroker::{self, BrokerStorage, DevBroker};
use weir_host::event::EventRecord;

#[tokio::main]
async fn main() -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,weir::plugin=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::env::set_current_dir(&root).map_err(|e| e.to_string())?;
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let wasm_dir = Path::new(&target).join("wasm32-wasip2/release");
    let work = std::env::temp_dir().join(format!("weir-bench-{}", std::process::id()));

    println!("| benchmark | figure |\n| --- | --- |");
    runtime_only(&wasm_dir, &work).await?;
    broker_alone(&work.join("broker-alone")).await?;
    for workers in [1, 4, 16] {
        end_to_end(&wasm_dir, &work.join(format!("e2e-{workers}")), workers).await?;
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

async fn runtime_only(wasm_dir: &Path, work: &Path) -> Result<(), String> {
    let n = 20_000;
    let runtime = weir_host::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let manifest =
        weir_host::manifest::Manifest::load(Path::new("examples/plugins/track-deletions.toml"))
            .map_err(|e| e.to_string())?;
    let backends = Backends::local(&work.join("storage"))?;
    let mut plugin = runtime
        .load(&wasm_dir.join("track_deletions.wasm"), manifest, backends)
        .await
        .map_err(|e| e.to_string())?;
    let mut latencies = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let payload = format!(
            r#"{{"SchemaVersion":2,"TrackId":"t{i}","UserId":"u{}","ObjectKey":"audio/u/t{i}.mp3","FileSizeBytes":1,"DeletedAt":"2026-11-20T10:00:00Z","ScheduledDeletionAt":"2026-12-20T10:00:00Z","CorrelationId":"c{i}","Timestamp":"2026-11-20T10:00:00Z"}}"#,
            i % 100
        );
        let event = EventRecord {
            topic: "dev-track-deletions".into(),
            logical_topic: "track-deletions".into(),
            partition: 0,
            offset: i as i64,
            timestamp_ms: None,
            key: None,
            payload: payload.into_bytes(),
            headers: vec![],
        };
        let t = Instant::now();
        let report = plugin.handle(&event).await;
        latencies.push(t.elapsed());
        if !report.outcome.is_handled() {
            return Err(format!("event {i}: {:?}", report.outcome));
        }
    }
    let total = started.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "| runtime only: track-deletions, {n} events (2 cache deletes + 1 scheduled deletion each, local storage) | {:.0} events/s; p50 {:?}, p99 {:?} |",
        n as f64 / total.as_secs_f64(),
        pct(0.50),
        pct(0.99)
    );
    Ok(())
}

/// What the broker and the producer manage without the host: the ceiling the
/// end-to-end figures are to be read against.
async fn broker_alone(work: &Path) -> Result<(), String> {
    let binary = devbroker::find_nisshi().ok_or("nisshi is not installed: `just broker`")?;
    let broker = DevBroker::start(&binary, &work.join("broker"), BrokerStorage::Memory)?;
    let bootstrap = broker.bootstrap();
    devbroker::create_topics(&bootstrap, &["bench-in"], 3).await?;
    std::fs::write(
        work.join("weir.toml"),
        format!("[kafka]\nbootstrap_servers = \"{bootstrap}\"\n[topics]\nprefix = \"bench\"\n[admin]\nenabled = false\n"),
    )
    .map_err(|e| e.to_string())?;
    let config =
        weir_host::config::Config::load(&work.join("weir.toml")).map_err(|e| e.to_string())?;
    let sink = weir_host::kafka::sink::Sink::new(&config)?;
    let one = |i: i64| {
        let sink = sink.clone();
        async move {
            let key = format!("k{}", i % 100);
            sink.send("bench-in", Some(key.as_bytes()), b"{}", &[])
                .await
        }
    };
    let n = 2_000;
    let started = Instant::now();
    for i in 0..n {
        one(i).await?;
    }
    let sequential = started.elapsed();
    let started = Instant::now();
    futures::future::try_join_all((0..20_000).map(one)).await?;
    let concurrent = started.elapsed();
    println!(
        "| broker alone: {n} messages, one at a time, each ack awaited (a worker's pattern) | {:.0} messages/s ({:.2} ms per round trip) |",
        n as f64 / sequential.as_secs_f64(),
        sequential.as_secs_f64() * 1000.0 / n as f64
    );
    println!(
        "| broker alone: 20000 messages sent at once (acks=all) | {:.0} messages/s |",
        20_000.0 / concurrent.as_secs_f64()
    );
    Ok(())
}

async fn end_to_end(wasm_dir: &Path, work: &Path, workers: usize) -> Result<(), String> {
    let n: i64 = 20_000;
    let binary = devbroker::find_nisshi().ok_or("nisshi is not installed: `just broker`")?;
    let broker = DevBroker::start(&binary, &work.join("broker"), BrokerStorage::Memory)?;
    let bootstrap = broker.bootstrap();
    devbroker::create_topics(&bootstrap, &["bench-in", "bench-out", "bench-in.dlq"], 3).await?;

    let plugins = work.join("plugins");
    std::fs::create_dir_all(&plugins).map_err(|e| e.to_string())?;
    std::fs::copy(wasm_dir.join("echo.wasm"), plugins.join("echo.wasm"))
        .map_err(|e| e.to_string())?;
    std::fs::write(
        plugins.join("echo.toml"),
        format!("name = \"echo\"\ntopics = [\"in\"]\n[consumer]\nworkers = {workers}\nmax_in_flight = 1000\n[capabilities.cache]\n[capabilities.publish]\ntopics = [\"out\"]\n"),
    )
    .map_err(|e| e.to_string())?;
    let config_path = work.join("weir.toml");
    std::fs::write(
        &config_path,
        format!("[kafka]\nbootstrap_servers = \"{bootstrap}\"\n[topics]\nprefix = \"bench\"\n[admin]\nenabled = false\n"),
    )
    .map_err(|e| e.to_string())?;
    let config = weir_host::config::Config::load(&config_path).map_err(|e| e.to_string())?;

    // Load the input first, so the measurement covers the host only.
    let sink = weir_host::kafka::sink::Sink::new(&config)?;
    let sends = (0..n).map(|i| {
        let sink = sink.clone();
        async move {
            let payload = format!(r#"{{"seq":{i},"key":"k{}"}}"#, i % 100);
            let key = format!("k{}", i % 100);
            sink.send("bench-in", Some(key.as_bytes()), payload.as_bytes(), &[])
                .await
        }
    });
    futures::future::try_join_all(sends).await?;

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let host = tokio::spawn(weir_host::run::run(config, async move {
        let _ = stopped.await;
    }));
    loop {
        let b = bootstrap.clone();
        let done = tokio::task::spawn_blocking(move || count(&b, "bench-out"))
            .await
            .map_err(|e| e.to_string())??;
        if done >= n {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            return Err(format!("only {done} of {n} outputs after 300 s"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    let _ = stop.send(());
    let report = host.await.map_err(|e| e.to_string())??;
    println!(
        "| end to end: {n} events on 3 partitions, echo plugin, {workers} worker(s), outputs acked (acks=all), start-up included | {:.0} events/s ({:.1} s; handled {}) |",
        n as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        report.plugins["echo"].handled
    );
    Ok(())
}

fn count(bootstrap: &str, topic: &str) -> Result<i64, String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| e.to_string())?;
    let mut total = 0;
    for p in 0..3 {
        let (lo, hi) = c
            .fetch_watermarks(topic, p, Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        total += hi - lo;
    }
    Ok(total)
}
