//! The Weir demo: a local broker, the example plugins, the sample events, and what
//! the host did with them.
//!
//! `just demo` runs it. It starts Apache Kafka (one KRaft node) on a free port (or
//! uses the broker in `WEIR_KAFKA__BOOTSTRAP_SERVERS`), loads `examples/weir.toml` with its plugin
//! directory, seeds the cache with the presigned URLs the track-deletion events
//! should invalidate, produces every sample event, waits until they are handled,
//! prints the effects, and stops the host cleanly (drain, commit).

use anyhow::Context;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use std::path::Path;
use std::time::Duration;
use weir_devkit as devbroker;
use weir_devkit::DevBroker;
use weir_host::capabilities::{Backends, CacheBackend, DeletionSchedule, MemoryCache};
use weir_host::config::Config;
use weir_host::pipeline::outputs::Outputs;

const SAMPLES: &[(&str, &str)] = &[
    ("track-deletions", "examples/events/track-deletions.jsonl"),
    (
        "track-deletions",
        "examples/events/track-deletions-bad.jsonl",
    ),
    ("audio-events", "examples/events/audio-uploaded.jsonl"),
    ("item-events", "examples/events/item-events.jsonl"),
];

const PRESIGNED: &[&str] = &[
    "novatune:presigned:user-42:01HXKTRACK0001",
    "novatune:presigned:user-42:01HXKTRACK0001:waveform",
    "novatune:presigned:user-7:01HXKTRACK0002",
    "novatune:presigned:user-42:01HXKTRACK0099",
];

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("start the async runtime");
    let result = runtime.block_on(demo());
    // The runtime goes first: its tasks (and the Kafka clients they hold) end
    // before the broker does, so none logs that its broker went away.
    drop(runtime);
    match result {
        Ok(broker) => {
            drop(broker);
            let _ = std::fs::remove_dir_all(work_dir());
            println!("done.");
        }
        Err(e) => {
            eprintln!("demo failed: {e:#}");
            std::process::exit(1);
        }
    }
}

/// The demo; the broker it started, to stop once every client is gone.
async fn demo() -> anyhow::Result<Option<DevBroker>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,weir::plugin=off")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::env::set_current_dir(&root)?;
    let work = work_dir();

    println!("== Weir demo ==");
    let given = std::env::var("WEIR_KAFKA__BOOTSTRAP_SERVERS").ok();
    let _broker: Option<DevBroker>;
    let bootstrap = match given {
        Some(b) => {
            println!("broker: {b} (from WEIR_KAFKA__BOOTSTRAP_SERVERS)");
            _broker = None;
            b
        }
        None => {
            let kafka = devbroker::find_kafka()
                .context("Apache Kafka is not installed: run `just kafka` (one-time), or set WEIR_KAFKA__BOOTSTRAP_SERVERS")?;
            println!(
                "broker: starting Apache Kafka {} (one KRaft node)...",
                devbroker::KAFKA_VERSION
            );
            let started = std::time::Instant::now();
            let broker =
                DevBroker::start(&kafka, &work.join("broker")).map_err(anyhow::Error::msg)?;
            let b = broker.bootstrap();
            println!(
                "broker: Apache Kafka on {b}, started for this demo in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            _broker = Some(broker);
            b
        }
    };

    // examples/weir.toml, then the demo's broker and a scratch storage directory,
    // then WEIR_* environment overrides.
    let config_path = Path::new("examples/weir.toml");
    let figment = Figment::new()
        .merge(Toml::file(config_path))
        .merge(Serialized::default("kafka.bootstrap_servers", &bootstrap))
        .merge(Serialized::default("storage.dir", work.join("storage")))
        .merge(Serialized::default(
            "kafka.consumer.commit_interval",
            "200ms",
        ))
        .merge(Serialized::default("kafka.consumer.lag_interval", "500ms"))
        // A free port, so the demo runs beside a host already on 9464.
        .merge(Serialized::default(
            "admin.listen",
            format!("127.0.0.1:{}", devbroker::free_port()),
        ))
        .merge(Env::prefixed("WEIR_").split("__"));
    let config = Config::from_figment(figment, config_path)?;
    let namer = config.namer()?;
    println!(
        "config: {} (topics: {})",
        config_path.display(),
        namer.full_name("<name>")
    );

    let cache = std::sync::Arc::new(MemoryCache::new(64 * 1024 * 1024));
    let mut backends = Backends::local(&config.storage.dir)?;
    backends.cache = cache.clone();
    // As `weir run` does: scheduled deletions are records on the schedule topic.
    backends.deletions = DeletionSchedule::in_topic();
    for key in PRESIGNED {
        cache
            .set(key, b"https://storage.example/signed-url".to_vec(), None)
            .await?;
    }
    println!("\ncache before: {}", cache.keys().join(", "));

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let host = tokio::spawn(weir_host::run::run_with(
        config.clone(),
        backends.clone(),
        async move {
            let _ = stopped.await;
        },
    ));

    // Produce the samples once the host has created its topics.
    let sink = Outputs::new(&config)?;
    let mut produced = 0;
    for (topic, file) in SAMPLES {
        let full = namer.full_name(topic);
        wait_for_topic(&bootstrap, &full).await?;
        let events =
            weir_host::invoke::read_events(Some(Path::new(file)), &[topic.to_string()], &namer)?;
        for (_, e) in &events {
            sink.send(&full, e.key.as_deref(), &e.payload, &e.headers)
                .await?;
        }
        println!("produced {} event(s) from {file} to {full}", events.len());
        produced += events.len();
    }

    println!("\nwaiting for the host to handle {produced} events...");
    let patience = Duration::from_secs(60);
    let read = |topic: &str, min: usize| {
        devbroker::read_topic(&bootstrap, &namer.full_name(topic), min, patience)
            .map_err(anyhow::Error::msg)
    };
    let waveform_jobs = read("waveform-jobs", 2)?;
    let mut envelopes = Vec::new();
    for t in [
        "customservice.item.created",
        "customservice.item.updated",
        "customservice.item.deleted",
    ] {
        envelopes.extend(read(t, 1)?.into_iter().map(|r| (t, r)));
    }
    let dead = devbroker::read_topic(
        &bootstrap,
        &config.dlq_topic(&namer.full_name("track-deletions"), "track-deletions"),
        4,
        patience,
    )
    .map_err(anyhow::Error::msg)?;
    let deletions = loop {
        let pending = backends.deletions.list().await?;
        if pending.len() >= 4 {
            break pending;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    println!(
        "\n-- track-deletions: cache invalidated, deletions scheduled (records on {}) --",
        config.schedule_topic()?
    );
    println!("cache after:  {}", cache.keys().join(", "));
    for d in &deletions {
        println!(
            "scheduled:    {}  due {}",
            d.key,
            weir_host::capabilities::storage::rfc3339(d.due_ms)
        );
    }
    println!(
        "\n-- track-deletions: bad events dead-lettered to {} --",
        config.dlq_topic(&namer.full_name("track-deletions"), "track-deletions")
    );
    for r in &dead {
        println!(
            "offset {}  {}",
            r.header("weir-original-offset").unwrap_or("?"),
            r.header("weir-error").unwrap_or("?")
        );
    }
    println!(
        "\n-- audio-uploaded: upload recorded, waveform jobs published to {} --",
        namer.full_name("waveform-jobs")
    );
    for r in &waveform_jobs {
        println!(
            "key={}  correlation-id={}  {}",
            r.key.as_deref().unwrap_or(""),
            r.header("correlation-id").unwrap_or("-"),
            r.text()
        );
    }
    println!("\n-- envelope-router: envelopes routed by event type, keyed by userId --");
    for (topic, r) in &envelopes {
        println!(
            "{}  key={}  ce_type={}  ce_id={}",
            namer.full_name(topic),
            r.key.as_deref().unwrap_or(""),
            r.header("ce_type").unwrap_or("-"),
            r.header("ce_id").unwrap_or("-")
        );
        println!("    {}", r.text());
    }

    show_admin(&config).await?;

    println!("\nstopping the host (drain, commit)...");
    let _ = stop.send(());
    let report = host.await??;
    for (plugin, s) in &report.plugins {
        println!(
            "{plugin}: {} handled, {} dead-lettered, {} retries, {} published",
            s.handled, s.dead_lettered, s.retries, s.published
        );
    }
    Ok(_broker)
}

/// The demo's scratch directory (the broker's data, the storage).
fn work_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("weir-demo-{}", std::process::id()))
}

/// What an operator sees through the admin API (and `weir plugins` / `weir pause`).
async fn show_admin(config: &Config) -> anyhow::Result<()> {
    use weir_host::admin::client;
    let addr = client::address(config)?;
    println!("\n-- admin API on http://{addr} --");
    let (_, health) = client::call(&addr, "GET", "/health").await?;
    let health: serde_json::Value = serde_json::from_str(&health)?;
    println!("GET /health   {}", health["status"].as_str().unwrap_or("?"));
    for (name, check) in health["checks"].as_object().into_iter().flatten() {
        println!(
            "    {name:<11} {:<9}  {}",
            check["status"].as_str().unwrap_or("?"),
            check["description"].as_str().unwrap_or("")
        );
    }
    // Lag is measured every lag_interval: wait for the figures to settle at 0.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let plugins = loop {
        let (_, body) = client::call(&addr, "GET", "/plugins").await?;
        let list: Vec<serde_json::Value> = serde_json::from_str(&body)?;
        let settled = list
            .iter()
            .all(|p| p["lag"] == 0 && !p["partitions"].as_array().is_none_or(Vec::is_empty));
        if settled || std::time::Instant::now() > deadline {
            break list;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("GET /plugins");
    for p in &plugins {
        println!(
            "    {:<16} {:<8} lag {}  in-flight {}  handled {}",
            p["name"].as_str().unwrap_or(""),
            p["state"].as_str().unwrap_or(""),
            p["lag"],
            p["in_flight"],
            p["stats"]["handled"]
        );
    }
    let (_, metrics) = client::call(&addr, "GET", "/metrics").await?;
    println!("GET /metrics  (Prometheus; a few of its lines)");
    for line in metrics.lines().filter(|l| {
        l.starts_with("weir_events_total{plugin=\"track-deletions\"")
            || l.starts_with("weir_handle_duration_seconds_count")
    }) {
        println!("    {line}");
    }
    let (_, paused) = client::call(&addr, "POST", "/plugins/audio-uploaded/pause").await?;
    let paused: serde_json::Value = serde_json::from_str(&paused)?;
    println!(
        "POST /plugins/audio-uploaded/pause   -> {}",
        paused["state"].as_str().unwrap_or("?")
    );
    let (_, resumed) = client::call(&addr, "POST", "/plugins/audio-uploaded/resume").await?;
    let resumed: serde_json::Value = serde_json::from_str(&resumed)?;
    println!(
        "POST /plugins/audio-uploaded/resume  -> {}",
        resumed["state"].as_str().unwrap_or("?")
    );
    // Offsets moved on every host of the group: first what would move, then the move.
    let reset = "/plugins/envelope-router/offsets/reset?to=earliest";
    let (code, plan) = client::call(&addr, "POST", &format!("{reset}&dry_run=true")).await?;
    let plan: serde_json::Value = serde_json::from_str(&plan)?;
    if code != 200 {
        println!("POST {reset}&dry_run=true  -> {code}: {}", plan["error"]);
        return Ok(());
    }
    println!("POST {reset}&dry_run=true");
    for p in plan["partitions"].as_array().into_iter().flatten() {
        let committed = p["committed"]
            .as_i64()
            .map_or("none".into(), |c| c.to_string());
        println!(
            "    {}/{}  committed {committed}  -> {}",
            p["topic"].as_str().unwrap_or(""),
            p["partition"],
            p["to"]
        );
    }
    let (code, moved) = client::call(&addr, "POST", reset).await?;
    let moved: serde_json::Value = serde_json::from_str(&moved)?;
    if code != 200 {
        println!("POST {reset}  -> {code}: {}", moved["error"]);
        return Ok(());
    }
    let partitions: usize = moved["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| h["seek"]["moved"].as_array().map_or(0, Vec::len))
        .sum();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let handled = loop {
        let (_, body) = client::call(&addr, "GET", "/plugins/envelope-router").await?;
        let v: serde_json::Value = serde_json::from_str(&body)?;
        let handled = v["stats"]["handled"].as_u64().unwrap_or(0);
        if handled >= 6 || std::time::Instant::now() > deadline {
            break handled;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "POST {reset}  -> {partitions} partition(s) moved; envelope-router has now handled {handled} events (its 3, again)"
    );
    Ok(())
}

async fn wait_for_topic(bootstrap: &str, topic: &str) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (b, t) = (bootstrap.to_string(), topic.to_string());
        let exists = tokio::task::spawn_blocking(move || {
            use rdkafka::consumer::{BaseConsumer, Consumer};
            let c: BaseConsumer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &b)
                .create()
                .ok()?;
            let md = c.fetch_metadata(None, Duration::from_secs(5)).ok()?;
            Some(md.topics().iter().any(|x| x.name() == t))
        })
        .await?
        .unwrap_or(false);
        if exists {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("topic {topic} did not appear: is the host running? (see the log above)");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
