//! The plugin supervisor: keeps the running plugins equal to what the plugin
//! directory (and `[plugins] extra`) holds, without losing an event.
//!
//! On every change (file-system events, debounced; and a periodic rescan) it
//! compares each plugin's files with what it last tried:
//! - **added**: load (compile, check, `init`) and start consuming;
//! - **changed**: the new version is loaded while the old one keeps handling
//!   events. A code-only change (same topics, group and parallelism) is swapped
//!   in between events: no rebalance, offsets continue. A change to the consumer's
//!   shape restarts only that plugin's consumer, after draining and committing;
//! - **rejected** (not a component, wrong world, `init` fails, bad manifest): the
//!   reason goes to the log and the status; the last good version keeps running.
//!   A half-written file is just rejected until its write completes;
//! - **removed**: drain, commit, stop.
//!
//! A running plugin whose pipeline fails (its fetch thread or a worker
//! panicked: no known input does this, but a bug must cost one plugin a few
//! seconds, not its partitions for good) is stopped (what finished is
//! committed) and started again after a backoff (1 s, doubling up to 60 s); it
//! is `failed` on `/plugins` and `/health` is `Unhealthy` until it runs again.

use crate::admin::view::{HostView, PluginView};
use crate::capabilities::{Backends, DeletionSchedule};
use crate::config::Config;
use crate::kafka::BrokerError;
use crate::manifest::Manifest;
use crate::manifest::ManifestError;
use crate::pipeline::handle::ScheduleOutput;
use crate::pipeline::outputs::Outputs;
use crate::pipeline::stats::{Stats, StatsSnapshot};
use crate::pipeline::{Pipeline, PluginWiring};
use crate::plugin_dir::DiscoverError;
use crate::plugin_dir::{discover, PluginFiles};
use crate::reserved::ReservedError;
use crate::runtime::{LoadError, RuntimeError};
use crate::runtime::{Plugin, Runtime};
use crate::schedule_topic::ScheduleOwner;
use crate::schedule_topic::ScheduleTopicError;
use crate::status::write_status_file;
pub use crate::status::{plugin_status, read_status_file, PluginStatus};
use crate::topics::TemplateError;
use crate::topics::TopicNamer;
use crate::versions::Versions;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// A plugin that ran this long since its last restart starts counting its
/// failures (and its backoff) afresh.
const HEALTHY_RUN: Duration = Duration::from_secs(300);
/// The longest wait before a failed pipeline is started again.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(60);

/// New and changed plugins, loaded and not yet started (see [`Supervisor::prepare`]).
pub struct Pending {
    /// Every plugin the files ask for.
    wanted: BTreeSet<String>,
    loaded: Vec<(PluginFiles, String, Result<Plugin, Rejected>)>,
}

/// What a run did, per plugin.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RunReport {
    pub plugins: BTreeMap<String, StatsSnapshot>,
}

/// The consumer's shape: a change here needs a new consumer, anything else a swap.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ConsumerShape {
    topics: Vec<String>,
    group: Option<String>,
    workers: u32,
    max_in_flight: u32,
    max_in_flight_bytes: u64,
    batch: u32,
    /// A change of delivery mode needs another producer and consumer.
    delivery: crate::manifest::DeliveryMode,
    transaction_interval: Duration,
}

impl ConsumerShape {
    fn of(m: &Manifest) -> Self {
        ConsumerShape {
            topics: m.topics.clone(),
            group: m.consumer.group.clone(),
            workers: m.consumer.workers,
            max_in_flight: m.consumer.max_in_flight,
            max_in_flight_bytes: m.consumer.max_in_flight_bytes.as_u64(),
            batch: m.consumer.batch,
            delivery: m.consumer.delivery,
            transaction_interval: m.consumer.transaction_interval,
        }
    }
}

struct Running {
    versions: Arc<Versions>,
    shape: ConsumerShape,
    pipeline: Pipeline,
}

struct Managed {
    files: PluginFiles,
    /// Hash of the files last tried, so a rejected version is not retried until it changes.
    fingerprint: String,
    running: Option<Running>,
    rejected: Option<String>,
    loaded_at: Option<SystemTime>,
    /// Counters across versions and consumer restarts.
    stats: Arc<Stats>,
    /// Paused by an operator (admin API); kept across versions and consumer restarts.
    paused: Arc<AtomicBool>,
    /// Workers an operator set (0: the manifest's `[consumer] workers`); kept
    /// across versions and consumer restarts until the manifest's own changes.
    workers: Arc<AtomicUsize>,
    /// Its pipeline failed and waits to be started again.
    failed: Option<Failed>,
    /// Failures since it last ran for [`HEALTHY_RUN`], and when it was last restarted.
    failures: u32,
    restarted_at: Option<Instant>,
}

/// A pipeline that failed, waiting for its restart.
struct Failed {
    why: String,
    restart_at: Instant,
    versions: Arc<Versions>,
}

/// The wait before the `failures`-th restart: 1 s, doubling, at most 60 s.
fn restart_delay(failures: u32) -> Duration {
    (Duration::from_secs(1) * 2u32.pow(failures.saturating_sub(1).min(6))).min(MAX_RESTART_DELAY)
}

/// Why the supervisor could not start, or a plugin's consumer could not.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::TelemetryError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Output(#[from] crate::pipeline::outputs::OutputError),
    #[error(transparent)]
    ScheduleTopic(#[from] ScheduleTopicError),
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::StartError),
    #[error("the schedule topic {topic} has cleanup.policy={policy}: it must be compacted, or pending deletions are lost when old segments are deleted (set it: kafka-configs.sh --alter --entity-type topics --entity-name {topic} --add-config cleanup.policy=compact)")]
    ScheduleNotCompacted { topic: String, policy: String },
}

/// Why a plugin's new files were not loaded (the running version, if any, stays).
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{} names the plugin {name:?}, but its file is {file:?}", manifest.display())]
    Misnamed {
        manifest: std::path::PathBuf,
        name: String,
        file: String,
    },
    #[error("{}: {source}", manifest.display())]
    Reserved {
        manifest: std::path::PathBuf,
        source: ReservedError,
    },
    #[error(transparent)]
    Load(#[from] LoadError),
}

pub struct Supervisor {
    config: Config,
    namer: TopicNamer,
    runtime: Runtime,
    backends: Backends,
    outputs: Outputs,
    existing_topics: BTreeSet<String>,
    plugins: BTreeMap<String, Managed>,
    last_status: Vec<PluginStatus>,
    /// What the admin API reads.
    view: Arc<HostView>,
    /// This host's share of the schedule topic (`weir run`), once it exists.
    schedule_owner: Option<ScheduleOwner>,
    /// Trace spans, when `[telemetry]` is on.
    tracing: crate::telemetry::Tracing,
}

impl Supervisor {
    /// Reach the broker (and take a share of the schedule); the plugins are
    /// loaded by the first [`Supervisor::reconcile`].
    pub async fn start(
        config: Config,
        backends: Backends,
        view: Arc<HostView>,
    ) -> Result<Supervisor, SupervisorError> {
        let runtime = Runtime::with_compile_cache(config.plugins.cache_dir.clone())?;
        let existing_topics = crate::kafka::wait_for_broker(&config).await?;
        let tracing = crate::telemetry::Tracing::start(&config.telemetry)?;
        let mut sup = Supervisor {
            tracing,
            namer: config.namer()?,
            outputs: Outputs::new(&config)?,
            config,
            runtime,
            backends,
            existing_topics,
            plugins: BTreeMap::new(),
            last_status: Vec::new(),
            view,
            schedule_owner: None,
        };
        // Take a share of the schedule topic's partitions at once if it exists
        // (deletions promised by hosts that are gone are kept), else when the
        // first plugin with storage creates it.
        if sup.existing_topics.contains(&sup.config.schedule_topic()?) {
            sup.own_schedule().await?;
        }
        Ok(sup)
    }

    /// Say how many plugins run and how many were compiled (after the first load).
    pub fn log_loaded(&self) {
        let stats = self.runtime.compile_stats();
        tracing::info!(
            plugins = self.plugins.len(),
            compiled = stats.compiled,
            from_compile_cache = stats.cache_hits,
            "plugins loaded"
        );
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Carry out due scheduled deletions every `interval` (records-kept schedule:
    /// tombstones through the producer; store-kept: entries in the store).
    pub fn spawn_sweeper(
        &self,
        interval: std::time::Duration,
    ) -> Result<tokio::task::JoinHandle<()>, SupervisorError> {
        let schedule = match &self.backends.deletions {
            DeletionSchedule::Store(kept) => return Ok(kept.clone().spawn_sweeper(interval)),
            DeletionSchedule::Topic(kept) => kept.clone(),
        };
        Ok(crate::schedule_topic::spawn_sweeper(
            schedule,
            self.backends.storage.clone(),
            self.outputs.clone(),
            self.config.schedule_topic()?,
            interval,
        ))
    }

    /// The plugins wanted now: the directory's pairs and `[plugins] extra`.
    fn desired(&self) -> Result<Vec<PluginFiles>, DiscoverError> {
        let mut found = discover(&self.config.plugins.dir)?;
        for extra in &self.config.plugins.extra {
            let name = extra.name();
            found.push(PluginFiles {
                name,
                wasm: extra.wasm.clone(),
                manifest: extra.manifest.clone(),
            });
        }
        Ok(found)
    }

    /// Bring the running plugins in line with the files. Errors only when the
    /// plugin directory itself cannot be read.
    pub async fn reconcile(&mut self) -> Result<(), DiscoverError> {
        let pending = self.prepare().await?;
        self.commit(pending).await;
        Ok(())
    }

    /// The slow half of a reconcile: read what the files ask for and load every
    /// new or changed plugin (compile, instantiate, `init`, each bounded). It
    /// changes nothing, so it may be abandoned (a shutdown meanwhile).
    pub async fn prepare(&self) -> Result<Pending, DiscoverError> {
        let desired = self.desired()?;
        let wanted = desired.iter().map(|f| f.name.clone()).collect();
        // What every plugin's manifest takes (those that parse), so none takes
        // another's group, namespace or dead-letter topic.
        let claims: Vec<crate::reserved::Claims> = desired
            .iter()
            .filter_map(|f| Manifest::load(&f.manifest).ok())
            .filter_map(|m| crate::reserved::Claims::of(&self.config, &m).ok())
            .collect();
        let mut loaded = Vec::new();
        for files in desired {
            let Some(fingerprint) = fingerprint(&files) else {
                continue; // a file vanished meanwhile (a rename in progress): next round
            };
            if self
                .plugins
                .get(&files.name)
                .is_some_and(|m| m.fingerprint == fingerprint)
            {
                continue;
            }
            let plugin = self.load(&files, &claims).await;
            loaded.push((files, fingerprint, plugin));
        }
        Ok(Pending { wanted, loaded })
    }

    /// The quick half: stop the removed plugins, start or swap the loaded ones.
    pub async fn commit(&mut self, pending: Pending) {
        let Pending { wanted, loaded } = pending;
        let gone: Vec<String> = self
            .plugins
            .keys()
            .filter(|n| !wanted.contains(n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            if let Some(m) = self.plugins.remove(&name) {
                if let Some(r) = m.running {
                    stop(r).await;
                    tracing::info!(plugin = %name, handled = m.stats.snapshot().handled, "plugin removed: drained, offsets committed, consumer stopped");
                }
            }
        }
        for (files, fingerprint, plugin) in loaded {
            self.apply(files, fingerprint, plugin).await;
        }
        // Old versions' entries go; those in use were touched when loaded.
        self.runtime
            .prune_compile_cache(2 * self.plugins.len() + 16);
        self.write_status();
    }

    /// Start, swap or restart a new or changed plugin that was loaded (or record
    /// why it was not).
    async fn apply(
        &mut self,
        files: PluginFiles,
        fingerprint: String,
        loaded: Result<Plugin, Rejected>,
    ) {
        let name = files.name.clone();
        let entry = self.plugins.entry(name.clone()).or_insert_with(|| Managed {
            files: files.clone(),
            fingerprint: String::new(),
            running: None,
            rejected: None,
            loaded_at: None,
            stats: Arc::new(Stats::default()),
            paused: Arc::new(AtomicBool::new(false)),
            workers: Arc::new(AtomicUsize::new(0)),
            failed: None,
            failures: 0,
            restarted_at: None,
        });
        entry.fingerprint = fingerprint;
        entry.files = files;
        let plugin = match loaded {
            Ok(p) => p,
            Err(reason) => {
                if entry.running.is_some() {
                    tracing::error!(plugin = %name, "new version rejected; the running version stays: {reason}");
                } else {
                    tracing::error!(plugin = %name, "plugin rejected: {reason}");
                }
                entry.rejected = Some(reason.to_string());
                return;
            }
        };
        let shape = ConsumerShape::of(plugin.manifest());
        let hash = plugin.content_hash()[..12].to_string();
        match entry.running.take() {
            Some(running) if running.shape == shape => {
                running.versions.swap(plugin);
                tracing::info!(plugin = %name, sha256 = %hash, "new version swapped in");
                entry.running = Some(running);
            }
            previous => {
                if let Some(old) = previous {
                    if old.shape.workers != shape.workers {
                        entry.workers.store(0, Ordering::SeqCst);
                    }
                    stop(old).await;
                    tracing::info!(plugin = %name, "consumer settings changed: consumer restarted after committing");
                }
                // A new version of a failed plugin starts at once.
                entry.failed = None;
                let controls = (
                    entry.stats.clone(),
                    entry.paused.clone(),
                    entry.workers.clone(),
                );
                match self.start_consuming(Versions::new(plugin), controls).await {
                    Ok(running) => {
                        tracing::info!(plugin = %name, sha256 = %hash, "plugin started");
                        let entry = self.plugins.get_mut(&name).expect("inserted above");
                        entry.running = Some(running);
                    }
                    Err(reason) => {
                        tracing::error!(plugin = %name, "plugin cannot consume: {reason}");
                        let entry = self.plugins.get_mut(&name).expect("inserted above");
                        entry.rejected = Some(reason.to_string());
                        return;
                    }
                }
            }
        }
        let entry = self.plugins.get_mut(&name).expect("inserted above");
        entry.rejected = None;
        entry.loaded_at = Some(SystemTime::now());
    }

    async fn load(
        &self,
        files: &PluginFiles,
        claims: &[crate::reserved::Claims],
    ) -> Result<Plugin, Rejected> {
        let manifest = Manifest::load(&files.manifest)?;
        if manifest.name != files.name {
            return Err(Rejected::Misnamed {
                manifest: files.manifest.clone(),
                name: manifest.name,
                file: files.name.clone(),
            });
        }
        crate::reserved::check(&self.config, &manifest, claims).map_err(|source| {
            Rejected::Reserved {
                manifest: files.manifest.clone(),
                source,
            }
        })?;
        Ok(self
            .runtime
            .load(&files.wasm, manifest, self.backends.clone())
            .await?)
    }

    /// Make sure the plugin's topics exist, then start its consumer and workers.
    async fn start_consuming(
        &mut self,
        versions: Arc<Versions>,
        (stats, paused, workers): (Arc<Stats>, Arc<AtomicBool>, Arc<AtomicUsize>),
    ) -> Result<Running, SupervisorError> {
        let m = versions.current().plugin.manifest().clone();
        let mut needed = BTreeSet::new();
        for t in &m.topics {
            let full = self.namer.full_name(t);
            needed.insert(self.config.dlq_topic(&full, &m.name));
            needed.insert(full);
        }
        if let Some(publish) = &m.capabilities.publish {
            needed.extend(publish.topics.iter().map(|t| self.namer.full_name(t)));
        }
        if !needed.is_subset(&self.existing_topics) {
            self.existing_topics = crate::kafka::wait_for_broker(&self.config).await?;
            crate::kafka::ensure_topics(&self.config, &self.existing_topics, &needed).await?;
            self.existing_topics.extend(needed);
        }

        let schedule = match &m.capabilities.storage {
            Some(_) if self.backends.deletions.is_topic() => Some(ScheduleOutput {
                topic: self.own_schedule().await?,
            }),
            _ => None,
        };
        let pipeline = Pipeline::for_plugin(
            &self.config,
            self.namer.clone(),
            PluginWiring {
                versions: versions.clone(),
                outputs: self.outputs.clone(),
                schedule,
                stats,
                paused,
                workers: workers.clone(),
                tracing: self.tracing.clone(),
            },
        )?;
        let group = pipeline.group().to_string();
        let set = workers.load(Ordering::SeqCst);
        let count = if set > 0 {
            set
        } else {
            m.consumer.workers as usize
        };
        tracing::info!(plugin = %m.name, group = %group, workers = count, "consuming");
        Ok(Running {
            versions,
            shape: ConsumerShape::of(&m),
            pipeline,
        })
    }

    /// Make sure the schedule topic exists and this host has joined the group
    /// that shares it; its full name.
    async fn own_schedule(&mut self) -> Result<String, SupervisorError> {
        let topic = self.config.schedule_topic()?;
        let Some(schedule) = self.backends.deletions.topic().cloned() else {
            return Ok(topic);
        };
        if self.schedule_owner.is_some() {
            return Ok(topic);
        }
        if !self.existing_topics.contains(&topic) {
            crate::kafka::ensure_topics_with(
                &self.config,
                &self.existing_topics,
                &BTreeSet::from([topic.clone()]),
                &[("cleanup.policy", "compact")],
            )
            .await?;
            self.existing_topics.insert(topic.clone());
        } else {
            // A schedule topic that deletes old records would lose pending
            // deletions; one that is neither compacted nor deleted grows for ever.
            let policy =
                crate::kafka::topic_setting(&self.config, &topic, "cleanup.policy").await?;
            if let Some(policy) = policy.filter(|p| !p.split(',').any(|x| x.trim() == "compact")) {
                return Err(SupervisorError::ScheduleNotCompacted { topic, policy });
            }
        }
        self.schedule_owner = Some(ScheduleOwner::start(&self.config, &topic, schedule)?);
        tracing::info!(topic = %topic, group = %self.config.schedule_group()?, "joined the schedule group: this host carries out the deletions of the partitions it is given");
        Ok(topic)
    }

    /// Stop the plugins whose pipeline failed, and start them again once their
    /// backoff is over. Called every second.
    pub async fn mend(&mut self) {
        let names: Vec<String> = self.plugins.keys().cloned().collect();
        for name in names {
            let Some(m) = self.plugins.get_mut(&name) else {
                continue;
            };
            if let Some(why) = m.running.as_ref().and_then(|r| r.pipeline.failure()) {
                let running = m.running.take().expect("checked above");
                if m.restarted_at.is_some_and(|t| t.elapsed() >= HEALTHY_RUN) {
                    m.failures = 0;
                }
                m.failures += 1;
                let delay = restart_delay(m.failures);
                tracing::error!(plugin = %name, failures = m.failures, restart_in = ?delay, "its pipeline failed ({why}): stopping it (finished events are committed; the rest is read again) and starting it again");
                let versions = running.versions.clone();
                running.pipeline.stop_failed().await;
                let m = self.plugins.get_mut(&name).expect("still there");
                m.failed = Some(Failed {
                    why,
                    restart_at: Instant::now() + delay,
                    versions,
                });
                continue;
            }
            let due = m
                .failed
                .as_ref()
                .is_some_and(|f| f.restart_at <= Instant::now());
            if !due {
                continue;
            }
            let failed = m.failed.take().expect("checked above");
            let controls = (m.stats.clone(), m.paused.clone(), m.workers.clone());
            let started = self
                .start_consuming(failed.versions.clone(), controls)
                .await;
            let m = self.plugins.get_mut(&name).expect("still there");
            match started {
                Ok(running) => {
                    tracing::info!(plugin = %name, failures = m.failures, "plugin started again after its pipeline failed");
                    m.running = Some(running);
                    m.restarted_at = Some(Instant::now());
                }
                Err(e) => {
                    m.failures += 1;
                    let delay = restart_delay(m.failures);
                    tracing::error!(plugin = %name, restart_in = ?delay, "cannot start the failed plugin again: {e}");
                    m.failed = Some(Failed {
                        why: format!("{}; then: {e}", failed.why),
                        restart_at: Instant::now() + delay,
                        versions: failed.versions,
                    });
                }
            }
        }
    }

    /// Every plugin's status.
    pub fn status(&self) -> Vec<PluginStatus> {
        self.plugins
            .iter()
            .map(|(name, m)| {
                let running = m.running.as_ref();
                let current = running
                    .map(|r| r.versions.current())
                    .or_else(|| m.failed.as_ref().map(|f| f.versions.current()));
                let rollback = running.and_then(|r| r.versions.last_rollback());
                let (state, reason) = match (running, &m.rejected, &rollback) {
                    (None, _, _) if m.failed.is_some() => {
                        let f = m.failed.as_ref().expect("checked");
                        let wait = f.restart_at.saturating_duration_since(Instant::now());
                        (
                            "failed",
                            Some(format!(
                                "{} (failure {}; started again in {} s)",
                                f.why,
                                m.failures,
                                wait.as_secs()
                            )),
                        )
                    }
                    (None, Some(why), _) => ("rejected", Some(why.clone())),
                    (None, None, _) => ("stopped", None),
                    (Some(_), Some(why), _) => {
                        ("running", Some(format!("last reload rejected: {why}")))
                    }
                    (Some(r), None, Some(rb))
                        if current.as_ref().map(|c| c.plugin.content_hash())
                            == Some(rb.to_hash.as_str())
                            && !r.versions.on_probation() =>
                    {
                        ("rolled-back", Some(rb.reason.clone()))
                    }
                    (Some(_), None, _) => ("running", None),
                };
                let paused = running.is_some() && m.paused.load(Ordering::SeqCst);
                let state = if paused { "paused" } else { state };
                PluginStatus {
                    name: name.clone(),
                    state: state.to_string(),
                    reason,
                    sha256: current
                        .as_ref()
                        .map(|c| c.plugin.content_hash().to_string()),
                    loaded_at: m
                        .loaded_at
                        .map(|t| humantime::format_rfc3339_millis(t).to_string()),
                    topics: current
                        .as_ref()
                        .map(|c| c.plugin.manifest().topics.clone())
                        .unwrap_or_default(),
                    wasm: m.files.wasm.display().to_string(),
                    manifest: m.files.manifest.display().to_string(),
                    rollbacks: running.map_or(0, |r| r.versions.rollbacks()),
                    stats: Some(m.stats.snapshot()),
                    delivery: current
                        .as_ref()
                        .map(|c| c.plugin.manifest().consumer.delivery.as_str().to_string()),
                }
            })
            .collect()
    }

    /// Write the status file if anything (a state, a counter) changed since the
    /// last write. Called every second, so counters are at most a second old.
    pub fn write_status(&mut self) {
        let status = self.status();
        self.publish_view(&status);
        if status == self.last_status {
            return;
        }
        for s in &status {
            if s.state == "rolled-back"
                && !self
                    .last_status
                    .iter()
                    .any(|p| p.name == s.name && p.state == "rolled-back")
            {
                tracing::error!(plugin = %s.name, reason = s.reason.as_deref().unwrap_or(""), "plugin rolled back");
            }
        }
        write_status_file(&self.config.plugins.status_file, &status);
        self.last_status = status;
    }

    /// Hand the admin API the plugins' status and live handles.
    fn publish_view(&self, status: &[PluginStatus]) {
        let views = status
            .iter()
            .filter_map(|st| {
                let m = self.plugins.get(&st.name)?;
                Some((
                    st.name.clone(),
                    PluginView {
                        status: st.clone(),
                        paused: m.paused.clone(),
                        workers: m.workers.clone(),
                        stats: m.stats.clone(),
                        source: m.running.as_ref().map(|r| r.pipeline.shared()),
                        group: m.running.as_ref().map(|r| r.pipeline.group().to_string()),
                        topics: m
                            .running
                            .as_ref()
                            .map(|r| r.pipeline.topics().to_vec())
                            .unwrap_or_default(),
                        backends: m
                            .running
                            .as_ref()
                            .map(|r| backends_of(r.versions.current().plugin.manifest()))
                            .unwrap_or_default(),
                        guards: self.backends.guards.clone(),
                    },
                ))
            })
            .collect();
        self.view.publish(views);
    }

    /// Stop every plugin: drain, commit, leave the groups.
    pub async fn shutdown(mut self) -> RunReport {
        let mut report = RunReport::default();
        for m in self.plugins.values() {
            if let Some(r) = &m.running {
                r.pipeline.begin_stop();
            }
        }
        let names: Vec<String> = self.plugins.keys().cloned().collect();
        for name in names {
            let m = self.plugins.remove(&name).expect("listed above");
            if let Some(r) = m.running {
                stop(r).await;
                let snapshot = m.stats.snapshot();
                if snapshot.transactions_committed + snapshot.transactions_aborted > 0 {
                    tracing::info!(plugin = %name, handled = snapshot.handled, retries = snapshot.retries, dead_lettered = snapshot.dead_lettered, published = snapshot.published, abandoned = snapshot.abandoned, transactions_committed = snapshot.transactions_committed, transactions_aborted = snapshot.transactions_aborted, commit_ms = snapshot.commit_ms, "plugin stopped");
                } else {
                    tracing::info!(plugin = %name, handled = snapshot.handled, retries = snapshot.retries, dead_lettered = snapshot.dead_lettered, published = snapshot.published, abandoned = snapshot.abandoned, "plugin stopped");
                }
                report.plugins.insert(name, snapshot);
            }
        }
        if let Some(owner) = self.schedule_owner.take() {
            let _ = tokio::task::spawn_blocking(move || owner.stop()).await;
        }
        write_status_file(&self.config.plugins.status_file, &[]);
        // The provider's shutdown blocks while it exports what is buffered.
        let tracing = self.tracing.clone();
        let _ = tokio::task::spawn_blocking(move || tracing.shutdown()).await;
        report
    }
}

/// Drain one plugin's consumer (in-flight events finish, offsets committed), then
/// stop its workers.
async fn stop(r: Running) {
    r.pipeline.stop().await;
}

/// The backends a plugin's grants reach.
fn backends_of(m: &Manifest) -> Vec<&'static str> {
    let mut out = Vec::new();
    if m.capabilities.cache.is_some() {
        out.push("cache");
    }
    if m.capabilities.storage.is_some() {
        out.push("storage");
    }
    out
}

/// Hash of a plugin's two files, or `None` if one cannot be read right now.
fn fingerprint(files: &PluginFiles) -> Option<String> {
    use crate::plugin_dir::{read_plugin_file, MAX_COMPONENT_FILE, MAX_MANIFEST_FILE};
    // A file that cannot be read within its bounds gets a fingerprint of its
    // error, so the load is tried (and refused, saying why) once, not skipped.
    let read = |path: &std::path::Path, limit| match read_plugin_file(path, limit) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(format!("unreadable: {e}").into_bytes()),
    };
    let wasm = read(&files.wasm, MAX_COMPONENT_FILE)?;
    let manifest = read(&files.manifest, MAX_MANIFEST_FILE)?;
    let mut h = Sha256::new();
    h.update(Sha256::digest(&wasm));
    h.update(Sha256::digest(&manifest));
    Some(hex::encode(h.finalize()))
}
