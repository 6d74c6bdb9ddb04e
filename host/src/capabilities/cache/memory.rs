//! The default cache backend: in this process, bounded by total bytes (moka).

use super::{CacheBackend, CacheResult};
use async_trait::async_trait;
use std::time::Duration;

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
    async fn get(&self, key: &str) -> CacheResult<Option<Vec<u8>>> {
        Ok(self.entries.get(key).map(|e| e.value))
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> CacheResult<()> {
        self.entries.insert(key.to_string(), Entry { value, ttl });
        Ok(())
    }

    async fn delete(&self, key: &str) -> CacheResult<bool> {
        Ok(self.entries.remove(key).is_some())
    }

    async fn delete_prefix(&self, prefix: &str) -> CacheResult<u64> {
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

    fn describe(&self) -> String {
        "memory".into()
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
