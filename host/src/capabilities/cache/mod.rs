//! The `cache` capability: a key-value cache, namespaced per plugin.
//!
//! The backend is shared by every plugin of a host: [`MemoryCache`] (in-process,
//! the default) or [`RedisCache`] (a Redis server, shared with other hosts and
//! services). Keys reach the backend already namespaced (`{namespace}:{key}`).

mod memory;
mod redis;

pub use self::redis::{RedisCache, RedisSetupError};
pub use memory::MemoryCache;

use super::{not_granted, CallRecord};
use crate::bindings::{weir::plugin::cache::Host, CapabilityError};
use crate::capabilities::Ctx;
use async_trait::async_trait;
use std::time::Duration;

/// Longest key, and largest value, a plugin may use.
pub const MAX_KEY_LEN: usize = 1024;
pub const MAX_VALUE_LEN: usize = 8 * 1024 * 1024;

/// Why a backend call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// The backend cannot answer now (down, slow, refused): the call may succeed later.
    #[error("{0}")]
    Unavailable(String),
    /// The call cannot succeed as made (e.g. the key holds another kind of value).
    #[error("{0}")]
    Invalid(String),
}

pub type CacheResult<T> = Result<T, CacheError>;

/// A cache backend. Keys arrive fully namespaced (`{namespace}:{key}`).
#[async_trait]
pub trait CacheBackend: Send + Sync {
    async fn get(&self, key: &str) -> CacheResult<Option<Vec<u8>>>;
    async fn set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> CacheResult<()>;
    /// Whether the key was there.
    async fn delete(&self, key: &str) -> CacheResult<bool>;
    /// How many keys were removed.
    async fn delete_prefix(&self, prefix: &str) -> CacheResult<u64>;
    /// Where the cache lives, for log lines (never with credentials).
    fn describe(&self) -> String;
    /// Whether the backend answers now (health checks).
    async fn ping(&self) -> CacheResult<()> {
        Ok(())
    }
}

impl Ctx<'_> {
    /// The backend key for a plugin's key, or why the call is refused.
    fn cache_key(&self, key: &str, what: &str) -> Result<String, CapabilityError> {
        let ns = self
            .grants
            .cache_namespace
            .as_deref()
            .ok_or_else(|| CapabilityError::Denied(not_granted("cache")))?;
        if key.is_empty() && what == "key" {
            return Err(CapabilityError::Invalid("the cache key is empty".into()));
        }
        if key.len() > MAX_KEY_LEN {
            return Err(CapabilityError::Invalid(format!(
                "the cache {what} is {} bytes; the limit is {MAX_KEY_LEN}",
                key.len()
            )));
        }
        Ok(format!("{ns}:{key}"))
    }

    fn record_cache(&mut self, op: &'static str, target: &str, result: String) {
        self.record(|| CallRecord {
            capability: "cache",
            op,
            target: target.to_string(),
            result,
        });
    }
}

fn backend_error(e: CacheError) -> CapabilityError {
    match e {
        CacheError::Unavailable(m) => CapabilityError::Unavailable(format!("cache backend: {m}")),
        CacheError::Invalid(m) => CapabilityError::Invalid(format!("cache backend: {m}")),
    }
}

impl Host for Ctx<'_> {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, CapabilityError> {
        let result = match self.cache_key(&key, "key") {
            Ok(k) => {
                let b = self.backends;
                let value = b
                    .cache_call(async { b.cache.get(&k).await.map_err(backend_error) })
                    .await;
                // A value another client wrote may be larger than a plugin may set.
                match value {
                    Ok(Some(v)) => self
                        .budget
                        .check(v.len(), "the cached value")
                        .map(|()| Some(v)),
                    other => other,
                }
            }
            Err(e) => Err(e),
        };
        self.record_cache(
            "get",
            &key,
            describe(&result, |v| match v {
                Some(v) => format!("hit ({} bytes)", v.len()),
                None => "miss".into(),
            }),
        );
        result
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), CapabilityError> {
        let len = value.len();
        let result = match self.cache_key(&key, "key") {
            Ok(_) if len > MAX_VALUE_LEN => Err(CapabilityError::Invalid(format!(
                "the value is {len} bytes; the limit is {MAX_VALUE_LEN}"
            ))),
            Ok(k) => {
                let b = self.backends;
                b.cache_call(async {
                    b.cache
                        .set(&k, value, ttl_ms.map(Duration::from_millis))
                        .await
                        .map_err(backend_error)
                })
                .await
            }
            Err(e) => Err(e),
        };
        let ttl = ttl_ms.map_or(String::new(), |t| format!(", ttl {t} ms"));
        self.record_cache(
            "set",
            &key,
            describe(&result, |_| format!("stored ({len} bytes{ttl})")),
        );
        result
    }

    async fn delete(&mut self, key: String) -> Result<bool, CapabilityError> {
        let result = match self.cache_key(&key, "key") {
            Ok(k) => {
                let b = self.backends;
                b.cache_call(async { b.cache.delete(&k).await.map_err(backend_error) })
                    .await
            }
            Err(e) => Err(e),
        };
        self.record_cache(
            "delete",
            &key,
            describe(&result, |found| {
                if *found { "removed" } else { "absent" }.into()
            }),
        );
        result
    }

    async fn delete_prefix(&mut self, prefix: String) -> Result<u64, CapabilityError> {
        let result = match self.cache_key(&prefix, "prefix") {
            Ok(p) => {
                let b = self.backends;
                b.cache_call(async { b.cache.delete_prefix(&p).await.map_err(backend_error) })
                    .await
            }
            Err(e) => Err(e),
        };
        self.record_cache(
            "delete-prefix",
            &prefix,
            describe(&result, |n| format!("{n} removed")),
        );
        result
    }
}

/// A call's result as one short phrase.
pub(crate) fn describe<T>(
    result: &Result<T, CapabilityError>,
    ok: impl FnOnce(&T) -> String,
) -> String {
    match result {
        Ok(v) => ok(v),
        Err(CapabilityError::Denied(m)) => format!("DENIED: {m}"),
        Err(CapabilityError::Invalid(m)) => format!("INVALID: {m}"),
        Err(CapabilityError::Unavailable(m)) => format!("UNAVAILABLE: {m}"),
    }
}
