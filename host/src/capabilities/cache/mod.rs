//! The `cache` capability: a key-value cache, namespaced per plugin.

use super::{not_granted, CallRecord};
use crate::runtime::bindings::{weir::plugin::cache::Host, CapabilityError};
use crate::runtime::HostState;
use async_trait::async_trait;
use std::time::Duration;

/// Longest key, and largest value, a plugin may use.
pub const MAX_KEY_LEN: usize = 1024;
pub const MAX_VALUE_LEN: usize = 8 * 1024 * 1024;

/// A cache backend. Keys arrive fully namespaced (`{namespace}:{key}`).
#[async_trait]
pub trait CacheBackend: Send + Sync {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String>;
    async fn set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<(), String>;
    /// Whether the key was there.
    async fn delete(&self, key: &str) -> Result<bool, String>;
    /// How many keys were removed.
    async fn delete_prefix(&self, prefix: &str) -> Result<u64, String>;
}

#[derive(Clone)]
struct Entry {
    value: Vec<u8>,
    ttl: Option<Duration>,
}

struct EntryExpiry;

impl moka::Expiry<String, Entry> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Entry,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        value.ttl
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Entry,
        _now: std::time::Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        value.ttl
    }
}

/// The default backend: an in-process cache (moka) bounded by total bytes.
pub struct MemoryCache {
    entries: moka::sync::Cache<String, Entry>,
}

impl MemoryCache {
    pub fn new(max_bytes: u64) -> Self {
        MemoryCache {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|k: &String, v: &Entry| {
                    (k.len() + v.value.len()).try_into().unwrap_or(u32::MAX)
                })
                .expire_after(EntryExpiry)
                .build(),
        }
    }

    /// Every live key, sorted (for tests and `weir invoke` reports).
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.entries.iter().map(|(k, _)| (*k).clone()).collect();
        keys.sort();
        keys
    }
}

#[async_trait]
impl CacheBackend for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(self.entries.get(key).map(|e| e.value))
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<(), String> {
        self.entries.insert(key.to_string(), Entry { value, ttl });
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool, String> {
        Ok(self.entries.remove(key).is_some())
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, String> {
        let doomed: Vec<String> = self
            .entries
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| (*k).clone())
            .collect();
        let mut removed = 0;
        for k in doomed {
            removed += self.entries.remove(&k).is_some() as u64;
        }
        Ok(removed)
    }
}

impl HostState {
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

fn unavailable(e: String) -> CapabilityError {
    CapabilityError::Unavailable(format!("cache backend: {e}"))
}

impl Host for HostState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, CapabilityError> {
        let result = match self.cache_key(&key, "key") {
            Ok(k) => self.backends.cache.get(&k).await.map_err(unavailable),
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
            Ok(k) => self
                .backends
                .cache
                .set(&k, value, ttl_ms.map(Duration::from_millis))
                .await
                .map_err(unavailable),
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
            Ok(k) => self.backends.cache.delete(&k).await.map_err(unavailable),
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
            Ok(p) => self
                .backends
                .cache
                .delete_prefix(&p)
                .await
                .map_err(unavailable),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_cache_basics() {
        let c = MemoryCache::new(1024 * 1024);
        c.set("a:1", b"x".to_vec(), None).await.unwrap();
        c.set("a:2", b"y".to_vec(), None).await.unwrap();
        c.set("b:1", b"z".to_vec(), None).await.unwrap();
        assert_eq!(c.get("a:1").await.unwrap(), Some(b"x".to_vec()));
        assert!(c.delete("a:1").await.unwrap());
        assert!(!c.delete("a:1").await.unwrap());
        assert_eq!(c.delete_prefix("a:").await.unwrap(), 1);
        assert_eq!(c.keys(), vec!["b:1".to_string()]);
    }

    #[tokio::test]
    async fn ttl_expires_entries() {
        let c = MemoryCache::new(1024 * 1024);
        c.set("k", b"v".to_vec(), Some(Duration::from_millis(1)))
            .await
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        c.entries.run_pending_tasks();
        assert_eq!(c.get("k").await.unwrap(), None);
    }
}
