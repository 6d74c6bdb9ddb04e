//! Capabilities: what a plugin can reach, one module per WIT interface.
//!
//! Each module does three things, in one place: the backend trait and its default
//! implementation (shared by every plugin of a host), the grant decided once at load
//! from the manifest, and the generated WIT host trait implemented on the
//! per-instance [`HostState`](crate::runtime::HostState). A denied call is answered
//! from the grant, never by a trap.

pub mod cache;
pub mod config;
pub mod log;
pub mod publish;
pub mod schedule;
pub mod storage;

use crate::config::{CacheKind, Config};
use crate::manifest::Manifest;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

pub use cache::{CacheBackend, CacheError, MemoryCache, RedisCache};
pub use publish::OutgoingMessage;
pub use schedule::{DeletionSchedule, ScheduleChange, ScheduledDeletion, SweepReport};

/// The backends every plugin of one host shares.
#[derive(Clone)]
pub struct Backends {
    pub cache: Arc<dyn CacheBackend>,
    pub storage: Arc<dyn object_store::ObjectStore>,
    pub deletions: DeletionSchedule,
}

impl Backends {
    /// In-memory cache and a local directory for storage (created if missing).
    pub fn local(storage_dir: &std::path::Path) -> Result<Self, String> {
        Self::with_cache(storage_dir, Arc::new(MemoryCache::new(256 * 1024 * 1024)))
    }

    /// The given cache and a local directory for storage (created if missing).
    pub fn with_cache(
        storage_dir: &std::path::Path,
        cache: Arc<dyn CacheBackend>,
    ) -> Result<Self, String> {
        let storage = storage::local_store(storage_dir)?;
        Ok(Backends {
            cache,
            deletions: DeletionSchedule::in_store(storage.clone()),
            storage,
        })
    }

    /// The backends `weir.toml` asks for (`[cache]`, `[storage]`). Must run inside a
    /// tokio runtime. A Redis server that does not answer yet is not an error: it is
    /// reported, and cache calls are `unavailable` (events retried) until it answers.
    pub async fn from_config(config: &Config) -> Result<Self, String> {
        let cache: Arc<dyn CacheBackend> = match config.cache.backend {
            CacheKind::Memory => Arc::new(MemoryCache::new(config.cache.max_bytes.as_u64())),
            CacheKind::Redis => {
                let url = config.cache.url.as_deref().unwrap_or_default();
                let redis = RedisCache::connect(url, config.cache.timeout)
                    .map_err(|e| format!("cache.url: {e}"))?;
                match redis.ping().await {
                    Ok(()) => tracing::info!(cache = %redis.describe(), "cache backend reachable"),
                    Err(e) => tracing::warn!(
                        cache = %redis.describe(),
                        error = %e,
                        "cache backend not reachable yet; cache calls fail as unavailable (events are retried) until it answers"
                    ),
                }
                Arc::new(redis)
            }
        };
        Self::with_cache(&config.storage.dir, cache)
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

/// The `types` interface has no functions; the generated trait only marks it.
impl crate::runtime::bindings::weir::plugin::types::Host for crate::runtime::HostState {}

/// Text for a denied capability that the manifest does not grant.
pub(crate) fn not_granted(capability: &str) -> String {
    format!("the {capability} capability is not granted: add [capabilities.{capability}] to the plugin's manifest")
}
