//! What the admin API sees of the host, without waiting on the supervisor.
//!
//! The supervisor publishes each plugin's status here every second (and after
//! every reload); counters, in-flight events, partitions and lag are read live
//! from the plugin's own handles. Pausing flips the plugin's flag, which its
//! source reads on its next poll: no request waits for a reload in progress.

use crate::capabilities::breaker::BreakerState;
use crate::capabilities::{Backends, CacheBackend, DeletionSchedule, Guards};
use crate::config::Config;
use crate::kafka::BrokerError;
use crate::pipeline::fetch::{PartitionView, Shared as SourceShared};
use crate::pipeline::stats::Stats;
use crate::status::PluginStatus;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Where the host is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Reaching the broker, loading plugins.
    Starting,
    /// Consuming.
    Running,
    /// Draining and committing before exit.
    Stopping,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Stopping => "stopping",
        }
    }
}

/// The live handles of one plugin.
#[derive(Clone)]
pub struct PluginView {
    /// As of the supervisor's last refresh (at most a second old).
    pub status: PluginStatus,
    pub paused: Arc<AtomicBool>,
    /// Workers an operator set (0: the manifest's), for the next consumer restart.
    pub workers: Arc<std::sync::atomic::AtomicUsize>,
    pub stats: Arc<Stats>,
    /// The running consumer's state; `None` when nothing runs (rejected).
    pub source: Option<Arc<SourceShared>>,
    /// The consumer group it reads in, when it runs.
    pub group: Option<String>,
    /// Its full topic names, when it runs.
    pub topics: Vec<String>,
    /// The backends its grants reach ("cache", "storage").
    pub backends: Vec<&'static str>,
    pub guards: Arc<Guards>,
}

/// One plugin as `GET /plugins` shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PluginReport {
    #[serde(flatten)]
    pub status: PluginStatus,
    pub paused: bool,
    pub in_flight: usize,
    /// Workers running now (0 when nothing runs).
    #[serde(default)]
    pub workers: usize,
    /// Its consumer group, when it runs.
    #[serde(default)]
    pub group: Option<String>,
    pub partitions: Vec<PartitionView>,
    /// Sum of the partitions' lag (records not yet committed).
    pub lag: i64,
    /// The circuit breaker of each backend it uses: closed, open, half-open.
    #[serde(default)]
    pub backends: BTreeMap<String, BreakerState>,
    /// The newest failed attempt of an event (retried or dead-lettered), if any.
    #[serde(default)]
    pub last_error: Option<crate::pipeline::stats::LastError>,
}

impl PluginView {
    /// The status with live counters, pause state, partitions and lag.
    pub fn report(&self) -> PluginReport {
        let mut status = self.status.clone();
        let paused = self.paused.load(Ordering::SeqCst);
        if paused && status.state == "running" {
            status.state = "paused".into();
        } else if !paused && status.state == "paused" {
            status.state = "running".into();
        }
        status.stats = Some(self.stats.snapshot());
        let partitions = self
            .source
            .as_ref()
            .map(|s| s.partitions())
            .unwrap_or_default();
        let backends = self
            .guards
            .breakers()
            .into_iter()
            .filter(|b| self.backends.contains(&b.backend()))
            .map(|b| (b.backend().to_string(), b.state()))
            .collect();
        PluginReport {
            last_error: self.stats.last_error(),
            backends,
            lag: partitions.iter().filter_map(|p| p.lag).sum(),
            in_flight: self.source.as_ref().map_or(0, |s| s.in_flight()),
            workers: self.source.as_ref().map_or(0, |s| s.workers()),
            group: self.group.clone(),
            partitions,
            paused,
            status,
        }
    }
}

/// Shared between the supervisor (writes) and the admin API (reads).
pub struct HostView {
    phase: AtomicU8,
    plugins: RwLock<BTreeMap<String, PluginView>>,
    cache: Arc<dyn CacheBackend>,
    guards: Arc<Guards>,
    deletions: DeletionSchedule,
    /// A client for broker health checks, made on first use.
    probe: Mutex<Option<Arc<BaseConsumer>>>,
    config: Config,
    /// The control topic's full name once this host reads it, or why not.
    control: RwLock<Result<String, String>>,
}

impl std::fmt::Debug for HostView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostView")
            .field("phase", &self.phase())
            .finish_non_exhaustive()
    }
}

impl HostView {
    pub fn new(config: &Config, backends: &Backends) -> HostView {
        HostView {
            phase: AtomicU8::new(Phase::Starting as u8),
            plugins: RwLock::new(BTreeMap::new()),
            cache: backends.cache.clone(),
            guards: backends.guards.clone(),
            deletions: backends.deletions.clone(),
            probe: Mutex::new(None),
            config: config.clone(),
            control: RwLock::new(Err("the host is still starting".into())),
        }
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            0 => Phase::Starting,
            1 => Phase::Running,
            _ => Phase::Stopping,
        }
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::SeqCst);
    }

    /// Replace the published plugins (the supervisor's view of them).
    pub fn publish(&self, plugins: BTreeMap<String, PluginView>) {
        *self
            .plugins
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = plugins;
    }

    pub fn plugins(&self) -> BTreeMap<String, PluginView> {
        self.plugins
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn plugin(&self, name: &str) -> Option<PluginView> {
        self.plugins
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The control topic operators' requests go through, or why there is none.
    pub fn control_topic(&self) -> Result<String, String> {
        self.control
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn set_control_topic(&self, topic: Result<String, String>) {
        *self
            .control
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = topic;
    }

    pub fn cache(&self) -> &Arc<dyn CacheBackend> {
        &self.cache
    }

    /// The backends' circuit breakers.
    pub fn guards(&self) -> &Arc<Guards> {
        &self.guards
    }

    /// The scheduled deletions this host holds.
    pub fn deletions(&self) -> &DeletionSchedule {
        &self.deletions
    }

    /// Ask the broker for its metadata: how many brokers answered, or why not.
    pub async fn check_broker(&self, timeout: Duration) -> Result<usize, BrokerError> {
        let probe = {
            let mut probe = self
                .probe
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if probe.is_none() {
                let consumer: BaseConsumer = crate::kafka::base_config(&self.config)
                    .set("client.id", "weir-health")
                    .create()
                    .map_err(|source| BrokerError::Client {
                        what: "health client",
                        source: Box::new(source),
                    })?;
                *probe = Some(Arc::new(consumer));
            }
            probe.clone().expect("set above")
        };
        tokio::task::spawn_blocking(move || {
            probe
                .fetch_metadata(None, timeout)
                .map(|md| md.brokers().len())
                .map_err(|e| BrokerError::Metadata(Box::new(e)))
        })
        .await?
    }
}
