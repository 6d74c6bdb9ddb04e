//! Capabilities: what a plugin can reach, one module per WIT interface.
//!
//! Each module does three things, in one place: the backend trait and its default
//! implementation (shared by every plugin of a host), the grant decided once at load
//! from the manifest, and the generated WIT host trait implemented on [`Ctx`], the
//! view of one instance a call sees (its grants, the host's backends, and what the
//! current event has done so far). A denied call is answered from the grant, never
//! by a trap. The runtime owns the instances and hands each call its `Ctx`.

pub mod breaker;
pub mod cache;
pub mod config;
pub mod log;
pub mod publish;
pub mod schedule;
pub mod storage;
pub mod stores;

use crate::bindings::CapabilityError;
use crate::config::BreakerConfig;
use crate::manifest::Manifest;
use breaker::Breaker;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use cache::{CacheBackend, CacheError, MemoryCache, RedisCache};
pub use publish::OutgoingMessage;
pub use schedule::{
    DeletionSchedule, ScheduleChange, ScheduleError, ScheduledDeletion, StoreSchedule, SweepReport,
    TopicSchedule,
};
pub use stores::StoreError;

/// The backends every plugin of one host shares.
#[derive(Clone)]
pub struct Backends {
    pub cache: Arc<dyn CacheBackend>,
    pub storage: Arc<dyn object_store::ObjectStore>,
    pub deletions: DeletionSchedule,
    pub guards: Arc<Guards>,
    /// The largest record the producer writes (`kafka.producer.message_max_bytes`).
    pub max_message: usize,
}

/// What stands between the plugins and each backend: a circuit breaker each,
/// and the storage calls' time limit (the Redis cache has its own).
pub struct Guards {
    pub cache: Breaker,
    pub storage: Breaker,
    pub storage_timeout: Duration,
}

impl Guards {
    pub fn new(breaker: &BreakerConfig, storage_timeout: Duration) -> Self {
        Guards {
            cache: Breaker::new("cache", breaker.clone()),
            storage: Breaker::new("storage", breaker.clone()),
            storage_timeout,
        }
    }

    pub fn breakers(&self) -> [&Breaker; 2] {
        [&self.cache, &self.storage]
    }
}

impl Default for Guards {
    fn default() -> Self {
        Guards::new(&BreakerConfig::default(), Duration::from_secs(10))
    }
}

impl Backends {
    /// In-memory cache and a local directory for storage (created if missing).
    pub fn local(storage_dir: &std::path::Path) -> Result<Self, StoreError> {
        Self::with_cache(storage_dir, Arc::new(MemoryCache::new(256 * 1024 * 1024)))
    }

    /// The given cache and a local directory for storage (created if missing).
    pub fn with_cache(
        storage_dir: &std::path::Path,
        cache: Arc<dyn CacheBackend>,
    ) -> Result<Self, StoreError> {
        let storage = storage::local_store(storage_dir)?;
        Ok(Self::new(cache, storage, Guards::default()))
    }

    /// The given cache and object store; scheduled deletions kept in the store.
    pub fn new(
        cache: Arc<dyn CacheBackend>,
        storage: Arc<dyn object_store::ObjectStore>,
        guards: Guards,
    ) -> Self {
        Backends {
            cache,
            deletions: DeletionSchedule::in_store(storage.clone()),
            storage,
            guards: Arc::new(guards),
            max_message: publish::DEFAULT_MAX_RECORD,
        }
    }

    /// A cache call, through the cache's breaker.
    pub async fn cache_call<T>(
        &self,
        call: impl Future<Output = Result<T, CapabilityError>>,
    ) -> Result<T, CapabilityError> {
        self.guards.cache.call(call).await
    }

    /// A storage call, through the storage breaker and bounded by its timeout.
    pub async fn storage_call<T>(
        &self,
        call: impl Future<Output = Result<T, CapabilityError>>,
    ) -> Result<T, CapabilityError> {
        let limit = self.guards.storage_timeout;
        self.guards
            .storage
            .call(async move {
                tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
                    Err(CapabilityError::Unavailable(format!(
                        "storage backend: no answer within {} (storage.timeout)",
                        humantime::format_duration(limit)
                    )))
                })
            })
            .await
    }
}

/// What one plugin may do, decided from its manifest at load.
#[derive(Debug, Clone)]
pub struct Grants {
    pub plugin: String,
    /// `None`: the cache is not granted.
    pub cache_namespace: Option<String>,
    /// `None`: storage is not granted.
    pub storage_prefixes: Option<Vec<String>>,
    /// `None`: publishing is not granted.
    pub publish_topics: Option<BTreeSet<String>>,
    pub config: BTreeMap<String, String>,
}

impl Grants {
    pub fn from_manifest(m: &Manifest) -> Self {
        Grants {
            plugin: m.name.clone(),
            cache_namespace: m.cache_namespace(),
            storage_prefixes: m.capabilities.storage.as_ref().map(|s| s.prefixes.clone()),
            publish_topics: m
                .capabilities
                .publish
                .as_ref()
                .map(|p| p.topics.iter().cloned().collect()),
            config: m.config_strings(),
        }
    }
}

/// One capability call as the plugin made it, for `weir invoke` and debugging.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CallRecord {
    pub capability: &'static str,
    pub op: &'static str,
    pub target: String,
    pub result: String,
}

impl fmt::Display for CallRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{} {} -> {}",
            self.capability, self.op, self.target, self.result
        )
    }
}

/// What the host holds for one call into a plugin (an event, or a batch of
/// them) until the call ends: messages to publish, scheduled-deletion changes,
/// recorded calls. It is counted against the plugin's `limits.host_memory`,
/// and so is each value read for it (an object, a cache value, a listing),
/// so a plugin cannot make the host buffer more than that however it calls
/// (its own linear memory is bounded by `limits.memory`).
#[derive(Debug, Clone, Copy)]
pub struct HostBudget {
    limit: usize,
    used: usize,
}

impl HostBudget {
    pub fn new(limit: usize) -> Self {
        HostBudget { limit, used: 0 }
    }

    /// A new call starts with nothing held.
    pub fn reset(&mut self) {
        self.used = 0;
    }

    /// Bytes held so far in this call.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Whether `bytes` more fit; `Invalid` naming the limit otherwise.
    pub fn check(&self, bytes: usize, what: &str) -> Result<(), CapabilityError> {
        let total = self.used.saturating_add(bytes);
        if total <= self.limit {
            return Ok(());
        }
        let size = |n: usize| bytesize::ByteSize::b(n as u64).to_string();
        Err(CapabilityError::Invalid(format!(
            "{what} ({}) would take what the host holds for this call to {}, past \
             limits.host_memory = {}: do less per event (or lower consumer.batch), \
             or raise limits.host_memory",
            size(bytes),
            size(total),
            size(self.limit)
        )))
    }

    /// Hold `bytes` more until the call ends, if they fit.
    pub fn hold(&mut self, bytes: usize, what: &str) -> Result<(), CapabilityError> {
        self.check(bytes, what)?;
        self.used += bytes;
        Ok(())
    }
}

/// What one call of a plugin into a capability sees.
pub struct Ctx<'a> {
    pub grants: &'a Grants,
    pub backends: &'a Backends,
    effects: &'a mut EventEffects,
    /// What the host holds for the whole call (every event of a batch).
    pub(crate) budget: &'a mut HostBudget,
    record_calls: bool,
    /// When this call began (only when calls are recorded).
    started: Option<std::time::SystemTime>,
}

impl<'a> Ctx<'a> {
    pub fn new(
        grants: &'a Grants,
        backends: &'a Backends,
        effects: &'a mut EventEffects,
        budget: &'a mut HostBudget,
        record_calls: bool,
    ) -> Self {
        Ctx {
            grants,
            backends,
            effects,
            budget,
            record_calls,
            started: record_calls.then(std::time::SystemTime::now),
        }
    }

    /// What the current event has done so far.
    pub(crate) fn effects(&mut self) -> &mut EventEffects {
        self.effects
    }

    /// Record a capability call, if recording is on (the closure is not run
    /// otherwise). Records count against the host budget; once it is spent,
    /// calls are no longer recorded (the call itself is unaffected).
    pub(crate) fn record(&mut self, call: impl FnOnce() -> CallRecord) {
        if self.record_calls {
            let call = call();
            let size = call.target.len() + call.result.len() + RECORD_OVERHEAD;
            if self.budget.hold(size, "a recorded call").is_err() {
                return;
            }
            self.effects.calls.push(call);
            let now = std::time::SystemTime::now();
            self.effects
                .call_times
                .push((self.started.unwrap_or(now), now));
        }
    }

    /// The coordinates of the current event, for log lines.
    pub(crate) fn coordinates(&self) -> String {
        match &self.effects.coordinates {
            Some(c) => c.to_string(),
            None => "-".into(),
        }
    }
}

/// What the host counts for a held record or change beside its strings.
pub(crate) const RECORD_OVERHEAD: usize = 64;

/// What one event did through its capabilities, handed back when its call ends.
#[derive(Default)]
pub struct EventEffects {
    /// Where the event came from, for log lines.
    pub coordinates: Option<crate::event::Coordinates>,
    pub calls: Vec<CallRecord>,
    /// When each recorded call began and ended (for trace spans).
    pub call_times: Vec<(std::time::SystemTime, std::time::SystemTime)>,
    pub outbox: Vec<OutgoingMessage>,
    pub schedule: Vec<ScheduleChange>,
    /// `stdout: line` / `stderr: line`, when calls are recorded.
    pub output: Vec<String>,
    /// A Rust panic message the plugin printed to stderr, if any.
    pub panic: Option<String>,
    pub log_lines: u32,
}

/// The `types` interface has no functions; the generated trait only marks it.
impl crate::bindings::weir::plugin::types::Host for Ctx<'_> {}

/// Text for a denied capability that the manifest does not grant.
pub(crate) fn not_granted(capability: &str) -> String {
    format!("the {capability} capability is not granted: add [capabilities.{capability}] to the plugin's manifest")
}
