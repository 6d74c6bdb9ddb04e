//! `weir run`: consume every plugin's topics and drive its workers until shutdown.

use crate::capabilities::Backends;
use crate::config::Config;
use crate::dispatch::{self, DeadLetters, Stats, StatsSnapshot, Workers};
use crate::kafka::sink::Sink;
use crate::kafka::source::{Source, SourceSettings};
use crate::manifest::Manifest;
use crate::runtime::{Plugin, Runtime};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::watch;

/// What a run did, per plugin.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RunReport {
    pub plugins: BTreeMap<String, StatsSnapshot>,
}

/// A plugin found in the plugin directory: `<name>.wasm` beside `<name>.toml`.
#[derive(Debug, Clone)]
pub struct PluginFiles {
    pub name: String,
    pub wasm: PathBuf,
    pub manifest: PathBuf,
}

/// The plugin pairs in `dir`, sorted by name. A lone `.wasm` or `.toml` is reported
/// and skipped.
pub fn discover(dir: &Path) -> Result<Vec<PluginFiles>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read the plugin directory {}: {e}", dir.display()))?;
    let mut stems: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let (Some(stem), Some(ext)) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|s| s.to_str()),
        ) else {
            continue;
        };
        let slot = stems.entry(stem.to_string()).or_default();
        match ext {
            "wasm" => slot.0 = true,
            "toml" => slot.1 = true,
            _ => {}
        }
    }
    let mut found = Vec::new();
    for (name, (wasm, toml)) in stems {
        match (wasm, toml) {
            (true, true) => found.push(PluginFiles {
                wasm: dir.join(format!("{name}.wasm")),
                manifest: dir.join(format!("{name}.toml")),
                name,
            }),
            (true, false) => {
                tracing::warn!(plugin = %name, "{name}.wasm has no manifest {name}.toml beside it; skipped")
            }
            (false, true) => {
                tracing::warn!(plugin = %name, "{name}.toml has no component {name}.wasm beside it; skipped")
            }
            (false, false) => {}
        }
    }
    Ok(found)
}

struct Running {
    name: String,
    source: Source,
    workers: Workers,
    stats: Arc<Stats>,
}

/// Run until `shutdown` completes, then drain, commit and return what happened.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<RunReport, String> {
    let backends = Backends::local(&config.storage.dir)?;
    run_with(config, backends, shutdown).await
}

/// [`run`] with given capability backends (to share them with the caller).
pub async fn run_with(
    config: Config,
    backends: Backends,
    shutdown: impl Future<Output = ()>,
) -> Result<RunReport, String> {
    let namer = config.namer()?;
    let sweeper = backends
        .deletions
        .clone()
        .spawn_sweeper(config.storage.sweep_interval);
    let runtime = Runtime::new().map_err(|e| format!("cannot start the runtime: {e}"))?;

    // Load every plugin first: a bad one is reported and skipped, the rest run.
    let mut loaded: Vec<Plugin> = Vec::new();
    for files in discover(&config.plugins.dir)? {
        let plugin = match Manifest::load(&files.manifest) {
            Err(e) => Err(e.to_string()),
            Ok(manifest) => runtime
                .load(&files.wasm, manifest, backends.clone())
                .await
                .map_err(|e| e.to_string()),
        };
        match plugin {
            Ok(p) => {
                tracing::info!(plugin = %p.name(), sha256 = %&p.content_hash()[..12], topics = ?p.manifest().topics, "plugin loaded");
                loaded.push(p);
            }
            Err(e) => tracing::error!(plugin = %files.name, "plugin rejected: {e}"),
        }
    }
    if loaded.is_empty() {
        tracing::warn!(dir = %config.plugins.dir.display(), "no plugin loaded: nothing to consume");
    }

    let existing = crate::kafka::wait_for_broker(&config).await?;
    let mut needed = BTreeSet::new();
    for p in &loaded {
        let m = p.manifest();
        for t in &m.topics {
            let full = namer.full_name(t);
            needed.insert(config.dlq_topic(&full, &m.name));
            needed.insert(full);
        }
        if let Some(publish) = &m.capabilities.publish {
            needed.extend(publish.topics.iter().map(|t| namer.full_name(t)));
        }
    }
    crate::kafka::ensure_topics(&config, &existing, &needed).await?;

    let sink = Sink::new(&config)?;
    let (stopping_tx, stopping_rx) = watch::channel(false);
    let mut running = Vec::new();
    for plugin in loaded {
        let m = plugin.manifest().clone();
        let workers = m.consumer.workers as usize;
        let mut instances = vec![plugin.fork()];
        instances.extend((1..workers).map(|_| plugin.fork()));
        drop(plugin);
        let (router, receivers) = dispatch::queues(workers);
        let settings = SourceSettings {
            plugin: m.name.clone(),
            group: m
                .consumer
                .group
                .clone()
                .unwrap_or_else(|| config.group_for(&m.name)),
            topics: m.topics.iter().map(|t| namer.full_name(t)).collect(),
            max_in_flight: m.consumer.max_in_flight as usize,
            drain_timeout: config.shutdown.drain_timeout,
        };
        let group = settings.group.clone();
        let (source, acker) = Source::start(&config, namer.clone(), settings, move |e| {
            router.dispatch(e)
        })?;
        let dlq_config = config.clone();
        let plugin_name = m.name.clone();
        let dead_letters = DeadLetters {
            topic_for: Arc::new(move |topic| dlq_config.dlq_topic(topic, &plugin_name)),
        };
        let stats = Arc::new(Stats::default());
        let workers = Workers::spawn(
            instances,
            receivers,
            sink.clone(),
            acker,
            dead_letters,
            stats.clone(),
            stopping_rx.clone(),
        );
        tracing::info!(plugin = %m.name, group = %group, workers = m.consumer.workers, "consuming");
        running.push(Running {
            name: m.name.clone(),
            source,
            workers,
            stats,
        });
    }
    tracing::info!(plugins = running.len(), "weir is running");

    shutdown.await;
    tracing::info!("shutting down: draining in-flight events");
    let _ = stopping_tx.send(true);
    for r in &running {
        r.source.stop();
    }
    let mut report = RunReport::default();
    for r in running {
        let Running {
            name,
            source,
            workers,
            stats,
        } = r;
        tokio::task::spawn_blocking(move || source.join())
            .await
            .map_err(|e| e.to_string())?;
        workers.abort();
        let snapshot = stats.snapshot();
        tracing::info!(plugin = %name, handled = snapshot.handled, retries = snapshot.retries, dead_lettered = snapshot.dead_lettered, published = snapshot.published, abandoned = snapshot.abandoned, "plugin stopped");
        report.plugins.insert(name, snapshot);
    }
    sweeper.abort();
    tracing::info!("stopped");
    Ok(report)
}
