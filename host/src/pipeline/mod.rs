//! The delivery path of one plugin, stage by stage:
//!
//! **fetch** (`fetch.rs`: one consumer thread reads records in batches) →
//! **lanes** (`lanes.rs`: per-(partition, key) order, retries block one lane) →
//! **plugin** (`handle.rs`: workers call the plugin, a batch per call, and settle
//! each outcome) → **outputs** (`outputs.rs`: records handed to the idempotent
//! producer without waiting) → **acknowledgements** (`acks.rs`: delivery reports
//! count each event down) → **offsets** (`offsets.rs`: the committed position is
//! the end of the finished prefix; a failed delivery rewinds its partition).
//!
//! Nothing in the event path waits for the broker: the only waits are
//! backpressure (bounded events and bytes in flight per plugin, librdkafka's
//! queue) and a retry's backoff, which holds back one lane. Each stage imports
//! only the stages after it (and `acks`); this module wires them together.

pub mod acks;
pub mod fetch;
pub mod handle;
pub mod lag;
pub mod lanes;
pub mod offsets;
pub mod outputs;
pub mod stats;
pub mod transaction;

use fetch::{Fetch, FetchSettings, Shared};
use handle::{WorkerContext, Workers};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// Why a plugin's pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("plugin {plugin}: cannot create its {what}: {source}")]
    Client {
        plugin: String,
        what: &'static str,
        source: Box<rdkafka::error::KafkaError>,
    },
    #[error("plugin {plugin}: cannot subscribe to {topics:?}: {source}")]
    Subscribe {
        plugin: String,
        topics: Vec<String>,
        source: Box<rdkafka::error::KafkaError>,
    },
    #[error("plugin {plugin}: cannot start its transactional producer (delivery = \"exactly-once\"): {source}")]
    Transaction {
        plugin: String,
        source: Box<transaction::TransactionError>,
    },
    #[error("cannot start the {what} thread: {source}")]
    Thread {
        what: &'static str,
        source: std::io::Error,
    },
}

/// What a plugin's pipeline is made from besides its manifest and the config.
pub struct PluginWiring {
    pub versions: Arc<crate::versions::Versions>,
    pub outputs: outputs::Outputs,
    /// Where its scheduled deletions go (the schedule topic), if it has storage.
    pub schedule: Option<handle::ScheduleOutput>,
    pub stats: Arc<stats::Stats>,
    /// Set by an operator: consumption paused.
    pub paused: Arc<AtomicBool>,
    /// Set by an operator: this many workers instead of the manifest's (0: the manifest's).
    pub workers: Arc<std::sync::atomic::AtomicUsize>,
    pub tracing: crate::telemetry::Tracing,
}

/// One plugin's running pipeline.
pub struct Pipeline {
    group: String,
    topics: Vec<String>,
    fetch: Fetch,
    lag: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
    workers: Arc<Workers>,
    stopping: watch::Sender<bool>,
}

impl Pipeline {
    /// The pipeline of the plugin `wiring.versions` runs, shaped by its
    /// manifest (topics, group, workers, bounds, batch) and by `config`.
    pub fn for_plugin(
        config: &crate::config::Config,
        namer: crate::topics::TopicNamer,
        wiring: PluginWiring,
    ) -> Result<Pipeline, StartError> {
        let m = wiring.versions.current().plugin.manifest().clone();
        let group = m
            .consumer
            .group
            .clone()
            .unwrap_or_else(|| config.group_for(&m.name));
        let instance_id = config.instance_id_for(&m.name);
        let exactly_once = m.consumer.delivery == crate::manifest::DeliveryMode::ExactlyOnce;
        let transaction = exactly_once.then(|| transaction::TransactionSettings {
            id: transaction::transactional_id(&group, instance_id.as_deref()),
            interval: m.consumer.transaction_interval,
        });
        let settings = FetchSettings {
            plugin: m.name.clone(),
            group,
            instance_id,
            topics: m.topics.iter().map(|t| namer.full_name(t)).collect(),
            max_in_flight: m.consumer.max_in_flight as usize,
            max_in_flight_bytes: m.consumer.max_in_flight_bytes.as_u64() as usize,
            drain_timeout: config.shutdown.drain_timeout,
            stall_timeout: config.kafka.consumer.stall_timeout,
            paused: wiring.paused,
            transaction,
        };
        let dlq_config = config.clone();
        let plugin_name = m.name.clone();
        let context = WorkerContext {
            versions: wiring.versions,
            outputs: wiring.outputs,
            dead_letters: handle::DeadLetters {
                topic_for: Arc::new(move |topic| dlq_config.dlq_topic(topic, &plugin_name)),
            },
            schedule: wiring.schedule,
            stats: wiring.stats,
            stopping: watch::channel(false).1,
            limits: lanes::BatchLimits {
                events: m.consumer.batch as usize,
                bytes: 4 * 1024 * 1024,
            },
            tracing: wiring.tracing,
            exactly_once,
        };
        let workers = match wiring.workers.load(Ordering::SeqCst) {
            0 => m.consumer.workers as usize,
            set => set,
        };
        Self::start(config, namer, settings, workers, context)
    }

    /// The consumer group it reads in.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The full names of the topics it reads.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// Start `workers` workers with `context` (its `stopping` is replaced), then
    /// the consumer that feeds them.
    pub fn start(
        config: &crate::config::Config,
        namer: crate::topics::TopicNamer,
        settings: FetchSettings,
        workers: usize,
        mut context: WorkerContext,
    ) -> Result<Pipeline, StartError> {
        let (stopping, stopping_rx) = watch::channel(false);
        context.stopping = stopping_rx;
        let stats = context.stats.clone();
        let workers = Arc::new(Workers::spawn(context, workers));
        let group = settings.group.clone();
        let topics = settings.topics.clone();
        let plugin = settings.plugin.clone();
        let fetch = Fetch::start(config, namer, settings, stats, workers.clone())?;
        let lag_interval = config.kafka.consumer.lag_interval;
        let lag = if lag_interval.is_zero() {
            None
        } else {
            let stop = Arc::new(AtomicBool::new(false));
            let thread = lag::spawn(
                config,
                &group,
                &plugin,
                fetch.shared(),
                lag_interval,
                stop.clone(),
            )?;
            Some((stop, thread))
        };
        Ok(Pipeline {
            group,
            topics,
            fetch,
            lag,
            workers,
            stopping,
        })
    }

    /// What the consumer knows now: in-flight events, partitions, lag, stalls.
    pub fn shared(&self) -> Arc<Shared> {
        self.fetch.shared()
    }

    /// Why a stage of this pipeline died (a panic on the fetch thread or in a
    /// worker): its events no longer move, so the supervisor restarts it.
    pub fn failure(&self) -> Option<String> {
        self.fetch.failure().or_else(|| self.workers.failure())
    }

    /// Start stopping: no new events; events waiting for a retry are given up.
    pub fn begin_stop(&self) {
        let _ = self.stopping.send(true);
        self.fetch.stop();
    }

    /// Stop a failed pipeline: commit what finished, without waiting for the
    /// rest (a dead worker's events never finish); they are read again.
    pub async fn stop_failed(self) {
        self.fetch.stop_now();
        self.stop().await;
    }

    /// Stop: drain the in-flight events (up to the drain timeout), commit, leave
    /// the group, then stop the workers.
    pub async fn stop(self) {
        self.begin_stop();
        let fetch = self.fetch;
        let lag = self.lag;
        let _ = tokio::task::spawn_blocking(move || {
            fetch.join();
            if let Some((stop, thread)) = lag {
                stop.store(true, Ordering::SeqCst);
                let _ = thread.join();
            }
        })
        .await;
        self.workers.abort().await;
    }
}

/// The text of a panic's payload.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}
